//! Typed route targets: the host + path prefix a request is matched against, and the
//! endpoints a route sends traffic to. Parsing lives here so every source (registry, NATS,
//! cache, in-process callers) normalises routes the same way.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Why a route string or endpoint was rejected. Each message names the input and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("route {0:?} has an empty host; write it as `host` or `host/path`")]
    EmptyHost(String),
    #[error(
        "route {route:?} has an invalid host {host:?}: use letters, digits, '-' and '.', \
         optionally starting with `*.` for a wildcard"
    )]
    InvalidHost { route: String, host: String },
    #[error("route {0:?} has an invalid path: paths may not contain '?', '#' or whitespace")]
    InvalidPath(String),
}

/// A normalised host name: lower case, no port, no trailing dot. A leading `*.` makes it a
/// wildcard that matches any single or multi-label prefix not matched more precisely.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Host(String);

impl Host {
    /// Parses a host as written in a route (no port). `route` is only used in errors.
    pub fn parse_route_host(host: &str, route: &str) -> Result<Self, RouteError> {
        let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
        if h.is_empty() {
            return Err(RouteError::EmptyHost(route.to_string()));
        }
        let body = h.strip_prefix("*.").unwrap_or(&h);
        let valid = !body.is_empty()
            && body.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(RouteError::InvalidHost {
                route: route.to_string(),
                host: host.to_string(),
            });
        }
        Ok(Host(h))
    }

    /// Normalises the `Host` header (or `:authority`) of a request. `None` when empty.
    pub fn from_request_authority(authority: &str) -> Option<Self> {
        let a = authority.trim();
        // Strip a port, keeping IPv6 literals (`[::1]:80`) intact.
        let host = if let Some(rest) = a.strip_prefix('[') {
            match rest.find(']') {
                Some(end) => &a[..end + 2],
                None => a,
            }
        } else {
            a.rsplit_once(':').map(|(h, _)| h).unwrap_or(a)
        };
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        if h.is_empty() { None } else { Some(Host(h)) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// The lookup order for a request host: itself, then wildcards dropping one label at
    /// a time (`a.b.c` -> `*.b.c` -> `*.c`).
    pub fn lookup_candidates(&self) -> impl Iterator<Item = String> + '_ {
        let exact = std::iter::once(self.0.clone());
        let labels: Vec<usize> = self.0.match_indices('.').map(|(i, _)| i).collect();
        let wild = labels
            .into_iter()
            .map(move |dot| format!("*{}", &self.0[dot..]));
        exact.chain(wild)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path prefix matched on segment boundaries: `/api` matches `/api` and `/api/x`, not
/// `/apix`. The empty prefix matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PathPrefix(String);

impl PathPrefix {
    pub fn root() -> Self {
        PathPrefix(String::new())
    }

    fn parse(path: &str, route: &str) -> Result<Self, RouteError> {
        if path
            .chars()
            .any(|c| c == '?' || c == '#' || c.is_whitespace())
        {
            return Err(RouteError::InvalidPath(route.to_string()));
        }
        let trimmed = path.trim_end_matches('/');
        if trimmed.is_empty() {
            return Ok(Self::root());
        }
        let with_slash = if trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        Ok(PathPrefix(with_slash))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, path: &str) -> bool {
        if self.0.is_empty() {
            return true;
        }
        match path.strip_prefix(self.0.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// Host plus path prefix: the key of one route in the table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RouteKey {
    pub host: Host,
    pub path: PathPrefix,
}

impl RouteKey {
    /// Parses `host` or `host/path` (the `routes` syntax of app specs and `berth.routes`).
    /// A scheme (`http://`) and a port are tolerated and dropped.
    pub fn parse(route: &str) -> Result<Self, RouteError> {
        let s = route.trim();
        let s = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .unwrap_or(s);
        let (authority, path) = match s.find('/') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        let host = authority
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(authority);
        Ok(RouteKey {
            host: Host::parse_route_host(host, route)?,
            path: PathPrefix::parse(path, route)?,
        })
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.host, self.path.as_str())
    }
}

/// How a route picks one of its endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LbAlgorithm {
    /// Weighted round-robin (smooth: weights interleave rather than burst).
    #[default]
    RoundRobin,
    /// Fewest requests in flight; ties broken round-robin.
    LeastConnection,
}

impl LbAlgorithm {
    /// Accepts gorouter's names (`round-robin`, `least-connection`) and a few spellings.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "round-robin" | "roundrobin" | "rr" => Some(Self::RoundRobin),
            "least-connection" | "least-connections" | "leastconn" | "least-conn" => {
                Some(Self::LeastConnection)
            }
            _ => None,
        }
    }
}

/// One backend of a route as a source describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub addr: SocketAddr,
    /// Relative weight for round-robin; 0 is treated as 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Identity used for sticky sessions (`__VCAP_ID`); defaults to the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    1
}

impl EndpointSpec {
    pub fn new(addr: SocketAddr) -> Self {
        EndpointSpec {
            addr,
            weight: 1,
            instance_id: None,
            app: None,
            tags: BTreeMap::new(),
        }
    }

    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// The sticky-session identity of this endpoint.
    pub fn sticky_id(&self) -> String {
        self.instance_id
            .clone()
            .unwrap_or_else(|| self.addr.to_string())
    }
}

/// A route with its endpoints, as one source contributes it. Several sources may
/// contribute to the same key; the table merges their endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub key: RouteKey,
    #[serde(default)]
    pub lb: LbAlgorithm,
    pub endpoints: Vec<EndpointSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_and_path() {
        let k = RouteKey::parse("Shop.Example./api/").unwrap();
        assert_eq!(k.host.as_str(), "shop.example");
        assert_eq!(k.path.as_str(), "/api");
        let k = RouteKey::parse("http://web.example:8080").unwrap();
        assert_eq!(k.host.as_str(), "web.example");
        assert_eq!(k.path, PathPrefix::root());
        assert!(
            RouteKey::parse("*.apps.example")
                .unwrap()
                .host
                .is_wildcard()
        );
    }

    #[test]
    fn rejects_bad_routes_with_named_errors() {
        assert_eq!(
            RouteKey::parse("/api"),
            Err(RouteError::EmptyHost("/api".into()))
        );
        let e = RouteKey::parse("bad host/x").unwrap_err();
        assert!(e.to_string().contains("invalid host"), "{e}");
        assert!(RouteKey::parse("a..b").is_err());
        assert!(RouteKey::parse("x.example/a?b").is_err());
    }

    #[test]
    fn path_prefix_matches_on_segment_boundaries() {
        let p = PathPrefix::parse("/api", "r").unwrap();
        assert!(p.matches("/api"));
        assert!(p.matches("/api/v1"));
        assert!(!p.matches("/apix"));
        assert!(!p.matches("/"));
        assert!(PathPrefix::root().matches("/anything"));
    }

    #[test]
    fn request_authority_drops_port_and_case() {
        assert_eq!(
            Host::from_request_authority("Web.Example:8080")
                .unwrap()
                .as_str(),
            "web.example"
        );
        assert_eq!(
            Host::from_request_authority("[::1]:80").unwrap().as_str(),
            "[::1]"
        );
        assert!(Host::from_request_authority("").is_none());
        assert!(Host::from_request_authority(":80").is_none());
    }

    #[test]
    fn wildcard_candidates_drop_one_label_at_a_time() {
        let h = Host::from_request_authority("a.b.example.com").unwrap();
        let c: Vec<String> = h.lookup_candidates().collect();
        assert_eq!(
            c,
            vec![
                "a.b.example.com",
                "*.b.example.com",
                "*.example.com",
                "*.com"
            ]
        );
    }

    #[test]
    fn lb_names_follow_gorouter() {
        assert_eq!(
            LbAlgorithm::parse("least-connection"),
            Some(LbAlgorithm::LeastConnection)
        );
        assert_eq!(
            LbAlgorithm::parse("round-robin"),
            Some(LbAlgorithm::RoundRobin)
        );
        assert_eq!(LbAlgorithm::parse("random"), None);
    }
}
