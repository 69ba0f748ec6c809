//! The event stream: every decision and observation, as one typed record, fanned out to
//! SSE subscribers and kept in a bounded ring for `apps show`.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

/// Kept for `GET /v1/events/recent` and the last events of an app.
const RING: usize = 2000;

/// What an event reports. Serialised (the `type` field, the SSE `event:` name) as the
/// snake_case names listed in docs/API.md, which clients match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    AgentProtocolError,
    AppCreated,
    AppDeleted,
    AppRestarted,
    AppRolledBack,
    AppScaled,
    AppUpdated,
    CommandNotDelivered,
    DeploymentCancelled,
    DeploymentFailed,
    DeploymentRolledBack,
    DeploymentStarted,
    DeploymentStep,
    DeploymentSucceeded,
    InstanceHealthChanged,
    InstanceStartOrdered,
    InstanceState,
    InstanceStopOrdered,
    InstanceVanished,
    LaunchDelayed,
    LaunchTimeout,
    LeaderElected,
    LeadershipLost,
    NodeDisconnected,
    NodeJoined,
    NodeLost,
    NodeReconnected,
    NodeRecovered,
    PlacementFailed,
    ReconcilerStarted,
    ReconcilerWaiting,
    StoreError,
}

impl EventKind {
    /// The wire name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AgentProtocolError => "agent_protocol_error",
            EventKind::AppCreated => "app_created",
            EventKind::AppDeleted => "app_deleted",
            EventKind::AppRestarted => "app_restarted",
            EventKind::AppRolledBack => "app_rolled_back",
            EventKind::AppScaled => "app_scaled",
            EventKind::AppUpdated => "app_updated",
            EventKind::CommandNotDelivered => "command_not_delivered",
            EventKind::DeploymentCancelled => "deployment_cancelled",
            EventKind::DeploymentFailed => "deployment_failed",
            EventKind::DeploymentRolledBack => "deployment_rolled_back",
            EventKind::DeploymentStarted => "deployment_started",
            EventKind::DeploymentStep => "deployment_step",
            EventKind::DeploymentSucceeded => "deployment_succeeded",
            EventKind::InstanceHealthChanged => "instance_health_changed",
            EventKind::InstanceStartOrdered => "instance_start_ordered",
            EventKind::InstanceState => "instance_state",
            EventKind::InstanceStopOrdered => "instance_stop_ordered",
            EventKind::InstanceVanished => "instance_vanished",
            EventKind::LaunchDelayed => "launch_delayed",
            EventKind::LaunchTimeout => "launch_timeout",
            EventKind::LeaderElected => "leader_elected",
            EventKind::LeadershipLost => "leadership_lost",
            EventKind::NodeDisconnected => "node_disconnected",
            EventKind::NodeJoined => "node_joined",
            EventKind::NodeLost => "node_lost",
            EventKind::NodeReconnected => "node_reconnected",
            EventKind::NodeRecovered => "node_recovered",
            EventKind::PlacementFailed => "placement_failed",
            EventKind::ReconcilerStarted => "reconciler_started",
            EventKind::ReconcilerWaiting => "reconciler_waiting",
            EventKind::StoreError => "store_error",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: u64,
    pub time_ms: u64,
    /// `app_created`, `instance_start_ordered`, `node_lost`, ... (see docs/API.md).
    #[serde(rename = "type")]
    pub kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub message: String,
}

/// Builder for one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEvent {
    pub app: Option<String>,
    pub node: Option<String>,
    pub instance: Option<String>,
}

impl NewEvent {
    pub fn app(app: impl ToString) -> Self {
        Self {
            app: Some(app.to_string()),
            ..Self::default()
        }
    }
    pub fn node(node: impl ToString) -> Self {
        Self {
            node: Some(node.to_string()),
            ..Self::default()
        }
    }
    pub fn with_node(mut self, node: impl ToString) -> Self {
        self.node = Some(node.to_string());
        self
    }
    pub fn with_instance(mut self, instance: impl ToString) -> Self {
        self.instance = Some(instance.to_string());
        self
    }
}

/// An event decided on and not emitted yet: what a computed plan says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: EventKind,
    pub about: NewEvent,
    pub message: String,
}

pub struct EventBus {
    tx: broadcast::Sender<Event>,
    ring: Mutex<(u64, VecDeque<Event>)>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(4096).0,
            ring: Mutex::new((0, VecDeque::new())),
        }
    }

    pub fn emit(&self, kind: EventKind, about: NewEvent, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(kind = kind.as_str(), app = ?about.app, node = ?about.node, instance = ?about.instance, "{message}");
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.0 += 1;
        let event = Event {
            id: ring.0,
            time_ms: crate::clock::unix_ms(),
            kind,
            app: about.app,
            node: about.node,
            instance: about.instance,
            message,
        };
        if ring.1.len() == RING {
            ring.1.pop_front();
        }
        ring.1.push_back(event.clone());
        // No subscribers is fine: the ring keeps it.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// The latest `limit` events matching `keep`, oldest first.
    pub fn recent(&self, limit: usize, keep: impl Fn(&Event) -> bool) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Event> = ring
            .1
            .iter()
            .rev()
            .filter(|e| keep(e))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_latest_and_filters() {
        let bus = EventBus::new();
        let mut rx = bus.subscribe();
        for i in 0..(RING + 5) {
            bus.emit(
                EventKind::AppCreated,
                NewEvent::app(format!("a{}", i % 2)),
                "x",
            );
        }
        let recent = bus.recent(3, |e| e.app.as_deref() == Some("a1"));
        assert_eq!(recent.len(), 3);
        assert!(recent.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(recent.last().unwrap().id, RING as u64 + 4);
        assert_eq!(rx.try_recv().unwrap().id, 1);
    }
    #[test]
    fn kinds_serialise_as_their_wire_names() {
        for kind in [
            EventKind::AgentProtocolError,
            EventKind::AppCreated,
            EventKind::AppDeleted,
            EventKind::AppRestarted,
            EventKind::AppRolledBack,
            EventKind::AppScaled,
            EventKind::AppUpdated,
            EventKind::CommandNotDelivered,
            EventKind::DeploymentCancelled,
            EventKind::DeploymentFailed,
            EventKind::DeploymentRolledBack,
            EventKind::DeploymentStarted,
            EventKind::DeploymentStep,
            EventKind::DeploymentSucceeded,
            EventKind::InstanceHealthChanged,
            EventKind::InstanceStartOrdered,
            EventKind::InstanceState,
            EventKind::InstanceStopOrdered,
            EventKind::InstanceVanished,
            EventKind::LaunchDelayed,
            EventKind::LaunchTimeout,
            EventKind::LeaderElected,
            EventKind::LeadershipLost,
            EventKind::NodeDisconnected,
            EventKind::NodeJoined,
            EventKind::NodeLost,
            EventKind::NodeReconnected,
            EventKind::NodeRecovered,
            EventKind::PlacementFailed,
            EventKind::ReconcilerStarted,
            EventKind::ReconcilerWaiting,
            EventKind::StoreError,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        assert_eq!(
            EventKind::InstanceStartOrdered.as_str(),
            "instance_start_ordered"
        );
    }
}
