"""Tiny S3 helper for scripts/demo.sh, talking to the local S3 server the demo starts.

    s3util.py ENDPOINT mkbucket BUCKET
    s3util.py ENDPOINT get BUCKET KEY          (prints the object; exit 1 if missing)
    s3util.py ENDPOINT sync BUCKET PREFIX DIR  (downloads every object under PREFIX/ into DIR)

Uses boto3, which the project's venv has (moto depends on it). Credentials come from the
environment like pgcdc's own.
"""
import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}),
    )


def main(argv):
    endpoint, command, *args = argv
    s3 = client(endpoint)
    if command == "mkbucket":
        s3.create_bucket(Bucket=args[0])
    elif command == "get":
        bucket, key = args
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError:
            return 1
        sys.stdout.write(body.decode())
    elif command == "sync":
        bucket, prefix, target = args
        prefix = prefix.rstrip("/") + "/"
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        count = 0
        for page in pages:
            for item in page.get("Contents", []):
                path = os.path.join(target, item["Key"][len(prefix):])
                os.makedirs(os.path.dirname(path), exist_ok=True)
                s3.download_file(bucket, item["Key"], path)
                count += 1
        print(count)
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
