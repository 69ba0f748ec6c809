//! `berth hello-app`: the demo web app `berth dev` deploys. It is a real HTTP service (not
//! a canned response in the router) so the demo shows the whole path: scheduled by the
//! server, started by an agent, registered once healthy, reached through the router.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::routing::get;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve on; the agent assigns the port in $PORT.
    #[arg(long, env = "PORT", value_parser = parse_port)]
    port: u16,
    /// Interface to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a port number (1-65535)"))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let instance = std::env::var("BERTH_INSTANCE_ID").unwrap_or_else(|_| "local".into());
    let version = std::env::var("BERTH_APP_VERSION").unwrap_or_else(|_| "unversioned".into());
    let greeting = format!("Hello from Berth! instance {instance}, version {version}\n");
    let app = Router::new()
        .route("/", get(move || async move { greeting }))
        .route("/healthz", get(|| async { "ok\n" }));
    let addr = SocketAddr::new(args.host, args.port);
    let listener = berth_util::net::bind_tcp(addr, "--port").await?;
    let shutdown = super::signal_shutdown()?;
    berth_util::http::serve(listener, app, &shutdown, std::time::Duration::from_secs(5));
    super::run_until_shutdown(
        "hello-app",
        shutdown,
        &[("http", addr)],
        std::time::Duration::from_secs(5),
    )
    .await
    .context("demo app")
}
