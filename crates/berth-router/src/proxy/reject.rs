//! The router's own error responses. Each carries `X-Berth-Router-Error: <reason>` so a
//! client (or an operator reading logs) can tell a router decision from a backend answer.

use http::{HeaderValue, Response, StatusCode, header};

use super::body::ResponseBody;
use super::headers::X_ROUTER_ERROR;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// No route matches the request's host and path.
    UnknownRoute,
    /// The route exists but has no endpoint right now.
    NoEndpoints,
    /// Every attempted endpoint failed (refused, timed out, reset).
    EndpointFailure,
    /// The request carries no usable `Host`.
    EmptyHost,
    /// Every endpoint of the route is at its connection limit.
    ConnectionLimit,
}

impl Reject {
    pub fn reason(self) -> &'static str {
        match self {
            Reject::UnknownRoute => "unknown_route",
            Reject::NoEndpoints => "no_endpoints",
            Reject::EndpointFailure => "endpoint_failure",
            Reject::EmptyHost => "empty_host",
            Reject::ConnectionLimit => "connection_limit",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Reject::UnknownRoute => StatusCode::NOT_FOUND,
            Reject::NoEndpoints | Reject::ConnectionLimit => StatusCode::SERVICE_UNAVAILABLE,
            Reject::EndpointFailure => StatusCode::BAD_GATEWAY,
            Reject::EmptyHost => StatusCode::BAD_REQUEST,
        }
    }

    pub(crate) fn message(self, host: &str) -> String {
        match self {
            Reject::UnknownRoute => format!(
                "404 Not Found: no route for host {host:?} and this path; check `berth routes` \
                 or the app's `routes`\n"
            ),
            Reject::NoEndpoints => format!(
                "503 Service Unavailable: route for {host:?} has no healthy endpoint right now\n"
            ),
            Reject::EndpointFailure => format!(
                "502 Bad Gateway: every endpoint tried for {host:?} failed; see the router log\n"
            ),
            Reject::EmptyHost => {
                "400 Bad Request: the request has no Host header; send `Host: <route host>`\n"
                    .to_string()
            }
            Reject::ConnectionLimit => format!(
                "503 Service Unavailable: every endpoint of {host:?} is at its connection \
                 limit; retry later\n"
            ),
        }
    }

    pub fn response(self, host: &str, request_id: Option<&HeaderValue>) -> Response<ResponseBody> {
        let mut resp = Response::new(ResponseBody::full(self.message(host)));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(&X_ROUTER_ERROR, HeaderValue::from_static(self.reason()));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(id) = request_id {
            h.insert(&super::headers::X_REQUEST_ID, id.clone());
        }
        resp
    }
}
