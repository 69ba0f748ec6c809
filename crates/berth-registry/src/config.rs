//! The registry role's one typed configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_util::config::{AddrOrOff, ConfigError, FromConfigValue, Layers};

use crate::model::BeatTimings;

/// Least length of the auth secret when a listener is off loopback.
pub const MIN_SECRET: usize = 32;

/// Where the Consul DNS interface listens unless told otherwise (Consul's own port).
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:8600";

/// Settings of `berth registry`. Keys (TOML file, `BERTH_REGISTRY_<KEY>`, `--<key>` flags):
///
/// - `listen` (127.0.0.1:8848): HTTP listener for the Nacos and Consul APIs and `/metrics`.
/// - `grpc_listen` (127.0.0.1:9848): native watch stream.
/// - `data_dir` (required): services and persistent instances are stored here.
/// - `beat_interval` (5s), `beat_timeout` (15s), `delete_timeout` (30s): ephemeral
///   instances' beat period, silence before unhealthy, silence before removal.
/// - `expiry_check_interval` (500ms): how often beat deadlines are checked.
/// - `check_interval` (5s), `check_timeout` (2s): server-side checks of persistent instances.
/// - `push_ack_timeout` (500ms), `push_attempts` (3), `push_subscriber_ttl` (30s): UDP push.
/// - `auth_secret` / `auth_secret_file`: token clients must present; required (at least
///   32 bytes) when any listener is not on loopback.
/// - `peers` (none): gRPC addresses of the cluster's members (this node may be listed);
///   empty runs a single node with no cluster machinery at all.
/// - `cluster_secret` / `cluster_secret_file`: shared by every member, 32+ bytes;
///   required with `peers`.
/// - `cluster_advertise` (the bound gRPC address, or `cluster_listen`'s): this member's
///   id, the address the others list it by.
/// - `cluster_listen` (none): a listener of its own for the peer links; without it they
///   share `grpc_listen`. `peers` then name the members' `cluster_listen` addresses.
/// - `cluster_heartbeat` (5s), `cluster_missed_beats` (3): a member silent for that
///   many heartbeats leaves the healthy list and its keys move.
/// - `cluster_sync_interval` (5s): anti-entropy period.
/// - `cluster_replicate_delay` (200ms): batching window of replication.
/// - `cluster_rpc_timeout` (2s): deadline of one peer call.
/// - `cluster_startup_attempts` (3): snapshot rounds before a member with no loaded
///   peer may declare itself loaded.
/// - `cluster_handoff_limit` (100000): writes that may wait in all for owners that do
///   not answer; past it such writes are refused (503) until the queues drain.
/// - `grpc_release_grace` (1s): how long the instances of a closed Nacos 2.x connection
///   stay before they are removed (a client that reconnects at once does not flap).
/// - `grpc_orphan_timeout` (60s): silence before an instance a Nacos 2.x connection
///   held is removed once its member stops beating for it (member lost, connection
///   moved): time for the client to reconnect elsewhere and register again.
/// - `config_max_content` (102400): the largest config content in bytes.
/// - `kv_postgres_url` / `kv_postgres_url_file` (none): the PostgreSQL database the
///   config center (and Consul KV) keep their data in, shared by every member of a
///   cluster; without it a single node keeps it in `data_dir/kv.sqlite3`, and a cluster
///   answers config requests with an error naming this setting.
/// - `tls_cert_file`, `tls_key_file`, `tls_ca_file` (none): this registry's certificate
///   (`berth tls cert create --role registry`), its key and the cluster CA; all three or
///   none. With them the HTTP listener serves HTTPS (and plain HTTP to loopback clients),
///   and with `peers` the peer links run over mutual TLS on `cluster_listen` (needed
///   then), on every peer client too; required when the peer links listen off loopback.
/// - `tls_reload_interval` (5s): how often those files are checked for changes (SIGHUP
///   reloads them at once).
/// - `dns_listen` (127.0.0.1:8600): the Consul DNS interface, UDP and TCP on one address;
///   `off` opens neither. DNS has no auth: off loopback it only counts toward the rule
///   that auth must be on for the HTTP and gRPC APIs.
/// - `dns_ttl` (0s): the TTL of every DNS record served.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub beat: BeatTimings,
    pub expiry_check_interval: Duration,
    pub check_interval: Duration,
    pub check_timeout: Duration,
    pub push_ack_timeout: Duration,
    pub push_attempts: u32,
    pub push_subscriber_ttl: Duration,
    pub auth_secret: Option<String>,
    /// How long in-flight HTTP requests may finish after shutdown.
    pub http_grace: Duration,
    pub cluster: ClusterConfig,
    /// Checked as a set by [`RegistryConfig::tls`].
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_reload_interval: Duration,
    pub grpc_release_grace: Duration,
    pub config_max_content: usize,
    /// A secret: it may carry the database password.
    pub kv_postgres_url: Option<String>,
    /// The DNS listener (UDP and TCP); `None`: off.
    pub dns_listen: Option<SocketAddr>,
    pub dns_ttl: Duration,
}

/// The cluster keys (all unused when `peers` is empty).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub peers: Vec<String>,
    /// The peer links' own listener; `None`: they share the gRPC listener.
    pub listen: Option<SocketAddr>,
    pub secret: Option<String>,
    pub advertise: Option<String>,
    pub heartbeat: Duration,
    pub missed_beats: u32,
    pub sync_interval: Duration,
    pub replicate_delay: Duration,
    pub rpc_timeout: Duration,
    pub startup_attempts: u32,
    pub handoff_limit: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            listen: None,
            secret: None,
            advertise: None,
            heartbeat: Duration::from_secs(5),
            missed_beats: 3,
            sync_interval: Duration::from_secs(5),
            replicate_delay: Duration::from_millis(200),
            rpc_timeout: Duration::from_secs(2),
            startup_attempts: 3,
            handoff_limit: 100_000,
        }
    }
}

/// A member's gRPC address, `host:port` with a non-zero port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr(pub String);

impl FromConfigValue for PeerAddr {
    fn expected() -> String {
        "host:port with a non-zero port (a member's gRPC address)".into()
    }
    fn parse_value(raw: &str) -> Option<Self> {
        let (host, port) = raw.rsplit_once(':')?;
        (!host.is_empty() && port.parse::<u16>().ok()? > 0).then(|| Self(raw.to_string()))
    }
}

impl ClusterConfig {
    fn from_layers(layers: &mut Layers<'_>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let peers: Vec<PeerAddr> = layers.get_or("peers", Vec::new())?;
        let peers: Vec<String> = peers.into_iter().map(|p| p.0).collect();
        let advertise = layers.get::<PeerAddr>("cluster_advertise")?.map(|a| a.0);
        let c = Self {
            peers,
            listen: layers.get("cluster_listen")?,
            secret: layers.secret("cluster_secret")?,
            advertise,
            heartbeat: layers.get_or("cluster_heartbeat", d.heartbeat)?,
            missed_beats: layers.get_or("cluster_missed_beats", d.missed_beats)?,
            sync_interval: layers.get_or("cluster_sync_interval", d.sync_interval)?,
            replicate_delay: layers.get_or("cluster_replicate_delay", d.replicate_delay)?,
            rpc_timeout: layers.get_or("cluster_rpc_timeout", d.rpc_timeout)?,
            startup_attempts: layers.get_or("cluster_startup_attempts", d.startup_attempts)?,
            handoff_limit: layers.get_or("cluster_handoff_limit", d.handoff_limit)?,
        };
        Ok(c)
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

impl RegistryConfig {
    pub fn from_layers(layers: &mut Layers<'_>) -> Result<Self, ConfigError> {
        let beat_interval: Duration = layers.get_or("beat_interval", Duration::from_secs(5))?;
        let beat_timeout: Duration = layers.get_or("beat_timeout", Duration::from_secs(15))?;
        let delete_timeout: Duration = layers.get_or("delete_timeout", Duration::from_secs(30))?;
        let grpc_orphan_timeout: Duration =
            layers.get_or("grpc_orphan_timeout", Duration::from_secs(60))?;
        let config = Self {
            listen: layers.get_or("listen", "127.0.0.1:8848".parse().expect("valid default"))?,
            grpc_listen: layers.get_or(
                "grpc_listen",
                "127.0.0.1:9848".parse().expect("valid default"),
            )?,
            data_dir: layers.require(
                "data_dir",
                "pass --data-dir DIR (services and persistent instances are kept there)",
            )?,
            beat: BeatTimings {
                interval_ms: ms(beat_interval),
                unhealthy_after_ms: ms(beat_timeout),
                delete_after_ms: ms(delete_timeout),
                held_delete_after_ms: ms(grpc_orphan_timeout),
            },
            expiry_check_interval: layers
                .get_or("expiry_check_interval", Duration::from_millis(500))?,
            check_interval: layers.get_or("check_interval", Duration::from_secs(5))?,
            check_timeout: layers.get_or("check_timeout", Duration::from_secs(2))?,
            push_ack_timeout: layers.get_or("push_ack_timeout", Duration::from_millis(500))?,
            push_attempts: layers.get_or("push_attempts", 3u32)?,
            push_subscriber_ttl: layers.get_or("push_subscriber_ttl", Duration::from_secs(30))?,
            auth_secret: layers.secret("auth_secret")?,
            http_grace: Duration::from_secs(5),
            cluster: ClusterConfig::from_layers(layers)?,
            tls_cert_file: layers.get("tls_cert_file")?,
            tls_key_file: layers.get("tls_key_file")?,
            tls_ca_file: layers.get("tls_ca_file")?,
            tls_reload_interval: layers.get_or(
                "tls_reload_interval",
                berth_identity::DEFAULT_RELOAD_INTERVAL,
            )?,
            grpc_release_grace: layers.get_or("grpc_release_grace", Duration::from_secs(1))?,
            config_max_content: layers.get_or(
                "config_max_content",
                crate::config_center::DEFAULT_MAX_CONTENT,
            )?,
            kv_postgres_url: layers.secret("kv_postgres_url")?,
            dns_listen: layers
                .get_or(
                    "dns_listen",
                    AddrOrOff(Some(DEFAULT_DNS_LISTEN.parse().expect("valid default"))),
                )?
                .0,
            dns_ttl: layers.get_or("dns_ttl", Duration::ZERO)?,
        };
        layers.finish()?;
        Ok(config)
    }

    /// Loopback on ephemeral ports, fast timings, data in `data_dir`.
    pub fn for_test(data_dir: &Path) -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("valid"),
            grpc_listen: "127.0.0.1:0".parse().expect("valid"),
            data_dir: data_dir.to_path_buf(),
            beat: BeatTimings::default(),
            expiry_check_interval: Duration::from_millis(100),
            check_interval: Duration::from_millis(200),
            check_timeout: Duration::from_millis(500),
            push_ack_timeout: Duration::from_millis(300),
            push_attempts: 3,
            push_subscriber_ttl: Duration::from_secs(30),
            auth_secret: None,
            http_grace: Duration::from_secs(1),
            cluster: ClusterConfig::default(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            tls_reload_interval: berth_identity::DEFAULT_RELOAD_INTERVAL,
            grpc_release_grace: Duration::from_millis(200),
            config_max_content: crate::config_center::DEFAULT_MAX_CONTENT,
            kv_postgres_url: None,
            dns_listen: None,
            dns_ttl: Duration::ZERO,
        }
    }

    /// The TLS files, all three or none.
    pub fn tls(&self) -> Result<Option<berth_identity::TlsFiles>, berth_identity::TlsError> {
        berth_identity::TlsFiles::from_options(
            self.tls_cert_file.clone(),
            self.tls_key_file.clone(),
            self.tls_ca_file.clone(),
        )
    }

    /// True when every listener is on loopback, the only case auth may be off.
    pub fn loopback_only(&self) -> bool {
        self.listen.ip().is_loopback()
            && self.grpc_listen.ip().is_loopback()
            && self.dns_listen.is_none_or(|a| a.ip().is_loopback())
    }
}

#[cfg(test)]
mod tests {
    use berth_util::config::MapSource;

    use super::*;

    fn parse(toml: &str) -> Result<RegistryConfig, ConfigError> {
        let env = MapSource::new(Vec::<(String, String)>::new());
        let text = format!("data_dir = \"/tmp/berth-registry-config-test\"\n{toml}");
        let mut layers = Layers::from_toml_str("registry", &text, &env)?;
        RegistryConfig::from_layers(&mut layers)
    }

    #[test]
    fn dns_listen_defaults_to_consuls_port_and_can_be_off() {
        let c = parse("").unwrap();
        assert_eq!(c.dns_listen, Some("127.0.0.1:8600".parse().unwrap()));
        assert_eq!(c.dns_ttl, Duration::ZERO);
        assert!(c.loopback_only());
        let c = parse("dns_listen = \"off\"\ndns_ttl = \"30s\"").unwrap();
        assert_eq!(c.dns_listen, None);
        assert_eq!(c.dns_ttl, Duration::from_secs(30));
        let c = parse("dns_listen = \"0.0.0.0:53\"").unwrap();
        assert!(!c.loopback_only(), "a DNS listener off loopback counts");
        let err = parse("dns_listen = \"nowhere\"").unwrap_err().to_string();
        assert!(err.contains("dns_listen"), "{err}");
    }
}
