//! One suite of idempotency tests, run against every store: memory, redb (feature `redb`)
//! and Redis (feature `redis`, against a real `redis-server` that each test starts).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::*;
use crate::clock::ManualClock;

/// Stores of each kind, fresh for each test. The second value keeps the store's
/// resources (temp dir, server process) alive.
mod make {
    use super::*;

    pub fn memory() -> (MemoryStore, ()) {
        (MemoryStore::new(), ())
    }

    #[cfg(feature = "redb")]
    pub fn redb() -> (RedbStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RedbStore::open(dir.path().join("idempotency.redb")).expect("open redb");
        (store, dir)
    }

    #[cfg(feature = "redis")]
    pub fn redis() -> (RedisStore, redis_server::RedisServer) {
        let server = redis_server::RedisServer::start();
        let store = RedisStore::connect(&server.url()).expect("connect to redis-server");
        (store, server)
    }
}

/// A `redis-server` child process on a free port with a temp dir, killed on drop.
#[cfg(feature = "redis")]
mod redis_server {
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub struct RedisServer {
        child: Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl RedisServer {
        pub fn start() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start `redis-server` ({e}): the Redis idempotency tests need it \
                         on PATH (apt-get install redis-server); they do not skip"
                    )
                });
            let mut server = RedisServer {
                child,
                port,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = server.child.try_wait() {
                    panic!("redis-server exited at start-up with {status}");
                }
                assert!(
                    Instant::now() < deadline,
                    "redis-server did not listen on port {port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            server.port = port;
            server
        }

        pub fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ))
}

fn guard<S: Store>(
    store: S,
    config: IdempotencyConfig,
    clock: &Arc<ManualClock>,
) -> Idempotency<S> {
    Idempotency::new(store, config).with_clock(clock.clone())
}

/// The tests, generic over the store.
mod suite {
    use super::*;

    pub fn sixteen_concurrent_calls_run_the_work_once<S: Store + 'static>(store: S) {
        let guard = Arc::new(Idempotency::new(store, IdempotencyConfig::default()));
        let payload = json!({"message_id": "m-1"});
        let ran = Arc::new(AtomicUsize::new(0));
        let rejected = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (guard, payload, ran, rejected, start) = (
                    guard.clone(),
                    payload.clone(),
                    ran.clone(),
                    rejected.clone(),
                    start.clone(),
                );
                std::thread::spawn(move || {
                    start.wait();
                    let outcome = guard.run("parse_email", &payload, || {
                        ran.fetch_add(1, Ordering::SeqCst);
                        // Hold the key until every other call has been turned away, so all
                        // sixteen really overlap. The bound only keeps a bug from hanging.
                        let until = Instant::now() + Duration::from_secs(60);
                        while rejected.load(Ordering::SeqCst) < 15 && Instant::now() < until {
                            std::thread::yield_now();
                        }
                        Ok::<_, String>("parsed".to_string())
                    });
                    if let Err(IdempotencyError::AlreadyInProgress { .. }) = &outcome {
                        rejected.fetch_add(1, Ordering::SeqCst);
                    }
                    outcome
                })
            })
            .collect();
        let outcomes: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().expect("thread finished"))
            .collect();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!(rejected.load(Ordering::SeqCst), 15);
        let ok: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        assert_eq!(ok, ["parsed"]);

        // Later calls get the stored result without running the work.
        let again: String = guard
            .run("parse_email", &payload, || Err::<String, _>("must not run"))
            .expect("stored result");
        assert_eq!(again, "parsed");
    }

    pub fn completed_results_are_returned_until_they_expire<S: Store>(store: S) {
        let clock = clock();
        let config = IdempotencyConfig::default().with_expires_after(Duration::from_secs(3600));
        let guard = guard(store, config, &clock);
        let runs = &std::cell::Cell::new(0);
        let work = |n: u32| {
            move || {
                runs.set(runs.get() + 1);
                Ok::<_, String>(json!({"links": n}))
            }
        };
        let first = guard
            .run("t", &json!({"a": 1, "b": [1, 2]}), work(3))
            .expect("runs");
        assert_eq!(first, json!({"links": 3}));
        // Same payload, other key order: the stored result, work not run.
        let second = guard
            .run("t", &json!({"b": [1, 2], "a": 1}), work(4))
            .expect("stored");
        assert_eq!(second, json!({"links": 3}));
        // Another task or another payload is another key.
        assert_eq!(
            guard.run("u", &json!({"a": 1, "b": [1, 2]}), work(5)).ok(),
            Some(json!({"links": 5}))
        );
        assert_eq!(
            guard.run("t", &json!({"a": 2}), work(6)).ok(),
            Some(json!({"links": 6}))
        );
        assert_eq!(runs.get(), 3);

        clock.advance(Duration::from_secs(3599));
        let still = guard
            .run("t", &json!({"a": 1, "b": [1, 2]}), work(7))
            .expect("stored");
        assert_eq!(still, json!({"links": 3}));
        clock.advance(Duration::from_secs(1));
        let expired = guard
            .run("t", &json!({"a": 1, "b": [1, 2]}), work(8))
            .expect("runs again");
        assert_eq!(expired, json!({"links": 8}));
        assert_eq!(runs.get(), 4);
    }

    pub fn an_expired_lease_is_taken_over_without_clobbering<S: Store>(store: S) {
        let clock = clock();
        let config = IdempotencyConfig::default().with_lease(Duration::from_secs(60));
        let guard = guard(store, config, &clock);
        let payload = json!({"id": 9});

        let slow = guard.run("t", &payload, || {
            // While the first run holds the lease, others are turned away.
            let busy = guard.run("t", &payload, || Ok::<_, String>(0));
            assert!(
                matches!(busy, Err(IdempotencyError::AlreadyInProgress { .. })),
                "{busy:?}"
            );
            // The first run stalls past its lease; a second run takes over and completes.
            clock.advance(Duration::from_secs(60));
            let taken = guard
                .run("t", &payload, || Ok::<_, String>(2))
                .expect("takes over");
            assert_eq!(taken, 2);
            Ok::<_, String>(1)
        });
        // The stalled run still returns its own value, but does not overwrite the record.
        assert_eq!(slow.ok(), Some(1));
        let stored: i32 = guard
            .run("t", &payload, || Ok::<_, String>(3))
            .expect("stored");
        assert_eq!(stored, 2);
    }

    pub fn a_crashed_run_blocks_only_until_its_lease_ends<S: Store>(store: S) {
        let clock = clock();
        let config = IdempotencyConfig::default().with_lease(Duration::from_secs(30));
        let guard = guard(store, config, &clock);
        let payload = json!({"id": "crash"});
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: Result<i32, IdempotencyError<String>> =
                guard.run("t", &payload, || panic!("the task crashed"));
        }));
        assert!(crashed.is_err());
        let blocked = guard.run("t", &payload, || Ok::<_, String>(1));
        assert!(
            matches!(blocked, Err(IdempotencyError::AlreadyInProgress { .. })),
            "{blocked:?}"
        );
        clock.advance(Duration::from_secs(30));
        assert_eq!(
            guard.run("t", &payload, || Ok::<_, String>(2)).ok(),
            Some(2)
        );
    }

    pub fn payload_mismatch_is_detected<S: Store>(store: S) {
        let clock = clock();
        let config = IdempotencyConfig::default()
            .with_key_parts(["/order_id"])
            .with_validation_parts(["/amount", "/currency"]);
        let guard = guard(store, config, &clock);
        let charge = |amount: u32| json!({"order_id": "o-1", "amount": amount, "currency": "EUR", "note": amount});
        assert_eq!(
            guard
                .run("charge", &charge(10), || Ok::<_, String>("r1".to_string()))
                .ok(),
            Some("r1".into())
        );
        let differs = guard.run("charge", &charge(20), || Ok::<_, String>("r2".to_string()));
        assert!(
            matches!(differs, Err(IdempotencyError::PayloadMismatch { .. })),
            "{differs:?}"
        );
        // Fields outside the validated parts may differ.
        let mut same = charge(10);
        same["note"] = json!("other");
        let again = guard.run("charge", &same, || Ok::<_, String>("r3".to_string()));
        assert_eq!(again.ok(), Some("r1".to_string()));
    }

    pub fn a_failure_releases_the_key<S: Store>(store: S) {
        let clock = clock();
        let guard = guard(store, IdempotencyConfig::default(), &clock);
        let payload = json!({"id": 1});
        let failed = guard.run("t", &payload, || Err::<i32, _>("smtp timeout"));
        assert!(
            matches!(failed, Err(IdempotencyError::Work("smtp timeout"))),
            "{failed:?}"
        );
        assert_eq!(guard.run("t", &payload, || Ok::<_, &str>(5)).ok(), Some(5));
        assert_eq!(guard.run("t", &payload, || Ok::<_, &str>(6)).ok(), Some(5));
    }

    pub fn missing_key_parts_fail_or_warn_by_option<S: Store>(store: S) {
        let clock = clock();
        let strict = IdempotencyConfig::default().with_key_parts(["/message_id"]);
        let guard = guard(store, strict.clone(), &clock);
        let missing = guard.run("t", &json!({"other": 1}), || Ok::<_, String>(1));
        assert!(
            matches!(&missing, Err(IdempotencyError::MissingKeyPart { pointer }) if pointer == "/message_id"),
            "{missing:?}"
        );
        let null = guard.run("t", &json!({"message_id": null}), || Ok::<_, String>(1));
        assert!(matches!(null, Err(IdempotencyError::MissingKeyPart { .. })));

        let lenient = Idempotency::new(guard.store, strict.with_missing_key(MissingKey::Warn))
            .with_clock(clock.clone());
        let mut runs = 0;
        for _ in 0..2 {
            lenient
                .run("t", &json!({"other": 1}), || {
                    runs += 1;
                    Ok::<_, String>(1)
                })
                .expect("runs unprotected");
        }
        assert_eq!(runs, 2);
    }
}

macro_rules! store_suite {
    ($store:ident) => {
        mod $store {
            use super::*;

            #[test]
            fn sixteen_concurrent_calls_run_the_work_once() {
                let (store, _keep) = make::$store();
                suite::sixteen_concurrent_calls_run_the_work_once(store);
            }

            #[test]
            fn completed_results_are_returned_until_they_expire() {
                let (store, _keep) = make::$store();
                suite::completed_results_are_returned_until_they_expire(store);
            }

            #[test]
            fn an_expired_lease_is_taken_over_without_clobbering() {
                let (store, _keep) = make::$store();
                suite::an_expired_lease_is_taken_over_without_clobbering(store);
            }

            #[test]
            fn a_crashed_run_blocks_only_until_its_lease_ends() {
                let (store, _keep) = make::$store();
                suite::a_crashed_run_blocks_only_until_its_lease_ends(store);
            }

            #[test]
            fn payload_mismatch_is_detected() {
                let (store, _keep) = make::$store();
                suite::payload_mismatch_is_detected(store);
            }

            #[test]
            fn a_failure_releases_the_key() {
                let (store, _keep) = make::$store();
                suite::a_failure_releases_the_key(store);
            }

            #[test]
            fn missing_key_parts_fail_or_warn_by_option() {
                let (store, _keep) = make::$store();
                suite::missing_key_parts_fail_or_warn_by_option(store);
            }
        }
    };
}

store_suite!(memory);
#[cfg(feature = "redb")]
store_suite!(redb);
#[cfg(feature = "redis")]
store_suite!(redis);

#[test]
fn keys_are_task_hash_of_canonical_json() {
    let guard = Idempotency::new(MemoryStore::new(), IdempotencyConfig::default());
    let key = guard
        .key::<()>("parse_email", &json!({"b": 2, "a": 1}))
        .expect("key");
    assert_eq!(
        key,
        Some(format!("parse_email#{}", hash_hex(r#"{"a":1,"b":2}"#)))
    );

    let by_part = Idempotency::new(
        MemoryStore::new(),
        IdempotencyConfig::default().with_key_parts(["/msg/id"]),
    );
    let key = by_part
        .key::<()>("t", &json!({"msg": {"id": "m7", "x": 1}}))
        .expect("key");
    assert_eq!(key, Some(format!("t#{}", hash_hex(r#""m7""#))));
}

#[test]
fn the_cache_serves_completed_results_and_never_in_progress_ones() {
    let clock = clock();
    let store = Arc::new(MemoryStore::new());
    let config = IdempotencyConfig::default().with_expires_after(Duration::from_secs(60));
    let guard = Idempotency::new(store.clone(), config)
        .with_clock(clock.clone())
        .with_cache(2);
    let payload = json!({"id": 1});
    assert_eq!(
        guard.run("t", &payload, || Ok::<_, String>(1)).ok(),
        Some(1)
    );
    let key = guard
        .key::<()>("t", &payload)
        .expect("key")
        .expect("protected");
    // Remove the record behind the cache's back: the cache still answers.
    let record = store.get(&key).expect("read").expect("stored");
    assert!(store.compare_and_swap(&key, &record, None).expect("remove"));
    assert_eq!(
        guard.run("t", &payload, || Ok::<_, String>(2)).ok(),
        Some(1)
    );
    // Cached results expire with their record.
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        guard.run("t", &payload, || Ok::<_, String>(3)).ok(),
        Some(3)
    );

    // Capacity is bounded: the record that expires first is evicted.
    for id in 3..10 {
        guard
            .run("t", &json!({"id": id}), || Ok::<_, String>(id))
            .expect("runs");
    }
    let cache = guard.cache.as_ref().expect("cache on");
    let entries = cache.entries.lock().expect("not poisoned");
    assert!(entries.len() <= 2);
    assert!(entries.values().all(|r| r.status == Status::Completed));
}
