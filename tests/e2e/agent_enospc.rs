//! A full disk (ENOSPC) through the running agent: its data directory on a 2 MiB tmpfs,
//! nearly filled by another file, the collector down, more lines than fit. The agent says
//! so (a `disk full` error in its log, `spoor_agent_disk_full_total`), stops reading like
//! the `block` policy, corrupts nothing, and once space returns (the filler removed, the
//! collector back) delivers every line exactly once.
//!
//! Needs root for `mount -t tmpfs` (CI runs as root); fails with a clear message otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{Agent, Collector, wait_for};

const LINES: u64 = 20_000;

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs to mount a tmpfs (run it as root): mount -t tmpfs -o size={size} tmpfs {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The lines, each with 64 pseudo-random hex digits: the buffer stores batches compressed,
/// and these must still fill the disk.
fn lines() -> Vec<u8> {
    (0..LINES)
        .map(|i| {
            let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ i;
            let pad: String = (0..4)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("{x:016x}")
                })
                .collect();
            format!("level=info n={i} msg=\"disk full line {i}\" pad={pad}\n")
        })
        .collect::<String>()
        .into_bytes()
}

fn metric(agent: &Agent, name: &str) -> f64 {
    agent.metric(name).unwrap_or(0.0)
}

#[test]
fn agent_enospc_reports_blocks_and_recovers_without_loss() {
    let conf_dir = tempfile::tempdir().expect("temp dir");
    let conf = conf_dir.path().join("agent.toml");
    // A buffer cap far above the disk's size, so the disk fills first.
    std::fs::write(
        &conf,
        "max_line_bytes = 1024\n[batch]\nmax_bytes = 16384\nmax_wait = \"20ms\"\n\
         [buffer]\nmax_bytes = 67108864\nmax_segment_bytes = 131072\n\
         [forward]\nbackoff_cap = \"300ms\"\n",
    )
    .expect("write config");
    let mut collector = Collector::start();
    collector.kill9();
    let mut agent = Agent::start(&collector, &["--config", conf.to_str().expect("utf-8")]);
    // Move the agent's data directory onto a 2 MiB tmpfs (the harness chose the path).
    agent.kill9();
    let data = agent.data_dir();
    std::fs::remove_dir_all(&data).expect("clear the data dir");
    let _mount = Tmpfs::mount(&data, "2m");
    agent.restart();
    // Leave about 400 KiB free.
    let filler = data.join("filler");
    std::fs::write(&filler, vec![0u8; 1_650_000]).expect("write the filler file");

    let port = agent.tcp_port;
    let sender = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        std::io::Write::write_all(&mut s, &lines()).expect("send");
    });
    wait_for("the disk to fill", Duration::from_secs(30), || {
        (metric(&agent, "spoor_agent_disk_full_total") > 0.0).then_some(())
    });
    let log = agent.log();
    assert!(
        log.contains("disk full"),
        "no clear disk-full error in the agent log:\n{log}"
    );
    // Like `block`: the agent stopped reading and dropped nothing.
    let read = metric(&agent, "spoor_agent_input_events_total{input=\"tcp\"}");
    assert!(
        read < LINES as f64,
        "read {read} of {LINES} lines while the disk was full"
    );
    assert_eq!(metric(&agent, "spoor_agent_dropped_events_total"), 0.0);

    // Space returns: the filler goes, the collector comes back.
    std::fs::remove_file(&filler).expect("remove the filler");
    collector.restart();
    sender.join().expect("sender");
    wait_for(
        "every line at the collector",
        Duration::from_secs(90),
        || (collector.count("source:tcp") == LINES).then_some(()),
    );
    assert_eq!(collector.count(&format!("n:[0 TO {}]", LINES - 1)), LINES);
    assert_eq!(metric(&agent, "spoor_agent_dropped_events_total"), 0.0);
    assert_eq!(metric(&agent, "spoor_agent_buffer_errors_total"), 0.0);

    // No corruption: a restart finds a clean buffer, no torn records and nothing to resend.
    agent.restart();
    wait_for(
        "the buffer to be empty after restart",
        Duration::from_secs(30),
        || (agent.metric("spoor_agent_buffer_unacked_records") == Some(0.0)).then_some(()),
    );
    let log = agent.log();
    assert!(
        !log.contains("torn") && !log.contains("checksum"),
        "the buffer was damaged by the full disk:\n{log}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(collector.count("source:tcp"), LINES, "a line arrived twice");
}
