//! Which instance a `berth exec` runs in, and the context it inherits there.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_core::InstanceId;
use berth_core::instance::InstanceState;

use super::Supervisor;
use crate::driver::{Driver, DriverHandle, ExecCommand};

/// A running instance and what a command started in it needs.
pub struct ExecTarget {
    pub instance: InstanceId,
    pub driver: Arc<dyn Driver>,
    pub handle: DriverHandle,
    /// The instance's environment, then the request's variables.
    pub command: ExecCommand,
}

/// What the user asked to run.
pub struct ExecWish {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
}

impl Supervisor {
    /// The instance `instance_id` names, or with none the first running instance of
    /// `app_id` on this node. `Err` says why there is none to run in.
    pub fn exec_target(
        &self,
        instance_id: &str,
        app_id: &str,
        wish: ExecWish,
    ) -> Result<ExecTarget, String> {
        let state = self.lock();
        let runs = |phase: InstanceState, stopping: bool| {
            matches!(
                phase,
                InstanceState::Running | InstanceState::Healthy | InstanceState::Unhealthy
            ) && !stopping
        };
        let slot = if instance_id.is_empty() {
            state
                .instances
                .values()
                .find(|s| {
                    s.record.spec.app_id.as_str() == app_id
                        && runs(s.record.phase, s.record.stop_requested)
                })
                .ok_or_else(|| format!("app {app_id:?} has no running instance on this node"))?
        } else {
            let slot = state
                .instances
                .iter()
                .find(|(id, _)| id.as_str() == instance_id)
                .map(|(_, slot)| slot)
                .ok_or_else(|| format!("instance {instance_id:?} is not on this node"))?;
            if !runs(slot.record.phase, slot.record.stop_requested) {
                return Err(format!(
                    "instance {instance_id} is not running (it is {}): exec needs a running instance",
                    if slot.record.stop_requested {
                        "stopping"
                    } else {
                        slot.record.phase.as_str()
                    }
                ));
            }
            slot
        };
        let record = &slot.record;
        let handle = record
            .handle
            .clone()
            .ok_or_else(|| format!("instance {} has no process yet", record.id()))?;
        let driver = self.driver_of(&handle).ok_or_else(|| {
            format!(
                "the {} driver that runs instance {} is not configured on this node",
                handle.driver,
                record.id()
            )
        })?;
        let in_container = handle.container.is_some();
        let mut env = self.env_for(&record.spec, &record.ports, in_container);
        env.extend(wish.env);
        Ok(ExecTarget {
            instance: record.id().clone(),
            command: ExecCommand {
                argv: wish.argv,
                env,
                work_dir: self.inner.store.work_dir(record.id()),
                tty: wish.tty,
                rows: wish.rows,
                cols: wish.cols,
            },
            driver,
            handle,
        })
    }
}
