//! A real rsyslog forwards files of lines to the agent's syslog input over TCP, once in
//! RFC 5424 with octet-counted framing and once in RFC 3164 with newline framing: every
//! line arrives with its syslog fields.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{Agent, Collector, free_port, wait_for};

/// rsyslogd in the foreground with its own config, killed on drop.
struct Rsyslogd(Child);

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rsyslogd_path() -> Option<&'static str> {
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

#[test]
fn agent_receives_rsyslog_forwarding_in_both_formats_and_framings() {
    let Some(rsyslogd) = rsyslogd_path() else {
        // CI installs rsyslog (`.ci/run`); say loudly when it is missing rather than pass.
        panic!("rsyslogd not found: apt-get install -y rsyslog");
    };
    let collector = Collector::start();
    let port = free_port();
    let agent = Agent::start(&collector, &["--syslog", &format!("127.0.0.1:{port}")]);

    let dir = tempfile::tempdir().expect("temp dir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let a = dir.path().join("a.log");
    let b = dir.path().join("b.log");
    let lines = |tag: &str| -> String {
        (0..500)
            .map(|i| format!("hello from {tag} number {i}\n"))
            .collect()
    };
    std::fs::write(&a, lines("alpha")).expect("write a");
    std::fs::write(&b, lines("beta")).expect("write b");
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{work}")
module(load="imfile" mode="polling" PollingInterval="1")
input(type="imfile" File="{a}" Tag="appa" Severity="warning" Facility="local3" ruleset="rfc5424")
input(type="imfile" File="{b}" Tag="appb:" Severity="notice" Facility="local4" ruleset="rfc3164")
ruleset(name="rfc5424") {{
  action(type="omfwd" Target="127.0.0.1" Port="{port}" Protocol="tcp" TCP_Framing="octet-counted"
         Template="RSYSLOG_SyslogProtocol23Format")
}}
ruleset(name="rfc3164") {{
  action(type="omfwd" Target="127.0.0.1" Port="{port}" Protocol="tcp"
         Template="RSYSLOG_TraditionalForwardFormat")
}}
"#,
            work = work.display(),
            a = a.display(),
            b = b.display(),
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.path().join("rsyslogd.log")).expect("log");
    let _rsyslog = Rsyslogd(
        Command::new(rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rsyslogd"),
    );
    let rsyslog_log =
        || std::fs::read_to_string(dir.path().join("rsyslogd.log")).unwrap_or_default();

    wait_for(
        "1000 syslog lines searchable",
        Duration::from_secs(30),
        || {
            let n = collector.count("source:syslog");
            assert!(
                n <= 1000,
                "{n} lines arrived for 1000\nrsyslogd:\n{}",
                rsyslog_log()
            );
            (n == 1000).then_some(())
        },
    );
    assert_eq!(collector.count("app:appa facility:local3 level:warn"), 500);
    assert_eq!(collector.count("app:appb facility:local4 level:info"), 500);
    assert_eq!(collector.count("\"hello from alpha\""), 500);
    assert_eq!(collector.count("\"hello from beta\""), 500);
    let (_, body) = collector.get(
        "/api/v1/search",
        &[("q", "\"alpha number 7\""), ("limit", "5")],
    );
    let hit = &body["hits"][0];
    assert_eq!(hit["msg"], "hello from alpha number 7", "{hit}");
    assert!(hit["host"].as_str().is_some_and(|h| !h.is_empty()), "{hit}");
    assert!(hit["pid"].is_null(), "imfile lines carry no pid: {hit}");
    let (_, body) = collector.get(
        "/api/v1/search",
        &[("q", "\"beta number 7\""), ("limit", "5")],
    );
    let hit = &body["hits"][0];
    assert_eq!(hit["msg"], "hello from beta number 7", "{hit}");
    assert_eq!(hit["app"], "appb", "{hit}");
    assert!(agent.metric("spoor_agent_input_events_total{input=\"syslog\"}") == Some(1000.0));
}
