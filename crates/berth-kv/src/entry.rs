//! The stored unit, the names it lives under, and the limits every engine enforces before
//! touching its database (so both engines refuse the same things with the same words).

use std::collections::BTreeMap;
use std::fmt;

use md5::{Digest, Md5};

use crate::KvError;

/// Metadata the layer above owns (a config's type and app name, a Consul key's flags and
/// session); the core stores it beside the value and never reads it.
pub type Attrs = BTreeMap<String, String>;

/// The longest key, in bytes (Consul's own limit is far larger, but a key is a name, and
/// this keeps every index row small).
pub const MAX_KEY_BYTES: usize = 1024;

/// The default value limit: Nacos's default `maxContent` is 10 MiB, but the registry's
/// configs and Consul's 512 KiB value limit are what Berth serves.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 512 * 1024;

/// A partition of keys ("config" for the Nacos config center, "kv" for Consul KV). A
/// transaction touches one space, and each space chooses whether it keeps history.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Space(String);

impl Space {
    pub fn new(name: &str) -> Result<Space, KvError> {
        let bad = |reason| {
            Err(KvError::InvalidSpace {
                name: name.to_string(),
                reason,
            })
        };
        if name.is_empty() {
            return bad("it is empty");
        }
        if name.len() > 64 {
            return bad("it is longer than 64 characters");
        }
        let legal = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
        if !name.chars().all(legal) {
            return bad("it holds a character outside a-z, 0-9, '-', '_' and '.'");
        }
        Ok(Space(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One key's current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub space: Space,
    pub key: String,
    pub value: Vec<u8>,
    /// Lowercase hex md5 of `value`, kept beside it so listings (Nacos long-polling
    /// compares many md5s) need not hash every value on every read.
    pub md5: String,
    pub attrs: Attrs,
    /// The index of the transaction that created the key (Consul's CreateIndex). A key
    /// deleted and created again gets a new one.
    pub create_index: u64,
    /// The index of the last transaction that wrote the key (Consul's ModifyIndex).
    pub modify_index: u64,
    /// When that transaction ran, by the store's clock (the database's for PostgreSQL, so
    /// registry processes with skewed clocks agree), in Unix ms.
    pub updated_at_ms: i64,
}

/// How a store is opened. Every process that shares one PostgreSQL database must open it
/// with the same options: they are not stored in the database.
#[derive(Clone, Debug)]
pub struct KvOptions {
    /// Values longer than this are refused with [`KvError::ValueTooLarge`].
    pub max_value_bytes: usize,
    /// The spaces this store serves; any other space is refused, so a misspelt space
    /// name fails loudly instead of writing to a partition nobody reads.
    pub spaces: BTreeMap<Space, SpaceOptions>,
    /// How many changes the broadcast feed buffers for a slow subscriber before it lags
    /// (it then resyncs by listing; see [`crate::Change`]).
    pub feed_capacity: usize,
}

impl Default for KvOptions {
    fn default() -> Self {
        KvOptions {
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            spaces: BTreeMap::new(),
            feed_capacity: 1024,
        }
    }
}

impl KvOptions {
    /// Declares a space.
    pub fn space(mut self, space: Space, options: SpaceOptions) -> Self {
        self.spaces.insert(space, options);
        self
    }

    pub fn max_value_bytes(mut self, limit: usize) -> Self {
        self.max_value_bytes = limit;
        self
    }

    pub(crate) fn space_options(&self, space: &Space) -> Result<&SpaceOptions, KvError> {
        self.spaces.get(space).ok_or_else(|| KvError::UnknownSpace {
            space: space.to_string(),
            known: if self.spaces.is_empty() {
                "none".to_string()
            } else {
                self.spaces
                    .keys()
                    .map(Space::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpaceOptions {
    /// Record every put and delete (the config center's history and rollback). Off for
    /// Consul KV, whose writes can be frequent (locks, sessions) and which has no history.
    pub keep_history: bool,
}

/// Lowercase hex md5, the form Nacos clients send and compare.
pub fn md5_hex(data: &[u8]) -> String {
    let digest = Md5::digest(data);
    let mut out = String::with_capacity(32);
    for byte in digest.iter() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn validate_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(invalid_key(key, "it is empty"));
    }
    validate_prefix(key)
}

/// A prefix may be empty (the whole space) but is otherwise held to a key's rules.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), KvError> {
    if prefix.len() > MAX_KEY_BYTES {
        return Err(invalid_key(prefix, "it is longer than 1024 bytes"));
    }
    if prefix.contains('\0') {
        return Err(invalid_key(prefix, "it holds a NUL character"));
    }
    Ok(())
}

fn invalid_key(key: &str, reason: &'static str) -> KvError {
    // Quote a long key by its start only: the message must stay readable in a log line.
    let shown = if key.len() > 120 {
        let mut end = 120;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &key[..end])
    } else {
        key.to_string()
    };
    KvError::InvalidKey { key: shown, reason }
}

/// The least string greater than every string that starts with `prefix`, so a prefix
/// scan is one index range (`key >= prefix AND key < upper`) in both engines, whose keys
/// compare bytewise (SQLite's BINARY collation, PostgreSQL's `COLLATE "C"`). UTF-8 keeps
/// code point order bytewise, so bumping the last character that can be bumped is
/// enough. `None` when there is no such bound (an empty prefix, or only U+10FFFF).
pub(crate) fn prefix_upper(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_the_well_known_digests() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"hello"), "5d41402abc4b2a76b9719d911017c592");
    }

    #[test]
    fn prefix_upper_bounds_exactly_the_keys_with_the_prefix() {
        assert_eq!(prefix_upper(""), None);
        assert_eq!(prefix_upper("a/"), Some("a0".to_string()));
        assert_eq!(prefix_upper("a\u{10FFFF}"), Some("b".to_string()));
        assert_eq!(prefix_upper("\u{D7FF}"), Some("\u{E000}".to_string()));
        assert_eq!(prefix_upper("\u{10FFFF}"), None);
        for (p, k, inside) in [
            ("a/", "a/", true),
            ("a/", "a/\u{10FFFF}zz", true),
            ("a/", "a0", false),
            ("a/", "a.", false),
            ("é", "é\u{10FFFF}", true),
            ("é", "ê", false),
        ] {
            let upper = prefix_upper(p).unwrap();
            let in_range = k >= p && k < upper.as_str();
            assert_eq!(in_range, inside, "{p:?} {k:?}");
            assert_eq!(k.starts_with(p), inside, "{p:?} {k:?}");
        }
    }

    #[test]
    fn spaces_and_keys_are_validated_and_named() {
        assert!(Space::new("config").is_ok());
        assert!(Space::new("Config").is_err());
        assert!(Space::new("").is_err());
        assert!(validate_key("").is_err());
        let err = validate_key("a\0b").unwrap_err().to_string();
        assert!(err.contains("NUL") && err.contains("a\\0b"), "{err}");
        let long = "k".repeat(2000);
        let err = validate_key(&long).unwrap_err().to_string();
        assert!(err.contains("1024") && err.len() < 400, "{err}");
        assert!(validate_key(&"k".repeat(1024)).is_ok());
        assert!(validate_prefix("").is_ok());
    }
}
