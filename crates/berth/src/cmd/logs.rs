//! `berth logs APP`: an app's instance logs, read through the server from the agents.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app whose instances' logs are shown, each line prefixed with its instance.
    app: String,
    /// Only this instance (see `berth instances --app APP`); lines are not prefixed.
    #[arg(long)]
    instance: Option<String>,
    /// Which output of the program: `stdout` or `stderr`.
    #[arg(long, default_value = "stdout", value_parser = ["stdout", "stderr"])]
    stream: String,
    /// How many of the last lines of each instance to show first (1 to 10000).
    #[arg(short = 'n', long, default_value_t = 100)]
    lines: usize,
    /// Keep printing what the instances write until they stop or Ctrl-C.
    #[arg(short, long)]
    follow: bool,
}

pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = super::apps::Client::new(global)?;
    let mut query = vec![
        ("app", args.app.clone()),
        ("stream", args.stream.clone()),
        ("lines", args.lines.to_string()),
        ("follow", args.follow.to_string()),
    ];
    if let Some(instance) = &args.instance {
        query.push(("instance", instance.clone()));
    }
    let mut request = client
        .request(reqwest::Method::GET, "/v1/logs")
        .query(&query);
    if !args.follow {
        request = request.timeout(Duration::from_secs(30));
    }
    let response = client.send(request).await?;
    let mut response = response;
    let mut stdout = std::io::stdout();
    while let Some(chunk) = response.chunk().await.context("the log stream broke")? {
        stdout.write_all(&chunk)?;
        stdout.flush()?;
    }
    Ok(())
}
