//! The open agent sessions: for each connected node, the number of its live session and
//! the sender of its command stream. Real state keeps what agents reported; this keeps
//! how to reach them.
//!
//! Lock order: a caller holding the real-state lock may take this one, never the other
//! way round, so "is this session current" and the state change it guards stay atomic.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use berth_core::NodeId;
use berth_proto::agent::v1 as pb;
use tokio::sync::mpsc;

struct Session {
    number: u64,
    tx: mpsc::Sender<pb::ServerMessage>,
}

#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    open: HashMap<NodeId, Session>,
    last_number: u64,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the node's new session (replacing an older one, whose sender is
    /// dropped); returns its number.
    pub fn open(&self, node: &NodeId, tx: mpsc::Sender<pb::ServerMessage>) -> u64 {
        let mut inner = self.lock();
        inner.last_number += 1;
        let number = inner.last_number;
        inner.open.insert(node.clone(), Session { number, tx });
        number
    }

    /// True when `session` is still the node's live session.
    pub fn is_current(&self, node: &NodeId, session: u64) -> bool {
        self.lock()
            .open
            .get(node)
            .is_some_and(|s| s.number == session)
    }

    /// Ends `session` if it is still the node's live one (dropping the sender ends the
    /// outbound half); returns whether it was.
    pub fn close(&self, node: &NodeId, session: u64) -> bool {
        let mut inner = self.lock();
        if inner.open.get(node).is_some_and(|s| s.number == session) {
            inner.open.remove(node);
            true
        } else {
            false
        }
    }

    /// Ends every session: this server no longer leads.
    pub fn clear(&self) {
        self.lock().open.clear();
    }

    /// Nodes with an open session, the ones commands can reach.
    pub fn connected(&self) -> BTreeSet<NodeId> {
        self.lock().open.keys().cloned().collect()
    }

    /// Queues `message` for `node`; false when it has no session or its queue is full.
    pub fn send(&self, node: &NodeId, message: pb::ServerMessage) -> bool {
        self.lock()
            .open
            .get(node)
            .is_some_and(|s| s.tx.try_send(message).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_session_takes_over_and_the_old_one_closes_nothing() {
        let sessions = Sessions::default();
        let node = NodeId::new("n1");
        let (tx1, _rx1) = mpsc::channel(1);
        let (tx2, mut rx2) = mpsc::channel(1);
        let first = sessions.open(&node, tx1);
        let second = sessions.open(&node, tx2);
        assert!(!sessions.is_current(&node, first));
        assert!(!sessions.close(&node, first));
        assert!(sessions.send(&node, pb::ServerMessage::default()));
        assert!(rx2.try_recv().is_ok());
        assert_eq!(sessions.connected().len(), 1);
        assert!(sessions.close(&node, second));
        assert!(!sessions.send(&node, pb::ServerMessage::default()));
        assert!(sessions.connected().is_empty());
    }
}
