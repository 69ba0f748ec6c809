//! Helpers shared by the in-process tests.
#![allow(dead_code)]

pub mod fake_nacos;
pub mod fake_server;

use std::time::Duration;

use berth_agent::supervisor::Supervisor;
use berth_proto::agent::v1 as pb;
use tokio::sync::broadcast;

pub const WAIT: Duration = Duration::from_secs(15);

/// The next event about `id`.
pub async fn next_event(
    events: &mut broadcast::Receiver<pb::InstanceStatus>,
    id: &str,
) -> pb::InstanceStatus {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("event stream open");
            if event.instance_id == id {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event about {id} within {WAIT:?}"))
}

/// Waits for an event that puts `id` into `state`.
pub async fn wait_for_state(
    events: &mut broadcast::Receiver<pb::InstanceStatus>,
    id: &str,
    state: pb::InstanceState,
) -> pb::InstanceStatus {
    let mut seen = Vec::new();
    let result = tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("event stream open");
            if event.instance_id == id {
                seen.push(format!("{:?}: {}", event.state(), event.message));
                if event.state == state as i32 {
                    return event;
                }
            }
        }
    })
    .await;
    result.unwrap_or_else(|_| panic!("{id} never became {state:?}; saw {seen:?}"))
}

pub fn status_of(sup: &Supervisor, id: &str) -> pb::InstanceStatus {
    sup.statuses()
        .into_iter()
        .find(|s| s.instance_id == id)
        .unwrap_or_else(|| panic!("{id} is not reported"))
}

/// Waits until `pid` no longer runs.
pub async fn wait_gone(pid: u32) {
    tokio::time::timeout(WAIT, async {
        while berth_agent::procfs::stat(pid).is_some_and(|s| s.is_alive()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("process {pid} still runs"));
}

/// Polls `check` until it holds.
pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

/// Instances outlive agents by design, so a test must end them itself: when dropped
/// (also on a failed assertion), kills what the shared [`berth_testkit::InstanceReaper`]
/// kills: the process group of every instance recorded under the data folder that is
/// still the recorded process.
pub struct Reaper(pub std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        // The shared reaper reaps when it is dropped, here and now.
        drop(berth_testkit::InstanceReaper::new([&self.0]));
    }
}
