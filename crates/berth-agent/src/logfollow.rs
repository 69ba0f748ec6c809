//! `logs?follow=true`: the tail of a log file, then whatever the program appends, as one
//! streaming HTTP body.
//!
//! Programs write their logs straight into files (see `driver::logs`), so following is
//! polling the file's length; rotation is copy-then-truncate, which shows as the file
//! shrinking, and reading resumes from its start.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::{Body, Bytes};
use berth_proto::agent::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::supervisor::Supervisor;
use berth_core::InstanceId;

/// How often the file is looked at. A person watching logs does not notice 200 ms; the
/// cost is one `stat` per follower per tick.
const POLL: Duration = Duration::from_millis(200);
/// Most bytes sent in one chunk, so a burst of output does not become one huge buffer.
const CHUNK: u64 = 256 * 1024;
/// Most bytes looked at for the initial tail.
const TAIL_BYTES: u64 = 4 * 1024 * 1024;

pub fn follow(
    path: PathBuf,
    lines: usize,
    id: InstanceId,
    supervisor: Supervisor,
    stop: CancellationToken,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        if let Err(err) = pump(&path, lines, &id, &supervisor, &stop, &tx).await {
            tracing::debug!(instance = %id, "log follower ended: {err}");
            let _ = tx.send(Err(err)).await;
        }
    });
    Body::from_stream(ReceiverStream::new(rx))
}

async fn pump(
    path: &Path,
    lines: usize,
    id: &InstanceId,
    supervisor: &Supervisor,
    stop: &CancellationToken,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> std::io::Result<()> {
    let owned = path.to_path_buf();
    let (tail, mut offset) = blocking(move || tail_and_length(&owned, lines)).await?;
    if !tail.is_empty() && tx.send(Ok(Bytes::from(tail))).await.is_err() {
        return Ok(());
    }
    let mut ticker = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = tx.closed() => return Ok(()),
            _ = stop.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let len = match tokio::fs::metadata(path).await {
            Ok(meta) => meta.len(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => return Err(err),
        };
        if len < offset {
            offset = 0;
        }
        if len > offset {
            let owned = path.to_path_buf();
            let from = offset;
            let bytes = blocking(move || read_range(&owned, from, len.min(from + CHUNK))).await?;
            offset += bytes.len() as u64;
            if tx.send(Ok(Bytes::from(bytes))).await.is_err() {
                return Ok(());
            }
            // More may be waiting: look again at once rather than after a tick.
            ticker.reset_immediately();
            continue;
        }
        // Everything written so far was sent; end once nothing more can come.
        if !still_running(supervisor, id) {
            return Ok(());
        }
    }
}

fn still_running(supervisor: &Supervisor, id: &InstanceId) -> bool {
    supervisor.statuses().iter().any(|s| {
        s.instance_id == id.as_str()
            && !matches!(
                s.state(),
                pb::InstanceState::Exited | pb::InstanceState::Failed
            )
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// The last `lines` lines and the length they end at, read together so that following
/// resumes exactly where the tail stopped: nothing twice, nothing skipped.
fn tail_and_length(path: &Path, lines: usize) -> std::io::Result<(Vec<u8>, u64)> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(err) => return Err(err),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    (&mut file).take(len - start).read_to_end(&mut bytes)?;
    Ok((last_lines(bytes, lines), start + (len - start)))
}

/// The last `lines` complete or partial lines of `bytes`.
fn last_lines(bytes: Vec<u8>, lines: usize) -> Vec<u8> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let cut = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(lines.saturating_sub(1))
        .map(|(at, _)| at + 1);
    match cut {
        Some(at) => bytes[at..].to_vec(),
        None => bytes,
    }
}

fn read_range(path: &Path, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity((to - from) as usize);
    file.take(to - from).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn last_lines_counts_from_the_end_and_keeps_a_partial_line() {
        assert_eq!(last_lines(b"a\nb\nc\n".to_vec(), 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc".to_vec(), 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n".to_vec(), 5), b"a\nb\n");
        assert_eq!(last_lines(Vec::new(), 3), b"");
        assert_eq!(last_lines(b"only".to_vec(), 1), b"only");
    }
}
