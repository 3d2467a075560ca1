-- pgcdc on Snowflake, step 2 of 7: a storage integration that lets Snowflake read pgcdc's files
-- in S3 through an IAM role in your AWS account, so no AWS key is ever stored in Snowflake.
-- Run as ACCOUNTADMIN (creating an integration is an account-level privilege).
--
-- Placeholders (replace them everywhere, see README.md "Placeholders"):
--   <bucket>          pgcdc's bucket, as in pgcdc's sink.url = "s3://<bucket>/<prefix>"
--   <prefix>          pgcdc's prefix inside it, without leading or trailing slash (e.g. prod/shop)
--   <aws_account_id>  the AWS account that owns the bucket
--   <iam_role_name>   the IAM role Snowflake assumes (aws/iam_policy.json is its permissions)
--
-- Linking the two sides (README.md "Linking AWS"): create the IAM role with aws/iam_policy.json,
-- run this file, then DESC INTEGRATION below and copy STORAGE_AWS_IAM_USER_ARN and
-- STORAGE_AWS_EXTERNAL_ID into the role's trust policy (aws/trust_policy.json).
--
-- IF NOT EXISTS, never OR REPLACE: replacing the integration generates a new external ID and
-- silently breaks the trust policy until it is updated again.

use role accountadmin;

create storage integration if not exists pgcdc_s3
    type = external_stage
    storage_provider = 'S3'
    enabled = true
    storage_aws_role_arn = 'arn:aws:iam::<aws_account_id>:role/<iam_role_name>'
    -- Only pgcdc's prefix: the stage (004) cannot be pointed anywhere else in the bucket.
    storage_allowed_locations = ('s3://<bucket>/<prefix>/')
    comment = 'pgcdc: read-only access to pgcdc''s change files';

-- The stage (004) is created by LOADER, which needs to use the integration.
grant usage on integration pgcdc_s3 to role loader;

-- STORAGE_AWS_IAM_USER_ARN and STORAGE_AWS_EXTERNAL_ID go into aws/trust_policy.json.
desc integration pgcdc_s3;
