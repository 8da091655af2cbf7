//! `spoor up --demo`: the whole pipeline in one command, checked through its API.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{free_port, run_cli, spoor_bin, wait_for};

#[test]
fn spoor_up_demo_logs_searchable_events_a_dead_letter_and_an_alert() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (api, tcp, admin) = (free_port(), free_port(), free_port());
    let mut child = Command::new(spoor_bin())
        .args(["up", "--demo", "--stop-after", "60", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{api}")])
        .args(["--agent-listen", &format!("127.0.0.1:{tcp}")])
        .args(["--agent-admin", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spoor up");
    let http = reqwest::blocking::Client::new();
    let count = |q: &str| -> Option<u64> {
        let body: Value = http
            .get(format!("http://127.0.0.1:{api}/api/v1/search"))
            .query(&[("q", q), ("limit", "0")])
            .send()
            .ok()?
            .json()
            .ok()?;
        body["total"].as_u64()
    };
    wait_for("demo events searchable", Duration::from_secs(60), || {
        (count("task:parse_email").unwrap_or(0) > 0).then_some(())
    });
    wait_for("a dead letter", Duration::from_secs(60), || {
        (count("kind:deadletter").unwrap_or(0) > 0).then_some(())
    });
    assert!(
        count("attempt:>1").unwrap_or(0) > 0,
        "some attempts were retried"
    );
    // The demo's error burst fires the demo alert, delivered to the built-in receiver,
    // whose messages are searchable (and so shown in the UI).
    wait_for("the demo alert delivered", Duration::from_secs(60), || {
        (count("task:demo-chat charge-errors").unwrap_or(0) > 0).then_some(())
    });
    let alerts: Value = http
        .get(format!("http://127.0.0.1:{api}/api/v1/alerts"))
        .send()
        .expect("alerts")
        .json()
        .expect("json");
    assert!(alerts.to_string().contains("charge-errors"), "{alerts}");

    // A line sent as the banner says is found too.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", tcp)).expect("agent tcp");
    std::io::Write::write_all(&mut s, b"level=info msg=\"hello from the shell\"\n").expect("send");
    drop(s);
    wait_for("the shell line", Duration::from_secs(30), || {
        (count("\"hello from the shell\"").unwrap_or(0) == 1).then_some(())
    });

    // A second `spoor up` on the same ports says which flag to change.
    let (code, _, err) = run_cli(
        &[
            "up",
            "--data-dir",
            &dir.path().join("other").to_string_lossy(),
            "--listen",
            &format!("127.0.0.1:{api}"),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("--agent-listen") || err.contains("--listen"),
        "{err}"
    );

    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().expect("spoor up exits");
    assert!(
        status.success(),
        "spoor up stops cleanly on SIGTERM: {status}"
    );
    let (code, out, err) = run_cli(
        &[
            "audit",
            "verify",
            "--data-dir",
            &dir.path().join("data/collector").to_string_lossy(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
}
