//! `berth exec APP[/INSTANCE] -- ARGV...`: a command inside a running instance, over a
//! WebSocket to the server (`GET /v1/exec/APP`), which relays it through the node's
//! diagnostics gateway. The words after `--` are the argument vector as typed: no shell
//! runs unless the user names one. With `--tty` the command gets a terminal; when this
//! end is a terminal too it is put in raw mode (restored on the way out) and its size
//! follows SIGWINCH. The command's exit code becomes ours.

use std::io::Write;
use std::os::fd::AsFd;

use anyhow::{Context, bail};
use berth_core::exec::{ClientFrame, ExecRequest, ServerFrame, Stream, Wire};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app (one running instance is picked, named on stderr) or APP/INSTANCE.
    #[arg(value_name = "APP[/INSTANCE]")]
    target: String,
    /// Give the command a terminal (stdout and stderr then arrive as one stream).
    #[arg(short, long)]
    tty: bool,
    /// A variable added to the instance's environment, KEY=VALUE (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "ARGV")]
    argv: Vec<String>,
}

/// `APP/INSTANCE` or `APP`: instance ids always hold a character app ids cannot (a `.`,
/// capitals or `_`), so the last segment is an instance exactly when it has one.
pub fn split_target(target: &str) -> (String, Option<String>) {
    if let Some((app, last)) = target.rsplit_once('/') {
        let app_segment = last
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !app_segment && !app.is_empty() {
            return (app.to_string(), Some(last.to_string()));
        }
    }
    (target.to_string(), None)
}

fn parse_env(pairs: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut env = std::collections::BTreeMap::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--env {pair:?} is not KEY=VALUE: write it as e.g. --env DEBUG=1");
        };
        env.insert(key.to_string(), value.to_string());
    }
    Ok(env)
}

/// Runs the command and exits with its code (the process exits here: a read of our stdin
/// may still be blocked in its thread).
pub async fn main(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let code = run(args, global).await?;
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<i32> {
    let (app, instance) = split_target(&args.target);
    let terminal = args.tty && is_terminal(&std::io::stdin());
    let (rows, cols) = if args.tty { window_size() } else { (0, 0) };
    let request = ExecRequest {
        argv: args.argv,
        tty: args.tty,
        rows,
        cols,
        env: parse_env(&args.env)?,
    };
    if let Err(err) = request.validate() {
        bail!("{err}");
    }
    let socket = connect(global, &app, instance.as_deref()).await?;
    let (mut tx, mut rx) = socket.split();
    tx.send(to_message(request.encode()))
        .await
        .context("the server closed the exec socket")?;
    // The raw mode lasts as long as this guard, whatever way we leave.
    let _raw = if terminal { RawMode::enter() } else { None };
    let (frames, mut outgoing) = mpsc::channel::<ClientFrame>(4);
    // Held until the end: the socket stays open after our stdin ends.
    let open = frames.clone();
    let stdin_task = tokio::spawn(pump_stdin(frames.clone()));
    let resize_task = args.tty.then(|| tokio::spawn(pump_resizes(frames)));
    let mut sender = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if tx.send(to_message(frame.encode())).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Message::Close(None)).await;
        let _ = tx.close().await;
    });
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let result = loop {
        let message = match rx.next().await {
            Some(Ok(message)) => message,
            Some(Err(err)) => break Err(anyhow::anyhow!("the exec socket broke: {err}")),
            None => {
                break Err(anyhow::anyhow!(
                    "the server closed the exec socket without an exit status"
                ));
            }
        };
        let wire = match message {
            Message::Text(text) => Wire::Text(text.as_str().to_string()),
            Message::Binary(bytes) => Wire::Binary(bytes.to_vec()),
            Message::Close(_) => {
                break Err(anyhow::anyhow!(
                    "the server closed the exec socket without an exit status"
                ));
            }
            _ => continue,
        };
        match ServerFrame::decode(wire) {
            Ok(ServerFrame::Output(Stream::Stdout, bytes)) => {
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            Ok(ServerFrame::Output(Stream::Stderr, bytes)) => {
                stderr.write_all(&bytes)?;
                stderr.flush()?;
            }
            Ok(ServerFrame::Started { instance: id, node }) => {
                if instance.is_none() {
                    // \r: the terminal may be raw already. A closed stderr is no reason to stop.
                    let _ = write!(stderr, "exec in instance {id} (node {node})\r\n");
                }
            }
            Ok(ServerFrame::Exit(status)) => break Ok(status.shell_code()),
            Ok(ServerFrame::Error { message, field }) => {
                break Err(match field {
                    Some(field) => anyhow::anyhow!("{message} [field: {field}]"),
                    None => anyhow::anyhow!("{message}"),
                });
            }
            Err(err) => break Err(err.into()),
        }
    };
    stdin_task.abort();
    if let Some(task) = resize_task {
        task.abort();
    }
    drop(open);
    // With the pumps gone the sender closes the socket as the protocol says, so the
    // server sees a close rather than a reset.
    if tokio::time::timeout(std::time::Duration::from_secs(2), &mut sender)
        .await
        .is_err()
    {
        sender.abort();
    }
    result
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(global: &GlobalArgs, app: &str, instance: Option<&str>) -> anyhow::Result<Socket> {
    let base = global.server_url.trim_end_matches('/');
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        bail!("--server-url {base:?} is not an http:// or https:// URL");
    };
    let mut url = format!("{ws_base}/v1/exec/{app}");
    if let Some(instance) = instance {
        url.push_str(&format!("?instance={instance}"));
    }
    let mut request = url
        .as_str()
        .into_client_request()
        .with_context(|| format!("{url:?} is not a URL: check --server-url and the app id"))?;
    let token = global.token()?;
    if let Some(value) = token.as_ref().and_then(super::auth::bearer) {
        request
            .headers_mut()
            .insert(reqwest::header::AUTHORIZATION, value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let value: serde_json::Value =
                serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
            let mut message = super::apps::describe_error(status, &value);
            if status == 401 && token.is_none() {
                message.push_str(
                    " [no token sent: pass --token-file FILE, --token, BERTH_TOKEN or BERTH_TOKEN_FILE]",
                );
            }
            bail!("{message}")
        }
        Err(err) => Err(err).with_context(|| {
            format!("cannot reach the server at {base}; start it with `berth server` or pass --server-url / BERTH_SERVER_URL")
        }),
    }
}

fn to_message(wire: Wire) -> Message {
    match wire {
        Wire::Text(text) => Message::Text(text.into()),
        Wire::Binary(bytes) => Message::Binary(bytes.into()),
    }
}

/// Our stdin, in chunks, then EOF. The queue is small: a command that does not read its
/// stdin stops this reading ours.
async fn pump_stdin(frames: mpsc::Sender<ClientFrame>) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = frames.send(ClientFrame::Eof).await;
                return;
            }
            Ok(n) => {
                if frames
                    .send(ClientFrame::Stdin(buf[..n].to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Sends our terminal's size each time it changes.
async fn pump_resizes(frames: mpsc::Sender<ClientFrame>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut changes) = signal(SignalKind::window_change()) else {
        return;
    };
    while changes.recv().await.is_some() {
        let (rows, cols) = window_size();
        if rows > 0
            && frames
                .send(ClientFrame::Resize { rows, cols })
                .await
                .is_err()
        {
            return;
        }
    }
}

fn is_terminal(fd: &impl AsFd) -> bool {
    rustix::termios::isatty(fd)
}

/// Rows and columns of our terminal (stdout's, else stdin's); 0 when there is none.
fn window_size() -> (u16, u16) {
    let size = rustix::termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin()));
    match size {
        Ok(w) => (w.ws_row, w.ws_col),
        Err(_) => (0, 0),
    }
}

/// Our terminal in raw mode (keys go to the remote command as typed, Ctrl-C included);
/// the previous mode comes back on drop.
struct RawMode(rustix::termios::Termios);

impl RawMode {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_segment_is_an_instance_only_when_no_app_id_could_hold_it() {
        assert_eq!(split_target("demo/hello"), ("demo/hello".into(), None));
        assert_eq!(split_target("web"), ("web".into(), None));
        assert_eq!(
            split_target("demo/hello/demo-hello.1f"),
            ("demo/hello".into(), Some("demo-hello.1f".into()))
        );
        assert_eq!(
            split_target("web/Web_1"),
            ("web".into(), Some("Web_1".into()))
        );
        assert_eq!(split_target("/x.1"), ("/x.1".into(), None));
    }

    #[test]
    fn env_pairs_need_an_equals_sign() {
        let env = parse_env(&["A=1".into(), "B=x=y".into()]).unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "x=y");
        let err = parse_env(&["NOPE".into()]).unwrap_err().to_string();
        assert!(err.contains("KEY=VALUE"), "{err}");
    }
}
