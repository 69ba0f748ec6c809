//! Container output into the instance's log files.
//!
//! A container started without a TTY has its stdout and stderr multiplexed on one stream:
//! frames of an 8-byte header (stream type, three zero bytes, payload length big-endian)
//! and the payload. With `timestamps=1` every payload opens with the engine's RFC 3339
//! timestamp of that line. The timestamp of the last line written is the *cursor*: kept
//! in a file beside the logs, so an agent that restarts resumes the stream where the last
//! one stopped instead of copying the whole history again or losing what the program
//! printed meanwhile (the engine keeps it). The cursor is saved at most once a second and
//! when the copy ends or is dropped (the agent stops); after an agent *crash* the lines
//! of that last second may be written twice, never lost.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};

use crate::driver::LogFiles;

const HEADER: usize = 8;
/// The engine never sends more than this in one frame (it splits long lines at 16 KiB);
/// a bigger length means the stream is not what we think it is.
const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub stream: Stream,
    pub payload: Vec<u8>,
}

/// Splits the multiplexed stream into frames, across chunk boundaries.
#[derive(Debug, Default)]
pub struct Demux {
    pending: BytesMut,
}

impl Demux {
    /// Feeds one chunk; returns the frames it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Frame>, String> {
        self.pending.extend_from_slice(chunk);
        let mut frames = Vec::new();
        while self.pending.len() >= HEADER {
            let kind = self.pending[0];
            let len = u32::from_be_bytes([
                self.pending[4],
                self.pending[5],
                self.pending[6],
                self.pending[7],
            ]) as usize;
            if len > MAX_FRAME || self.pending[1..4] != [0, 0, 0] {
                return Err(format!(
                    "not a multiplexed log stream (frame header {:?})",
                    &self.pending[..HEADER]
                ));
            }
            if self.pending.len() < HEADER + len {
                break;
            }
            self.pending.advance(HEADER);
            let payload = self.pending.split_to(len).to_vec();
            let stream = match kind {
                2 => Stream::Stderr,
                // 0 (stdin) never comes without a TTY; 1 is stdout.
                _ => Stream::Stdout,
            };
            frames.push(Frame { stream, payload });
        }
        Ok(frames)
    }
}

/// Splits `2026-12-01T08:02:09.987523452Z hello\n` into its time and the line.
pub fn split_timestamp(payload: &[u8]) -> (Option<SystemTime>, &[u8]) {
    let Some(space) = payload.iter().position(|b| *b == b' ') else {
        return (None, payload);
    };
    let stamp = std::str::from_utf8(&payload[..space])
        .ok()
        .and_then(|s| humantime::parse_rfc3339(s).ok());
    match stamp {
        Some(time) => (Some(time), &payload[space + 1..]),
        None => (None, payload),
    }
}

/// The engine's `since` parameter for "after `time`": `seconds.nanoseconds`.
pub fn since_param(time: Option<SystemTime>) -> String {
    match time.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        Some(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        None => "0".to_string(),
    }
}

/// Writes frames into the instance's log files and keeps the cursor.
pub struct LogSink {
    stdout: File,
    stderr: File,
    cursor_path: PathBuf,
    cursor: Option<SystemTime>,
    saved: Option<SystemTime>,
    last_save: tokio::time::Instant,
}

impl LogSink {
    pub fn cursor_path(logs: &LogFiles) -> PathBuf {
        logs.stdout.with_file_name("docker-log.cursor")
    }

    pub fn open(logs: &LogFiles) -> std::io::Result<Self> {
        let cursor_path = Self::cursor_path(logs);
        let cursor = read_cursor(&cursor_path);
        Ok(Self {
            stdout: LogFiles::open_for_append(&logs.stdout)?,
            stderr: LogFiles::open_for_append(&logs.stderr)?,
            cursor_path,
            cursor,
            saved: cursor,
            last_save: tokio::time::Instant::now(),
        })
    }

    /// Where to resume the engine's stream.
    pub fn since(&self) -> String {
        since_param(self.cursor)
    }

    pub fn write(&mut self, frame: &Frame) -> std::io::Result<()> {
        let (time, line) = split_timestamp(&frame.payload);
        if let (Some(time), Some(cursor)) = (time, self.cursor) {
            // The engine answers `since` inclusively; the cursor's own line is written.
            if time <= cursor {
                return Ok(());
            }
        }
        match frame.stream {
            Stream::Stdout => self.stdout.write_all(line)?,
            Stream::Stderr => self.stderr.write_all(line)?,
        }
        if time.is_some() {
            self.cursor = time;
        }
        if self.last_save.elapsed() >= Duration::from_secs(1) {
            self.save()?;
        }
        Ok(())
    }

    pub fn save(&mut self) -> std::io::Result<()> {
        self.last_save = tokio::time::Instant::now();
        if self.cursor == self.saved {
            return Ok(());
        }
        if let Some(cursor) = self.cursor {
            let tmp = self.cursor_path.with_extension("tmp");
            std::fs::write(&tmp, since_param(Some(cursor)))?;
            std::fs::rename(&tmp, &self.cursor_path)?;
            self.saved = self.cursor;
        }
        Ok(())
    }
}

/// An agent that stops drops the copy, and with it the sink: the cursor is saved then,
/// so only a crash (no destructors) can repeat the last second's lines.
impl Drop for LogSink {
    fn drop(&mut self) {
        let _ = self.save();
    }
}

fn read_cursor(path: &Path) -> Option<SystemTime> {
    let text = std::fs::read_to_string(path).ok()?;
    let (secs, nanos) = text.trim().split_once('.')?;
    let secs: u64 = secs.parse().ok()?;
    let nanos: u32 = nanos.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Appends a line from the agent itself to the instance's stderr, so what went wrong
/// before the program ran (no image, an engine error) shows where its output would.
pub fn note_on_stderr(logs: &LogFiles, message: &str) {
    if let Ok(mut file) = LogFiles::open_for_append(&logs.stderr) {
        let _ = writeln!(file, "berth: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![kind, 0, 0, 0];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frames_are_split_across_any_chunking() {
        let mut stream = frame(1, b"out line\n");
        stream.extend(frame(2, b"err line\n"));
        stream.extend(frame(1, b""));
        for cut in 0..stream.len() {
            let mut demux = Demux::default();
            let mut frames = demux.push(&stream[..cut]).unwrap();
            frames.extend(demux.push(&stream[cut..]).unwrap());
            assert_eq!(
                frames,
                vec![
                    Frame {
                        stream: Stream::Stdout,
                        payload: b"out line\n".to_vec()
                    },
                    Frame {
                        stream: Stream::Stderr,
                        payload: b"err line\n".to_vec()
                    },
                    Frame {
                        stream: Stream::Stdout,
                        payload: vec![]
                    },
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_stream_that_is_not_multiplexed_is_refused() {
        let err = Demux::default()
            .push(b"HTTP/1.1 200 OK\r\nhello")
            .unwrap_err();
        assert!(err.contains("not a multiplexed"), "{err}");
    }

    #[test]
    fn timestamps_are_split_off_and_round_trip_through_since() {
        let (time, line) = split_timestamp(b"2026-12-01T08:02:09.987523452Z hello world\n");
        assert_eq!(line, b"hello world\n");
        assert_eq!(since_param(time), "1796112129.987523452");
        let (none, raw) = split_timestamp(b"no stamp here\n");
        assert!(none.is_none());
        assert_eq!(raw, b"no stamp here\n");
        assert_eq!(since_param(None), "0");
    }

    #[test]
    fn the_sink_skips_what_it_wrote_before_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::in_dir(dir.path());
        let line = |ts: &str, text: &str| Frame {
            stream: Stream::Stdout,
            payload: format!("{ts} {text}\n").into_bytes(),
        };
        let mut sink = LogSink::open(&logs).unwrap();
        sink.write(&line("2026-12-01T08:00:00.000000001Z", "one"))
            .unwrap();
        sink.write(&line("2026-12-01T08:00:01.5Z", "two")).unwrap();
        sink.save().unwrap();
        drop(sink);
        // A restarted agent resumes from the cursor; the engine repeats the last line.
        let mut again = LogSink::open(&logs).unwrap();
        assert_eq!(again.since(), "1796112001.500000000");
        again.write(&line("2026-12-01T08:00:01.5Z", "two")).unwrap();
        again
            .write(&Frame {
                stream: Stream::Stderr,
                payload: b"2026-12-01T08:00:02Z three\n".to_vec(),
            })
            .unwrap();
        assert_eq!(std::fs::read_to_string(&logs.stdout).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&logs.stderr).unwrap(), "three\n");
    }
}
