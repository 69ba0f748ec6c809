//! `berth routes`: the router's current route table, read from its status listener.

use anyhow::{Context, bail};
use serde_json::Value;

use super::OutputFormat;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The router's status listener.
    #[arg(
        long,
        value_name = "URL",
        env = "BERTH_ROUTER_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    router_url: String,
    /// Basic-auth user of the status listener, when the router sets `status_user`; the
    /// password comes from BERTH_ROUTER_STATUS_PASSWORD.
    #[arg(long, value_name = "USER", env = "BERTH_ROUTER_STATUS_USER")]
    user: Option<String>,
    /// Only routes whose host contains this text (e.g. `shop.example.com`).
    #[arg(long, value_name = "TEXT")]
    host: Option<String>,
}

pub async fn run(args: Args, output: OutputFormat) -> anyhow::Result<()> {
    let base = args.router_url.trim_end_matches('/');
    let mut request = reqwest::Client::new()
        .get(format!("{base}/routes"))
        .timeout(std::time::Duration::from_secs(10));
    if let Some(user) = &args.user {
        let password = std::env::var("BERTH_ROUTER_STATUS_PASSWORD").ok();
        request = request.basic_auth(user, password);
    }
    let response = request.send().await.with_context(|| {
        format!(
            "cannot reach the router's status listener at {base}; pass --router-url or BERTH_ROUTER_URL"
        )
    })?;
    let status = response.status();
    let text = response
        .text()
        .await
        .context("reading the router's answer")?;
    if status.as_u16() == 401 {
        bail!(
            "the router asks for its status user and password: pass --user and set BERTH_ROUTER_STATUS_PASSWORD"
        );
    }
    if !status.is_success() {
        bail!("the router answered {status}: {}", text.trim());
    }
    let mut table: Value = serde_json::from_str(&text)
        .with_context(|| format!("the router's /routes is not JSON: {}", text.trim()))?;
    if let Some(filter) = &args.host
        && let Some(routes) = table["routes"].as_array_mut()
    {
        routes.retain(|r| {
            r["route"]
                .as_str()
                .is_some_and(|route| route.contains(filter.as_str()))
        });
    }
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&table)?);
        return Ok(());
    }
    print_table(&table);
    Ok(())
}

fn print_table(table: &Value) {
    let routes = table["routes"].as_array().cloned().unwrap_or_default();
    if routes.is_empty() {
        println!("no routes (generation {})", table["generation"]);
        return;
    }
    let mut rows = vec![[
        "ROUTE".to_string(),
        "LB".into(),
        "ENDPOINT".into(),
        "WEIGHT".into(),
        "APP".into(),
        "INSTANCE".into(),
        "IN FLIGHT".into(),
        "REQUESTS".into(),
        "STATE".into(),
    ]];
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for route in &routes {
        let endpoints = route["endpoints"].as_array().cloned().unwrap_or_default();
        if endpoints.is_empty() {
            rows.push([
                text(&route["route"]),
                text(&route["lb"]),
                "(none)".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for (i, e) in endpoints.iter().enumerate() {
            let (name, lb) = if i == 0 {
                (text(&route["route"]), text(&route["lb"]))
            } else {
                (String::new(), String::new())
            };
            let state = if e["failing"].as_bool() == Some(true) {
                "failing"
            } else {
                "ok"
            };
            rows.push([
                name,
                lb,
                text(&e["addr"]),
                text(&e["weight"]),
                text(&e["app"]),
                text(&e["instance_id"]),
                text(&e["in_flight"]),
                text(&e["requests"]),
                state.into(),
            ]);
        }
    }
    let mut widths = [0usize; 9];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
