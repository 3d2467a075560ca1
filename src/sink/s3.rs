//! The S3 sink (`s3://bucket/prefix`), for AWS and S3-compatible servers.
//!
//! Objects are uploaded from the spool file, never buffered whole in memory: one PUT below
//! `multipart_threshold`, a multipart upload above it (aborted on failure, so no orphaned parts
//! are left behind). An upload is durable when S3 answered the PUT or CompleteMultipartUpload.
//!
//! Failures are classified (see [`super::retry`]): throttling, 5xx, timeouts and connection
//! errors are retried for as long as it takes, with capped exponential backoff and jitter, while
//! the pipeline waits and the socket task keeps answering the server's keepalives — pgcdc holds
//! its slot and acknowledges nothing until S3 is back. Anything else (access denied, no such
//! bucket, bad credentials) stops pgcdc with the bucket, the key and the AWS error code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{info, warn};

use super::retry::{Failure, classify};
use super::{Sink, SinkError, SinkErrorKind};
use crate::backoff::Backoff;
use crate::config::{S3Target, Sse};
use crate::metrics;

/// What the start-up check found out, for the log and `pgcdc check` (never a secret).
#[derive(Debug, Clone)]
pub struct S3Info {
    pub region: String,
    pub endpoint: String,
    pub credential_source: String,
}

pub struct S3Sink {
    client: Client,
    target: S3Target,
    handle: Handle,
    shutdown: watch::Receiver<bool>,
}

impl S3Sink {
    /// Builds the client from the standard AWS configuration chain plus the `[sink]` settings.
    pub async fn connect(
        target: &S3Target,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(S3Sink, S3Info), SinkError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &target.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        let endpoint = target
            .endpoint
            .clone()
            .or_else(|| sdk.endpoint_url().map(str::to_owned));
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(target.force_path_style)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(endpoint) = &endpoint {
            // S3-compatible servers often reject the SDK's default request checksums.
            builder = builder
                .endpoint_url(endpoint.clone())
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let client = Client::from_conf(builder.build());
        let location = format!("s3://{}/{}", target.bucket, target.prefix);
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| SinkError {
                kind: SinkErrorKind::Refused,
                op: "configure",
                key: String::new(),
                location: location.clone(),
                message: "no AWS region is configured: set sink.region, AWS_REGION, or a region in the AWS profile".to_owned(),
            })?;
        let credential_source = credential_source(&sdk).await;
        std::fs::create_dir_all(&target.spool_dir).map_err(|e| SinkError {
            kind: SinkErrorKind::Local,
            op: "create",
            key: target.spool_dir.display().to_string(),
            location: "the spool directory (sink.spool_dir)".to_owned(),
            message: e.to_string(),
        })?;
        let sink = S3Sink {
            client,
            target: target.clone(),
            handle: Handle::current(),
            shutdown,
        };
        let info = S3Info {
            region,
            endpoint: endpoint.unwrap_or_else(|| "AWS default".to_owned()),
            credential_source,
        };
        Ok((sink, info))
    }

    /// Verifies the bucket is reachable and writable by writing and removing a probe object.
    pub async fn check_writable(&self, slot: &str) -> Result<(), SinkError> {
        let key = crate::layout::write_probe_key(slot);
        let full = self.full_key(&key);
        self.client
            .head_bucket()
            .bucket(&self.target.bucket)
            .send()
            .await
            .map_err(|e| self.error("reach", "", &e))?;
        self.client
            .put_object()
            .bucket(&self.target.bucket)
            .key(&full)
            .body(ByteStream::from_static(b"pgcdc write probe\n"))
            .send()
            .await
            .map_err(|e| self.error("write", &key, &e))?;
        self.client
            .delete_object()
            .bucket(&self.target.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.error("delete", &key, &e))?;
        Ok(())
    }

    fn full_key(&self, key: &str) -> String {
        if self.target.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.target.prefix)
        }
    }

    fn error<E>(&self, op: &'static str, key: &str, err: &SdkError<E>) -> SinkError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        SinkError {
            kind: match classify(err) {
                Failure::Retriable(label) => SinkErrorKind::Retriable(label),
                Failure::Permanent => SinkErrorKind::Refused,
            },
            op,
            key: self.full_key(key),
            location: format!("bucket {}", self.target.bucket),
            message: describe(err),
        }
    }

    /// Runs `attempt` until it succeeds or fails permanently; retriable failures back off and
    /// try again until shutdown.
    fn retry<T, E, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        mut attempt: F,
    ) -> Result<T, SinkError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E>>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut shutdown = self.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                return Err(SinkError {
                    kind: SinkErrorKind::Retriable("shutdown"),
                    op,
                    key: self.full_key(key),
                    location: format!("bucket {}", self.target.bucket),
                    message: "not tried: pgcdc is shutting down (nothing past the last checkpoint was acknowledged)".to_owned(),
                });
            }
            let err = match self.handle.block_on(attempt()) {
                Ok(value) => {
                    metrics::live().sink_answered();
                    return Ok(value);
                }
                Err(err) => err,
            };
            let failure = classify(&err);
            metrics::live().sink_failed();
            let error = self.error(op, key, &err);
            metrics::get()
                .sink_errors
                .with_label_values(&[failure.label()])
                .inc();
            if failure == Failure::Permanent {
                return Err(error);
            }
            let delay = backoff.next_delay();
            warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "S3 request failed; retrying");
            let stopped = self.handle.block_on(async {
                // Shutdown first: once it is set the runtime may be going away, and its timers
                // with it.
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => true,
                    _ = tokio::time::sleep(delay) => false,
                }
            });
            if stopped {
                return Err(SinkError {
                    message: format!(
                        "{}; gave up because pgcdc is shutting down (nothing past the last checkpoint was acknowledged)",
                        error.message
                    ),
                    ..error
                });
            }
        }
    }

    fn put_file(&self, spool: &Path, key: &str, size: u64) -> Result<(), SinkError> {
        let full = self.full_key(key);
        self.retry("upload", key, || {
            let request = self
                .client
                .put_object()
                .bucket(&self.target.bucket)
                .key(&full)
                .content_type(content_type(key))
                .set_storage_class(self.storage_class())
                .set_server_side_encryption(self.sse())
                .set_ssekms_key_id(self.kms_key_id());
            async move {
                let body = ByteStream::read_from()
                    .path(spool)
                    .length(Length::Exact(size))
                    .build()
                    .await
                    .map_err(|e| SdkError::construction_failure(Box::new(e)))?;
                request.body(body).send().await
            }
        })?;
        Ok(())
    }

    fn put_multipart(&self, spool: &Path, key: &str, size: u64) -> Result<(), SinkError> {
        let full = self.full_key(key);
        let upload = self.retry("start a multipart upload of", key, || {
            self.client
                .create_multipart_upload()
                .bucket(&self.target.bucket)
                .key(&full)
                .content_type(content_type(key))
                .set_storage_class(self.storage_class())
                .set_server_side_encryption(self.sse())
                .set_ssekms_key_id(self.kms_key_id())
                .send()
        })?;
        let Some(upload_id) = upload.upload_id().map(str::to_owned) else {
            return Err(SinkError {
                kind: SinkErrorKind::Refused,
                op: "start a multipart upload of",
                key: full,
                location: format!("bucket {}", self.target.bucket),
                message: "the server returned no upload id".to_owned(),
            });
        };
        let result = self.upload_parts(spool, key, &full, &upload_id, size);
        if result.is_err() {
            // Leave no orphaned parts behind (they would be billed and never read).
            let abort = self.handle.block_on(
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.target.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .send(),
            );
            if let Err(e) = abort {
                warn!(key = %full, error = %describe(&e), "Could not abort a failed multipart upload; a bucket lifecycle rule for incomplete uploads will clean it up");
            }
        }
        result
    }

    fn upload_parts(
        &self,
        spool: &Path,
        key: &str,
        full: &str,
        upload_id: &str,
        size: u64,
    ) -> Result<(), SinkError> {
        let part_size = self.target.part_size;
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let length = part_size.min(size - offset);
            let part = self.retry("upload a part of", key, || {
                let request = self
                    .client
                    .upload_part()
                    .bucket(&self.target.bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .part_number(number);
                async move {
                    let body = ByteStream::read_from()
                        .path(spool)
                        .offset(offset)
                        .length(Length::Exact(length))
                        .build()
                        .await
                        .map_err(|e| SdkError::construction_failure(Box::new(e)))?;
                    request.body(body).send().await
                }
            })?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .build(),
            );
            offset += length;
            number += 1;
        }
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        self.retry("complete the multipart upload of", key, || {
            self.client
                .complete_multipart_upload()
                .bucket(&self.target.bucket)
                .key(full)
                .upload_id(upload_id)
                .multipart_upload(completed.clone())
                .send()
        })?;
        Ok(())
    }

    fn storage_class(&self) -> Option<StorageClass> {
        self.target.storage_class.as_deref().map(StorageClass::from)
    }

    fn sse(&self) -> Option<ServerSideEncryption> {
        self.target.sse.as_ref().map(|sse| match sse {
            Sse::Aes256 => ServerSideEncryption::Aes256,
            Sse::Kms { .. } => ServerSideEncryption::AwsKms,
        })
    }

    fn kms_key_id(&self) -> Option<String> {
        match &self.target.sse {
            Some(Sse::Kms { key_id }) => key_id.clone(),
            _ => None,
        }
    }
}

fn content_type(key: &str) -> &'static str {
    if key.ends_with(".gz") {
        "application/gzip"
    } else if key.ends_with(".json") {
        "application/json"
    } else {
        "text/csv"
    }
}

/// `Code: message (HTTP status)` for service errors, the error chain for the rest.
pub fn describe<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let status = service.raw().status().as_u16();
            let code = inner.code().unwrap_or("UnknownError");
            let message = inner.message().unwrap_or("");
            let hint = match code {
                "AccessDenied" | "AllAccessDisabled" => {
                    "; the credentials need s3:PutObject, s3:GetObject, s3:ListBucket and s3:AbortMultipartUpload on the prefix"
                }
                "NoSuchBucket" => "; check the bucket name in sink.url",
                "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
                    "; check the AWS credentials (environment, profile or role)"
                }
                _ => "",
            };
            format!("{code}: {message} (HTTP {status}){hint}")
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// The name of the provider that supplied the credentials (environment, profile, web identity,
/// ECS, IMDS...). The SDK exposes it only through `Debug` of the credentials, whose secret part
/// it redacts; only the provider name is taken from it.
async fn credential_source(sdk: &aws_config::SdkConfig) -> String {
    use aws_sdk_s3::config::ProvideCredentials;
    let Some(provider) = sdk.credentials_provider() else {
        return "none configured".to_owned();
    };
    match provider.provide_credentials().await {
        Ok(credentials) => {
            let debug = format!("{credentials:?}");
            debug
                .split("provider_name: \"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("unknown")
                .to_owned()
        }
        Err(e) => format!("unavailable ({e})"),
    }
}

impl Sink for S3Sink {
    fn publish(&self, spool: &Path, key: &str) -> Result<(), SinkError> {
        let size = std::fs::metadata(spool)
            .map_err(|e| SinkError {
                kind: SinkErrorKind::Local,
                op: "read",
                key: spool.display().to_string(),
                location: "the spool directory".to_owned(),
                message: e.to_string(),
            })?
            .len();
        let started = std::time::Instant::now();
        if size >= self.target.multipart_threshold {
            self.put_multipart(spool, key, size)?;
        } else {
            self.put_file(spool, key, size)?;
        }
        metrics::get()
            .upload_seconds
            .observe(started.elapsed().as_secs_f64());
        std::fs::remove_file(spool).map_err(|e| SinkError {
            kind: SinkErrorKind::Local,
            op: "remove",
            key: spool.display().to_string(),
            location: "the spool directory".to_owned(),
            message: e.to_string(),
        })
    }

    fn list(&self) -> Result<Vec<String>, SinkError> {
        let prefix = self.full_key("");
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.retry("list", "", || {
                self.client
                    .list_objects_v2()
                    .bucket(&self.target.bucket)
                    .prefix(&prefix)
                    .set_continuation_token(token.clone())
                    .send()
            })?;
            for object in page.contents() {
                if let Some(key) = object.key().and_then(|k| k.strip_prefix(&prefix)) {
                    keys.push(key.to_owned());
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated().unwrap_or(false) => {
                    token = Some(next.to_owned());
                }
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn delete(&self, key: &str) -> Result<(), SinkError> {
        let full = self.full_key(key);
        self.retry("delete", key, || {
            self.client
                .delete_object()
                .bucket(&self.target.bucket)
                .key(&full)
                .send()
        })?;
        Ok(())
    }

    fn exists(&self, key: &str) -> Result<bool, SinkError> {
        let full = self.full_key(key);
        self.retry("look up", key, || async {
            match self
                .client
                .head_object()
                .bucket(&self.target.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, SinkError> {
        let full = self.full_key(key);
        let result = self.retry("read", key, || async {
            match self
                .client
                .get_object()
                .bucket(&self.target.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(output) => Ok(Some(output)),
                Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        let Some(output) = result else {
            return Ok(None);
        };
        let bytes = self
            .handle
            .block_on(output.body.collect())
            .map_err(|e| SinkError {
                kind: SinkErrorKind::Retriable("response"),
                op: "read",
                key: full,
                location: format!("bucket {}", self.target.bucket),
                message: e.to_string(),
            })?;
        Ok(Some(bytes.to_vec()))
    }

    fn write(&self, key: &str, bytes: &[u8]) -> Result<(), SinkError> {
        let full = self.full_key(key);
        let body = bytes.to_vec();
        self.retry("write", key, || {
            self.client
                .put_object()
                .bucket(&self.target.bucket)
                .key(&full)
                .content_type(content_type(key))
                .set_server_side_encryption(self.sse())
                .set_ssekms_key_id(self.kms_key_id())
                .body(ByteStream::from(body.clone()))
                .send()
        })?;
        Ok(())
    }

    fn spool_dir(&self) -> PathBuf {
        self.target.spool_dir.clone()
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.target.bucket, self.target.prefix)
    }
}

impl S3Sink {
    /// Logs what the sink resolved to, once at start-up.
    pub fn log_info(&self, info: &S3Info) {
        info!(
            location = %self.location(),
            region = %info.region,
            endpoint = %info.endpoint,
            credentials = %info.credential_source,
            "S3 sink ready"
        );
    }
}
