//! The general engine: the codec built on hyper's `http` types. It serves everything the
//! fast path does not (HTTP/2 clients, TLS, HTTP/1.0, upgrades, `Expect`, streamed request
//! bodies, HTTP/2 backends) and follows the policy's decisions: one request in, one
//! streamed response out.

pub mod body;
pub mod http1;
mod upgrade;

use std::mem;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::headers::{self, X_REQUEST_ID, X_ROUTER_ERROR};
use super::policy::record::{AccessLine, RequestLog};
use super::policy::{self, BackendError, Forwarded, Refused, Reject, STICKY_COOKIE, Upstream};
use super::{ConnInfo, Proxy};
use crate::endpoint::Endpoint;
use crate::route::Host;
use body::{ResponseBody, RetryableBody};
use http1::Checkin;

impl Proxy {
    pub(crate) async fn handle(
        &self,
        mut req: Request<Incoming>,
        conn: &ConnInfo,
    ) -> Response<ResponseBody> {
        let start = self.policy.begin();
        let authority = request_authority(&req);
        let request_id = headers::ensure_request_id(req.headers_mut());
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let id_text = request_id.to_str().unwrap_or("-");
        let routed = self.policy.target(
            authority.as_ref().and_then(|a| a.to_str().ok()),
            req.uri().path(),
        );
        let (target, authority) = match (routed, authority) {
            (Ok(target), Some(authority)) => (target, authority),
            (routed, _) => {
                // A host was found only in an authority, so `routed` is the refusal here.
                let refused = routed.err().unwrap_or(Refused {
                    reject: Reject::EmptyHost,
                    host: None,
                });
                let log = RequestLog {
                    method: req.method().as_str(),
                    host: refused.host_text(),
                    path: path_and_query.as_str(),
                    request_id: id_text,
                    start,
                };
                return self.reject(refused.reject, &log, &request_id);
            }
        };
        let method = req.method().clone();

        let is_upgrade =
            req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
        let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
        let sticky = headers::cookie(req.headers(), STICKY_COOKIE).map(str::to_string);
        let (mut parts, body) = req.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, is_upgrade);
        headers::add_forwarded(&mut parts.headers, &conn.client_ip, conn.scheme, &authority);
        parts.headers.insert(header::HOST, authority);
        let body = RetryableBody::new(body);
        let mut outgoing = Outgoing {
            proxy: self,
            method: &method,
            headers: &mut parts.headers,
            path: &path_and_query,
            body: &body,
            upgrade: is_upgrade,
        };
        let forwarded = self
            .policy
            .forward(&target.pool, sticky.as_deref(), id_text, &mut outgoing)
            .await;
        match forwarded {
            Ok(forwarded) => self.respond(
                forwarded,
                client_upgrade,
                Responding {
                    sticky: sticky.as_deref(),
                    request_id,
                    host: target.host,
                    method,
                    path: path_and_query,
                    start,
                },
            ),
            Err(reject) => {
                let log = RequestLog {
                    method: method.as_str(),
                    host: target.host.as_str(),
                    path: path_and_query.as_str(),
                    request_id: id_text,
                    start,
                };
                self.reject(reject, &log, &request_id)
            }
        }
    }

    fn respond(
        &self,
        forwarded: Forwarded<(Response<Incoming>, Option<Checkin>)>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        r: Responding<'_>,
    ) -> Response<ResponseBody> {
        let Forwarded {
            endpoint: ep,
            slot,
            answer: (resp, checkin),
        } = forwarded;
        let (mut parts, body) = resp.into_parts();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        let backend_upgrade = if switching {
            // Re-assemble just to extract the backend side of the upgrade.
            let mut tmp = Response::from_parts(parts, ());
            let up = hyper::upgrade::on(&mut tmp);
            parts = tmp.into_parts().0;
            Some(up)
        } else {
            None
        };
        headers::strip_hop_by_hop(&mut parts.headers, switching);
        parts.headers.insert(&X_REQUEST_ID, r.request_id.clone());
        let cfg = self.policy.config();
        if policy::restick(r.sticky, &ep)
            || headers::sets_cookie(&parts.headers, &cfg.sticky_cookies)
        {
            let cookie = format!(
                "{STICKY_COOKIE}={}{}",
                ep.sticky_id,
                policy::STICKY_COOKIE_ATTRIBUTES
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                parts.headers.append(header::SET_COOKIE, v);
            }
        }
        let status = parts.status.as_u16();
        self.policy.answered(status, r.start);
        let idle_timeout = self.policy.body_idle_timeout();
        let mut body = if let (Some(client), Some(backend)) = (client_upgrade, backend_upgrade) {
            // The connection now belongs to the tunnel; it never goes back to the pool.
            drop(checkin);
            upgrade::tunnel(client, backend, slot, idle_timeout);
            ResponseBody::empty()
        } else {
            // A 101 the client did not ask for cannot be reused either.
            let checkin = checkin.filter(|_| !switching);
            ResponseBody::backend(body, Some(idle_timeout), slot, checkin)
        };
        if self.policy.access_enabled() {
            body = body.with_access(AccessLine {
                sink: self.policy.access_sink().clone(),
                method: r.method,
                host: r.host,
                path: r.path,
                status,
                backend: ep,
                request_id: r.request_id,
                start: r.start,
            });
        }
        Response::from_parts(parts, body)
    }

    fn reject(
        &self,
        reject: Reject,
        log: &RequestLog<'_>,
        request_id: &HeaderValue,
    ) -> Response<ResponseBody> {
        self.policy.rejected(reject, log);
        let mut resp = Response::new(ResponseBody::full(reject.message(log.host)));
        *resp.status_mut() = reject.status();
        let h = resp.headers_mut();
        h.insert(&X_ROUTER_ERROR, HeaderValue::from_static(reject.reason()));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(&X_REQUEST_ID, request_id.clone());
        resp
    }
}

/// The general engine's side of an attempt: one `http` request per endpoint, over the
/// HTTP/1.1 pool or the HTTP/2 client.
struct Outgoing<'a> {
    proxy: &'a Proxy,
    method: &'a Method,
    headers: &'a mut HeaderMap,
    path: &'a PathAndQuery,
    body: &'a RetryableBody,
    upgrade: bool,
}

impl Upstream for Outgoing<'_> {
    type Answer = (Response<Incoming>, Option<Checkin>);

    async fn send(&mut self, ep: &Endpoint, last: bool) -> Result<Self::Answer, BackendError> {
        let mut breq = Request::new(self.body.attempt());
        *breq.method_mut() = self.method.clone();
        *breq.headers_mut() = if last {
            mem::take(&mut *self.headers)
        } else {
            self.headers.clone()
        };
        if policy::backend_http2(ep, self.upgrade) {
            let uri: Uri = format!("http://{}{}", ep.addr(), self.path)
                .parse()
                .map_err(BackendError::Unsendable)?;
            *breq.uri_mut() = uri;
            *breq.version_mut() = Version::HTTP_2;
            let resp = self.proxy.client_h2.request(breq).await;
            resp.map(|r| (r, None)).map_err(BackendError::Http2)
        } else {
            *breq.uri_mut() = Uri::from(self.path.clone());
            *breq.version_mut() = Version::HTTP_11;
            let sent = self.proxy.http1.send(ep.addr(), breq).await;
            sent.map(|(r, c)| (r, Some(c)))
        }
    }

    fn resendable(&self) -> bool {
        self.body.untouched()
    }
}

struct Responding<'a> {
    sticky: Option<&'a str>,
    request_id: HeaderValue,
    host: Host,
    method: Method,
    path: PathAndQuery,
    start: Instant,
}

/// `:authority` for HTTP/2 and absolute-form requests, else the `Host` header (a cheap
/// clone of the received value).
fn request_authority<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(a) = req.uri().authority() {
        return HeaderValue::from_str(a.as_str()).ok();
    }
    let v = req.headers().get(header::HOST)?;
    let text = v.to_str().ok()?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == text.len() {
        Some(v.clone())
    } else {
        HeaderValue::from_str(trimmed).ok()
    }
}
