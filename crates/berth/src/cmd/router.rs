//! `berth router`: the HTTP entry. Flags become config keys (flags win over
//! `BERTH_ROUTER_*` environment variables, which win over the `--config` TOML file).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use berth_router::RouterConfig;

use super::{Flags, RoleArgs};

/// Routes HTTP traffic by host and path prefix to healthy instances. Routes come from the
/// registry's watch stream (`--registry`), from gorouter-compatible `router.register`
/// messages on NATS (`--nats`) and, at start, from the route cache (`--route-cache`).
///
/// Every other setting (timeouts, limits, TLS, drain, status auth) can be given in the
/// TOML file, as BERTH_ROUTER_<KEY>, or as --<key>; see docs/ROUTER.md for the full list:
/// connect_timeout, response_header_timeout, idle_timeout, header_read_timeout,
/// max_conns_per_backend, max_attempts, failure_cooldown, sticky_session_cookies,
/// access_log, access_log_file, drain_wait, drain_timeout, status_user, status_password(_file),
/// tls_listen, tls_cert_files, tls_key_files, tls_reload_interval, registry_namespace,
/// registry_retry_max, nats_prune_threshold, nats_prune_interval,
/// nats_minimum_register_interval, workers.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    role: RoleArgs,
    /// HTTP entry (HTTP/1.1 and h2c). Default 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Status listener: /health, /routes, /varz, /metrics. Default 127.0.0.1:8082.
    #[arg(long, value_name = "ADDR")]
    status_listen: Option<String>,
    /// Registry gRPC address to watch for routes (host:port).
    #[arg(long, value_name = "ADDR")]
    registry: Option<String>,
    /// File holding the registry's auth secret (its --auth-secret-file), sent with the
    /// watch; needed when the registry's auth is on.
    #[arg(long, value_name = "FILE")]
    registry_secret_file: Option<PathBuf>,
    /// NATS server URL(s), comma-separated, for router.register/unregister.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// File keeping the last route table, read at start when no source is reachable.
    #[arg(long, value_name = "FILE")]
    route_cache: Option<PathBuf>,
    /// File keeping the upstreams managed over /v1/upstreams (the dyups-style API on the
    /// status listener) across restarts [default: none, kept in memory].
    #[arg(long, value_name = "FILE")]
    upstreams_file: Option<PathBuf>,
    /// HTTPS entry; needs --tls-cert-files and --tls-key-files.
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<String>,
    /// PEM certificate chains, comma-separated; SNI picks among them.
    #[arg(long, value_name = "FILES")]
    tls_cert_files: Option<String>,
    /// PEM private keys, comma-separated, one per certificate file.
    #[arg(long, value_name = "FILES")]
    tls_key_files: Option<String>,
    /// Route TTL for NATS registrations that name none (default 120s).
    #[arg(long, value_name = "DURATION")]
    nats_prune_threshold: Option<String>,
    /// How often stale NATS routes are pruned (default 30s).
    #[arg(long, value_name = "DURATION")]
    nats_prune_interval: Option<String>,
    /// In-flight requests per backend; 0 = unlimited (default).
    #[arg(long, value_name = "N")]
    max_conns_per_backend: Option<String>,
    /// After SIGTERM, how long /health reports 503 before the listener closes (default 0s).
    #[arg(long, value_name = "DURATION")]
    drain_wait: Option<String>,
    /// Longest wait for in-flight requests while draining (default 10s).
    #[arg(long, value_name = "DURATION")]
    drain_timeout: Option<String>,
    /// Write the access log (one line per request) to this file instead of stderr.
    #[arg(long, value_name = "FILE")]
    access_log_file: Option<PathBuf>,
    /// Proxy threads; 0 (default) = the cores the process may run on (taskset, cgroups).
    #[arg(long, value_name = "N")]
    workers: Option<String>,
}

/// Loads the configuration, then runs the router on a runtime sized by `workers` (the
/// router builds its own runtime so a process pinned to one core runs one thread).
pub fn main(args: Args) -> anyhow::Result<()> {
    let (config, grace) = load(args)?;
    let runtime = config.runtime().context("cannot start the async runtime")?;
    runtime.block_on(serve(config, grace))
}

/// Runs the router on the caller's runtime.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (config, grace) = load(args)?;
    serve(config, grace).await
}

fn load(args: Args) -> anyhow::Result<(RouterConfig, Duration)> {
    let flags = Flags::default()
        .set("listen", args.listen)
        .set("status_listen", args.status_listen)
        .set("registry", args.registry)
        .set(
            "registry_secret_file",
            args.registry_secret_file.map(|p| p.display().to_string()),
        )
        .set("nats", args.nats)
        .set(
            "upstreams_file",
            args.upstreams_file.map(|p| p.display().to_string()),
        )
        .set(
            "route_cache",
            args.route_cache.map(|p| p.display().to_string()),
        )
        .set("tls_listen", args.tls_listen)
        .set("tls_cert_files", args.tls_cert_files)
        .set("tls_key_files", args.tls_key_files)
        .set("nats_prune_threshold", args.nats_prune_threshold)
        .set("nats_prune_interval", args.nats_prune_interval)
        .set("max_conns_per_backend", args.max_conns_per_backend)
        .set("drain_wait", args.drain_wait)
        .set("drain_timeout", args.drain_timeout)
        .set(
            "access_log_file",
            args.access_log_file.map(|p| p.display().to_string()),
        )
        .set("workers", args.workers);
    let mut layers = super::layers("router", args.role.config.as_deref(), flags)?;
    let config = RouterConfig::from_layers(&mut layers)?;
    Ok((config, args.role.shutdown_grace))
}

async fn serve(config: RouterConfig, shutdown_grace: Duration) -> anyhow::Result<()> {
    // The router's own drain (health 503, then in-flight requests) must fit in the grace.
    let grace =
        shutdown_grace.max(config.drain_wait + config.drain_timeout + Duration::from_secs(1));
    let shutdown = super::signal_shutdown()?;
    let handle = berth_router::start(config, &shutdown)
        .await
        .context("cannot start the router")?;
    let mut addrs = vec![
        ("http", handle.http_addr()),
        ("status", handle.status_addr()),
    ];
    if let Some(https) = handle.https_addr() {
        addrs.push(("https", https));
    }
    super::run_until_shutdown("router", shutdown, &addrs, grace).await
}
