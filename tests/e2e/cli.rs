//! The `spoor` front door.

use crate::harness::run_cli;

#[test]
fn help_and_version() {
    let (code, out, _) = run_cli(&["--help"], &[]);
    assert_eq!(code, 0);
    for sub in ["collector", "search", "tail", "audit"] {
        assert!(out.contains(sub), "--help lists {sub}:\n{out}");
    }
    let (code, out, _) = run_cli(&["--version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("spoor {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn unreachable_collector_says_what_to_do() {
    let port = crate::harness::free_port();
    let (code, _, err) = run_cli(
        &["search", "x"],
        &[("SPOOR_COLLECTOR", &format!("http://127.0.0.1:{port}"))],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot reach the collector"), "{err}");
    assert!(err.contains("SPOOR_COLLECTOR"), "{err}");
}

#[test]
fn collector_refuses_open_non_loopback() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, _, err) = run_cli(
        &[
            "collector",
            "--data-dir",
            &dir.path().to_string_lossy(),
            "--listen",
            "0.0.0.0:0",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("no tokens"), "{err}");
}
