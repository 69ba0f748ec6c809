//! The Nacos config center: namespaced, grouped configs with an md5, their history, and
//! listeners told of changes. One core ([`ConfigCenter`]) that the v1 and v2 HTTP APIs
//! (`http::config`) and the gRPC requests (`nacos_grpc::config`) share.
//!
//! Configs live in berth-kv's space `config` (with history): SQLite in the registry's
//! data folder on a single node, PostgreSQL shared by every member of a cluster (config
//! is not AP data: a compare-and-set must hold across members, and an acknowledged
//! write must outlive any member). The key is `tenant/group/dataId`; names never hold a
//! `/` ([`validate_name`]), so the key is unambiguous and a tenant or group is a prefix.
//! Changes reach listeners through the store's feed, which in a cluster carries other
//! members' writes too (PostgreSQL LISTEN/NOTIFY).

mod cache;
pub mod listen;
pub mod stats;

use std::sync::Arc;

use berth_kv::{
    Actor, Attrs, Cond, Entry, HistoryOp, HistoryRecord, KvError, KvHandle, Op, OpResult, Space,
    Txn, TxnOutcome,
};

use crate::model::DEFAULT_NAMESPACE;

/// The default group of a config, as in Nacos.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
/// The kv space configs live in.
pub const SPACE: &str = "config";
/// Content size limit when none is configured (Nacos's own default is 100 KiB).
pub const DEFAULT_MAX_CONTENT: usize = 100 * 1024;
/// Longest dataId or group.
const MAX_NAME: usize = 256;
/// Longest namespace id.
const MAX_TENANT: usize = 128;

/// Attr names in the store.
mod attr {
    pub const TYPE: &str = "type";
    pub const APP: &str = "appName";
    pub const TAGS: &str = "tags";
    pub const DESC: &str = "desc";
    pub const CREATED: &str = "createdMs";
}

/// Which config: namespace (Nacos's tenant; `""` is `public`), group and dataId.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigKey {
    pub tenant: String,
    pub group: String,
    pub data_id: String,
}

impl ConfigKey {
    /// Validates the three names (naming the field at fault) and fills the defaults.
    pub fn new(tenant: &str, group: &str, data_id: &str) -> Result<Self, ConfigError> {
        let tenant = tenant.trim();
        let tenant = if tenant.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            tenant
        };
        let group = if group.trim().is_empty() {
            DEFAULT_GROUP
        } else {
            group.trim()
        };
        validate_name("tenant", tenant, MAX_TENANT)?;
        validate_name("group", group, MAX_NAME)?;
        if data_id.trim().is_empty() {
            return Err(ConfigError::Invalid {
                field: "dataId",
                message: "is missing: name the config".into(),
            });
        }
        validate_name("dataId", data_id, MAX_NAME)?;
        Ok(Self {
            tenant: tenant.to_string(),
            group: group.to_string(),
            data_id: data_id.to_string(),
        })
    }

    /// The tenant as clients of the default namespace expect it back: `""`.
    pub fn tenant_for_clients(&self) -> &str {
        if self.tenant == DEFAULT_NAMESPACE {
            ""
        } else {
            &self.tenant
        }
    }

    pub fn store_key(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.group, self.data_id)
    }

    pub fn from_store_key(key: &str) -> Option<Self> {
        let mut parts = key.splitn(3, '/');
        Some(Self {
            tenant: parts.next()?.to_string(),
            group: parts.next()?.to_string(),
            data_id: parts.next()?.to_string(),
        })
    }
}

impl std::fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dataId {} of group {} in namespace {}",
            self.data_id, self.group, self.tenant
        )
    }
}

/// Nacos's rule for dataId and group: letters and digits (any script), and `_-.:`.
pub fn validate_name(field: &'static str, value: &str, max: usize) -> Result<(), ConfigError> {
    if value.chars().count() > max {
        return Err(ConfigError::Invalid {
            field,
            message: format!("is longer than {max} characters"),
        });
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(ConfigError::Invalid {
            field,
            message: format!("{value:?} holds {bad:?}: use letters, digits and _ - . : only"),
        });
    }
    Ok(())
}

/// What a config carries beside its content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigMeta {
    /// `text`, `json`, `yaml`, `properties`, `xml`, `html`, `toml`.
    pub kind: String,
    pub app_name: String,
    /// Comma-separated.
    pub tags: String,
    pub desc: String,
}

/// Config types Nacos knows; anything else is stored as `text`.
const TYPES: [&str; 7] = ["text", "json", "yaml", "properties", "xml", "html", "toml"];

impl ConfigMeta {
    fn to_attrs(&self, created_ms: Option<i64>) -> Attrs {
        let mut attrs = Attrs::new();
        let kind = self.kind.to_ascii_lowercase();
        let kind = if TYPES.contains(&kind.as_str()) {
            kind
        } else {
            "text".to_string()
        };
        attrs.insert(attr::TYPE.into(), kind);
        for (name, value) in [
            (attr::APP, &self.app_name),
            (attr::TAGS, &self.tags),
            (attr::DESC, &self.desc),
        ] {
            if !value.is_empty() {
                attrs.insert(name.into(), value.clone());
            }
        }
        if let Some(ms) = created_ms {
            attrs.insert(attr::CREATED.into(), ms.to_string());
        }
        attrs
    }

    fn from_attrs(attrs: &Attrs) -> Self {
        let get = |k: &str| attrs.get(k).cloned().unwrap_or_default();
        Self {
            kind: attrs
                .get(attr::TYPE)
                .cloned()
                .unwrap_or_else(|| "text".into()),
            app_name: get(attr::APP),
            tags: get(attr::TAGS),
            desc: get(attr::DESC),
        }
    }
}

/// A stored config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub key: ConfigKey,
    pub content: String,
    pub md5: String,
    pub meta: ConfigMeta,
    pub created_ms: i64,
    pub modified_ms: i64,
    /// The store's modify index (grows with every change anywhere).
    pub index: u64,
}

impl Config {
    fn from_entry(entry: Entry) -> Option<Self> {
        let key = ConfigKey::from_store_key(&entry.key)?;
        let created_ms = entry
            .attrs
            .get(attr::CREATED)
            .and_then(|v| v.parse().ok())
            .unwrap_or(entry.updated_at_ms);
        Some(Self {
            key,
            meta: ConfigMeta::from_attrs(&entry.attrs),
            content: String::from_utf8_lossy(&entry.value).into_owned(),
            md5: entry.md5,
            created_ms,
            modified_ms: entry.updated_at_ms,
            index: entry.modify_index,
        })
    }
}

/// One change in a config's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Nacos's `nid`.
    pub id: u64,
    pub key: ConfigKey,
    /// `I`, `U` or `D`, as Nacos writes them.
    pub op: &'static str,
    pub content: String,
    pub md5: String,
    pub meta: ConfigMeta,
    pub at_ms: i64,
    pub author: String,
    pub source_ip: String,
}

impl HistoryEntry {
    fn from_record(record: HistoryRecord) -> Option<Self> {
        Some(Self {
            id: record.id,
            key: ConfigKey::from_store_key(&record.key)?,
            op: match record.op {
                HistoryOp::Create => "I",
                HistoryOp::Update => "U",
                HistoryOp::Delete => "D",
            },
            content: String::from_utf8_lossy(&record.value).into_owned(),
            md5: record.md5,
            meta: ConfigMeta::from_attrs(&record.attrs),
            at_ms: record.at_ms,
            author: record.author.unwrap_or_default(),
            source_ip: record.source_ip.unwrap_or_default(),
        })
    }
}

/// Why a config operation was refused. Messages name the field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{field} {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(
        "content is {size} bytes, over the limit of {limit} bytes (config_max_content): split the config or raise the limit"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("content is missing or blank: a config needs content")]
    Empty,
    #[error(
        "Cas publish fail, server md5 may have changed: casMd5 {expected} does not match the current md5 {}",
        current.as_deref().unwrap_or("(none: the config does not exist)")
    )]
    CasMismatch {
        expected: String,
        current: Option<String>,
    },
    #[error("history record {0} not found for that config")]
    HistoryNotFound(u64),
    #[error(
        "the config center needs a shared store in a cluster: set kv_postgres_url (--kv-postgres-url-file FILE or BERTH_REGISTRY_KV_POSTGRES_URL) on every member"
    )]
    Unavailable,
    #[error("config store failed: {0}")]
    Store(#[from] KvError),
}

/// The config center.
#[derive(Clone)]
pub struct ConfigCenter {
    kv: Option<KvHandle>,
    space: Space,
    max_content: usize,
    stats: Arc<stats::ConfigStats>,
    reads: Arc<cache::ReadCache>,
}

impl ConfigCenter {
    /// A center over `kv` (whose options must declare [`SPACE`] with history).
    pub fn new(kv: KvHandle, max_content: usize) -> Self {
        Self {
            kv: Some(kv),
            space: space(),
            max_content,
            stats: Arc::default(),
            reads: Arc::default(),
        }
    }

    /// A center that answers every call with [`ConfigError::Unavailable`] (a cluster
    /// without a shared store).
    pub fn unavailable() -> Self {
        Self {
            kv: None,
            space: space(),
            max_content: DEFAULT_MAX_CONTENT,
            stats: Arc::default(),
            reads: Arc::default(),
        }
    }

    fn kv(&self) -> Result<&KvHandle, ConfigError> {
        self.kv.as_ref().ok_or(ConfigError::Unavailable)
    }

    pub fn available(&self) -> bool {
        self.kv.is_some()
    }

    pub fn handle(&self) -> Option<&KvHandle> {
        self.kv.as_ref()
    }

    pub fn space_ref(&self) -> &Space {
        &self.space
    }

    pub fn max_content(&self) -> usize {
        self.max_content
    }

    pub fn stats(&self) -> &stats::ConfigStats {
        &self.stats
    }

    /// The config, from memory while the store has not changed since it was read
    /// ([`cache`]).
    pub async fn get(&self, key: &ConfigKey) -> Result<Option<Config>, ConfigError> {
        let kv = self.kv()?;
        let store_key = key.store_key();
        let index = kv.current_index();
        if let Some(found) = self.reads.get(index, &store_key) {
            return Ok(found);
        }
        let found = kv
            .get(&self.space, &store_key)
            .await?
            .and_then(Config::from_entry);
        self.reads.put(index, store_key, found.clone());
        Ok(found)
    }

    /// Stores `content` under `key`. With `cas_md5` the write happens only while the
    /// current md5 is that one (a config that does not exist yet is created, as Nacos
    /// does).
    pub async fn publish(
        &self,
        key: &ConfigKey,
        content: &str,
        meta: &ConfigMeta,
        cas_md5: Option<&str>,
        actor: Actor,
    ) -> Result<Config, ConfigError> {
        if content.trim().is_empty() {
            return Err(ConfigError::Empty);
        }
        if content.len() > self.max_content {
            return Err(ConfigError::TooLarge {
                size: content.len(),
                limit: self.max_content,
            });
        }
        let kv = self.kv()?;
        let store_key = key.store_key();
        // The creation time survives updates; read with the same condition as the write
        // so a racing change fails the write rather than lying about it.
        let current = kv.get(&self.space, &store_key).await?;
        let created = current
            .as_ref()
            .and_then(|e| e.attrs.get(attr::CREATED).and_then(|v| v.parse().ok()))
            .unwrap_or_else(now_ms);
        let cond = match (cas_md5.filter(|m| !m.trim().is_empty()), &current) {
            (Some(expected), Some(_)) => Cond::ValueMd5(expected.trim().to_ascii_lowercase()),
            (Some(_), None) => Cond::Absent,
            // A plain publish is unconditional, but it must not clobber a creation time
            // that changed in between: condition on the entry read.
            (None, Some(entry)) => Cond::ModifyIndex(entry.modify_index),
            (None, None) => Cond::Absent,
        };
        let op = Op::Put {
            key: store_key.clone(),
            value: content.as_bytes().to_vec(),
            attrs: meta.to_attrs(Some(created)),
            cond,
        };
        let outcome = kv
            .txn(Txn::new(self.space.clone()).op(op).by(actor.clone()))
            .await?;
        match outcome {
            TxnOutcome::Committed(c) => match c.results.into_iter().next() {
                Some(OpResult::Put(entry)) => {
                    self.stats
                        .publishes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Config::from_entry(entry).ok_or(ConfigError::Store(KvError::Corrupt {
                        what: format!("config key {store_key:?}"),
                        reason: "it is not tenant/group/dataId".into(),
                    }))
                }
                _ => Err(ConfigError::Store(KvError::Corrupt {
                    what: format!("the answer to the put of {store_key:?}"),
                    reason: "it carried no entry".into(),
                })),
            },
            TxnOutcome::Failed(failed) => {
                if let Some(expected) = cas_md5.filter(|m| !m.trim().is_empty()) {
                    return Err(ConfigError::CasMismatch {
                        expected: expected.to_string(),
                        current: failed.current.map(|e| e.md5),
                    });
                }
                // A plain publish raced another writer: it still wins (last writer), so
                // try again on the new state.
                Box::pin(self.publish(key, content, meta, None, actor)).await
            }
        }
    }

    /// Removes the config; `false` when there was none.
    pub async fn remove(&self, key: &ConfigKey, actor: Actor) -> Result<bool, ConfigError> {
        let op = Op::delete(key.store_key());
        let outcome = self
            .kv()?
            .txn(Txn::new(self.space.clone()).op(op).by(actor))
            .await?
            .committed()?;
        Ok(matches!(
            outcome.results.first(),
            Some(OpResult::Deleted(Some(_)))
        ))
    }

    /// Configs of a namespace, optionally of one group, whose dataId contains `search`
    /// (or is it, with `exact`), one page (1-based) and the total.
    pub async fn list(
        &self,
        tenant: &str,
        group: Option<&str>,
        data_id: Option<&str>,
        page_no: usize,
        page_size: usize,
    ) -> Result<(usize, Vec<Config>), ConfigError> {
        let probe = ConfigKey::new(tenant, group.unwrap_or(DEFAULT_GROUP), "x")?;
        let prefix = match group.filter(|g| !g.is_empty()) {
            Some(_) => format!("{}/{}/", probe.tenant, probe.group),
            None => format!("{}/", probe.tenant),
        };
        let entries = self.kv()?.list(&self.space, &prefix, None).await?;
        let matching: Vec<Config> = entries
            .into_iter()
            .filter_map(Config::from_entry)
            .filter(|c| {
                data_id
                    .filter(|d| !d.is_empty())
                    .is_none_or(|d| wildcard(d, &c.key.data_id))
            })
            .collect();
        let total = matching.len();
        let page = matching
            .into_iter()
            .skip(page_no.saturating_sub(1) * page_size)
            .take(page_size)
            .collect();
        Ok((total, page))
    }

    /// One page (1-based) of a config's history, newest first, and the total.
    pub async fn history(
        &self,
        key: &ConfigKey,
        page_no: u64,
        page_size: u64,
    ) -> Result<(u64, Vec<HistoryEntry>), ConfigError> {
        let (space, k) = (self.space.clone(), key.store_key());
        let offset = page_no.saturating_sub(1) * page_size;
        let page = self
            .kv()?
            .run(move |store| store.history(&space, &k, offset, page_size))
            .await?;
        Ok((
            page.total,
            page.records
                .into_iter()
                .filter_map(HistoryEntry::from_record)
                .collect(),
        ))
    }

    /// One history record by its id.
    pub async fn history_entry(&self, id: u64) -> Result<Option<HistoryEntry>, ConfigError> {
        let space = self.space.clone();
        let record = self
            .kv()?
            .run(move |store| store.history_record(&space, id))
            .await?;
        Ok(record.and_then(HistoryEntry::from_record))
    }

    /// The record of `key` before record `id` (Nacos's "previous").
    pub async fn history_previous(
        &self,
        key: &ConfigKey,
        id: u64,
    ) -> Result<Option<HistoryEntry>, ConfigError> {
        let (space, k) = (self.space.clone(), key.store_key());
        let record = self
            .kv()?
            .run(move |store| store.history_previous(&space, &k, id))
            .await?;
        Ok(record.and_then(HistoryEntry::from_record))
    }

    /// Puts the config back as history record `id` left it (a deletion record restores
    /// the content it deleted).
    pub async fn rollback(
        &self,
        key: &ConfigKey,
        id: u64,
        actor: Actor,
    ) -> Result<Config, ConfigError> {
        let record = self
            .history_entry(id)
            .await?
            .filter(|r| &r.key == key)
            .ok_or(ConfigError::HistoryNotFound(id))?;
        self.publish(key, &record.content, &record.meta, None, actor)
            .await
    }

    /// Counts of configs, for `/metrics`.
    pub async fn count(&self) -> Result<usize, ConfigError> {
        Ok(self.kv()?.keys(&self.space, "", None).await?.len())
    }
}

fn space() -> Space {
    // A constant name that passes the space rules.
    Space::new(SPACE).unwrap_or_else(|_| unreachable!("{SPACE} is a valid space name"))
}

/// The kv options the config center needs of its store.
pub fn kv_options(options: berth_kv::KvOptions) -> berth_kv::KvOptions {
    options.space(space(), berth_kv::SpaceOptions { keep_history: true })
}

/// `*` matches any run of characters; without one, a substring match (Nacos's fuzzy
/// search).
pub fn wildcard(pattern: &str, value: &str) -> bool {
    if !pattern.contains('*') {
        return value.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = value;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            let Some(after) = rest.strip_prefix(part) else {
                return false;
            };
            rest = after;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

fn now_ms() -> i64 {
    crate::http::nacos_json::now_millis() as i64
}

/// The actor of a write: who (a Nacos `src_user`, or the API's caller) and from where.
pub fn actor(author: Option<&str>, source_ip: Option<std::net::IpAddr>) -> Actor {
    Actor {
        author: author.filter(|a| !a.is_empty()).map(str::to_string),
        source_ip: source_ip.map(|ip| ip.to_string()),
    }
}

/// Shared handle type the APIs hold.
pub type SharedCenter = Arc<ConfigCenter>;

#[cfg(test)]
mod tests;
