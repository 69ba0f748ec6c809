//! Real state: nodes and the instances their agents report, kept in memory only.
//!
//! It is rebuilt from agents after a restart: a Hello lists what the node already runs
//! and every heartbeat carries the full instance list (level-triggered), so any single
//! heartbeat is enough to know a node completely.

use std::collections::{BTreeMap, HashMap, HashSet};

use berth_core::instance::InstanceState;
use berth_core::{InstanceId, NodeId, Resources};
use serde::Serialize;
use tokio::time::Instant;

use crate::events::{EventBus, EventKind, NewEvent};

#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub id: InstanceId,
    /// As reported; an agent may report apps the server no longer knows.
    pub app: String,
    pub version: u64,
    pub state: InstanceState,
    pub node: NodeId,
    pub ports: Vec<u32>,
    pub pid: u32,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stderr_tail: String,
    pub resources: Resources,
}

/// What a node says when it connects, decoded (see `agents::wire`).
#[derive(Debug, Clone)]
pub struct Hello {
    pub node: NodeId,
    /// As sent; empty means "use the node id".
    pub hostname: String,
    pub address: String,
    pub status_url: String,
    pub labels: BTreeMap<String, String>,
    /// As sent; empty means the process driver alone.
    pub drivers: Vec<String>,
    pub agent_version: String,
    pub total: Resources,
    /// What the node already runs.
    pub instances: Vec<Instance>,
}

/// A node's periodic report, decoded: always its full instance list.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub used: Resources,
    pub load1: f64,
    pub instances: Vec<Instance>,
}

/// `Some("healthy -> unhealthy")` when a move from `from` to `to` changes whether the
/// instance passes its health checks (first becoming healthy counts, so does losing it).
fn health_change(from: Option<InstanceState>, to: InstanceState) -> Option<String> {
    use InstanceState::{Healthy, Unhealthy};
    let name = |s: InstanceState| format!("{s:?}").to_lowercase();
    match (from, to) {
        (Some(f), t) if f == t => None,
        (Some(f @ (Healthy | Unhealthy)), t @ (Healthy | Unhealthy)) => {
            Some(format!("{} -> {}", name(f), name(t)))
        }
        (f, t @ (Healthy | Unhealthy)) => Some(format!(
            "{} -> {}",
            f.map(name).unwrap_or_else(|| "new".into()),
            name(t)
        )),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Connected and reporting.
    Ready,
    /// The stream dropped; its instances are assumed alive until the TTL runs out.
    Disconnected,
    /// No heartbeat within the TTL: its instances are replaced elsewhere.
    Lost,
}

#[derive(Debug, Serialize)]
pub struct Node {
    pub id: NodeId,
    pub hostname: String,
    pub address: String,
    /// The agent's status listener, where instance logs are read; empty if it has none.
    pub status_url: String,
    pub labels: BTreeMap<String, String>,
    pub drivers: Vec<String>,
    pub agent_version: String,
    pub total: Resources,
    /// As measured by the agent (all processes), for people; placement uses allocations.
    pub used_reported: Resources,
    pub load1: f64,
    pub status: NodeStatus,
    pub joined_at_ms: u64,
    pub instances: BTreeMap<InstanceId, Instance>,
    #[serde(skip)]
    pub last_seen: Instant,
}

/// A start the server ordered and no agent has reported yet.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    pub id: InstanceId,
    pub app: String,
    pub version: u64,
    pub node: NodeId,
    pub resources: Resources,
    #[serde(skip)]
    pub ordered_at: Instant,
}

/// Per-app launch backoff and the scheduler's last word on it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AppHealth {
    pub failures: u32,
    /// Failures already announced as a launch delay, so it is said once.
    #[serde(skip)]
    pub announced_delay: u32,
    #[serde(skip)]
    pub last_failure: Option<Instant>,
    /// Why the last placement left instances unplaced, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The latest failure, so people can see why an app will not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure_info: Option<LastFailure>,
}

/// What the last failed instance of an app said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastFailure {
    pub instance: String,
    pub at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stderr_tail: String,
}

impl AppHealth {
    pub fn note_failure(&mut self, now: Instant, info: Option<LastFailure>) {
        // An app that ran for a long stretch without failing starts its backoff afresh.
        if self
            .last_failure
            .is_some_and(|t| now.duration_since(t) >= berth_core::backoff::RESET_AFTER)
        {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(now);
        if info.is_some() {
            self.last_failure_info = info;
        }
    }
}

impl LastFailure {
    pub fn of(inst: &Instance) -> Self {
        LastFailure {
            instance: inst.id.to_string(),
            at_ms: crate::clock::unix_ms(),
            exit_code: inst.exit_code,
            message: inst.message.clone(),
            stderr_tail: inst.stderr_tail.clone(),
        }
    }
}

#[derive(Default, Serialize)]
pub struct RealState {
    pub nodes: BTreeMap<NodeId, Node>,
    pub pending: HashMap<InstanceId, Pending>,
    /// Stops sent and when, so they are not repeated every pass.
    #[serde(skip)]
    pub stop_requested: HashMap<InstanceId, Instant>,
    pub apps: HashMap<String, AppHealth>,
    /// Instances already counted as failures.
    #[serde(skip)]
    pub counted_failures: HashSet<InstanceId>,
    #[serde(skip)]
    instance_seq: u64,
}

impl RealState {
    /// A node said hello: (re)register it and adopt the instances it already runs.
    pub fn connect(&mut self, hello: Hello, now: Instant, events: &EventBus) {
        let id = hello.node.clone();
        let existed = self.nodes.contains_key(&id);
        let node = Node {
            id: id.clone(),
            hostname: if hello.hostname.is_empty() {
                id.to_string()
            } else {
                hello.hostname.clone()
            },
            address: hello.address.clone(),
            status_url: hello.status_url.clone(),
            labels: hello.labels.clone(),
            drivers: if hello.drivers.is_empty() {
                vec!["process".into()]
            } else {
                hello.drivers.clone()
            },
            agent_version: hello.agent_version.clone(),
            total: hello.total,
            used_reported: Resources::default(),
            load1: 0.0,
            status: NodeStatus::Ready,
            joined_at_ms: crate::clock::unix_ms(),
            instances: BTreeMap::new(),
            last_seen: now,
        };
        self.nodes.insert(id.clone(), node);
        events.emit(
            if existed {
                EventKind::NodeReconnected
            } else {
                EventKind::NodeJoined
            },
            NewEvent::node(&id),
            format!(
                "node {id} ({}) connected with {} and {} running instance(s)",
                hello.hostname,
                hello.total,
                hello.instances.len()
            ),
        );
        self.replace_instances(&id, hello.instances, events);
    }

    /// The node's live session ended (the caller checked it was the live one). Instances
    /// stay until the TTL says the node is lost.
    pub fn disconnect(&mut self, id: &NodeId, events: &EventBus) {
        if let Some(node) = self.nodes.get_mut(id)
            && node.status == NodeStatus::Ready
        {
            node.status = NodeStatus::Disconnected;
            events.emit(
                EventKind::NodeDisconnected,
                NewEvent::node(id),
                format!("node {id} disconnected; its instances count as running until its heartbeat TTL passes"),
            );
        }
    }

    /// Returns whether anything the reconciler cares about changed.
    pub fn heartbeat(
        &mut self,
        id: &NodeId,
        hb: Heartbeat,
        now: Instant,
        events: &EventBus,
    ) -> bool {
        let Some(node) = self.nodes.get_mut(id) else {
            return false;
        };
        let before = Self::signature(node);
        let was = node.status;
        node.last_seen = now;
        if node.status == NodeStatus::Lost {
            events.emit(
                EventKind::NodeRecovered,
                NewEvent::node(id),
                format!("node {id} reports again"),
            );
        }
        node.status = NodeStatus::Ready;
        node.used_reported = hb.used;
        node.load1 = hb.load1;
        self.replace_instances(id, hb.instances, events);
        let node = &self.nodes[id];
        was != node.status || before != Self::signature(node)
    }

    fn signature(node: &Node) -> Vec<(InstanceId, InstanceState, u64)> {
        node.instances
            .values()
            .map(|i| (i.id.clone(), i.state, i.version))
            .collect()
    }

    /// One instance changed state.
    pub fn instance_event(&mut self, id: &NodeId, inst: Instance, now: Instant, events: &EventBus) {
        let Some(node) = self.nodes.get_mut(id) else {
            return;
        };
        node.last_seen = now;
        let old = node.instances.insert(inst.id.clone(), inst.clone());
        self.observe(old.as_ref(), &inst, now, events);
    }

    fn replace_instances(&mut self, id: &NodeId, list: Vec<Instance>, events: &EventBus) {
        let now = Instant::now();
        let Some(node) = self.nodes.get_mut(id) else {
            return;
        };
        let fresh: BTreeMap<InstanceId, Instance> =
            list.into_iter().map(|i| (i.id.clone(), i)).collect();
        let old = std::mem::replace(&mut node.instances, fresh.clone());
        for inst in fresh.values() {
            self.observe(old.get(&inst.id), inst, now, events);
        }
        for (gone_id, gone) in old.iter().filter(|(k, _)| !fresh.contains_key(*k)) {
            // Gone for good: its failure was counted already, the id is no longer needed.
            self.counted_failures.remove(gone_id);
            let requested = self.stop_requested.remove(gone_id).is_some();
            if !requested && gone.state.is_active() {
                events.emit(
                    EventKind::InstanceVanished,
                    NewEvent::app(&gone.app)
                        .with_node(id)
                        .with_instance(gone_id),
                    format!("instance {gone_id} is no longer reported by node {id}"),
                );
            }
        }
    }

    /// Book-keeping when an instance is seen: pending resolved, transitions, failures.
    fn observe(
        &mut self,
        old: Option<&Instance>,
        inst: &Instance,
        now: Instant,
        events: &EventBus,
    ) {
        self.pending.remove(&inst.id);
        let from = old.map(|o| o.state);
        if from == Some(inst.state) {
            return;
        }
        let about = NewEvent::app(&inst.app)
            .with_node(&inst.node)
            .with_instance(&inst.id);
        let detail = if inst.message.is_empty() {
            String::new()
        } else {
            format!(": {}", inst.message)
        };
        let from_s = from
            .map(|s| format!("{s:?}").to_lowercase())
            .unwrap_or_else(|| "new".into());
        events.emit(
            EventKind::InstanceState,
            about,
            format!(
                "instance {} of {} on {}: {from_s} -> {}{detail}",
                inst.id,
                inst.app,
                inst.node,
                format!("{:?}", inst.state).to_lowercase()
            ),
        );
        if let Some(change) = health_change(from, inst.state) {
            events.emit(
                EventKind::InstanceHealthChanged,
                NewEvent::app(&inst.app)
                    .with_node(&inst.node)
                    .with_instance(&inst.id),
                format!(
                    "instance {} of {} on {}: {change}{detail}",
                    inst.id, inst.app, inst.node
                ),
            );
        }
        if inst.state.is_terminal() {
            let requested = self.stop_requested.contains_key(&inst.id);
            if !requested && self.counted_failures.insert(inst.id.clone()) {
                self.note_failure(&inst.app, now, Some(LastFailure::of(inst)));
            }
        }
    }

    pub fn note_failure(&mut self, app: &str, now: Instant, info: Option<LastFailure>) {
        self.apps
            .entry(app.to_string())
            .or_default()
            .note_failure(now, info);
    }

    /// The first of the numbers a pass may give new instance ids: never handed out before
    /// by this process, and above any handed out by an earlier run (they start at the
    /// start time in ms x 4096), so instance ids stay unique across server restarts
    /// without scanning every node. The pass then says how far it got
    /// ([`Self::used_instance_seqs`]).
    pub fn next_instance_seq(&mut self) -> u64 {
        if self.instance_seq == 0 {
            self.instance_seq = crate::clock::unix_ms() << 12;
        }
        self.instance_seq + 1
    }

    /// Numbers below `next` are taken.
    pub fn used_instance_seqs(&mut self, next: u64) {
        self.instance_seq = self.instance_seq.max(next.saturating_sub(1));
    }

    /// Marks nodes silent for longer than `ttl` as lost; their instances no longer count.
    pub fn mark_lost(&mut self, now: Instant, ttl: std::time::Duration, events: &EventBus) {
        for node in self.nodes.values_mut() {
            if node.status == NodeStatus::Lost || now.duration_since(node.last_seen) < ttl {
                continue;
            }
            // The stream may still be open (a hung agent can resume): its session stays.
            node.status = NodeStatus::Lost;
            for inst in node.instances.values_mut() {
                if inst.state.holds_resources() {
                    inst.state = InstanceState::Lost;
                }
            }
            events.emit(
                EventKind::NodeLost,
                NewEvent::node(&node.id),
                format!(
                    "node {} sent no heartbeat for {} ms; its {} instance(s) will be replaced elsewhere",
                    node.id,
                    now.duration_since(node.last_seen).as_millis(),
                    node.instances.len()
                ),
            );
            let id = node.id.clone();
            self.pending.retain(|_, p| p.node != id);
        }
    }

    /// Every instance the nodes report (lost ones included, in state `lost`).
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.nodes.values().flat_map(|n| n.instances.values())
    }
}

#[cfg(test)]
mod tests {
    use super::health_change;
    use berth_core::instance::InstanceState::*;

    #[test]
    fn health_changes_are_transitions_into_or_between_health_verdicts() {
        assert_eq!(
            health_change(Some(Running), Healthy).as_deref(),
            Some("running -> healthy")
        );
        assert_eq!(
            health_change(None, Healthy).as_deref(),
            Some("new -> healthy")
        );
        assert_eq!(
            health_change(Some(Healthy), Unhealthy).as_deref(),
            Some("healthy -> unhealthy")
        );
        assert_eq!(
            health_change(Some(Unhealthy), Healthy).as_deref(),
            Some("unhealthy -> healthy")
        );
        assert_eq!(health_change(Some(Healthy), Healthy), None);
        assert_eq!(
            health_change(Some(Healthy), Stopping),
            None,
            "a stop is not a verdict"
        );
        assert_eq!(health_change(Some(Starting), Running), None);
    }
}
