//! `spoor alerts list|silence|expire|test`: show rules with their state, silence alerts
//! for a while or end a silence early, send a sample notification to check a notifier's
//! webhook.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use super::target::Target;

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Rules with their state and the active silences.
    List {
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Stop notifications of a rule (optionally only some of its groups) for a while.
    Silence {
        /// The rule's name.
        rule: String,
        /// Only alerts with this label value (repeatable), e.g. `--label task=charge`.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// How long: 30m, 4h, 1d.
        #[arg(long = "for", default_value = "1h")]
        duration: String,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        target: Target,
    },
    /// End a silence now (its id is in `spoor alerts list`).
    Expire {
        /// The silence's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Send a sample notification to a notifier.
    Test {
        /// The notifier's name.
        notifier: String,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(cmd: AlertsCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cmd {
        AlertsCommand::List { json, target } => {
            let body = runtime.block_on(target.client()?.get_json("/api/v1/alerts", &[]))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print_table(&body);
            }
        }
        AlertsCommand::Silence {
            rule,
            labels,
            duration,
            comment,
            target,
        } => {
            let mut matchers = BTreeMap::new();
            for l in &labels {
                let (k, v) = l
                    .split_once('=')
                    .with_context(|| format!("--label {l}: write it as KEY=VALUE"))?;
                matchers.insert(k.to_string(), v.to_string());
            }
            matchers.insert("alertname".to_string(), rule);
            let req = json!({ "matchers": matchers, "duration": duration, "comment": comment });
            let body =
                runtime.block_on(target.client()?.post_json("/api/v1/alerts/silences", &req))?;
            println!(
                "silence {} until {}",
                body["id"].as_str().unwrap_or("?"),
                body["expires_at"].as_str().unwrap_or("?")
            );
        }
        AlertsCommand::Expire { id, target } => {
            let path = format!("/api/v1/alerts/silences/{}", path_segment(&id));
            let body = runtime.block_on(target.client()?.delete_json(&path))?;
            println!(
                "silence {} expired at {}",
                body["id"].as_str().unwrap_or("?"),
                body["expires_at"].as_str().unwrap_or("?")
            );
        }
        AlertsCommand::Test { notifier, target } => {
            let req = json!({ "notifier": notifier });
            let body = runtime.block_on(target.client()?.post_json("/api/v1/alerts/test", &req))?;
            println!("delivered to {notifier} (HTTP {})", body["status"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(body: &Value) {
    println!(
        "{:<24} {:<10} {:<9} {:<14} QUERY",
        "RULE", "KIND", "STATE", "THRESHOLD"
    );
    for r in body["rules"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<10} {:<9} {:<14} {}",
            r["name"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["threshold"].as_str().unwrap_or(""),
            r["query"].as_str().unwrap_or("")
        );
        for a in r["alerts"].as_array().into_iter().flatten() {
            let group: Vec<String> = a["group"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            println!(
                "  {:<22} {:<9} value {}",
                group.join(","),
                a["state"].as_str().unwrap_or(""),
                a["value"]
            );
        }
    }
    for s in body["silences"].as_array().into_iter().flatten() {
        println!(
            "silence {} until {}: {}",
            s["id"].as_str().unwrap_or(""),
            s["expires_at"].as_str().unwrap_or(""),
            s["matchers"]
        );
    }
}

/// `id` percent-encoded for one path segment (the same escaping as a query component).
fn path_segment(id: &str) -> String {
    spoor_query::client::encode_component(id)
}

#[cfg(test)]
mod tests {
    use super::path_segment;

    #[test]
    fn silence_ids_are_escaped_for_the_path() {
        assert_eq!(path_segment("19ab-2f"), "19ab-2f");
        assert_eq!(path_segment("a/b c?"), "a%2Fb%20c%3F");
    }
}
