//! Re-adoption after an agent restart: every record of the data folder is matched with
//! its process (pid, start time, boot), and what ended meanwhile is reported as exited.

use crate::driver::{Exit, log_tail};
use crate::record::Phase;

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
                    let previously_healthy = record.phase == Phase::Healthy;
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
                    record.phase = Phase::Exited;
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
}
