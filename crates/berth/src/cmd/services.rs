//! `berth services list|show`: what the registry knows, read from its watch stream.

use std::net::SocketAddr;

use anyhow::Context;
use berth_registry_client::watch::{WireService as Service, list_json, service_json};

use super::OutputFormat;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The registry's gRPC address.
    #[arg(
        long,
        value_name = "ADDR",
        env = "BERTH_REGISTRY",
        default_value = "127.0.0.1:9848"
    )]
    registry: SocketAddr,
    /// Namespace to read [default: public].
    #[arg(long, default_value = "")]
    namespace: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Every service with its instance counts.
    List,
    /// One service's instances (`name` or `group@@name`).
    Show { name: String },
}

pub async fn run(args: Args, output: OutputFormat) -> anyhow::Result<()> {
    let token = std::env::var("BERTH_REGISTRY_TOKEN").ok();
    let (revision, services) =
        berth_registry_client::watch::snapshot(args.registry, &args.namespace, token.as_deref())
            .await
            .context("cannot list services")?;
    match args.action {
        Action::List => print_list(revision, &services, output),
        Action::Show { name } => {
            let (group, name) = name
                .split_once("@@")
                .map(|(g, n)| (g.to_string(), n.to_string()))
                .unwrap_or_else(|| ("DEFAULT_GROUP".to_string(), name.clone()));
            let service = services
                .iter()
                .find(|s| s.group == group && s.name == name)
                .with_context(|| {
                    format!("no service {group}@@{name}; `berth services list` shows what exists")
                })?;
            print_service(service, output)
        }
    }
}

fn print_list(revision: u64, services: &[Service], output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        println!("{}", list_json(revision, services));
        return Ok(());
    }
    println!(
        "{:<20} {:<40} {:>9} {:>7}",
        "GROUP", "SERVICE", "INSTANCES", "HEALTHY"
    );
    for s in services {
        let healthy = s.instances.iter().filter(|i| i.healthy).count();
        println!(
            "{:<20} {:<40} {:>9} {:>7}",
            s.group,
            s.name,
            s.instances.len(),
            healthy
        );
    }
    Ok(())
}

fn print_service(s: &Service, output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        println!("{}", service_json(s));
        return Ok(());
    }
    println!("{}@@{} (revision {})", s.group, s.name, s.revision);
    println!(
        "{:<22} {:>6} {:<10} {:>7} {:<8} {:<8} METADATA",
        "IP", "PORT", "CLUSTER", "WEIGHT", "HEALTHY", "ENABLED"
    );
    for i in &s.instances {
        let mut meta: Vec<_> = i.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
        meta.sort();
        println!(
            "{:<22} {:>6} {:<10} {:>7} {:<8} {:<8} {}",
            i.ip,
            i.port,
            i.cluster,
            i.weight,
            i.healthy,
            i.enabled,
            meta.join(",")
        );
    }
    Ok(())
}
