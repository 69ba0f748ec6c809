//! The `berth` binary: parses the command line and wires roles together. It holds no
//! logic of its own; every role lives in its crate and is started through its public API.
#![forbid(unsafe_code)]

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Berth runs microservices on your own machines: an orchestrator, a Nacos- and
/// Consul-compatible service registry, an HTTP router and live diagnostics, in one binary.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    global: cmd::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    // Roles.
    /// Every role in one process on the default loopback ports, plus a demo app.
    Dev(cmd::dev::Args),
    /// The control-plane server: desired state, reconciler, REST API, agent stream.
    Server(Box<cmd::server::Args>),
    /// Run the node agent: starts instances for the server, health-checks and registers them.
    Agent(Box<cmd::agent::Args>),
    /// Service registry: Nacos v1 and Consul HTTP APIs, UDP push, native gRPC watch.
    Registry(Box<cmd::registry::Args>),
    /// The HTTP entry: routes by host and path to instances (registry, NATS, cache).
    Router(Box<cmd::router::Args>),
    /// The diagnostics gateway: agents attach to it; `berth inspect` runs through it.
    Diag(Box<cmd::diag::Args>),

    // Client commands.
    /// Manage apps on a server: list, show, deploy, scale, restart, rm.
    #[command(subcommand)]
    Apps(cmd::apps::AppsCommand),
    /// Deployments: list, show, watch, rollback ID, rm ID [--force].
    Deployments(cmd::deployments::Args),
    /// List the nodes known to the server.
    Nodes,
    /// List instances known to the server.
    Instances(cmd::apps::InstancesArgs),
    /// Show an app's instance logs (stdout or stderr), optionally following them.
    Logs(cmd::logs::Args),
    /// Live diagnostics of an app's instances: grep, tail, ps, ports.
    Inspect(cmd::inspect::Args),
    /// Run a command inside a running instance: `exec APP[/INSTANCE] [--tty] -- ARGV...`.
    Exec(cmd::exec::Args),
    /// List services and their instances as the registry sees them.
    Services(cmd::services::Args),
    /// The registry's config center: get, put, rm, history, rollback, watch.
    Config(cmd::config::Args),
    /// Show the router's route table: every route with its endpoints and their state.
    Routes(cmd::routes::Args),
    /// ACLs of a server started with --acl: bootstrap, policies, tokens.
    #[command(subcommand)]
    Acl(cmd::acl::AclCommand),
    /// The server's audit trail (management tokens): who did or tried what, and how it ended.
    Audit(cmd::audit::Args),

    // Tools.
    /// Certificates for mutual TLS: `tls ca create`, `tls cert create --role R --name N`.
    #[command(subcommand)]
    Tls(cmd::tls::TlsCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(cmd::completions::Args),
    /// The demo web app deployed by `berth dev` (serves / and /healthz on $PORT).
    #[command(hide = true)]
    HelloApp(cmd::hello_app::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    berth_util::logging::init(cli.global.log_format, "info");
    // The router sizes its own runtime from its configuration (`workers`).
    let command = match cli.command {
        Command::Router(args) => return exit(cmd::router::main(*args)),
        other => other,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Dev(args) => cmd::dev::run(args).await,
            Command::Agent(args) => cmd::agent::run(*args).await,
            Command::Completions(args) => cmd::completions::run::<Cli>(args),
            Command::HelloApp(args) => cmd::hello_app::run(args).await,
            Command::Registry(args) => cmd::registry::run(*args).await,
            Command::Services(args) => cmd::services::run(args, cli.global.output).await,
            Command::Config(args) => cmd::config::run(args, &cli.global).await,
            Command::Routes(args) => cmd::routes::run(args, cli.global.output).await,
            Command::Router(args) => cmd::router::run(*args).await,
            Command::Server(args) => cmd::server::run(*args).await,
            Command::Apps(c) => cmd::apps::run(c, &cli.global).await,
            Command::Deployments(args) => cmd::deployments::run(args, &cli.global).await,
            Command::Nodes => cmd::apps::nodes(&cli.global).await,
            Command::Instances(args) => cmd::apps::instances(args, &cli.global).await,
            Command::Logs(args) => cmd::logs::run(args, &cli.global).await,
            Command::Inspect(args) => cmd::inspect::run(args, &cli.global).await,
            Command::Exec(args) => cmd::exec::main(args, &cli.global).await,
            Command::Diag(args) => cmd::diag::run(*args).await,
            Command::Acl(c) => cmd::acl::run(c, &cli.global).await,
            Command::Audit(args) => cmd::audit::run(args, &cli.global).await,
            Command::Tls(c) => cmd::tls::run(c),
        }
    });
    exit(result)
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
