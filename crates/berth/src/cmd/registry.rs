//! `berth registry`: the Nacos- and Consul-compatible service registry.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use super::{Flags, RoleArgs};

/// Every flag maps to a config key (file: `key`, env: `BERTH_REGISTRY_KEY`); flags win.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    role: RoleArgs,
    /// HTTP listener: Nacos v1 API, Consul API, /metrics [default: 127.0.0.1:8848].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// gRPC listener for the native watch stream [default: 127.0.0.1:9848].
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<SocketAddr>,
    /// Data folder: services and persistent instances survive restarts here (required).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Beat period clients are told to use [default: 5s].
    #[arg(long, value_name = "DURATION")]
    beat_interval: Option<String>,
    /// Silence after which an ephemeral instance is unhealthy [default: 15s].
    #[arg(long, value_name = "DURATION")]
    beat_timeout: Option<String>,
    /// Silence after which an ephemeral instance is removed [default: 30s].
    #[arg(long, value_name = "DURATION")]
    delete_timeout: Option<String>,
    /// How often beat deadlines are checked [default: 500ms].
    #[arg(long, value_name = "DURATION")]
    expiry_check_interval: Option<String>,
    /// Period of server-side TCP/HTTP checks of persistent instances [default: 5s].
    #[arg(long, value_name = "DURATION")]
    check_interval: Option<String>,
    /// Timeout of one server-side check [default: 2s].
    #[arg(long, value_name = "DURATION")]
    check_timeout: Option<String>,
    /// Wait for a UDP push ack before resending [default: 500ms].
    #[arg(long, value_name = "DURATION")]
    push_ack_timeout: Option<String>,
    /// Sends per change before a push subscriber is dropped [default: 3].
    #[arg(long, value_name = "N")]
    push_attempts: Option<u32>,
    /// Drop push subscribers that stop listing the service for this long [default: 30s].
    #[arg(long, value_name = "DURATION")]
    push_subscriber_ttl: Option<String>,
    /// File holding the auth secret (32+ bytes); required when a listener is off loopback.
    #[arg(long, value_name = "FILE")]
    auth_secret_file: Option<PathBuf>,
    /// Cluster members' gRPC addresses, comma-separated (this node may be listed).
    /// Without it the registry runs as a single node.
    #[arg(long, value_name = "ADDR,...")]
    peers: Option<String>,
    /// File holding the secret every member shares (32+ bytes); required with --peers.
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// A listener of its own for the peer links (mutual TLS with the --tls-* files);
    /// --peers then name the members' --cluster-listen addresses [default: none, they
    /// share --grpc-listen].
    #[arg(long, value_name = "HOST:PORT")]
    cluster_listen: Option<std::net::SocketAddr>,
    /// This member's id: the gRPC address the others list it by [default: the bound
    /// --cluster-listen or gRPC address].
    #[arg(long, value_name = "HOST:PORT")]
    cluster_advertise: Option<String>,
    /// Period of member heartbeats [default: 5s].
    #[arg(long, value_name = "DURATION")]
    cluster_heartbeat: Option<String>,
    /// Heartbeats missed in a row before a member is taken out [default: 3].
    #[arg(long, value_name = "N")]
    cluster_missed_beats: Option<u32>,
    /// Period of anti-entropy checksum rounds [default: 5s].
    #[arg(long, value_name = "DURATION")]
    cluster_sync_interval: Option<String>,
    /// Batching window of replication [default: 200ms].
    #[arg(long, value_name = "DURATION")]
    cluster_replicate_delay: Option<String>,
    /// Deadline of one peer call [default: 2s].
    #[arg(long, value_name = "DURATION")]
    cluster_rpc_timeout: Option<String>,
    /// Snapshot rounds before a member with no loaded peer declares itself loaded [default: 3].
    #[arg(long, value_name = "N")]
    cluster_startup_attempts: Option<u32>,
    /// Writes that may wait in all for owners that do not answer [default: 100000].
    #[arg(long, value_name = "N")]
    cluster_handoff_limit: Option<usize>,
    /// How long a closed Nacos 2.x connection's instances stay [default: 1s].
    #[arg(long, value_name = "DURATION")]
    grpc_release_grace: Option<String>,
    /// Silence before a Nacos 2.x connection's instance is removed once its member stops
    /// beating for it, so its client can reconnect elsewhere [default: 60s].
    #[arg(long, value_name = "DURATION")]
    grpc_orphan_timeout: Option<String>,
    /// Largest config content in bytes [default: 102400].
    #[arg(long, value_name = "BYTES")]
    config_max_content: Option<usize>,
    /// File holding the PostgreSQL URL of the config center's store, shared by every
    /// member of a cluster [default: none; a single node uses DATA_DIR/kv.sqlite3].
    #[arg(long, value_name = "FILE")]
    kv_postgres_url_file: Option<PathBuf>,
    /// Consul DNS interface, UDP and TCP on one address, or `off` [default: 127.0.0.1:8600].
    #[arg(long, value_name = "ADDR|off")]
    dns_listen: Option<String>,
    /// TTL of the DNS records served [default: 0s].
    #[arg(long, value_name = "DURATION")]
    dns_ttl: Option<String>,
    /// With --tls-cert-file (`berth tls cert create --role registry`) the HTTP listener
    /// serves HTTPS, and plain HTTP to loopback clients only; with --peers the peer links
    /// on --cluster-listen run over mutual TLS with the same certificate.
    #[command(flatten)]
    tls: super::TlsFileArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let flags = Flags::default()
        .set("listen", args.listen)
        .set("grpc_listen", args.grpc_listen)
        .set("data_dir", args.data_dir.map(|p| p.display().to_string()))
        .set("beat_interval", args.beat_interval)
        .set("beat_timeout", args.beat_timeout)
        .set("delete_timeout", args.delete_timeout)
        .set("expiry_check_interval", args.expiry_check_interval)
        .set("check_interval", args.check_interval)
        .set("check_timeout", args.check_timeout)
        .set("push_ack_timeout", args.push_ack_timeout)
        .set("push_attempts", args.push_attempts)
        .set("push_subscriber_ttl", args.push_subscriber_ttl)
        .set(
            "auth_secret_file",
            args.auth_secret_file.map(|p| p.display().to_string()),
        )
        .set("peers", args.peers)
        .set(
            "cluster_secret_file",
            args.cluster_secret_file.map(|p| p.display().to_string()),
        )
        .set("cluster_advertise", args.cluster_advertise)
        .set("cluster_listen", args.cluster_listen)
        .set("cluster_heartbeat", args.cluster_heartbeat)
        .set("cluster_missed_beats", args.cluster_missed_beats)
        .set("cluster_sync_interval", args.cluster_sync_interval)
        .set("cluster_replicate_delay", args.cluster_replicate_delay)
        .set("cluster_rpc_timeout", args.cluster_rpc_timeout)
        .set("cluster_startup_attempts", args.cluster_startup_attempts)
        .set("cluster_handoff_limit", args.cluster_handoff_limit)
        .set("grpc_release_grace", args.grpc_release_grace)
        .set("grpc_orphan_timeout", args.grpc_orphan_timeout)
        .set("config_max_content", args.config_max_content)
        .set(
            "kv_postgres_url_file",
            args.kv_postgres_url_file.map(|p| p.display().to_string()),
        )
        .set("dns_listen", args.dns_listen)
        .set("dns_ttl", args.dns_ttl)
        .set_tls(args.tls);
    let mut layers = super::layers("registry", args.role.config.as_deref(), flags)?;
    let config = berth_registry::RegistryConfig::from_layers(&mut layers)?;
    let shutdown = super::signal_shutdown()?;
    let handle = berth_registry::start(config, &shutdown)
        .await
        .context("cannot start the registry")?;
    let mut addrs = vec![("http", handle.http_addr()), ("grpc", handle.grpc_addr())];
    addrs.extend(handle.cluster_addr().map(|addr| ("cluster", addr)));
    addrs.extend(handle.dns_addr().map(|addr| ("dns", addr)));
    let result =
        super::run_until_shutdown("registry", shutdown, &addrs, args.role.shutdown_grace).await;
    drop(handle);
    result
}
