//! The few calls of the Docker Engine API the driver makes, over the engine's Unix socket.
//!
//! One connection per call: the engine is local, calls are rare (a handful per instance
//! start and stop), and a fresh connection can never be a stale pooled one. The API
//! version is pinned so an engine upgrade cannot change the JSON under us; engines keep
//! answering old versions (1.41 is Docker 20.10's, still served by current engines).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::UnixStream;

/// Every path is prefixed with this version.
pub const API_VERSION: &str = "v1.41";

/// How long a short call (not `wait` or a log stream) may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker engine at {socket}: {source} (is dockerd running? point the agent's docker_socket at its socket)"
    )]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("Docker engine connection failed during {call}: {source}")]
    Http {
        call: &'static str,
        source: hyper::Error,
    },
    #[error("Docker engine did not answer {call} within {CALL_TIMEOUT:?}")]
    Timeout { call: &'static str },
    #[error("Docker engine refused {call} ({status}): {message}")]
    Status {
        call: &'static str,
        status: u16,
        message: String,
    },
    #[error("Docker engine sent an unreadable answer to {call}: {message}")]
    Decode { call: &'static str, message: String },
}

/// What the driver needs of `GET /containers/{name}/json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    pub running: bool,
    pub pid: u32,
    pub exit_code: i64,
}

#[derive(Debug, Clone)]
pub struct DockerApi {
    socket: PathBuf,
}

impl DockerApi {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn send(
        &self,
        call: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response<Incoming>, DockerError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| DockerError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| DockerError::Http { call, source })?;
        // The connection task ends with the response body (or when the caller drops it).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let body = match body {
            Some(json) => Full::new(Bytes::from(json.to_string())),
            None => Full::new(Bytes::new()),
        };
        let request = Request::builder()
            .method(method)
            .uri(format!("/{API_VERSION}{path}"))
            .header(hyper::header::HOST, "docker")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|err| DockerError::Decode {
                call,
                message: format!("bad request path {path:?}: {err}"),
            })?;
        sender
            .send_request(request)
            .await
            .map_err(|source| DockerError::Http { call, source })
    }

    /// A short call: status checked, body read whole (bounded by [`CALL_TIMEOUT`]).
    async fn call(
        &self,
        call: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), DockerError> {
        let exchange = async {
            let response = self.send(call, method, path, body).await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|source| DockerError::Http { call, source })?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| DockerError::Timeout { call })?
    }

    fn refused(call: &'static str, status: StatusCode, body: &[u8]) -> DockerError {
        DockerError::Status {
            call,
            status: status.as_u16(),
            message: engine_message(body),
        }
    }

    fn decode<T: DeserializeOwned>(call: &'static str, body: &[u8]) -> Result<T, DockerError> {
        serde_json::from_slice(body).map_err(|err| DockerError::Decode {
            call,
            message: err.to_string(),
        })
    }

    pub async fn ping(&self) -> Result<(), DockerError> {
        let (status, body) = self.call("ping", Method::GET, "/_ping", None).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(Self::refused("ping", status, &body))
        }
    }

    /// Whether the engine has `image` locally. The driver never pulls: images reach a node
    /// by `docker build` or `docker load`, so a start never waits on (or leaks to) a
    /// remote registry.
    pub async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        let call = "image inspect";
        let path = format!("/images/{}/json", path_segment(image));
        let (status, body) = self.call(call, Method::GET, &path, None).await?;
        match status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(Self::refused(call, s, &body)),
        }
    }

    /// Creates a container named `name`; returns its id.
    pub async fn create(&self, name: &str, config: &Value) -> Result<String, DockerError> {
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "Id")]
            id: String,
        }
        let call = "container create";
        let path = format!("/containers/create?name={}", path_segment(name));
        let (status, body) = self.call(call, Method::POST, &path, Some(config)).await?;
        if !status.is_success() {
            return Err(Self::refused(call, status, &body));
        }
        Ok(Self::decode::<Created>(call, &body)?.id)
    }

    pub async fn start(&self, name: &str) -> Result<(), DockerError> {
        let call = "container start";
        let path = format!("/containers/{}/start", path_segment(name));
        let (status, body) = self.call(call, Method::POST, &path, None).await?;
        // 304: already running.
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            Ok(())
        } else {
            Err(Self::refused(call, status, &body))
        }
    }

    /// Sends the container's stop signal, then SIGKILL after `grace_secs`; returns once it
    /// stopped. A container that is already stopped or gone counts as stopped.
    pub async fn stop(&self, name: &str, grace_secs: u64) -> Result<(), DockerError> {
        let call = "container stop";
        let path = format!("/containers/{}/stop?t={grace_secs}", path_segment(name));
        let stop = self.call(call, Method::POST, &path, None);
        // The engine itself waits out the grace period before answering.
        let bound = Duration::from_secs(grace_secs) + CALL_TIMEOUT;
        let (status, body) = tokio::time::timeout(bound, stop)
            .await
            .map_err(|_| DockerError::Timeout { call })??;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_MODIFIED | StatusCode::NOT_FOUND => Ok(()),
            s => Err(Self::refused(call, s, &body)),
        }
    }

    /// Waits until the container is not running; returns its exit code. No timeout: a
    /// service runs for as long as it runs.
    pub async fn wait(&self, name: &str) -> Result<i64, DockerError> {
        #[derive(Deserialize)]
        struct Waited {
            #[serde(rename = "StatusCode")]
            status_code: i64,
        }
        let call = "container wait";
        let path = format!(
            "/containers/{}/wait?condition=not-running",
            path_segment(name)
        );
        let response = self.send(call, Method::POST, &path, None).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|source| DockerError::Http { call, source })?
            .to_bytes();
        if !status.is_success() {
            return Err(Self::refused(call, status, &body));
        }
        Ok(Self::decode::<Waited>(call, &body)?.status_code)
    }

    pub async fn inspect(&self, name: &str) -> Result<Option<ContainerState>, DockerError> {
        let call = "container inspect";
        let path = format!("/containers/{}/json", path_segment(name));
        let (status, body) = self.call(call, Method::GET, &path, None).await?;
        match status {
            s if s.is_success() => parse_inspect(&body).map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(Self::refused(call, s, &body)),
        }
    }

    /// Removes the container, forcing it down if it still runs. Gone already is fine.
    pub async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let call = "container remove";
        let path = format!("/containers/{}?force=1&v=1", path_segment(name));
        let (status, body) = self.call(call, Method::DELETE, &path, None).await?;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Ok(()),
            // 409: a removal is already in progress.
            StatusCode::CONFLICT => Ok(()),
            s => Err(Self::refused(call, s, &body)),
        }
    }

    /// Names of the containers carrying `label=value`, stopped ones included.
    pub async fn containers_labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<String>, DockerError> {
        #[derive(Deserialize)]
        struct Listed {
            #[serde(rename = "Names", default)]
            names: Vec<String>,
        }
        let call = "container list";
        let filters = serde_json::json!({ "label": [format!("{label}={value}")] }).to_string();
        let path = format!("/containers/json?all=1&filters={}", query_escape(&filters));
        let (status, body) = self.call(call, Method::GET, &path, None).await?;
        if !status.is_success() {
            return Err(Self::refused(call, status, &body));
        }
        let listed: Vec<Listed> = Self::decode(call, &body)?;
        Ok(listed
            .into_iter()
            .filter_map(|c| c.names.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_string())
            .collect())
    }

    /// The container's output since `since` (`seconds.nanos`), multiplexed (see
    /// [`super::logs`]), each line prefixed with its timestamp. With `follow` the body
    /// stays open until the container stops.
    pub async fn logs(
        &self,
        name: &str,
        since: &str,
        follow: bool,
    ) -> Result<Incoming, DockerError> {
        let call = "container logs";
        let path = format!(
            "/containers/{}/logs?stdout=1&stderr=1&timestamps=1&follow={}&since={}",
            path_segment(name),
            u8::from(follow),
            query_escape(since)
        );
        let response =
            tokio::time::timeout(CALL_TIMEOUT, self.send(call, Method::GET, &path, None))
                .await
                .map_err(|_| DockerError::Timeout { call })??;
        let status = response.status();
        if !status.is_success() {
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(Self::refused(call, status, &body));
        }
        Ok(response.into_body())
    }

    /// Creates a command inside the running container `name`; returns the exec's id.
    pub async fn exec_create(&self, name: &str, config: &Value) -> Result<String, DockerError> {
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "Id")]
            id: String,
        }
        let call = "exec create";
        let path = format!("/containers/{}/exec", path_segment(name));
        let (status, body) = self.call(call, Method::POST, &path, Some(config)).await?;
        if !status.is_success() {
            return Err(Self::refused(call, status, &body));
        }
        Ok(Self::decode::<Created>(call, &body)?.id)
    }

    /// Starts the exec `id` and takes over the connection: the engine answers `101` and
    /// from then on the socket carries the command's input one way and its output (raw
    /// with a terminal, multiplexed as the logs without one) the other. Shutting the write
    /// side down closes the command's stdin.
    pub async fn exec_attach(&self, id: &str, tty: bool) -> Result<TokioIo<Upgraded>, DockerError> {
        let call = "exec start";
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| DockerError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| DockerError::Http { call, source })?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let body = serde_json::json!({ "Detach": false, "Tty": tty }).to_string();
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/{API_VERSION}/exec/{}/start", path_segment(id)))
            .header(hyper::header::HOST, "docker")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::CONNECTION, "Upgrade")
            .header(hyper::header::UPGRADE, "tcp")
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| DockerError::Decode {
                call,
                message: format!("bad exec id {id:?}: {err}"),
            })?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|source| DockerError::Http { call, source })?;
            let status = response.status();
            if status != StatusCode::SWITCHING_PROTOCOLS {
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                return Err(Self::refused(call, status, &body));
            }
            hyper::upgrade::on(response)
                .await
                .map_err(|source| DockerError::Http { call, source })
        };
        let upgraded = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| DockerError::Timeout { call })??;
        Ok(TokioIo::new(upgraded))
    }

    pub async fn exec_inspect(&self, id: &str) -> Result<ExecState, DockerError> {
        #[derive(Deserialize)]
        struct Inspected {
            #[serde(rename = "Running")]
            running: bool,
            #[serde(rename = "ExitCode")]
            exit_code: Option<i64>,
            #[serde(rename = "Pid", default)]
            pid: u32,
        }
        let call = "exec inspect";
        let path = format!("/exec/{}/json", path_segment(id));
        let (status, body) = self.call(call, Method::GET, &path, None).await?;
        if !status.is_success() {
            return Err(Self::refused(call, status, &body));
        }
        let inspected: Inspected = Self::decode(call, &body)?;
        Ok(ExecState {
            running: inspected.running,
            exit_code: inspected.exit_code,
            pid: inspected.pid,
        })
    }

    /// Sets the terminal size of an exec started with a terminal.
    pub async fn exec_resize(&self, id: &str, rows: u16, cols: u16) -> Result<(), DockerError> {
        let call = "exec resize";
        let path = format!("/exec/{}/resize?h={rows}&w={cols}", path_segment(id));
        let (status, body) = self.call(call, Method::POST, &path, None).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(Self::refused(call, status, &body))
        }
    }

    /// Runs `argv` inside the running container and returns its exit code (output is
    /// discarded: health checks only need the code).
    pub async fn exec(
        &self,
        name: &str,
        argv: &[String],
        env: &[String],
    ) -> Result<i64, DockerError> {
        let config = serde_json::json!({
            "Cmd": argv,
            "Env": env,
            "AttachStdout": true,
            "AttachStderr": true,
        });
        let exec = self.exec_create(name, &config).await?;
        let call = "exec start";
        let start = serde_json::json!({ "Detach": false, "Tty": false });
        // Attached: the answer streams the output and ends when the command ends.
        let (status, body) = self
            .call(
                call,
                Method::POST,
                &format!("/exec/{exec}/start"),
                Some(&start),
            )
            .await?;
        if !status.is_success() {
            return Err(Self::refused(call, status, &body));
        }
        match self.exec_inspect(&exec).await? {
            ExecState {
                running: false,
                exit_code: Some(code),
                ..
            } => Ok(code),
            _ => Err(DockerError::Decode {
                call: "exec inspect",
                message: "the command's stream ended but it has no exit code yet".into(),
            }),
        }
    }
}

/// What the driver needs of `GET /exec/{id}/json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecState {
    pub running: bool,
    pub exit_code: Option<i64>,
    /// The command's process id as the host sees it (0 before it started).
    pub pid: u32,
}

/// `inspect` for the synchronous re-adoption at agent start-up (the [`super::Driver`]
/// trait's `adopt` is not async): one HTTP/1.0 exchange on a blocking socket, bounded by
/// a timeout. The engine is local, so this is a few milliseconds.
pub fn inspect_blocking(socket: &Path, name: &str) -> Result<Option<ContainerState>, DockerError> {
    use std::io::{Read, Write};
    let call = "container inspect";
    let io = |source| DockerError::Connect {
        socket: socket.to_path_buf(),
        source,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    write!(
        stream,
        "GET /{API_VERSION}/containers/{}/json HTTP/1.0\r\nHost: docker\r\n\r\n",
        path_segment(name)
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    let (status, body) = split_response(&raw).ok_or_else(|| DockerError::Decode {
        call,
        message: "no HTTP status line".into(),
    })?;
    match status {
        200 => parse_inspect(body).map(Some),
        404 => Ok(None),
        status => Err(DockerError::Status {
            call,
            status,
            message: engine_message(body),
        }),
    }
}

/// Status code and body of a whole HTTP/1.0 answer (no chunking: the engine closes).
fn split_response(raw: &[u8]) -> Option<(u16, &[u8])> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..head_end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, &raw[head_end + 4..]))
}

/// The engine's error answers are `{"message": "..."}`.
fn engine_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct EngineError {
        message: String,
    }
    serde_json::from_slice::<EngineError>(body)
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_string())
}

pub(super) fn parse_inspect(body: &[u8]) -> Result<ContainerState, DockerError> {
    #[derive(Deserialize)]
    struct State {
        #[serde(rename = "Running")]
        running: bool,
        #[serde(rename = "Pid", default)]
        pid: u32,
        #[serde(rename = "ExitCode", default)]
        exit_code: i64,
    }
    #[derive(Deserialize)]
    struct Inspected {
        #[serde(rename = "Id")]
        id: String,
        #[serde(rename = "State")]
        state: State,
    }
    let inspected: Inspected = serde_json::from_slice(body).map_err(|err| DockerError::Decode {
        call: "container inspect",
        message: err.to_string(),
    })?;
    Ok(ContainerState {
        id: inspected.id,
        running: inspected.state.running,
        pid: inspected.state.pid,
        exit_code: inspected.state.exit_code,
    })
}

/// Names and image references may hold `/` and `:` (the engine routes on them as they
/// are); anything else outside the safe set is percent-encoded.
fn path_segment(raw: &str) -> String {
    escape(raw, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b':' | b'@')
    })
}

fn query_escape(raw: &str) -> String {
    escape(raw, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
    })
}

fn escape(raw: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_image_references_and_encodes_the_rest() {
        assert_eq!(path_segment("shop/web:1.4"), "shop/web:1.4");
        assert_eq!(path_segment("a b?c"), "a%20b%3Fc");
        assert_eq!(
            query_escape("{\"label\":[\"a=b\"]}"),
            "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D"
        );
    }

    #[test]
    fn engine_errors_are_read_from_their_json_or_kept_as_text() {
        assert_eq!(
            engine_message(br#"{"message":"No such image"}"#),
            "No such image"
        );
        assert_eq!(engine_message(b"page not found\n"), "page not found");
    }

    #[test]
    fn inspect_reads_state_and_refuses_garbage() {
        let body = br#"{"Id":"abc","State":{"Running":true,"Pid":42,"ExitCode":0},"Name":"/x"}"#;
        assert_eq!(
            parse_inspect(body).unwrap(),
            ContainerState {
                id: "abc".into(),
                running: true,
                pid: 42,
                exit_code: 0
            }
        );
        let err = parse_inspect(b"{}").unwrap_err().to_string();
        assert!(err.contains("container inspect"), "{err}");
    }

    #[test]
    fn whole_answers_split_into_status_and_body() {
        assert_eq!(
            split_response(b"HTTP/1.0 404 Not Found\r\nA: b\r\n\r\n{}"),
            Some((404, &b"{}"[..]))
        );
        assert_eq!(split_response(b"garbage"), None);
    }
}
