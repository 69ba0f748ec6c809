//! Phase 8 of the policy: what a request's access line says, whichever codec served it.

use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{HeaderValue, Method};
use tokio::time::Instant;

use super::Reject;
use crate::endpoint::Endpoint;
use crate::proxy::access::{AccessRecord, AccessSink};
use crate::route::Host;

/// What the counters and the access line know of a request, borrowed from the codec.
#[derive(Clone, Copy)]
pub struct RequestLog<'a> {
    pub method: &'a str,
    /// The normalised host, or empty when the request named none.
    pub host: &'a str,
    /// Path and query as received.
    pub path: &'a str,
    pub request_id: &'a str,
    pub start: Instant,
}

impl<'a> RequestLog<'a> {
    /// The line of an answer from `backend`: `bytes` of body sent, `complete` when the
    /// backend's body was relayed to its end.
    pub fn answered(
        &self,
        status: u16,
        bytes: u64,
        backend: &'a Endpoint,
        complete: bool,
    ) -> AccessRecord<'a> {
        AccessRecord {
            method: self.method,
            host: self.host,
            path: self.path,
            status,
            bytes,
            duration: self.start.elapsed(),
            backend: Some(&backend.addr_text),
            request_id: self.request_id,
            router_error: None,
            complete,
        }
    }

    /// The line of a request the router answered itself.
    pub fn rejected(&self, reject: Reject) -> AccessRecord<'a> {
        AccessRecord {
            method: self.method,
            host: self.host,
            path: self.path,
            status: reject.status().as_u16(),
            bytes: 0,
            duration: self.start.elapsed(),
            backend: None,
            request_id: self.request_id,
            router_error: Some(reject.reason()),
            complete: true,
        }
    }
}

/// The owned form of an answer's line, for the general engine's streamed bodies, which
/// log when they end: cheaply cloned parts of the request (no string copies).
pub struct AccessLine {
    pub sink: AccessSink,
    pub method: Method,
    pub host: Host,
    pub path: PathAndQuery,
    pub status: u16,
    pub backend: Arc<Endpoint>,
    pub request_id: HeaderValue,
    pub start: Instant,
}

impl AccessLine {
    pub fn log(&self, bytes: u64, complete: bool) {
        let req = RequestLog {
            method: self.method.as_str(),
            host: self.host.as_str(),
            path: self.path.as_str(),
            request_id: self.request_id.to_str().unwrap_or("-"),
            start: self.start,
        };
        self.sink
            .record(&req.answered(self.status, bytes, &self.backend, complete));
    }
}
