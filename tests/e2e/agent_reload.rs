//! Run-time configuration of the agent: SIGHUP applies new redaction rules and batch
//! limits from the config file, reports restart-only changes, and keeps the old settings
//! when the new file is bad; `SPOOR_*` variables and
//! flags override the file (flag > environment > file).

use std::path::Path;
use std::time::Duration;

use crate::harness::{Agent, Collector, run_cli, wait_for};

/// The first search hit's `msg` once `q` finds exactly one event.
fn msg_of(collector: &Collector, q: &str) -> String {
    wait_for(
        &format!("an event matching {q}"),
        Duration::from_secs(30),
        || {
            let (status, body) = collector.get("/api/v1/search", &[("q", q), ("limit", "5")]);
            assert_eq!(status, 200, "{body}");
            (body["total"].as_u64() == Some(1)).then(|| body["hits"][0].clone())
        },
    )["msg"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no msg in the hit for {q}"))
}

fn wait_metric(agent: &Agent, name: &str, value: f64) {
    wait_for(
        &format!("{name} = {value}"),
        Duration::from_secs(30),
        || (agent.metric(name) == Some(value)).then_some(()),
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the agent config");
}

#[test]
fn sighup_applies_new_redaction_rules_and_keeps_them_when_the_new_file_is_bad() {
    let collector = Collector::start();
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf = conf_dir.path().join("agent.toml");
    write(
        &conf,
        "[[redact.rules]]\nname = \"order\"\npattern = \"ORD-[0-9]+\"\n",
    );
    let conf_arg = conf.to_str().expect("UTF-8 path");
    let agent = Agent::start(&collector, &["--config", conf_arg]);

    agent.send_tcp(b"msg=\"first ORD-1111 ticket T-2222\"\n");
    let first = msg_of(&collector, "first");
    assert_eq!(first, "first [REDACTED:order] ticket T-2222");

    // New rule in the file, plus a setting that cannot change while running.
    write(
        &conf,
        "max_connections = 7\n[batch]\nmax_events = 1\n[[redact.rules]]\nname = \"ticket\"\npattern = \"T-[0-9]+\"\n",
    );
    agent.signal("HUP");
    wait_metric(
        &agent,
        "spoor_agent_config_reloads_total{result=\"ok\"}",
        1.0,
    );
    agent.send_tcp(b"msg=\"second ORD-3333 ticket T-4444\"\n");
    assert_eq!(
        msg_of(&collector, "second"),
        "second ORD-3333 ticket [REDACTED:ticket]"
    );
    // `[batch]` applies from the next line: one line per batch now.
    let batches = agent
        .metric("spoor_agent_batches_appended_total")
        .expect("batches metric");
    agent.send_tcp(b"msg=\"perbatch one\"\nmsg=\"perbatch two\"\nmsg=\"perbatch three\"\n");
    wait_for("three lines", Duration::from_secs(30), || {
        (collector.count("perbatch") == 3).then_some(())
    });
    assert_eq!(
        agent.metric("spoor_agent_batches_appended_total"),
        Some(batches + 3.0)
    );
    let log = agent.log();
    assert!(
        log.contains("needs restart") && log.contains("max_connections"),
        "the restart-only change is reported:\n{log}"
    );

    // A pattern that does not compile: rejected, the agent keeps running with the rules
    // it had, and the metric and log say so.
    write(
        &conf,
        "[[redact.rules]]\nname = \"broken\"\npattern = \"(unclosed\"\n",
    );
    agent.signal("HUP");
    wait_metric(
        &agent,
        "spoor_agent_config_reloads_total{result=\"error\"}",
        1.0,
    );
    agent.send_tcp(b"msg=\"third ORD-5555 ticket T-6666\"\n");
    assert_eq!(
        msg_of(&collector, "third"),
        "third ORD-5555 ticket [REDACTED:ticket]"
    );
    let log = agent.log();
    assert!(
        log.contains("Configuration reload rejected") && log.contains("broken"),
        "{log}"
    );
    assert_eq!(
        agent.metric("spoor_agent_config_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );
}

#[test]
fn environment_overrides_the_file_and_flags_override_the_environment() {
    let collector = Collector::start();
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf = conf_dir.path().join("agent.toml");
    write(&conf, "[redact.detectors]\nip = \"off\"\n");
    let conf_arg = conf.to_str().expect("UTF-8 path");

    // The file turns the IP detector off; the variable turns it on.
    let agent = Agent::start_with_env(
        &collector,
        &["--config", conf_arg],
        &[("SPOOR_REDACT_DETECTORS", "ip")],
    );
    agent.send_tcp(b"msg=\"envcheck from 10.1.2.3\"\n");
    assert_eq!(
        msg_of(&collector, "envcheck"),
        "envcheck from [REDACTED:ip]"
    );

    // `--check-config` prints the effective settings: the flag beats the variable.
    let (code, out, err) = run_cli(
        &[
            "agent",
            "--config",
            conf_arg,
            "--redact-detectors",
            "ip=hash",
            "--buffer-full-policy",
            "drop_oldest",
            "--check-config",
        ],
        &[("SPOOR_REDACT_DETECTORS", "ip=drop_event")],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("configuration is valid"), "{out}");
    assert!(out.contains("ip: Hash"), "{out}");
    assert!(out.contains("when_full: DropOldest"), "{out}");
    let (code, _, err) = run_cli(
        &["agent", "--config", conf_arg, "--check-config"],
        &[("SPOOR_BUFFER_FULL_POLICY", "sometimes")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sometimes"), "{err}");
}

#[test]
fn sighup_starts_tailing_a_glob_added_to_files() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).expect("mkdir");
    std::fs::create_dir_all(&b).expect("mkdir");
    let glob = |d: &Path| format!("{}/*.log", d.display());
    let conf = dir.path().join("agent.toml");
    write(&conf, &format!("files = [\"{}\"]\n", glob(&a)));
    std::fs::write(b.join("app.log"), "msg=\"from the new glob globadded\"\n").expect("log");
    let agent = Agent::start(&collector, &["--config", conf.to_str().expect("UTF-8")]);
    std::fs::write(a.join("app.log"), "msg=\"from the old glob globold\"\n").expect("log");
    wait_for("the old glob's line", Duration::from_secs(30), || {
        (collector.count("globold") == 1).then_some(())
    });
    assert_eq!(collector.count("globadded"), 0);

    write(
        &conf,
        &format!("files = [\"{}\", \"{}\"]\n", glob(&a), glob(&b)),
    );
    agent.signal("HUP");
    wait_for("the new glob's line", Duration::from_secs(30), || {
        (collector.count("globadded") == 1).then_some(())
    });
    assert!(!agent.log().contains("needs restart"), "{}", agent.log());
}
