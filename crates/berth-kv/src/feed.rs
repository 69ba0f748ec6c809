//! The change feed: a broadcast of what each committed transaction touched, and a watch
//! of the latest index.
//!
//! The two serve different readers. A blocking reader (Consul's `?index=N`, Nacos's
//! long-polling) waits on the watch for "index > N" and then reads the store: a watch
//! never lags, it only skips to the newest value, and the read sees everything up to it,
//! so no change is missed however slow the reader. A subscriber that wants to know
//! *which* keys changed takes the broadcast; if it falls behind by more than the feed's
//! capacity, `recv` returns `Lagged` and the changes in between are gone: it must then
//! resync as it does on [`Change::Resync`], by reading the index, listing what it
//! follows again, and carrying on from the broadcast.

use tokio::sync::{broadcast, watch};

use crate::Space;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// One committed transaction.
    Written {
        index: u64,
        space: Space,
        /// Keys put or deleted, each once, in the order the transaction first touched
        /// them.
        keys: Vec<String>,
        /// Prefixes deleted with `DeletePrefix`, or `""` (the whole space) when the
        /// transaction was too large to name its keys across processes.
        prefixes: Vec<String>,
    },
    /// Changes up to `index` may have been missed (the PostgreSQL listener lost its
    /// connection, or saw a gap in the indexes): everything may have changed; list again.
    Resync { index: u64 },
}

impl Change {
    pub fn index(&self) -> u64 {
        match self {
            Change::Written { index, .. } | Change::Resync { index } => *index,
        }
    }

    /// Whether `key` of `space` may have changed: a subscriber's filter.
    pub fn affects(&self, space: &Space, key: &str) -> bool {
        match self {
            Change::Resync { .. } => true,
            Change::Written {
                space: s,
                keys,
                prefixes,
                ..
            } => {
                s == space
                    && (keys.iter().any(|k| k == key)
                        || prefixes.iter().any(|p| key.starts_with(p.as_str())))
            }
        }
    }
}

/// The feed an engine owns and publishes into; handed out through
/// [`crate::KvStore::feed`].
pub struct Feed {
    changes: broadcast::Sender<Change>,
    index: watch::Sender<u64>,
}

impl Feed {
    pub(crate) fn new(index: u64, capacity: usize) -> Self {
        let (changes, _) = broadcast::channel(capacity.max(1));
        Feed {
            changes,
            index: watch::Sender::new(index),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    pub fn watch_index(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }

    /// The newest index this process knows of. Taken *before* a read, it is a safe index
    /// to report with that read: anything written later has a greater index.
    pub fn current_index(&self) -> u64 {
        *self.index.borrow()
    }

    /// Announces a change and moves the watch to its index.
    pub(crate) fn publish(&self, change: Change) {
        // The index first: a subscriber woken by the change must find the store's index
        // at least at it (readers cache by index).
        self.advance(change.index());
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.changes.send(change);
    }

    /// Moves the watch forward (never back: notifications and local commits can arrive
    /// in either order).
    pub(crate) fn advance(&self, index: u64) {
        self.index.send_if_modified(|current| {
            if index > *current {
                *current = index;
                true
            } else {
                false
            }
        });
    }
}

/// Builds the change of a transaction as it applies its ops.
#[derive(Default)]
pub(crate) struct ChangeSet {
    pub keys: Vec<String>,
    pub prefixes: Vec<String>,
}

impl ChangeSet {
    pub fn key(&mut self, key: &str) {
        if !self.keys.iter().any(|k| k == key) {
            self.keys.push(key.to_string());
        }
    }

    pub fn prefix(&mut self, prefix: &str) {
        if !self.prefixes.iter().any(|p| p == prefix) {
            self.prefixes.push(prefix.to_string());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.prefixes.is_empty()
    }

    pub fn into_change(self, index: u64, space: Space) -> Change {
        Change::Written {
            index,
            space,
            keys: self.keys,
            prefixes: self.prefixes,
        }
    }
}
