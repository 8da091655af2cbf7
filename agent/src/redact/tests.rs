//! The redactor on whole events: every detector, field names, actions, `redacted=`.

use super::*;

fn redactor(config: RedactConfig) -> (Redactor, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Redactor::new(&config, dir.path()).unwrap(), dir)
}

fn run(r: &Redactor, line: &str) -> (Outcome, Event) {
    let (mut e, _) = Event::from_line(line.as_bytes());
    let o = r.apply(&mut e);
    (o, e)
}

/// Lines with one seeded secret each, the secret, and the rule that must catch it.
pub(crate) const SECRETS: &[(&str, &str, &str)] = &[
    (
        "msg=\"paid 4111 1111 1111 1111 ok\"",
        "4111 1111 1111 1111",
        "card",
    ),
    (
        "msg=\"card 5500-0000-0000-0004\"",
        "5500-0000-0000-0004",
        "card",
    ),
    (
        "msg=\"mail alice@example.com now\"",
        "alice@example.com",
        "email",
    ),
    (
        "msg=\"key AKIAIOSFODNN7EXAMPLE\"",
        "AKIAIOSFODNN7EXAMPLE",
        "aws_access_key",
    ),
    (
        "msg=\"aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_key",
    ),
    (
        "msg=\"push with ghp_a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2\"",
        "ghp_a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2",
        "github_token",
    ),
    (
        "msg=\"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r\"",
        "eyJzdWIiOiIxMjM0In0",
        "jwt",
    ),
    (
        "msg=\"Authorization: Bearer abcdef0123456789XYZ\"",
        "abcdef0123456789XYZ",
        "authorization",
    ),
    (
        "msg=\"-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----\"",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        "private_key",
    ),
    (
        "msg=\"db postgres://app:hunter2pw@db/x\"",
        "hunter2pw",
        "url_password",
    ),
    ("msg=\"ssn 123-45-6789\"", "123-45-6789", "ssn"),
    ("msg=ok password=Sw0rdfish!", "Sw0rdfish!", "password"),
    ("msg=ok X-Api-Key=k3y-abc", "k3y-abc", "api_key"),
    (
        "msg=\"login token: tkn-998877\"",
        "tkn-998877",
        "field_value",
    ),
];

#[test]
fn every_detector_redacts_its_secret() {
    let (r, _d) = redactor(RedactConfig::default());
    for (line, secret, rule) in SECRETS {
        let (o, e) = run(&r, line);
        assert_eq!(o, Outcome::Keep);
        let out = e.to_line();
        assert!(!out.contains(secret), "{rule}: {out}");
        assert!(
            e.get(REDACTED_KEY)
                .is_some_and(|v| v.split(',').any(|n| n == *rule)),
            "{rule}: {out}"
        );
    }
    let stats = r.stats();
    let counts: std::collections::HashMap<_, _> = stats.per_rule().into_iter().collect();
    assert_eq!(counts["card"], 2);
    assert_eq!(counts["ssn"], 1);
}

#[test]
fn masks_in_place_and_leaves_the_rest() {
    let (r, _d) = redactor(RedactConfig::default());
    let (_, e) = run(
        &r,
        "msg=\"paid 4111111111111111 by bob@example.com\" user=bob",
    );
    assert_eq!(
        e.get("msg"),
        Some("paid [REDACTED:card] by [REDACTED:email]")
    );
    assert_eq!(e.get("user"), Some("bob"));
    assert_eq!(e.get(REDACTED_KEY), Some("card,email"));
    let (_, e) = run(&r, "msg=\"invalid 4111111111111112 stays\" PassWord=x");
    assert_eq!(e.get("msg"), Some("invalid 4111111111111112 stays"));
    assert_eq!(e.get("PassWord"), Some("[REDACTED:password]"));
    let (_, e) = run(&r, "msg=\"nothing here\" n=10.0.0.1");
    assert_eq!(e.get(REDACTED_KEY), None);
    assert_eq!(e.get("n"), Some("10.0.0.1"), "ip is off by default");
}

#[test]
fn actions_hash_drop_and_encrypt() {
    let mut config = RedactConfig::default();
    config.detectors.email = DetectorSetting::Hash;
    config.detectors.ssn = DetectorSetting::DropEvent;
    config.detectors.card = DetectorSetting::DropField;
    config.detectors.ip = DetectorSetting::Encrypt;
    config.rules.push(CustomRule {
        name: "order".into(),
        pattern: r"order-(\d+)".into(),
        action: Action::Mask,
    });
    let (r, dir) = redactor(config);
    let (_, a) = run(&r, "msg=\"from bob@example.com\"");
    let (_, b) = run(&r, "msg=x who=bob@example.com");
    let ta = a
        .get("msg")
        .unwrap()
        .strip_prefix("from ")
        .unwrap()
        .to_string();
    assert!(ta.starts_with("tok_"), "{ta}");
    assert_eq!(b.get("who"), Some(ta.as_str()), "same value, same token");
    let (o, _) = run(&r, "msg=\"ssn 123-45-6789\"");
    assert_eq!(o, Outcome::Drop);
    assert_eq!(r.stats().dropped_events(), 1);
    let (_, e) = run(&r, "msg=ok cc=4111111111111111");
    assert_eq!(e.get("cc"), None);
    assert_eq!(e.get(REDACTED_KEY), Some("card"));
    let (_, e) = run(&r, "msg=\"order-42 from 10.1.2.3\"");
    let msg = e.get("msg").unwrap();
    assert!(
        msg.starts_with("order-[REDACTED:order] from enc:v1:"),
        "{msg}"
    );
    let key = crate::crypto::read_key_file(&dir.path().join(ENCRYPT_KEY_FILE)).unwrap();
    let c = ValueCipher::new(KeyRing::new(key, vec![]));
    let (plain, errs) = c.decrypt_all(msg);
    assert!(errs.is_empty());
    assert_eq!(plain, "order-[REDACTED:order] from 10.1.2.3");
}

#[test]
fn bad_custom_rules_are_config_errors() {
    let mut config = RedactConfig::default();
    config.rules.push(CustomRule {
        name: "x".into(),
        pattern: "(".into(),
        action: Action::Mask,
    });
    assert!(matches!(
        check_config(&config),
        Err(RedactError::Pattern { .. })
    ));
}

#[test]
fn the_loghub_corpus_is_left_alone() {
    let (r, _d) = redactor(RedactConfig::default());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/loghub");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut lines = 0;
    let mut changed = Vec::new();
    for entry in entries.flatten() {
        let p = entry.path();
        if p.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        for line in text.lines() {
            lines += 1;
            let (_, e) = run(&r, line);
            if let Some(rules) = e.get(REDACTED_KEY) {
                changed.push(format!("{rules}: {line}"));
            }
        }
    }
    eprintln!(
        "{} of {lines} loghub lines redacted: {changed:#?}",
        changed.len()
    );
    assert!(
        changed.len() * 1000 <= lines,
        "{} of {lines} lines redacted: {changed:#?}",
        changed.len()
    );
}

#[test]
fn the_config_file_sections_parse() {
    let c = crate::AgentConfig::from_toml(
        r#"
redaction = false

[redact]
fields = ["pin"]
field_action = "hash"

[redact.detectors]
ip = "mask"
card = "off"

[[redact.rules]]
name = "ticket"
pattern = 'TCK-[0-9]+'
action = "drop_field"

[encryption]
key_file = "/etc/spoor/buffer.key"
old_key_files = ["/etc/spoor/old.key"]
"#,
    )
    .unwrap();
    assert!(!c.redaction);
    assert_eq!(c.redact.fields, vec!["pin".to_string()]);
    assert_eq!(c.redact.field_action, Action::Hash);
    assert_eq!(c.redact.detectors.ip, DetectorSetting::Mask);
    assert_eq!(c.redact.detectors.card, DetectorSetting::Off);
    assert_eq!(c.redact.rules[0].action, Action::DropField);
    assert!(c.encryption.enabled);
    assert_eq!(c.encryption.old_key_files.len(), 1);
    let d = crate::AgentConfig::default();
    assert!(d.redaction && d.encryption.enabled);
    assert_eq!(d.redact.detectors.ip, DetectorSetting::Off);
    assert!(crate::AgentConfig::from_toml("[redact.detectors]\nfoo = \"mask\"").is_err());
    let mut bad = crate::AgentConfig::default();
    bad.redact.rules.push(CustomRule {
        name: "x".into(),
        pattern: "[".into(),
        action: Action::Mask,
    });
    assert!(bad.validate().is_err());
}

#[test]
fn field_names_match_whole_parts_without_case() {
    for (key, hit) in [
        ("password", true),
        ("PASSWORD", true),
        ("user.Password", true),
        ("client_secret", true),
        ("x-api-key", true),
        ("Set-Cookie", true),
        ("passwords", false),
        ("tokenizer", false),
        ("api", false),
    ] {
        let any = RedactConfig::default()
            .fields
            .iter()
            .any(|f| part_match(key, &normalize_name(f)));
        assert_eq!(any, hit, "{key}");
    }
}
