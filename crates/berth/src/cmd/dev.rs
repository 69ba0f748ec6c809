//! `berth dev`: every role in one process on the default loopback ports, with embedded
//! storage under one data folder, and a demo app deployed through the server's API and
//! reached through the router. Roles talk to each other through the same network APIs as
//! when they run apart, so `dev` exercises the real paths.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use berth_util::config::Layers;
use berth_util::shutdown::Shutdown;

use super::Flags;

/// The demo app's host name: browsers and curl resolve `*.localhost` to loopback.
const DEMO_HOST: &str = "hello.localhost";
const DEMO_APP: &str = "demo/hello";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for every role's state (registry, server store, agent instances and logs).
    /// Default: $XDG_DATA_HOME/berth/dev or ~/.local/share/berth/dev.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Do not deploy the demo app.
    #[arg(long)]
    no_demo: bool,
    /// How long in-flight work may take to finish after SIGTERM/SIGINT.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = super::parse_duration)]
    shutdown_grace: Duration,
}

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("berth/dev");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/berth/dev"),
        None => PathBuf::from(".berth-dev"),
    }
}

/// Config of one role: dev's wiring as flags, overridable by BERTH_<ROLE>_* variables.
fn role_layers(role: &str, flags: Flags) -> anyhow::Result<Layers<'static>> {
    super::layers(role, None, flags)
}

/// A setting `berth dev` picks for a one-machine playground, unless the user set the
/// role's variable (flags outrank variables, so dev must not pass it as a flag then).
fn dev_default(role: &str, key: &str, value: impl ToString) -> Option<String> {
    let var = format!("BERTH_{}_{}", role.to_uppercase(), key.to_uppercase());
    std::env::var_os(var).is_none().then(|| value.to_string())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let data = args.data_dir.unwrap_or_else(default_data_dir);
    let shutdown = super::signal_shutdown()?;

    let registry = {
        let flags = Flags::default().set("data_dir", Some(data.join("registry").display()));
        let config =
            berth_registry::RegistryConfig::from_layers(&mut role_layers("registry", flags)?)?;
        berth_registry::start(config, &shutdown)
            .await
            .context("starting the registry")?
    };
    let registry_grpc = registry.grpc_addr();
    let registry_http = registry.http_addr();

    // Requests go to a file, so the terminal shows what the platform does.
    let access_log = dev_default(
        "router",
        "access_log_file",
        data.join("router/access.log").display(),
    )
    .filter(|_| std::env::var_os("BERTH_ROUTER_ACCESS_LOG").is_none());
    let router = {
        std::fs::create_dir_all(data.join("router"))
            .with_context(|| format!("creating {}", data.join("router").display()))?;
        let flags = Flags::default()
            .set("registry", Some(registry_grpc))
            .set(
                "route_cache",
                Some(data.join("router/routes.json").display()),
            )
            .set("access_log_file", access_log.clone());
        let config = berth_router::RouterConfig::from_layers(&mut role_layers("router", flags)?)?;
        berth_router::start(config, &shutdown)
            .await
            .context("starting the router")?
    };

    let diag = {
        let flags = Flags::default().set("registry_http", Some(registry_http));
        let config = berth_diag::DiagConfig::from_layers(&mut role_layers("diag", flags)?)?;
        berth_diag::start(config, shutdown.token())
            .await
            .context("starting the diagnostics gateway")?
    };

    let server = {
        let flags = Flags::default()
            .set("data_dir", Some(data.join("server").display()))
            .set("registry", Some(registry_grpc))
            .set("registry_http", Some(registry_http))
            // The one agent is in this process and says hello at once; waiting the
            // multi-node default for others that will never come only delays the demo.
            .set(
                "startup_grace",
                dev_default("server", "startup_grace", "2s"),
            );
        let config = berth_server::ServerConfig::from_layers(&mut role_layers("server", flags)?)?;
        berth_server::start(config, &shutdown)
            .await
            .context("starting the server")?
    };

    let agent = {
        let flags = Flags::default()
            .set("server", Some(server.agent_addr()))
            .set("data_dir", Some(data.join("agent").display()))
            .set("registry", Some(registry_grpc))
            .set("registry_http", Some(registry_http))
            .set("diag", Some(diag.addr()));
        let config = berth_agent::AgentConfig::from_layers(&mut role_layers("agent", flags)?)?;
        berth_agent::start(config, &shutdown)
            .await
            .context("starting the agent")?
    };

    let api = server.http_addr();
    let proxy = router.http_addr();
    let mut ready = vec![
        ("api", api),
        ("agent_stream", server.agent_addr()),
        ("registry", registry_http),
        ("registry_grpc", registry_grpc),
        ("router", proxy),
        ("router_status", router.status_addr()),
        ("agent", agent.http_addr()),
        ("diag", diag.addr()),
    ];
    ready.extend(registry.dns_addr().map(|addr| ("registry_dns", addr)));
    berth_util::ready::announce("dev", &ready);
    eprintln!("berth dev: data in {}", data.display());
    eprintln!("  API       http://{api}/v1/apps   (berth apps list)");
    eprintln!(
        "  registry  http://{registry_http}/nacos/v1/ns/service/list   (Nacos and Consul APIs)"
    );
    if let Some(dns) = registry.dns_addr() {
        eprintln!(
            "  DNS       dig @{} -p {} SERVICE.service.consul   (Consul DNS)",
            dns.ip(),
            dns.port()
        );
    }
    eprintln!("  router    http://{proxy}/");
    eprintln!(
        "  diag      {}   (berth inspect grep|tail|ps|ports APP)",
        diag.addr()
    );
    if let Some(file) = &access_log {
        eprintln!("  requests  {file}   (router access log)");
    }

    if !args.no_demo {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(err) = deploy_demo(api, proxy, &shutdown).await {
                tracing::error!("demo app: {err:#}");
            }
        });
    }

    shutdown.cancelled().await;
    shutdown
        .drain(args.shutdown_grace)
        .await
        .context("berth dev did not stop cleanly")?;
    Ok(())
}

/// Deploys the demo app through the public API and waits until the router serves it.
async fn deploy_demo(
    api: SocketAddr,
    proxy: SocketAddr,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the berth binary for the demo app")?;
    let spec = demo_spec(&exe);
    let client = reqwest::Client::new();
    let response = client
        .put(format!("http://{api}/v1/apps/{DEMO_APP}"))
        .json(&spec)
        .send()
        .await
        .context("sending the demo app to the server API")?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("the server refused the demo app ({status}): {body}");
    }
    let url = format!("http://{DEMO_HOST}:{}/", proxy.port());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        let reached = client
            .get(format!("http://{proxy}/"))
            .header(
                reqwest::header::HOST,
                format!("{DEMO_HOST}:{}", proxy.port()),
            )
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if reached {
            println!(
                "berth dev: demo app is up: {url}  (or: curl -H 'Host: {DEMO_HOST}' http://{proxy}/)"
            );
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the demo app was not reachable through the router at {url} within 2 minutes; see `berth apps show {DEMO_APP}`"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn demo_spec(exe: &Path) -> serde_json::Value {
    serde_json::json!({
        "id": DEMO_APP,
        "args": [exe.display().to_string(), "hello-app"],
        "instances": 2,
        "cpus": 0.1,
        "mem": 32,
        "ports": 1,
        "routes": [DEMO_HOST],
        "health_checks": [{
            "protocol": "http",
            "path": "/healthz",
            "grace_period_seconds": 10,
            "interval_seconds": 1,
            "timeout_seconds": 1,
            "max_consecutive_failures": 3
        }]
    })
}
