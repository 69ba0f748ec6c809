//! Typed identifiers. App ids are path-like (`shop/web`) so teams can group their apps.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Words that may not be an app id segment because the REST API uses them after the id
/// (`/v1/apps/shop/web/scale`).
pub const RESERVED_SEGMENTS: &[&str] = &["scale", "restart", "versions"];

/// Longest accepted app id, so it fits registry service names and file names.
pub const MAX_APP_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IdError {
    pub message: String,
    pub fix: String,
}

/// Path-like lower-case app id: segments of `a-z`, `0-9` and `-`, separated by `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(String);

impl AppId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let err = |message: String, fix: &str| IdError {
            message,
            fix: fix.to_string(),
        };
        if raw.is_empty() {
            return Err(err(
                "app id is empty".into(),
                "set id to a path-like lower-case name such as \"shop/web\"",
            ));
        }
        if raw.len() > MAX_APP_ID_LEN {
            return Err(err(
                format!("app id is {} characters long", raw.len()),
                &format!("use at most {MAX_APP_ID_LEN} characters"),
            ));
        }
        if raw.starts_with('/') || raw.ends_with('/') {
            return Err(err(
                format!("app id {raw:?} starts or ends with '/'"),
                "remove the leading and trailing '/', e.g. \"shop/web\"",
            ));
        }
        for segment in raw.split('/') {
            if segment.is_empty() {
                return Err(err(
                    format!("app id {raw:?} has an empty segment"),
                    "separate segments with a single '/'",
                ));
            }
            let valid_chars = segment
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            let valid_ends = !segment.starts_with('-') && !segment.ends_with('-');
            if !valid_chars || !valid_ends {
                return Err(err(
                    format!("app id segment {segment:?} is not allowed"),
                    "use lower-case letters, digits and '-' (not at either end) in each segment",
                ));
            }
            if RESERVED_SEGMENTS.contains(&segment) {
                return Err(err(
                    format!("app id segment {segment:?} is reserved by the API"),
                    "rename that segment (scale, restart and versions are reserved)",
                ));
            }
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<AppId> for String {
    fn from(value: AppId) -> Self {
        value.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! opaque_id {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(raw: impl Into<String>) -> Self {
                Self(raw.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(
    NodeId,
    "A node's id, chosen by its agent (the hostname by default)."
);
/// An instance's id, chosen by the server when it orders the start. Agents name the
/// instance's folder after it, so an id read from outside ([`InstanceId::parse`], serde)
/// must be safe as a folder name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

/// Longest accepted instance id.
pub const MAX_INSTANCE_ID_LEN: usize = 128;

impl InstanceId {
    /// An id as reported by an agent, taken as it is (the agent checked it).
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// An id from outside: 1-128 characters from `a-z`, `A-Z`, `0-9`, `-`, `_` and `.`,
    /// not starting with `.`.
    pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
        let id = raw.into();
        let valid_chars = id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if id.is_empty() || id.len() > MAX_INSTANCE_ID_LEN || !valid_chars || id.starts_with('.') {
            return Err(IdError {
                message: format!("{id:?} is not a valid instance id"),
                fix: format!(
                    "use 1-{MAX_INSTANCE_ID_LEN} characters from a-z, A-Z, 0-9, '-', '_' and '.', not starting with '.'"
                ),
            });
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `shop/web` + seq 42 -> `shop-web.42`: readable in process lists and log folders.
    pub fn generate(app: &AppId, unique: u64) -> Self {
        Self(format!("{}.{unique:x}", app.as_str().replace('/', "-")))
    }
}

impl TryFrom<String> for InstanceId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<InstanceId> for String {
    fn from(value: InstanceId) -> Self {
        value.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_path_like_ids() {
        for ok in ["web", "shop/web", "a/b-c/d9", "0"] {
            assert!(AppId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_ids_with_fix() {
        for bad in [
            "", "/web", "web/", "Shop", "a//b", "-a", "a-", "a_b", "a b", "x/scale", "versions",
        ] {
            let e = AppId::parse(bad).unwrap_err();
            assert!(!e.fix.is_empty(), "{bad}");
        }
        assert!(AppId::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn instance_ids_round_trip_through_json() {
        let id = InstanceId::try_from("a.b-c_1".to_string()).unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<InstanceId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<InstanceId>("\"a/b\"").is_err());
    }

    #[test]
    fn instance_ids_are_readable() {
        let app = AppId::parse("shop/web").unwrap();
        assert_eq!(InstanceId::generate(&app, 255).as_str(), "shop-web.ff");
    }
}
