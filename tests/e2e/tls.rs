//! The collector serves HTTPS with rustls when a certificate and key are configured.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, spoor_bin, wait_for};

#[test]
fn collector_serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed for this test");
    assert!(made.success());
    let port = free_port();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            dir.path().join("data"),
            cert,
            key
        ),
    )
    .expect("config");
    let mut child = Command::new(spoor_bin())
        .args(["collector", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .expect("start collector");
    let curl = |url: &str, extra: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert"])
            .arg(&cert)
            .args(extra)
            .arg(url)
            .output()
            .expect("curl")
    };
    let health = format!("https://localhost:{port}/healthz");
    wait_for("the HTTPS collector", Duration::from_secs(30), || {
        let out = curl(&health, &[]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    let out = curl(
        &format!("https://localhost:{port}/api/v1/ingest"),
        &["--data-binary", "level=info msg=\"over tls\"\n"],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"accepted\":1"),
        "{out:?}"
    );
    // Plain HTTP on the TLS port is refused.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{port}/healthz"),
        ])
        .output()
        .expect("curl");
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("ok"));
    let _ = child.kill();
    let _ = child.wait();
}
