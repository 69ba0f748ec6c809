//! The access log: one line per request (status, bytes, duration, backend, request id).
//!
//! Requests append their line to a shared in-memory buffer (one short uncontended lock);
//! a background task swaps the buffer out every few milliseconds and writes it to stdout
//! or a file on the blocking pool. Requests never wait for a disk or a pipe, and no thread
//! is woken per request. If the writer falls behind past `MAX_BUFFER`, lines are dropped
//! and counted rather than growing memory.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::Error;

const MAX_BUFFER: usize = 8 << 20;
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Where access lines go.
#[derive(Clone, Debug)]
pub enum AccessSink {
    Off,
    /// Through the process log (`tracing`, target `berth_router::access`).
    Log,
    /// Batched to stdout or a file.
    Batched(Arc<Batch>),
}

#[derive(Debug, Default)]
pub struct Batch {
    buf: Mutex<Vec<u8>>,
    dropped: AtomicU64,
}

/// One finished request.
pub struct AccessRecord<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub backend: Option<SocketAddr>,
    pub request_id: &'a str,
    pub router_error: Option<&'static str>,
    pub complete: bool,
}

impl AccessRecord<'_> {
    fn write_line(&self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            "{} {} {}{} status={} bytes={} duration_ms={:.3} backend=",
            humantime::format_rfc3339_millis(SystemTime::now()),
            self.method,
            self.host,
            self.path,
            self.status,
            self.bytes,
            self.duration.as_secs_f64() * 1000.0,
        );
        let _ = match self.backend {
            Some(b) => write!(out, "{b}"),
            None => write!(out, "-"),
        };
        let _ = write!(out, " request_id={}", self.request_id);
        if let Some(e) = self.router_error {
            let _ = write!(out, " router_error={e}");
        }
        if !self.complete {
            out.extend_from_slice(b" incomplete");
        }
        out.push(b'\n');
    }
}

impl AccessSink {
    /// Appends to `path`; the returned writer task flushes until `stop`, then once more.
    pub fn file(
        path: &Path,
        stop: CancellationToken,
    ) -> Result<(Self, impl Future<Output = ()> + Send + 'static), Error> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::Config {
                key: "access_log_file",
                reason: format!("cannot open {}: {e}", path.display()),
            })?;
        Ok(Self::batched(Box::new(file), stop))
    }

    /// Lines to the process's stdout.
    pub fn stdout(stop: CancellationToken) -> (Self, impl Future<Output = ()> + Send + 'static) {
        Self::batched(Box::new(std::io::stdout()), stop)
    }

    fn batched(
        out: Box<dyn Write + Send>,
        stop: CancellationToken,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let batch = Arc::new(Batch::default());
        let shared = batch.clone();
        let writer = async move {
            let out = Arc::new(Mutex::new(out));
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            loop {
                let stopping = tokio::select! {
                    _ = stop.cancelled() => true,
                    _ = tick.tick() => false,
                };
                let chunk =
                    std::mem::take(&mut *shared.buf.lock().unwrap_or_else(|p| p.into_inner()));
                if !chunk.is_empty() {
                    let out = out.clone();
                    let written = tokio::task::spawn_blocking(move || {
                        let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                        out.write_all(&chunk).and_then(|_| out.flush())
                    })
                    .await;
                    if !matches!(written, Ok(Ok(()))) {
                        tracing::warn!("cannot write the access log");
                    }
                }
                if stopping {
                    return;
                }
            }
        };
        (AccessSink::Batched(batch), writer)
    }

    pub fn enabled(&self) -> bool {
        !matches!(self, AccessSink::Off)
    }

    pub fn record(&self, r: &AccessRecord<'_>) {
        match self {
            AccessSink::Off => {}
            AccessSink::Log => {
                let mut line = Vec::with_capacity(160);
                r.write_line(&mut line);
                tracing::info!(
                    target: "berth_router::access",
                    "{}",
                    String::from_utf8_lossy(&line).trim_end()
                );
            }
            AccessSink::Batched(batch) => {
                let mut buf = batch.buf.lock().unwrap_or_else(|p| p.into_inner());
                if buf.len() > MAX_BUFFER {
                    batch.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                r.write_line(&mut buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_sink_writes_one_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let stop = CancellationToken::new();
        let (sink, writer) = AccessSink::file(&path, stop.clone()).unwrap();
        let task = tokio::spawn(writer);
        for status in [200, 502] {
            sink.record(&AccessRecord {
                method: "GET",
                host: "a.example",
                path: "/x",
                status,
                bytes: 12,
                duration: Duration::from_millis(3),
                backend: Some("127.0.0.1:9".parse().unwrap()),
                request_id: "rid",
                router_error: (status == 502).then_some("endpoint_failure"),
                complete: true,
            });
        }
        stop.cancel();
        task.await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("GET a.example/x status=200 bytes=12"),
            "{text}"
        );
        assert!(lines[1].contains("router_error=endpoint_failure"), "{text}");
    }

    #[test]
    fn unopenable_file_names_the_key() {
        let e = AccessSink::file(
            Path::new("/nonexistent/dir/a.log"),
            CancellationToken::new(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("access_log_file") && e.contains("/nonexistent/dir"),
            "{e}"
        );
    }
}
