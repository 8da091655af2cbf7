//! The one harness every end-to-end test uses: start the real `spoor` binary with a temp
//! data directory and a free port, wait for `/healthz` with a deadline, keep stderr for
//! failure messages, and kill the child on drop.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the binary under test: `$SPOOR_E2E_BIN` when set (a copy taken right after the
/// build, for when several checkouts share one target directory and overwrite
/// `target/debug/spoor`), else the one cargo built for this test.
pub fn spoor_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("SPOOR_E2E_BIN")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_spoor").to_string())
    })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    install_crypto_provider();
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The corpus shipped beside the repository.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/loghub")
}

/// Polls `check` until it returns `Some` or `deadline` passes.
#[track_caller]
pub fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `spoor collector`.
pub struct Collector {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    http: reqwest::blocking::Client,
}

impl Collector {
    /// Starts a collector on a fresh data directory.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = Self {
            dir,
            port: free_port(),
            child: None,
            http: reqwest::blocking::Client::new(),
        };
        c.spawn();
        c
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("collector")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the collector process (with `collector.toml` when the test wrote one) and
    /// waits for `/healthz`. The log is appended to across restarts.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("collector.log"))
            .expect("log file");
        let mut command = Command::new(spoor_bin());
        command.arg("collector");
        let config = self.dir.path().join("collector.toml");
        if config.exists() {
            command.arg("--config").arg(config);
        }
        let child = command
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .env("SPOOR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start spoor collector");
        self.child = Some(child);
        let url = format!("{}/healthz", self.url());
        let log = self.dir.path().join("collector.log");
        wait_healthy("collector", &url, &mut self.child, &log);
    }

    /// What the collector wrote to stderr so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("collector.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        terminate(self.child.take(), "collector", || self.log());
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// POSTs a batch; returns the status and JSON body.
    pub fn ingest(&self, body: &[u8], key: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/api/v1/ingest", self.url()))
            .body(body.to_vec());
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().expect("ingest request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// GET an API path with query parameters; returns the status and JSON body.
    pub fn get(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url()))
            .query(params)
            .send()
            .expect("API request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// The search `total` for a query (asserting success).
    #[track_caller]
    pub fn count(&self, q: &str) -> u64 {
        let (status, body) = self.get("/api/v1/search", &[("q", q), ("limit", "0")]);
        assert_eq!(status, 200, "search {q:?}: {body}");
        body["total"].as_u64().expect("total")
    }

    /// Waits until everything appended so far is searchable.
    pub fn wait_indexed(&self, expected_total: u64) {
        wait_for(
            &format!("{expected_total} lines searchable"),
            Duration::from_secs(30),
            || (self.count("") == expected_total).then_some(()),
        );
    }

    /// A gauge from `/metrics`.
    pub fn metric(&self, name: &str) -> Option<u64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url()))
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Waits until the index has caught up with everything durable in the audit log.
    pub fn wait_caught_up(&self) {
        wait_for(
            "the index to catch up with the audit log",
            Duration::from_secs(60),
            || {
                let log = self.metric("spoor_audit_next_seq")?;
                let index = self.metric("spoor_index_next_seq")?;
                (log == index).then_some(())
            },
        );
    }

    /// Runs `spoor` with arguments and returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run_cli(args, &[("SPOOR_COLLECTOR", &self.url())])
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `spoor` with arguments and environment; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(spoor_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run spoor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// All files of `dir` with their bytes (for checking what is on disk).
pub fn read_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

/// A running `spoor agent` forwarding to a collector.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub tcp_port: u16,
    pub admin_port: u16,
    collector_url: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Agent {
    /// Starts an agent forwarding to `collector`, with extra flags (e.g. `--file GLOB`).
    pub fn start(collector: &Collector, extra: &[&str]) -> Self {
        Self::start_with_env(collector, extra, &[])
    }

    /// Like [`Agent::start`], with environment variables for the agent process.
    pub fn start_with_env(collector: &Collector, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut a = Self {
            dir: tempfile::tempdir().expect("temp dir"),
            tcp_port: free_port(),
            admin_port: free_port(),
            collector_url: collector.url(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        a.spawn();
        a
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("log file");
        let child = Command::new(spoor_bin())
            .arg("agent")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--collector", &self.collector_url])
            .args(["--listen", &format!("tcp:127.0.0.1:{}", self.tcp_port)])
            .arg("--listen")
            .arg(format!("unix:{}", self.socket_path().display()))
            .args(["--admin", &format!("127.0.0.1:{}", self.admin_port)])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start spoor agent");
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/healthz", self.admin_port);
        let log = self.dir.path().join("agent.log");
        wait_healthy("agent", &url, &mut self.child, &log);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Sends lines over the agent's TCP input and closes the connection.
    pub fn send_tcp(&self, text: &[u8]) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.tcp_port))
            .expect("connect to the agent");
        std::io::Write::write_all(&mut s, text).expect("send lines");
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM and wait for a clean exit (the agent makes its buffer durable).
    pub fn stop(&mut self) {
        terminate(self.child.take(), "agent", || self.log());
    }

    /// Stops the agent (SIGTERM) and starts it again with `extra` instead of the flags
    /// it had, on the same data directory and ports.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.stop();
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.spawn();
    }

    /// Sends a signal (`HUP`, `TERM`, ...) to the running agent with `kill`.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("the agent runs");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Agent {
    /// A value from the agent's `/metrics` (a line `NAME VALUE`, or `NAME{labels} VALUE`
    /// when `name` includes the labels).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin_port);
        let text = reqwest::blocking::get(url).ok()?.text().ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// Sends SIGTERM to `child` (if running) and asserts it exits cleanly; `log` explains a
/// failure.
fn terminate(child: Option<std::process::Child>, what: &str, log: impl FnOnce() -> String) {
    if let Some(mut c) = child {
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let status = c.wait().unwrap_or_else(|e| panic!("wait for {what}: {e}"));
        assert!(status.success(), "{what} exited with {status}:\n{}", log());
    }
}

/// A small deterministic random source for tests (xorshift64*), seeded from the clock
/// unless `SPOOR_TEST_SEED` is set; tests print the seed so a failure can be replayed.
pub struct TestRng(u64);

impl TestRng {
    pub fn from_env_or_clock() -> Self {
        let seed = std::env::var("SPOOR_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("SPOOR_TEST_SEED={seed}");
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

impl Collector {
    /// Starts a collector whose `--config` file holds `toml` (written to
    /// `DIR/collector.toml`), plus the usual `--data-dir` and `--listen` flags.
    pub fn start_with_config(toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("collector.toml"), toml).expect("write the config");
        let mut c = Self {
            dir,
            port: free_port(),
            child: None,
            http: reqwest::blocking::Client::new(),
        };
        c.spawn();
        c
    }

    /// Like [`Collector::start_with_config`], for a config that names the collector's
    /// own port (a cluster member's `advertise_url`).
    pub fn start_with_port_config(toml: impl FnOnce(u16) -> String) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        std::fs::write(dir.path().join("collector.toml"), toml(port)).expect("write the config");
        let mut c = Self {
            dir,
            port,
            child: None,
            http: reqwest::blocking::Client::new(),
        };
        c.spawn();
        c
    }

    /// SIGKILL, then start again with the same config file.
    pub fn restart_with_config(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// POSTs JSON to an API path; returns the status and JSON body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url()))
            .json(body)
            .send()
            .expect("API request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }
}

/// reqwest is built with rustls and no default crypto provider; install ring once per test
/// process (every test asks for a port first, so `free_port` calls this).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Waits until `url` answers 2xx, failing with the process's log if it exits or takes
/// longer than 30 s.
fn wait_healthy(what: &str, url: &str, child: &mut Option<Child>, log_path: &Path) {
    let log = || std::fs::read_to_string(log_path).unwrap_or_default();
    let start = Instant::now();
    loop {
        if reqwest::blocking::get(url).is_ok_and(|r| r.status().is_success()) {
            return;
        }
        if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
            panic!("{what} exited with {status}:\n{}", log());
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not start:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cluster of real `nats-server` processes with JetStream, on loopback ports, each
/// with its own store directory; killed on drop.
pub struct NatsCluster {
    /// Store directories and logs; removed on drop.
    _dir: tempfile::TempDir,
    pub nodes: Vec<NatsNode>,
}

/// One `nats-server` of a [`NatsCluster`].
pub struct NatsNode {
    pub name: String,
    pub port: u16,
    pub cluster_port: u16,
    pub monitor_port: u16,
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts `n` servers routed to each other (`-cluster`, `-routes`) and waits until
    /// each answers its health endpoint.
    pub fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes: Vec<NatsNode> = (0..n)
            .map(|i| NatsNode {
                name: format!("n{}", i + 1),
                port: free_port(),
                cluster_port: free_port(),
                monitor_port: free_port(),
                child: None,
            })
            .collect();
        let routes: Vec<String> = nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.cluster_port))
            .collect();
        for node in &mut nodes {
            let store = dir.path().join(&node.name);
            let log = std::fs::File::create(dir.path().join(format!("{}.log", node.name)))
                .expect("nats log");
            let mut cmd = Command::new("nats-server");
            cmd.args(["-a", "127.0.0.1", "-p", &node.port.to_string()])
                .args(["-n", &node.name, "-m", &node.monitor_port.to_string()])
                .arg("-js")
                .arg("-sd")
                .arg(&store);
            if n > 1 {
                cmd.args(["--cluster_name", "spoor-test"])
                    .args([
                        "-cluster",
                        &format!("nats://127.0.0.1:{}", node.cluster_port),
                    ])
                    .args(["-routes", &routes.join(",")]);
            }
            let child = cmd
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start nats-server (apt-get install nats-server)");
            node.child = Some(child);
        }
        for node in &nodes {
            let url = format!("http://127.0.0.1:{}/healthz", node.monitor_port);
            wait_for(
                &format!("{} healthy", node.name),
                Duration::from_secs(30),
                || {
                    reqwest::blocking::get(&url)
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|_| ())
                },
            );
        }
        Self { _dir: dir, nodes }
    }

    /// The client URLs, comma-free, for a collector's `nats = [...]`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The name of the server leading `stream`'s replica group, from the monitoring API.
    pub fn stream_leader(&self, stream: &str) -> Option<String> {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let url = format!(
                "http://127.0.0.1:{}/jsz?accounts=true&streams=true",
                node.monitor_port
            );
            let Ok(body) = reqwest::blocking::get(&url).and_then(|r| r.json::<Value>()) else {
                continue;
            };
            for account in body["account_details"].as_array().into_iter().flatten() {
                for s in account["stream_detail"].as_array().into_iter().flatten() {
                    if s["name"] == stream
                        && let Some(leader) = s["cluster"]["leader"].as_str()
                    {
                        return Some(leader.to_string());
                    }
                }
            }
        }
        None
    }

    /// SIGKILL one server by name.
    pub fn kill9(&mut self, name: &str) {
        for node in &mut self.nodes {
            if node.name == name
                && let Some(mut c) = node.child.take()
            {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
