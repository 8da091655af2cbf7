//! spoor-agent (being built).
pub mod buffer;
