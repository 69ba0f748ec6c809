//! Request parameters the way Nacos clients send them: in the query string, in a form
//! body, or both, on any method. Typed getters turn bad values into 400s that name the
//! parameter and say what is expected.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Largest request body any registry endpoint accepts.
pub const MAX_BODY: usize = 1024 * 1024;
/// Largest single parameter value (metadata included).
pub const MAX_PARAM: usize = 64 * 1024;
/// Parameters that carry a whole payload, bounded by the body limit and their own checks
/// instead of [`MAX_PARAM`]: a config's content (its limit is `config_max_content`) and
/// a long-poll's list of watched configs.
const BULK_PARAMS: [&str; 2] = ["content", "Listening-Configs"];

/// An HTTP error with a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("caused: {}\n", self.message),
        )
            .into_response()
    }
}

impl From<crate::naming::NamingError> for ApiError {
    fn from(e: crate::naming::NamingError) -> Self {
        use crate::naming::NamingError as E;
        let status = match e {
            E::ServiceNotFound(_) | E::InstanceNotFound { .. } => StatusCode::NOT_FOUND,
            E::ServiceExists(_) | E::ServiceNotEmpty(_) => StatusCode::BAD_REQUEST,
            E::ShuttingDown | E::OwnerBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self {
            status,
            message: e.to_string(),
        }
    }
}

/// Merged query and form parameters (form wins on a clash), plus the peer address.
#[derive(Debug, Default, Clone)]
pub struct Params {
    values: HashMap<String, String>,
    /// Every pair in order, for parameters that may repeat (Consul `tag`).
    pairs: Vec<(String, String)>,
    pub peer: Option<SocketAddr>,
    /// The raw body when it was not a form (Consul sends JSON).
    pub body: bytes::Bytes,
}

impl Params {
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Self::default()
        }
    }

    /// Parses a query string and a form body. Fails on oversized values.
    pub fn parse(query: &str, form: &[u8]) -> Result<Self, ApiError> {
        let mut values = HashMap::new();
        let mut pairs = Vec::new();
        for source in [query.as_bytes(), form] {
            for (k, v) in form_pairs(source) {
                pairs.push((k.clone(), v.clone()));
                if v.len() > MAX_PARAM && !BULK_PARAMS.contains(&k.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "parameter '{k}' is {} bytes, more than the {MAX_PARAM} allowed",
                        v.len()
                    )));
                }
                values.insert(k, v);
            }
        }
        Ok(Self {
            values,
            pairs,
            ..Self::default()
        })
    }

    /// Raw value; empty strings count as absent (clients send `clusterName=`).
    pub fn opt(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// The value exactly as sent, blank or not (a config's content keeps its spaces).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Every value of a repeated parameter.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// True when the parameter is present at all, even without a value (`?passing`).
    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    /// First present of several spellings (`enable`/`enabled`, `cluster`/`clusterName`).
    pub fn opt_any(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.opt(n))
    }

    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.opt(name)
            .ok_or_else(|| ApiError::bad_request(format!("parameter '{name}' is required")))
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.bool_any(&[name])
    }

    /// Booleans in any case: true/false (Java's `Boolean.parseBoolean` accepts any case).
    pub fn bool_any(&self, names: &[&str]) -> Result<Option<bool>, ApiError> {
        for name in names {
            if let Some(v) = self.opt(name) {
                return match v.to_ascii_lowercase().as_str() {
                    "true" => Ok(Some(true)),
                    "false" => Ok(Some(false)),
                    _ => Err(ApiError::bad_request(format!(
                        "parameter '{name}' must be true or false, got '{}'",
                        clip(v)
                    ))),
                };
            }
        }
        Ok(None)
    }

    pub fn port(&self, name: &str) -> Result<u16, ApiError> {
        let v = self.required(name)?;
        v.parse::<u16>().map_err(|_| {
            ApiError::bad_request(format!(
                "parameter '{name}' must be a port number 0-65535, got '{}'",
                clip(v)
            ))
        })
    }

    pub fn opt_port(&self, name: &str) -> Result<Option<u16>, ApiError> {
        match self.opt(name) {
            None => Ok(None),
            Some(_) => self.port(name).map(Some),
        }
    }

    pub fn f64(&self, name: &str) -> Result<Option<f64>, ApiError> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
                _ => Err(ApiError::bad_request(format!(
                    "parameter '{name}' must be a non-negative number, got '{}'",
                    clip(v)
                ))),
            },
        }
    }

    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "parameter '{name}' must be a non-negative integer, got '{}'",
                    clip(v)
                ))
            }),
        }
    }

    pub fn ip(&self, name: &str) -> Result<&str, ApiError> {
        let v = self.required(name)?;
        if v.len() > 253 || v.chars().any(|c| c.is_whitespace() || c == '#' || c == ',') {
            return Err(ApiError::bad_request(format!(
                "parameter '{name}' must be an IP address or host name, got '{}'",
                clip(v)
            )));
        }
        Ok(v)
    }
}

fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    // serde_urlencoded never panics and decodes '+' and %XX; invalid UTF-8 is replaced.
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(bytes).unwrap_or_else(|_| {
        let lossy = String::from_utf8_lossy(bytes).into_owned();
        serde_urlencoded::from_str::<Vec<(String, String)>>(&lossy).unwrap_or_default()
    })
}

/// Shortens a bad value before echoing it back.
pub fn clip(v: &str) -> String {
    if v.len() <= 64 {
        v.to_string()
    } else {
        let mut end = 64;
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &v[..end])
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let query = req.uri().query().unwrap_or("").to_string();
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("request body is larger than {MAX_BODY} bytes; send less"),
            })?;
        let form: &[u8] = if is_form { &body } else { &[] };
        let mut params = Params::parse(&query, form)?;
        params.peer = peer;
        params.body = body;
        Ok(params)
    }
}

/// The peer's IP, for UDP push targets.
pub fn peer_ip(p: &Params) -> Option<IpAddr> {
    p.peer.map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_and_form_merge_and_booleans_ignore_case() {
        let p = Params::parse("serviceName=a&healthy=TRUE", b"ip=1.2.3.4&enabled=False").unwrap();
        assert_eq!(p.required("serviceName").unwrap(), "a");
        assert_eq!(p.required("ip").unwrap(), "1.2.3.4");
        assert_eq!(p.bool("healthy").unwrap(), Some(true));
        assert_eq!(p.bool("enabled").unwrap(), Some(false));
    }

    #[test]
    fn errors_name_the_parameter() {
        let p = Params::parse("port=99999&healthy=yes&weight=-1", b"").unwrap();
        assert!(p.required("ip").unwrap_err().message.contains("'ip'"));
        assert!(p.port("port").unwrap_err().message.contains("'port'"));
        assert!(p.bool("healthy").unwrap_err().message.contains("'healthy'"));
        assert!(p.f64("weight").unwrap_err().message.contains("'weight'"));
    }

    proptest! {
        #[test]
        fn any_input_parses_or_errors_without_panic(q in ".{0,200}", body in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Params::parse(&q, &body) {
                let _ = p.port("port");
                let _ = p.bool("healthy");
                let _ = p.f64("weight");
                let _ = p.ip("ip");
            }
        }
    }
}
