//! The Nacos config HTTP APIs over the config center: v1 (`/nacos/v1/cs/configs`, as
//! nacos-sdk-python 1.x and the Java client's HTTP agent use it), the long-polling
//! listener ([`super::config_listen`]), the v2 open API ([`super::config_v2`]) and history
//! with Berth's rollback ([`super::config_history`]). What the two API versions share
//! lives here: reading a config's key and publish parameters, the actor of a write, and
//! one [`Failure`] per refusal that each version renders its own way.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_kv::Actor;
use serde_json::{Value, json};

use super::AppState;
use super::params::{ApiError, Params, peer_ip};
use crate::config_center::{self, Config, ConfigError, ConfigKey, ConfigMeta};

/// Most items one page of a listing or history holds (Nacos caps history pages at 500).
pub(super) const MAX_PAGE: u64 = 500;
const DEFAULT_PAGE: u64 = 100;
/// Nacos's limits on a config's descriptive fields.
const MAX_TAGS: usize = 5;
const MAX_TAG: usize = 64;
const MAX_DESC: usize = 128;
const MAX_TYPE: usize = 32;
const MAX_SHORT: usize = 128;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/nacos/v1/cs/configs",
            get(v1_get).post(v1_publish).delete(v1_remove),
        )
        .route(
            "/nacos/v1/cs/configs/listener",
            post(super::config_listen::listener),
        )
        .merge(super::config_v2::routes())
        .merge(super::config_history::routes())
}

/// Which API a request came through: they name the namespace and the author differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Api {
    V1,
    V2,
}

impl Api {
    pub(super) fn namespace_param(self) -> &'static str {
        match self {
            Api::V1 => "tenant",
            Api::V2 => "namespaceId",
        }
    }

    /// The parameter a core field arrives as in this API.
    fn param(self, field: &'static str) -> &'static str {
        if field == "tenant" {
            self.namespace_param()
        } else {
            field
        }
    }

    /// The namespace as sent (either spelling is taken, this API's first).
    pub(super) fn namespace(self, p: &Params) -> &str {
        let other = match self {
            Api::V1 => "namespaceId",
            Api::V2 => "tenant",
        };
        p.opt_any(&[self.namespace_param(), other]).unwrap_or("")
    }
}

/// Why a config request was refused, with what both API versions need to render it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub status: StatusCode,
    /// Nacos's v2 error code and its fixed message.
    pub code: u32,
    pub kind: &'static str,
    /// What went wrong, naming the parameter or setting.
    pub detail: String,
}

impl Failure {
    pub fn missing(param: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: 10000,
            kind: "parameter missing",
            detail: format!("parameter '{param}' is required"),
        }
    }

    pub fn invalid(param: &str, what: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: 20002,
            kind: "parameter validate error",
            detail: format!("parameter '{param}' {what}"),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: 20004,
            kind: "resource not found",
            detail: detail.into(),
        }
    }

    /// A refusal of the config center, in the words of `api`.
    pub fn from_config(e: ConfigError, api: Api) -> Self {
        let (status, code, kind) = match &e {
            ConfigError::Invalid { field, message } => {
                return Self::invalid(api.param(field), message);
            }
            ConfigError::TooLarge { .. } | ConfigError::Empty => {
                (StatusCode::BAD_REQUEST, 20002, "parameter validate error")
            }
            // Nacos answers a failed compare-and-set with a 500 (RESOURCE_CONFLICT).
            ConfigError::CasMismatch { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                20005,
                "resource conflict",
            ),
            ConfigError::HistoryNotFound(_) => (StatusCode::NOT_FOUND, 20004, "resource not found"),
            ConfigError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, 30000, "server error"),
            ConfigError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, 30000, "server error"),
        };
        Self {
            status,
            code,
            kind,
            detail: e.to_string(),
        }
    }

    pub fn v1(e: ConfigError) -> ApiError {
        Self::from_config(e, Api::V1).into()
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        ApiError {
            status: f.status,
            message: f.detail,
        }
    }
}

/// The config a request names: `dataId`, `group` (default `DEFAULT_GROUP`) and the
/// namespace (default `public`).
pub(super) fn config_key(p: &Params, api: Api) -> Result<ConfigKey, Failure> {
    let data_id = p.opt("dataId").ok_or_else(|| Failure::missing("dataId"))?;
    ConfigKey::new(api.namespace(p), p.opt("group").unwrap_or(""), data_id)
        .map_err(|e| Failure::from_config(e, api))
}

/// Tagged (gray) variants of a config are not kept: a request for one is refused rather
/// than answered with the main config.
pub(super) fn refuse_tag(p: &Params) -> Result<(), Failure> {
    match p.opt("tag") {
        None => Ok(()),
        Some(_) => Err(Failure::invalid(
            "tag",
            "names a tagged (gray) config, which this registry does not keep: leave it out",
        )),
    }
}

/// Who wrote: the author the client names (`src_user`, `srcUser`) and the address the
/// request came from (the connection's, never a header a client could forge).
pub(super) fn actor(p: &Params) -> Actor {
    config_center::actor(p.opt_any(&["src_user", "srcUser"]), peer_ip(p))
}

/// A publish request, validated.
pub(super) struct Publish {
    pub key: ConfigKey,
    pub content: String,
    pub meta: ConfigMeta,
    pub cas_md5: Option<String>,
}

fn bounded<'a>(p: &'a Params, names: &[&str], max: usize) -> Result<&'a str, Failure> {
    let Some(name) = names.iter().find(|n| p.opt(n).is_some()) else {
        return Ok("");
    };
    let value = p.opt(name).unwrap_or("");
    if value.chars().count() > max {
        return Err(Failure::invalid(
            name,
            format!("is longer than {max} characters"),
        ));
    }
    Ok(value)
}

fn tags(p: &Params, api: Api) -> Result<String, Failure> {
    let names = match api {
        Api::V1 => ["config_tags", "configTags"],
        Api::V2 => ["configTags", "config_tags"],
    };
    let raw = bounded(p, &names, MAX_TAGS * (MAX_TAG + 1))?;
    let list: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if list.len() > MAX_TAGS || list.iter().any(|t| t.chars().count() > MAX_TAG) {
        return Err(Failure::invalid(
            names[0],
            format!(
                "takes at most {MAX_TAGS} comma-separated tags of at most {MAX_TAG} characters"
            ),
        ));
    }
    Ok(list.join(","))
}

/// Reads a publish: the content exactly as sent (not trimmed), `casMd5` from the header
/// Nacos clients use or a parameter.
pub(super) fn publish_params(
    p: &Params,
    headers: &HeaderMap,
    api: Api,
) -> Result<Publish, Failure> {
    let key = config_key(p, api)?;
    let content = p
        .raw("content")
        .ok_or_else(|| Failure::missing("content"))?;
    let meta = ConfigMeta {
        kind: bounded(p, &["type"], MAX_TYPE)?.to_string(),
        app_name: bounded(p, &["appName"], MAX_SHORT)?.to_string(),
        tags: tags(p, api)?,
        desc: bounded(p, &["desc"], MAX_DESC)?.to_string(),
    };
    bounded(p, &["src_user", "srcUser"], MAX_SHORT)?;
    let cas_md5 = headers
        .get("casMd5")
        .and_then(|v| v.to_str().ok())
        .or_else(|| p.opt("casMd5"))
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    Ok(Publish {
        key,
        content: content.to_string(),
        meta,
        cas_md5,
    })
}

/// `pageNo` (from 1) and `pageSize` (at most [`MAX_PAGE`]).
pub(super) fn paging(p: &Params) -> Result<(u64, u64), ApiError> {
    let page_no = p.u64("pageNo")?.unwrap_or(1).max(1);
    let page_size = p
        .u64("pageSize")?
        .unwrap_or(DEFAULT_PAGE)
        .clamp(1, MAX_PAGE);
    Ok((page_no, page_size))
}

/// Nacos's `Page` shape.
pub(super) fn page_json(total: u64, page_no: u64, page_size: u64, items: Vec<Value>) -> Value {
    json!({
        "totalCount": total,
        "pageNumber": page_no,
        "pagesAvailable": total.div_ceil(page_size.max(1)),
        "pageItems": items,
    })
}

/// A config as Nacos lists it (`ConfigInfo`); `id` is a string, as Nacos sends it.
pub(super) fn config_json(c: &Config) -> Value {
    json!({
        "id": c.index.to_string(),
        "dataId": c.key.data_id,
        "group": c.key.group,
        "content": c.content,
        "md5": c.md5,
        "encryptedDataKey": "",
        "tenant": c.key.tenant_for_clients(),
        "appName": c.meta.app_name,
        "type": c.meta.kind,
    })
}

/// Nacos's `true`, the answer to a publish or delete.
pub(super) fn v1_true() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        "true",
    )
        .into_response()
}

fn content_type(kind: &str) -> &'static str {
    match kind {
        "json" => "application/json;charset=UTF-8",
        "xml" => "application/xml;charset=UTF-8",
        "html" => "text/html;charset=UTF-8",
        _ => "text/plain;charset=UTF-8",
    }
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("text"))
}

/// The raw content with the headers Nacos sends beside it.
fn content_response(c: &Config) -> Response {
    let modified = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(c.modified_ms).unwrap_or(0));
    let mut response = c.content.clone().into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&c.meta.kind)),
    );
    h.insert("Config-Type", header_value(&c.meta.kind));
    h.insert("Content-MD5", header_value(&c.md5));
    h.insert(
        header::LAST_MODIFIED,
        header_value(&httpdate::fmt_http_date(modified)),
    );
    no_cache(h, "Thu, 01 Jan 1970 00:00:00 GMT");
    response
}

pub(super) fn no_cache(h: &mut HeaderMap, expires: &'static str) {
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static(expires));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache,no-store"),
    );
}

/// Nacos's 404 body, exactly.
fn not_exist() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain;charset=UTF-8")],
        "config data not exist\n",
    )
        .into_response()
}

async fn v1_get(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    if p.opt("search").is_some() {
        return search(&s, &p).await;
    }
    refuse_tag(&p)?;
    let key = config_key(&p, Api::V1)?;
    match s.configs.get(&key).await.map_err(Failure::v1)? {
        Some(c) => Ok(content_response(&c)),
        None => Ok(not_exist()),
    }
}

/// `search=accurate` (dataId and group equal to the ones given, when given) or
/// `search=blur` (dataId containing the text given, `*` matching any run), one page.
async fn search(s: &AppState, p: &Params) -> Result<Response, ApiError> {
    let blur = match p.opt("search") {
        Some("accurate") => false,
        Some("blur") => true,
        _ => {
            return Err(ApiError::bad_request(
                "parameter 'search' must be accurate or blur",
            ));
        }
    };
    let (page_no, page_size) = paging(p)?;
    let tenant = Api::V1.namespace(p);
    let (group, data_id) = (p.opt("group"), p.opt("dataId"));
    let (_, all) = s
        .configs
        .list(
            tenant,
            group,
            blur.then_some(data_id).flatten(),
            1,
            usize::MAX,
        )
        .await
        .map_err(Failure::v1)?;
    let matching: Vec<&Config> = all
        .iter()
        .filter(|c| blur || data_id.is_none_or(|d| c.key.data_id == d))
        .collect();
    let items = matching
        .iter()
        .skip(((page_no - 1) * page_size) as usize)
        .take(page_size as usize)
        .map(|c| config_json(c))
        .collect();
    Ok(axum::Json(page_json(matching.len() as u64, page_no, page_size, items)).into_response())
}

async fn v1_publish(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, ApiError> {
    refuse_tag(&p)?;
    let publish = publish_params(&p, &headers, Api::V1)?;
    s.configs
        .publish(
            &publish.key,
            &publish.content,
            &publish.meta,
            publish.cas_md5.as_deref(),
            actor(&p),
        )
        .await
        .map_err(Failure::v1)?;
    Ok(v1_true())
}

/// Deleting a config that does not exist is answered `true` too, as Nacos does.
async fn v1_remove(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    refuse_tag(&p)?;
    let key = config_key(&p, Api::V1)?;
    s.configs
        .remove(&key, actor(&p))
        .await
        .map_err(Failure::v1)?;
    Ok(v1_true())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_parameter_of_each_api() {
        let p = Params::from_pairs([("dataId", "a"), ("tenant", "x y")]);
        let v1 = config_key(&p, Api::V1).unwrap_err();
        assert!(v1.detail.starts_with("parameter 'tenant'"), "{v1:?}");
        let p = Params::from_pairs([("dataId", "a"), ("namespaceId", "x y")]);
        let v2 = config_key(&p, Api::V2).unwrap_err();
        assert!(v2.detail.starts_with("parameter 'namespaceId'"), "{v2:?}");
        assert_eq!(v2.code, 20002);
        let missing = config_key(&Params::default(), Api::V2).unwrap_err();
        assert_eq!((missing.code, missing.status.as_u16()), (10000, 400));
        assert!(missing.detail.contains("'dataId'"));
    }

    #[test]
    fn publish_keeps_content_as_sent_and_bounds_the_extras() {
        let p = Params::from_pairs([("dataId", "a"), ("content", "  x: 1\n")]);
        let publish = publish_params(&p, &HeaderMap::new(), Api::V1).unwrap();
        assert_eq!(publish.content, "  x: 1\n");
        let mut headers = HeaderMap::new();
        headers.insert("casMd5", HeaderValue::from_static("abc"));
        let publish = publish_params(&p, &headers, Api::V1).unwrap();
        assert_eq!(publish.cas_md5.as_deref(), Some("abc"));
        let p = Params::from_pairs([("dataId", "a"), ("content", "x"), ("configTags", "a,b")]);
        assert_eq!(
            publish_params(&p, &HeaderMap::new(), Api::V2)
                .unwrap()
                .meta
                .tags,
            "a,b"
        );
        let p = Params::from_pairs([
            ("dataId", "a"),
            ("content", "x"),
            ("config_tags", "1,2,3,4,5,6"),
        ]);
        let err = publish_params(&p, &HeaderMap::new(), Api::V1)
            .err()
            .unwrap();
        assert!(err.detail.contains("'config_tags'"), "{err:?}");
        let p = Params::from_pairs([("dataId", "a")]);
        let err = publish_params(&p, &HeaderMap::new(), Api::V2)
            .err()
            .unwrap();
        assert_eq!(err, Failure::missing("content"));
    }

    #[test]
    fn refusals_map_to_nacos_codes() {
        let cas = Failure::from_config(
            ConfigError::CasMismatch {
                expected: "a".into(),
                current: Some("b".into()),
            },
            Api::V2,
        );
        assert_eq!((cas.status.as_u16(), cas.code), (500, 20005));
        assert!(cas.detail.contains("current md5 b"));
        let off = Failure::from_config(ConfigError::Unavailable, Api::V1);
        assert_eq!(off.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(off.detail.contains("kv_postgres_url"));
        let big = Failure::from_config(ConfigError::TooLarge { size: 9, limit: 8 }, Api::V1);
        assert_eq!(big.status, StatusCode::BAD_REQUEST);
        assert!(big.detail.contains("limit of 8 bytes"));
    }

    #[test]
    fn pages_count_what_is_available() {
        let page = page_json(11, 2, 5, Vec::new());
        assert_eq!(page["pagesAvailable"], 3);
        assert_eq!(page["pageNumber"], 2);
    }
}
