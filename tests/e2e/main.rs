//! End-to-end tests: each starts the real `spoor` binary and talks to it over sockets.
//!
//! - `cli`: the front door (`--help`, `--version`, errors).
//! - `collector`: durable ingest, idempotency, crash safety and audit verification.
//! - `search`: the query language against an independent count over the corpus.

mod harness;

mod agent_exactly_once;

mod cli;
mod collector;
mod pipeline;
mod search;
