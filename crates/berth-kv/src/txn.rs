//! Transactions: what a caller asks for, and what it gets back.

use std::fmt;

use crate::{Attrs, Entry, KvError, Space};

/// A list of operations on one space, applied all or nothing. Ops run in order inside one
/// database transaction, isolated from every other writer, and each op sees the effect
/// of the ops before it (a `Get` after a `Put` of the same key returns the new value, as
/// in a Consul transaction). If a condition fails, nothing is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    pub space: Space,
    pub ops: Vec<Op>,
    /// Who asked, for history records (ignored in spaces without history).
    pub actor: Actor,
}

impl Txn {
    pub fn new(space: Space) -> Self {
        Txn {
            space,
            ops: Vec::new(),
            actor: Actor::default(),
        }
    }

    pub fn op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    pub fn by(mut self, actor: Actor) -> Self {
        self.actor = actor;
        self
    }

    pub(crate) fn writes(&self) -> bool {
        self.ops.iter().any(|op| {
            matches!(
                op,
                Op::Put { .. } | Op::Delete { .. } | Op::DeletePrefix { .. }
            )
        })
    }
}

/// Who made a change: the Nacos history's `srcUser` and `srcIp`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actor {
    pub author: Option<String>,
    pub source_ip: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Creates or replaces the key's value and attrs (attrs are replaced, not merged).
    Put {
        key: String,
        value: Vec<u8>,
        attrs: Attrs,
        cond: Cond,
    },
    /// Removes the key; removing an absent key (with a condition that allows it) writes
    /// nothing.
    Delete {
        key: String,
        cond: Cond,
    },
    /// Removes every key that starts with `prefix` ("" is the whole space).
    DeletePrefix {
        prefix: String,
    },
    Get {
        key: String,
    },
    /// Every entry whose key starts with `prefix`, in key order (Consul's `get-tree`).
    GetPrefix {
        prefix: String,
    },
    /// Fails the transaction unless `cond` holds for `key`; writes nothing itself.
    Check {
        key: String,
        cond: Cond,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Op {
        Op::put_if(key, value, Cond::Any)
    }

    pub fn put_if(key: impl Into<String>, value: impl Into<Vec<u8>>, cond: Cond) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
            attrs: Attrs::new(),
            cond,
        }
    }

    pub fn delete(key: impl Into<String>) -> Op {
        Op::delete_if(key, Cond::Any)
    }

    pub fn delete_if(key: impl Into<String>, cond: Cond) -> Op {
        Op::Delete {
            key: key.into(),
            cond,
        }
    }

    pub fn delete_prefix(prefix: impl Into<String>) -> Op {
        Op::DeletePrefix {
            prefix: prefix.into(),
        }
    }

    pub fn get(key: impl Into<String>) -> Op {
        Op::Get { key: key.into() }
    }

    pub fn get_prefix(prefix: impl Into<String>) -> Op {
        Op::GetPrefix {
            prefix: prefix.into(),
        }
    }

    pub fn check(key: impl Into<String>, cond: Cond) -> Op {
        Op::Check {
            key: key.into(),
            cond,
        }
    }

    /// The key or prefix the op is about, for messages.
    pub fn target(&self) -> &str {
        match self {
            Op::Put { key, .. }
            | Op::Delete { key, .. }
            | Op::Get { key }
            | Op::Check { key, .. } => key,
            Op::DeletePrefix { prefix } | Op::GetPrefix { prefix } => prefix,
        }
    }

    fn verb(&self) -> &'static str {
        match self {
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::DeletePrefix { .. } => "delete-prefix",
            Op::Get { .. } => "get",
            Op::GetPrefix { .. } => "get-prefix",
            Op::Check { .. } => "check",
        }
    }
}

/// What must hold for the key's current entry (after the txn's earlier ops) for the op
/// to go ahead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    Any,
    Absent,
    /// The entry's modify index is this; 0 means the key must be absent (Consul's
    /// `cas=0`).
    ModifyIndex(u64),
    /// The md5 of the current value is this (hex, either case; Nacos's `casMd5`). An
    /// absent key fails.
    ValueMd5(String),
}

impl Cond {
    pub(crate) fn holds(&self, current: Option<&Entry>) -> bool {
        match (self, current) {
            (Cond::Any, _) => true,
            (Cond::Absent | Cond::ModifyIndex(0), None) => true,
            (Cond::Absent | Cond::ModifyIndex(0), Some(_)) => false,
            (Cond::ModifyIndex(i), Some(e)) => e.modify_index == *i,
            (Cond::ValueMd5(md5), Some(e)) => e.md5.eq_ignore_ascii_case(md5),
            (Cond::ModifyIndex(_) | Cond::ValueMd5(_), None) => false,
        }
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cond::Any => f.write_str("anything"),
            Cond::Absent | Cond::ModifyIndex(0) => f.write_str("the key to be absent"),
            Cond::ModifyIndex(i) => write!(f, "modify index {i}"),
            Cond::ValueMd5(md5) => write!(f, "md5 {md5}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    Committed(Committed),
    /// A condition did not hold; nothing was written.
    Failed(Box<CondFailed>),
}

impl TxnOutcome {
    /// The committed result, or the failed condition as [`KvError::ConditionFailed`], for
    /// callers with nothing better to do with a conflict than report it.
    pub fn committed(self) -> Result<Committed, KvError> {
        match self {
            TxnOutcome::Committed(c) => Ok(c),
            TxnOutcome::Failed(f) => Err(KvError::ConditionFailed(f)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The transaction's index when it wrote something. A transaction that changed
    /// nothing (only reads, or deletes of absent keys) takes no index: this is then the
    /// index its reads saw, the one a blocking reader waits past.
    pub index: u64,
    /// One result per op, in order.
    pub results: Vec<OpResult>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// The entry as written.
    Put(Entry),
    /// The entry removed, if there was one.
    Deleted(Option<Entry>),
    /// How many keys went.
    DeletedPrefix(u64),
    Got(Option<Entry>),
    GotPrefix(Vec<Entry>),
    Checked,
}

/// Which op's condition failed, and what the key held instead: enough to tell a caller
/// "casMd5 mismatch, current md5 is X" or to return Consul's current ModifyIndex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CondFailed {
    /// The op's position in [`Txn::ops`].
    pub op: usize,
    pub key: String,
    pub cond: Cond,
    /// The key's entry as the op saw it.
    pub current: Option<Entry>,
    verb: &'static str,
}

impl CondFailed {
    pub(crate) fn new(op: usize, txn_op: &Op, cond: &Cond, current: Option<Entry>) -> Self {
        CondFailed {
            op,
            key: txn_op.target().to_string(),
            cond: cond.clone(),
            current,
            verb: txn_op.verb(),
        }
    }
}

impl fmt::Display for CondFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op {} ({} {:?}) expected {}, but ",
            self.op, self.verb, self.key, self.cond
        )?;
        match &self.current {
            None => f.write_str("the key is absent")?,
            Some(e) => write!(
                f,
                "the key is at modify index {} with md5 {}",
                e.modify_index, e.md5
            )?,
        }
        f.write_str("; nothing was written: read the key again and retry")
    }
}
