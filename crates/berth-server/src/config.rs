//! The server's one typed configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_util::config::{ConfigError, FromConfigValue, Layers};

/// Every key, as it appears in the TOML file, as `BERTH_SERVER_<KEY>` and as a flag:
///
/// | key | default | meaning |
/// |---|---|---|
/// | `listen` | 127.0.0.1:7070 | REST API, events, metrics |
/// | `agent_listen` | 127.0.0.1:7071 | gRPC stream agents connect to |
/// | `registry` | none | registry gRPC address (shown in /v1/info) |
/// | `data_dir` | ./berth-data/server | SQLite store and lock |
/// | `postgres_url` (or `postgres_url_file`) | none | keep desired state in PostgreSQL instead of SQLite: `postgres://USER:PASS@HOST:PORT/DB` or `host=... user=... dbname=...` |
/// | `heartbeat_interval` | 2s | interval agents are told to beat at |
/// | `node_ttl` | 10s | silence after which a node is lost and its instances replaced |
/// | `startup_grace` | 6s | wait after start before acting, so agents can report |
/// | `reconcile_interval` | 3s | periodic reconciliation (it also runs on every change) |
/// | `launch_timeout` | 60s | a start not reported by then is given up |
/// | `hello_timeout` | 10s | time an agent has to send its Hello |
/// | `stop_drain` | 2s | deregistered-to-SIGTERM time sent with stops |
/// | `stop_grace` | 10s | SIGTERM-to-SIGKILL time sent with stops |
/// | `deployment_timeout` | 5m | a deployment not done by then fails (and rolls back) |
/// | `max_body_bytes` | 1048576 | largest accepted request body |
/// | `shutdown_grace` | 5s | time open HTTP connections get on shutdown |
/// | `leader_lease` | 6s | leader lease time to live in the store (renewed every third); a dead leader is replaced after at most this |
/// | `advertise_url` | `http://<listen>` (`https://` with the TLS files) | this server's API URL as other servers redirect to it when it leads |
/// | `advertise_agent` | `<agent_listen>` | this server's agent stream address, as shown to others |
/// | `registry_http` | 127.0.0.1:8848 | the registry's Nacos HTTP API, where diagnostics gateways are looked up (`off`: no live diagnostics) |
/// | `registry_secret` (or `registry_secret_file`) | none | the registry's auth secret, sent with gateway look-ups when its auth is on |
/// | `diag_secret` (or `diag_secret_file`) | none | the diagnostics gateways' shared secret |
/// | `audit_retention` | 90d | how long audit entries are kept (the leader prunes older ones); `0` keeps them forever |
/// | `acl` | false | require a token on every API request (see docs/SECURITY.md); required when a listener is off loopback |
/// | `tls_cert_file`, `tls_key_file`, `tls_ca_file` | none | mutual TLS on the agent stream and HTTPS on `listen`: this server's certificate and key (`berth tls cert create --role server`) and the CA agents' certificates must be signed by; all three or none, required when `agent_listen` is off loopback |
/// | `tls_reload_interval` | 5s | how often the TLS files are checked for changes (SIGHUP reloads at once) |
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub agent_listen: SocketAddr,
    pub registry: Option<String>,
    pub data_dir: PathBuf,
    /// PostgreSQL instead of the SQLite file in `data_dir`.
    pub postgres_url: Option<berth_util::config::Secret>,
    pub heartbeat_interval: Duration,
    pub node_ttl: Duration,
    pub startup_grace: Duration,
    pub reconcile_interval: Duration,
    pub launch_timeout: Duration,
    pub hello_timeout: Duration,
    pub stop_drain: Duration,
    pub stop_grace: Duration,
    pub deployment_timeout: Duration,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub leader_lease: Duration,
    /// Defaults to the bound API address.
    pub advertise_url: Option<String>,
    /// Defaults to the bound agent stream address.
    pub advertise_agent: Option<String>,
    /// Where the diagnostics gateway of a node is looked up.
    pub registry_http: Option<SocketAddr>,
    /// The registry's auth secret, when its auth is on.
    pub registry_secret: Option<berth_util::config::Secret>,
    pub diag_secret: Option<berth_util::config::Secret>,
    /// Tokens and policies guard the API.
    pub acl: bool,
    /// How long audit entries are kept; `None`: forever.
    pub audit_retention: Option<Duration>,
    /// Mutual TLS on the agent stream (checked as a set by [`ServerConfig::agent_tls`]).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_reload_interval: Duration,
}

/// `audit_retention`: a duration, or `0` for keeping entries forever.
struct Retention(Option<Duration>);

impl FromConfigValue for Retention {
    fn expected() -> String {
        "a duration such as 90d, 720h or 30d, or 0 to keep audit entries forever".into()
    }
    fn parse_value(raw: &str) -> Option<Self> {
        if raw.trim() == "0" {
            return Some(Retention(None));
        }
        match Duration::parse_value(raw) {
            Some(d) if !d.is_zero() => Some(Retention(Some(d))),
            _ => None,
        }
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
pub const DEFAULT_AGENT_LISTEN: &str = "127.0.0.1:7071";

impl ServerConfig {
    pub fn from_layers(layers: &mut Layers<'_>) -> Result<Self, ConfigError> {
        let d = Self::defaults(Path::new("berth-data/server"));
        let config = ServerConfig {
            listen: layers.get_or("listen", d.listen)?,
            agent_listen: layers.get_or("agent_listen", d.agent_listen)?,
            registry: layers.get("registry")?,
            data_dir: layers.get_or("data_dir", d.data_dir)?,
            postgres_url: layers
                .secret("postgres_url")?
                .map(berth_util::config::Secret::new),
            heartbeat_interval: layers.get_or("heartbeat_interval", d.heartbeat_interval)?,
            node_ttl: layers.get_or("node_ttl", d.node_ttl)?,
            startup_grace: layers.get_or("startup_grace", d.startup_grace)?,
            reconcile_interval: layers.get_or("reconcile_interval", d.reconcile_interval)?,
            launch_timeout: layers.get_or("launch_timeout", d.launch_timeout)?,
            hello_timeout: layers.get_or("hello_timeout", d.hello_timeout)?,
            stop_drain: layers.get_or("stop_drain", d.stop_drain)?,
            stop_grace: layers.get_or("stop_grace", d.stop_grace)?,
            deployment_timeout: layers.get_or("deployment_timeout", d.deployment_timeout)?,
            max_body_bytes: layers.get_or("max_body_bytes", d.max_body_bytes)?,
            shutdown_grace: layers.get_or("shutdown_grace", d.shutdown_grace)?,
            leader_lease: layers.get_or("leader_lease", d.leader_lease)?,
            advertise_url: layers.get("advertise_url")?,
            advertise_agent: layers.get("advertise_agent")?,
            registry_http: layers
                .get::<berth_util::config::AddrOrOff>("registry_http")?
                .map_or(d.registry_http, |r| r.0),
            registry_secret: layers
                .secret("registry_secret")?
                .map(berth_util::config::Secret::new),
            diag_secret: layers
                .secret("diag_secret")?
                .map(berth_util::config::Secret::new),
            acl: layers.get_or("acl", d.acl)?,
            audit_retention: layers
                .get_or("audit_retention", Retention(d.audit_retention))?
                .0,
            tls_cert_file: layers.get("tls_cert_file")?,
            tls_key_file: layers.get("tls_key_file")?,
            tls_ca_file: layers.get("tls_ca_file")?,
            tls_reload_interval: layers.get_or("tls_reload_interval", d.tls_reload_interval)?,
        };
        layers.finish()?;
        Ok(config)
    }

    fn defaults(data_dir: &Path) -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            agent_listen: DEFAULT_AGENT_LISTEN.parse().expect("valid default"),
            registry: None,
            data_dir: data_dir.to_path_buf(),
            postgres_url: None,
            heartbeat_interval: Duration::from_secs(2),
            node_ttl: Duration::from_secs(10),
            startup_grace: Duration::from_secs(6),
            reconcile_interval: Duration::from_secs(3),
            launch_timeout: Duration::from_secs(60),
            hello_timeout: Duration::from_secs(10),
            stop_drain: Duration::from_secs(2),
            stop_grace: Duration::from_secs(10),
            deployment_timeout: Duration::from_secs(300),
            max_body_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(5),
            leader_lease: Duration::from_secs(6),
            advertise_url: None,
            advertise_agent: None,
            registry_http: Some(SocketAddr::from(([127, 0, 0, 1], 8848))),
            registry_secret: None,
            diag_secret: None,
            acl: false,
            audit_retention: Some(Duration::from_secs(90 * 24 * 3600)),
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            tls_reload_interval: berth_identity::DEFAULT_RELOAD_INTERVAL,
        }
    }

    /// The agent stream's TLS files, all three or none; and the rule that an agent
    /// listener off loopback needs them: without a certificate anyone who reaches the
    /// port could join as any node.
    pub fn agent_tls(&self) -> Result<Option<berth_identity::TlsFiles>, crate::Error> {
        let files = berth_identity::TlsFiles::from_options(
            self.tls_cert_file.clone(),
            self.tls_key_file.clone(),
            self.tls_ca_file.clone(),
        )?;
        if files.is_none() && !self.agent_listen.ip().is_loopback() {
            return Err(crate::Error::Refused(format!(
                "the server's agent stream listens on {}, off loopback, without TLS: anyone reaching it could join as any node; set --tls-cert-file, --tls-key-file and --tls-ca-file (tls_cert_file, tls_key_file, tls_ca_file; make them with `berth tls ca create` and `berth tls cert create --role server`), or listen on 127.0.0.1",
                self.agent_listen
            )));
        }
        Ok(files)
    }

    /// Why this configuration must not start: a listener off loopback without ACLs.
    pub fn refusal(&self) -> Option<String> {
        if self.acl {
            return None;
        }
        if !self.listen.ip().is_loopback() {
            return Some(format!(
                "the server's API listens on {}, off loopback, without ACLs: set acl = true (--acl) and bootstrap a token (`berth acl bootstrap`), or listen on 127.0.0.1",
                self.listen
            ));
        }
        if !self.agent_listen.ip().is_loopback() {
            return Some(format!(
                "the server's agent stream listens on {}, off loopback, without ACLs: set acl = true (--acl) and bootstrap a token (`berth acl bootstrap`), or listen on 127.0.0.1",
                self.agent_listen
            ));
        }
        None
    }

    /// Loopback on ephemeral ports with short timings, for tests.
    pub fn for_test(data_dir: &Path) -> Self {
        ServerConfig {
            listen: "127.0.0.1:0".parse().expect("valid"),
            agent_listen: "127.0.0.1:0".parse().expect("valid"),
            heartbeat_interval: Duration::from_millis(100),
            node_ttl: Duration::from_millis(800),
            startup_grace: Duration::from_millis(200),
            reconcile_interval: Duration::from_millis(200),
            launch_timeout: Duration::from_secs(5),
            hello_timeout: Duration::from_secs(2),
            stop_drain: Duration::from_millis(10),
            stop_grace: Duration::from_millis(100),
            shutdown_grace: Duration::from_millis(500),
            leader_lease: Duration::from_secs(1),
            ..Self::defaults(data_dir)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_retention_is_a_duration_or_zero_for_forever() {
        assert_eq!(
            Retention::parse_value("30d").map(|r| r.0),
            Some(Some(Duration::from_secs(30 * 24 * 3600)))
        );
        assert_eq!(Retention::parse_value("0").map(|r| r.0), Some(None));
        assert!(
            Retention::parse_value("0s").is_none(),
            "0 alone means forever"
        );
        assert!(Retention::parse_value("90").is_none(), "a unit is needed");
        assert!(Retention::parse_value("soon").is_none());
        assert_eq!(
            ServerConfig::defaults(Path::new("x")).audit_retention,
            Some(Duration::from_secs(90 * 24 * 3600))
        );
    }
}
