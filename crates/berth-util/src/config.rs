//! Layered configuration: TOML file < environment < command-line flags.
//!
//! Every role builds one typed config struct from a [`Layers`]. The environment is read
//! through the [`ConfigSource`] trait, so tests feed a [`MapSource`] and never touch the
//! process environment (which is global and racy under a multi-threaded test runner).
//!
//! Keys are snake_case (`grpc_listen`); nested TOML tables are addressed with dots
//! (`nats.url`). The environment variable for key `grpc_listen` of role `registry` is
//! `BERTH_REGISTRY_GRPC_LISTEN` (dots also become underscores).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Where a configuration value came from; part of every error so the user knows what to edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(String),
    Env(String),
    File(PathBuf),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag --{flag}"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Default => write!(f, "built-in default"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid value {value:?} for `{key}` (from {origin}): expected {expected}")]
    Invalid {
        key: String,
        value: String,
        origin: Origin,
        expected: String,
    },
    #[error("missing required setting `{key}`: {hint}")]
    Missing { key: String, hint: String },
    #[error("cannot read config file {path}: {reason}")]
    FileRead { path: PathBuf, reason: String },
    #[error("config file {path} is not valid TOML: {reason}")]
    FileParse { path: PathBuf, reason: String },
    #[error(
        "config file {path} has unknown key(s) {}; known keys are: {}",
        unknown.join(", "),
        known.join(", ")
    )]
    UnknownKeys {
        path: PathBuf,
        unknown: Vec<String>,
        known: Vec<String>,
    },
    #[error("cannot read secret file {path} named by `{key}`: {reason}")]
    SecretFile {
        key: String,
        path: PathBuf,
        reason: String,
    },
}

/// A place configuration values can come from, looked up by key.
pub trait ConfigSource: Send + Sync {
    /// The raw value for `key`, if this source sets it.
    fn get(&self, key: &str) -> Option<String>;
    /// How the user would name the setting in this source (an env var name, ...).
    fn origin(&self, key: &str) -> Origin;
}

/// The real process environment, `BERTH_<ROLE>_<KEY>`.
#[derive(Debug, Clone)]
pub struct EnvSource {
    prefix: String,
}

impl EnvSource {
    pub fn for_role(role: &str) -> Self {
        Self {
            prefix: format!("BERTH_{}_", role.to_ascii_uppercase().replace('-', "_")),
        }
    }

    fn var_name(&self, key: &str) -> String {
        format!(
            "{}{}",
            self.prefix,
            key.to_ascii_uppercase().replace(['.', '-'], "_")
        )
    }
}

impl ConfigSource for EnvSource {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(self.var_name(key)).ok()
    }
    fn origin(&self, key: &str) -> Origin {
        Origin::Env(self.var_name(key))
    }
}

/// A fixed map standing in for the environment in tests.
#[derive(Debug, Clone, Default)]
pub struct MapSource {
    values: HashMap<String, String>,
}

impl MapSource {
    pub fn new<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl ConfigSource for MapSource {
    fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }
    fn origin(&self, key: &str) -> Origin {
        Origin::Env(key.to_string())
    }
}

/// A value that can be parsed from one configuration string.
pub trait FromConfigValue: Sized {
    /// What a valid value looks like, for error messages ("a duration like 5s").
    fn expected() -> String;
    fn parse_value(raw: &str) -> Option<Self>;
}

macro_rules! from_str_value {
    ($($ty:ty => $expected:expr),* $(,)?) => {$(
        impl FromConfigValue for $ty {
            fn expected() -> String { $expected.to_string() }
            fn parse_value(raw: &str) -> Option<Self> { raw.trim().parse().ok() }
        }
    )*};
}

from_str_value! {
    u16 => "a whole number from 0 to 65535",
    u32 => "a whole number from 0 to 4294967295",
    u64 => "a non-negative whole number",
    usize => "a non-negative whole number",
    i64 => "a whole number",
    f64 => "a number such as 0.5",
    SocketAddr => "an IP address and port such as 127.0.0.1:8080 or [::1]:8080",
}

/// An address that can be switched off: `host:port`, or `off` (also `none`). Used by
/// every role's `registry_http`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrOrOff(pub Option<std::net::SocketAddr>);

impl FromConfigValue for AddrOrOff {
    fn expected() -> String {
        "an address such as 127.0.0.1:8848, or `off`".into()
    }
    fn parse_value(raw: &str) -> Option<Self> {
        match raw.trim() {
            "off" | "none" => Some(Self(None)),
            addr => addr.parse().ok().map(|a| Self(Some(a))),
        }
    }
}

impl FromConfigValue for String {
    fn expected() -> String {
        "a string".into()
    }
    fn parse_value(raw: &str) -> Option<Self> {
        Some(raw.to_string())
    }
}

impl FromConfigValue for PathBuf {
    fn expected() -> String {
        "a non-empty path".into()
    }
    fn parse_value(raw: &str) -> Option<Self> {
        (!raw.is_empty()).then(|| PathBuf::from(raw))
    }
}

impl FromConfigValue for bool {
    fn expected() -> String {
        "true or false".into()
    }
    fn parse_value(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(true),
            "false" | "no" | "off" | "0" => Some(false),
            _ => None,
        }
    }
}

impl FromConfigValue for Duration {
    fn expected() -> String {
        "a duration with a unit, such as 250ms, 5s, 2m or 1h".into()
    }
    fn parse_value(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        // A bare number is ambiguous (seconds? milliseconds?), so it is refused.
        if raw.is_empty() || raw.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return None;
        }
        humantime::parse_duration(raw).ok()
    }
}

impl<T: FromConfigValue> FromConfigValue for Vec<T> {
    fn expected() -> String {
        format!("a comma-separated list, each item {}", T::expected())
    }
    fn parse_value(raw: &str) -> Option<Self> {
        if raw.trim().is_empty() {
            return Some(Vec::new());
        }
        raw.split(',')
            .map(|item| T::parse_value(item.trim()))
            .collect()
    }
}

/// The three layers of one role's configuration, queried key by key.
///
/// Every key a role reads is remembered, so [`Layers::finish`] can reject keys in the
/// file that nothing reads: a typo in a config file must not be silently ignored.
pub struct Layers<'a> {
    role: String,
    file: Option<(PathBuf, BTreeMap<String, String>)>,
    env: &'a dyn ConfigSource,
    flags: HashMap<String, String>,
    read: Mutex<BTreeSet<String>>,
}

impl<'a> Layers<'a> {
    /// `flags` are the values given on the command line, keyed like the file
    /// (`grpc_listen`), only for flags the user actually passed.
    pub fn new(
        role: &str,
        file: Option<&Path>,
        env: &'a dyn ConfigSource,
        flags: Vec<(String, String)>,
    ) -> Result<Self, ConfigError> {
        let file = match file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|err| ConfigError::FileRead {
                    path: path.to_path_buf(),
                    reason: err.to_string(),
                })?;
                Some((path.to_path_buf(), flatten_toml(path, &text)?))
            }
        };
        Ok(Self {
            role: role.to_string(),
            file,
            env,
            flags: flags.into_iter().collect(),
            read: Mutex::new(BTreeSet::new()),
        })
    }

    /// Layers with only a file's text, for tests and embedded defaults.
    pub fn from_toml_str(
        role: &str,
        text: &str,
        env: &'a dyn ConfigSource,
    ) -> Result<Self, ConfigError> {
        let path = PathBuf::from("<inline>");
        let table = flatten_toml(&path, text)?;
        Ok(Self {
            role: role.to_string(),
            file: Some((path, table)),
            env,
            flags: HashMap::new(),
            read: Mutex::new(BTreeSet::new()),
        })
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    fn raw(&self, key: &str) -> Option<(String, Origin)> {
        self.read
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key.to_string());
        if let Some(value) = self.flags.get(key) {
            return Some((value.clone(), Origin::Flag(key.replace('_', "-"))));
        }
        if let Some(value) = self.env.get(key) {
            return Some((value, self.env.origin(key)));
        }
        let (path, table) = self.file.as_ref()?;
        table
            .get(key)
            .map(|value| (value.clone(), Origin::File(path.clone())))
    }

    /// The value of `key`, if any layer sets it.
    pub fn get<T: FromConfigValue>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        let Some((value, origin)) = self.raw(key) else {
            return Ok(None);
        };
        match T::parse_value(&value) {
            Some(parsed) => Ok(Some(parsed)),
            None => Err(ConfigError::Invalid {
                key: key.to_string(),
                value,
                origin,
                expected: T::expected(),
            }),
        }
    }

    pub fn get_or<T: FromConfigValue>(&self, key: &str, default: T) -> Result<T, ConfigError> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// A setting without a sensible default; `hint` tells the user how to give it.
    pub fn require<T: FromConfigValue>(&self, key: &str, hint: &str) -> Result<T, ConfigError> {
        self.get(key)?.ok_or_else(|| ConfigError::Missing {
            key: key.to_string(),
            hint: hint.to_string(),
        })
    }

    /// A secret given inline as `key` or, better, as a file path in `key_file` (so it
    /// stays out of process listings and shell history). Trailing newlines are dropped.
    pub fn secret(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let file_key = format!("{key}_file");
        if let Some(path) = self.get::<PathBuf>(&file_key)? {
            let text = std::fs::read_to_string(&path).map_err(|err| ConfigError::SecretFile {
                key: file_key.clone(),
                path: path.clone(),
                reason: err.to_string(),
            })?;
            return Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()));
        }
        self.get::<String>(key)
    }

    /// Fails if the config file holds keys that nothing read (typos, removed settings).
    pub fn finish(&self) -> Result<(), ConfigError> {
        let Some((path, table)) = &self.file else {
            return Ok(());
        };
        let read = self
            .read
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let unknown: Vec<String> = table
            .keys()
            .filter(|key| !read.contains(*key))
            .cloned()
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::UnknownKeys {
                path: path.clone(),
                unknown,
                known: read.iter().cloned().collect(),
            })
        }
    }
}

/// Turns a TOML document into `dotted.key -> string` pairs; arrays become
/// comma-separated lists so every value parses through [`FromConfigValue`].
fn flatten_toml(path: &Path, text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let table: toml::Table =
        text.parse()
            .map_err(|err: toml::de::Error| ConfigError::FileParse {
                path: path.to_path_buf(),
                reason: err.message().to_string(),
            })?;
    let mut out = BTreeMap::new();
    flatten_into(path, "", &table, &mut out)?;
    Ok(out)
}

fn flatten_into(
    path: &Path,
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten_into(path, &full, inner, out)?,
            toml::Value::Array(items) => {
                let mut parts = Vec::with_capacity(items.len());
                for item in items {
                    parts.push(scalar_to_string(path, &full, item)?);
                }
                out.insert(full, parts.join(","));
            }
            scalar => {
                let text = scalar_to_string(path, &full, scalar)?;
                out.insert(full, text);
            }
        }
    }
    Ok(())
}

fn scalar_to_string(path: &Path, key: &str, value: &toml::Value) -> Result<String, ConfigError> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            return Err(ConfigError::FileParse {
                path: path.to_path_buf(),
                reason: format!("`{key}` holds a nested list or table; use a flat list of values"),
            });
        }
    })
}

/// A secret setting (password, token, URL with credentials): `Debug` and `Display` never
/// show it, so a config struct can be logged whole.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> MapSource {
        MapSource::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let env = env(&[("listen", "127.0.0.1:2"), ("grace", "3s")]);
        let mut layers = Layers::from_toml_str(
            "router",
            "listen = \"127.0.0.1:1\"\ngrace = \"1s\"\nname = \"a\"",
            &env,
        )
        .unwrap();
        layers
            .flags
            .insert("listen".to_string(), "127.0.0.1:3".to_string());
        let listen: SocketAddr = layers
            .get_or("listen", "0.0.0.0:0".parse().unwrap())
            .unwrap();
        assert_eq!(listen, "127.0.0.1:3".parse().unwrap());
        assert_eq!(
            layers.get::<Duration>("grace").unwrap(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(layers.get::<String>("name").unwrap().as_deref(), Some("a"));
        assert_eq!(layers.get::<String>("absent").unwrap(), None);
        layers.finish().unwrap();
    }

    #[test]
    fn bad_value_names_key_value_origin_and_expectation() {
        let env = env(&[("listen", "localhost:99999")]);
        let layers = Layers::new("registry", None, &env, vec![]).unwrap();
        let err = layers.get::<SocketAddr>("listen").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`listen`"), "{text}");
        assert!(text.contains("localhost:99999"), "{text}");
        assert!(text.contains("environment variable listen"), "{text}");
        assert!(text.contains("127.0.0.1:8080"), "{text}");
    }

    #[test]
    fn env_source_names_the_variable() {
        let source = EnvSource::for_role("registry");
        assert_eq!(
            source.origin("grpc_listen"),
            Origin::Env("BERTH_REGISTRY_GRPC_LISTEN".into())
        );
        assert_eq!(
            source.origin("nats.url"),
            Origin::Env("BERTH_REGISTRY_NATS_URL".into())
        );
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(
            Duration::parse_value("250ms"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(Duration::parse_value("2m"), Some(Duration::from_secs(120)));
        assert_eq!(Duration::parse_value("5"), None);
        assert_eq!(Duration::parse_value("soon"), None);
    }

    #[test]
    fn booleans_in_any_case_and_lists() {
        assert_eq!(bool::parse_value("TRUE"), Some(true));
        assert_eq!(bool::parse_value("Off"), Some(false));
        assert_eq!(bool::parse_value("maybe"), None);
        assert_eq!(Vec::<u16>::parse_value("1, 2,3"), Some(vec![1, 2, 3]));
        assert_eq!(Vec::<u16>::parse_value("1,x"), None);
        assert_eq!(Vec::<u16>::parse_value(""), Some(vec![]));
    }

    #[test]
    fn toml_arrays_and_tables_flatten() {
        let env = MapSource::default();
        let layers = Layers::from_toml_str(
            "router",
            "peers = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n[nats]\nurl = \"nats://127.0.0.1:4222\"\nport = 7",
            &env,
        )
        .unwrap();
        let peers: Vec<SocketAddr> = layers.get_or("peers", vec![]).unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(
            layers.get::<String>("nats.url").unwrap().as_deref(),
            Some("nats://127.0.0.1:4222")
        );
        assert_eq!(layers.get::<u16>("nats.port").unwrap(), Some(7));
        layers.finish().unwrap();
    }

    #[test]
    fn unknown_file_keys_are_rejected_with_the_known_ones() {
        let env = MapSource::default();
        let layers =
            Layers::from_toml_str("router", "listen = \"127.0.0.1:1\"\nlisen = 1", &env).unwrap();
        let _ = layers.get::<SocketAddr>("listen").unwrap();
        let err = layers.finish().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("lisen"), "{text}");
        assert!(text.contains("known keys are: listen"), "{text}");
    }

    #[test]
    fn invalid_toml_is_an_error_not_a_panic() {
        let env = MapSource::default();
        let err = match Layers::from_toml_str("router", "listen = ", &env) {
            Err(err) => err,
            Ok(_) => panic!("broken TOML accepted"),
        };
        assert!(matches!(err, ConfigError::FileParse { .. }), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let env = MapSource::default();
        let err = match Layers::new(
            "router",
            Some(Path::new("/nonexistent/b.toml")),
            &env,
            vec![],
        ) {
            Err(err) => err,
            Ok(_) => panic!("missing file accepted"),
        };
        assert!(err.to_string().contains("/nonexistent/b.toml"), "{err}");
    }

    #[test]
    fn secrets_come_from_files_without_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let env = env(&[("token_file", path.to_str().unwrap())]);
        let layers = Layers::new("registry", None, &env, vec![]).unwrap();
        assert_eq!(layers.secret("token").unwrap().as_deref(), Some("s3cret"));

        let env = self::env(&[("token_file", "/nonexistent/token")]);
        let layers = Layers::new("registry", None, &env, vec![]).unwrap();
        let err = layers.secret("token").unwrap_err();
        assert!(err.to_string().contains("token_file"), "{err}");
    }

    #[test]
    fn required_settings_say_how_to_set_them() {
        let env = MapSource::default();
        let layers = Layers::new("agent", None, &env, vec![]).unwrap();
        let err = layers
            .require::<String>("server", "pass --server ADDR")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required setting `server`: pass --server ADDR"
        );
    }

    #[test]
    fn secrets_never_print() {
        let secret = super::Secret::new("postgres://berth:hunter2@db/berth");
        assert!(!format!("{secret:?} {secret}").contains("hunter2"));
        assert_eq!(secret.expose(), "postgres://berth:hunter2@db/berth");
    }
}
