//! spoor-collector (being built).
pub mod audit;
