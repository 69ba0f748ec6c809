//! The meaning of a transaction, written once: the engines provide the primitive reads
//! and writes of one open database transaction, and [`apply`] runs a [`Txn`]'s ops over
//! them. Engines differ only in how they open, order and commit that transaction.

use crate::entry::{md5_hex, validate_key, validate_prefix};
use crate::feed::ChangeSet;
use crate::history::{HistoryOp, NewHistory};
use crate::txn::CondFailed;
use crate::{Committed, Entry, KvError, KvOptions, Op, OpResult, Txn, TxnOutcome};

/// One open database transaction on one space.
pub(crate) trait Backend {
    fn read(&mut self, key: &str) -> Result<Option<Entry>, KvError>;
    fn read_prefix(&mut self, prefix: &str) -> Result<Vec<Entry>, KvError>;
    /// Inserts or replaces the entry.
    fn write(&mut self, entry: &Entry) -> Result<(), KvError>;
    fn remove(&mut self, key: &str) -> Result<(), KvError>;
    fn remove_prefix(&mut self, prefix: &str) -> Result<u64, KvError>;
    fn record(&mut self, history: &NewHistory<'_>) -> Result<(), KvError>;
}

/// The indexes and time a transaction runs at.
#[derive(Clone, Copy)]
pub(crate) struct Stamp {
    /// The index the transaction's snapshot is at.
    pub seen: u64,
    /// The index its writes take (`seen + 1`), if it writes anything.
    pub next: u64,
    pub now_ms: i64,
}

pub(crate) struct Applied {
    pub outcome: TxnOutcome,
    /// Empty when nothing was written: the engine then rolls back and takes no index.
    pub changes: ChangeSet,
}

/// Checks what can be checked without the database, so a bad request costs no
/// transaction (and no lock in PostgreSQL). Returns whether the space keeps history.
pub(crate) fn validate(txn: &Txn, options: &KvOptions) -> Result<bool, KvError> {
    let keep_history = options.space_options(&txn.space)?.keep_history;
    for op in &txn.ops {
        match op {
            Op::Put { key, value, .. } => {
                validate_key(key)?;
                if value.len() > options.max_value_bytes {
                    return Err(KvError::ValueTooLarge {
                        key: key.clone(),
                        size: value.len(),
                        limit: options.max_value_bytes,
                    });
                }
            }
            Op::Delete { key, .. } | Op::Get { key } | Op::Check { key, .. } => validate_key(key)?,
            Op::DeletePrefix { prefix } | Op::GetPrefix { prefix } => validate_prefix(prefix)?,
        }
    }
    Ok(keep_history)
}

pub(crate) fn apply(
    db: &mut impl Backend,
    txn: &Txn,
    stamp: Stamp,
    keep_history: bool,
) -> Result<Applied, KvError> {
    let mut changes = ChangeSet::default();
    let mut results = Vec::with_capacity(txn.ops.len());
    for (i, op) in txn.ops.iter().enumerate() {
        let result = match op {
            Op::Put {
                key,
                value,
                attrs,
                cond,
            } => {
                let current = db.read(key)?;
                if !cond.holds(current.as_ref()) {
                    return Ok(failed(i, op, cond, current));
                }
                let entry = Entry {
                    space: txn.space.clone(),
                    key: key.clone(),
                    value: value.clone(),
                    md5: md5_hex(value),
                    attrs: attrs.clone(),
                    create_index: current.as_ref().map_or(stamp.next, |c| c.create_index),
                    modify_index: stamp.next,
                    updated_at_ms: stamp.now_ms,
                };
                db.write(&entry)?;
                if keep_history {
                    let op = match current {
                        None => HistoryOp::Create,
                        Some(_) => HistoryOp::Update,
                    };
                    db.record(&history(&entry, op, txn, stamp))?;
                }
                changes.key(key);
                OpResult::Put(entry)
            }
            Op::Delete { key, cond } => {
                let current = db.read(key)?;
                if !cond.holds(current.as_ref()) {
                    return Ok(failed(i, op, cond, current));
                }
                if let Some(gone) = &current {
                    db.remove(key)?;
                    if keep_history {
                        db.record(&history(gone, HistoryOp::Delete, txn, stamp))?;
                    }
                    changes.key(key);
                }
                OpResult::Deleted(current)
            }
            Op::DeletePrefix { prefix } => {
                // Reading them first costs memory, so only history-keeping spaces do.
                if keep_history {
                    for gone in db.read_prefix(prefix)? {
                        db.record(&history(&gone, HistoryOp::Delete, txn, stamp))?;
                    }
                }
                let count = db.remove_prefix(prefix)?;
                if count > 0 {
                    changes.prefix(prefix);
                }
                OpResult::DeletedPrefix(count)
            }
            Op::Get { key } => OpResult::Got(db.read(key)?),
            Op::GetPrefix { prefix } => OpResult::GotPrefix(db.read_prefix(prefix)?),
            Op::Check { key, cond } => {
                let current = db.read(key)?;
                if !cond.holds(current.as_ref()) {
                    return Ok(failed(i, op, cond, current));
                }
                OpResult::Checked
            }
        };
        results.push(result);
    }
    let index = if changes.is_empty() {
        stamp.seen
    } else {
        stamp.next
    };
    Ok(Applied {
        outcome: TxnOutcome::Committed(Committed { index, results }),
        changes,
    })
}

fn failed(i: usize, op: &Op, cond: &crate::Cond, current: Option<Entry>) -> Applied {
    Applied {
        outcome: TxnOutcome::Failed(Box::new(CondFailed::new(i, op, cond, current))),
        changes: ChangeSet::default(),
    }
}

fn history<'a>(entry: &'a Entry, op: HistoryOp, txn: &'a Txn, stamp: Stamp) -> NewHistory<'a> {
    NewHistory {
        key: &entry.key,
        op,
        value: &entry.value,
        md5: &entry.md5,
        attrs: &entry.attrs,
        index: stamp.next,
        at_ms: stamp.now_ms,
        actor: &txn.actor,
    }
}

/// Consul's `?keys&separator=/`: keys under `prefix`, each cut after the first separator
/// that follows the prefix, without duplicates. `keys` must be sorted, as listings are.
pub(crate) fn fold_keys(keys: Vec<String>, prefix: &str, separator: Option<&str>) -> Vec<String> {
    let Some(sep) = separator.filter(|s| !s.is_empty()) else {
        return keys;
    };
    let mut out: Vec<String> = Vec::with_capacity(keys.len());
    for key in keys {
        let folded = match key.get(prefix.len()..).and_then(|rest| rest.find(sep)) {
            Some(at) => key[..prefix.len() + at + sep.len()].to_string(),
            None => key,
        };
        // Sorted input keeps equal folds adjacent.
        if out.last() != Some(&folded) {
            out.push(folded);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_at_the_first_separator_after_the_prefix() {
        let keys = ["a/b", "a/c/d", "a/c/e", "a/f/", "b"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            fold_keys(keys.clone(), "", Some("/")),
            ["a/", "b"].map(String::from)
        );
        let under_a: Vec<_> = keys.into_iter().filter(|k| k.starts_with("a/")).collect();
        assert_eq!(
            fold_keys(under_a.clone(), "a/", Some("/")),
            ["a/b", "a/c/", "a/f/"].map(String::from)
        );
        assert_eq!(fold_keys(under_a.clone(), "a/", None), under_a);
        assert_eq!(fold_keys(under_a.clone(), "a/", Some("")), under_a);
    }
}
