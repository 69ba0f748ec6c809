//! The route cache: every source's entries written to one JSON file after each table
//! swap (temp file + fsync + rename, so a crash never leaves half a file), and read at
//! start so a router whose sources are unreachable still serves the last known routes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::store::{RouteStore, SourceMap};

const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    generation: u64,
    sources: SourceMap,
}

/// Reads the cache; `Ok(None)` when the file does not exist yet.
pub fn load(path: &Path) -> Result<Option<SourceMap>, Error> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cache_err(path, format!("cannot read: {e}"))),
    };
    let file: CacheFile = serde_json::from_slice(&data).map_err(|e| {
        cache_err(
            path,
            format!("not a route cache ({e}); delete it or point --route-cache elsewhere"),
        )
    })?;
    if file.version != VERSION {
        return Err(cache_err(
            path,
            format!(
                "cache version {} is not {VERSION}; delete the file",
                file.version
            ),
        ));
    }
    Ok(Some(file.sources))
}

/// Writes the cache atomically.
pub fn write(path: &Path, generation: u64, sources: SourceMap) -> Result<(), Error> {
    let file = CacheFile {
        version: VERSION,
        generation,
        sources,
    };
    let data = serde_json::to_vec(&file).map_err(|e| cache_err(path, e.to_string()))?;
    let tmp = tmp_path(path);
    let result = (|| {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        cache_err(path, format!("cannot write: {e}"))
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn cache_err(path: &Path, reason: String) -> Error {
    Error::Cache {
        path: path.to_path_buf(),
        reason,
    }
}

/// Writes the cache after every swap (coalescing bursts) until `stop`, then once more.
pub async fn run_writer(store: Arc<RouteStore>, path: PathBuf, stop: CancellationToken) {
    let mut changes = store.subscribe();
    let mut written = 0u64;
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            r = changes.changed() => r.is_err(),
        };
        // Let a burst of swaps settle into one write.
        if !stopping {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (generation, sources) = store.sources();
        if generation != written {
            let path = path.clone();
            let result =
                tokio::task::spawn_blocking(move || write(&path, generation, sources)).await;
            match result {
                Ok(Ok(())) => written = generation,
                Ok(Err(e)) => tracing::warn!(error = %e, "route cache not updated"),
                Err(e) => tracing::warn!(error = %e, "route cache writer failed"),
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{EndpointSpec, LbAlgorithm, RouteEntry, RouteKey};

    #[test]
    fn round_trips_and_reports_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/routes.json");
        assert!(load(&path).unwrap().is_none());
        let mut sources = SourceMap::new();
        sources.insert(
            "nats".into(),
            vec![RouteEntry {
                key: RouteKey::parse("a.example/x").unwrap(),
                lb: LbAlgorithm::LeastConnection,
                endpoints: vec![EndpointSpec::new("127.0.0.1:9".parse().unwrap())],
            }],
        );
        write(&path, 3, sources.clone()).unwrap();
        assert_eq!(load(&path).unwrap().unwrap(), sources);
        assert!(!tmp_path(&path).exists());
        std::fs::write(&path, b"{garbage").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("delete it"), "{e}");
    }
}
