//! `spoor audit verify`: check an audit log offline, like CloudTrail's `validate-logs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain and signed checkpoints; exits 1 if anything is wrong.
    Verify {
        /// The collector's data directory.
        #[arg(long, env = "SPOOR_DATA_DIR")]
        data_dir: PathBuf,
        /// The Ed25519 public key (raw 32 bytes or hex); default: the one in the data dir.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify {
        data_dir,
        public_key,
    } = cmd;
    let key = match &public_key {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            Some(
                spoor_collector::audit::parse_public_key(&bytes)
                    .with_context(|| format!("{} holds no Ed25519 public key", p.display()))?
                    .to_vec(),
            )
        }
        None => None,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} segments, {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = spoor_collector::audit::verify(&data_dir, key.as_deref(), &mut |p| {
        bar.set_length(p.segments_total as u64);
        bar.set_position(p.segments_done as u64);
        bar.set_message(format!("{} records checked", p.records_checked));
    })
    .with_context(|| format!("verifying the audit log in {}", data_dir.display()))?;
    bar.finish_and_clear();
    println!("{}", report.to_string().trim_end());
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_PROBLEM)
    })
}
