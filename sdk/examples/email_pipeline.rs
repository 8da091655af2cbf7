//! The email pipeline example (being written).
fn main() {}
