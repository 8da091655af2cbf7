//! Sending entries back to their task: one request per entry to the target the config
//! names for the entry's task, paced by a token bucket, with the job's progress persisted
//! around every request (see [`super::store::DlqStore::begin_send`]).
//!
//! A request is `METHOD url` with `Content-Type: application/json`,
//! `Idempotency-Key: <task_id>`, `X-Spoor-Dlq-Id: <id>`, the target's configured headers,
//! and a JSON body with the entry's task, task_id, attempts, error, failure times and its
//! `payload_ref` or `payload` (with `payload_encoding`, `payload_truncated`). Redirects are
//! not followed: a 3xx is an answer like any other non-2xx, so a target cannot forward the
//! collector somewhere the config did not name.

use std::time::{Duration, Instant};

use serde_json::json;

use super::config::TargetConfig;
use super::store::{Attempt, Entry};

/// How much of a target's answer is kept on the entry.
const ANSWER_KEEP_BYTES: usize = 4096;

/// A token bucket holding at most one token, refilled at `rate` per second: requests leave
/// at most `rate` per second, evenly spaced, with no burst.
#[derive(Debug)]
pub struct TokenBucket {
    interval: Duration,
    next: Option<Instant>,
}

impl TokenBucket {
    /// A bucket for `rate` requests per second (`rate` > 0).
    pub fn new(rate: f64) -> Self {
        let interval = if rate.is_finite() && rate > 0.0 {
            Duration::from_secs_f64(1.0 / rate)
        } else {
            Duration::ZERO
        };
        Self {
            interval,
            next: None,
        }
    }

    /// How long to wait before the next token, given the time now; takes the token.
    pub fn take_at(&mut self, now: Instant) -> Duration {
        let at = match self.next {
            Some(n) if n > now => n,
            _ => now,
        };
        self.next = Some(at + self.interval);
        at - now
    }

    /// Waits for a token.
    pub async fn take(&mut self) {
        let wait = self.take_at(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The JSON body of a replay request.
pub fn request_body(e: &Entry) -> serde_json::Value {
    let mut body = json!({
        "dlq_id": e.id,
        "task": e.task,
        "task_id": e.task_id,
        "attempts": e.attempts,
        "error": e.error,
        "first_failed": e.first_failed,
        "last_failed": e.last_failed,
    });
    if let Some(r) = &e.payload_ref {
        body["payload_ref"] = json!(r);
    }
    if let Some(p) = &e.payload {
        body["payload"] = json!(p);
        if let Some(enc) = &e.payload_encoding {
            body["payload_encoding"] = json!(enc);
        }
        if e.payload_truncated {
            body["payload_truncated"] = json!(true);
        }
    }
    body
}

/// Sends `e` to `target`; returns whether it was a 2xx and what to keep of the answer.
pub async fn send(
    http: &reqwest::Client,
    target: &TargetConfig,
    e: &Entry,
    job: u64,
) -> (bool, Attempt) {
    let at = spoor_sdk::timestamp::format_timestamp(time::OffsetDateTime::now_utc());
    let fail = |status: Option<u16>, answer: String| {
        (
            false,
            Attempt {
                at: at.clone(),
                job,
                status,
                answer,
            },
        )
    };
    let method = match target.method.parse::<reqwest::Method>() {
        Ok(m) => m,
        Err(_) => return fail(None, format!("bad method {}", target.method)),
    };
    let mut req = http
        .request(method, &target.url)
        .timeout(target.timeout)
        .header("Idempotency-Key", e.idempotency_key())
        .header("X-Spoor-Dlq-Id", e.id.to_string())
        .json(&request_body(e));
    for h in &target.headers {
        let value = match h.secret(&target.task).and_then(|s| s.resolve()) {
            Ok(v) => v,
            // The error names the setting, never the value.
            Err(err) => return fail(None, format!("header {}: {err}", h.name)),
        };
        req = req.header(h.name.as_str(), value);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            let cut = &body[..body.len().min(ANSWER_KEEP_BYTES)];
            let answer = String::from_utf8_lossy(cut).into_owned();
            (
                status.is_success(),
                Attempt {
                    at,
                    job,
                    status: Some(status.as_u16()),
                    answer,
                },
            )
        }
        Err(err) => {
            // The URL comes from the config, so it may be logged; headers are not.
            let why = if err.is_timeout() {
                format!("timed out after {:?}", target.timeout)
            } else {
                format!("request failed: {err}")
            };
            fail(None, why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_spaces_requests_evenly_without_burst() {
        let mut b = TokenBucket::new(4.0);
        let t0 = Instant::now();
        assert_eq!(b.take_at(t0), Duration::ZERO);
        assert_eq!(b.take_at(t0), Duration::from_millis(250));
        assert_eq!(b.take_at(t0), Duration::from_millis(500));
        // After a long pause there is still only one token.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.take_at(later), Duration::ZERO);
        assert_eq!(b.take_at(later), Duration::from_millis(250));
    }

    #[test]
    fn body_carries_payload_or_ref() {
        let mut e = crate::dlq::store::tests::entry(4, "t", "boom");
        let b = request_body(&e);
        assert_eq!(b["payload_ref"], "p-4");
        assert!(b.get("payload").is_none());
        e.payload_ref = None;
        e.payload = Some("aGk=".into());
        e.payload_encoding = Some("base64".into());
        let b = request_body(&e);
        assert_eq!(
            (b["payload"].as_str(), b["payload_encoding"].as_str()),
            (Some("aGk="), Some("base64"))
        );
        assert_eq!(b["task_id"], "run-4");
    }
}
