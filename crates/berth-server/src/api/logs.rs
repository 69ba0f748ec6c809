//! `GET /v1/logs`: instance logs, read from the agents that run them.
//!
//! The server holds no logs; each agent keeps its instances' files and serves them on its
//! status listener (the URL comes in the agent's Hello). The server is the one address
//! clients know, so it fetches from the agents and, for several instances, merges their
//! lines, each prefixed with its instance id (as `docker compose logs` does).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::ApiError;
use crate::context::Ctx;

/// Most lines asked of each instance; the agent's own cap.
const MAX_LINES: usize = 10_000;
/// A log read that does not answer in this time is reported as such, not waited on.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One instance whose log is read, and where.
struct Source {
    instance: String,
    /// The agent's status listener; empty when the agent does not serve logs.
    agent_url: String,
}

struct LogRequest {
    stream: &'static str,
    lines: usize,
    follow: bool,
    prefix: bool,
}

pub async fn logs(
    State(ctx): State<Arc<Ctx>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let request = parse(&q)?;
    let sources = select(&ctx, &q)?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|err| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                err.to_string(),
            )
        })?;
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    if !request.follow {
        let reads = sources
            .iter()
            .map(|source| read_once(&client, source, &request));
        let mut text = String::new();
        for chunk in futures::future::join_all(reads).await {
            text.push_str(&chunk);
        }
        return Ok((headers, text).into_response());
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let request = Arc::new(request);
    for source in sources {
        let (client, request, tx, cancel) = (
            client.clone(),
            request.clone(),
            tx.clone(),
            ctx.cancel.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = follow_one(&client, &source, &request, &tx) => {}
                _ = tx.closed() => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
    Ok((headers, Body::from_stream(ReceiverStream::new(rx))).into_response())
}

fn parse(q: &HashMap<String, String>) -> Result<LogRequest, ApiError> {
    for key in q.keys() {
        if !["app", "instance", "stream", "lines", "follow"].contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter {key:?}: use app, instance, stream, lines, follow"
            ))
            .field(key.clone()));
        }
    }
    let stream = match q.get("stream").map(String::as_str) {
        None | Some("stdout") => "stdout",
        Some("stderr") => "stderr",
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "stream={other:?} does not exist: use stdout or stderr"
            ))
            .field("stream"));
        }
    };
    let lines = match q.get("lines") {
        None => 100,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LINES).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "lines={text:?} is not a number from 1 to {MAX_LINES}"
                ))
                .field("lines"));
            }
        },
    };
    let follow = match q.get("follow").map(|f| f.to_ascii_lowercase()) {
        None => false,
        Some(f) if f == "true" || f == "1" => true,
        Some(f) if f == "false" || f == "0" => false,
        Some(f) => {
            return Err(
                ApiError::bad_request(format!("follow={f:?} is not true or false")).field("follow"),
            );
        }
    };
    Ok(LogRequest {
        stream,
        lines,
        follow,
        prefix: !q.contains_key("instance"),
    })
}

/// The instances to read: one by id, or every instance of an app that agents report.
fn select(ctx: &Ctx, q: &HashMap<String, String>) -> Result<Vec<Source>, ApiError> {
    let app = q.get("app");
    let instance = q.get("instance");
    if app.is_none() && instance.is_none() {
        return Err(
            ApiError::bad_request("say whose logs: ?app=APP_ID or ?instance=INSTANCE_ID")
                .field("app"),
        );
    }
    let state = ctx.lock_state();
    let mut sources: Vec<Source> = state
        .nodes
        .values()
        .flat_map(|node| node.instances.values().map(move |i| (node, i)))
        .filter(|(_, i)| app.is_none_or(|a| &i.app == a))
        .filter(|(_, i)| instance.is_none_or(|id| i.id.as_str() == id))
        .map(|(node, i)| Source {
            instance: i.id.as_str().to_string(),
            agent_url: node.status_url.clone(),
        })
        .collect();
    sources.sort_by(|a, b| a.instance.cmp(&b.instance));
    if sources.is_empty() {
        let what = match (instance, app) {
            (Some(id), _) => format!("no agent reports instance {id:?}"),
            (None, Some(app)) => format!("no agent reports an instance of app {app:?}"),
            (None, None) => unreachable!("checked above"),
        };
        return Err(ApiError::not_found(format!(
            "{what}: see `berth instances` for what runs"
        )));
    }
    Ok(sources)
}

fn url(source: &Source, request: &LogRequest) -> String {
    format!(
        "{}/v1/instances/{}/logs?stream={}&lines={}&follow={}",
        source.agent_url.trim_end_matches('/'),
        source.instance,
        request.stream,
        request.lines,
        request.follow
    )
}

/// One instance's tail, prefixed when several are merged; a failure becomes one line
/// saying so, so the other instances' logs still arrive.
async fn read_once(client: &reqwest::Client, source: &Source, request: &LogRequest) -> String {
    let text = if source.agent_url.is_empty() {
        Err("its agent does not serve logs (upgrade the agent)".to_string())
    } else {
        fetch(client, source, request).await
    };
    let mut prefixer = Prefixer::new(source, request.prefix);
    match text {
        Ok(text) => {
            let mut out = prefixer.push(text.as_bytes());
            out.extend(prefixer.finish());
            String::from_utf8_lossy(&out).into_owned()
        }
        Err(reason) => failure_line(source, &reason),
    }
}

async fn fetch(
    client: &reqwest::Client,
    source: &Source,
    request: &LogRequest,
) -> Result<String, String> {
    let response = client
        .get(url(source, request))
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|err| format!("cannot reach its agent at {}: {err}", source.agent_url))?;
    let status = response.status();
    let text = response.text().await.map_err(|err| err.to_string())?;
    if !status.is_success() {
        return Err(format!("its agent answered {status}: {}", text.trim()));
    }
    Ok(text)
}

async fn follow_one(
    client: &reqwest::Client,
    source: &Source,
    request: &LogRequest,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let fail = |reason: String| Ok(Bytes::from(failure_line(source, &reason)));
    if source.agent_url.is_empty() {
        let _ = tx
            .send(fail(
                "its agent does not serve logs (upgrade the agent)".into(),
            ))
            .await;
        return;
    }
    let response = match client.get(url(source, request)).send().await {
        Ok(response) if response.status().is_success() => response,
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let _ = tx
                .send(fail(format!(
                    "its agent answered {status}: {}",
                    text.trim()
                )))
                .await;
            return;
        }
        Err(err) => {
            let reason = format!("cannot reach its agent at {}: {err}", source.agent_url);
            let _ = tx.send(fail(reason)).await;
            return;
        }
    };
    let mut prefixer = Prefixer::new(source, request.prefix);
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let out = match chunk {
            Ok(bytes) => prefixer.push(&bytes),
            Err(err) => {
                let _ = tx.send(fail(format!("the log stream broke: {err}"))).await;
                return;
            }
        };
        if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
            return;
        }
    }
    let rest = prefixer.finish();
    if !rest.is_empty() {
        let _ = tx.send(Ok(Bytes::from(rest))).await;
    }
}

fn failure_line(source: &Source, reason: &str) -> String {
    format!("[{}] (no logs: {reason})\n", source.instance)
}

/// Splits a byte stream into whole lines and prefixes each with the instance id, so lines
/// of several instances interleave only at line boundaries.
struct Prefixer {
    prefix: Option<Vec<u8>>,
    partial: Vec<u8>,
}

impl Prefixer {
    fn new(source: &Source, enabled: bool) -> Self {
        Prefixer {
            prefix: enabled.then(|| format!("[{}] ", source.instance).into_bytes()),
            partial: Vec::new(),
        }
    }

    /// The complete lines `bytes` finishes, prefixed; keeps an unfinished last line.
    fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let Some(prefix) = &self.prefix else {
            return bytes.to_vec();
        };
        self.partial.extend_from_slice(bytes);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        let mut out = Vec::with_capacity(complete.len() + prefix.len() * 4);
        for line in complete.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(prefix);
            out.extend_from_slice(line);
        }
        out
    }

    /// An unfinished last line, ended with a newline.
    fn finish(&mut self) -> Vec<u8> {
        if self.partial.is_empty() {
            return Vec::new();
        }
        let mut line = std::mem::take(&mut self.partial);
        line.push(b'\n');
        let mut out = self.prefix.clone().unwrap_or_default();
        out.extend_from_slice(&line);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            instance: "web-1".into(),
            agent_url: String::new(),
        }
    }

    #[test]
    fn prefixer_prefixes_whole_lines_across_chunks() {
        let mut p = Prefixer::new(&source(), true);
        assert_eq!(p.push(b"hel"), b"");
        assert_eq!(p.push(b"lo\nwor"), b"[web-1] hello\n");
        assert_eq!(p.push(b"ld\nbye\n"), b"[web-1] world\n[web-1] bye\n");
        assert_eq!(p.push(b"tail"), b"");
        assert_eq!(p.finish(), b"[web-1] tail\n");
        assert_eq!(p.finish(), b"");
    }

    #[test]
    fn prefixer_off_passes_bytes_through() {
        let mut p = Prefixer::new(&source(), false);
        assert_eq!(p.push(b"a\nb"), b"a\nb");
        assert_eq!(p.finish(), b"");
    }

    #[test]
    fn bad_parameters_are_named() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let field = |pairs: &[(&str, &str)]| parse(&q(pairs)).err().and_then(|e| e.field);
        assert_eq!(field(&[("stream", "stdin")]).as_deref(), Some("stream"));
        assert_eq!(field(&[("lines", "0")]).as_deref(), Some("lines"));
        assert_eq!(field(&[("lines", "lots")]).as_deref(), Some("lines"));
        assert_eq!(field(&[("follow", "maybe")]).as_deref(), Some("follow"));
        assert_eq!(field(&[("tail", "5")]).as_deref(), Some("tail"));
        let ok = parse(&q(&[
            ("stream", "stderr"),
            ("lines", "5"),
            ("follow", "TRUE"),
        ]))
        .unwrap();
        assert_eq!(
            (ok.stream, ok.lines, ok.follow, ok.prefix),
            ("stderr", 5, true, true)
        );
    }
}
