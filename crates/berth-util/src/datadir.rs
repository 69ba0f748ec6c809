//! A role's data folder: created private (0700) and locked, so two processes never
//! write the same state (the second one gets an error naming the folder instead).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data folder {path}: {source}; choose a writable --data-dir")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data folder {path} is in use by another berth process (lock {lock}); stop that process or pass another --data-dir"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("cannot lock data folder {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An open, exclusively locked data folder. The lock is released when this is dropped
/// (or the process dies: the OS drops the lock with the file descriptor).
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    pub const LOCK_FILE: &'static str = ".lock";

    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataDirError> {
        let path = path.as_ref().to_path_buf();
        let create = |source| DataDirError::Create {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&path).map_err(create)?;
        // State may hold secrets and instance environments: owner only.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(create)?;
        let lock_path = path.join(Self::LOCK_FILE);
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(create)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(DataDirError::Locked {
                    path,
                    lock: lock_path,
                });
            }
            Err(TryLockError::Error(source)) => return Err(DataDirError::Lock { path, source }),
        }
        // The pid helps an operator find the holder; failing to write it is harmless.
        let _ = lock.set_len(0);
        let _ = writeln!(lock, "{}", std::process::id());
        Ok(Self { path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

/// Writes `bytes` to `path` atomically: a reader (or a crash) sees the old file or the new
/// one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // Persist the rename itself.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_private_and_locked_against_a_second_opener() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("state");
        let first = DataDir::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let err = DataDir::open(&path).unwrap_err();
        assert!(matches!(err, DataDirError::Locked { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert!(err.to_string().contains("--data-dir"));

        drop(first);
        DataDir::open(&path).expect("lock released on drop");
    }

    #[test]
    fn uncreatable_folder_is_an_error() {
        let err = DataDir::open("/proc/berth-cannot-exist").unwrap_err();
        assert!(matches!(err, DataDirError::Create { .. }), "{err}");
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("table.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }
}
