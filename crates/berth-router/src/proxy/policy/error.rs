//! One backend error type for both codecs: what went wrong with one exchange, and whether
//! the request may go to another endpoint (phase 4 of the policy).

use std::io;
use std::time::Duration;

/// Why one exchange with a backend produced no usable response head.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No connection could be made: nothing was sent.
    #[error("cannot connect to the backend: {0}")]
    Connect(io::Error),
    #[error("cannot connect to the backend within {0:?}")]
    ConnectTimeout(Duration),
    /// The general engine's HTTP/1.1 handshake failed before the request was written.
    #[error("backend HTTP/1.1 handshake failed: {0}")]
    Handshake(hyper::Error),
    /// The general engine's HTTP/2 client failed (it tells whether it ever connected).
    #[error(transparent)]
    Http2(hyper_util::client::legacy::Error),
    /// A reused idle connection failed before any byte of an answer: the backend closed it
    /// while it sat in the pool. The fast path resends on another connection itself.
    #[error("idle backend connection was closed: {0}")]
    Stale(io::Error),
    /// The request was (possibly) sent; it must not be repeated.
    #[error("backend request failed: {0}")]
    Io(io::Error),
    /// Like `Io`, from the general engine's client.
    #[error("backend request failed: {0}")]
    Request(#[source] hyper::Error),
    #[error("backend closed the connection before answering")]
    Closed,
    #[error("invalid backend response head: {0}")]
    BadResponse(&'static str),
    /// No response head within the response header timeout.
    #[error("backend sent no response headers within {0:?}")]
    HeaderTimeout(Duration),
    /// The request has no form this backend takes (never sent; not the backend's fault).
    #[error("cannot address the request to the backend: {0}")]
    Unsendable(#[source] http::uri::InvalidUri),
}

impl BackendError {
    /// The backend cannot have seen the request because it could not be reached, so another
    /// endpoint may take it (when the request body can still be sent again).
    pub fn retryable(&self) -> bool {
        match self {
            BackendError::Connect(_)
            | BackendError::ConnectTimeout(_)
            | BackendError::Handshake(_) => true,
            BackendError::Http2(e) => e.is_connect(),
            _ => false,
        }
    }

    /// The failure says something about the endpoint's health (passive health marks it).
    pub fn blames_backend(&self) -> bool {
        !matches!(self, BackendError::Unsendable(_))
    }
}
