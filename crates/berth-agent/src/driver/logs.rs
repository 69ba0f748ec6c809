//! Instance log files.
//!
//! The program writes its stdout and stderr straight into files opened in append mode,
//! never through a pipe to the agent: instances outlive the agent, and a program writing
//! to a pipe whose reader died would get SIGPIPE. Rotation is therefore copy-then-truncate
//! (as logrotate's `copytruncate`): the agent copies the file to `.1` and truncates the
//! original; thanks to O_APPEND the program's next write lands at the new end. Lines
//! written between the copy and the truncate are lost; that window is one copy of at most
//! `max_bytes`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogFiles {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl LogFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            stdout: dir.join("stdout.log"),
            stderr: dir.join("stderr.log"),
        }
    }

    pub fn open_for_append(path: &Path) -> std::io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }
}

/// Caps each log file at `max_bytes`, keeping `keep` rotated copies (`.1` newest).
#[derive(Debug, Clone, Copy)]
pub struct LogRotator {
    pub max_bytes: u64,
    pub keep: usize,
}

impl LogRotator {
    /// Rotates `path` if it outgrew the cap. Returns whether it rotated.
    pub fn rotate_if_needed(&self, path: &Path) -> std::io::Result<bool> {
        let size = match std::fs::metadata(path) {
            Ok(meta) => meta.len(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(err),
        };
        if size <= self.max_bytes {
            return Ok(false);
        }
        if self.keep == 0 {
            File::options().write(true).open(path)?.set_len(0)?;
            return Ok(true);
        }
        for n in (1..self.keep).rev() {
            let from = numbered(path, n);
            if from.exists() {
                std::fs::rename(&from, numbered(path, n + 1))?;
            }
        }
        std::fs::copy(path, numbered(path, 1))?;
        File::options().write(true).open(path)?.set_len(0)?;
        Ok(true)
    }
}

pub fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The last `max_lines` lines (at most `max_bytes`) of a log, reaching into the newest
/// rotated copy when the live file was just truncated. Invalid UTF-8 is replaced.
pub fn log_tail(path: &Path, max_lines: usize, max_bytes: u64) -> String {
    let mut bytes = read_tail(path, max_bytes);
    if (bytes.len() as u64) < max_bytes {
        let mut older = read_tail(&numbered(path, 1), max_bytes - bytes.len() as u64);
        older.extend_from_slice(&bytes);
        bytes = older;
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}

fn read_tail(path: &Path, max_bytes: u64) -> Vec<u8> {
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let _ = file.take(max_bytes).read_to_end(&mut bytes);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rotation_caps_the_file_and_keeps_numbered_copies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let rotator = LogRotator {
            max_bytes: 10,
            keep: 2,
        };
        let mut writer = LogFiles::open_for_append(&path).unwrap();
        for round in 0..3 {
            writeln!(writer, "round {round} line").unwrap();
            assert!(rotator.rotate_if_needed(&path).unwrap());
        }
        // The same append-mode handle keeps writing at the (new) start of the file.
        writeln!(writer, "after").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 1)).unwrap(),
            "round 2 line\n"
        );
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 2)).unwrap(),
            "round 1 line\n"
        );
        assert!(!numbered(&path, 3).exists());
        assert!(!rotator.rotate_if_needed(&path).unwrap());
    }

    #[test]
    fn tail_returns_the_last_lines_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr.log");
        std::fs::write(numbered(&path, 1), "one\ntwo\n").unwrap();
        std::fs::write(&path, "three\nfour\n").unwrap();
        assert_eq!(log_tail(&path, 3, 4096), "two\nthree\nfour");
        assert_eq!(log_tail(&path, 10, 5), "four");
        assert_eq!(log_tail(&dir.path().join("missing"), 3, 100), "");
    }
}
