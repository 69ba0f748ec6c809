//! `berth agent`: the node agent. Runs instances the server asks for (process driver, and
//! the docker driver when `--docker-socket` names an engine),
//! health-checks them, registers healthy ones in the registry, reports to the server.
//! Stopping the agent leaves its instances running; the next agent on the same data
//! folder re-adopts them.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use berth_agent::AgentConfig;

use super::{Flags, RoleArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    role: RoleArgs,
    /// Server agent-stream addresses, tried in order (failover): HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "ADDR[,ADDR...]", value_delimiter = ',')]
    server: Vec<String>,
    /// The registry's gRPC address.
    #[arg(long, value_name = "ADDR")]
    registry: Option<String>,
    /// The registry's Nacos HTTP API, where healthy instances are registered; `off`
    /// disables registration. [default: 127.0.0.1:8848]
    #[arg(long, value_name = "ADDR")]
    registry_http: Option<String>,
    /// File holding the registry's auth secret (its --auth-secret-file), sent with every
    /// registration and beat; needed when the registry's auth is on.
    #[arg(long, value_name = "FILE")]
    registry_secret_file: Option<PathBuf>,
    /// Instance records, working folders and logs; also keeps the generated node id.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// This node's id. [default: generated once, kept in DATA_DIR/node_id]
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Node labels for placement constraints: k=v,k2=v2.
    #[arg(long, value_name = "K=V,...")]
    labels: Option<String>,
    /// Status listener: /health, /metrics, /v1/instances, log intake. [default: 127.0.0.1:7072]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address instances are reached at (HOST, registry entries). [default: 127.0.0.1]
    #[arg(long, value_name = "IP")]
    advertise: Option<String>,
    /// Host ports handed to instances. [default: 20000-29999]
    #[arg(long, value_name = "FIRST-LAST")]
    port_range: Option<String>,
    /// CPUs offered to the server. [default: CPUs of this machine]
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory offered, in MiB. [default: MemTotal from /proc/meminfo]
    #[arg(long, value_name = "MIB")]
    mem_mib: Option<u64>,
    /// Disk offered, in MiB. [default: free space of the data folder's file system]
    #[arg(long, value_name = "MIB")]
    disk_mib: Option<u64>,
    /// Heartbeat period until the server's Welcome sets one. [default: 2s]
    #[arg(long, value_name = "DURATION")]
    heartbeat: Option<String>,
    /// Time to connect to a server and get its Welcome. [default: 3s]
    #[arg(long, value_name = "DURATION")]
    connect_timeout: Option<String>,
    /// First reconnect delay (doubles per failure, with jitter). [default: 200ms]
    #[arg(long, value_name = "DURATION")]
    backoff_initial: Option<String>,
    /// Longest reconnect delay. [default: 10s]
    #[arg(long, value_name = "DURATION")]
    backoff_max: Option<String>,
    /// HTTP/2 keep-alive period and timeout on the server link. [default: 10s]
    #[arg(long, value_name = "DURATION")]
    keepalive: Option<String>,
    /// Size cap of each instance log file before rotation. [default: 10485760]
    #[arg(long, value_name = "BYTES")]
    log_max_bytes: Option<u64>,
    /// Rotated copies kept per log file. [default: 3]
    #[arg(long, value_name = "N")]
    log_keep: Option<usize>,
    /// How long finished instances stay reported and on disk. [default: 10m]
    #[arg(long, value_name = "DURATION")]
    retention: Option<String>,
    /// `process` runs real programs; `sim` simulates instances in the agent (an HTTP
    /// answer on PORT, no process), for tests and benchmarks. [default: process]
    #[arg(long, value_name = "DRIVER")]
    driver: Option<String>,
    /// A Docker engine's Unix socket (e.g. /var/run/docker.sock): the node also runs
    /// image apps, as containers on the host network. [default: none]
    #[arg(long, value_name = "PATH")]
    docker_socket: Option<PathBuf>,
    /// Diagnostics gateways to attach to (one is picked at random; the agent holds a
    /// stream to it and re-dials another after a random delay when it breaks).
    #[arg(long, value_name = "ADDR[,ADDR...]", value_delimiter = ',')]
    diag: Vec<String>,
    /// File holding the diagnostics gateways' secret.
    #[arg(long, value_name = "FILE")]
    diag_secret_file: Option<PathBuf>,
    #[command(flatten)]
    tls: super::TlsFileArgs,
    /// Grace of a stop resumed after an agent restart. [default: 10s]
    #[arg(long, value_name = "DURATION")]
    stop_grace: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let flags = Flags::default()
        .set_list("server", &args.server)
        .set("registry", args.registry)
        .set("registry_http", args.registry_http)
        .set(
            "registry_secret_file",
            args.registry_secret_file.map(|p| p.display().to_string()),
        )
        .set("data_dir", args.data_dir.map(|p| p.display().to_string()))
        .set("node_id", args.node_id)
        .set("labels", args.labels)
        .set("listen", args.listen)
        .set("advertise", args.advertise)
        .set("port_range", args.port_range)
        .set("cpus", args.cpus)
        .set("mem_mib", args.mem_mib)
        .set("disk_mib", args.disk_mib)
        .set("heartbeat", args.heartbeat)
        .set("connect_timeout", args.connect_timeout)
        .set("backoff_initial", args.backoff_initial)
        .set("backoff_max", args.backoff_max)
        .set("keepalive", args.keepalive)
        .set("log_max_bytes", args.log_max_bytes)
        .set("log_keep", args.log_keep)
        .set("retention", args.retention)
        .set("stop_grace", args.stop_grace)
        .set_tls(args.tls)
        .set("driver", args.driver)
        .set_list("diag", &args.diag)
        .set(
            "diag_secret_file",
            args.diag_secret_file.map(|p| p.display().to_string()),
        )
        .set(
            "docker_socket",
            args.docker_socket.map(|p| p.display().to_string()),
        );
    let mut layers = super::layers("agent", args.role.config.as_deref(), flags)?;
    let config = AgentConfig::from_layers(&mut layers)?;
    let shutdown = super::signal_shutdown()?;
    let agent = berth_agent::start(config, &shutdown)
        .await
        .context("cannot start the agent")?;
    super::run_until_shutdown(
        "agent",
        shutdown,
        &[("http", agent.http_addr())],
        args.role.shutdown_grace,
    )
    .await
}
