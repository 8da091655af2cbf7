//! The web UI in a real browser: a collector filled with the loghub corpus, generated
//! logfmt events and XSS payloads, driven by `collector/ui/tests/ui.test.mjs` (Debian's
//! chromium through `playwright-core`); and a collector with tokens, an alert rule and dead
//! letters, driven by `collector/ui/tests/auth.test.mjs`. Screenshots go to
//! `target/ui-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Collector, corpus_dir};

/// Lines that would run script if the UI rendered values as HTML.
const XSS_LINES: &[&str] = &[
    "level=error msg=\"<script>window.__xss=1</script>\" task=xss_probe host=\"<img src=x onerror=window.__xss=1>\"",
    "level=warn msg=\"<img src=x onerror=\\\"window.__xss=1\\\">\" task=xss_probe",
    "level=info msg=\"click <a href=\\\"javascript:window.__xss=1\\\">here</a>\" task=xss_probe",
    "level=info msg=\"cell</td><td onmouseover=window.__xss=1>x\" task=xss_probe <b>k</b>=\"<i>v</i>\"",
    "<script>window.__xss=1</script> plain text line",
];

fn load(c: &Collector) -> u64 {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("corpus")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let mut sent = 0u64;
    for path in files {
        let text = std::fs::read_to_string(&path).expect("corpus file");
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for (n, chunk) in lines.chunks(500).enumerate() {
            let key = format!("{}-{n}", path.display());
            assert_eq!(c.ingest(chunk.join("\n").as_bytes(), Some(&key)).0, 200);
            sent += chunk.len() as u64;
        }
    }
    // Task runs with levels, hosts, versions and retries, stamped now so the default
    // time range shows them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let levels = ["info", "warn", "error", "debug"];
    let tasks = ["charge", "parse_email", "send_receipt"];
    let mut body = String::new();
    for i in 0..600u64 {
        let ts = rfc3339(now - (600 - i), i * 1_234_567);
        let level = levels[(i % 4) as usize];
        let task = tasks[(i % 3) as usize];
        let attempt = 1 + (i / 3) % 2;
        let host = format!("web-{}", i % 5);
        let msg = if level == "error" {
            "Charge failed: card declined"
        } else {
            "charge ok"
        };
        body.push_str(&format!(
            "ts={ts} level={level} msg=\"{msg}\" task={task} task_id=run-{:03} attempt={attempt} \
             version=1.{}.0 host={host} latency_ms={}\n",
            i / 6,
            i % 3,
            i * 7 % 1000
        ));
    }
    assert_eq!(c.ingest(body.as_bytes(), Some("ui-generated")).0, 200);
    sent += 600;
    let xss = XSS_LINES.join("\n");
    assert_eq!(c.ingest(xss.as_bytes(), Some("ui-xss")).0, 200);
    sent + XSS_LINES.len() as u64
}

/// `secs` since the epoch plus `nanos` as RFC 3339 UTC with nanoseconds.
fn rfc3339(secs: u64, nanos: u64) -> String {
    let ts = time::OffsetDateTime::UNIX_EPOCH
        + std::time::Duration::from_secs(secs)
        + std::time::Duration::from_nanos(nanos % 1_000_000_000);
    spoor_sdk::timestamp::format_timestamp(ts)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

fn npm_ci(dir: &Path) {
    if dir.join("node_modules/playwright-core").is_dir() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--silent", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("run npm ci (is npm installed?)");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

/// Runs one of the browser test scripts against `c`; panics with its output on failure.
fn run_browser_test(c: &Collector, script: &str, env: &[(&str, &str)]) {
    let tests = repo_root().join("collector/ui/tests");
    npm_ci(&tests);
    let shots = screenshot_dir();
    let out = Command::new("node")
        .arg(tests.join(script))
        .arg(c.url())
        .arg(&shots)
        .envs(env.iter().copied())
        .output()
        .expect("run node (is nodejs installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- collector\n{}",
        out.status,
        c.log()
    );
    eprintln!("{stdout}screenshots in {}", shots.display());
}

#[test]
fn ui_in_a_real_browser() {
    let c = Collector::start();
    let sent = load(&c);
    c.wait_indexed(sent);
    run_browser_test(&c, "ui.test.mjs", &[]);
}

const READ_TOKEN: &str = "ui-read-4f9c2e";
const ADMIN_TOKEN: &str = "ui-admin-8d13a7";
const INGEST_TOKEN: &str = "ui-ingest-27b5f0";
/// Where dead letters are replayed to: nothing listens there, so a real replay fails.
const DLQ_URL: &str = "http://127.0.0.1:9/replay";

/// POSTs lines with a bearer token.
fn ingest_with_token(c: &Collector, body: &str, key: &str) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/ingest", c.url()))
        .bearer_auth(INGEST_TOKEN)
        .header("Idempotency-Key", key)
        .body(body.to_string())
        .send()
        .expect("ingest request");
    assert_eq!(r.status(), 200, "ingest with the ingest token");
}

/// The search total for `q` with the read token.
fn count_with_token(c: &Collector, q: &str) -> u64 {
    let r = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/search", c.url()))
        .bearer_auth(READ_TOKEN)
        .query(&[("q", q), ("limit", "0")])
        .send()
        .expect("search request");
    assert_eq!(r.status(), 200, "search with the read token");
    r.json::<serde_json::Value>().expect("JSON")["total"]
        .as_u64()
        .expect("total")
}

#[test]
fn ui_with_tokens_alerts_and_dead_letters_in_a_real_browser() {
    let c = Collector::start_with_config(&format!(
        r#"
[[tokens]]
name = "reader"
scopes = ["read"]
token = "{READ_TOKEN}"

[[tokens]]
name = "ops"
scopes = ["admin"]
token = "{ADMIN_TOKEN}"

[[tokens]]
name = "shipper"
scopes = ["ingest"]
token = "{INGEST_TOKEN}"

[alerts]
interval = "200ms"

[[alerts.rule]]
name = "ui-errors"
kind = "threshold"
query = "level:error task:charge"
window = "1h"
value = 0
severity = "critical"

[[dlq.target]]
task = "*"
url = "{DLQ_URL}"
max_replays = 2
"#
    ));
    // Task lines stamped now (the default time ranges show them), a quarter errors.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let mut body = String::new();
    for i in 0..300u64 {
        let level = ["info", "warn", "error", "debug"][(i % 4) as usize];
        body.push_str(&format!(
            "ts={} level={level} msg=\"charge {i}\" task=charge task_id=c-{i} host=web-{}\n",
            rfc3339(now - (300 - i), i),
            i % 3
        ));
    }
    ingest_with_token(&c, &body, "ui-auth-lines");
    // Three dead letters, as the SDK reports them.
    let mut reports = String::new();
    for n in 1..=3 {
        let run = spoor_sdk::task_run::TaskRun::new("charge", format!("dl-{n}"))
            .with_payload_ref(format!("payload-dl-{n}"));
        let t = std::time::SystemTime::now();
        let event = spoor_sdk::deadletter::DeadLetter::new(
            &run,
            3,
            if n == 1 {
                // Dead-letter fields are log content too: shown as text, never run.
                "<img src=x onerror=\"window.__xss=1\"> card processor timed out"
            } else {
                "card processor timed out"
            },
            t - std::time::Duration::from_secs(60),
            t,
        )
        .to_event();
        reports.push_str(&event.to_line());
        reports.push('\n');
    }
    ingest_with_token(&c, &reports, "ui-auth-dead-letters");
    crate::harness::wait_for(
        "the lines, the dead letters and the alert's first state change to be searchable",
        std::time::Duration::from_secs(30),
        || {
            (count_with_token(&c, "task:charge -kind:deadletter") >= 300
                && count_with_token(&c, "kind:alert alert:ui-errors state:firing") >= 1)
                .then_some(())
        },
    );
    run_browser_test(
        &c,
        "auth.test.mjs",
        &[
            ("SPOOR_UI_READ_TOKEN", READ_TOKEN),
            ("SPOOR_UI_ADMIN_TOKEN", ADMIN_TOKEN),
            ("SPOOR_UI_INGEST_TOKEN", INGEST_TOKEN),
            ("SPOOR_UI_DLQ_URL", DLQ_URL),
        ],
    );
    // Expiring a silence (the UI's `Expire`): admin only, 404 for an unknown id.
    let http = reqwest::blocking::Client::new();
    let expire = |token: &str| {
        http.delete(format!("{}/api/v1/alerts/silences/no-such-id", c.url()))
            .bearer_auth(token)
            .send()
            .expect("DELETE silence")
            .status()
    };
    assert_eq!(expire(READ_TOKEN), 403);
    assert_eq!(expire(ADMIN_TOKEN), 404);
    // The same through the CLI: `spoor alerts expire ID`.
    let made: serde_json::Value = http
        .post(format!("{}/api/v1/alerts/silences", c.url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"rule": "ui-errors", "duration": "1h", "comment": "cli"}))
        .send()
        .expect("POST silence")
        .json()
        .expect("JSON");
    let id = made["id"].as_str().expect("silence id");
    let url = c.url();
    let env = [
        ("SPOOR_COLLECTOR", url.as_str()),
        ("SPOOR_TOKEN", ADMIN_TOKEN),
    ];
    let (code, out, err) = crate::harness::run_cli(&["alerts", "expire", id], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("silence {id} expired")), "{out}");
    let listed: serde_json::Value = http
        .get(format!("{}/api/v1/alerts", c.url()))
        .bearer_auth(READ_TOKEN)
        .send()
        .expect("GET alerts")
        .json()
        .expect("JSON");
    assert_eq!(listed["silences"], serde_json::json!([]), "{listed}");
    let (code, _, err) = crate::harness::run_cli(&["alerts", "expire", id], &env);
    assert_ne!(code, 0, "expiring twice fails");
    assert!(err.contains("no active silence"), "{err}");
}

#[test]
fn ui_assets_are_served_with_a_strict_policy() {
    let c = Collector::start();
    let http = reqwest::blocking::Client::new();
    for path in ["/", "/ui/app.js", "/ui/app.css", "/?q=level:error&from=1h"] {
        let r = http.get(format!("{}{path}", c.url())).send().expect("GET");
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .expect("ascii");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    let r = http
        .get(format!("{}/ui/nope.js", c.url()))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 404);
}
