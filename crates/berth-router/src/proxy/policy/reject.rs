//! The router's own error responses (phase 2 of the policy): status, reason and message.
//! Each codec sends them with `X-Berth-Router-Error: <reason>` so a client (or an operator
//! reading logs) can tell a router decision from a backend answer.

use http::StatusCode;

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

    pub fn message(self, host: &str) -> String {
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
}
