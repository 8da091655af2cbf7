//! `spoor dlq list|show|replay|discard`: the dead-letter store through the collector's
//! API (admin scope). Bulk replays show a progress bar while the collector's job runs.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use spoor_query::client::Client;

use super::EXIT_PROBLEM;

use super::target::Target;

/// Which entries (for `list` and bulk `replay`).
#[derive(Debug, Args)]
pub struct Selection {
    /// Only this task.
    #[arg(long)]
    task: Option<String>,
    /// Only entries whose error contains this text (case-insensitive).
    #[arg(long)]
    error: Option<String>,
    /// Only entries in this state: pending, replaying, replayed, failed, discarded.
    #[arg(long)]
    state: Option<String>,
    /// Last failure at or after: RFC 3339 or a duration back from now (15m, 1h, 7d).
    #[arg(long)]
    from: Option<String>,
    /// Last failure before.
    #[arg(long)]
    to: Option<String>,
}

impl Selection {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("task", &self.task),
            ("error", &self.error),
            ("state", &self.state),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-letter entries.
    List {
        #[command(flatten)]
        selection: Selection,
        /// Most entries to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Output format (json: one entry per line).
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Show one entry with everything known about it.
    Show {
        /// The entry's id (`s<shard>-<n>` in cluster mode).
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Replay one entry by id, or every entry the filters select.
    Replay {
        /// The entry's id (`s<shard>-<n>` in cluster mode); without it, the filters select
        /// (pending and failed by default).
        id: Option<String>,
        #[command(flatten)]
        selection: Selection,
        /// Print what would be sent; send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Send at most this many.
        #[arg(long)]
        max: Option<usize>,
        /// At most this many requests per second (`5` or `5/s`).
        #[arg(long, value_parser = parse_rate)]
        rate: Option<f64>,
        #[command(flatten)]
        target: Target,
    },
    /// Put an entry aside for good.
    Discard {
        /// The entry's id (`s<shard>-<n>` in cluster mode).
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let n = text.trim().trim_end_matches("/s");
    match n.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("`{text}` is not a rate (write it like 5 or 5/s)")),
    }
}

pub fn run(cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_async(cmd))
}

async fn run_async(cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        DlqCommand::List {
            selection,
            limit,
            output,
            target,
        } => {
            let mut params = selection.pairs();
            params.push(("limit", limit.to_string()));
            let body = target.client()?.get_json("/api/v1/dlq", &params).await?;
            let entries = body["entries"].as_array().cloned().unwrap_or_default();
            match output {
                Output::Json => {
                    for e in &entries {
                        writeln!(out, "{e}")?;
                    }
                }
                Output::Table => {
                    writeln!(
                        out,
                        "{:>8}  {:9}  {:16}  {:20}  {:>8}  {:>7}  {:30}  ERROR",
                        "ID", "STATE", "TASK", "TASK_ID", "ATTEMPTS", "REPLAYS", "LAST_FAILED"
                    )?;
                    for e in &entries {
                        writeln!(out, "{}", row(e))?;
                    }
                }
            }
        }
        DlqCommand::Show { id, target } => {
            let body = target
                .client()?
                .get_json(&format!("/api/v1/dlq/{id}"), &[])
                .await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
        }
        DlqCommand::Discard { id, target } => {
            let body = target
                .client()?
                .post_json(&format!("/api/v1/dlq/{id}/discard"), &json!({}))
                .await?;
            writeln!(out, "{}", row(&body))?;
        }
        DlqCommand::Replay {
            id: Some(id),
            target,
            dry_run,
            ..
        } => {
            let client = target.client()?;
            if dry_run {
                let body = client
                    .post_json(
                        "/api/v1/dlq/replay",
                        &json!({ "ids": [id], "dry_run": true }),
                    )
                    .await?;
                for s in body["send"].as_array().into_iter().flatten() {
                    let url = s["url"].as_str().unwrap_or("");
                    writeln!(out, "would send: {}  -> {url}", row(&s["entry"]))?;
                }
                for r in body["refused"].as_array().into_iter().flatten() {
                    let why = r["reason"].as_str().unwrap_or("");
                    writeln!(out, "refused: {}  ({why})", row(&r["entry"]))?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let body = client
                .post_json(&format!("/api/v1/dlq/{id}/replay"), &json!({}))
                .await?;
            writeln!(out, "{}", row(&body["entry"]))?;
            if body["entry"]["state"] != "replayed" {
                return Ok(ExitCode::from(EXIT_PROBLEM));
            }
        }
        DlqCommand::Replay {
            id: None,
            selection,
            dry_run,
            max,
            rate,
            target,
        } => {
            let client = target.client()?;
            let mut req = json!({ "dry_run": dry_run });
            for (k, v) in selection.pairs() {
                req[k] = json!(v);
            }
            if let Some(m) = max {
                req["max"] = json!(m);
            }
            if let Some(r) = rate {
                req["rate"] = json!(r);
            }
            let body = client.post_json("/api/v1/dlq/replay", &req).await?;
            let send = body["send"].as_array().cloned().unwrap_or_default();
            let refused = body["refused"].as_array().cloned().unwrap_or_default();
            for r in &refused {
                writeln!(
                    out,
                    "refused: {}  ({})",
                    row(&r["entry"]),
                    r["reason"].as_str().unwrap_or("")
                )?;
            }
            if dry_run {
                for s in &send {
                    writeln!(
                        out,
                        "would send: {}  -> {}",
                        row(&s["entry"]),
                        s["url"].as_str().unwrap_or("")
                    )?;
                }
                writeln!(
                    out,
                    "dry run: {} to send, {} refused",
                    send.len(),
                    refused.len()
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            // One job, or in cluster mode one per shard.
            let jobs: Vec<String> = body["job"]
                .get("id")
                .into_iter()
                .chain(
                    body["jobs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|j| j.get("id")),
                )
                .map(|id| match id {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            if jobs.is_empty() {
                writeln!(out, "nothing to send ({} refused)", refused.len())?;
                return Ok(if refused.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_PROBLEM)
                });
            }
            let mut bad = 0;
            for job_id in jobs {
                let job = follow_job(&client, &job_id, send.len() as u64).await?;
                writeln!(
                    out,
                    "job {job_id}: replayed={} failed={} refused={}",
                    job["replayed"], job["failed"], job["refused"]
                )?;
                bad += job["failed"].as_u64().unwrap_or(0) + job["refused"].as_u64().unwrap_or(0);
            }
            if bad > 0 || !refused.is_empty() {
                return Ok(ExitCode::from(EXIT_PROBLEM));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls the job with a progress bar until it is done.
async fn follow_job(client: &Client, id: &str, total: u64) -> anyhow::Result<Value> {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} replaying [{bar:30}] {pos}/{len} ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    loop {
        let job = client
            .get_json(&format!("/api/v1/dlq/jobs/{id}"), &[])
            .await?;
        bar.set_position(job["next"].as_u64().unwrap_or(0));
        bar.set_message(format!("failed {}", job["failed"]));
        if job["done"] == true {
            bar.finish_and_clear();
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One entry as a table row.
fn row(e: &Value) -> String {
    let s = |k: &str| match &e[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    format!(
        "{:>8}  {:9}  {:16}  {:20}  {:>8}  {:>7}  {:30}  {}",
        s("id"),
        s("state"),
        s("task"),
        s("task_id"),
        s("attempts"),
        s("replays"),
        s("last_failed"),
        s("error")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_with_or_without_unit() {
        assert_eq!(parse_rate("5"), Ok(5.0));
        assert_eq!(parse_rate("2.5/s"), Ok(2.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
