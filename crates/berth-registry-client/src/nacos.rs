//! A client of the Nacos v1 HTTP naming API, the API every Nacos client speaks, so each
//! role works against any registry that speaks it (Berth's own or a real Nacos).
//!
//! Instances are ephemeral (kept alive by beats), in group `DEFAULT_GROUP` of namespace
//! `public`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;

/// Where [`NacosClient::list_instances`] reads; fakes of the registry in tests serve it.
pub const INSTANCE_LIST_PATH: &str = "/nacos/v1/ns/instance/list";

pub const GROUP: &str = "DEFAULT_GROUP";
pub const NAMESPACE: &str = "public";
/// Nacos clients beat every 5 s; the registry marks an instance unhealthy after 15 s
/// without one and removes it after 30 s.
pub const BEAT_INTERVAL: Duration = Duration::from_secs(5);

/// One instance as the registry sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub service: String,
    pub ip: String,
    pub port: u16,
    pub metadata: BTreeMap<String, String>,
}

impl Registration {
    fn metadata_json(&self) -> String {
        serde_json::to_string(&self.metadata).unwrap_or_else(|_| "{}".to_string())
    }

    fn base_params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("serviceName", self.service.clone()),
            ("groupName", GROUP.to_string()),
            ("namespaceId", NAMESPACE.to_string()),
            ("ip", self.ip.clone()),
            ("port", self.port.to_string()),
            ("ephemeral", "true".to_string()),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry at {base} unreachable for {op}: {source} (check --registry-http)")]
    Unreachable {
        base: String,
        op: &'static str,
        source: reqwest::Error,
    },
    #[error("registry at {base} refused {op} with HTTP {status}: {body}")]
    Refused {
        base: String,
        op: &'static str,
        status: u16,
        body: String,
    },
    /// The registry's auth is on and it did not accept what was sent (or nothing was).
    #[error("registry at {base} refused {op} with HTTP {status}: {advice}")]
    Unauthorized {
        base: String,
        op: &'static str,
        status: u16,
        /// What to do about it, naming the setting the secret comes from.
        advice: String,
    },
    #[error("registry at {base} answered {op} with something unreadable: {source}")]
    Unreadable {
        base: String,
        op: &'static str,
        source: reqwest::Error,
    },
}

/// Whether a beat found the instance; a registry that forgot it (restart, 30 s without
/// beats) answers "not found" and the instance must be registered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatOutcome {
    Alive,
    NotFound,
}

/// One instance of a service listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedInstance {
    pub ip: String,
    pub port: u16,
}

impl ListedInstance {
    /// `ip:port`, with an IPv6 address in brackets.
    pub fn addr(&self) -> String {
        if self.ip.contains(':') {
            format!("[{}]:{}", self.ip, self.port)
        } else {
            format!("{}:{}", self.ip, self.port)
        }
    }
}

/// What a client proves itself with when the registry's auth is on: the registry's
/// secret (which it accepts as a token), and the setting it came from, so a refusal can
/// say what to fix.
#[derive(Clone)]
pub struct Credentials {
    token: Option<String>,
    setting: String,
}

impl Credentials {
    /// `token`: the registry's auth secret or a token it verifies; `None` sends nothing.
    /// `setting`: how the user gives it, e.g. `--registry-secret-file FILE (or
    /// BERTH_AGENT_REGISTRY_SECRET_FILE)`.
    pub fn new(token: Option<String>, setting: impl Into<String>) -> Self {
        Self {
            token,
            setting: setting.into(),
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Advice for a refusal by the registry's auth.
    pub fn advice(&self) -> String {
        match self.token {
            None => format!(
                "its auth is on and no secret was sent: give the registry's auth secret with {}",
                self.setting
            ),
            Some(_) => format!(
                "the secret given with {} is not the registry's auth secret",
                self.setting
            ),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches a log line.
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("setting", &self.setting)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct NacosClient {
    http: reqwest::Client,
    base: String,
    credentials: Option<Credentials>,
    /// Whether an auth refusal was reported since the last accepted call, shared by the
    /// clones of this client: every beat of every instance would repeat it.
    refusal_reported: Arc<AtomicBool>,
}

/// The header the token travels in: Berth's registry and Nacos both read it, and unlike
/// the `accessToken` query parameter it stays out of access logs.
const TOKEN_HEADER: &str = "accessToken";

impl NacosClient {
    /// `base` like `http://127.0.0.1:8848`.
    pub fn new(base: String, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self {
            http,
            base,
            credentials: None,
            refusal_reported: Arc::default(),
        }
    }

    /// Sends `credentials`' token with every call, and words auth refusals with its
    /// setting.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether `err` deserves a log line: always, but an auth refusal only the first
    /// time since the registry last accepted a call of this client (or its clones).
    pub fn should_report(&self, err: &RegistryError) -> bool {
        match err {
            RegistryError::Unauthorized { .. } => {
                !self.refusal_reported.swap(true, Ordering::Relaxed)
            }
            _ => true,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/nacos/v1/ns/{path}", self.base)
    }

    fn list_url(&self) -> String {
        format!("{}{INSTANCE_LIST_PATH}", self.base)
    }

    fn unreachable(&self, op: &'static str) -> impl Fn(reqwest::Error) -> RegistryError + '_ {
        move |source| RegistryError::Unreachable {
            base: self.base.clone(),
            op,
            source,
        }
    }

    /// Sends `request`; a non-success status is [`RegistryError::Refused`].
    async fn send(
        &self,
        op: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let request = match self.credentials.as_ref().and_then(Credentials::token) {
            Some(token) => request.header(TOKEN_HEADER, token),
            None => request,
        };
        let response = request.send().await.map_err(self.unreachable(op))?;
        let status = response.status();
        if matches!(status.as_u16(), 401 | 403) {
            let credentials = self
                .credentials
                .clone()
                .unwrap_or_else(|| Credentials::new(None, "the client's registry secret"));
            return Err(RegistryError::Unauthorized {
                base: self.base.clone(),
                op,
                status: status.as_u16(),
                advice: credentials.advice(),
            });
        }
        if status.is_success() {
            self.refusal_reported.store(false, Ordering::Relaxed);
        } else {
            let body = response.text().await.map_err(self.unreachable(op))?;
            return Err(RegistryError::Refused {
                base: self.base.clone(),
                op,
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        Ok(response)
    }

    async fn call(
        &self,
        op: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<String, RegistryError> {
        let response = self.send(op, request).await?;
        response.text().await.map_err(self.unreachable(op))
    }

    pub async fn register(&self, reg: &Registration) -> Result<(), RegistryError> {
        let mut params = reg.base_params();
        params.push(("metadata", reg.metadata_json()));
        params.push(("healthy", "true".to_string()));
        params.push(("enabled", "true".to_string()));
        params.push(("weight", "1.0".to_string()));
        let request = self.http.post(self.url("instance")).query(&params);
        self.call("register", request).await.map(drop)
    }

    pub async fn beat(&self, reg: &Registration) -> Result<BeatOutcome, RegistryError> {
        let beat = serde_json::json!({
            "serviceName": format!("{GROUP}@@{}", reg.service),
            "ip": reg.ip,
            "port": reg.port,
            "cluster": "DEFAULT",
            "weight": 1.0,
            "ephemeral": true,
            "scheduled": true,
            "metadata": reg.metadata,
        });
        let mut params = reg.base_params();
        params.push(("beat", beat.to_string()));
        let request = self.http.put(self.url("instance/beat")).query(&params);
        match self.call("beat", request).await {
            Ok(body) => {
                #[derive(Deserialize)]
                struct Reply {
                    code: Option<i64>,
                }
                let code = serde_json::from_str::<Reply>(&body)
                    .ok()
                    .and_then(|r| r.code);
                Ok(if code == Some(20404) {
                    BeatOutcome::NotFound
                } else {
                    BeatOutcome::Alive
                })
            }
            Err(RegistryError::Refused { status: 404, .. }) => Ok(BeatOutcome::NotFound),
            Err(err) => Err(err),
        }
    }

    pub async fn deregister(&self, reg: &Registration) -> Result<(), RegistryError> {
        let request = self
            .http
            .delete(self.url("instance"))
            .query(&reg.base_params());
        self.call("deregister", request).await.map(drop)
    }

    /// The instances of `service` (in the default group and namespace); with
    /// `healthy_only`, only those passing their checks. Entries without an address are
    /// skipped.
    pub async fn list_instances(
        &self,
        service: &str,
        healthy_only: bool,
    ) -> Result<Vec<ListedInstance>, RegistryError> {
        let params = [
            ("serviceName", service.to_string()),
            ("healthyOnly", healthy_only.to_string()),
        ];
        let request = self.http.get(self.list_url()).query(&params);
        let body: serde_json::Value =
            self.send("list", request)
                .await?
                .json()
                .await
                .map_err(|source| RegistryError::Unreadable {
                    base: self.base.clone(),
                    op: "list",
                    source,
                })?;
        Ok(body["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|host| {
                Some(ListedInstance {
                    ip: host["ip"].as_str()?.to_string(),
                    port: u16::try_from(host["port"].as_u64()?).ok()?,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::extract::Query;
    use axum::http::StatusCode;
    use axum::routing::{get, post, put};

    use super::*;

    /// A registry answering each call the way the test needs.
    async fn fake(router: Router) -> NacosClient {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        NacosClient::new(format!("http://{addr}"), Duration::from_secs(2))
    }

    fn registration() -> Registration {
        Registration {
            service: "shop.web".into(),
            ip: "10.0.0.7".into(),
            port: 31000,
            metadata: BTreeMap::from([("berth.app".to_string(), "shop/web".to_string())]),
        }
    }

    #[tokio::test]
    async fn registers_with_the_nacos_parameters() {
        let client = fake(Router::new().route(
            "/nacos/v1/ns/instance",
            post(|Query(q): Query<BTreeMap<String, String>>| async move {
                let ok = q["serviceName"] == "shop.web"
                    && q["groupName"] == GROUP
                    && q["namespaceId"] == NAMESPACE
                    && q["ip"] == "10.0.0.7"
                    && q["port"] == "31000"
                    && q["ephemeral"] == "true"
                    && q["metadata"] == r#"{"berth.app":"shop/web"}"#;
                if ok {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::BAD_REQUEST, "caught a bad parameter")
                }
            }),
        ))
        .await;
        client.register(&registration()).await.unwrap();
    }

    #[tokio::test]
    async fn a_forgotten_instance_beats_not_found_and_refusals_keep_their_wording() {
        let client = fake(
            Router::new()
                .route(
                    "/nacos/v1/ns/instance/beat",
                    put(|| async { r#"{"code":20404}"# }),
                )
                .route(
                    "/nacos/v1/ns/instance",
                    axum::routing::delete(|| async { (StatusCode::CONFLICT, "busy") }),
                ),
        )
        .await;
        assert_eq!(
            client.beat(&registration()).await.unwrap(),
            BeatOutcome::NotFound
        );
        let err = client.deregister(&registration()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "registry at {} refused deregister with HTTP 409: busy",
                client.base()
            )
        );
    }

    /// A registry whose auth accepts only `accessToken: right`.
    async fn guarded() -> NacosClient {
        fake(Router::new().route(
            "/nacos/v1/ns/instance",
            post(|headers: axum::http::HeaderMap| async move {
                match headers.get("accesstoken").and_then(|v| v.to_str().ok()) {
                    Some("right") => (StatusCode::OK, "ok"),
                    _ => (StatusCode::FORBIDDEN, "auth is on: send a token"),
                }
            }),
        ))
        .await
    }

    #[tokio::test]
    async fn the_secret_travels_in_the_token_header_and_refusals_name_the_setting() {
        let setting = "--registry-secret-file FILE";
        let bare = guarded().await;
        let none = bare
            .clone()
            .with_credentials(Credentials::new(None, setting));
        let err = none.register(&registration()).await.unwrap_err();
        assert!(
            matches!(err, RegistryError::Unauthorized { status: 403, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("no secret was sent") && err.to_string().contains(setting),
            "{err}"
        );
        let wrong = bare
            .clone()
            .with_credentials(Credentials::new(Some("wrong".into()), setting));
        let err = wrong
            .register(&registration())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is not the registry's auth secret") && err.contains(setting),
            "{err}"
        );
        assert!(!err.contains("wrong"), "the secret is never echoed: {err}");
        let right = bare.with_credentials(Credentials::new(Some("right".into()), setting));
        right.register(&registration()).await.unwrap();
        assert!(!format!("{right:?}").contains("right\""), "{right:?}");
    }

    #[tokio::test]
    async fn an_auth_refusal_is_reported_once_until_a_call_succeeds() {
        let client = guarded()
            .await
            .with_credentials(Credentials::new(Some("wrong".into()), "s"));
        let beats = client.clone();
        let first = client.register(&registration()).await.unwrap_err();
        assert!(client.should_report(&first));
        let again = beats.register(&registration()).await.unwrap_err();
        assert!(!beats.should_report(&again), "clones share the report");
        let other = RegistryError::Refused {
            base: String::new(),
            op: "beat",
            status: 500,
            body: String::new(),
        };
        assert!(client.should_report(&other), "other failures always count");

        // Once a call is accepted, the next refusal is news again.
        let fixed = NacosClient {
            credentials: Some(Credentials::new(Some("right".into()), "s")),
            ..client.clone()
        };
        fixed.register(&registration()).await.unwrap();
        let later = client.register(&registration()).await.unwrap_err();
        assert!(client.should_report(&later));
    }

    #[tokio::test]
    async fn lists_instances_with_addresses() {
        let client = fake(Router::new().route(
            "/nacos/v1/ns/instance/list",
            get(|Query(q): Query<BTreeMap<String, String>>| async move {
                assert_eq!(q["serviceName"], "berth.diag.node.a");
                assert_eq!(q["healthyOnly"], "true");
                r#"{"hosts":[{"ip":"10.0.0.1","port":7000},{"ip":"::1","port":7001},{"ip":"bad"}]}"#
            }),
        ))
        .await;
        let listed = client
            .list_instances("berth.diag.node.a", true)
            .await
            .unwrap();
        let addrs: Vec<String> = listed.iter().map(ListedInstance::addr).collect();
        assert_eq!(addrs, vec!["10.0.0.1:7000", "[::1]:7001"]);
    }
}
