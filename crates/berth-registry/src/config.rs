//! The registry role's one typed configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_util::config::{ConfigError, Layers};

use crate::model::BeatTimings;

/// Least length of the auth secret when a listener is off loopback.
pub const MIN_SECRET: usize = 32;

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
}

fn ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

impl RegistryConfig {
    pub fn from_layers(layers: &mut Layers<'_>) -> Result<Self, ConfigError> {
        let beat_interval: Duration = layers.get_or("beat_interval", Duration::from_secs(5))?;
        let beat_timeout: Duration = layers.get_or("beat_timeout", Duration::from_secs(15))?;
        let delete_timeout: Duration = layers.get_or("delete_timeout", Duration::from_secs(30))?;
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
        }
    }

    /// True when every listener is on loopback, the only case auth may be off.
    pub fn loopback_only(&self) -> bool {
        self.listen.ip().is_loopback() && self.grpc_listen.ip().is_loopback()
    }
}
