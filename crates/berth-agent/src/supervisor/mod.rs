//! The supervisor owns the instances of this node: it starts and stops them through the
//! driver, records every transition (persisted, then broadcast as an event), re-adopts
//! instances after an agent restart and keeps their log files in bounds.
//!
//! Start and stop are idempotent by instance id: a repeated start answers with the
//! instance's current status; a stop of an instance that is stopping or gone does nothing
//! more than repeat its status.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_core::InstanceId;
use berth_core::ResourceRequest;
use berth_core::instance::InstanceState;
use berth_proto::agent::v1 as pb;
use futures::future::BoxFuture;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::driver::{Driver, Drivers, Exit, LaunchSpec, LogRotator, log_tail};
use crate::health::Prober;
use crate::metrics::AgentMetrics;
use crate::monitor::{self, MonitorCtx};
use crate::ports::{PortAllocator, PortRange};

use crate::record::{InstanceRecord, RecordStore, now_ms};
use crate::registry::NacosClient;
use crate::tasks::Tasks;

mod env;
mod exec;
mod housekeeping;
mod recover;

pub use exec::{ExecTarget, ExecWish};

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub node_id: String,
    /// The address instances are reached at; `HOST` and the registry registration.
    pub advertise: String,
    pub port_range: PortRange,
    pub log_rotator: LogRotator,
    /// How often log sizes are checked and finished instances are forgotten.
    pub housekeeping_interval: Duration,
    /// How long an exited instance stays in the reports (and its folder on disk).
    pub terminal_retention: Duration,
    pub stderr_tail_lines: usize,
    pub registry_beat: Duration,
    /// Grace used when a stop interrupted by an agent restart is resumed.
    pub default_grace: Duration,
    /// Value of `BERTH_LOG_ADDR` given to instances, when the agent has a log intake.
    pub log_addr: Option<String>,
}

#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    config: SupervisorConfig,
    drivers: Drivers,
    store: RecordStore,
    registry: Option<NacosClient>,
    prober: Prober,
    tasks: Tasks,
    state: Mutex<State>,
    events: broadcast::Sender<pb::InstanceStatus>,
    metrics: Arc<AgentMetrics>,
}

struct State {
    instances: BTreeMap<InstanceId, Slot>,
    ports: PortAllocator,
}

struct Slot {
    record: InstanceRecord,
    /// Cancelled when the instance stops or ends: its monitor deregisters and returns.
    monitor_cancel: CancellationToken,
    monitor: Option<JoinHandle<()>>,
}

impl Slot {
    fn new(record: InstanceRecord) -> Self {
        Self {
            record,
            monitor_cancel: CancellationToken::new(),
            monitor: None,
        }
    }
}

impl Supervisor {
    pub fn new(
        config: SupervisorConfig,
        drivers: Drivers,
        store: RecordStore,
        registry: Option<NacosClient>,
        tasks: Tasks,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        let ports = PortAllocator::new(config.port_range);
        Self {
            inner: Arc::new(Inner {
                config,
                drivers,
                store,
                registry,
                prober: Prober::new(),
                tasks,
                state: Mutex::new(State {
                    instances: BTreeMap::new(),
                    ports,
                }),
                events,
                metrics,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<pb::InstanceStatus> {
        self.inner.events.subscribe()
    }

    pub fn statuses(&self) -> Vec<pb::InstanceStatus> {
        self.lock()
            .instances
            .values()
            .map(|slot| slot.record.to_status())
            .collect()
    }

    pub fn drivers(&self) -> Vec<String> {
        self.inner.drivers.names()
    }

    /// The host pid of a container instance's init, from the engine.
    pub async fn container_pid(&self, id: &InstanceId) -> Option<u32> {
        let name = {
            let state = self.lock();
            let handle = state.instances.get(id)?.record.handle.as_ref()?;
            handle.container.as_ref()?.name.clone()
        };
        let docker = self.inner.drivers.docker()?;
        let state = docker.api().inspect(&name).await.ok()??;
        (state.running && state.pid != 0).then_some(state.pid)
    }

    /// The driver that runs (or ran) an instance, from its handle.
    fn driver_of(&self, handle: &crate::driver::DriverHandle) -> Option<Arc<dyn Driver>> {
        self.inner.drivers.by_name(&handle.driver).cloned()
    }

    /// Resources claimed by instances that still run.
    pub fn used(&self) -> ResourceRequest {
        let state = self.lock();
        let mut used = ResourceRequest::default();
        for slot in state.instances.values() {
            if !slot.record.phase.is_terminal() {
                used = used + slot.record.spec.resources;
            }
        }
        used
    }

    pub fn metrics(&self) -> &AgentMetrics {
        &self.inner.metrics
    }

    /// Persists and broadcasts the record's current state.
    fn commit(&self, record: &mut InstanceRecord) {
        record.updated_at_ms = now_ms();
        if let Err(err) = self.inner.store.save(record) {
            // The instance still runs; only an agent restart would lose track of it.
            tracing::error!(instance = %record.id(), "{err}");
        }
        let _ = self.inner.events.send(record.to_status());
    }

    /// Carries out a `StartInstance`.
    pub fn start_instance(&self, start: &pb::StartInstance) {
        let spec = match berth_wire::launch_from_pb(start) {
            Ok(spec) => spec,
            Err(err) => {
                tracing::warn!(instance = %start.instance_id, "refused to start: {err}");
                // Nothing to keep: the request is unusable. The server still hears why.
                let now = now_ms();
                let _ = self.inner.events.send(pb::InstanceStatus {
                    instance_id: start.instance_id.clone(),
                    app_id: start.app_id.clone(),
                    app_version: start.app_version,
                    state: pb::InstanceState::Failed as i32,
                    started_at_ms: now,
                    updated_at_ms: now,
                    message: err.to_string(),
                    ..Default::default()
                });
                return;
            }
        };
        let id = spec.instance_id.clone();
        let mut state = self.lock();
        if let Some(slot) = state.instances.get(&id) {
            tracing::debug!(instance = %id, "start of a known instance: repeating its status");
            let _ = self.inner.events.send(slot.record.to_status());
            return;
        }
        let now = now_ms();
        let mut record = InstanceRecord {
            spec,
            ports: Vec::new(),
            handle: None,
            phase: InstanceState::Starting,
            started_at_ms: now,
            updated_at_ms: now,
            exit: None,
            message: String::new(),
            stderr_tail: String::new(),
            stop_requested: false,
        };
        let result = self.launch(&mut state, &mut record);
        match result {
            Ok(exit) => {
                self.inner.metrics.instance_starts.inc();
                record.phase = InstanceState::Running;
                record.message = "process started".to_string();
                tracing::info!(instance = %id, app = %record.spec.app_id, ports = ?record.ports, "instance started");
                self.commit(&mut record);
                state.instances.insert(id.clone(), Slot::new(record));
                drop(state);
                self.watch_exit(id.clone(), exit);
                self.spawn_monitor(&id, false);
            }
            Err(message) => {
                tracing::warn!(instance = %id, "instance failed to start: {message}");
                state.ports.release(&record.ports);
                record.phase = InstanceState::Failed;
                record.message = message;
                self.inner.metrics.exit("failed");
                self.commit(&mut record);
                state.instances.insert(id, Slot::new(record));
            }
        }
    }

    fn launch(
        &self,
        state: &mut State,
        record: &mut InstanceRecord,
    ) -> Result<BoxFuture<'static, Exit>, String> {
        let driver = self
            .inner
            .drivers
            .for_instance(&record.spec)
            .map_err(|why| format!("{why} (node {})", self.inner.config.node_id))?
            .clone();
        record.ports = state
            .ports
            .allocate(record.spec.port_count)
            .map_err(|err| err.to_string())?;
        let id = record.id().clone();
        let launch = LaunchSpec {
            instance_id: id.clone(),
            command: record.spec.command.clone(),
            image: record.spec.image.clone(),
            env: self.env_for(&record.spec, &record.ports, driver.name() == "docker"),
            labels: self.labels_for(&record.spec),
            resources: record.spec.resources,
            work_dir: self.inner.store.work_dir(&id),
            logs: self.inner.store.logs(&id),
        };
        let running = driver.start(&launch).map_err(|err| err.to_string())?;
        record.handle = Some(running.handle);
        Ok(running.exit)
    }

    fn watch_exit(&self, id: InstanceId, exit: BoxFuture<'static, Exit>) {
        let this = self.clone();
        let token = self.inner.tasks.token().clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                exit = exit => this.on_exit(&id, exit),
                // The agent stops; the instance keeps running and is re-adopted later.
                _ = token.cancelled() => {}
            }
        });
    }

    fn on_exit(&self, id: &InstanceId, exit: Exit) {
        let mut state = self.lock();
        let State { instances, ports } = &mut *state;
        let Some(slot) = instances.get_mut(id) else {
            return;
        };
        slot.monitor_cancel.cancel();
        ports.release(&slot.record.ports);
        let record = &mut slot.record;
        record.exit = Some(exit);
        let (phase, outcome) = if record.stop_requested {
            (InstanceState::Exited, "stopped")
        } else if exit.success() {
            (InstanceState::Exited, "exited")
        } else {
            (InstanceState::Failed, "failed")
        };
        record.phase = phase;
        record.message = if record.stop_requested && exit == Exit::Unknown {
            "stopped".to_string()
        } else if record.stop_requested {
            format!("stopped: {exit}")
        } else {
            exit.to_string()
        };
        if !exit.success() {
            let logs = self.inner.store.logs(id);
            record.stderr_tail = log_tail(&logs.stderr, self.inner.config.stderr_tail_lines, 4096);
        }
        tracing::info!(instance = %id, "instance {}", record.message);
        self.inner.metrics.exit(outcome);
        self.commit(record);
    }

    /// Carries out a `StopInstance`: deregister, wait `drain_ms`, then SIGTERM, `grace_ms`,
    /// SIGKILL.
    pub fn stop_instance(&self, stop: &pb::StopInstance) {
        let Ok(id) = InstanceId::try_from(stop.instance_id.clone()) else {
            tracing::warn!(instance = %stop.instance_id, "stop of an invalid instance id ignored");
            return;
        };
        let mut state = self.lock();
        let Some(slot) = state.instances.get_mut(&id) else {
            tracing::info!(instance = %id, "stop of an unknown instance: nothing to do");
            return;
        };
        if slot.record.phase.is_terminal() || slot.record.stop_requested {
            let _ = self.inner.events.send(slot.record.to_status());
            return;
        }
        let Some(handle) = slot.record.handle.clone() else {
            return;
        };
        slot.record.stop_requested = true;
        slot.record.phase = InstanceState::Stopping;
        slot.record.message = if stop.reason.is_empty() {
            "stop requested".to_string()
        } else {
            format!("stopping: {}", stop.reason)
        };
        self.commit(&mut slot.record);
        slot.monitor_cancel.cancel();
        let monitor = slot.monitor.take();
        drop(state);
        let drain = Duration::from_millis(u64::from(stop.drain_ms));
        let grace = Duration::from_millis(u64::from(stop.grace_ms));
        let Some(driver) = self.driver_of(&handle) else {
            tracing::error!(instance = %id, driver = %handle.driver, "stop: the driver that started it is not configured on this node");
            return;
        };
        let token = self.inner.tasks.token().clone();
        self.inner.tasks.spawn(async move {
            let stop = async {
                // The monitor deregisters on its way out; only then may traffic drain.
                if let Some(monitor) = monitor {
                    let _ = monitor.await;
                }
                tokio::time::sleep(drain).await;
                if let Err(err) = driver.stop(&handle, grace).await {
                    tracing::error!(instance = %id, "{err}");
                }
            };
            tokio::select! {
                () = stop => {}
                // Resumed after the restart (the record says stop_requested).
                _ = token.cancelled() => {}
            }
        });
    }

    fn spawn_monitor(&self, id: &InstanceId, previously_healthy: bool) {
        let mut state = self.lock();
        let Some(slot) = state.instances.get_mut(id) else {
            return;
        };
        if slot.record.stop_requested || slot.record.phase.is_terminal() {
            return;
        }
        let spec = slot.record.spec.clone();
        let inside = slot.record.handle.clone().and_then(|handle| {
            let driver = self.driver_of(&handle)?;
            Some(monitor::Inside { driver, handle })
        });
        let in_container = inside
            .as_ref()
            .is_some_and(|i| i.handle.container.is_some());
        let ctx = MonitorCtx {
            env: self.env_for(&spec, &slot.record.ports, in_container),
            inside,
            work_dir: self.inner.store.work_dir(id),
            ports: slot.record.ports.clone(),
            spec,
            cancel: slot.monitor_cancel.clone(),
            agent: self.inner.tasks.token().clone(),
            prober: self.inner.prober.clone(),
            registry: self.inner.registry.clone(),
            advertise: self.inner.config.advertise.clone(),
            node_id: self.inner.config.node_id.clone(),
            beat_interval: self.inner.config.registry_beat,
            previously_healthy,
        };
        let this = self.clone();
        slot.monitor = Some(self.inner.tasks.spawn(monitor::run(ctx, this)));
    }

    /// Called by the monitor: a health verdict. Ignored once the instance is stopping.
    pub(crate) fn set_health(&self, id: &InstanceId, phase: InstanceState, message: String) {
        let mut state = self.lock();
        let Some(slot) = state.instances.get_mut(id) else {
            return;
        };
        let record = &mut slot.record;
        if record.stop_requested || record.phase.is_terminal() || record.phase == phase {
            return;
        }
        tracing::info!(instance = %id, "instance {}: {message}", phase.as_str());
        record.phase = phase;
        record.message = message;
        self.commit(record);
    }
}
