//! The retry, dead-letter, recursion-guard and batch helpers (issue 7), checked by parsing
//! the lines they emit through the real SDK layer to a socket standing in for the agent,
//! and the email pipeline example run end to end.

mod support;

mod batch;
mod deadletter;
mod depth;
#[cfg(feature = "idempotency")]
mod example;
mod retry;
