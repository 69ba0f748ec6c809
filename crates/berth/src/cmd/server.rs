//! `berth server`: the control plane (desired state, reconciler, REST API, agent stream).

use std::net::SocketAddr;
use std::path::PathBuf;

use berth_server::ServerConfig;

/// Every flag is also a key of the `--config` TOML file (`_` for `-`) and an environment
/// variable `BERTH_SERVER_<KEY>`. Durations take a unit: 250ms, 5s, 2m.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    role: super::RoleArgs,
    /// REST API, events and metrics [default: 127.0.0.1:7070].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// gRPC stream agents connect to [default: 127.0.0.1:7071].
    #[arg(long, value_name = "ADDR")]
    agent_listen: Option<SocketAddr>,
    /// The registry's gRPC address, reported in /v1/info.
    #[arg(long, value_name = "ADDR")]
    registry: Option<String>,
    /// Folder of the SQLite store (server.db) [default: berth-data/server].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Interval agents are told to send heartbeats at [default: 2s].
    #[arg(long, value_name = "DURATION")]
    heartbeat_interval: Option<String>,
    /// Silence after which a node is lost and its instances are replaced [default: 10s].
    #[arg(long, value_name = "DURATION")]
    node_ttl: Option<String>,
    /// Wait after start before the reconciler acts, so agents can report [default: 6s].
    #[arg(long, value_name = "DURATION")]
    startup_grace: Option<String>,
    /// Periodic reconciliation; it also runs on every change [default: 3s].
    #[arg(long, value_name = "DURATION")]
    reconcile_interval: Option<String>,
    /// A start not reported by its agent within this time is given up [default: 60s].
    #[arg(long, value_name = "DURATION")]
    launch_timeout: Option<String>,
    /// Time an agent has to send its Hello [default: 10s].
    #[arg(long, value_name = "DURATION")]
    hello_timeout: Option<String>,
    /// Time between deregistration and SIGTERM, sent with stops [default: 2s].
    #[arg(long, value_name = "DURATION")]
    stop_drain: Option<String>,
    /// Time between SIGTERM and SIGKILL, sent with stops [default: 10s].
    #[arg(long, value_name = "DURATION")]
    stop_grace: Option<String>,
    /// Deadline of a deployment whose change does not set one (`timeout=`); past it the
    /// deployment fails and rolls back [default: 5m].
    #[arg(long, value_name = "DURATION")]
    deployment_timeout: Option<String>,
    /// File holding a PostgreSQL URL (`postgres://USER:PASS@HOST:PORT/DB`): keep desired
    /// state there instead of SQLite in --data-dir (several servers can share it). Or set
    /// BERTH_SERVER_POSTGRES_URL [default: none, SQLite].
    #[arg(long, value_name = "FILE")]
    postgres_url_file: Option<PathBuf>,
    /// Time to live of the leader lease in the store, renewed every third of it; with
    /// several servers on one PostgreSQL database, a dead leader is replaced within it
    /// [default: 6s].
    #[arg(long, value_name = "DURATION")]
    leader_lease: Option<String>,
    /// This server's API URL, where the others redirect clients while it leads
    /// [default: http://<bound --listen address>].
    #[arg(long, value_name = "URL")]
    advertise_url: Option<String>,
    /// This server's agent stream address, as the others name it to agents
    /// [default: the bound --agent-listen address].
    #[arg(long, value_name = "ADDR")]
    advertise_agent: Option<String>,
    /// The registry's Nacos HTTP API, where diagnostics gateways are looked up, or `off`
    /// [default: 127.0.0.1:8848].
    #[arg(long, value_name = "ADDR|off")]
    registry_http: Option<String>,
    /// File holding the registry's auth secret (its --auth-secret-file), sent with gateway
    /// look-ups; needed when the registry's auth is on.
    #[arg(long, value_name = "FILE")]
    registry_secret_file: Option<std::path::PathBuf>,
    /// File holding the diagnostics gateways' secret.
    #[arg(long, value_name = "FILE")]
    diag_secret_file: Option<std::path::PathBuf>,
    /// Require an ACL token on every API request (bootstrap the first with `berth acl
    /// bootstrap`); required when a listener is off loopback. Or BERTH_SERVER_ACL=true.
    #[arg(long)]
    acl: bool,
    /// How long the audit trail keeps entries (the leader prunes older ones): 90d, 720h,
    /// or 0 to keep them forever [default: 90d].
    #[arg(long, value_name = "DURATION|0")]
    audit_retention: Option<String>,
    #[command(flatten)]
    tls: super::TlsFileArgs,
    /// Largest accepted request body in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    max_body_bytes: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let flags = super::Flags::default()
        .set("listen", args.listen)
        .set("agent_listen", args.agent_listen)
        .set("registry", args.registry)
        .set("data_dir", args.data_dir.map(|p| p.display().to_string()))
        .set(
            "postgres_url_file",
            args.postgres_url_file.map(|p| p.display().to_string()),
        )
        .set("heartbeat_interval", args.heartbeat_interval)
        .set("node_ttl", args.node_ttl)
        .set("startup_grace", args.startup_grace)
        .set("reconcile_interval", args.reconcile_interval)
        .set("launch_timeout", args.launch_timeout)
        .set("hello_timeout", args.hello_timeout)
        .set("stop_drain", args.stop_drain)
        .set("stop_grace", args.stop_grace)
        .set("deployment_timeout", args.deployment_timeout)
        .set("max_body_bytes", args.max_body_bytes)
        .set("acl", args.acl.then_some(true))
        .set("audit_retention", args.audit_retention)
        .set_tls(args.tls)
        .set("leader_lease", args.leader_lease)
        .set("advertise_url", args.advertise_url)
        .set("advertise_agent", args.advertise_agent)
        .set("registry_http", args.registry_http)
        .set(
            "registry_secret_file",
            args.registry_secret_file.map(|p| p.display().to_string()),
        )
        .set(
            "diag_secret_file",
            args.diag_secret_file.map(|p| p.display().to_string()),
        )
        .set(
            "shutdown_grace",
            Some(format!("{}ms", args.role.shutdown_grace.as_millis())),
        );
    let mut layers = super::layers("server", args.role.config.as_deref(), flags)?;
    let config = ServerConfig::from_layers(&mut layers)?;
    let shutdown = super::signal_shutdown()?;
    let handle = berth_server::start(config, &shutdown).await?;
    super::run_until_shutdown(
        "server",
        shutdown,
        &[("http", handle.http_addr()), ("grpc", handle.agent_addr())],
        args.role.shutdown_grace,
    )
    .await
}
