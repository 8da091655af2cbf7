//! `spoor up`: a collector and an agent in one process with embedded defaults, and with
//! `--demo` the email-processing workload of the SDK example logging through them.
//! Wiring only: each part is the library's own `run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use spoor_agent::{AgentConfig, ListenAddr};
use spoor_collector::CollectorConfig;
use tokio::sync::watch;

#[path = "../../sdk/examples/email_pipeline.rs"]
#[allow(dead_code)]
mod email_pipeline;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the collector's and agent's data live; a second run reuses it.
    #[arg(long, default_value = "spoor-data")]
    data_dir: PathBuf,
    /// The collector's API and UI address.
    #[arg(long, default_value = "127.0.0.1:8740")]
    listen: SocketAddr,
    /// The agent's TCP input.
    #[arg(long, default_value = "127.0.0.1:8741")]
    agent_listen: SocketAddr,
    /// The agent's /metrics and /healthz address.
    #[arg(long, default_value = "127.0.0.1:8742")]
    agent_admin: SocketAddr,
    /// Also run a demo workload (the SDK's email pipeline) every few seconds.
    #[arg(long)]
    demo: bool,
    /// Stop by itself after this many seconds (for scripted runs).
    #[arg(long)]
    stop_after: Option<u64>,
}

/// Checks that an address is free, with an error naming the flag that changes it.
fn check_free(addr: SocketAddr, flag: &str) -> anyhow::Result<()> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .with_context(|| {
            format!("{addr} is in use (another spoor running?); choose another address with {flag}")
        })
}

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    check_free(args.agent_listen, "--agent-listen")?;
    check_free(args.agent_admin, "--agent-admin")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir).context("resolving --data-dir")?;
    let receiver = args
        .demo
        .then(|| std::net::TcpListener::bind("127.0.0.1:0"))
        .transpose()
        .context("starting the demo chat receiver")?;
    let receiver_addr = receiver
        .as_ref()
        .map(|r| r.local_addr())
        .transpose()
        .context("demo chat receiver address")?;
    let mut collector = match receiver_addr {
        // The demo wires an alert rule and a dead-letter replay target to the built-in
        // receiver, so both can be seen working without a chat account.
        Some(addr) => CollectorConfig::from_toml(&demo_collector_toml(addr, args.listen))?,
        None => CollectorConfig::default(),
    };
    collector.data_dir = data_dir.join("collector");
    collector.listen = args.listen;
    let socket = data_dir.join("agent").join("agent.sock");
    let mut agent = AgentConfig {
        data_dir: data_dir.join("agent"),
        ..AgentConfig::default()
    };
    agent.collector = format!("http://{}", args.listen);
    agent.listen = Some(vec![
        ListenAddr::Tcp(args.agent_listen),
        ListenAddr::Unix(socket.clone()),
    ]);
    agent.admin = args.agent_admin;
    agent.validate()?;

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        eprintln!("spoor up: starting the collector (data in {})", data_dir.display());
        let listener = spoor_collector::server::bind(args.listen)
            .await
            .with_context(|| format!("choose another address with --listen (now {})", args.listen))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let collector_task = tokio::spawn(spoor_collector::server::run(collector, listener, stopped(stop_rx.clone())));
        eprintln!("spoor up: starting the agent");
        let agent_task = tokio::spawn(spoor_agent::run(agent, stopped(stop_rx.clone())));
        wait_healthy(&format!("http://{}/healthz", args.agent_admin)).await?;
        println!("spoor is running.");
        println!("  UI and API:   http://{}/", args.listen);
        println!("  agent:        tcp:{}  unix:{}", args.agent_listen, socket.display());
        println!("  send a line:  echo 'level=info msg=\"hello from the shell\"' | nc -q0 {} {}", args.agent_listen.ip(), args.agent_listen.port());
        println!("  search it:    spoor search hello --collector http://{}", args.listen);
        println!("  stop:         Ctrl-C");
        if let (Some(listener), Some(addr)) = (receiver, receiver_addr) {
            println!("  demo chat:    alerts and replays go to a built-in receiver at http://{addr}/ ;");
            println!("                what it receives is logged as task=demo-chat (search `task:demo-chat`)");
            spawn_demo_receiver(listener, args.agent_listen, stop_rx.clone())?;
        }
        let demo = args.demo.then(|| spawn_demo(args.agent_listen, stop_rx.clone()));
        match args.stop_after {
            Some(secs) => {
                tokio::select! {
                    () = super::shutdown_signal() => {},
                    () = tokio::time::sleep(Duration::from_secs(secs)) => {},
                }
            }
            None => super::shutdown_signal().await,
        }
        eprintln!("spoor up: stopping");
        let _ = stop_tx.send(true);
        if let Some(d) = demo {
            let _ = tokio::task::spawn_blocking(move || d.join()).await;
        }
        agent_task.await.context("agent task")??;
        collector_task.await.context("collector task")??;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_healthy(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for attempt in 0..300 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if attempt % 50 == 49 {
            eprintln!("spoor up: still waiting for the agent at {url}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the agent did not become healthy at {url} within 30 s")
}

/// Runs the email pipeline through the SDK, logging to the agent, every few seconds.
fn spawn_demo(agent: SocketAddr, stop: watch::Receiver<bool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut config = match spoor_sdk::Config::from_lookup(|_| None) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("spoor up: demo disabled: {e}");
                return;
            }
        };
        config.agent = spoor_sdk::config::AgentAddr::Tcp(agent.to_string());
        config.version = Some(format!("{}-demo", env!("CARGO_PKG_VERSION")));
        config.panic_hook = false;
        let (layer, guard) = match spoor_sdk::spoor_layer(config) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("spoor up: demo disabled: {e}");
                return;
            }
        };
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber = tracing_subscriber::registry().with(layer);
        let mut runs = 0u64;
        tracing::subscriber::with_default(subscriber, || {
            while !*stop.borrow() {
                let summary =
                    email_pipeline::pipeline::run(&email_pipeline::pipeline::Options::default());
                runs += 1;
                if runs % 4 == 1 {
                    // An error burst, so the demo alert fires (and later resolves).
                    for n in 0..8 {
                        let id = spoor_sdk::task::new_task_id();
                        let _run = spoor_sdk::task("charge", &id, 1, 0);
                        tracing::error!(
                            card = "declined",
                            amount_cents = 1200 + n,
                            "Charge failed: card declined"
                        );
                    }
                }
                if runs == 1 {
                    eprintln!("spoor up: demo workload running (email pipeline): {summary}");
                }
                for _ in 0..30 {
                    if *stop.borrow() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        drop(guard);
    })
}

/// The collector settings of the demo: one alert rule on the demo's error bursts and a
/// replay target for its dead letters, both pointing at the built-in receiver.
fn demo_collector_toml(receiver: SocketAddr, ui: SocketAddr) -> String {
    format!(
        r#"
[alerts]
interval = "2s"
public_url = "http://{ui}"

[[alerts.notifier]]
name = "demo-chat"
kind = "slack"
url = "http://{receiver}/chat"

[[alerts.rule]]
name = "charge-errors"
kind = "threshold"
query = "level:error task:charge"
window = "30s"
op = ">"
value = 5
for = "0s"
group_by = ["task"]
notify = ["demo-chat"]
repeat_interval = "10m"
send_resolved = true

[[dlq.target]]
task = "*"
url = "http://{receiver}/replay"
"#
    )
}

/// A stand-in chat room and replay target: it answers 200 and logs what it received to
/// the agent as `task=demo-chat` lines, so the UI and `spoor search` show the messages.
fn spawn_demo_receiver(
    listener: std::net::TcpListener,
    agent: SocketAddr,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true).context("demo receiver")?;
    let listener = tokio::net::TcpListener::from_std(listener).context("demo receiver")?;
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: String| async move {
        let text = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["text"].as_str().map(str::to_string))
            .unwrap_or(body);
        let mut event = spoor_sdk::Event::new();
        event.set_timestamp(time::OffsetDateTime::now_utc());
        event.push("level", "info");
        event.push(
            "msg",
            format!("demo chat received on {}: {text}", uri.path()),
        );
        event.push("task", "demo-chat");
        let line = format!("{}\n", event.to_line());
        if let Ok(mut s) = tokio::net::TcpStream::connect(agent).await {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut s, line.as_bytes()).await;
        }
        "ok"
    });
    let mut stop = stop;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok(())
}
