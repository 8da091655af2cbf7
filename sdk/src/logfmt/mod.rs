//! The logfmt codec: the single definition of spoor's wire format.
//!
//! A line is `key=value` pairs separated by spaces or tabs. A key is a run of characters
//! above space other than `=` and `"`. A value is bare (no space, `=`, `"` or control
//! character) or double-quoted with JSON-style escapes (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`,
//! `\f`, `\/`, `\uXXXX`). A bare key means `key=true`; `key=` is an empty string. A trailing
//! `\r` is ignored.
//!
//! - [`encode`] writes pairs so that they parse back to the same pairs, here and in
//!   independent parsers.
//! - [`decode`] has a strict parser ([`parse_strict`]) that borrows from its input and
//!   names the byte position of the first error, and a lenient reader ([`read_line`]) that
//!   never fails and never loses a byte: what is not logfmt becomes `msg`.
//!
//! The scanner is written by hand rather than with `nom`: it is one pass over bytes with a
//! handful of states, and the benchmark in `sdk/benches/logfmt.rs` compares it against the
//! `logfmt` crate (see BENCHMARKS.md).

mod decode;
mod encode;

pub use decode::{
    DecodeError, DecodeErrorKind, LineFlags, Pair, ReadOptions, parse_strict, read_line,
};
pub use encode::{encode_pairs, needs_quoting, write_key, write_pair, write_value};

#[cfg(test)]
mod tests;
