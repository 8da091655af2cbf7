//! Retries with capped exponential backoff and full jitter, for work that may fail
//! transiently.
//!
//! After attempt `n` fails (attempts count from 1), the loop sleeps
//! `random(0, min(cap, base * 2^(n-1)))`: AWS's "full jitter", which spreads retries of
//! many tasks that failed together instead of having them hammer a recovering service in
//! step. The loop stops at whichever comes first:
//! - success;
//! - a failure that the caller classifies [`ErrorClass::Permanent`] (not retried);
//! - the last of `max_attempts`;
//! - the overall deadline: a sleep that would end past it is not started.
//!
//! Each attempt runs inside a `tracing` span with the field `attempt=N`, so the lines the
//! work logs carry it; each failure is logged (`warn`) with its `error`; giving up emits a
//! dead-letter report ([`crate::deadletter`]).
//!
//! [`RetryPolicy::run`] blocks (sleeping through its [`Clock`], which tests replace with a
//! [`crate::clock::ManualClock`]); [`RetryPolicy::run_async`] (feature `tokio`) sleeps with
//! `tokio::time::sleep` and measures its deadline with `tokio::time::Instant`, so tests use
//! `tokio::time::pause()`.
//!
//! ```
//! use std::time::Duration;
//! use spoor_sdk::retry::{ErrorClass, RetryPolicy};
//! use spoor_sdk::task_run::TaskRun;
//!
//! let policy = RetryPolicy::new().with_max_attempts(3).with_base_delay(Duration::from_millis(1));
//! let run = TaskRun::new("charge", "run-1").with_payload_ref("order-9");
//! let result = policy.run(&run, |_: &String| ErrorClass::Retryable, |attempt| {
//!     if attempt < 2 { Err(format!("timeout on attempt {attempt}")) } else { Ok(attempt) }
//! });
//! assert_eq!(result.ok(), Some(2));
//! ```

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::clock::{Clock, SystemClock};
use crate::deadletter::DeadLetter;
use crate::task_run::TaskRun;

/// Whether a failure is worth another attempt. The caller decides, per error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient (timeout, throttling, connection reset): try again after a delay.
    Retryable,
    /// Will fail the same way every time (bad input, not found, forbidden): stop now.
    Permanent,
}

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    deadline: Option<Duration>,
    clock: Arc<dyn Clock>,
}

impl Default for RetryPolicy {
    /// 5 attempts, 100 ms base delay, 20 s cap, no overall deadline, the system clock.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(20),
            deadline: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Why the retry loop gave up; each case carries the last error and the attempts made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError<E> {
    /// The error was classified permanent and was not retried.
    #[error("permanent failure on attempt {attempts}: {error}")]
    Permanent {
        /// Attempts made, the failing one included.
        attempts: u32,
        /// The error.
        error: E,
    },
    /// Every allowed attempt failed.
    #[error("gave up after {attempts} attempts: {error}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: E,
    },
    /// The next attempt could not start before the overall deadline.
    #[error("deadline reached after {attempts} attempts: {error}")]
    DeadlineExceeded {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: E,
    },
}

impl<E> RetryError<E> {
    /// Attempts made before giving up.
    pub fn attempts(&self) -> u32 {
        match self {
            RetryError::Permanent { attempts, .. }
            | RetryError::Exhausted { attempts, .. }
            | RetryError::DeadlineExceeded { attempts, .. } => *attempts,
        }
    }

    /// The last error.
    pub fn error(&self) -> &E {
        match self {
            RetryError::Permanent { error, .. }
            | RetryError::Exhausted { error, .. }
            | RetryError::DeadlineExceeded { error, .. } => error,
        }
    }

    /// The last error, by value.
    pub fn into_error(self) -> E {
        match self {
            RetryError::Permanent { error, .. }
            | RetryError::Exhausted { error, .. }
            | RetryError::DeadlineExceeded { error, .. } => error,
        }
    }
}

impl RetryPolicy {
    /// The default policy (see [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `attempts` attempts in all (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The delay ceiling after the first failure; it doubles after each further failure.
    pub fn with_base_delay(mut self, base: Duration) -> Self {
        self.base_delay = base;
        self
    }

    /// The cap on the delay ceiling.
    pub fn with_max_delay(mut self, cap: Duration) -> Self {
        self.max_delay = cap;
        self
    }

    /// The overall time budget, counted from the start of the first attempt.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The clock that the blocking loop reads and sleeps with (tests pass a manual one).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The most attempts the loop makes.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// `min(cap, base * 2^(attempt-1))`: the upper bound of the sleep after attempt
    /// `attempt` (counted from 1) fails.
    pub fn delay_ceiling(&self, attempt: u32) -> Duration {
        match 1u32.checked_shl(attempt.saturating_sub(1)) {
            Some(factor) => self.base_delay.saturating_mul(factor).min(self.max_delay),
            None => self.max_delay, // 2^32 or more times the base: past any sensible cap
        }
    }

    /// A full-jitter delay after attempt `attempt` fails: uniform in
    /// `[0, delay_ceiling(attempt)]`.
    pub fn jittered_delay(&self, attempt: u32) -> Duration {
        let ceiling = self.delay_ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        // Multiply-shift maps a uniform u64 onto [0, nanos] without modulo bias worth noting.
        let scaled = (u128::from(random_u64()) * (u128::from(nanos) + 1)) >> 64;
        Duration::from_nanos(u64::try_from(scaled).unwrap_or(nanos))
    }

    /// Runs `op` until it succeeds or the policy gives up, blocking between attempts.
    ///
    /// `op` receives the attempt number (from 1). `classify` decides whether an error is
    /// retried. When the loop gives up, a dead-letter report on `run` is emitted and the
    /// returned error says why.
    pub fn run<T, E, C, F>(&self, run: &TaskRun, classify: C, mut op: F) -> Result<T, RetryError<E>>
    where
        E: fmt::Display,
        C: Fn(&E) -> ErrorClass,
        F: FnMut(u32) -> Result<T, E>,
    {
        let started = self.clock.now();
        let mut failures = Failures::default();
        let mut attempt = 1;
        loop {
            let span = tracing::info_span!("attempt", attempt);
            let outcome = span.in_scope(|| op(attempt));
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let now = self.clock.now();
            failures.record(now);
            let elapsed = now.duration_since(started).unwrap_or_default();
            match self.next_step(attempt, &error, &classify, elapsed) {
                Step::Sleep(delay) => {
                    span.in_scope(|| log_retry(&error, delay));
                    self.clock.sleep(delay);
                    attempt += 1;
                }
                Step::GiveUp(make) => {
                    span.in_scope(|| log_give_up(&error));
                    return Err(self.give_up(run, &failures, make(attempt, error)));
                }
            }
        }
    }

    /// Runs `op` until it succeeds or the policy gives up, sleeping with tokio between
    /// attempts. Same contract as [`RetryPolicy::run`]; the deadline is measured with
    /// `tokio::time::Instant`.
    #[cfg(feature = "tokio")]
    pub async fn run_async<T, E, C, F, Fut>(
        &self,
        run: &TaskRun,
        classify: C,
        mut op: F,
    ) -> Result<T, RetryError<E>>
    where
        E: fmt::Display,
        C: Fn(&E) -> ErrorClass,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        use tracing::Instrument as _;

        let started = tokio::time::Instant::now();
        let mut failures = Failures::default();
        let mut attempt = 1;
        loop {
            let span = tracing::info_span!("attempt", attempt);
            let outcome = op(attempt).instrument(span.clone()).await;
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            failures.record(self.clock.now());
            match self.next_step(attempt, &error, &classify, started.elapsed()) {
                Step::Sleep(delay) => {
                    span.in_scope(|| log_retry(&error, delay));
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Step::GiveUp(make) => {
                    span.in_scope(|| log_give_up(&error));
                    return Err(self.give_up(run, &failures, make(attempt, error)));
                }
            }
        }
    }

    fn next_step<E>(
        &self,
        attempt: u32,
        error: &E,
        classify: &impl Fn(&E) -> ErrorClass,
        elapsed: Duration,
    ) -> Step<E> {
        if classify(error) == ErrorClass::Permanent {
            return Step::GiveUp(|attempts, error| RetryError::Permanent { attempts, error });
        }
        if attempt >= self.max_attempts {
            return Step::GiveUp(|attempts, error| RetryError::Exhausted { attempts, error });
        }
        let delay = self.jittered_delay(attempt);
        if let Some(deadline) = self.deadline
            && elapsed.saturating_add(delay) >= deadline
        {
            return Step::GiveUp(|attempts, error| RetryError::DeadlineExceeded {
                attempts,
                error,
            });
        }
        Step::Sleep(delay)
    }

    fn give_up<E: fmt::Display>(
        &self,
        run: &TaskRun,
        failures: &Failures,
        error: RetryError<E>,
    ) -> RetryError<E> {
        let first = failures.first.unwrap_or_else(|| self.clock.now());
        let last = failures.last.unwrap_or(first);
        DeadLetter::new(run, error.attempts(), error.error(), first, last).emit();
        error
    }
}

/// What the loop does after a failure.
enum Step<E> {
    Sleep(Duration),
    GiveUp(fn(u32, E) -> RetryError<E>),
}

/// When the first and the last failure happened.
#[derive(Debug, Default)]
struct Failures {
    first: Option<SystemTime>,
    last: Option<SystemTime>,
}

impl Failures {
    fn record(&mut self, at: SystemTime) {
        self.first.get_or_insert(at);
        self.last = Some(at);
    }
}

fn log_retry(error: &dyn fmt::Display, delay: Duration) {
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    tracing::warn!(error = %error, retryable = true, delay_ms, "Attempt failed; retrying.");
}

fn log_give_up(error: &dyn fmt::Display) {
    tracing::warn!(error = %error, "Attempt failed; giving up.");
}

/// A uniformly random u64. Jitter needs spread, not secrecy: SipHash under the per-process
/// random keys of [`RandomState`] over a counter is plenty, and costs no dependency.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static KEYS: RandomState = RandomState::new();
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    KEYS.with(|keys| keys.hash_one(n))
}

/// Reads an HTTP `Retry-After` value: delay-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2026 07:28:00 GMT`, RFC 9110 §10.2.3), as a wait from `now`, capped at one
/// hour. A date in the past means no wait. Used by everything in spoor that retries an HTTP
/// call (the agent's forwarder, the collector's notifiers).
pub fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    const CAP: Duration = Duration::from_secs(3600);
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(CAP));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, &format)
        .ok()?
        .assume_utc();
    let wait = at - now;
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO).min(CAP))
}

#[cfg(test)]
mod tests {
    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = time::macros::datetime!(2026-10-21 07:28:00 UTC);
        assert_eq!(
            super::parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            super::parse_retry_after(" 7 ", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            super::parse_retry_after("Wed, 21 Oct 2026 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            super::parse_retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            super::parse_retry_after("99999", now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(super::parse_retry_after("soon", now), None);
    }

    use std::sync::Mutex;
    use std::time::SystemTime;

    use super::*;
    use crate::clock::ManualClock;

    fn manual() -> (Arc<ManualClock>, RetryPolicy) {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let policy = RetryPolicy::new().with_clock(clock.clone());
        (clock, policy)
    }

    #[test]
    fn ceiling_doubles_from_base_up_to_the_cap() {
        let policy = RetryPolicy::new()
            .with_base_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1));
        let ceilings: Vec<u128> = (1..=6)
            .map(|a| policy.delay_ceiling(a).as_millis())
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.delay_ceiling(200), Duration::from_secs(1));
        assert_eq!(policy.delay_ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jittered_delays_stay_within_full_jitter_bounds_and_spread_over_them() {
        let policy = RetryPolicy::new()
            .with_base_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(300));
        for attempt in 1..=8 {
            let ceiling = policy.delay_ceiling(attempt);
            let draws: Vec<Duration> = (0..2000).map(|_| policy.jittered_delay(attempt)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter, not "equal jitter": the lower half of the range is used too.
            // With 2000 uniform draws, missing either quarter has probability 2 * 0.75^2000.
            assert!(draws.iter().any(|d| *d < ceiling / 4), "attempt {attempt}");
            assert!(
                draws.iter().any(|d| *d > ceiling * 3 / 4),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn zero_base_never_sleeps() {
        let policy = RetryPolicy::new().with_base_delay(Duration::ZERO);
        assert!((1..10).all(|a| policy.jittered_delay(a) == Duration::ZERO));
    }

    #[test]
    fn max_attempts_is_respected() {
        let (_, policy) = manual();
        let policy = policy.with_max_attempts(4);
        let calls = Mutex::new(Vec::new());
        let result: Result<(), _> = policy.run(
            &TaskRun::new("t", "1"),
            |_| ErrorClass::Retryable,
            |a| {
                calls.lock().expect("not poisoned").push(a);
                Err("down")
            },
        );
        let error = result.expect_err("always fails");
        assert!(matches!(
            error,
            RetryError::Exhausted {
                attempts: 4,
                error: "down"
            }
        ));
        assert_eq!(*calls.lock().expect("not poisoned"), [1, 2, 3, 4]);
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let (clock, policy) = manual();
        let mut calls = 0;
        let result: Result<(), _> = policy.run(
            &TaskRun::new("t", "1"),
            |e: &&str| {
                if *e == "bad input" {
                    ErrorClass::Permanent
                } else {
                    ErrorClass::Retryable
                }
            },
            |attempt| {
                calls += 1;
                if attempt == 1 {
                    Err("timeout")
                } else {
                    Err("bad input")
                }
            },
        );
        assert!(matches!(
            result,
            Err(RetryError::Permanent {
                attempts: 2,
                error: "bad input"
            })
        ));
        assert_eq!(calls, 2);
        // Only the one retryable failure slept.
        assert!(clock.now() <= SystemTime::UNIX_EPOCH + policy.delay_ceiling(1));
    }

    #[test]
    fn the_deadline_stops_retrying_before_it_is_passed() {
        let (clock, policy) = manual();
        let policy = policy
            .with_max_attempts(1000)
            .with_base_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(8))
            .with_deadline(Duration::from_secs(30));
        let result: Result<(), _> = policy.run(
            &TaskRun::new("t", "1"),
            |_| ErrorClass::Retryable,
            |_| Err("slow"),
        );
        let error = result.expect_err("always fails");
        assert!(
            matches!(error, RetryError::DeadlineExceeded { .. }),
            "{error:?}"
        );
        let spent = clock
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch");
        assert!(
            spent < Duration::from_secs(30),
            "slept past the deadline: {spent:?}"
        );
        assert!(error.attempts() > 1 && error.attempts() < 1000);
    }

    #[test]
    fn success_after_transient_failures_returns_the_value() {
        let (clock, policy) = manual();
        let policy = policy.with_base_delay(Duration::from_secs(1));
        let result = policy.run(
            &TaskRun::new("t", "1"),
            |_: &&str| ErrorClass::Retryable,
            |a| {
                if a < 3 { Err("flaky") } else { Ok(a * 10) }
            },
        );
        assert_eq!(result.ok(), Some(30));
        // Two sleeps, each within its ceiling: at most 1 s + 2 s.
        assert!(clock.now() <= SystemTime::UNIX_EPOCH + Duration::from_secs(3));
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(start_paused = true)]
    async fn async_retry_respects_attempts_classification_and_deadline() {
        let policy = RetryPolicy::new()
            .with_max_attempts(3)
            .with_base_delay(Duration::from_secs(1));
        let run = TaskRun::new("t", "1");

        let result = policy
            .run_async(
                &run,
                |_: &&str| ErrorClass::Retryable,
                |a| async move { if a < 3 { Err("flaky") } else { Ok(a) } },
            )
            .await;
        assert_eq!(result.ok(), Some(3));

        let result: Result<(), _> = policy
            .run_async(&run, |_| ErrorClass::Retryable, |_| async { Err("down") })
            .await;
        assert!(matches!(
            result,
            Err(RetryError::Exhausted { attempts: 3, .. })
        ));

        let result: Result<(), _> = policy
            .run_async(&run, |_| ErrorClass::Permanent, |_| async { Err("bad") })
            .await;
        assert!(matches!(
            result,
            Err(RetryError::Permanent { attempts: 1, .. })
        ));

        let start = tokio::time::Instant::now();
        let policy = policy
            .with_max_attempts(1000)
            .with_max_delay(Duration::from_secs(8))
            .with_deadline(Duration::from_secs(30));
        let result: Result<(), _> = policy
            .run_async(&run, |_| ErrorClass::Retryable, |_| async { Err("slow") })
            .await;
        assert!(matches!(result, Err(RetryError::DeadlineExceeded { .. })));
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}
