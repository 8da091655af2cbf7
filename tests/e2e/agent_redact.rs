//! Redaction and encryption at rest: seeded secrets of every detector never show in plain
//! text in the agent's data directory, the collector's files or search results; the disk
//! buffer is unreadable while the collector is down; `spoor decrypt` undoes `encrypt`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Agent, Collector, read_tree, spoor_bin, wait_for};

/// (line, secret that must vanish, rule that must fire).
const SECRETS: &[(&str, &str, &str)] = &[
    (
        "msg=\"paid 4111 1111 1111 1111 ok\"",
        "4111 1111 1111 1111",
        "card",
    ),
    (
        "msg=\"card 5500-0000-0000-0004 declined\"",
        "5500-0000-0000-0004",
        "card",
    ),
    ("msg=\"amex 378282246310005\"", "378282246310005", "card"),
    (
        "msg=\"key AKIAIOSFODNN7EXAMPLE in use\"",
        "AKIAIOSFODNN7EXAMPLE",
        "aws_access_key",
    ),
    (
        "msg=\"aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY loaded\"",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_key",
    ),
    (
        "msg=\"push ghp_Zx81Qw7Lm2Nb5Vc3Xz9Pa4Sd6Fg1Hj0Kl8Mn\"",
        "ghp_Zx81Qw7Lm2Nb5Vc3Xz9Pa4Sd6Fg1Hj0Kl8Mn",
        "github_token",
    ),
    (
        "msg=\"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.Qm9ndXNTaWduYXR1cmVYWVo\"",
        "eyJzdWIiOiJ1c2VyLTQyIn0",
        "jwt",
    ),
    (
        "msg=\"upstream said Authorization: Bearer zq8RT55vLkPq0aXyWm3e\"",
        "zq8RT55vLkPq0aXyWm3e",
        "authorization",
    ),
    (
        "msg=\"-----BEGIN RSA PRIVATE KEY-----\\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\\n-----END RSA PRIVATE KEY-----\"",
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo",
        "private_key",
    ),
    (
        "msg=\"connect postgres://app:Tr0ub4dor3x@db.internal/orders\"",
        "Tr0ub4dor3x",
        "url_password",
    ),
    ("msg=\"applicant ssn 078-05-1120\"", "078-05-1120", "ssn"),
    (
        "msg=login Password=CorrectHorse99",
        "CorrectHorse99",
        "password",
    ),
    (
        "msg=call api_key=sk_live_51Hq77abc",
        "sk_live_51Hq77abc",
        "api_key",
    ),
    (
        "plain text line with secret: Xyzzy-Plugh-42",
        "Xyzzy-Plugh-42",
        "field_value",
    ),
];

/// Lines that look close to secrets but are not: they must arrive unchanged.
const KEEP: &[(&str, &str)] = &[
    (
        "msg=\"bad luhn 4111 1111 1111 1112\"",
        "4111 1111 1111 1112",
    ),
    ("msg=\"order 5500-0000-0000-0005\"", "5500-0000-0000-0005"),
    (
        "msg=\"block blk_-4608999687919862906\"",
        "blk_-4608999687919862906",
    ),
    (
        "msg=\"date 2026-11-30 at 12:34:56\"",
        "2026-11-30 at 12:34:56",
    ),
    ("msg=\"from 10.0.0.5\"", "10.0.0.5"),
];

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every file under `dir` that holds `needle` in its raw bytes.
fn files_with(dir: &Path, needle: &str) -> Vec<String> {
    read_tree(dir)
        .into_iter()
        .filter(|(_, b)| contains(b, needle))
        .map(|(p, _)| p.display().to_string())
        .collect()
}

fn hit(collector: &Collector, q: &str) -> Value {
    let (status, body) = collector.get("/api/v1/search", &[("q", q), ("limit", "5")]);
    assert_eq!(status, 200, "{body}");
    body["hits"][0].clone()
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

#[test]
fn seeded_secrets_never_reach_disk_or_the_collector() {
    let collector = Collector::start();
    let cfg = tempfile::tempdir().expect("temp dir");
    let config = write_config(cfg.path(), "[redact.detectors]\nemail = \"hash\"\n");
    let agent = Agent::start(&collector, &["--config", &config]);
    let mut text = String::new();
    for (i, (line, _, _)) in SECRETS.iter().enumerate() {
        text.push_str(&format!("{line} case=s{i}\n"));
    }
    for (i, (line, _)) in KEEP.iter().enumerate() {
        text.push_str(&format!("{line} case=k{i}\n"));
    }
    text.push_str("msg=\"hello bob@example.com\" case=h1\n");
    text.push_str("msg=again who=bob@example.com case=h2\n");
    agent.send_tcp(text.as_bytes());
    let total = (SECRETS.len() + KEEP.len() + 2) as u64;
    wait_for("every line searchable", Duration::from_secs(30), || {
        (collector.count("") == total).then_some(())
    });

    for (i, (line, secret, rule)) in SECRETS.iter().enumerate() {
        // A plain-text line becomes one `msg`; find it by its words.
        let q = if line.starts_with("msg=") {
            format!("case:s{i}")
        } else {
            "\"plain text line\"".to_string()
        };
        let h = hit(&collector, &q);
        let shown = h.to_string();
        assert!(!shown.contains(secret), "{rule} leaked in search: {shown}");
        assert!(
            h["redacted"]
                .as_str()
                .is_some_and(|r| r.split(',').any(|n| n == *rule)),
            "{rule} did not fire for {line}: {shown}"
        );
        assert!(shown.contains(&format!("[REDACTED:{rule}]")), "{shown}");
        assert!(
            files_with(&agent.data_dir(), secret).is_empty(),
            "{rule} in the agent's files"
        );
        assert!(
            files_with(&collector.data_dir(), secret).is_empty(),
            "{rule} in the collector's files: {:?}",
            files_with(&collector.data_dir(), secret)
        );
    }
    for (i, (_, kept)) in KEEP.iter().enumerate() {
        let h = hit(&collector, &format!("case:k{i}"));
        assert!(h["msg"].as_str().is_some_and(|m| m.contains(kept)), "{h}");
        assert!(h["redacted"].is_null(), "{h}");
    }
    // The same value hashed twice gives the same token.
    let a = hit(&collector, "case:h1");
    let b = hit(&collector, "case:h2");
    let token = a["msg"]
        .as_str()
        .and_then(|m| m.strip_prefix("hello "))
        .unwrap_or_default();
    assert!(token.starts_with("tok_"), "{a}");
    assert_eq!(b["who"].as_str(), Some(token), "{b}");
    assert!(files_with(&collector.data_dir(), "bob@example.com").is_empty());
    assert!(
        agent
            .metric("spoor_agent_redactions_total{rule=\"card\"}")
            .is_some_and(|n| n >= 3.0)
    );
}

#[test]
fn the_buffer_is_unreadable_on_disk_while_the_collector_is_down() {
    let mut collector = Collector::start();
    collector.kill9();
    let agent = Agent::start(&collector, &[]);
    let marker = "zebra-marker-7f3a9c1e5b";
    let lines: String = (0..50)
        .map(|i| format!("level=info msg=\"note {marker} {i}\" n={i}\n"))
        .collect();
    agent.send_tcp(lines.as_bytes());
    wait_for("the batch in the buffer", Duration::from_secs(30), || {
        (agent
            .metric("spoor_agent_batches_appended_total")
            .is_some_and(|n| n >= 1.0)
            && agent
                .metric("spoor_agent_forward_retries_total")
                .is_some_and(|n| n >= 1.0))
        .then_some(())
    });
    let found = files_with(&agent.data_dir(), marker);
    assert!(found.is_empty(), "marker in plain text in {found:?}");
    assert!(
        !read_tree(&agent.data_dir().join("buffer")).is_empty(),
        "the buffer holds the lines"
    );
    assert!(
        agent.log().contains("generated a new one"),
        "{}",
        agent.log()
    );

    collector.restart();
    wait_for(
        "the lines after the collector came back",
        Duration::from_secs(60),
        || (collector.count(&format!("\"{marker}\"")) == 50).then_some(()),
    );
    let h = hit(&collector, "n:7");
    assert_eq!(
        h["msg"].as_str(),
        Some(format!("note {marker} 7").as_str()),
        "{h}"
    );
}

#[test]
fn encrypted_values_come_back_with_spoor_decrypt() {
    let collector = Collector::start();
    let cfg = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        cfg.path(),
        "[redact.detectors]\nip = \"encrypt\"\n\n[[redact.rules]]\nname = \"order\"\npattern = 'order-[0-9]+'\naction = \"drop_event\"\n",
    );
    let agent = Agent::start(&collector, &["--config", &config]);
    agent.send_tcp(b"msg=\"login from 192.168.7.33 ok\" case=e1\nmsg=\"order-991 placed\" case=e2\nmsg=last case=e3\n");
    wait_for("the last line", Duration::from_secs(30), || {
        (collector.count("case:e3") == 1).then_some(())
    });
    assert_eq!(collector.count("case:e2"), 0, "drop_event dropped it");
    let h = hit(&collector, "case:e1");
    let msg = h["msg"].as_str().unwrap_or_default().to_string();
    assert!(msg.starts_with("login from enc:v1:"), "{h}");
    assert!(files_with(&collector.data_dir(), "192.168.7.33").is_empty());
    assert_eq!(
        agent.metric("spoor_agent_redaction_dropped_events_total"),
        Some(1.0)
    );

    let key = agent.data_dir().join("keys/redact-encrypt.key");
    let mut child = Command::new(spoor_bin())
        .args(["decrypt", "--key-file"])
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spoor decrypt");
    let input = format!("msg=\"{msg}\" case=e1\n");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "msg=\"login from 192.168.7.33 ok\" case=e1\n"
    );
}

#[test]
fn a_rotated_buffer_key_still_reads_the_old_segments() {
    let mut collector = Collector::start();
    collector.kill9();
    let cfg = tempfile::tempdir().expect("temp dir");
    let config = write_config(cfg.path(), "");
    let mut agent = Agent::start(&collector, &["--config", &config]);
    let old_lines: String = (0..20)
        .map(|i| format!("msg=\"sealed oldkeyword {i}\"\n"))
        .collect();
    agent.send_tcp(old_lines.as_bytes());
    wait_for(
        "the old lines in the buffer",
        Duration::from_secs(30),
        || {
            agent
                .metric("spoor_agent_forward_retries_total")
                .is_some_and(|n| n >= 1.0)
                .then_some(())
        },
    );
    agent.kill9();

    let new_key = cfg.path().join("new.key");
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&new_key)
            .expect("new key file")
    };
    f.write_all(format!("{}\n", "5a".repeat(32)).as_bytes())
        .expect("write key");
    let old_key = agent.data_dir().join("keys/buffer.key");
    write_config(
        cfg.path(),
        &format!(
            "[encryption]\nkey_file = '{}'\nold_key_files = ['{}']\n",
            new_key.display(),
            old_key.display()
        ),
    );
    agent.restart();
    let new_lines: String = (0..20)
        .map(|i| format!("msg=\"sealed newkeyword {i}\"\n"))
        .collect();
    agent.send_tcp(new_lines.as_bytes());
    collector.restart();
    wait_for("old and new lines", Duration::from_secs(60), || {
        (collector.count("oldkeyword") == 20 && collector.count("newkeyword") == 20).then_some(())
    });
}
