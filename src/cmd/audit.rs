//! `spoor audit verify`: check an audit log offline, like CloudTrail's `validate-logs`.
//! In cluster mode it also checks every shard copy under each data directory given, and
//! the epoch links between copies of the same shard from different collectors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use spoor_collector::cluster::verify as cluster_verify;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain and signed checkpoints; exits 1 if anything is wrong.
    Verify {
        /// The collector's data directory. Repeat it to check several cluster members'
        /// shard copies together (their epoch links are then checked too).
        #[arg(long, env = "SPOOR_DATA_DIR", required = true, num_args = 1)]
        data_dir: Vec<PathBuf>,
        /// The Ed25519 public key (raw 32 bytes or hex); default: the one in each data dir.
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
    let mut ok = true;
    let mut copies = Vec::new();
    for dir in &data_dir {
        let shards = cluster_verify::shard_dirs(dir);
        if data_dir.len() > 1 || !shards.is_empty() {
            println!("== {}", dir.display());
        }
        if dir.join("audit").exists() || shards.is_empty() {
            ok &= verify_chain(dir, key.as_deref())?;
        }
        for (shard, shard_dir) in shards {
            println!("-- shard {shard} ({})", shard_dir.display());
            ok &= verify_chain(&shard_dir, key.as_deref())?;
            let copy = cluster_verify::check_copy(shard, &shard_dir)
                .with_context(|| format!("reading the shard copy in {}", shard_dir.display()))?;
            copies.push(copy);
        }
    }
    if !copies.is_empty() {
        cluster_verify::check_links(&mut copies);
        let links = cluster_verify::checked_links(&copies);
        for c in &copies {
            let seqs = c
                .stream_seqs
                .map_or("none".to_string(), |(a, b)| format!("{a}..{b}"));
            let epochs: Vec<String> = c
                .epochs
                .iter()
                .map(|e| format!("r{} by {}", e.revision, e.owner))
                .collect();
            println!(
                "shard {} copy of {}: {} stream messages (seqs {seqs}, each once), epochs: {}",
                c.shard,
                c.node().unwrap_or("?"),
                c.messages,
                epochs.join(", ")
            );
            for p in &c.problems {
                ok = false;
                println!("  PROBLEM: {p}");
            }
        }
        println!("{links} epoch link(s) checked against the previous owner's copy.");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_PROBLEM)
    })
}

/// Verifies one audit log (a collector's own, or a shard copy); prints its report.
fn verify_chain(data_dir: &Path, key: Option<&[u8]>) -> anyhow::Result<bool> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} segments, {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = spoor_collector::audit::verify(data_dir, key, &mut |p| {
        bar.set_length(p.segments_total as u64);
        bar.set_position(p.segments_done as u64);
        bar.set_message(format!("{} records checked", p.records_checked));
    })
    .with_context(|| format!("verifying the audit log in {}", data_dir.display()))?;
    bar.finish_and_clear();
    println!("{}", report.to_string().trim_end());
    Ok(report.is_ok())
}
