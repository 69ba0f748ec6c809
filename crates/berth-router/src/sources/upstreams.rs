//! Upstreams managed over HTTP, as nginx's dyups module offers: add, change, list and
//! delete a named upstream (routes and servers) on a running router, no reload. For
//! scripts and systems that keep their own inventory; services in the registry need none
//! of this (the registry watch feeds them).
//!
//! On the status listener (behind its basic auth):
//! - `GET /v1/upstreams`: every upstream; `GET /v1/upstreams/{name}`: one.
//! - `PUT /v1/upstreams/{name}`: create or replace. JSON
//!   `{"routes": ["api.example.com/v1"], "servers": [{"address": "127.0.0.1:8081",
//!   "weight": 2}], "lb": "least-connection"}`, or dyups' own text body:
//!   `server 127.0.0.1:8081 weight=2; server 127.0.0.1:8082;` with the routes in the
//!   `routes` query parameter (comma-separated).
//! - `DELETE /v1/upstreams/{name}`.
//!
//! Upstreams are a route source of their own (`api`): they merge with the registry's and
//! NATS's routes like those merge with each other. With `upstreams_file` they are kept on
//! disk (written atomically on each change) and loaded at start; without it they live as
//! long as the process, as dyups' do.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::route::{EndpointSpec, LbAlgorithm, RouteEntry, RouteKey};
use crate::store::RouteStore;

pub const SOURCE_API: &str = "api";
const MAX_SERVERS: usize = 1000;
const MAX_ROUTES: usize = 100;
const MAX_WEIGHT: u32 = 1000;
/// Request bodies beyond this are refused (a thousand servers fit easily).
pub const MAX_BODY: usize = 256 * 1024;

/// One upstream as it is stored and listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub routes: Vec<String>,
    #[serde(default)]
    pub servers: Vec<Server>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub address: SocketAddr,
    #[serde(default = "one")]
    pub weight: u32,
    /// Speak HTTP/2 cleartext to this server.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http2: bool,
}

fn one() -> u32 {
    1
}

/// A refused request: the field and the fix.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

pub fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!(
                "{name:?} is not an upstream name: use 1-128 characters from a-z, A-Z, 0-9, '-', '_', '.'"
            ),
        ))
    }
}

impl Upstream {
    /// The route entries this upstream contributes; `Err` names the first bad field.
    pub fn entries(&self) -> Result<Vec<RouteEntry>, Invalid> {
        if self.routes.is_empty() || self.routes.len() > MAX_ROUTES {
            return Err(invalid(
                "routes",
                format!("give 1 to {MAX_ROUTES} routes such as \"api.example.com/v1\""),
            ));
        }
        if self.servers.len() > MAX_SERVERS {
            return Err(invalid(
                "servers",
                format!("{} servers; at most {MAX_SERVERS}", self.servers.len()),
            ));
        }
        let lb = match &self.lb {
            None => LbAlgorithm::default(),
            Some(name) => LbAlgorithm::parse(name).ok_or_else(|| {
                invalid(
                    "lb",
                    format!(
                        "{name:?} is not a balancing algorithm: use round-robin or least-connection"
                    ),
                )
            })?,
        };
        let mut endpoints = Vec::with_capacity(self.servers.len());
        for (i, server) in self.servers.iter().enumerate() {
            if server.weight == 0 || server.weight > MAX_WEIGHT {
                return Err(invalid(
                    format!("servers[{i}].weight"),
                    format!("{} is not a weight from 1 to {MAX_WEIGHT}", server.weight),
                ));
            }
            let mut endpoint = EndpointSpec::new(server.address).with_weight(server.weight);
            endpoint.http2 = server.http2;
            endpoints.push(endpoint);
        }
        self.routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let key = RouteKey::parse(route)
                    .map_err(|e| invalid(format!("routes[{i}]"), e.to_string()))?;
                Ok(RouteEntry {
                    key,
                    lb,
                    endpoints: endpoints.clone(),
                })
            })
            .collect()
    }

    /// dyups' text form: `server ADDR [weight=N];` statements, routes given apart.
    pub fn from_dyups(text: &str, routes: Vec<String>) -> Result<Self, Invalid> {
        let mut servers = Vec::new();
        for (i, statement) in text
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            let mut words = statement.split_whitespace();
            if words.next() != Some("server") {
                return Err(invalid(
                    format!("body statement {}", i + 1),
                    format!("{statement:?}: write `server HOST:PORT [weight=N];`"),
                ));
            }
            let address = words.next().unwrap_or_default();
            let address: SocketAddr = address.parse().map_err(|_| {
                invalid(
                    format!("servers[{i}].address"),
                    format!("{address:?} is not an IP:port (names are not resolved)"),
                )
            })?;
            let mut server = Server {
                address,
                weight: 1,
                http2: false,
            };
            for option in words {
                match option.split_once('=') {
                    Some(("weight", n)) => {
                        server.weight = n.parse().map_err(|_| {
                            invalid(
                                format!("servers[{i}].weight"),
                                format!("{n:?} is not a number"),
                            )
                        })?;
                    }
                    _ => {
                        return Err(invalid(
                            format!("servers[{i}]"),
                            format!(
                                "unknown server option {option:?}: only weight=N is understood"
                            ),
                        ));
                    }
                }
            }
            servers.push(server);
        }
        Ok(Self {
            routes,
            servers,
            lb: None,
        })
    }
}

/// A `PUT` body: JSON when the content type allows it and the body is an object, else
/// dyups' text with the routes from the comma-separated `routes` query parameter.
pub fn parse_body(json: bool, body: &str, routes: Option<&str>) -> Result<Upstream, Invalid> {
    if json && body.trim_start().starts_with('{') {
        return serde_json::from_str::<Upstream>(body).map_err(|e| {
            invalid(
                "body",
                format!("{e}: send {{\"routes\": [...], \"servers\": [{{\"address\": \"IP:PORT\", \"weight\": N}}]}}"),
            )
        });
    }
    let routes = routes
        .map(|r| {
            r.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Upstream::from_dyups(body, routes)
}

/// The upstreams of this router, and where they are kept.
pub struct Upstreams {
    store: Arc<RouteStore>,
    file: Option<PathBuf>,
    all: Mutex<BTreeMap<String, Upstream>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamsError {
    #[error("cannot read the upstreams file {path}: {reason} (fix or remove it)")]
    Load { path: PathBuf, reason: String },
    #[error("cannot write the upstreams file {path}: {source}")]
    Save {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Upstreams {
    /// Loads the file, if any, and puts its upstreams in the table.
    pub fn open(store: Arc<RouteStore>, file: Option<PathBuf>) -> Result<Self, UpstreamsError> {
        let mut all = BTreeMap::new();
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    all = serde_json::from_slice::<BTreeMap<String, Upstream>>(&bytes).map_err(
                        |e| UpstreamsError::Load {
                            path: path.clone(),
                            reason: e.to_string(),
                        },
                    )?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(UpstreamsError::Load {
                        path: path.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        let mut items = Vec::new();
        for (name, upstream) in &all {
            let entries = upstream.entries().map_err(|e| UpstreamsError::Load {
                path: file.clone().unwrap_or_default(),
                reason: format!("upstream {name}: {}: {}", e.field, e.message),
            })?;
            items.push((name.clone(), entries));
        }
        store.set_items(SOURCE_API, true, items);
        Ok(Self {
            store,
            file,
            all: Mutex::new(all),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Upstream>> {
        self.all.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list(&self) -> BTreeMap<String, Upstream> {
        self.lock().clone()
    }

    /// Creates or replaces; returns whether it existed. The file is written before the
    /// table changes, so what is served is always what a restart would load.
    pub fn put(&self, name: &str, upstream: Upstream) -> Result<bool, PutError> {
        check_name(name).map_err(PutError::Invalid)?;
        let entries = upstream.entries().map_err(PutError::Invalid)?;
        let mut all = self.lock();
        let mut next = all.clone();
        let existed = next.insert(name.to_string(), upstream).is_some();
        self.save(&next).map_err(PutError::Save)?;
        *all = next;
        self.store
            .set_items(SOURCE_API, false, [(name.to_string(), entries)]);
        Ok(existed)
    }

    pub fn delete(&self, name: &str) -> Result<bool, UpstreamsError> {
        let mut all = self.lock();
        if !all.contains_key(name) {
            return Ok(false);
        }
        let mut next = all.clone();
        next.remove(name);
        self.save(&next)?;
        *all = next;
        self.store
            .set_items(SOURCE_API, false, [(name.to_string(), Vec::new())]);
        Ok(true)
    }

    fn save(&self, all: &BTreeMap<String, Upstream>) -> Result<(), UpstreamsError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(all).unwrap_or_default();
        berth_util::datadir::write_atomic(path, &bytes).map_err(|source| UpstreamsError::Save {
            path: path.clone(),
            source,
        })
    }
}

#[derive(Debug)]
pub enum PutError {
    Invalid(Invalid),
    Save(UpstreamsError),
}

pub fn routes<S: Clone + Send + Sync + 'static>(upstreams: Arc<Upstreams>) -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/upstreams", get(list))
        .route("/v1/upstreams/{name}", get(show).put(put).delete(delete))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(upstreams)
}

fn refused(status: StatusCode, field: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": "invalid", "field": field, "message": message })),
    )
        .into_response()
}

async fn list(State(u): State<Arc<Upstreams>>) -> Response {
    axum::Json(json!({ "upstreams": u.list() })).into_response()
}

async fn show(State(u): State<Arc<Upstreams>>, Path(name): Path<String>) -> Response {
    match u.list().remove(&name) {
        Some(upstream) => axum::Json(upstream).into_response(),
        None => refused(
            StatusCode::NOT_FOUND,
            "name",
            &format!("no upstream {name:?}: see GET /v1/upstreams"),
        ),
    }
}

async fn put(
    State(u): State<Arc<Upstreams>>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| t.starts_with("application/json"));
    let upstream = match parse_body(json, &body, q.get("routes").map(String::as_str)) {
        Ok(upstream) => upstream,
        Err(e) => return refused(StatusCode::BAD_REQUEST, &e.field, &e.message),
    };
    match u.put(&name, upstream) {
        Ok(existed) => {
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (status, axum::Json(json!({ "upstream": name }))).into_response()
        }
        Err(PutError::Invalid(e)) => refused(StatusCode::BAD_REQUEST, &e.field, &e.message),
        Err(PutError::Save(e)) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "upstreams_file",
            &e.to_string(),
        ),
    }
}

async fn delete(State(u): State<Arc<Upstreams>>, Path(name): Path<String>) -> Response {
    match u.delete(&name) {
        Ok(true) => (StatusCode::OK, axum::Json(json!({ "deleted": name }))).into_response(),
        Ok(false) => refused(
            StatusCode::NOT_FOUND,
            "name",
            &format!("no upstream {name:?}: see GET /v1/upstreams"),
        ),
        Err(e) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "upstreams_file",
            &e.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(routes: &[&str], servers: &[(&str, u32)]) -> Upstream {
        Upstream {
            routes: routes.iter().map(|r| r.to_string()).collect(),
            servers: servers
                .iter()
                .map(|(a, w)| Server {
                    address: a.parse().unwrap(),
                    weight: *w,
                    http2: false,
                })
                .collect(),
            lb: None,
        }
    }

    #[test]
    fn entries_carry_every_route_and_weighted_server() {
        let entries = upstream(&["api.test/v1", "*.api.test"], &[("127.0.0.1:1", 2)])
            .entries()
            .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].key.to_string(), "api.test/v1");
        assert_eq!(entries[1].endpoints[0].weight, 2);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (upstream(&[], &[]), "routes"),
            (upstream(&["bad host!"], &[]), "routes[0]"),
            (
                upstream(&["a.test"], &[("127.0.0.1:1", 0)]),
                "servers[0].weight",
            ),
            (
                Upstream {
                    lb: Some("random".into()),
                    ..upstream(&["a.test"], &[])
                },
                "lb",
            ),
        ];
        for (u, field) in cases {
            assert_eq!(u.entries().unwrap_err().field, field);
        }
        assert!(check_name("../x").is_err());
        assert!(check_name("api-v1.blue").is_ok());
    }

    #[test]
    fn dyups_text_bodies_parse_and_bad_ones_are_named() {
        let u = Upstream::from_dyups(
            "server 127.0.0.1:8081 weight=3; server 127.0.0.1:8082;\n",
            vec!["a.test".into()],
        )
        .unwrap();
        assert_eq!(u.servers.len(), 2);
        assert_eq!(u.servers[0].weight, 3);
        assert_eq!(u.servers[1].weight, 1);
        let err = Upstream::from_dyups("server localhost:80;", vec![]).unwrap_err();
        assert_eq!(err.field, "servers[0].address");
        let err = Upstream::from_dyups("upstream x;", vec![]).unwrap_err();
        assert!(err.message.contains("server HOST:PORT"), "{}", err.message);
        let err = Upstream::from_dyups("server 127.0.0.1:1 max_fails=3;", vec![]).unwrap_err();
        assert_eq!(err.field, "servers[0]");
    }
}
