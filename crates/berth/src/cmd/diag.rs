//! `berth diag`: the diagnostics gateway. Agents attach to it (`berth agent --diag`);
//! the server relays `berth inspect` operations through it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use super::{Flags, RoleArgs};

/// Every flag maps to a config key (file: `key`, env: `BERTH_DIAG_KEY`); flags win.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    role: RoleArgs,
    /// gRPC listener: agents attach, the server runs operations [default: 127.0.0.1:7080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// HOST:PORT this gateway is reached at, as registered [default: the bound address].
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// The registry's Nacos HTTP API, or `off` [default: 127.0.0.1:8848].
    #[arg(long, value_name = "ADDR|off")]
    registry_http: Option<String>,
    /// File holding the registry's auth secret (its --auth-secret-file), sent with the
    /// gateway's registrations; needed when the registry's auth is on.
    #[arg(long, value_name = "FILE")]
    registry_secret_file: Option<PathBuf>,
    /// File holding the secret agents and the server present (32+ bytes); required when
    /// --listen is not on loopback.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    #[command(flatten)]
    tls: super::TlsFileArgs,
    /// Chunks an agent may send per operation before it waits for credit [default: 16].
    #[arg(long, value_name = "N")]
    window: Option<u32>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let flags = Flags::default()
        .set("listen", args.listen)
        .set("advertise", args.advertise)
        .set("registry_http", args.registry_http)
        .set(
            "registry_secret_file",
            args.registry_secret_file.map(|p| p.display().to_string()),
        )
        .set(
            "secret_file",
            args.secret_file.map(|p| p.display().to_string()),
        )
        .set("window", args.window)
        .set_tls(args.tls);
    let mut layers = super::layers("diag", args.role.config.as_deref(), flags)?;
    let config = berth_diag::DiagConfig::from_layers(&mut layers)?;
    let shutdown = super::signal_shutdown()?;
    let handle = berth_diag::start(config, shutdown.token())
        .await
        .context("cannot start the diagnostics gateway")?;
    super::run_until_shutdown(
        "diag",
        shutdown,
        &[("grpc", handle.addr())],
        args.role.shutdown_grace,
    )
    .await
}
