//! Client commands against the server's REST API: `berth apps ...`, `berth nodes`,
//! `berth instances`. Tables for people, `-o json` for scripts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Subcommand)]
pub enum AppsCommand {
    /// List apps with their running and wanted instances.
    List,
    /// Show one app: spec, status, instances, versions and last events.
    Show { app: String },
    /// Create or update an app from a TOML (or JSON) spec file, then wait until its
    /// instances run (unless --detach). Exits non-zero with the reason on failure.
    Deploy {
        file: PathBuf,
        /// Return once the spec is accepted, without waiting for instances.
        #[arg(long)]
        detach: bool,
        /// Deadline of the deployment: not done by then, it fails and rolls back.
        #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = super::parse_duration)]
        timeout: Duration,
        /// Supersede a deployment of the app that is still running.
        #[arg(long)]
        force: bool,
        /// On failure, leave the app where it stands instead of rolling back.
        #[arg(long)]
        no_rollback: bool,
    },
    /// Set the number of instances; with --wait, follow the deployment until done.
    Scale {
        app: String,
        instances: u32,
        #[arg(long)]
        wait: bool,
        #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = super::parse_duration)]
        timeout: Duration,
        /// Supersede a deployment of the app that is still running.
        #[arg(long)]
        force: bool,
    },
    /// Rolling restart: replace every instance with a fresh one of the same version,
    /// new ones first, and wait until done (unless --detach).
    Restart {
        app: String,
        #[arg(long)]
        detach: bool,
        #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = super::parse_duration)]
        timeout: Duration,
        /// Supersede a deployment of the app that is still running.
        #[arg(long)]
        force: bool,
    },
    /// Delete the app; its instances are stopped.
    Rm { app: String },
}

#[derive(Debug, clap::Args)]
pub struct InstancesArgs {
    /// Only instances of this app.
    #[arg(long)]
    app: Option<String>,
}

/// The server's REST API as client commands use it: every request carries the ACL token
/// (see [`super::auth`]), every refusal becomes an error with the server's message.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<super::auth::Token>,
    ca_cert: Option<std::path::PathBuf>,
}

impl Client {
    pub(crate) fn new(global: &GlobalArgs) -> anyhow::Result<Self> {
        Ok(Client {
            http: super::ca_cert::http_client(global.ca_cert.as_deref())?,
            base: global.server_url.trim_end_matches('/').to_string(),
            token: global.token()?,
            ca_cert: global.ca_cert.clone(),
        })
    }

    /// A request to `path` carrying the token, for callers that read the answer
    /// themselves (streams); pass the response through [`Client::send`].
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base);
        super::auth::authorize(self.http.request(method, url), self.token.as_ref())
    }

    /// Sends `request`; a refusal becomes an error with the server's message.
    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                if let Some(fix) = super::ca_cert::explain_certificate_error(
                    &err,
                    &self.base,
                    self.ca_cert.as_deref(),
                ) {
                    bail!("{fix}");
                }
                return Err(anyhow::Error::new(err).context(format!("cannot reach the server at {}; start it with `berth server` or pass --server-url / BERTH_SERVER_URL", self.base)));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        bail!("{}", self.describe_error(status.as_u16(), &value))
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, String)>,
    ) -> anyhow::Result<Value> {
        let mut req = self.request(method, path).timeout(Duration::from_secs(30));
        if let Some((ct, body)) = body {
            req = req.header("content-type", ct).body(body);
        }
        let resp = self.send(req).await?;
        let text = resp.text().await.context("reading the server's answer")?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    fn describe_error(&self, status: u16, v: &Value) -> String {
        let mut out = describe_error(status, v);
        // The server's 401 says how to get a token; what it cannot know is which of the
        // user's settings the refused one came from.
        if status == 401 {
            match &self.token {
                Some(token) => out.push_str(&format!(" [token sent from {}]", token.source)),
                None => out.push_str(
                    " [no token sent: pass --token-file FILE, --token, BERTH_TOKEN or BERTH_TOKEN_FILE]",
                ),
            }
        }
        out
    }
}

pub(crate) fn describe_error(status: u16, v: &Value) -> String {
    let mut out = match v.get("message").and_then(Value::as_str) {
        Some(m) => format!("server said ({status}): {m}"),
        None => format!("server answered {status}: {v}"),
    };
    // Validation errors are already listed in the message; other errors name one field.
    if v.get("errors").is_none()
        && let Some(f) = v.get("field").and_then(Value::as_str)
    {
        out.push_str(&format!(" [field: {f}]"));
    }
    out
}

pub(crate) fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Left-aligned columns sized to their content, printed.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", table_text(headers, rows));
}

/// Left-aligned columns sized to their content, one line each (the header first).
pub(crate) fn table_text(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub async fn run(cmd: AppsCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = Client::new(global)?;
    let json_out = global.output == OutputFormat::Json;
    match cmd {
        AppsCommand::List => {
            let v = client.get("/v1/apps").await?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let rows = v["apps"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    vec![
                        s(&a["spec"]["id"]),
                        format!(
                            "{}/{}",
                            s(&a["status"]["running"]),
                            s(&a["status"]["wanted"])
                        ),
                        s(&a["version"]),
                        s(&a["change"]),
                        a["status"]["why"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect();
            table(
                &["APP", "RUNNING", "VERSION", "LAST CHANGE", "PROBLEM"],
                rows,
            );
        }
        AppsCommand::Show { app } => {
            let v = client.get(&format!("/v1/apps/{app}")).await?;
            let versions = client.get(&format!("/v1/apps/{app}/versions")).await?;
            if json_out {
                let mut v = v;
                v["versions"] = versions["versions"].clone();
                print_json(&v);
                return Ok(());
            }
            show(&v, &versions);
        }
        AppsCommand::Deploy {
            file,
            detach,
            timeout,
            force,
            no_rollback,
        } => {
            let mut query = format!("?timeout={}ms", timeout.as_millis());
            if force {
                query.push_str("&force=true");
            }
            if no_rollback {
                query.push_str("&rollback=false");
            }
            deploy(&client, &file, detach, timeout, &query, json_out).await?;
        }
        AppsCommand::Scale {
            app,
            instances,
            wait,
            timeout,
            force,
        } => {
            let mut query = format!("?timeout={}ms", timeout.as_millis());
            if force {
                query.push_str("&force=true");
            }
            let v = client
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/apps/{app}/scale{query}"),
                    Some((
                        "application/json",
                        json!({ "instances": instances }).to_string(),
                    )),
                )
                .await?;
            let id = s(&v["deployment"]["id"]);
            if !wait {
                report(
                    &v,
                    json_out,
                    &format!(
                        "{app} scaling to {instances} instance(s), version {} (deployment {id})",
                        s(&v["version"]),
                    ),
                );
            } else {
                if !json_out {
                    println!("{app} scaling to {instances} instance(s) (deployment {id})");
                }
                super::deployments::follow(&client, &id, timeout, json_out).await?;
            }
        }
        AppsCommand::Restart {
            app,
            detach,
            timeout,
            force,
        } => {
            let mut query = format!("?timeout={}ms", timeout.as_millis());
            if force {
                query.push_str("&force=true");
            }
            let v = client
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/apps/{app}/restart{query}"),
                    Some(("application/json", "{}".into())),
                )
                .await?;
            let id = s(&v["deployment"]["id"]);
            if detach {
                report(
                    &v,
                    json_out,
                    &format!(
                        "{app} restarting: every instance is replaced, new ones first (version {}, deployment {id})",
                        s(&v["version"])
                    ),
                );
            } else {
                if !json_out {
                    println!("{app} rolling restart (deployment {id})");
                }
                super::deployments::follow(&client, &id, timeout, json_out).await?;
            }
        }
        AppsCommand::Rm { app } => {
            let v = client
                .call(reqwest::Method::DELETE, &format!("/v1/apps/{app}"), None)
                .await?;
            report(
                &v,
                json_out,
                &format!("{app} deleted; its instances are being stopped"),
            );
        }
    }
    Ok(())
}

fn report(v: &Value, json_out: bool, text: &str) {
    if json_out {
        print_json(v);
    } else {
        println!("{text}");
    }
}

fn show(v: &Value, versions: &Value) {
    let spec = &v["spec"];
    let st = &v["status"];
    println!("app:       {}", s(&spec["id"]));
    println!("version:   {} ({})", s(&v["version"]), s(&v["change"]));
    println!("running:   {}/{}", s(&st["running"]), s(&st["wanted"]));
    let run = spec
        .get("cmd")
        .map(s)
        .or_else(|| spec.get("args").map(|a| a.to_string()))
        .or_else(|| spec.get("image").map(s))
        .unwrap_or_default();
    println!("runs:      {run}");
    println!(
        "resources: {} cpus, {} MiB memory, {} MiB disk",
        s(&spec["cpus"]),
        s(&spec["mem"]),
        s(&spec["disk"])
    );
    if let Some(why) = st["why"].as_str() {
        println!("problem:   {why}");
    }
    if st["failures"].as_u64().unwrap_or(0) > 0 {
        println!("failures:  {} in a row", s(&st["failures"]));
    }
    if let Some(ms) = st["backoff_ms"].as_u64() {
        println!(
            "backoff:   next launch in {:.1} s (launches slow down after each failure)",
            ms as f64 / 1000.0
        );
    }
    if let Some(f) = st.get("last_failure").filter(|f| f.is_object()) {
        let code = f["exit_code"]
            .as_i64()
            .map(|c| format!(", exit code {c}"))
            .unwrap_or_default();
        println!(
            "last exit: {} {}{code}",
            s(&f["instance"]),
            s(&f["message"])
        );
        let tail = f["stderr_tail"].as_str().unwrap_or("").trim_end();
        if !tail.is_empty() {
            println!("stderr (last lines):");
            for line in tail.lines() {
                println!("  | {line}");
            }
        }
    }
    if let Some(d) = v.get("deployment").filter(|d| d.is_object()) {
        println!(
            "deploying: {} {} ({}, {}/{} ready, {} to stop){}",
            s(&d["id"]),
            s(&d["state"]),
            s(&d["kind"]),
            s(&d["progress"]["ready"]),
            s(&d["progress"]["wanted"]),
            s(&d["progress"]["leaving"]),
            d["steps"]
                .as_array()
                .and_then(|st| st.last())
                .map(|l| format!(": {}", s(&l["message"])))
                .unwrap_or_default()
        );
    }
    println!("\ninstances:");
    let rows = v["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(instance_row)
        .collect();
    table(
        &["INSTANCE", "STATE", "NODE", "PORTS", "VERSION", "MESSAGE"],
        rows,
    );
    println!("\nversions:");
    let rows = versions["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .take(10)
        .map(|x| {
            vec![
                s(&x["version"]),
                s(&x["change"]),
                s(&x["spec"]["instances"]),
            ]
        })
        .collect();
    table(&["VERSION", "CHANGE", "INSTANCES"], rows);
    let health = v["health_events"].as_array().cloned().unwrap_or_default();
    if !health.is_empty() {
        println!("\nhealth changes:");
        for e in health {
            println!("  {}", s(&e["message"]));
        }
    }
    println!("\nlast events:");
    for e in v["events"].as_array().cloned().unwrap_or_default() {
        println!("  [{}] {}", s(&e["type"]), s(&e["message"]));
    }
}

fn instance_row(i: &Value) -> Vec<String> {
    let ports: Vec<String> = i["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(s)
        .collect();
    vec![
        s(&i["id"]),
        s(&i["state"]),
        s(&i["node"]),
        ports.join(","),
        s(&i["version"]),
        i["message"].as_str().unwrap_or("").to_string(),
    ]
}

async fn deploy(
    client: &Client,
    file: &PathBuf,
    detach: bool,
    timeout: Duration,
    query: &str,
    json_out: bool,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the spec file {}", file.display()))?;
    let is_json = file.extension().is_some_and(|e| e == "json");
    let ct = if is_json {
        "application/json"
    } else {
        "application/toml"
    };
    // The id picks the URL; a spec without a readable id still goes to the server, which
    // reports every problem at once.
    let id = if is_json {
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string))
    } else {
        toml::from_str::<toml::Table>(&text)
            .ok()
            .and_then(|t| t.get("id").and_then(|v| v.as_str()).map(str::to_string))
    };
    let accepted = match &id {
        Some(id) if !id.is_empty() && !id.contains("..") => {
            client
                .call(
                    reqwest::Method::PUT,
                    &format!("/v1/apps/{id}{query}"),
                    Some((ct, text)),
                )
                .await
        }
        _ => {
            client
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/apps{query}"),
                    Some((ct, text)),
                )
                .await
        }
    }
    .with_context(|| format!("{} was not deployed", file.display()))?;
    let app = s(&accepted["spec"]["id"]);
    let version = accepted["config_version"].as_u64().unwrap_or(0);
    if detach {
        report(
            &accepted,
            json_out,
            &format!(
                "{app} accepted at version {}{}",
                s(&accepted["version"]),
                accepted["deployment"]["id"]
                    .as_str()
                    .map(|id| format!("; deployment {id} (berth deployments watch {id})"))
                    .unwrap_or_default()
            ),
        );
        return Ok(());
    }
    // A change is followed through its deployment; an unchanged spec through the app's
    // status (it may still be converging from an earlier change).
    let deployment = accepted["deployment"]["id"].as_str().map(str::to_string);
    if let Some(id) = deployment {
        if !json_out {
            println!(
                "{app} accepted at version {}; deployment {id}",
                s(&accepted["version"])
            );
        }
        return super::deployments::follow(client, &id, timeout, json_out).await;
    }
    if !json_out {
        println!(
            "{app} accepted at version {}; waiting for instances",
            s(&accepted["version"])
        );
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_line = String::new();
    let mut unplaceable_polls = 0;
    loop {
        let v = client.get(&format!("/v1/apps/{app}")).await?;
        let st = &v["status"];
        let wanted = st["wanted"].as_u64().unwrap_or(0);
        let instances = v["instances"].as_array().cloned().unwrap_or_default();
        let current = |i: &&Value| i["version"].as_u64() == Some(version);
        // With health checks an instance counts once healthy, not merely started.
        let checked = v["spec"]["health_checks"]
            .as_array()
            .is_some_and(|h| !h.is_empty());
        let word = if checked { "healthy" } else { "running" };
        let ready = |i: &&Value| match i["state"].as_str() {
            Some("healthy") => true,
            Some("running") => !checked,
            _ => false,
        };
        let running = instances.iter().filter(current).filter(ready).count() as u64;
        let old = instances
            .iter()
            .filter(|i| {
                !current(i)
                    && matches!(
                        i["state"].as_str(),
                        Some("starting" | "running" | "healthy" | "unhealthy")
                    )
            })
            .count();
        let line = format!(
            "{app}: {running}/{wanted} {word}{}",
            if old > 0 {
                format!(", {old} old still up")
            } else {
                String::new()
            }
        );
        if line != last_line && !json_out {
            println!("{line}");
            last_line = line;
        }
        if running == wanted && old == 0 {
            if json_out {
                print_json(&v);
            } else {
                println!("{app} deployed: {running}/{wanted} {word}");
            }
            return Ok(());
        }
        if let Some(why) = st["why"].as_str() {
            unplaceable_polls += 1;
            if unplaceable_polls >= 3 {
                bail!("{app} cannot run: {why}");
            }
        } else {
            unplaceable_polls = 0;
        }
        let failures = st["failures"].as_u64().unwrap_or(0);
        if failures >= 3 {
            let last = instances
                .iter()
                .filter(|i| matches!(i["state"].as_str(), Some("failed" | "exited")))
                .map(|i| {
                    format!(
                        "{} {}",
                        s(&i["message"]),
                        i["stderr_tail"].as_str().unwrap_or("")
                    )
                })
                .next_back()
                .unwrap_or_default();
            let event = v["events"]
                .as_array()
                .and_then(|e| e.iter().rev().find(|e| e["type"] == "instance_state"))
                .map(|e| s(&e["message"]))
                .unwrap_or_default();
            bail!(
                "{app} keeps failing ({failures} failures in a row): {} {}",
                last.trim(),
                event
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{app} not ready after {} s: {running}/{wanted} running; see `berth apps show {app}`",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub async fn nodes(global: &GlobalArgs) -> anyhow::Result<()> {
    let v = Client::new(global)?.get("/v1/nodes").await?;
    if global.output == OutputFormat::Json {
        print_json(&v);
        return Ok(());
    }
    let rows = v["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|n| {
            let cpu = |r: &Value| r["cpu_millis"].as_u64().unwrap_or(0) as f64 / 1000.0;
            vec![
                s(&n["id"]),
                s(&n["status"]),
                s(&n["address"]),
                format!("{}/{}", cpu(&n["allocated"]), cpu(&n["total"])),
                format!(
                    "{}/{}",
                    s(&n["allocated"]["mem_mib"]),
                    s(&n["total"]["mem_mib"])
                ),
                s(&n["instances"]),
                n["labels"]
                    .as_object()
                    .map(|l| {
                        l.iter()
                            .map(|(k, v)| format!("{k}={}", s(v)))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "NODE",
            "STATUS",
            "ADDRESS",
            "CPUS",
            "MEM MiB",
            "INSTANCES",
            "LABELS",
        ],
        rows,
    );
    Ok(())
}

pub async fn instances(args: InstancesArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let path = match &args.app {
        Some(app) => format!("/v1/instances?app={app}"),
        None => "/v1/instances".to_string(),
    };
    let v = Client::new(global)?.get(&path).await?;
    if global.output == OutputFormat::Json {
        print_json(&v);
        return Ok(());
    }
    let mut rows: Vec<Vec<String>> = v["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| {
            let mut row = vec![s(&i["app"])];
            row.extend(instance_row(i));
            row
        })
        .collect();
    for p in v["pending"].as_array().cloned().unwrap_or_default() {
        rows.push(vec![
            s(&p["app"]),
            s(&p["id"]),
            "pending".into(),
            s(&p["node"]),
            String::new(),
            s(&p["version"]),
            String::new(),
        ]);
    }
    table(
        &[
            "APP", "INSTANCE", "STATE", "NODE", "PORTS", "VERSION", "MESSAGE",
        ],
        rows,
    );
    Ok(())
}
