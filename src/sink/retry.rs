//! Which sink failures are worth retrying, and how long to wait between tries.
//!
//! Classification only: the retry loop lives with the caller (see `s3.rs`), as in vector's
//! `RetryLogic`. Throttling, server errors, timeouts and connection failures pass; access
//! denied, missing buckets and bad credentials do not, however often they are tried.

use std::time::Duration;

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

/// Capped exponential backoff with jitter: 50–100 % of `base * 2^n`, never above `cap`, so
/// many pgcdc processes hitting the same outage do not retry in lockstep.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        exp.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..40).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] <= Duration::from_millis(800));
        for d in &delays[10..] {
            assert!(
                *d >= Duration::from_secs(1) && *d <= Duration::from_secs(2),
                "{d:?}"
            );
        }
    }
}
