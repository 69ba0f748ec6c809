//! The gateway's settings: one typed struct from the config file, `BERTH_DIAG_*`
//! environment variables and flags (flags win).
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `listen` | `127.0.0.1:7080` | gRPC listener: agents attach, users run operations |
//! | `advertise` | the bound address | `host:port` agents and users reach this gateway at (registered in the registry) |
//! | `registry_http` | `127.0.0.1:8848` | the registry's Nacos HTTP API, where the gateway registers itself and the nodes it holds; `off` disables it |
//! | `registry_secret` / `registry_secret_file` | none | the registry's auth secret, sent with the gateway's registrations when its auth is on |
//! | `secret` / `secret_file` | none | token agents and users present; required (32+ bytes) when `listen` is not on loopback |
//! | `tls_cert_file`, `tls_key_file`, `tls_ca_file` | none | mutual TLS on `listen`: this gateway's certificate and key (`berth tls cert create --role diag`) and the CA agents' and servers' certificates must be signed by; all three or none, required when `listen` is not on loopback |
//! | `tls_reload_interval` | 5s | how often the TLS files are checked for changes (SIGHUP reloads at once) |
//! | `window` | `16` | chunks an agent may send per operation before it waits for credit |

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use berth_identity::{TlsError, TlsFiles};

use berth_util::config::{ConfigError, Layers, Secret};

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7080);
pub const DEFAULT_REGISTRY_HTTP: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8848);
/// Least length of the secret when the listener is off loopback.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone)]
pub struct DiagConfig {
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub registry_http: Option<SocketAddr>,
    pub registry_secret: Option<Secret>,
    pub secret: Option<String>,
    pub window: u32,
    /// Mutual TLS on the listener, all three or none (see [`DiagConfig::tls`]).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_reload_interval: Duration,
}

impl Default for DiagConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            advertise: None,
            registry_http: Some(DEFAULT_REGISTRY_HTTP),
            registry_secret: None,
            secret: None,
            window: 16,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            tls_reload_interval: berth_identity::DEFAULT_RELOAD_INTERVAL,
        }
    }
}

impl DiagConfig {
    pub fn from_layers(layers: &mut Layers) -> Result<Self, ConfigError> {
        let d = Self::default();
        let config = Self {
            listen: layers.get_or("listen", d.listen)?,
            advertise: layers.get("advertise")?,
            registry_http: layers
                .get::<berth_util::config::AddrOrOff>("registry_http")?
                .map_or(d.registry_http, |r| r.0),
            registry_secret: layers.secret("registry_secret")?.map(Secret::new),
            secret: layers.secret("secret")?,
            window: layers.get_or("window", d.window)?,
            tls_cert_file: layers.get("tls_cert_file")?,
            tls_key_file: layers.get("tls_key_file")?,
            tls_ca_file: layers.get("tls_ca_file")?,
            tls_reload_interval: layers.get_or("tls_reload_interval", d.tls_reload_interval)?,
        };
        layers.finish()?;
        config.check()
    }

    /// The rules no single key can express.
    pub fn check(self) -> Result<Self, ConfigError> {
        let invalid = |key: &str, value: String, expected: &str| ConfigError::Invalid {
            key: key.into(),
            value,
            origin: berth_util::config::Origin::Default,
            expected: expected.into(),
        };
        if !(1..=1024).contains(&self.window) {
            return Err(invalid(
                "window",
                self.window.to_string(),
                "a number of chunks from 1 to 1024",
            ));
        }
        let open = !self.listen.ip().is_loopback();
        let no_tls = [&self.tls_cert_file, &self.tls_key_file, &self.tls_ca_file]
            .iter()
            .all(|f| f.is_none());
        match &self.secret {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => Err(invalid(
                "secret",
                format!("({} bytes)", secret.len()),
                "a secret of at least 32 bytes (e.g. `openssl rand -hex 32 > diag.secret`, then secret_file)",
            )),
            // Both at once: the operator learns everything the listener needs in one go.
            None if open && no_tls => Err(invalid(
                "secret",
                "(none)".into(),
                &format!("a secret (--secret-file FILE, secret_file) and {TLS_NEEDED}"),
            )),
            None if open => Err(invalid(
                "secret",
                "(none)".into(),
                "a secret (--secret-file FILE, secret_file) whenever listen is not on loopback: anyone reaching the gateway could read every node's logs",
            )),
            _ if open && no_tls => Err(invalid("tls_cert_file", "(none)".into(), TLS_NEEDED)),
            _ => Ok(self),
        }
    }
}

/// Why an open listener needs the TLS files, and how to give them.
const TLS_NEEDED: &str = "the TLS files whenever listen is not on loopback, so only agents and servers with a certificate of the cluster's CA get in: --tls-cert-file, --tls-key-file and --tls-ca-file (tls_cert_file, tls_key_file, tls_ca_file; make them with `berth tls ca create` and `berth tls cert create --role diag`)";

impl DiagConfig {
    /// The TLS files of the listener: all three, or none (an error names the missing).
    pub fn tls(&self) -> Result<Option<TlsFiles>, TlsError> {
        TlsFiles::from_options(
            self.tls_cert_file.clone(),
            self.tls_key_file.clone(),
            self.tls_ca_file.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_util::config::MapSource;

    fn layers(flags: &[(&str, &str)]) -> Result<DiagConfig, ConfigError> {
        let env = MapSource::new(Vec::<(String, String)>::new());
        let flags = flags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut layers = Layers::new("diag", None, &env, flags)?;
        DiagConfig::from_layers(&mut layers)
    }

    #[test]
    fn defaults_are_loopback_without_a_secret() {
        let config = layers(&[]).unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN);
        assert_eq!(config.registry_http, Some(DEFAULT_REGISTRY_HTTP));
        assert_eq!(config.window, 16);
        assert_eq!(
            layers(&[("registry_http", "off")]).unwrap().registry_http,
            None
        );
    }

    #[test]
    fn an_open_listener_needs_a_long_secret() {
        let err = layers(&[("listen", "0.0.0.0:7080")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("secret"), "{err}");
        let err = layers(&[("listen", "0.0.0.0:7080"), ("secret", "short")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("32 bytes"), "{err}");
        let long = "x".repeat(32);
        let err = layers(&[("listen", "0.0.0.0:7080"), ("secret", &long)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--tls-cert-file") && err.contains("--role diag"),
            "an open listener needs the TLS files too: {err}"
        );
        let tls = [
            ("tls_cert_file", "/pki/diag.pem"),
            ("tls_key_file", "/pki/diag-key.pem"),
            ("tls_ca_file", "/pki/ca.pem"),
        ];
        let mut open = vec![("listen", "0.0.0.0:7080"), ("secret", long.as_str())];
        open.extend(tls);
        assert!(layers(&open).unwrap().tls().unwrap().is_some());
        let err = layers(&[("listen", "0.0.0.0:7080")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret_file") && err.contains("--tls-key-file"),
            "{err}"
        );
        let partial = layers(&[("tls_cert_file", "/pki/diag.pem")]).unwrap();
        let err = partial.tls().unwrap_err().to_string();
        assert!(
            err.contains("--tls-key-file") && err.contains("--tls-ca-file"),
            "{err}"
        );
        let err = layers(&[("window", "0")]).unwrap_err().to_string();
        assert!(err.contains("window"), "{err}");
    }
}
