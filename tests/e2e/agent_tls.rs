//! The agent forwards to an `https://` collector: rustls with the ring provider, trusting the
//! CA from `forward.ca_file` (a test CA made by openssl, which signed the collector's
//! certificate).
//! Lines sent to the agent arrive at the collector over HTTPS.

use std::path::{Path, PathBuf};
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

/// Runs openssl with `args`, failing the test clearly when it cannot.
fn openssl(args: &[&str], dir: &Path) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("openssl must be installed for this test");
    assert!(ok.success(), "openssl {args:?} failed");
}

/// A test CA (`ca.pem`) and a server certificate for localhost signed by it (`cert.pem`,
/// `key.pem`). webpki does not accept a self-signed CA certificate as the server's own.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=spoor test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca, dir);
    let mut csr = vec!["req", "-subj", "/CN=localhost"];
    csr.extend(ec);
    csr.extend(["-keyout", "key.pem", "-out", "server.csr"]);
    openssl(&csr, dir);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("extensions file");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "cert.pem",
        ],
        dir,
    );
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

/// `total` of a search on the HTTPS collector, via curl trusting the CA `ca`.
fn count(port: u16, ca: &Path, q: &str) -> Option<u64> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--get", "--cacert"])
        .arg(ca)
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
    let (ca, cert, key) = make_certs(dir.path());
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
        count(port, &ca, "")
    });

    let agent_conf = dir.path().join("agent.toml");
    std::fs::write(
        &agent_conf,
        format!("[batch]\nmax_wait = \"20ms\"\n[forward]\nca_file = {ca:?}\n"),
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
        if count(port, &ca, "source:tcp") == Some(LINES) {
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
        count(port, &ca, &format!("n:[0 TO {}]", LINES - 1)),
        Some(LINES)
    );
}
