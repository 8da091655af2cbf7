//! Test harness: a small ingest receiver (decodes zstd, dedupes by `Idempotency-Key`, can
//! answer 503 or a fixed status) and an agent started in-process with `spoor_agent::run`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use spoor_agent::{AgentConfig, ListenAddr};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the receiver saw.
#[derive(Debug, Default)]
pub struct Received {
    /// Lines of every accepted (non-duplicate) batch, in arrival order.
    pub lines: Vec<String>,
    /// Idempotency-Key → agent header of accepted batches.
    pub keys: HashMap<String, String>,
    pub duplicates: u64,
    pub requests: u64,
}

#[derive(Clone)]
struct ReceiverState {
    seen: Arc<Mutex<Received>>,
    /// Answer 503 to this many requests first.
    fail_next: Arc<AtomicU32>,
    /// When non-zero, answer every request with this status.
    always: Arc<AtomicU16>,
}

/// The ingest endpoint double.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    state: ReceiverState,
    task: JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let state = ReceiverState {
            seen: Arc::default(),
            fail_next: Arc::default(),
            always: Arc::default(),
        };
        let app = Router::new()
            .route("/api/v1/ingest", post(ingest))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn fail_next(&self, n: u32) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn always(&self, status: u16) {
        self.state.always.store(status, Ordering::SeqCst);
    }

    pub fn with<T>(&self, f: impl FnOnce(&Received) -> T) -> T {
        f(&self.state.seen.lock().expect("lock"))
    }

    pub fn lines(&self) -> Vec<String> {
        self.with(|r| r.lines.clone())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn ingest(
    State(s): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let status = s.always.load(Ordering::SeqCst);
    if status != 0 {
        return (
            StatusCode::from_u16(status).expect("status"),
            r#"{"error":"rejected by test"}"#.into(),
        );
    }
    if s.fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        s.seen.lock().expect("lock").requests += 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"busy"}"#.into(),
        );
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let key = header("idempotency-key").expect("Idempotency-Key");
    let agent = header("x-spoor-agent").expect("X-Spoor-Agent");
    assert_eq!(header("content-encoding").as_deref(), Some("zstd"));
    let raw = zstd::decode_all(&body[..]).expect("zstd body");
    let text = String::from_utf8(raw).expect("utf-8");
    let mut seen = s.seen.lock().expect("lock");
    seen.requests += 1;
    if seen.keys.contains_key(&key) {
        seen.duplicates += 1;
        return (
            StatusCode::OK,
            r#"{"accepted":0,"first_seq":0,"duplicate":true}"#.into(),
        );
    }
    seen.keys.insert(key, agent);
    let n = text.lines().count();
    seen.lines.extend(text.lines().map(str::to_string));
    (
        StatusCode::OK,
        format!(r#"{{"accepted":{n},"first_seq":1,"duplicate":false}}"#),
    )
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A config for tests: fast batching and fsync, TCP + Unix inputs on fresh addresses.
pub fn test_config(data_dir: &Path, collector: &str) -> AgentConfig {
    let mut c = AgentConfig {
        data_dir: data_dir.to_path_buf(),
        collector: collector.to_string(),
        listen: Some(vec![
            ListenAddr::Tcp(([127, 0, 0, 1], free_port()).into()),
            ListenAddr::Unix(data_dir.join("agent.sock")),
        ]),
        admin: ([127, 0, 0, 1], free_port()).into(),
        ..AgentConfig::default()
    };
    c.batch.max_events = 50;
    c.batch.max_wait = Duration::from_millis(20);
    c.buffer.fsync_interval = Duration::from_millis(10);
    c.buffer.max_segment_bytes = 4 << 20;
    c.forward.backoff_base = Duration::from_millis(20);
    c.forward.backoff_cap = Duration::from_millis(200);
    c
}

/// An agent running in this process.
pub struct TestAgent {
    pub config: AgentConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), spoor_agent::AgentError>>>,
}

impl TestAgent {
    pub async fn start(config: AgentConfig) -> Self {
        // reqwest is built with `rustls-no-provider`: the tests' own clients need a default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(spoor_agent::run(config.clone(), async {
            let _ = rx.await;
        }));
        let agent = TestAgent {
            config,
            stop: Some(tx),
            task: Some(task),
        };
        let admin = agent.config.admin;
        wait_for("admin port", Duration::from_secs(10), || {
            std::net::TcpStream::connect(admin).is_ok()
        })
        .await;
        agent
    }

    pub fn tcp_addr(&self) -> std::net::SocketAddr {
        self.config
            .listen_addrs()
            .into_iter()
            .find_map(|a| match a {
                ListenAddr::Tcp(a) => Some(a),
                ListenAddr::Unix(_) => None,
            })
            .expect("tcp input")
    }

    pub fn unix_path(&self) -> PathBuf {
        self.config.data_dir.join("agent.sock")
    }

    pub fn agent_id(&self) -> String {
        std::fs::read_to_string(self.config.data_dir.join(spoor_agent::AGENT_ID_FILE))
            .expect("agent_id")
            .trim()
            .to_string()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.config.admin))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// The value of an unlabelled metric.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("agent stops in time")
                .expect("agent task")
                .expect("agent ran cleanly");
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Polls `cond` until it holds, failing the test after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of `key` in a logfmt line.
pub fn field(line: &str, key: &str) -> Option<String> {
    let (event, _) = spoor_sdk::Event::from_line(line.as_bytes());
    event.get(key).map(str::to_string)
}

/// Counts lines by their `n` field; panics on a line without one.
pub fn count_by_n(lines: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for l in lines {
        let (event, _) = spoor_sdk::Event::from_line(l.as_bytes());
        let n = event
            .get("n")
            .map(str::to_string)
            .unwrap_or_else(|| format!("<no n: {l}>"));
        *counts.entry(n).or_insert(0) += 1;
    }
    counts
}
