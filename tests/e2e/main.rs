//! End-to-end tests: each starts the real `spoor` binary and talks to it over sockets.
//!
//! - `cli`: the front door (`--help`, `--version`, errors).
//! - `cluster`: NATS JetStream between collectors: 100,000 events, a collector and a stream
//!   leader killed, audit chains verified per shard across epochs.
//! - `collector`: durable ingest, idempotency, crash safety and audit verification.
//! - `dlq`: dead letters: listing, replay exactly once, loop guard, dry run, rate limit,
//!   resume after a kill, targets only from config.
//! - `search`: the query language against an independent count over the corpus.
//! - `run`: `spoor run` turns a program's output and exit status into events.
//! - `agent_reload`: SIGHUP reloads redaction; flags and `SPOOR_*` variables override the
//!   agent's file.
//! - `agent_keys`: a buffer segment under an unknown key is quarantined, then delivered
//!   once its key is listed.

mod harness;

mod agent_buffer_full;
mod agent_enospc;
mod agent_exactly_once;
mod agent_keys;
mod agent_redact;
mod agent_reload;
mod agent_spill;
mod agent_syslog;
mod agent_tls;

mod alerts;
mod cli;
mod cluster;
mod collector;
mod deploy;
mod dlq;
mod pipeline;
mod retention;
mod run;
mod search;
mod tls;
mod ui;
mod up;
