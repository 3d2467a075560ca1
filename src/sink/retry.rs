//! Which sink failures are worth retrying, and how long to wait between tries.
//!
//! Classification only: the retry loop lives with the caller (see `s3.rs`), as in vector's
//! `RetryLogic`. Throttling, server errors, timeouts and connection failures pass; access
//! denied, missing buckets and bad credentials do not, however often they are tried.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth another try; the label names the kind for metrics.
    Retriable(&'static str),
    Permanent,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Failure::Retriable(kind) => kind,
            Failure::Permanent => "permanent",
        }
    }
}

/// Error codes S3 (and compatible servers) use for "slow down" and "try again".
const RETRIABLE_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
];

pub fn classify<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Failure {
    match err {
        SdkError::TimeoutError(_) => Failure::Retriable("timeout"),
        SdkError::DispatchFailure(_) => Failure::Retriable("connection"),
        SdkError::ResponseError(_) => Failure::Retriable("response"),
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or("");
            if status == 429 || code == "SlowDown" || code.starts_with("Throttl") {
                Failure::Retriable("throttled")
            } else if status >= 500 || RETRIABLE_CODES.contains(&code) {
                Failure::Retriable("server")
            } else {
                Failure::Permanent
            }
        }
        // Building the request failed (e.g. the spool file vanished): trying again won't help.
        _ => Failure::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::Failure;

    /// `pgcdc_sink_errors_total` starts every kind at 0 from `metrics::SINK_ERROR_KINDS`; a label
    /// added here and not there would appear only with its first failure. Read from the source
    /// because an `SdkError` of each kind cannot be built without a server.
    #[test]
    fn every_label_starts_at_zero_in_the_metrics() {
        let text = include_str!("retry.rs");
        let code = text.split("#[cfg(test)]").next().unwrap();
        let mut labels: Vec<&str> = code
            .split("Failure::Retriable(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        labels.push(Failure::Permanent.label());
        assert!(labels.len() >= 6, "{labels:?}");
        for label in labels {
            assert!(
                crate::metrics::SINK_ERROR_KINDS.contains(&label),
                "sink failure label {label:?} is not in metrics::SINK_ERROR_KINDS"
            );
        }
    }
}
