//! Phases 3 to 6 of the policy: endpoint choice, attempts and retries, passive health
//! marking and the response-head timeout, driving a codec's [`Upstream`].

use std::net::SocketAddr;
use std::sync::Arc;

use smallvec::SmallVec;

use super::{BackendError, Policy, Reject};
use crate::balance::Pool;
use crate::endpoint::{Endpoint, InFlight};

/// A codec's side of an attempt: sends the request to one endpoint and reads the
/// response head. Implemented per codec and called through generics (no boxing, no
/// dynamic dispatch on the request path).
pub trait Upstream {
    /// What a codec keeps from a successful exchange (the response head and the
    /// connection its body arrives on).
    type Answer;

    /// One attempt on `ep`. `last` is true when no attempt can follow, so the request's
    /// parts may be moved instead of copied.
    fn send(
        &mut self,
        ep: &Endpoint,
        last: bool,
    ) -> impl Future<Output = Result<Self::Answer, BackendError>> + Send;

    /// The request can still be sent again (a streamed body nothing has read yet).
    fn resendable(&self) -> bool;
}

/// The endpoint that answered, its in-flight slot (held until the body ends) and the answer.
pub struct Forwarded<A> {
    pub endpoint: Arc<Endpoint>,
    pub slot: InFlight,
    pub answer: A,
}

impl Policy {
    /// Phases 3 to 6: sends the request to the route's endpoints until one answers with a
    /// response head, or says which rejection the client gets instead.
    pub async fn forward<U: Upstream>(
        &self,
        pool: &Pool,
        sticky: Option<&str>,
        request_id: &str,
        upstream: &mut U,
    ) -> Result<Forwarded<U::Answer>, Reject> {
        let max_attempts = (self.cfg.max_attempts.max(1) as usize).min(pool.endpoints.len());
        let mut tried: SmallVec<[SocketAddr; 4]> = SmallVec::new();
        let mut attempts = 0;
        while attempts < max_attempts {
            let Some(ep) = pool.pick(&tried, sticky) else {
                break;
            };
            tried.push(ep.addr());
            let Some(slot) = ep.stats.try_begin(self.cfg.max_conns_per_backend) else {
                continue;
            };
            attempts += 1;
            if attempts > 1 {
                self.metrics.retries.inc();
            }
            let timeout = self.cfg.response_header_timeout;
            let sent = tokio::time::timeout(timeout, upstream.send(&ep, attempts == max_attempts))
                .await
                .unwrap_or_else(|_| Err(BackendError::HeaderTimeout(timeout)));
            match sent {
                Ok(answer) => {
                    ep.stats.mark_ok();
                    return Ok(Forwarded {
                        endpoint: ep,
                        slot,
                        answer,
                    });
                }
                Err(e) => {
                    let retry = e.retryable() && upstream.resendable();
                    self.failed(&ep, pool, request_id, retry, &e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(if attempts == 0 {
            Reject::ConnectionLimit
        } else {
            Reject::EndpointFailure
        })
    }

    /// Phase 5: marks the endpoint failing (passive health) and says why in the log.
    fn failed(&self, ep: &Endpoint, pool: &Pool, request_id: &str, retry: bool, e: &BackendError) {
        if !e.blames_backend() {
            tracing::warn!(
                backend = %ep.addr(), route = %pool.key, request_id,
                error = %error_chain(e), "cannot send the request to the backend"
            );
            return;
        }
        ep.stats.mark_failed(self.cfg.failure_cooldown);
        match e {
            BackendError::HeaderTimeout(timeout) => tracing::warn!(
                backend = %ep.addr(), route = %pool.key, request_id, ?timeout,
                "backend sent no response headers in time"
            ),
            _ => tracing::warn!(
                backend = %ep.addr(), route = %pool.key, request_id, retryable = retry,
                error = %error_chain(e), "backend request failed"
            ),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
