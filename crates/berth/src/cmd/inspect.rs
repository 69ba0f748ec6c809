//! `berth inspect OP APP`: live diagnostics of an app's instances (grep and tail of their
//! logs, their processes, their listening ports), run by the agents through the
//! diagnostics gateways and relayed by the server.

use std::io::Write;

use anyhow::{Context, bail};

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    op: Op,
}

#[derive(Debug, clap::Subcommand)]
enum Op {
    /// Lines of the app's logs (current and rotated files) matching a regular expression.
    Grep {
        app: String,
        pattern: String,
        #[command(flatten)]
        target: Target,
        /// `stdout` or `stderr`; both by default.
        #[arg(long, value_parser = ["stdout", "stderr"])]
        stream: Option<String>,
        /// Stop after this many matches per node [default: 1000].
        #[arg(long)]
        max_matches: Option<u32>,
        #[arg(short = 'i', long)]
        ignore_case: bool,
    },
    /// The last lines of the logs; with --follow (one instance), what they append.
    Tail {
        app: String,
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value = "stdout", value_parser = ["stdout", "stderr"])]
        stream: String,
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: u32,
        #[arg(short, long)]
        follow: bool,
    },
    /// The processes of each instance (its process and every descendant).
    Ps {
        app: String,
        #[command(flatten)]
        target: Target,
    },
    /// The TCP ports each instance's processes listen on.
    Ports {
        app: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, clap::Args)]
struct Target {
    /// Only this instance (see `berth instances --app APP`).
    #[arg(long)]
    instance: Option<String>,
    /// Only the instances on this node.
    #[arg(long)]
    node: Option<String>,
}

pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let (name, app, target, mut query) = match args.op {
        Op::Grep {
            app,
            pattern,
            target,
            stream,
            max_matches,
            ignore_case,
        } => {
            let mut q = vec![
                ("pattern", pattern),
                ("ignore_case", ignore_case.to_string()),
            ];
            q.extend(stream.map(|s| ("stream", s)));
            q.extend(max_matches.map(|n| ("max_matches", n.to_string())));
            ("grep", app, target, q)
        }
        Op::Tail {
            app,
            target,
            stream,
            lines,
            follow,
        } => (
            "tail",
            app,
            target,
            vec![
                ("stream", stream),
                ("lines", lines.to_string()),
                ("follow", follow.to_string()),
            ],
        ),
        Op::Ps { app, target } => ("ps", app, target, vec![]),
        Op::Ports { app, target } => ("ports", app, target, vec![]),
    };
    query.push(("app", app));
    query.extend(target.instance.map(|i| ("instance", i)));
    query.extend(target.node.map(|n| ("node", n)));
    let client = super::apps::Client::new(global)?;
    let request = client
        .request(reqwest::Method::GET, &format!("/v1/diag/{name}"))
        .query(&query);
    let response = client.send(request).await?;
    let mut response = response;
    let mut stdout = std::io::stdout();
    let mut failed = false;
    while let Some(chunk) = response.chunk().await.context("the stream broke")? {
        failed |= chunk
            .split(|b| *b == b'\n')
            .any(|line| line.starts_with(b"[node ") && line.windows(7).any(|w| w == b"error: "));
        stdout.write_all(&chunk)?;
        stdout.flush()?;
    }
    if failed {
        bail!("some nodes could not answer (see the error lines above)");
    }
    Ok(())
}
