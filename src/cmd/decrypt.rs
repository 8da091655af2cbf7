//! `spoor decrypt`: turns the `enc:v1:` values that the agent's `encrypt` redaction
//! action wrote back into plain text, for logfmt lines on stdin (for example the output
//! of `spoor search`).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use spoor_agent::crypto::{DataKey, KeyRing, ValueCipher, read_key_file};
use spoor_agent::redact::ENCRYPT_KEY_ENV;

#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Key file of the agent's `encrypt` action (64 hex digits, mode 0600), e.g.
    /// DATA_DIR/keys/redact-encrypt.key; repeat for older keys. Without one, the key is
    /// read from SPOOR_REDACT_ENCRYPT_KEY.
    #[arg(long = "key-file")]
    key_files: Vec<PathBuf>,
}

/// Decrypts stdin to stdout; exits with EXIT_PROBLEM when some token could not be
/// decrypted (it is left as it was).
pub fn run(args: DecryptArgs) -> anyhow::Result<ExitCode> {
    let mut keys = args
        .key_files
        .iter()
        .map(|p| read_key_file(p).with_context(|| format!("loading key {}", p.display())))
        .collect::<anyhow::Result<Vec<DataKey>>>()?;
    if keys.is_empty() {
        let v = std::env::var(ENCRYPT_KEY_ENV)
            .with_context(|| format!("no --key-file given and {ENCRYPT_KEY_ENV} is not set"))?;
        keys.push(DataKey::parse_hex(&v, ENCRYPT_KEY_ENV)?);
    }
    let current = keys.remove(0);
    let cipher = ValueCipher::new(KeyRing::new(current, keys));
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = 0u64;
    for line in stdin.lock().lines() {
        let line = line.context("reading stdin")?;
        let (plain, errors) = cipher.decrypt_line(&line);
        for e in &errors {
            eprintln!("spoor decrypt: {e}");
        }
        failed += errors.len() as u64;
        writeln!(out, "{plain}").context("writing stdout")?;
    }
    out.flush().context("writing stdout")?;
    Ok(if failed > 0 {
        ExitCode::from(super::EXIT_PROBLEM)
    } else {
        ExitCode::SUCCESS
    })
}
