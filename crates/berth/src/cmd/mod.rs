//! One module per subcommand. Role commands only translate flags into the role's config,
//! start it, announce readiness and wait for shutdown (see [`run_until_shutdown`]).

pub mod acl;
pub mod agent;
pub mod apps;
pub mod audit;
pub mod auth;
pub mod ca_cert;
pub mod completions;
pub mod config;
pub mod deployments;
pub mod dev;
pub mod diag;
pub mod exec;
pub mod hello_app;
pub mod inspect;
pub mod logs;
pub mod registry;
pub mod router;
pub mod routes;
pub mod server;
pub mod services;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use berth_util::config::{EnvSource, Layers};
use berth_util::logging::LogFormat;
use berth_util::shutdown::Shutdown;

/// Options every subcommand accepts.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Log format on stderr: `human` or `json`. Filter with BERTH_LOG (e.g. `debug`).
    #[arg(long, global = true, env = "BERTH_LOG_FORMAT", default_value = "human")]
    pub log_format: LogFormat,
    /// Server API that client commands talk to.
    #[arg(
        long,
        global = true,
        env = "BERTH_SERVER_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server_url: String,
    /// Output of client commands: `table` for people, `json` for scripts.
    #[arg(short = 'o', long, global = true, default_value = "table")]
    pub output: OutputFormat,
    /// ACL token of client commands, sent as `Authorization: Bearer` (when the server runs
    /// with --acl). Also BERTH_TOKEN; prefer --token-file or BERTH_TOKEN_FILE, which keep
    /// the secret out of the process list and the shell history.
    #[arg(long, global = true, value_name = "SECRET")]
    pub token: Option<auth::SecretArg>,
    /// File holding the ACL token (only its owner may read it: `chmod 600`). Also
    /// BERTH_TOKEN_FILE. First found wins: --token, --token-file, BERTH_TOKEN,
    /// BERTH_TOKEN_FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) an `https://` server URL is verified against: the cluster's
    /// ca.pem from `berth tls ca create`. Given, it is the only CA trusted.
    #[arg(long, global = true, env = "BERTH_CACERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl GlobalArgs {
    /// The token client commands send, read from the flags and the real environment.
    pub fn token(&self) -> Result<Option<auth::Token>, auth::TokenError> {
        auth::resolve(
            self.token.as_ref().map(auth::SecretArg::as_str),
            self.token_file.as_deref(),
            |name| std::env::var(name).ok(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// Options of every role subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct RoleArgs {
    /// TOML file with this role's settings (keys as the long flags, with `_` for `-`).
    /// Precedence: flags, then BERTH_<ROLE>_<KEY> environment variables, then this file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How long in-flight work may take to finish after SIGTERM/SIGINT.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    <Duration as berth_util::config::FromConfigValue>::parse_value(text)
        .ok_or_else(|| format!("{text:?} is not a duration: use a unit, such as 250ms, 5s or 2m"))
}

/// Command-line values the user actually passed, keyed like the config file.
#[derive(Debug, Default)]
pub struct Flags(Vec<(String, String)>);

impl Flags {
    pub fn set(mut self, key: &str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.0.push((key.to_string(), value.to_string()));
        }
        self
    }

    /// A list flag (`--peers a,b`) stored as the comma-separated form the config parses.
    pub fn set_list<T: ToString>(self, key: &str, values: &[T]) -> Self {
        let joined = (!values.is_empty()).then(|| {
            values
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        });
        self.set(key, joined)
    }
}

/// The three files of mutual TLS on a role's link (`berth tls`), the same flags on every
/// role that has one: all three or none (the role's config says which are missing).
#[derive(clap::Args, Debug, Default)]
pub struct TlsFileArgs {
    /// This role's certificate for mutual TLS (`berth tls cert create --role ROLE`); with
    /// --tls-key-file and --tls-ca-file the peer must present a certificate signed by the
    /// same CA.
    #[arg(long, value_name = "FILE")]
    tls_cert_file: Option<std::path::PathBuf>,
    /// The key of --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    tls_key_file: Option<std::path::PathBuf>,
    /// The CA the peer's certificate must be signed by (`berth tls ca create`'s ca.pem).
    #[arg(long, value_name = "FILE")]
    tls_ca_file: Option<std::path::PathBuf>,
    /// How often the three files are checked for changes; a change (or SIGHUP) reloads
    /// them for new connections without a restart [default: 5s].
    #[arg(long, value_name = "DURATION")]
    tls_reload_interval: Option<String>,
}

impl Flags {
    /// The TLS flags as the config keys `tls_cert_file`, `tls_key_file`, `tls_ca_file`,
    /// `tls_reload_interval`.
    pub fn set_tls(self, tls: TlsFileArgs) -> Self {
        let path = |p: Option<std::path::PathBuf>| p.map(|p| p.display().to_string());
        self.set("tls_cert_file", path(tls.tls_cert_file))
            .set("tls_key_file", path(tls.tls_key_file))
            .set("tls_ca_file", path(tls.tls_ca_file))
            .set("tls_reload_interval", tls.tls_reload_interval)
    }
}

/// The three configuration layers of `role` from the real environment.
pub fn layers(role: &str, file: Option<&Path>, flags: Flags) -> anyhow::Result<Layers<'static>> {
    // The env source lives as long as the process; leaking one small struct is simpler
    // than threading a lifetime through every role command.
    let env: &'static EnvSource = Box::leak(Box::new(EnvSource::for_role(role)));
    Ok(Layers::new(role, file, env, flags.0)?)
}

/// Prints the ready line, waits for SIGTERM/SIGINT (or an internal trigger), then drains.
pub async fn run_until_shutdown(
    role: &str,
    shutdown: Shutdown,
    addrs: &[(&str, SocketAddr)],
    grace: Duration,
) -> anyhow::Result<()> {
    berth_util::ready::announce(role, addrs);
    shutdown.cancelled().await;
    shutdown
        .drain(grace)
        .await
        .with_context(|| format!("berth {role} did not stop cleanly"))?;
    tracing::info!("berth {role} stopped");
    Ok(())
}

/// A fresh shutdown wired to SIGTERM and SIGINT.
pub fn signal_shutdown() -> anyhow::Result<Shutdown> {
    let shutdown = Shutdown::new();
    shutdown
        .listen_for_signals()
        .context("cannot install the SIGTERM/SIGINT handlers")?;
    Ok(shutdown)
}
