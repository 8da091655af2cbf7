//! spoor-collector: the collector as a library.
//!
//! It owns, in the order data flows:
//! - [`http`]: the API (`POST /api/v1/ingest`, search, tail, checkpoints, metrics);
//! - [`ingest`]: turning a request body into lines (decompression, normalisation);
//! - [`audit`]: the hash-chained, signed audit log, the source of truth, with group commit
//!   and offline verification;
//! - [`index`]: the tantivy index derived from the audit log;
//! - [`search`]: running queries, pipeline stages, histogram and facets.
//! - [`alerts`]: rules on the index's counts, evaluated on an interval, with persisted
//!   state, silences, and notifications to chat rooms and webhooks.
//! - [`dlq`]: the dead-letter store built from `kind=deadletter` events, and replays to
//!   configured targets (rate-limited, resumable, idempotent, loop-guarded).
//! - [`cluster`]: optional cluster mode (`[cluster]`): ingest through NATS JetStream, shard
//!   ownership by leases, per-shard audit chains with epochs, reads fanned out to owners.
//!
//! It leaves the query language and index schema to `spoor-query`, and the event format to
//! `spoor-sdk`. [`server::run`] wires everything together for the `spoor collector` command.

pub mod alerts;
pub mod audit;
pub mod cluster;
pub mod config;
pub mod dlq;
pub mod error;
pub mod http;
pub mod index;
pub mod ingest;
pub mod retention;
pub mod search;
pub mod secret;
pub mod server;
pub mod ui;

pub use config::CollectorConfig;
pub use error::Error;
