//! Re-adoption after an agent restart: every record of the data folder is matched with
//! its process (pid, start time, boot), and what ended meanwhile is reported as exited.

use berth_core::instance::InstanceState;

use crate::driver::{Exit, log_tail};

use super::{Slot, Supervisor};

impl Supervisor {
    /// Re-adopts what a previous agent process ran. Returns problems worth logging.
    pub fn recover(&self) -> Vec<String> {
        let (records, problems) = self.inner.store.load_all();
        for mut record in records {
            let id = record.id().clone();
            if record.phase.is_terminal() {
                self.lock().instances.insert(id, Slot::new(record));
                continue;
            }
            let adopted = record
                .handle
                .as_ref()
                .and_then(|handle| Some((handle, self.driver_of(handle)?)))
                .and_then(|(handle, driver)| Some((driver.adopt(handle)?, driver)));
            match adopted {
                Some((running, driver)) => {
                    tracing::info!(instance = %id, pid = running.handle.pid, "re-adopted a running instance");
                    let mut state = self.lock();
                    state.ports.reserve(&record.ports);
                    let stopping = record.stop_requested;
                    let previously_healthy = record.phase == InstanceState::Healthy;
                    state.instances.insert(id.clone(), Slot::new(record));
                    drop(state);
                    self.watch_exit(id.clone(), running.exit);
                    if stopping {
                        let handle = running.handle.clone();
                        let grace = self.inner.config.default_grace;
                        self.inner.tasks.spawn(async move {
                            let _ = driver.stop(&handle, grace).await;
                        });
                    } else {
                        self.spawn_monitor(&id, previously_healthy);
                    }
                }
                None => {
                    record.phase = InstanceState::Exited;
                    record.exit = Some(Exit::Unknown);
                    record.message = if record.stop_requested {
                        "stopped while the agent was not running".to_string()
                    } else {
                        "exited while the agent was not running (exit status unknown)".to_string()
                    };
                    let logs = self.inner.store.logs(&id);
                    record.stderr_tail =
                        log_tail(&logs.stderr, self.inner.config.stderr_tail_lines, 4096);
                    self.inner.metrics.exit("lost");
                    self.commit(&mut record);
                    self.lock().instances.insert(id, Slot::new(record));
                }
            }
        }
        problems
    }

    /// Removes this node's containers that no instance record knows (their record was
    /// lost with a wiped data folder, or a start was cut off before it was recorded): a
    /// container the agent cannot account for would hold its port and resources forever.
    /// Returns the names removed.
    pub async fn sweep_orphan_containers(&self) -> Vec<String> {
        let Some(docker) = self.inner.drivers.docker() else {
            return Vec::new();
        };
        let node = self.inner.config.node_id.clone();
        let names = match docker.api().containers_labelled("berth.node", &node).await {
            Ok(names) => names,
            Err(err) => {
                tracing::warn!("cannot list this node's containers: {err}");
                return Vec::new();
            }
        };
        let known: std::collections::HashSet<String> = self
            .lock()
            .instances
            .values()
            .filter_map(|slot| slot.record.handle.as_ref()?.container.as_ref())
            .map(|container| container.name.clone())
            .collect();
        let mut removed = Vec::new();
        for name in names.into_iter().filter(|name| !known.contains(name)) {
            match docker.api().remove(&name).await {
                Ok(()) => {
                    tracing::warn!(container = %name, "removed a container no instance record knows");
                    removed.push(name);
                }
                Err(err) => {
                    tracing::warn!(container = %name, "cannot remove an unknown container: {err}")
                }
            }
        }
        removed
    }
}
