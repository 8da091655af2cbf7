//! [`capture`]: runs a closure with the SDK layer as the thread's subscriber, sending to a
//! Unix socket that stands in for the agent, and returns the lines it received as events.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spoor_sdk::config::AgentAddr;
use spoor_sdk::{Config, Event};
use tracing_subscriber::layer::SubscriberExt as _;

const END: &str = "capture finished";

/// Runs `f` with the SDK layer (level `debug`) installed for this thread; returns what `f`
/// returned and every line the stand-in agent got, parsed.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<Event>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).expect("bind the stand-in agent socket");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let received = Arc::clone(&lines);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let received = Arc::clone(&received);
            std::thread::spawn(move || {
                for line in BufReader::new(conn).lines() {
                    let Ok(line) = line else { return };
                    received.lock().expect("lines").push(line);
                }
            });
        }
    });

    let mut config = Config::default();
    config.agent = AgentAddr::Unix(socket);
    config.spill.dir = dir.path().join("spill");
    config.panic_hook = false;
    config.filter = "debug".parse().expect("a valid filter");
    let (layer, guard) = spoor_sdk::spoor_layer(config).expect("start the layer");
    let subscriber = tracing_subscriber::registry().with(layer);
    let value = tracing::subscriber::with_default(subscriber, || {
        let value = f();
        tracing::info!("{END}");
        value
    });
    guard.flush();

    // The flush has written everything; the reader thread may still be catching up.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = lines.lock().expect("lines").clone();
        if got.iter().any(|l| l.contains(END)) {
            let events = got
                .iter()
                .filter(|l| !l.contains(END))
                .map(|l| {
                    let (event, flags) = Event::from_line(l.as_bytes());
                    assert!(flags.logfmt, "not logfmt: {l}");
                    event
                })
                .collect();
            return (value, events);
        }
        assert!(
            Instant::now() < deadline,
            "the end marker never arrived; got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The events whose `kind` is `deadletter`.
pub fn dead_letters(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| e.get("kind") == Some("deadletter"))
        .collect()
}
