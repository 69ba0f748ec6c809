//! The event stream: every decision and observation, as one typed record, fanned out to
//! SSE subscribers and kept in a bounded ring for `apps show`.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

/// Kept for `GET /v1/events/recent` and the last events of an app.
const RING: usize = 2000;

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: u64,
    pub time_ms: u64,
    /// `app_created`, `instance_start_ordered`, `node_lost`, ... (see docs/API.md).
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub message: String,
}

/// Builder for one event.
#[derive(Debug, Default)]
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

    pub fn emit(&self, kind: &'static str, about: NewEvent, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(kind, app = ?about.app, node = ?about.node, instance = ?about.instance, "{message}");
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
            bus.emit("app_created", NewEvent::app(format!("a{}", i % 2)), "x");
        }
        let recent = bus.recent(3, |e| e.app.as_deref() == Some("a1"));
        assert_eq!(recent.len(), 3);
        assert!(recent.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(recent.last().unwrap().id, RING as u64 + 4);
        assert_eq!(rx.try_recv().unwrap().id, 1);
    }
}
