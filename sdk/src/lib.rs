//! spoor-sdk: the event model and logfmt codec that every spoor component shares, and the
//! pieces task code links to send its logs to the spoor agent.
//!
//! This crate owns the wire format: [`event`] (the reserved keys and their order, typed
//! accessors), [`logfmt`] (the one encoder and decoder), and [`timestamp`] (the one way
//! times are written and the ways they are read). The agent, collector and query crates
//! depend on it and never define the format themselves.
//!
//! ```
//! use spoor_sdk::event::{Event, Level};
//!
//! let (event, flags) = Event::from_line(b"level=error msg=\"charge failed\" amount=12");
//! assert!(flags.logfmt);
//! assert_eq!(event.level(), Some(Level::Error));
//! assert_eq!(event.get("amount"), Some("12"));
//!
//! // Plain text is kept whole as the message.
//! let (event, flags) = Event::from_line(b"Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user");
//! assert!(!flags.logfmt);
//! assert_eq!(event.to_line(), r#"msg="Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user""#);
//! ```
#![deny(missing_docs)]

pub mod event;
pub mod logfmt;
pub mod timestamp;

// The tracing layer, the transport to the agent and `spoor run` (issue 6).
pub mod config;
mod guard;
pub mod layer;
mod panic;
pub mod run;
pub mod spill;
pub mod task;
pub mod transport;

pub use config::Config;
pub use guard::{Guard, InitError, flush, init, spoor_layer};
pub use layer::SpoorLayer;
pub use task::{TaskGuard, task};
pub use transport::FlushReport;

// Helpers that make task code safe to retry (issue 7).
pub mod batch;
pub mod clock;
pub mod deadletter;
pub mod depth;
#[cfg(feature = "idempotency")]
pub mod idempotency;
pub mod retry;
pub mod task_run;

pub use event::{Event, Level};
