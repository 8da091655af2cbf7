//! `spoor search` and `spoor tail`: query a collector and print hits as logfmt (default,
//! so output pipes into other logfmt tools), JSON lines, or a table.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::Value;
use spoor_query::client::ClientError;
use spoor_sdk::event::RESERVED_ORDER;
use spoor_sdk::logfmt::write_pair;

use super::target::Target;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Logfmt,
    Json,
    Table,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The query, e.g. `level:error task:charge "card declined" | count by host`.
    #[arg(default_value = "")]
    query: String,
    /// Start of the time range: RFC 3339 or a duration back from now (15m, 1h, 7d).
    #[arg(long)]
    from: Option<String>,
    /// End of the time range [default: now].
    #[arg(long)]
    to: Option<String>,
    /// Most hits to print.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Logfmt)]
    output: Output,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Only lines matching this query.
    #[arg(default_value = "")]
    query: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Logfmt)]
    output: Output,
    #[command(flatten)]
    target: Target,
}

fn explain(err: ClientError, query: &str) -> anyhow::Error {
    if let ClientError::Api { body, message, .. } = &err
        && let Some(pos) = body["position"].as_u64()
    {
        let caret = " ".repeat(query[..(pos as usize).min(query.len())].chars().count());
        return anyhow::anyhow!("{message}\n  {query}\n  {caret}^");
    }
    err.into()
}

pub fn run(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let client = args.target.client()?;
    let mut params = vec![("q", args.query.clone()), ("limit", args.limit.to_string())];
    if let Some(f) = &args.from {
        params.push(("from", f.clone()));
    }
    if let Some(t) = &args.to {
        params.push(("to", t.clone()));
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let body = runtime
        .block_on(client.get_json("/api/v1/search", &params))
        .map_err(|e| explain(e, &args.query))?;
    let mut out = std::io::stdout().lock();
    if let (Some(columns), Some(rows)) = (body["columns"].as_array(), body["rows"].as_array()) {
        print_rows(&mut out, columns, rows, args.output)?;
        return Ok(ExitCode::SUCCESS);
    }
    for hit in body["hits"].as_array().into_iter().flatten() {
        print_hit(&mut out, hit, args.output)?;
    }
    if std::io::stderr().is_terminal() {
        let shown = body["hits"].as_array().map_or(0, Vec::len);
        eprintln!(
            "{shown} of {} matching lines ({} ms)",
            body["total"], body["took_ms"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    let client = args.target.client()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let mut out = std::io::stdout().lock();
    let mut failure = None;
    runtime
        .block_on(client.tail(&args.query, |hit| {
            match print_hit(&mut out, &hit, args.output) {
                Ok(()) => out.flush().is_ok(),
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        }))
        .map_err(|e| explain(e, &args.query))?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(ExitCode::SUCCESS)
}

/// Reserved keys first, in the event order, then the rest alphabetically.
fn ordered(hit: &Value) -> Vec<(String, String)> {
    let Some(obj) = hit.as_object() else {
        return Vec::new();
    };
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let mut pairs: Vec<(String, String)> = RESERVED_ORDER
        .iter()
        .filter_map(|k| obj.get(*k).map(|v| ((*k).to_string(), text(v))))
        .collect();
    pairs.extend(
        obj.iter()
            .filter(|(k, _)| !RESERVED_ORDER.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), text(v))),
    );
    pairs
}

fn print_hit(out: &mut impl Write, hit: &Value, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => writeln!(out, "{hit}")?,
        Output::Logfmt => {
            let mut line = String::new();
            for (k, v) in ordered(hit) {
                write_pair(&mut line, &k, &v);
            }
            writeln!(out, "{line}")?;
        }
        Output::Table => {
            let get = |k: &str| hit[k].as_str().unwrap_or("").to_string();
            let level = get("level");
            let colour = std::io::stdout().is_terminal();
            let painted = match (colour, level.as_str()) {
                (true, "error" | "fatal") => format!("\x1b[31m{level:5}\x1b[0m"),
                (true, "warn") => format!("\x1b[33m{level:5}\x1b[0m"),
                _ => format!("{level:5}"),
            };
            writeln!(
                out,
                "{}  {painted}  {:12}  {}",
                get("ts"),
                get("task"),
                get("msg")
            )?;
        }
    }
    Ok(())
}

fn print_rows(
    out: &mut impl Write,
    columns: &[Value],
    rows: &[Value],
    output: Output,
) -> anyhow::Result<()> {
    let names: Vec<String> = columns
        .iter()
        .map(|c| c.as_str().unwrap_or("").to_string())
        .collect();
    let cell = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    for row in rows {
        let cells: Vec<String> = row.as_array().into_iter().flatten().map(cell).collect();
        match output {
            Output::Json => {
                let obj: serde_json::Map<String, Value> = names
                    .iter()
                    .cloned()
                    .zip(row.as_array().into_iter().flatten().cloned())
                    .collect();
                writeln!(out, "{}", Value::Object(obj))?;
            }
            Output::Logfmt => {
                let mut line = String::new();
                for (k, v) in names.iter().zip(&cells) {
                    write_pair(&mut line, k, v);
                }
                writeln!(out, "{line}")?;
            }
            Output::Table => writeln!(out, "{}", cells.join("\t"))?,
        }
    }
    Ok(())
}
