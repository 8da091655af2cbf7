//! The agent forwards to an `https://` collector: rustls with the ring provider, trusting the
//! CA from `forward.ca_file` (here the collector's self-signed certificate, made by openssl).
//! Lines sent to the agent arrive at the collector over HTTPS.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, spoor_bin, wait_for};

const LINES: u64 = 500;

/// Kills the child on drop.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn make_cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed for this test");
    assert!(made.success(), "openssl could not make a certificate");
    (cert, key)
}

/// `total` of a search on the HTTPS collector, via curl trusting `cert`.
fn count(port: u16, cert: &Path, q: &str) -> Option<u64> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--get", "--cacert"])
        .arg(cert)
        .args(["--data-urlencode", &format!("q={q}"), "--data", "limit=0"])
        .arg(format!("https://localhost:{port}/api/v1/search"))
        .output()
        .ok()?;
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    body["total"].as_u64()
}

#[test]
fn agent_tls_forwards_to_an_https_collector_with_a_custom_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = make_cert(dir.path());
    let port = free_port();
    let collector_conf = dir.path().join("collector.toml");
    std::fs::write(
        &collector_conf,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            dir.path().join("collector"),
            cert,
            key
        ),
    )
    .expect("collector config");
    let _collector = Kill(
        Command::new(spoor_bin())
            .args(["collector", "--config"])
            .arg(&collector_conf)
            .stderr(Stdio::null())
            .spawn()
            .expect("start collector"),
    );
    wait_for("the HTTPS collector", Duration::from_secs(30), || {
        count(port, &cert, "")
    });

    let agent_conf = dir.path().join("agent.toml");
    std::fs::write(
        &agent_conf,
        format!("[batch]\nmax_wait = \"20ms\"\n[forward]\nca_file = {cert:?}\n"),
    )
    .expect("agent config");
    let (tcp_port, admin_port) = (free_port(), free_port());
    let log_path = dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).expect("agent log");
    let _agent = Kill(
        Command::new(spoor_bin())
            .arg("agent")
            .arg("--data-dir")
            .arg(dir.path().join("agent"))
            .args(["--collector", &format!("https://localhost:{port}")])
            .args(["--listen", &format!("tcp:127.0.0.1:{tcp_port}")])
            .args(["--admin", &format!("127.0.0.1:{admin_port}")])
            .arg("--config")
            .arg(&agent_conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent"),
    );
    let agent_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for("the agent's TCP input", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", tcp_port)).ok()
    });
    let lines: String = (0..LINES)
        .map(|i| format!("level=info n={i} msg=\"over https {i}\"\n"))
        .collect();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", tcp_port)).expect("connect");
    std::io::Write::write_all(&mut s, lines.as_bytes()).expect("send");
    drop(s);
    let start = std::time::Instant::now();
    loop {
        if count(port, &cert, "source:tcp") == Some(LINES) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "lines did not arrive over HTTPS; agent log:\n{}",
            agent_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        count(port, &cert, &format!("n:[0 TO {}]", LINES - 1)),
        Some(LINES)
    );
}
