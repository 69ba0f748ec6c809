//! Consul sessions and the locks they hold on Consul KV keys.
//!
//! Sessions live in berth-kv's space `session` (key: the session id, value: the session
//! as JSON), beside the Consul KV keys of space `kv`, in the registry's one kv store:
//! SQLite on a single node, PostgreSQL shared by every member of a cluster, so a session
//! made through one member holds its locks on every member.
//!
//! A key's lock is three attrs on its entry ([`attr`]): `Session` (the holder),
//! `LockIndex` (how many times it was acquired) and `LockDelayUntil` (Unix ms before
//! which no session may acquire it, set when a session's invalidation released it).
//! Acquire and release are a read and then a put conditioned on the modify index read,
//! retried when another writer got in between.
//!
//! Invalidation (destroy, TTL expiry at twice the TTL, a critical health check) deletes
//! the session entry on the condition of its modify index, so of two members racing to
//! expire one session only one goes on; it then releases (or, for `Behavior` `delete`,
//! deletes) every key the session holds in one transaction. The two spaces are written
//! by two transactions: a process that stops between them leaves keys naming a session
//! that no longer exists, which every member's orphan scan ([`SessionStore::run`], every
//! 10 s) releases.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_kv::{Attrs, Cond, Entry, KvError, KvHandle, Op, Space, Txn, TxnOutcome};
use serde::{Deserialize, Serialize};

/// The kv space of Consul KV keys.
pub const KV_SPACE: &str = "kv";
/// The kv space of sessions.
pub const SESSION_SPACE: &str = "session";
/// Consul's session TTL bounds.
pub const MIN_TTL: Duration = Duration::from_secs(10);
pub const MAX_TTL: Duration = Duration::from_secs(86400);
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
/// Consul caps the lock delay at 60 s.
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
/// The node health check every session depends on unless told otherwise.
pub const SERF_HEALTH: &str = "serfHealth";
/// How often each process looks for expired sessions and orphaned locks.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// The orphaned-lock scan runs every this many sweeps (10 s).
const ORPHAN_SWEEP_TICKS: u64 = 20;
/// Attempts of a read-then-conditional-write before giving up on contention.
const ATTEMPTS: usize = 16;

/// Attr names on Consul KV entries.
pub mod attr {
    pub const FLAGS: &str = "Flags";
    pub const SESSION: &str = "Session";
    pub const LOCK_INDEX: &str = "LockIndex";
    pub const LOCK_DELAY_UNTIL: &str = "LockDelayUntil";
}

pub fn kv_space() -> Space {
    Space::new(KV_SPACE).unwrap_or_else(|_| unreachable!("kv is a valid space name"))
}

pub fn session_space() -> Space {
    Space::new(SESSION_SPACE).unwrap_or_else(|_| unreachable!("session is a valid space name"))
}

/// The spaces Consul KV and sessions need of the store (neither keeps history).
pub fn kv_options(options: berth_kv::KvOptions) -> berth_kv::KvOptions {
    options
        .space(kv_space(), berth_kv::SpaceOptions::default())
        .space(session_space(), berth_kv::SpaceOptions::default())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Behavior {
    #[default]
    Release,
    Delete,
}

/// A session as stored (the indexes come from its entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay_ms: u64,
    pub behavior: Behavior,
    /// 0: no TTL.
    pub ttl_ms: u64,
    pub node_checks: Vec<String>,
    pub service_checks: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub spec: SessionSpec,
    pub create_index: u64,
    pub modify_index: u64,
    /// When it was created or last renewed (the store's clock), Unix ms.
    pub renewed_ms: i64,
}

impl Session {
    fn from_entry(e: &Entry) -> Option<Session> {
        let spec: SessionSpec = serde_json::from_slice(&e.value).ok()?;
        Some(Session {
            spec,
            create_index: e.create_index,
            modify_index: e.modify_index,
            renewed_ms: e.updated_at_ms,
        })
    }

    /// Consul invalidates a TTL session once twice its TTL has passed without a renew.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.spec.ttl_ms > 0 && now_ms > self.renewed_ms.saturating_add(2 * self.spec.ttl_ms as i64)
    }
}

/// Checks a TTL as Consul does: 0 is none, otherwise 10s to 86400s.
pub fn check_ttl(ttl: Duration) -> Result<(), String> {
    if ttl.is_zero() || (MIN_TTL..=MAX_TTL).contains(&ttl) {
        Ok(())
    } else {
        Err(format!(
            "invalid Session TTL '{}', must be between [10s=24h0m0s]",
            fmt_go_duration(ttl)
        ))
    }
}

/// A duration the way Consul prints a session's TTL ("30s", "1m30s", "1.5s").
pub fn fmt_go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let (h, m, s, frac) = (
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000,
    );
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac == 0 {
        out.push_str(&format!("{s}s"));
    } else if h == 0 && m == 0 && s == 0 {
        out.push_str(&format!("{frac}ms"));
    } else {
        let f = format!("{frac:03}");
        out.push_str(&format!("{s}.{}s", f.trim_end_matches('0')));
    }
    out
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A random version 4 UUID, Consul's session id form.
pub fn new_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What [`SessionStore::acquire`] or `release` concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum LockOutcome {
    Done(Entry),
    /// Held by another session, in its lock delay, or not held by this one.
    Refused,
}

/// Whether a service check (by check id) is known and passing: the registry's answer.
pub trait CheckSource: Send + Sync {
    /// `None`: no such check; `Some(true)`: critical.
    fn critical(&self, check_id: &str) -> Option<bool>;
}

#[derive(Clone)]
pub struct SessionStore {
    kv: KvHandle,
    sessions: Space,
    keys: Space,
}

impl SessionStore {
    pub fn new(kv: KvHandle) -> Self {
        SessionStore {
            kv,
            sessions: session_space(),
            keys: kv_space(),
        }
    }

    pub fn kv(&self) -> &KvHandle {
        &self.kv
    }

    pub async fn create(&self, spec: SessionSpec) -> Result<Session, KvError> {
        let value = serde_json::to_vec(&spec).unwrap_or_default();
        let txn =
            Txn::new(self.sessions.clone()).op(Op::put_if(spec.id.clone(), value, Cond::Absent));
        let entry = put_result(self.kv.txn(txn).await?.committed()?)?;
        Session::from_entry(&entry).ok_or_else(|| corrupt(&spec.id))
    }

    pub async fn get(&self, id: &str) -> Result<Option<Session>, KvError> {
        Ok(self
            .kv
            .get(&self.sessions, id)
            .await?
            .and_then(|e| Session::from_entry(&e)))
    }

    pub async fn list(&self) -> Result<Vec<Session>, KvError> {
        let mut all: Vec<Session> = self
            .kv
            .list(&self.sessions, "", None)
            .await?
            .iter()
            .filter_map(Session::from_entry)
            .collect();
        all.sort_by_key(|s| s.create_index);
        Ok(all)
    }

    /// Pushes the TTL back; `None` when there is no such session.
    pub async fn renew(&self, id: &str) -> Result<Option<Session>, KvError> {
        for _ in 0..ATTEMPTS {
            let Some(entry) = self.kv.get(&self.sessions, id).await? else {
                return Ok(None);
            };
            let txn = Txn::new(self.sessions.clone()).op(Op::put_if(
                id,
                entry.value.clone(),
                Cond::ModifyIndex(entry.modify_index),
            ));
            if let TxnOutcome::Committed(c) = self.kv.txn(txn).await? {
                return put_result(c).map(|e| Session::from_entry(&e));
            }
        }
        Err(KvError::Cancelled)
    }

    /// Ends the session (destroy, expiry, a critical check) if it is still at
    /// `modify_index` (`None`: whatever it is at), and releases or deletes its keys.
    /// Returns whether this call ended it.
    pub async fn invalidate(&self, id: &str, modify_index: Option<u64>) -> Result<bool, KvError> {
        let Some(entry) = self.kv.get(&self.sessions, id).await? else {
            return Ok(false);
        };
        let session = Session::from_entry(&entry);
        let cond = Cond::ModifyIndex(modify_index.unwrap_or(entry.modify_index));
        let txn = Txn::new(self.sessions.clone()).op(Op::delete_if(id, cond));
        if let TxnOutcome::Failed(_) = self.kv.txn(txn).await? {
            return Ok(false);
        }
        let (behavior, delay) = session.map_or((Behavior::Release, 0), |s| {
            (s.spec.behavior, s.spec.lock_delay_ms)
        });
        self.free_keys(id, behavior, delay).await?;
        Ok(true)
    }

    /// Releases (or deletes) every key `id` holds, in one transaction.
    async fn free_keys(&self, id: &str, behavior: Behavior, delay_ms: u64) -> Result<(), KvError> {
        for _ in 0..ATTEMPTS {
            let held: Vec<Entry> = self
                .kv
                .list(&self.keys, "", None)
                .await?
                .into_iter()
                .filter(|e| e.attrs.get(attr::SESSION).is_some_and(|s| s == id))
                .collect();
            if held.is_empty() {
                return Ok(());
            }
            let until = now_ms().saturating_add(delay_ms as i64);
            let mut txn = Txn::new(self.keys.clone());
            for e in held {
                let cond = Cond::ModifyIndex(e.modify_index);
                txn = txn.op(match behavior {
                    Behavior::Delete => Op::delete_if(e.key, cond),
                    Behavior::Release => {
                        let mut attrs = e.attrs.clone();
                        attrs.remove(attr::SESSION);
                        if delay_ms > 0 {
                            attrs.insert(attr::LOCK_DELAY_UNTIL.into(), until.to_string());
                        }
                        Op::Put {
                            key: e.key,
                            value: e.value,
                            attrs,
                            cond,
                        }
                    }
                });
            }
            if let TxnOutcome::Committed(_) = self.kv.txn(txn).await? {
                return Ok(());
            }
        }
        Err(KvError::Cancelled)
    }

    /// Puts `value` on `key` and takes its lock for `session` (Consul's `?acquire=`):
    /// refused when another session holds it or its lock delay has not passed; a new
    /// acquisition bumps `LockIndex`, a session acquiring again keeps it.
    pub async fn acquire(
        &self,
        key: &str,
        session: &str,
        value: Vec<u8>,
        flags: Option<u64>,
    ) -> Result<LockOutcome, LockError> {
        if self.get(session).await?.is_none() {
            return Err(LockError::NoSession(session.to_string()));
        }
        for _ in 0..ATTEMPTS {
            let current = self.kv.get(&self.keys, key).await?;
            let Some(op) = acquire_op(
                key,
                session,
                value.clone(),
                flags,
                current.as_ref(),
                now_ms(),
            ) else {
                return Ok(LockOutcome::Refused);
            };
            let txn = Txn::new(self.keys.clone()).op(op);
            if let TxnOutcome::Committed(c) = self.kv.txn(txn).await? {
                return Ok(LockOutcome::Done(put_result(c)?));
            }
        }
        Err(LockError::Kv(KvError::Cancelled))
    }

    /// Puts `value` on `key` and lets its lock go, if `session` holds it (`?release=`).
    pub async fn release(
        &self,
        key: &str,
        session: &str,
        value: Vec<u8>,
        flags: Option<u64>,
    ) -> Result<LockOutcome, LockError> {
        for _ in 0..ATTEMPTS {
            let current = self.kv.get(&self.keys, key).await?;
            let Some(op) = release_op(key, session, value.clone(), flags, current.as_ref()) else {
                return Ok(LockOutcome::Refused);
            };
            let txn = Txn::new(self.keys.clone()).op(op);
            if let TxnOutcome::Committed(c) = self.kv.txn(txn).await? {
                return Ok(LockOutcome::Done(put_result(c)?));
            }
        }
        Err(LockError::Kv(KvError::Cancelled))
    }

    /// One pass: invalidates expired sessions and those with a critical or vanished
    /// check, and frees keys held by sessions that no longer exist.
    pub async fn sweep(&self, checks: &dyn CheckSource) -> Result<(), KvError> {
        self.expire(checks).await?;
        self.free_orphans().await
    }

    /// Invalidates expired sessions and those with a critical or vanished check.
    async fn expire(&self, checks: &dyn CheckSource) -> Result<(), KvError> {
        let now = now_ms();
        let sessions = self.list().await?;
        for s in &sessions {
            let failing = s
                .spec
                .service_checks
                .iter()
                .any(|c| checks.critical(c) != Some(false));
            if (s.expired(now) || failing)
                && self.invalidate(&s.spec.id, Some(s.modify_index)).await?
            {
                tracing::info!(session = %s.spec.id, expired = s.expired(now), "session invalidated");
            }
        }
        Ok(())
    }

    /// Frees keys held by sessions that no longer exist (a process stopped between a
    /// session's deletion and the release of its keys, or an acquire raced a destroy).
    /// Reads the whole `kv` space, so it runs less often than expiry.
    async fn free_orphans(&self) -> Result<(), KvError> {
        // Keys first, sessions second: a session created after the key listing cannot
        // be missing from the session listing, so a holder absent from it is gone.
        let mut orphans: Vec<String> = self
            .kv
            .list(&self.keys, "", None)
            .await?
            .into_iter()
            .filter_map(|e| e.attrs.get(attr::SESSION).cloned())
            .collect();
        let live: std::collections::HashSet<String> =
            self.list().await?.into_iter().map(|s| s.spec.id).collect();
        orphans.retain(|id| !live.contains(id));
        orphans.sort();
        orphans.dedup();
        for id in orphans {
            // Session ids are random: a gone id never comes back.
            self.free_keys(&id, Behavior::Release, 0).await?;
        }
        Ok(())
    }

    /// The sweep, every half second until `token` is cancelled: one per process.
    pub async fn run(
        self,
        checks: std::sync::Arc<dyn CheckSource>,
        token: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tick.tick() => {}
            }
            ticks += 1;
            let result = if ticks.is_multiple_of(ORPHAN_SWEEP_TICKS) {
                self.sweep(checks.as_ref()).await
            } else {
                self.expire(checks.as_ref()).await
            };
            if let Err(err) = result {
                tracing::warn!(%err, "session sweep failed; retrying");
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("invalid session \"{0}\": no such session (create one with /v1/session/create)")]
    NoSession(String),
    #[error(transparent)]
    Kv(#[from] KvError),
}

fn corrupt(id: &str) -> KvError {
    KvError::InvalidKey {
        key: id.to_string(),
        reason: "the stored session does not parse",
    }
}

fn put_result(c: berth_kv::Committed) -> Result<Entry, KvError> {
    match c.results.into_iter().next() {
        Some(berth_kv::OpResult::Put(e)) => Ok(e),
        _ => Err(KvError::Cancelled),
    }
}

pub fn lock_index(e: &Entry) -> u64 {
    e.attrs
        .get(attr::LOCK_INDEX)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn holder(e: &Entry) -> Option<&str> {
    e.attrs.get(attr::SESSION).map(String::as_str)
}

fn with_flags(attrs: &mut Attrs, flags: Option<u64>) {
    if let Some(f) = flags {
        if f == 0 {
            attrs.remove(attr::FLAGS);
        } else {
            attrs.insert(attr::FLAGS.into(), f.to_string());
        }
    }
}

/// The conditional put that acquires `key` for `session`, or `None` when refused.
pub fn acquire_op(
    key: &str,
    session: &str,
    value: Vec<u8>,
    flags: Option<u64>,
    current: Option<&Entry>,
    now_ms: i64,
) -> Option<Op> {
    let mut attrs = current.map(|e| e.attrs.clone()).unwrap_or_default();
    match current.and_then(holder) {
        Some(h) if h == session => {}
        Some(_) => return None,
        None => {
            let delayed = attrs
                .get(attr::LOCK_DELAY_UNTIL)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|until| until > now_ms);
            if delayed {
                return None;
            }
            let next = current.map_or(0, lock_index) + 1;
            attrs.insert(attr::LOCK_INDEX.into(), next.to_string());
            attrs.insert(attr::SESSION.into(), session.to_string());
            attrs.remove(attr::LOCK_DELAY_UNTIL);
        }
    }
    with_flags(&mut attrs, flags);
    Some(Op::Put {
        key: key.to_string(),
        value,
        attrs,
        cond: Cond::ModifyIndex(current.map_or(0, |e| e.modify_index)),
    })
}

/// The conditional put that releases `key` held by `session`, or `None` when it does
/// not hold it.
pub fn release_op(
    key: &str,
    session: &str,
    value: Vec<u8>,
    flags: Option<u64>,
    current: Option<&Entry>,
) -> Option<Op> {
    let current = current?;
    if holder(current) != Some(session) {
        return None;
    }
    let mut attrs = current.attrs.clone();
    attrs.remove(attr::SESSION);
    with_flags(&mut attrs, flags);
    Some(Op::Put {
        key: key.to_string(),
        value,
        attrs,
        cond: Cond::ModifyIndex(current.modify_index),
    })
}

/// Session specs by id, for tests and listings.
pub fn by_id(sessions: &[Session]) -> BTreeMap<&str, &Session> {
    sessions.iter().map(|s| (s.spec.id.as_str(), s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn store() -> SessionStore {
        let kv = berth_kv::SqliteKv::in_memory(kv_options(berth_kv::KvOptions::default())).unwrap();
        SessionStore::new(KvHandle::new(Arc::new(kv)))
    }

    fn spec(id: &str, behavior: Behavior, delay_ms: u64) -> SessionSpec {
        SessionSpec {
            id: id.into(),
            name: "n".into(),
            node: "berth".into(),
            lock_delay_ms: delay_ms,
            behavior,
            ttl_ms: 0,
            node_checks: vec![SERF_HEALTH.into()],
            service_checks: vec![],
        }
    }

    struct NoChecks;
    impl CheckSource for NoChecks {
        fn critical(&self, _: &str) -> Option<bool> {
            None
        }
    }

    #[test]
    fn ttl_limits_and_formatting() {
        assert!(check_ttl(Duration::ZERO).is_ok());
        assert!(check_ttl(Duration::from_secs(10)).is_ok());
        assert!(check_ttl(Duration::from_secs(86400)).is_ok());
        let err = check_ttl(Duration::from_secs(9)).unwrap_err();
        assert!(err.contains("'9s'") && err.contains("10s"), "{err}");
        assert!(check_ttl(Duration::from_secs(86401)).is_err());
        assert_eq!(fmt_go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(fmt_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_go_duration(Duration::from_secs(3600)), "1h0m0s");
        let id = new_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }

    #[test]
    fn expiry_is_at_twice_the_ttl() {
        let mut s = Session {
            spec: spec("a", Behavior::Release, 0),
            create_index: 1,
            modify_index: 1,
            renewed_ms: 1000,
        };
        assert!(!s.expired(1_000_000));
        s.spec.ttl_ms = 10_000;
        assert!(!s.expired(20_000));
        assert!(!s.expired(21_000));
        assert!(s.expired(21_001));
    }

    #[tokio::test]
    async fn locks_follow_consul_semantics() {
        let st = store();
        st.create(spec("s1", Behavior::Release, 0)).await.unwrap();
        st.create(spec("s2", Behavior::Release, 0)).await.unwrap();
        let got = st.acquire("k", "s1", b"a".to_vec(), None).await.unwrap();
        let LockOutcome::Done(e) = got else { panic!() };
        assert_eq!((holder(&e), lock_index(&e)), (Some("s1"), 1));
        // The holder may acquire again without a new lock index.
        let LockOutcome::Done(e) = st.acquire("k", "s1", b"b".to_vec(), Some(3)).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (lock_index(&e), e.attrs.get(attr::FLAGS).map(String::as_str)),
            (1, Some("3"))
        );
        assert_eq!(
            st.acquire("k", "s2", vec![], None).await.unwrap(),
            LockOutcome::Refused
        );
        assert_eq!(
            st.release("k", "s2", vec![], None).await.unwrap(),
            LockOutcome::Refused
        );
        let LockOutcome::Done(e) = st.release("k", "s1", b"c".to_vec(), None).await.unwrap() else {
            panic!()
        };
        assert_eq!((holder(&e), lock_index(&e)), (None, 1));
        let LockOutcome::Done(e) = st.acquire("k", "s2", vec![], None).await.unwrap() else {
            panic!()
        };
        assert_eq!((holder(&e), lock_index(&e)), (Some("s2"), 2));
        assert!(matches!(
            st.acquire("k", "nope", vec![], None).await,
            Err(LockError::NoSession(_))
        ));
    }

    #[tokio::test]
    async fn invalidation_releases_with_lock_delay_or_deletes() {
        let st = store();
        st.create(spec("r", Behavior::Release, 60_000))
            .await
            .unwrap();
        st.create(spec("d", Behavior::Delete, 0)).await.unwrap();
        st.create(spec("o", Behavior::Release, 0)).await.unwrap();
        st.acquire("a", "r", b"1".to_vec(), None).await.unwrap();
        st.acquire("b", "d", b"2".to_vec(), None).await.unwrap();
        st.kv
            .store()
            .put(&kv_space(), "untouched", b"x".to_vec(), Attrs::new())
            .unwrap();
        assert!(st.invalidate("r", None).await.unwrap());
        assert!(!st.invalidate("r", None).await.unwrap());
        let a = st.kv.get(&kv_space(), "a").await.unwrap().unwrap();
        assert_eq!(holder(&a), None);
        assert_eq!(a.value, b"1");
        // In its lock delay: nobody may take it.
        assert_eq!(
            st.acquire("a", "o", vec![], None).await.unwrap(),
            LockOutcome::Refused
        );
        assert!(st.invalidate("d", None).await.unwrap());
        assert!(st.kv.get(&kv_space(), "b").await.unwrap().is_none());
        // A stale modify index loses the race.
        let o = st.get("o").await.unwrap().unwrap();
        st.renew("o").await.unwrap().unwrap();
        assert!(!st.invalidate("o", Some(o.modify_index)).await.unwrap());
        assert!(st.get("o").await.unwrap().is_some());
        // A key naming a vanished session is freed by the sweep.
        let mut attrs = Attrs::new();
        attrs.insert(attr::SESSION.into(), "ghost".into());
        st.kv
            .store()
            .put(&kv_space(), "orphan", vec![], attrs)
            .unwrap();
        st.sweep(&NoChecks).await.unwrap();
        let orphan = st.kv.get(&kv_space(), "orphan").await.unwrap().unwrap();
        assert_eq!(holder(&orphan), None);
    }

    struct Critical(&'static str);
    impl CheckSource for Critical {
        fn critical(&self, check_id: &str) -> Option<bool> {
            Some(check_id == self.0)
        }
    }

    #[tokio::test]
    async fn a_critical_service_check_or_an_expired_ttl_ends_the_session() {
        let st = store();
        let mut with_check = spec("c", Behavior::Release, 0);
        with_check.service_checks = vec!["service:web".into()];
        st.create(with_check).await.unwrap();
        st.create(spec("plain", Behavior::Release, 0))
            .await
            .unwrap();
        st.acquire("held", "c", vec![], None).await.unwrap();
        st.sweep(&Critical("service:other")).await.unwrap();
        assert!(st.get("c").await.unwrap().is_some());
        st.sweep(&Critical("service:web")).await.unwrap();
        assert!(st.get("c").await.unwrap().is_none());
        assert!(st.get("plain").await.unwrap().is_some());
        let held = st.kv.get(&kv_space(), "held").await.unwrap().unwrap();
        assert_eq!(holder(&held), None);
        // A check that vanished ends it too.
        let mut gone = spec("g", Behavior::Release, 0);
        gone.service_checks = vec!["service:gone".into()];
        st.create(gone).await.unwrap();
        st.sweep(&NoChecks).await.unwrap();
        assert!(st.get("g").await.unwrap().is_none());
    }
}
