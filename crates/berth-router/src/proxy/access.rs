//! The access log: one line per request (status, bytes, duration, backend, request id).
//!
//! Requests append their line to a shared in-memory buffer (one short uncontended lock);
//! a background task swaps the buffer out every few milliseconds and writes it to stdout
//! or a file on the blocking pool. Requests never wait for a disk or a pipe, and no thread
//! is woken per request. If the writer falls behind past `MAX_BUFFER`, lines are dropped
//! and counted rather than growing memory.

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// The backend's address as text.
    pub backend: Option<&'a str>,
    pub request_id: &'a str,
    pub router_error: Option<&'static str>,
    pub complete: bool,
}

impl AccessRecord<'_> {
    fn write_line(&self, out: &mut Vec<u8>) {
        write_timestamp(out);
        out.push(b' ');
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" status=");
        push_int(out, u64::from(self.status));
        out.extend_from_slice(b" bytes=");
        push_int(out, self.bytes);
        // Milliseconds with three decimals, from integer microseconds (no float
        // formatting on the request path).
        let micros = (self.duration.as_nanos() + 500) / 1000;
        out.extend_from_slice(b" duration_ms=");
        push_int(out, (micros / 1000) as u64);
        out.push(b'.');
        let frac = (micros % 1000) as u16;
        out.extend_from_slice(&[
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
        out.extend_from_slice(b" backend=");
        out.extend_from_slice(self.backend.unwrap_or("-").as_bytes());
        out.extend_from_slice(b" request_id=");
        out.extend_from_slice(self.request_id.as_bytes());
        if let Some(e) = self.router_error {
            out.extend_from_slice(b" router_error=");
            out.extend_from_slice(e.as_bytes());
        }
        if !self.complete {
            out.extend_from_slice(b" incomplete");
        }
        out.push(b'\n');
    }
}

fn push_int(out: &mut Vec<u8>, n: u64) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(n).as_bytes());
}

/// Writes the RFC 3339 UTC time with milliseconds (`2026-01-02T03:04:05.678Z`). The
/// date-and-seconds part is formatted once per second per thread and reused.
fn write_timestamp(out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [0; 20])) };
    }
    let now = SystemTime::now();
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            // `YYYY-MM-DDTHH:MM:SS.mmmZ`: keep up to and including the dot.
            let full = humantime::format_rfc3339_millis(now).to_string();
            if full.len() != 24 {
                // Outside years 0000-9999: no caching, write it whole.
                out.extend_from_slice(full.as_bytes());
                return;
            }
            cached.1.copy_from_slice(&full.as_bytes()[..20]);
            cached.0 = secs;
        }
        out.extend_from_slice(&cached.1);
        let ms = since.subsec_millis() as u16;
        out.extend_from_slice(&[
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    });
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
                backend: Some("127.0.0.1:9"),
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
        assert!(
            lines[0].contains("duration_ms=3.000 backend=127.0.0.1:9"),
            "{text}"
        );
        // RFC 3339 UTC with milliseconds.
        let ts = lines[0].split(' ').next().unwrap();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        humantime::parse_rfc3339(ts).unwrap();
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
