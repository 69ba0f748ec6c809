//! Instance records: what the agent knows about each instance, persisted in the data
//! folder so a restarted agent finds (and re-adopts) what it ran before.
//!
//! Layout: `<data>/instances/<instance_id>/instance.json` beside the instance's `work/`
//! folder and log files. Each record is written to a temporary file, synced, then renamed
//! over the old one, so a crash leaves either the old or the new record, never half.

use std::io::Write;
use std::path::{Path, PathBuf};

use berth_core::InstanceId;
use berth_core::instance::{InstanceState, InstanceStatus};
use berth_core::launch::InstanceSpec;
use berth_proto::agent::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::driver::{DriverHandle, Exit, LogFiles};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub spec: InstanceSpec,
    pub ports: Vec<u16>,
    pub handle: Option<DriverHandle>,
    pub phase: InstanceState,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
    pub exit: Option<Exit>,
    pub message: String,
    pub stderr_tail: String,
    /// Set once a stop was asked for, so the exit that follows counts as wanted.
    pub stop_requested: bool,
}

impl InstanceRecord {
    pub fn id(&self) -> &InstanceId {
        &self.spec.instance_id
    }

    pub fn to_status(&self) -> pb::InstanceStatus {
        berth_wire::status_to_pb(&InstanceStatus {
            instance_id: self.spec.instance_id.clone(),
            app_id: self.spec.app_id.to_string(),
            app_version: self.spec.app_version,
            state: self.phase,
            ports: self.ports.iter().map(|p| u32::from(*p)).collect(),
            pid: self.handle.as_ref().map(|h| h.pid).unwrap_or(0),
            started_at_ms: self.started_at_ms,
            updated_at_ms: self.updated_at_ms,
            exit_code: self.exit.and_then(|exit| exit.code()),
            message: self.message.clone(),
            stderr_tail: self.stderr_tail.clone(),
            resources: self.spec.resources,
        })
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot {action} instance record {path}: {source}")]
pub struct RecordError {
    pub action: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The instances folder of the data folder.
#[derive(Debug, Clone)]
pub struct RecordStore {
    root: PathBuf,
}

impl RecordStore {
    pub fn open(data_dir: &Path) -> Result<Self, RecordError> {
        let root = data_dir.join("instances");
        std::fs::create_dir_all(&root).map_err(|source| RecordError {
            action: "create the folder of",
            path: root.clone(),
            source,
        })?;
        Ok(Self { root })
    }

    pub fn instance_dir(&self, id: &InstanceId) -> PathBuf {
        self.root.join(id.as_str())
    }

    pub fn work_dir(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("work")
    }

    pub fn logs(&self, id: &InstanceId) -> LogFiles {
        LogFiles::in_dir(&self.instance_dir(id))
    }

    fn record_path(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("instance.json")
    }

    pub fn save(&self, record: &InstanceRecord) -> Result<(), RecordError> {
        let path = self.record_path(record.id());
        let err = |action, source| RecordError {
            action,
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(self.instance_dir(record.id())).map_err(|e| err("create", e))?;
        let json = serde_json::to_vec_pretty(record).map_err(|e| err("encode", e.into()))?;
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(|e| err("write", e))?;
        file.write_all(&json).map_err(|e| err("write", e))?;
        file.sync_all().map_err(|e| err("sync", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err("replace", e))
    }

    /// Every readable record. A record that cannot be read (corrupt, from a future
    /// version) is moved aside as `instance.json.bad` and reported, never deleted, so an
    /// operator can look at it; the agent keeps running without it.
    pub fn load_all(&self) -> (Vec<InstanceRecord>, Vec<String>) {
        let mut records = Vec::new();
        let mut problems = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return (records, problems);
        };
        for entry in entries.flatten() {
            let path = entry.path().join("instance.json");
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            match serde_json::from_slice::<InstanceRecord>(&bytes) {
                Ok(record) => records.push(record),
                Err(err) => {
                    let aside = path.with_extension("json.bad");
                    let _ = std::fs::rename(&path, &aside);
                    problems.push(format!(
                        "instance record {} is unreadable ({err}); moved to {}",
                        path.display(),
                        aside.display()
                    ));
                }
            }
        }
        records.sort_by_key(|r| r.started_at_ms);
        (records, problems)
    }

    /// Removes an instance's folder (record, work folder and logs).
    pub fn remove(&self, id: &InstanceId) {
        let _ = std::fs::remove_dir_all(self.instance_dir(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::ResourceRequest;
    use berth_core::launch::CommandLine;

    pub(crate) fn record(id: &str) -> InstanceRecord {
        InstanceRecord {
            spec: InstanceSpec {
                instance_id: InstanceId::try_from(id.to_string()).unwrap(),
                app_id: berth_core::AppId::parse("shop/web").unwrap(),
                app_version: 2,
                command: Some(CommandLine::Shell("true".into())),
                image: None,
                driver: "process".into(),
                env: Default::default(),
                port_count: 1,
                resources: ResourceRequest::default(),
                health_checks: vec![],
                routes: vec!["web.example".into()],
                labels: Default::default(),
            },
            ports: vec![20001],
            handle: None,
            phase: InstanceState::Running,
            started_at_ms: 1,
            updated_at_ms: 2,
            exit: Some(Exit::Signal(9)),
            message: String::new(),
            stderr_tail: String::new(),
            stop_requested: false,
        }
    }

    /// Records written before the agent took berth-core's types still load: the launch
    /// spec kept their form (cpus as asked for, states and commands in snake case).
    #[test]
    fn records_of_earlier_agents_load() {
        let json = r#"{
            "spec": {
                "instance_id": "a", "app_id": "shop/web", "app_version": 2,
                "command": {"shell": "true"}, "driver": "process", "env": {},
                "port_count": 1,
                "resources": {"cpus": 0.25, "mem_mib": 64, "disk_mib": 0},
                "health_checks": [{
                    "kind": {"http": {"path": "/healthz"}}, "port_index": 0,
                    "grace": {"secs": 30, "nanos": 0}, "interval": {"secs": 2, "nanos": 0},
                    "timeout": {"secs": 1, "nanos": 0}, "max_consecutive_failures": 3
                }],
                "routes": ["web.example"], "labels": {}
            },
            "ports": [20001], "handle": null, "phase": "running",
            "started_at_ms": 1, "updated_at_ms": 2, "exit": {"Signal": 9},
            "message": "", "stderr_tail": "", "stop_requested": false
        }"#;
        let loaded: InstanceRecord = serde_json::from_str(json).unwrap();
        let mut expected = record("a");
        expected.spec.resources.cpus = 0.25;
        expected.spec.resources.mem_mib = 64;
        expected.spec.health_checks = vec![berth_core::launch::HealthCheckSpec {
            kind: berth_core::launch::CheckKind::Http {
                path: "/healthz".into(),
            },
            port_index: 0,
            grace: std::time::Duration::from_secs(30),
            interval: std::time::Duration::from_secs(2),
            timeout: std::time::Duration::from_secs(1),
            max_consecutive_failures: 3,
        }];
        assert_eq!(loaded, expected);
        let written: serde_json::Value = serde_json::to_value(&loaded).unwrap();
        let original: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(written, original, "and are written back the same way");
    }

    #[test]
    fn records_round_trip_and_a_corrupt_one_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let a = record("a");
        store.save(&a).unwrap();
        store.save(&record("b")).unwrap();
        std::fs::write(store.record_path(record("b").id()), b"{ not json").unwrap();
        let (records, problems) = store.load_all();
        assert_eq!(records, vec![a.clone()]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("moved to"), "{problems:?}");
        assert!(
            store
                .instance_dir(record("b").id())
                .join("instance.json.bad")
                .exists()
        );
        assert_eq!(a.to_status().exit_code, Some(137));
        store.remove(a.id());
        assert!(store.load_all().0.is_empty());
    }
}
