//! Streaming bodies in both directions.
//!
//! `RequestBody` hands the client's body to the backend only when the backend connection
//! first polls it, so a failed connect leaves the body untouched and the request can be
//! retried on another endpoint. `ResponseBody` streams the backend's answer with an idle
//! timeout and carries the in-flight slot and the access-log record until it ends.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::http1::Checkin;
use crate::endpoint::InFlight;
use crate::proxy::policy::record::AccessLine;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Slot shared between the proxy and the request body handed to one attempt.
type Slot = Arc<Mutex<Option<Incoming>>>;

/// The client's request body, claimed lazily by whichever attempt first reads it.
pub struct RequestBody {
    slot: Option<Slot>,
    taken: Option<Incoming>,
    hint: SizeHint,
    end: bool,
}

/// Owner of the client body across attempts.
pub struct RetryableBody {
    slot: Option<Slot>,
    hint: SizeHint,
}

impl RequestBody {
    /// A body with nothing in it.
    pub fn empty() -> Self {
        RequestBody {
            slot: None,
            taken: None,
            hint: SizeHint::with_exact(0),
            end: true,
        }
    }
}

impl RetryableBody {
    pub fn new(body: Incoming) -> Self {
        if body.is_end_stream() {
            return RetryableBody {
                slot: None,
                hint: SizeHint::with_exact(0),
            };
        }
        let hint = body.size_hint();
        RetryableBody {
            slot: Some(Arc::new(Mutex::new(Some(body)))),
            hint,
        }
    }

    /// A body for one attempt.
    pub fn attempt(&self) -> RequestBody {
        RequestBody {
            slot: self.slot.clone(),
            taken: None,
            hint: self.hint,
            end: self.slot.is_none(),
        }
    }

    /// True while no attempt has read a single byte of the body.
    pub fn untouched(&self) -> bool {
        match &self.slot {
            None => true,
            Some(s) => s.lock().map(|g| g.is_some()).unwrap_or(false),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.end {
            return Poll::Ready(None);
        }
        if self.taken.is_none() {
            let claimed = self
                .slot
                .as_ref()
                .and_then(|s| s.lock().ok().and_then(|mut g| g.take()));
            match claimed {
                Some(b) => self.taken = Some(b),
                None => {
                    // Another attempt already consumed the body: this one cannot send it.
                    self.end = true;
                    return Poll::Ready(Some(Err("request body already consumed".into())));
                }
            }
        }
        let Some(body) = self.taken.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(body).poll_frame(cx));
        if frame.is_none() {
            self.end = true;
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.end
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// What the router sends back to the client.
pub struct ResponseBody {
    kind: Kind,
    /// The idle limit, and its timer once the body first had to wait (most small
    /// responses arrive whole and never arm one).
    idle: Option<(Duration, Option<Pin<Box<Sleep>>>)>,
    bytes: u64,
    done: bool,
    /// Logged once when the body finishes or is dropped.
    access: Option<AccessLine>,
    /// The backend connection, returned to its pool when the body ends cleanly.
    checkin: Option<Checkin>,
    _slot: Option<InFlight>,
}

enum Kind {
    Full(Option<Bytes>),
    Backend(Incoming),
}

impl ResponseBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        Self::new(Kind::Full(Some(b.into())))
    }

    pub fn empty() -> Self {
        Self::new(Kind::Full(None))
    }

    pub fn backend(
        body: Incoming,
        idle_timeout: Option<Duration>,
        slot: InFlight,
        checkin: Option<Checkin>,
    ) -> Self {
        let mut b = Self::new(Kind::Backend(body));
        b.idle = idle_timeout.map(|d| (d, None));
        b._slot = Some(slot);
        b.checkin = checkin;
        b
    }

    fn new(kind: Kind) -> Self {
        ResponseBody {
            kind,
            idle: None,
            bytes: 0,
            done: false,
            access: None,
            checkin: None,
            _slot: None,
        }
    }

    /// Logs `line` with the bytes sent once the body ends.
    pub fn with_access(mut self, line: AccessLine) -> Self {
        self.access = Some(line);
        self
    }

    fn finish(&mut self, complete: bool) {
        self.done = true;
        self._slot = None;
        if let Some(c) = self.checkin.take() {
            c.release(complete);
        }
        if let Some(line) = self.access.take() {
            line.log(self.bytes, complete);
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if !self.done {
            let complete = self.is_end_stream();
            self.finish(complete);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let polled = match &mut this.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Backend(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
        };
        match polled {
            Poll::Pending => {
                if let Some((d, timer)) = &mut this.idle
                    && timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(*d)))
                        .as_mut()
                        .poll(cx)
                        .is_ready()
                {
                    this.finish(false);
                    return Poll::Ready(Some(Err("backend response body idle timeout".into())));
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if let Some((d, Some(timer))) = &mut this.idle {
                    timer.as_mut().reset(Instant::now() + *d);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Backend(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Backend(b) => b.size_hint(),
        }
    }
}
