//! The deployment files of `deploy/`: the example configurations pass `--check-config`
//! as written, and the systemd units pass `systemd-analyze verify` where it is installed.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{run_cli, spoor_bin};

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The secrets the example configurations read from the environment, as the systemd
/// units' `EnvironmentFile`s would set them.
const SECRETS: &[(&str, &str)] = &[
    ("SPOOR_INGEST_TOKEN", "test-ingest-token"),
    ("SPOOR_READ_TOKEN", "test-read-token"),
    ("SPOOR_ADMIN_TOKEN", "test-admin-token"),
    ("SPOOR_OPS_WEBHOOK", "http://127.0.0.1:9/hook"),
    ("SPOOR_REPLAY_AUTH", "Bearer test"),
    ("SPOOR_TOKEN", "test-ingest-token"),
];

#[test]
fn example_collector_config_is_valid() {
    let config = deploy_dir().join("collector.toml");
    let config = config.to_str().expect("UTF-8 path");
    let (code, out, err) = run_cli(
        &["collector", "--config", config, "--check-config"],
        SECRETS,
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("configuration is valid"), "{out}");
}

#[test]
fn example_agent_config_is_valid() {
    let config = deploy_dir().join("agent.toml");
    let config = config.to_str().expect("UTF-8 path");
    let (code, out, err) = run_cli(&["agent", "--config", config, "--check-config"], SECRETS);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("configuration is valid"), "{out}");
}

#[test]
fn systemd_units_verify() {
    let units = ["spoor-collector.service", "spoor-agent.service"];
    let dir = tempfile::tempdir().expect("tempdir");
    for unit in units {
        let text = std::fs::read_to_string(deploy_dir().join("systemd").join(unit))
            .expect("read the unit");
        assert!(
            text.contains("/usr/local/bin/spoor ") && text.contains("--check-config"),
            "{unit} runs /usr/local/bin/spoor and checks its config first"
        );
        // `verify` checks that ExecStart's program exists: point it at the binary under test.
        std::fs::write(
            dir.path().join(unit),
            text.replace("/usr/local/bin/spoor ", &format!("{} ", spoor_bin())),
        )
        .expect("write the unit");
    }
    let out = match Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|u| dir.path().join(u)))
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("systemd-analyze not available ({e}); skipping the unit check");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    for unit in units {
        assert!(
            !stderr.contains(unit),
            "systemd-analyze verify has something to say about {unit}:\n{stderr}"
        );
    }
}
