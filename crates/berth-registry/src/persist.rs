//! Durable part of the naming state: services (their metadata) and persistent
//! instances, in one JSON file written atomically (temp file, fsync, rename).
//!
//! Ephemeral instances are never stored: they come back with their clients' beats.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{Instance, ServiceKey};
use crate::naming::{Naming, Op};

const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    version: u32,
    services: Vec<StoredService>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredService {
    key: ServiceKey,
    metadata: std::collections::BTreeMap<String, String>,
    protect_threshold: f32,
    selector: Option<String>,
    #[serde(default)]
    clusters: std::collections::BTreeMap<String, crate::model::ClusterConfig>,
    instances: Vec<Instance>,
}

/// Why the stored state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read registry state {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "registry state {path} is not valid ({source}); it was left untouched: fix it or move it aside to start empty"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write registry state {path}: {source}; check free space and permissions")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes every service and its persistent instances to `path`.
pub fn save(path: &Path, naming: &Naming) -> Result<(), PersistError> {
    let mut services: Vec<StoredService> = naming
        .services()
        .map(|s| StoredService {
            key: s.key.clone(),
            metadata: s.metadata.clone(),
            protect_threshold: s.protect_threshold,
            selector: s.selector.clone(),
            clusters: s.clusters.clone(),
            instances: s
                .instances
                .values()
                .filter(|i| !i.ephemeral)
                .map(|i| (**i).clone())
                .collect(),
        })
        .collect();
    services.sort_by(|a, b| a.key.cmp(&b.key));
    let stored = Stored {
        version: FORMAT_VERSION,
        services,
    };
    let bytes = serde_json::to_vec_pretty(&stored).map_err(|e| PersistError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    write().map_err(|source| PersistError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads `path` back as ops to replay; a missing file is an empty registry.
pub fn load(path: &Path) -> Result<Vec<Op>, PersistError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PersistError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let stored: Stored =
        serde_json::from_slice(&bytes).map_err(|source| PersistError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
    let mut ops = Vec::new();
    for s in stored.services {
        ops.push(Op::CreateService {
            service: s.key.clone(),
            metadata: s.metadata,
            protect_threshold: s.protect_threshold,
            selector: s.selector,
        });
        for (cluster, config) in s.clusters {
            ops.push(Op::UpdateCluster {
                service: s.key.clone(),
                cluster,
                config,
            });
        }
        for instance in s.instances {
            ops.push(Op::Register {
                service: s.key.clone(),
                instance,
            });
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DEFAULT_CLUSTER;

    #[test]
    fn persistent_instances_round_trip_and_ephemeral_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("naming.json");
        let mut n = Naming::default();
        let s = ServiceKey::simple("db");
        let mut p = Instance::new(&s, "10.0.0.1", 5432, DEFAULT_CLUSTER);
        p.ephemeral = false;
        let e = Instance::new(&s, "10.0.0.2", 5432, DEFAULT_CLUSTER);
        for i in [p.clone(), e] {
            n.apply(Op::Register {
                service: s.clone(),
                instance: i,
            })
            .unwrap();
        }
        save(&path, &n).unwrap();
        let mut restored = Naming::default();
        for op in load(&path).unwrap() {
            restored.apply(op).unwrap();
        }
        let svc = restored.get(&s).unwrap();
        assert_eq!(svc.instances.len(), 1);
        assert_eq!(**svc.instances.values().next().unwrap(), p);
    }

    #[test]
    fn corrupt_file_is_an_error_and_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("naming.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.to_string().contains("move it aside"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"{not json");
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("nope.json")).unwrap().is_empty());
    }
}
