//! The agent's settings: one typed struct, from the config file, `BERTH_AGENT_*`
//! environment variables and flags (flags win).
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `server` | required | server agent-stream addresses, `host:port[,host:port...]`, tried in order |
//! | `registry` | none | the registry's gRPC address (CLI contract; kept for the native link) |
//! | `registry_http` | `127.0.0.1:8848` | the registry's Nacos HTTP API; `off` disables registration |
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

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ports::PortRange;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub servers: Vec<String>,
    pub registry: Option<String>,
    pub registry_http: Option<SocketAddr>,
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
}

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7072);
pub const DEFAULT_REGISTRY_HTTP: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8848);

impl AgentConfig {
    /// Defaults for everything but the required settings.
    pub fn new(servers: Vec<String>, data_dir: &Path) -> Self {
        Self {
            servers,
            registry: None,
            registry_http: Some(DEFAULT_REGISTRY_HTTP),
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
