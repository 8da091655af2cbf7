//! Alerts end to end: a real collector evaluating rules every 200 ms over 2 s windows,
//! notifying a local HTTP receiver started by the test, which records each request body
//! by path (one path per notifier) and can answer `429 Retry-After: 1` first.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Collector, wait_for};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    body: Value,
    at: Instant,
    answered: u16,
}

/// A webhook receiver on a free loopback port.
pub(crate) struct Receiver {
    port: u16,
    log: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Answers the first `throttle` requests with 429 and `Retry-After: 1`, then 200.
    pub(crate) fn start(throttle: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let remaining = Arc::new(AtomicUsize::new(throttle));
        let shared = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (log, remaining) = (shared.clone(), remaining.clone());
                std::thread::spawn(move || serve(stream, &log, &remaining));
            }
        });
        Self { port, log }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// Bodies answered 200 on `path`.
    pub(crate) fn delivered(&self, path: &str) -> Vec<Value> {
        let log = self.log.lock().expect("receiver log");
        log.iter()
            .filter(|r| r.path == format!("/{path}") && r.answered == 200)
            .map(|r| r.body.clone())
            .collect()
    }

    fn all(&self) -> Vec<Received> {
        self.log.lock().expect("receiver log").clone()
    }

    #[track_caller]
    pub(crate) fn wait_delivered(&self, path: &str, n: usize) -> Vec<Value> {
        wait_for(
            &format!("{n} notifications on /{path}"),
            Duration::from_secs(30),
            || {
                let got = self.delivered(path);
                (got.len() >= n).then_some(got)
            },
        )
    }
}

fn serve(stream: std::net::TcpStream, log: &Mutex<Vec<Received>>, remaining: &AtomicUsize) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut length = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let throttled = remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let answered = if throttled { 429 } else { 200 };
        log.lock().expect("receiver log").push(Received {
            path,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at: Instant::now(),
            answered,
        });
        let reply = if throttled {
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
        } else {
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        };
        if reader.get_mut().write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Now in RFC 3339 (UTC), so the lines fall in the rules' windows.
pub(crate) fn now_ts() -> String {
    ts_ago(Duration::ZERO)
}

/// `ago` before now in RFC 3339.
fn ts_ago(ago: Duration) -> String {
    spoor_sdk::timestamp::format_timestamp(time::OffsetDateTime::now_utc() - ago)
}

/// Ingests `n` lines of `level` for `task`, stamped now.
fn log_lines(c: &Collector, task: &str, level: &str, n: usize) {
    let mut body = String::new();
    for i in 0..n {
        body.push_str(&format!(
            "ts={} level={level} task={task} msg=\"attempt {i} failed: card declined\"\n",
            now_ts()
        ));
    }
    let (status, answer) = c.ingest(body.as_bytes(), None);
    assert_eq!(status, 200, "{answer}");
}

fn notifier(name: &str, kind: &str, url: &str) -> String {
    format!("[[alerts.notifier]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\n")
}

const KINDS: [&str; 5] = ["slack", "mattermost", "discord", "teams", "webhook"];

/// A config with one rule, `errs` (more than `value` errors in the last minute, evaluated
/// every 200 ms), notifying the notifier `hook` of `kind` at `url`.
fn error_rule(kind: &str, url: &str, value: u32) -> String {
    format!(
        r#"
[alerts]
interval = "200ms"
{}
[[alerts.rule]]
name = "errs"
kind = "threshold"
query = "level:error"
window = "1m"
value = {value}
notify = ["hook"]
"#,
        notifier("hook", kind, url),
    )
}

/// The text of a chat payload of `kind`, whatever its shape.
fn text_of(kind: &str, body: &Value) -> String {
    match kind {
        "slack" | "mattermost" => body["text"].as_str().unwrap_or_default().to_string(),
        "discord" => body["content"].as_str().unwrap_or_default().to_string(),
        "teams" => body["attachments"][0]["content"]["body"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        _ => body["commonAnnotations"]["summary"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}

#[test]
fn error_burst_notifies_each_group_once_per_notifier_then_resolves() {
    let rx = Receiver::start(0);
    let mut config = String::from("[alerts]\ninterval = \"200ms\"\n");
    for k in KINDS {
        config.push_str(&notifier(k, k, &rx.url(k)));
    }
    config.push_str(
        r#"
[[alerts.rule]]
name = "charge-errors"
kind = "threshold"
query = "level:error"
window = "2s"
op = ">"
value = 2
group_by = ["task"]
severity = "critical"
runbook = "https://wiki.example/charge"
notify = ["slack", "mattermost", "discord", "teams", "webhook"]
"#,
    );
    let c = Collector::start_with_config(&config);
    log_lines(&c, "charge", "error", 5);
    log_lines(&c, "email", "error", 5);
    log_lines(&c, "quiet", "error", 1);
    log_lines(&c, "charge", "info", 20);

    for kind in KINDS {
        let got = rx.wait_delivered(kind, 2);
        let texts: Vec<String> = got.iter().map(|b| text_of(kind, b)).collect();
        for task in ["charge", "email"] {
            assert!(
                texts.iter().any(|t| t.contains("FIRING")
                    && t.contains("charge-errors")
                    && t.contains(&format!("task={task}"))),
                "{kind}: no firing message for {task}: {texts:?}"
            );
        }
        assert!(
            texts.iter().all(|t| !t.contains("task=quiet")),
            "{kind}: {texts:?}"
        );
    }
    let slack = &rx.delivered("slack")[0];
    let section = slack["blocks"][0]["text"]["text"]
        .as_str()
        .expect("slack section");
    assert!(
        section.contains("(threshold > 2) in the last 2s"),
        "{section}"
    );
    assert!(
        section.contains("/?q=level%3Aerror%20task%3A%22"),
        "{section}"
    );
    assert!(section.contains("card declined"), "samples: {section}");
    let discord = &rx.delivered("discord")[0];
    assert!(
        discord["content"]
            .as_str()
            .expect("content")
            .chars()
            .count()
            <= 2000
    );
    let teams = &rx.delivered("teams")[0];
    assert_eq!(teams["type"], "message");
    assert_eq!(
        teams["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(teams["attachments"][0]["content"]["type"], "AdaptiveCard");
    let hooks = rx.delivered("webhook");
    for h in &hooks {
        assert_eq!(h["version"], "4");
        assert_eq!(h["status"], "firing");
        assert_eq!(h["commonLabels"]["alertname"], "charge-errors");
        assert_eq!(h["commonLabels"]["severity"], "critical");
        let a = &h["alerts"][0];
        assert_eq!(a["status"], "firing");
        assert_eq!(
            a["annotations"]["runbook_url"],
            "https://wiki.example/charge"
        );
        assert_eq!(a["annotations"]["value"], "5");
        assert_eq!(a["fingerprint"].as_str().map(str::len), Some(16));
        assert!(a["startsAt"].as_str().is_some_and(|s| s.ends_with('Z')));
        assert!(
            h["groupKey"]
                .as_str()
                .is_some_and(|k| k.contains("alertname=\"charge-errors\""))
        );
    }
    let tasks: Vec<&str> = hooks
        .iter()
        .filter_map(|h| h["commonLabels"]["task"].as_str())
        .collect();
    assert!(
        tasks.contains(&"charge") && tasks.contains(&"email"),
        "{tasks:?}"
    );

    // The burst is over: once the window passes, each group resolves, once.
    for kind in KINDS {
        let got = rx.wait_delivered(kind, 4);
        let resolved = got
            .iter()
            .filter(|b| text_of(kind, b).contains("RESOLVED"))
            .count();
        assert_eq!(resolved, 2, "{kind}: {got:?}");
    }
    let resolved: Vec<Value> = rx
        .delivered("webhook")
        .into_iter()
        .filter(|h| h["status"] == "resolved")
        .collect();
    assert_eq!(resolved.len(), 2);
    assert!(
        resolved
            .iter()
            .all(|h| h["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z")
    );
    std::thread::sleep(Duration::from_secs(1));
    for kind in KINDS {
        assert_eq!(
            rx.delivered(kind).len(),
            4,
            "{kind}: exactly one firing and one resolved per group"
        );
    }
    // Every state change is in the audit log (and searchable) as kind=alert.
    c.wait_caught_up();
    assert_eq!(c.count("kind:alert state:firing"), 2);
    assert_eq!(c.count("kind:alert state:resolved"), 2);
    let (status, alerts) = c.get("/api/v1/alerts", &[]);
    assert_eq!(status, 200, "{alerts}");
    assert_eq!(alerts["rules"][0]["name"], "charge-errors");
    assert_eq!(alerts["rules"][0]["state"], "resolved");
}

#[test]
fn silence_suppresses_and_repeat_interval_repeats() {
    let rx = Receiver::start(0);
    let config = format!(
        r#"
[alerts]
interval = "200ms"
{}{}
[[alerts.rule]]
name = "noisy"
kind = "threshold"
query = "level:error task:charge"
window = "30s"
value = 0
repeat_interval = "1s"
notify = ["loud"]

[[alerts.rule]]
name = "muted"
kind = "threshold"
query = "level:error task:charge"
window = "30s"
value = 0
notify = ["quiet"]
"#,
        notifier("loud", "webhook", &rx.url("loud")),
        notifier("quiet", "webhook", &rx.url("quiet")),
    );
    let c = Collector::start_with_config(&config);
    let (code, out, err) = c.cli(&[
        "alerts",
        "silence",
        "muted",
        "--for",
        "1h",
        "--comment",
        "deploying",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("silence "), "{out}");
    crate::harness::wait_for(
        "the silence in the audit log",
        std::time::Duration::from_secs(10),
        || (c.count("kind:audit action:alerts.silence") == 1).then_some(()),
    );
    log_lines(&c, "charge", "error", 3);

    let got = rx.wait_delivered("loud", 3);
    assert!(
        got.iter()
            .all(|h| h["status"] == "firing" && h["commonLabels"]["alertname"] == "noisy")
    );
    assert!(
        rx.delivered("quiet").is_empty(),
        "silenced rule notified: {:?}",
        rx.delivered("quiet")
    );
    let (_, alerts) = c.get("/api/v1/alerts", &[]);
    let muted = alerts["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == "muted")
        .expect("muted rule");
    assert_eq!(muted["state"], "firing", "{alerts}");
    assert_eq!(
        alerts["silences"][0]["matchers"]["alertname"], "muted",
        "{alerts}"
    );
    assert!(
        c.metric("spoor_alert_silenced_total")
            .is_some_and(|n| n >= 1)
    );
    let (code, out, err) = c.cli(&["alerts", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("noisy") && out.contains("firing"), "{out}");

    // `spoor alerts test` sends a sample through the notifier.
    let (code, out, err) = c.cli(&["alerts", "test", "quiet"]);
    assert_eq!(code, 0, "{out}{err}");
    let test = rx.wait_delivered("quiet", 1);
    assert_eq!(test[0]["commonLabels"]["alertname"], "spoor-test");
    let (code, _, err) = c.cli(&["alerts", "test", "nobody"]);
    assert_ne!(code, 0);
    assert!(err.contains("nobody"), "{err}");
}

#[test]
fn absence_fires_when_a_scheduled_task_stops_logging() {
    let rx = Receiver::start(0);
    let config = format!(
        r#"
[alerts]
interval = "200ms"
{}
[[alerts.rule]]
name = "nightly-missing"
kind = "absence"
query = "task:nightly"
window = "2s"
for = "2s"
notify = ["ops"]
"#,
        notifier("ops", "discord", &rx.url("ops")),
    );
    let c = Collector::start_with_config(&config);
    // The scheduled task runs every 300 ms for 3 s: no alert.
    for _ in 0..10 {
        log_lines(&c, "nightly", "info", 1);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        rx.delivered("ops").is_empty(),
        "fired while the task ran: {:?}",
        rx.delivered("ops")
    );
    // Then it stops: after the window and the `for` period, the alert fires, once.
    let got = rx.wait_delivered("ops", 1);
    let content = got[0]["content"].as_str().expect("content");
    assert!(
        content.contains("[FIRING] nightly-missing") && content.contains("no matches"),
        "{content}"
    );
    // It comes back: resolved.
    log_lines(&c, "nightly", "info", 1);
    let got = rx.wait_delivered("ops", 2);
    assert!(
        got[1]["content"]
            .as_str()
            .is_some_and(|t| t.contains("[RESOLVED] nightly-missing")),
        "{got:?}"
    );
}

#[test]
fn a_receiver_answering_429_then_200_gets_the_message_once() {
    let rx = Receiver::start(1);
    let config = error_rule("slack", &rx.url("hook"), 0);
    let c = Collector::start_with_config(&config);
    log_lines(&c, "charge", "error", 1);
    rx.wait_delivered("hook", 1);
    std::thread::sleep(Duration::from_millis(500));
    let all = rx.all();
    assert_eq!(all.len(), 2, "one 429 and one delivery: {all:?}");
    assert_eq!((all[0].answered, all[1].answered), (429, 200));
    assert_eq!(all[0].body, all[1].body);
    assert!(
        all[1].at - all[0].at >= Duration::from_millis(900),
        "Retry-After: 1 not honoured"
    );
    assert_eq!(c.metric("spoor_alert_notification_retries_total"), Some(1));
    assert_eq!(c.metric("spoor_alert_notifications_total"), Some(1));
    assert!(
        !c.log().contains(&rx.url("hook")),
        "the webhook URL was logged"
    );
}

#[test]
fn a_restart_while_firing_does_not_notify_again() {
    let rx = Receiver::start(0);
    let config = error_rule("webhook", &rx.url("hook"), 0);
    let mut c = Collector::start_with_config(&config);
    log_lines(&c, "charge", "error", 2);
    rx.wait_delivered("hook", 1);
    wait_for("the outbox to empty", Duration::from_secs(10), || {
        (c.get("/api/v1/alerts", &[]).1["undelivered"] == 0).then_some(())
    });
    c.restart_with_config();
    wait_for(
        "evaluations after the restart",
        Duration::from_secs(30),
        || (c.metric("spoor_alert_evaluations_total")? >= 10).then_some(()),
    );
    let (_, alerts) = c.get("/api/v1/alerts", &[]);
    assert_eq!(alerts["rules"][0]["state"], "firing", "{alerts}");
    assert_eq!(
        rx.delivered("hook").len(),
        1,
        "notified again after the restart"
    );
}

#[test]
fn a_notification_in_flight_at_a_crash_is_delivered_after_the_restart() {
    let rx = Receiver::start(1);
    let config = error_rule("teams", &rx.url("hook"), 0);
    let mut c = Collector::start_with_config(&config);
    log_lines(&c, "charge", "error", 1);
    // The first attempt is answered 429 Retry-After: 1; the collector dies while waiting.
    wait_for("the first attempt", Duration::from_secs(30), || {
        (!rx.all().is_empty()).then_some(())
    });
    c.restart_with_config();
    let got = rx.wait_delivered("hook", 1);
    assert_eq!(got[0]["type"], "message");
    wait_for(
        "evaluations after the restart",
        Duration::from_secs(30),
        || (c.metric("spoor_alert_evaluations_total")? >= 10).then_some(()),
    );
    assert_eq!(rx.delivered("hook").len(), 1, "{:?}", rx.all());
    assert_eq!(c.get("/api/v1/alerts", &[]).1["undelivered"], 0);
}

#[test]
fn ratio_and_spike_rules_fire_on_their_measures() {
    let rx = Receiver::start(0);
    let config = format!(
        r#"
[alerts]
interval = "200ms"
{}
[[alerts.rule]]
name = "charge-error-ratio"
kind = "ratio"
query = "level:error task:charge"
of = "task:charge"
window = "30s"
op = ">="
value = 0.5
notify = ["hook"]

[[alerts.rule]]
name = "email-spike"
kind = "spike"
query = "task:email"
window = "10s"
op = ">"
value = 3
notify = ["hook"]
"#,
        notifier("hook", "webhook", &rx.url("hook")),
    );
    let c = Collector::start_with_config(&config);
    // 6 errors out of 10 charge lines: ratio 0.6.
    // (One batch, so no evaluation sees only part of it.)
    let mut body = String::new();
    for level in ["error"; 6].into_iter().chain(["info"; 4]) {
        body.push_str(&format!(
            "ts={} level={level} task=charge msg=charged\n",
            now_ts()
        ));
    }
    let (status, answer) = c.ingest(body.as_bytes(), None);
    assert_eq!(status, 200, "{answer}");
    // 2 email lines in the window before, 10 in this one: 5 times as many.
    let mut body = String::new();
    for _ in 0..2 {
        body.push_str(&format!(
            "ts={} level=info task=email msg=sent\n",
            ts_ago(Duration::from_secs(15))
        ));
    }
    for _ in 0..10 {
        body.push_str(&format!("ts={} level=info task=email msg=sent\n", now_ts()));
    }
    let (status, answer) = c.ingest(body.as_bytes(), None);
    assert_eq!(status, 200, "{answer}");
    let got = rx.wait_delivered("hook", 2);
    let by_rule = |name: &str| {
        got.iter()
            .find(|h| h["commonLabels"]["alertname"] == name)
            .unwrap_or_else(|| panic!("no notification for {name}: {got:?}"))
            .clone()
    };
    let ratio = by_rule("charge-error-ratio");
    assert_eq!(ratio["alerts"][0]["annotations"]["value"], "0.600");
    assert_eq!(ratio["alerts"][0]["annotations"]["threshold"], ">= 0.5");
    let spike = by_rule("email-spike");
    assert_eq!(spike["alerts"][0]["annotations"]["value"], "5");
}

#[test]
fn rules_reload_when_the_config_file_changes() {
    let rx = Receiver::start(0);
    let config = |value: u32| error_rule("mattermost", &rx.url("hook"), value);
    let c = Collector::start_with_config(&config(100));
    log_lines(&c, "charge", "error", 3);
    c.wait_caught_up();
    std::thread::sleep(Duration::from_millis(600));
    assert!(rx.delivered("hook").is_empty());
    // A broken file keeps the old rules.
    let path = c.dir.path().join("collector.toml");
    std::fs::write(&path, "[alerts]\nintervall = 1\n").expect("write config");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(c.get("/api/v1/alerts", &[]).1["rules"][0]["value"], 100.0);
    std::fs::write(&path, config(2)).expect("write config");
    let got = rx.wait_delivered("hook", 1);
    assert!(
        got[0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("(threshold > 2)")),
        "{got:?}"
    );
}

#[test]
fn a_dead_webhook_blocks_neither_evaluation_nor_other_notifiers() {
    let rx = Receiver::start(0);
    let dead = format!(
        "http://127.0.0.1:{}/secret-token-path",
        crate::harness::free_port()
    );
    let config = format!(
        r#"
[alerts]
interval = "200ms"
{}{}
[[alerts.rule]]
name = "errs"
kind = "threshold"
query = "level:error"
window = "1m"
value = 0
notify = ["dead", "live"]
"#,
        notifier("dead", "webhook", &dead),
        notifier("live", "discord", &rx.url("live")),
    );
    let c = Collector::start_with_config(&config);
    log_lines(&c, "charge", "error", 1);
    rx.wait_delivered("live", 1);
    wait_for(
        "a retry of the dead webhook",
        Duration::from_secs(30),
        || (c.metric("spoor_alert_notification_retries_total")? >= 2).then_some(()),
    );
    let before = c.metric("spoor_alert_evaluations_total").unwrap_or(0);
    wait_for("evaluations to go on", Duration::from_secs(30), || {
        (c.metric("spoor_alert_evaluations_total")? >= before + 5).then_some(())
    });
    let log = c.log();
    assert!(
        !log.contains("secret-token-path"),
        "the webhook URL was logged:\n{log}"
    );
}
