//! Waiting on a condition with a deadline: the only synchronisation tests use.
//!
//! A fixed `sleep(2s)` followed by an assertion is either slow or flaky, usually both. Instead a
//! test states what it waits for and how long that may take at most; the condition is polled
//! every 50 ms and the panic message names the condition, the time spent and the last reason it
//! was not met.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_until`] re-evaluates its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A condition's answer: either the value waited for, or why it is not there yet.
///
/// Implemented for `bool` (waits for `true`), `Option<T>` (waits for `Some`) and `Result<T, E>`
/// (waits for `Ok`; the last error is shown if the deadline passes).
pub trait Satisfied {
    type Output;
    fn satisfied(self) -> Result<Self::Output, String>;
}

impl Satisfied for bool {
    type Output = ();
    fn satisfied(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("condition was false".to_owned())
        }
    }
}

impl<T> Satisfied for Option<T> {
    type Output = T;
    fn satisfied(self) -> Result<T, String> {
        self.ok_or_else(|| "condition returned None".to_owned())
    }
}

impl<T, E: Debug> Satisfied for Result<T, E> {
    type Output = T;
    fn satisfied(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Polls `f` every [`POLL_INTERVAL`] until it is satisfied and returns its value; panics with
/// `what`, the elapsed time and the last answer when `deadline` passes.
///
/// ```ignore
/// let n = wait_until("3 files in the sink", Duration::from_secs(30), || async {
///     let rows = try_read_change_files(&sink, "public.t").ok()?;
///     (rows.len() >= 3).then_some(rows.len())
/// }).await;
/// ```
pub async fn wait_until<F, Fut, R>(what: &str, deadline: Duration, mut f: F) -> R::Output
where
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
    R: Satisfied,
{
    let started = Instant::now();
    loop {
        let last = match f().await.satisfied() {
            Ok(value) => return value,
            Err(why) => why,
        };
        let elapsed = started.elapsed();
        if elapsed >= deadline {
            panic!(
                "timed out after {:.1}s (deadline {:.1}s) waiting for {what}; last check: {last}",
                elapsed.as_secs_f64(),
                deadline.as_secs_f64()
            );
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - elapsed)).await;
    }
}
