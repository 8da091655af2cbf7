//! The lease loop of one collector: every third of `lease_ttl` it rewrites its presence
//! key, reads every shard's lease, renews the ones it holds, takes the free, released or
//! lapsed ones that rendezvous hashing gives it, hands over the ones a newly arrived node
//! should own, and starts or stops the matching ownership epochs ([`super::shard::own`]).
//!
//! Timing rules (all on this collector's own monotonic clock):
//! - a lease or presence key whose revision has not changed for `lease_ttl` has lapsed;
//! - an epoch's fence is `sent + 3/4 lease_ttl`, where `sent` is when the last successful
//!   renewal was sent: the owner stops appending before any observer can see the lease
//!   lapse (which takes a full `lease_ttl` after the renewal was stored);
//! - a collector takes no shard during its first `lease_ttl`, so that it has seen the
//!   others' presence first; a shard nobody preferred is taken by anyone after
//!   `2 × lease_ttl`.
//!
//! Shutdown: stop every epoch (its last fetch is appended and acknowledged), then write
//! each lease as released, so the next owner need not wait for it to lapse.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Cluster;
use super::error::ClusterError;
use super::lease::{Entry, LeaseValue, Written, node_key, preferred_owner, shard_key};
use super::shard::{Ownership, ShardReplica, own};

/// One epoch this collector runs.
struct Held {
    /// The lease's current revision (renewals move it).
    revision: u64,
    replica: Arc<ShardReplica>,
    fence: watch::Sender<Instant>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ClusterError>>,
}

/// A key as observed: its revision and since when it has had it.
#[derive(Clone, Copy)]
struct Seen {
    revision: u64,
    since: Instant,
}

fn observe(seen: &mut HashMap<String, Seen>, key: &str, revision: u64, now: Instant) -> Seen {
    let s = seen.entry(key.to_string()).or_insert(Seen {
        revision,
        since: now,
    });
    if s.revision != revision {
        *s = Seen {
            revision,
            since: now,
        };
    }
    *s
}

fn lease_value(config: &super::ClusterConfig, head: Option<super::lease::ShardHead>) -> LeaseValue {
    LeaseValue {
        owner: config.node_id.clone(),
        url: config.advertise_url.clone(),
        released: false,
        head,
    }
}

/// The lease loop's state.
struct Manager {
    cluster: Arc<Cluster>,
    held: HashMap<u32, Held>,
    seen: HashMap<String, Seen>,
    /// When each other node was first seen live.
    known: HashMap<String, Instant>,
    started: Instant,
}

impl Cluster {
    /// Starts the lease loop; it runs until `shutdown` turns true, then hands every shard
    /// over and closes the shard copies.
    pub fn spawn_manager(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let mut m = Manager {
            cluster: self.clone(),
            held: HashMap::new(),
            seen: HashMap::new(),
            known: HashMap::new(),
            started: Instant::now(),
        };
        tokio::spawn(async move {
            let tick = (m.cluster.config.lease_ttl / 3).max(Duration::from_millis(100));
            loop {
                if let Err(e) = m.round().await {
                    tracing::warn!(error = %e, "Lease round failed; retrying next tick.");
                }
                tokio::select! {
                    _ = tokio::time::sleep(tick) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    break;
                }
            }
            m.release_all().await;
            m.cluster.close_replicas().await;
        })
    }
}

impl Manager {
    fn ttl(&self) -> Duration {
        self.cluster.config.lease_ttl
    }

    fn me(&self) -> &str {
        &self.cluster.config.node_id
    }

    fn my_value(&self, head: Option<super::lease::ShardHead>) -> LeaseValue {
        lease_value(&self.cluster.config, head)
    }

    /// Live nodes: those whose presence key changed within `lease_ttl`, and this one.
    async fn live_nodes(&mut self, now: Instant) -> Result<Vec<String>, ClusterError> {
        let store = &self.cluster.leases;
        let mut live = vec![self.me().to_string()];
        for id in store.node_ids().await? {
            if id == self.me() {
                continue;
            }
            if let Some(e) = store.get(&node_key(&id)).await? {
                let s = observe(&mut self.seen, &node_key(&id), e.revision, now);
                if now.duration_since(s.since) < self.ttl() {
                    self.known.entry(id.clone()).or_insert(now);
                    live.push(id);
                } else {
                    self.known.remove(&id);
                }
            }
        }
        live.sort();
        Ok(live)
    }

    async fn round(&mut self) -> Result<(), ClusterError> {
        let ttl = self.ttl();
        let timeout = ttl;
        let store = self.cluster.leases.clone();
        store
            .put(&node_key(self.me()), &self.my_value(None), timeout)
            .await?;
        let now = Instant::now();
        let live = self.live_nodes(now).await?;
        let warm = now.duration_since(self.started) >= ttl;
        for shard in 0..self.cluster.config.shards {
            let key = shard_key(shard);
            let entry = store.get(&key).await?;
            let since = entry
                .as_ref()
                .map(|e| observe(&mut self.seen, &key, e.revision, now).since);
            let preferred = preferred_owner(&live, shard)
                .unwrap_or_default()
                .to_string();
            let mine = preferred == self.me();
            if let Some(h) = self.held.get_mut(&shard) {
                let lost = entry.as_ref().is_none_or(|e| e.revision != h.revision);
                if lost || h.task.is_finished() {
                    if lost {
                        tracing::warn!(shard, "Shard lease lost to another collector.");
                    }
                    self.end_epoch(shard, !lost).await;
                    continue;
                }
                // Hand over only to a node that has been live for a while (it waits
                // one lease_ttl after starting before it takes shards).
                let newcomer_ready = self
                    .known
                    .get(&preferred)
                    .is_some_and(|&t| now.duration_since(t) >= ttl);
                if !mine && warm && newcomer_ready {
                    tracing::info!(shard, to = %preferred, "Handing the shard over.");
                    self.end_epoch(shard, true).await;
                    continue;
                }
                let value = lease_value(&self.cluster.config, Some(h.replica.head()));
                let sent = Instant::now();
                match store.put_if(&key, &value, h.revision, timeout).await {
                    Ok(Written::Ok(rev)) => {
                        h.revision = rev;
                        h.fence.send_replace(sent + ttl * 3 / 4);
                    }
                    Ok(Written::Conflict) => {
                        tracing::warn!(shard, "Shard lease taken by another collector.");
                        self.end_epoch(shard, false).await;
                    }
                    Err(e) => tracing::warn!(shard, error = %e, "Renewing a shard lease failed."),
                }
                self.set_view(
                    shard,
                    Some(Entry {
                        revision: self.held.get(&shard).map_or(0, |h| h.revision),
                        value,
                    }),
                );
                continue;
            }
            self.set_view(shard, entry.clone());
            if !warm {
                continue;
            }
            let idle = since.map_or(Duration::MAX, |s| now.duration_since(s));
            let take = match &entry {
                None => mine || now.duration_since(self.started) >= 2 * ttl,
                Some(e) if e.value.released => mine || idle >= 2 * ttl,
                // This node's own lease from before a restart.
                Some(e) if e.value.owner == self.me() => true,
                Some(_) => idle >= ttl && (mine || idle >= 2 * ttl),
            };
            if take {
                self.take(shard, entry).await;
            }
        }
        Ok(())
    }

    fn set_view(&self, shard: u32, entry: Option<Entry>) {
        if let Ok(mut v) = self.cluster.view.write()
            && let Some(slot) = v.get_mut(shard as usize)
        {
            *slot = entry;
        }
    }

    /// Takes the lease (create-if-absent or compare-and-set) and starts an epoch.
    async fn take(&mut self, shard: u32, previous: Option<Entry>) {
        let ttl = self.ttl();
        let key = shard_key(shard);
        let replica = match self.cluster.replica(shard).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(shard, error = %e, "Cannot open the shard's copy; not taking it.");
                return;
            }
        };
        let value = self.my_value(Some(replica.head()));
        let expected = previous.as_ref().map_or(0, |e| e.revision);
        let sent = Instant::now();
        let revision = match self
            .cluster
            .leases
            .put_if(&key, &value, expected, ttl)
            .await
        {
            Ok(Written::Ok(rev)) => rev,
            Ok(Written::Conflict) => return,
            Err(e) => {
                tracing::warn!(shard, error = %e, "Taking a shard lease failed.");
                return;
            }
        };
        tracing::info!(shard, revision, previous = ?previous.as_ref().map(|p| &p.value.owner), "Shard lease taken.");
        let (fence, fence_rx) = watch::channel(sent + ttl * 3 / 4);
        let (stop, stop_rx) = watch::channel(false);
        let ownership = Ownership {
            node: self.me().to_string(),
            revision,
            previous,
            fence: fence_rx,
            stop: stop_rx,
        };
        let task = tokio::spawn(own(replica.clone(), self.cluster.js.clone(), ownership));
        if let Ok(mut owned) = self.cluster.owned.write() {
            owned.insert(shard, replica.clone());
        }
        self.set_view(shard, Some(Entry { revision, value }));
        self.held.insert(
            shard,
            Held {
                revision,
                replica,
                fence,
                stop,
                task,
            },
        );
    }

    /// Stops the epoch of `shard`; with `release`, writes the lease as released.
    async fn end_epoch(&mut self, shard: u32, release: bool) {
        let Some(h) = self.held.remove(&shard) else {
            return;
        };
        if let Ok(mut owned) = self.cluster.owned.write() {
            owned.remove(&shard);
        }
        h.stop.send_replace(true);
        match h.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(shard, error = %e, "Shard epoch failed."),
            Err(e) => tracing::error!(shard, error = %e, "Shard epoch panicked."),
        }
        if release {
            let mut value = self.my_value(Some(h.replica.head()));
            value.released = true;
            match self
                .cluster
                .leases
                .put_if(&shard_key(shard), &value, h.revision, self.ttl())
                .await
            {
                Ok(Written::Ok(rev)) => self.set_view(
                    shard,
                    Some(Entry {
                        revision: rev,
                        value,
                    }),
                ),
                Ok(Written::Conflict) => {}
                Err(e) => tracing::warn!(shard, error = %e, "Releasing a shard lease failed."),
            }
        }
    }

    async fn release_all(&mut self) {
        let shards: Vec<u32> = self.held.keys().copied().collect();
        for shard in shards {
            self.end_epoch(shard, true).await;
        }
    }
}
