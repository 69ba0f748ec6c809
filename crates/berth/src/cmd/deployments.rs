//! `berth deployments ...`: list, show, roll back and cancel deployments, and follow one
//! step by step (used by `berth apps deploy` and `berth apps restart`).

use std::time::Duration;

use anyhow::bail;
use serde_json::Value;

use super::apps::{Client, print_json, s, table};
use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Option<DeploymentsCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum DeploymentsCommand {
    /// List deployments, newest first (the default).
    List {
        /// Only deployments of this app.
        #[arg(long)]
        app: Option<String>,
        /// Only running ones (running or rolling back).
        #[arg(long)]
        active: bool,
    },
    /// Show one deployment with every step.
    Show { id: String },
    /// Follow a deployment until it ends; exits non-zero unless it succeeded.
    Watch {
        id: String,
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = super::parse_duration)]
        timeout: Duration,
    },
    /// Roll back: a running deployment returns to the version before it; a succeeded
    /// one is undone by a new deployment (if the app has not changed since).
    Rollback { id: String },
    /// Cancel a running deployment: it rolls back; with --force it stops where it
    /// stands (the app keeps its new version, nothing is rolled back).
    #[command(alias = "cancel")]
    Rm {
        id: String,
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = Client::new(global)?;
    let json_out = global.output == OutputFormat::Json;
    let command = args.command.unwrap_or(DeploymentsCommand::List {
        app: None,
        active: false,
    });
    match command {
        DeploymentsCommand::List { app, active } => {
            let mut query = Vec::new();
            if let Some(app) = app {
                query.push(format!("app={app}"));
            }
            if active {
                query.push("active=true".into());
            }
            let path = if query.is_empty() {
                "/v1/deployments".to_string()
            } else {
                format!("/v1/deployments?{}", query.join("&"))
            };
            let v = client.get(&path).await?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let rows = v["deployments"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|d| {
                    vec![
                        s(&d["id"]),
                        s(&d["app"]),
                        s(&d["kind"]),
                        s(&d["state"]),
                        progress(d),
                        d["reason"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect();
            table(&["ID", "APP", "KIND", "STATE", "READY", "REASON"], rows);
        }
        DeploymentsCommand::Show { id } => {
            let d = client.get(&format!("/v1/deployments/{id}")).await?;
            if json_out {
                print_json(&d);
            } else {
                show(&d);
            }
        }
        DeploymentsCommand::Watch { id, timeout } => {
            follow(&client, &id, timeout, json_out).await?;
        }
        DeploymentsCommand::Rollback { id } => {
            let d = client
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/deployments/{id}/rollback"),
                    Some(("application/json", "{}".into())),
                )
                .await?;
            if json_out {
                print_json(&d);
            } else if d["id"] == id.as_str() {
                println!("{id} is rolling back; follow it with `berth deployments watch {id}`");
            } else {
                println!(
                    "{id} is undone by deployment {}; follow it with `berth deployments watch {}`",
                    s(&d["id"]),
                    s(&d["id"])
                );
            }
        }
        DeploymentsCommand::Rm { id, force } => {
            let path = if force {
                format!("/v1/deployments/{id}?force=true")
            } else {
                format!("/v1/deployments/{id}")
            };
            let d = client.call(reqwest::Method::DELETE, &path, None).await?;
            if json_out {
                print_json(&d);
            } else if force {
                println!("{id} stopped where it stood; nothing was rolled back");
            } else {
                println!("{id} is rolling back; follow it with `berth deployments watch {id}`");
            }
        }
    }
    Ok(())
}

fn progress(d: &Value) -> String {
    format!(
        "{}/{}",
        s(&d["progress"]["ready"]),
        s(&d["progress"]["wanted"])
    )
}

fn show(d: &Value) {
    println!("deployment: {}", s(&d["id"]));
    println!("app:        {}", s(&d["app"]));
    println!("kind:       {}", s(&d["kind"]));
    println!("state:      {}", s(&d["state"]));
    let from = d["from"]["config_version"]
        .as_u64()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".into());
    println!("versions:   {from} -> {}", s(&d["to"]["config_version"]));
    println!(
        "progress:   {} ready, {} active, {} still to stop",
        progress(d),
        s(&d["progress"]["active"]),
        s(&d["progress"]["leaving"])
    );
    if let Some(r) = d["reason"].as_str() {
        println!("reason:     {r}");
    }
    println!("\nsteps:");
    let start = d["created_at_ms"].as_u64().unwrap_or(0);
    for step in d["steps"].as_array().cloned().unwrap_or_default() {
        println!("  {}", step_line(&step, start));
    }
}

fn step_line(step: &Value, start_ms: u64) -> String {
    let at = step["at_ms"].as_u64().unwrap_or(start_ms);
    format!(
        "+{:>6.1}s  {}",
        at.saturating_sub(start_ms) as f64 / 1000.0,
        s(&step["message"])
    )
}

/// Prints each new step of deployment `id` until it ends. Ok only when it succeeded.
/// `timeout` is the deployment's own deadline; a rollback gets as long again.
pub async fn follow(
    client: &Client,
    id: &str,
    timeout: Duration,
    json_out: bool,
) -> anyhow::Result<()> {
    let give_up = tokio::time::Instant::now() + timeout * 2 + Duration::from_secs(30);
    let mut printed = 0usize;
    let mut last_step: Option<Value> = None;
    let mut unplaceable = 0;
    loop {
        let d = client.get(&format!("/v1/deployments/{id}")).await?;
        let steps = d["steps"].as_array().cloned().unwrap_or_default();
        // Old steps may have been dropped from the front of a long list: find the last
        // one printed and go on after it.
        let from = match &last_step {
            Some(last) => steps
                .iter()
                .rposition(|st| st == last)
                .map(|i| i + 1)
                .unwrap_or(printed.min(steps.len())),
            None => 0,
        };
        let start = d["created_at_ms"].as_u64().unwrap_or(0);
        for step in &steps[from..] {
            if !json_out {
                println!("  {}", step_line(step, start));
            }
        }
        printed = steps.len();
        last_step = steps.last().cloned();
        let app = s(&d["app"]);
        let ended = !matches!(d["state"].as_str(), Some("running" | "rolling_back"));
        if ended && json_out && d["state"] != "succeeded" {
            // Scripts get the whole record; the exit status still says it failed.
            print_json(&d);
        }
        match d["state"].as_str() {
            Some("succeeded") => {
                if json_out {
                    print_json(&d);
                } else {
                    let spec = client.get(&format!("/v1/apps/{app}")).await?;
                    let checked = spec["spec"]["health_checks"]
                        .as_array()
                        .is_some_and(|h| !h.is_empty());
                    let word = if checked { "healthy" } else { "running" };
                    println!("{app} deployed: {} {word} ({id})", progress(&d));
                }
                return Ok(());
            }
            Some("rolled_back") => bail!(
                "{app}: deployment {id} failed and was rolled back to version {}: {}",
                s(&d["from"]["config_version"]),
                d["reason"].as_str().unwrap_or("rolled back")
            ),
            Some("failed") => bail!(
                "{app}: deployment {id} failed: {}; see `berth apps show {app}`",
                d["reason"].as_str().unwrap_or("no reason given")
            ),
            Some("cancelled") => bail!(
                "{app}: deployment {id} was cancelled: {}",
                d["reason"].as_str().unwrap_or("no reason given")
            ),
            _ => {}
        }
        // A deployment that cannot be placed may wait for capacity until its deadline;
        // a person at a terminal wants to know at once.
        let status = client.get(&format!("/v1/apps/{app}")).await?;
        if let Some(why) = status["status"]["why"].as_str() {
            unplaceable += 1;
            if unplaceable >= 3 {
                bail!(
                    "{app} cannot run: {why}; deployment {id} goes on until its deadline (cancel it with `berth deployments rm {id}`)"
                );
            }
        } else {
            unplaceable = 0;
        }
        if tokio::time::Instant::now() >= give_up {
            bail!(
                "{app}: deployment {id} still {} after {} s; follow it with `berth deployments watch {id}`",
                s(&d["state"]),
                (timeout * 2).as_secs() + 30
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
