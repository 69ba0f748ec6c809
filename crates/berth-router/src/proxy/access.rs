//! The access log: one line per request (status, bytes, duration, backend, request id).
//! Lines go either through the process log (target `berth_router::access`) or to a file
//! written by one background task through a bounded queue, so a slow disk never stalls a
//! request: when the queue is full the line is dropped and counted.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Error;

const QUEUE: usize = 16 * 1024;

/// Where access lines go.
#[derive(Clone, Debug)]
pub enum AccessSink {
    Off,
    Log,
    File {
        tx: mpsc::Sender<String>,
        dropped: Arc<AtomicU64>,
    },
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
    fn line(&self) -> String {
        let mut line = format!(
            "{} {} {}{} status={} bytes={} duration_ms={:.3} backend={} request_id={}",
            humantime::format_rfc3339_millis(SystemTime::now()),
            self.method,
            self.host,
            self.path,
            self.status,
            self.bytes,
            self.duration.as_secs_f64() * 1000.0,
            self.backend
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            self.request_id,
        );
        if let Some(e) = self.router_error {
            line.push_str(" router_error=");
            line.push_str(e);
        }
        if !self.complete {
            line.push_str(" incomplete");
        }
        line.push('\n');
        line
    }
}

impl AccessSink {
    /// Opens (appends to) `path` and spawns its writer, which stops at `stop`.
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
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        let writer = async move {
            let mut out = tokio::io::BufWriter::new(tokio::fs::File::from_std(file));
            loop {
                let line = tokio::select! {
                    l = rx.recv() => l,
                    _ = stop.cancelled() => { rx.close(); rx.recv().await }
                };
                let Some(line) = line else { break };
                let mut ok = out.write_all(line.as_bytes()).await.is_ok();
                while let Ok(more) = rx.try_recv() {
                    ok &= out.write_all(more.as_bytes()).await.is_ok();
                }
                if !(ok && out.flush().await.is_ok()) {
                    tracing::warn!("cannot write the access log file");
                }
            }
            let _ = out.flush().await;
        };
        let sink = AccessSink::File {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        Ok((sink, writer))
    }

    pub fn enabled(&self) -> bool {
        !matches!(self, AccessSink::Off)
    }

    pub fn record(&self, r: &AccessRecord<'_>) {
        match self {
            AccessSink::Off => {}
            AccessSink::Log => {
                tracing::info!(target: "berth_router::access", "{}", r.line().trim_end())
            }
            AccessSink::File { tx, dropped } => {
                if tx.try_send(r.line()).is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
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
