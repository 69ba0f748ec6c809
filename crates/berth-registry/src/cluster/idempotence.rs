//! Each forwarded write is applied once on its owner, however often it arrives.
//!
//! A sender re-sends a write whose answer it did not get (see [`super::handoff`]); the
//! first copy may have been applied, or may still be running. Writes carry the sender's
//! id, life (incarnation) and a sequence number, plus the lowest number the sender has
//! not finished (`low`): everything below it will never be sent again, so the record
//! only holds numbers from there on and stays as small as the sender's backlog. A copy
//! of a write seen before waits for the first copy's answer instead of applying again
//! (a retried register must not resurrect an instance deregistered in between).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::registry::v1 as pb;
use tokio::sync::watch;
use tokio::time::Instant;

/// The answer of a write, once its first copy finished.
pub type Answer = watch::Receiver<Option<Arc<pb::ForwardReply>>>;

/// A sender life silent this long is forgotten (it restarted or left).
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Safety bound per sender life, in case a sender never advances `low` (each record
/// holds a short answer, a few hundred bytes).
const MAX_PER_SENDER: usize = 1 << 17;

struct Record {
    /// Every number below this is finished at the sender.
    floor: u64,
    seen: BTreeMap<u64, Answer>,
    last: Instant,
}

/// What to do with an arriving write.
pub enum Admit {
    /// The first copy: apply it and publish the answer through this sender.
    First(watch::Sender<Option<Arc<pb::ForwardReply>>>),
    /// A copy of a write already applied or being applied: wait for its answer.
    Again(Answer),
    /// A late copy of a write the sender has finished with: drop it.
    Stale,
}

#[derive(Default)]
pub struct Once {
    senders: Mutex<HashMap<(String, u64), Record>>,
}

impl Once {
    /// Admits write `seq` of sender `from` in life `incarnation`; `low` as above.
    /// Number 0 means the sender does not number its writes: always applied.
    pub fn admit(&self, from: &str, incarnation: u64, seq: u64, low: u64) -> Admit {
        let (tx, rx) = watch::channel(None);
        if seq == 0 {
            return Admit::First(tx);
        }
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        senders.retain(|_, r| now.saturating_duration_since(r.last) < FORGET_AFTER);
        let r = senders
            .entry((from.to_string(), incarnation))
            .or_insert_with(|| Record {
                floor: 0,
                seen: BTreeMap::new(),
                last: now,
            });
        r.last = now;
        if low > r.floor {
            r.floor = low;
            r.seen = r.seen.split_off(&low);
        }
        if seq < r.floor {
            return Admit::Stale;
        }
        if let Some(answer) = r.seen.get(&seq) {
            // A first copy that died before answering (its task was lost) leaves a
            // closed channel with no answer: this copy takes its place.
            let orphaned = answer.borrow().is_none() && answer.has_changed().is_err();
            if !orphaned {
                return Admit::Again(answer.clone());
            }
        }
        if r.seen.len() >= MAX_PER_SENDER {
            r.seen.pop_first();
        }
        r.seen.insert(seq, rx);
        Admit::First(tx)
    }

    /// Writes remembered in all (for the cluster view).
    pub fn remembered(&self) -> usize {
        self.senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|r| r.seen.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_admitted_once_and_finished_numbers_are_forgotten() {
        let once = Once::default();
        let Admit::First(tx) = once.admit("a:1", 7, 5, 5) else {
            panic!("first copy not admitted");
        };
        let Admit::Again(mut answer) = once.admit("a:1", 7, 5, 5) else {
            panic!("second copy admitted again");
        };
        tx.send_replace(Some(Arc::new(pb::ForwardReply::default())));
        assert!(answer.borrow_and_update().is_some());
        // Another life of the same sender numbers from scratch.
        assert!(matches!(once.admit("a:1", 9, 5, 5), Admit::First(_)));
        // The sender finished everything below 6: 5 is gone, a late copy is stale.
        assert!(matches!(once.admit("a:1", 7, 6, 6), Admit::First(_)));
        assert!(matches!(once.admit("a:1", 7, 5, 6), Admit::Stale));
        assert_eq!(once.remembered(), 2);
    }

    #[test]
    fn a_copy_whose_first_copy_died_is_applied() {
        let once = Once::default();
        let Admit::First(tx) = once.admit("a:1", 7, 1, 1) else {
            panic!("first copy not admitted");
        };
        drop(tx);
        assert!(matches!(once.admit("a:1", 7, 1, 1), Admit::First(_)));
    }
}
