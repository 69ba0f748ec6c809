//! The agent's settings: one typed struct, from the config file, `BERTH_AGENT_*`
//! environment variables and flags (flags win).
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `server` | required | server agent-stream addresses, `host:port[,host:port...]`, tried in order |
//! | `registry` | none | the registry's gRPC address (CLI contract; kept for the native link) |
//! | `registry_http` | `127.0.0.1:8848` | the registry's Nacos HTTP API; `off` disables registration |
//! | `registry_secret` / `registry_secret_file` | none | the registry's auth secret, sent with every registration and beat when its auth is on |
//! | `data_dir` | required | instance records, working folders, logs, the node id |
//! | `node_id` | generated once, kept in `<data_dir>/node_id` | this node's id |
//! | `labels` | none | `k=v,k=v` node labels for placement constraints |
//! | `listen` | `127.0.0.1:7072` | status listener: `/health`, `/metrics`, `/v1/instances`, log intake |
//! | `advertise` | `127.0.0.1` | address instances are reached at (`HOST`, registry entries) |
//! | `port_range` | `20000-29999` | host ports handed to instances |
//! | `cpus`, `mem_mib`, `disk_mib` | from `/proc` and the data folder's file system | resources offered |
//! | `heartbeat` | `2s` | heartbeat period until the server's Welcome sets one |
//! | `connect_timeout` | `3s` | time to connect and receive the Welcome |
//! | `backoff_initial`, `backoff_max` | `200ms`, `10s` | reconnect backoff bounds |
//! | `keepalive` | `10s` | HTTP/2 ping period and timeout on the server link |
//! | `log_max_bytes`, `log_keep` | `10485760`, `3` | per-file log cap and rotated copies kept |
//! | `retention` | `10m` | how long finished instances stay reported and on disk |
//! | `stop_grace` | `10s` | grace of a stop resumed after an agent restart |
//! | `driver` | `process` | `process` (real programs) or `sim` (simulated instances, for tests and benchmarks) |
//! | `diag` | none | diagnostics gateway addresses `host:port[,host:port...]` (or one load-balanced address); the agent holds a stream to one of them |
//! | `diag_secret` / `diag_secret_file` | none | the gateways' shared secret |
//! | `tls_cert_file`, `tls_key_file`, `tls_ca_file` | none | mutual TLS to the server: this agent's certificate (`berth tls cert create --role agent --name NODE_ID`), its key, and the CA the server's certificate is verified against (as `server.berth`); all three or none |
//! | `tls_reload_interval` | 5s | how often the TLS files are checked for changes (SIGHUP reloads at once) |
//! | `docker_socket` | none | a Docker engine's Unix socket (e.g. `/var/run/docker.sock`): the node also offers the `docker` driver |

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_util::config::{ConfigError, FromConfigValue, Layers, Secret};

use crate::ports::PortRange;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub driver: DriverKind,
    /// A Docker engine to run image apps on; `None`: this node has no docker driver.
    pub docker_socket: Option<PathBuf>,
    /// Diagnostics gateways to attach to; empty: no live diagnostics on this node.
    pub diag: Vec<String>,
    pub diag_secret: Option<String>,
    pub servers: Vec<String>,
    pub registry: Option<String>,
    pub registry_http: Option<SocketAddr>,
    /// The registry's auth secret, when its auth is on.
    pub registry_secret: Option<Secret>,
    pub data_dir: PathBuf,
    pub node_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub listen: SocketAddr,
    pub advertise: IpAddr,
    pub port_range: PortRange,
    pub cpus: Option<f64>,
    pub mem_mib: Option<u64>,
    pub disk_mib: Option<u64>,
    pub heartbeat: Duration,
    pub connect_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub keepalive: Duration,
    pub log_max_bytes: u64,
    pub log_keep: usize,
    pub retention: Duration,
    pub stop_grace: Duration,
    /// How often log sizes are checked and old instances forgotten.
    pub housekeeping: Duration,
    /// How often a re-adopted process is checked for its end.
    pub exit_poll: Duration,
    pub registry_beat: Duration,
    pub registry_timeout: Duration,
    /// Mutual TLS to the server, all three or none (checked when the agent starts).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_reload_interval: Duration,
}

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7072);
pub const DEFAULT_REGISTRY_HTTP: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8848);

impl AgentConfig {
    /// Defaults for everything but the required settings.
    pub fn new(servers: Vec<String>, data_dir: &Path) -> Self {
        Self {
            driver: DriverKind::Process,
            docker_socket: None,
            diag: Vec::new(),
            diag_secret: None,
            servers,
            registry: None,
            registry_http: Some(DEFAULT_REGISTRY_HTTP),
            registry_secret: None,
            data_dir: data_dir.to_path_buf(),
            node_id: None,
            labels: BTreeMap::new(),
            listen: DEFAULT_LISTEN,
            advertise: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_range: PortRange::default(),
            cpus: None,
            mem_mib: None,
            disk_mib: None,
            heartbeat: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            keepalive: Duration::from_secs(10),
            log_max_bytes: 10 * 1024 * 1024,
            log_keep: 3,
            retention: Duration::from_secs(600),
            stop_grace: Duration::from_secs(10),
            housekeeping: Duration::from_secs(1),
            exit_poll: Duration::from_millis(500),
            registry_beat: crate::registry::BEAT_INTERVAL,
            registry_timeout: Duration::from_secs(2),
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            tls_reload_interval: berth_identity::DEFAULT_RELOAD_INTERVAL,
        }
    }

    /// For in-process tests: status listener on 127.0.0.1:0, no registry, fast timers.
    pub fn for_test(data_dir: &Path, servers: &[SocketAddr]) -> Self {
        let mut config = Self::new(servers.iter().map(|s| s.to_string()).collect(), data_dir);
        config.listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        config.registry_http = None;
        config.connect_timeout = Duration::from_secs(1);
        config.backoff_initial = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        config.keepalive = Duration::from_secs(2);
        config.housekeeping = Duration::from_millis(200);
        config.exit_poll = Duration::from_millis(50);
        config.stop_grace = Duration::from_secs(2);
        config
    }
}

impl AgentConfig {
    /// Reads every key of the table above from `layers`.
    pub fn from_layers(layers: &mut Layers<'_>) -> Result<Self, ConfigError> {
        let servers: Vec<String> = layers.require(
            "server",
            "give the server's agent address: --server 127.0.0.1:7071 (several: a,b)",
        )?;
        let data_dir: PathBuf = layers.require(
            "data_dir",
            "give a folder for instance records and logs: --data-dir /var/lib/berth/agent",
        )?;
        let mut config = Self::new(servers, &data_dir);
        let d = Self::new(Vec::new(), &data_dir);
        config.registry = layers.get("registry")?;
        config.registry_http = layers
            .get_or(
                "registry_http",
                berth_util::config::AddrOrOff(d.registry_http),
            )?
            .0;
        config.registry_secret = layers.secret("registry_secret")?.map(Secret::new);
        config.node_id = layers.get::<NodeId>("node_id")?.map(|id| id.0);
        config.labels = layers.get_or("labels", Labels::default())?.0;
        config.listen = layers.get_or("listen", d.listen)?;
        config.advertise = layers.get_or("advertise", Advertise(d.advertise))?.0;
        config.port_range = layers.get_or("port_range", d.port_range)?;
        config.cpus = layers.get("cpus")?;
        config.mem_mib = layers.get("mem_mib")?;
        config.disk_mib = layers.get("disk_mib")?;
        config.heartbeat = layers.get_or("heartbeat", d.heartbeat)?;
        config.connect_timeout = layers.get_or("connect_timeout", d.connect_timeout)?;
        config.backoff_initial = layers.get_or("backoff_initial", d.backoff_initial)?;
        config.backoff_max = layers.get_or("backoff_max", d.backoff_max)?;
        config.keepalive = layers.get_or("keepalive", d.keepalive)?;
        config.log_max_bytes = layers.get_or("log_max_bytes", d.log_max_bytes)?;
        config.log_keep = layers.get_or("log_keep", d.log_keep)?;
        config.retention = layers.get_or("retention", d.retention)?;
        config.stop_grace = layers.get_or("stop_grace", d.stop_grace)?;
        config.driver = layers.get_or("driver", d.driver)?;
        config.docker_socket = layers.get("docker_socket")?;
        config.diag = layers.get("diag")?.unwrap_or_default();
        config.diag_secret = layers.secret("diag_secret")?;
        config.tls_cert_file = layers.get("tls_cert_file")?;
        config.tls_key_file = layers.get("tls_key_file")?;
        config.tls_ca_file = layers.get("tls_ca_file")?;
        config.tls_reload_interval = layers.get_or("tls_reload_interval", d.tls_reload_interval)?;
        layers.finish()?;
        Ok(config)
    }
}

/// Which driver runs this node's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    Process,
    Sim,
}

impl FromConfigValue for DriverKind {
    fn expected() -> String {
        "`process` or `sim` (a node runs image apps when docker_socket names a Docker engine)"
            .into()
    }
    fn parse_value(raw: &str) -> Option<Self> {
        match raw.trim() {
            "process" => Some(Self::Process),
            "sim" => Some(Self::Sim),
            _ => None,
        }
    }
}

impl FromConfigValue for PortRange {
    fn expected() -> String {
        "a port range FIRST-LAST such as 20000-29999".into()
    }
    fn parse_value(raw: &str) -> Option<Self> {
        raw.parse().ok()
    }
}

#[derive(Debug, Default)]
struct Labels(BTreeMap<String, String>);

impl FromConfigValue for Labels {
    fn expected() -> String {
        "labels as k=v,k2=v2 (for example rack=r1,disk=ssd)".into()
    }
    fn parse_value(raw: &str) -> Option<Self> {
        let entries: Vec<String> = raw.split(',').map(str::to_string).collect();
        parse_labels(&entries).ok().map(Labels)
    }
}

struct Advertise(IpAddr);

impl FromConfigValue for Advertise {
    fn expected() -> String {
        "an IP address such as 127.0.0.1".into()
    }
    fn parse_value(raw: &str) -> Option<Self> {
        raw.trim().parse().ok().map(Self)
    }
}

struct NodeId(String);

impl FromConfigValue for NodeId {
    fn expected() -> String {
        "1-128 characters from a-z, A-Z, 0-9, '-', '_' and '.'".into()
    }
    fn parse_value(raw: &str) -> Option<Self> {
        validate_node_id(raw.trim()).ok()?;
        Some(Self(raw.trim().to_string()))
    }
}

/// Parses `k=v,k=v` (already split on commas) into labels; names the bad entry.
pub fn parse_labels(entries: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for entry in entries {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        match entry.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                labels.insert(key.trim().to_string(), value.trim().to_string());
            }
            _ => {
                return Err(format!(
                    "label {entry:?} is not key=value: write labels as k=v,k2=v2 (for example rack=r1,disk=ssd)"
                ));
            }
        }
    }
    Ok(labels)
}

/// A node id is used in folder names, metrics and instance env: keep it simple.
pub fn validate_node_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node id {id:?} is invalid: use 1-128 characters from a-z, A-Z, 0-9, '-', '_' and '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_util::config::MapSource;

    fn layers(flags: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
        let env = MapSource::new([("registry_http", "off")]);
        let flags = flags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut layers = Layers::new("agent", None, &env, flags)?;
        AgentConfig::from_layers(&mut layers)
    }

    #[test]
    fn layers_build_the_config_and_bad_values_name_the_key() {
        let config = layers(&[
            ("server", "127.0.0.1:7071,127.0.0.1:7073"),
            ("data_dir", "/tmp/x"),
            ("labels", "rack=r1,disk=ssd"),
            ("port_range", "30000-30010"),
            ("node_id", "n1"),
            ("heartbeat", "500ms"),
        ])
        .unwrap();
        assert_eq!(config.servers.len(), 2);
        assert_eq!(config.registry_http, None, "env says off");
        assert_eq!(config.labels["disk"], "ssd");
        assert_eq!(config.port_range.first, 30000);
        assert_eq!(config.node_id.as_deref(), Some("n1"));
        assert_eq!(config.heartbeat, Duration::from_millis(500));
        assert_eq!(config.listen, DEFAULT_LISTEN);

        let missing = layers(&[("data_dir", "/tmp/x")]).unwrap_err().to_string();
        assert!(missing.contains("server"), "{missing}");
        for (key, value) in [
            ("labels", "rack"),
            ("port_range", "9-1"),
            ("node_id", "a/b"),
            ("advertise", "localhost"),
            ("registry_http", "nowhere"),
            ("driver", "docker"),
        ] {
            let err = layers(&[("server", "s:1"), ("data_dir", "/tmp/x"), (key, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains("--"), "{key}: {err}");
        }
    }

    #[test]
    fn labels_parse_and_bad_ones_are_named() {
        let labels = parse_labels(&["rack=r1".into(), " disk = ssd ".into(), "".into()]).unwrap();
        assert_eq!(labels["rack"], "r1");
        assert_eq!(labels["disk"], "ssd");
        let err = parse_labels(&["rack".into()]).unwrap_err();
        assert!(err.contains("\"rack\"") && err.contains("k=v"), "{err}");
        assert!(parse_labels(&["=x".into()]).is_err());
    }

    #[test]
    fn node_ids_are_checked() {
        assert!(validate_node_id("node-1.rack_a").is_ok());
        assert!(validate_node_id("").is_err());
        assert!(validate_node_id("a/b").unwrap_err().contains("a/b"));
    }
}
