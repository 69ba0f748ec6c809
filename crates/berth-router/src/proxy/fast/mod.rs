//! The HTTP/1.1 fast path: a client connection served by one task that parses each
//! request head with `httparse` from a reused buffer, writes the rewritten head and body to
//! a pooled backend connection in one write, and relays the answer by its framing
//! (`Content-Length`, chunked, or until close) without building `http` types.
//!
//! Every decision (route, rejections, endpoint choice, retries, passive health, timeouts,
//! sticky sessions, the access line and counters) is the policy's, as for the general
//! engine; this module only speaks HTTP/1.1. Anything unusual (HTTP/2 prior knowledge,
//! HTTP/1.0, upgrades, `Expect`, chunked or large request bodies, absolute-form targets,
//! HTTP/2 backends) ends the fast path with [`Outcome::Fallback`]: the connection module
//! (`conn`) then gives the connection, from its first unanswered byte, to the general
//! engine for the rest of its life.

mod backend;
mod chunked;
mod names;
pub mod request;
mod response;
mod rewind;

use std::pin::pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::policy::record::RequestLog;
use super::policy::{self, BackendError, Forwarded, Reject, Target, Upstream};
use super::{ConnInfo, Proxy, headers};
use crate::endpoint::Endpoint;
pub use backend::RawPool;
use backend::{Conn, MAX_HEAD};
use request::{Fast, Forwarding, Plan};
use response::Framing;
pub use rewind::Rewind;

/// Most headers a request or response head may carry.
pub const MAX_HEADERS: usize = 100;
/// Request heads larger than this get 431.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
const READ_CHUNK: usize = 8 * 1024;

/// How a fast-path connection ended.
pub enum Outcome {
    Closed,
    /// The general engine takes over: `buffered` holds bytes read but not answered.
    Fallback(TcpStream, BytesMut),
}

/// What one parsed head led to.
enum Step {
    /// Answered; `consumed` bytes of the buffer belonged to it.
    Done {
        consumed: usize,
        keep_alive: bool,
    },
    /// The body is not all here yet: read until the buffer holds `total` bytes.
    NeedBody(usize),
    Fallback,
}

/// The client side of a connection.
struct Client<'a> {
    stream: TcpStream,
    info: &'a ConnInfo,
    /// The response head (and small bodies) for the client.
    out: Vec<u8>,
    /// The request for the backend.
    breq: Vec<u8>,
}

impl Proxy {
    /// Serves one plain-TCP client connection until it closes, `stop` fires while it is
    /// idle, or a request needs the general engine.
    pub async fn serve_http1(
        &self,
        stream: TcpStream,
        info: &ConnInfo,
        stop: &CancellationToken,
        header_timeout: Duration,
    ) -> Outcome {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut c = Client {
            stream,
            info,
            out: Vec::with_capacity(1024),
            breq: Vec::with_capacity(1024),
        };
        let mut cancelled = pin!(stop.cancelled());
        let mut deadline = pin!(tokio::time::sleep(header_timeout));
        // A head's deadline starts when the wait for it starts (as in the general engine).
        let mut armed = false;
        loop {
            if buf.len() >= 4 && buf.starts_with(b"PRI ") {
                // HTTP/2 with prior knowledge.
                return Outcome::Fallback(c.stream, buf);
            }
            let step = if buf.is_empty() {
                None
            } else {
                let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut hdrs);
                match req.parse(&buf) {
                    Ok(httparse::Status::Complete(n)) if n > MAX_REQUEST_HEAD => {
                        self.refuse(&mut c, 431, "request head larger than 64 KiB")
                            .await;
                        return Outcome::Closed;
                    }
                    Ok(httparse::Status::Complete(n)) => {
                        let (method, target, version) = (
                            req.method.unwrap_or(""),
                            req.path.unwrap_or(""),
                            req.version.unwrap_or(0),
                        );
                        Some(
                            self.handle_head(&mut c, &buf, n, method, target, version, req.headers)
                                .await,
                        )
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_REQUEST_HEAD => {
                        self.refuse(&mut c, 431, "request head larger than 64 KiB")
                            .await;
                        return Outcome::Closed;
                    }
                    Ok(httparse::Status::Partial) => None,
                    Err(httparse::Error::TooManyHeaders) => {
                        self.refuse(&mut c, 431, "more than 100 request headers")
                            .await;
                        return Outcome::Closed;
                    }
                    Err(e) => {
                        self.refuse(&mut c, 400, &format!("malformed request head: {e}"))
                            .await;
                        return Outcome::Closed;
                    }
                }
            };
            let want = match step {
                Some(Step::Done {
                    consumed,
                    keep_alive,
                }) => {
                    buf.advance(consumed);
                    armed = false;
                    if !keep_alive {
                        return Outcome::Closed;
                    }
                    continue;
                }
                Some(Step::Fallback) => return Outcome::Fallback(c.stream, buf),
                Some(Step::NeedBody(total)) => total,
                None => 0,
            };
            // Read more: the rest of a head or of a body, or the next request.
            if buf.is_empty() && stop.is_cancelled() {
                return Outcome::Closed;
            }
            if !armed {
                deadline.as_mut().reset(Instant::now() + header_timeout);
                armed = true;
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK.max(want.saturating_sub(buf.len())));
            }
            let idle = buf.is_empty();
            tokio::select! {
                biased;
                read = tokio::io::AsyncReadExt::read_buf(&mut c.stream, &mut buf) => match read {
                    Ok(0) | Err(_) => return Outcome::Closed,
                    Ok(_) => {}
                },
                _ = &mut cancelled, if idle => return Outcome::Closed,
                _ = &mut deadline => return Outcome::Closed,
            }
        }
    }

    /// Answers one complete head (`head_len` bytes at the start of `buf`).
    #[allow(clippy::too_many_arguments)]
    async fn handle_head(
        &self,
        c: &mut Client<'_>,
        buf: &[u8],
        head_len: usize,
        method: &str,
        target: &str,
        version: u8,
        hdrs: &[httparse::Header<'_>],
    ) -> Step {
        let f = match request::classify(method, target, version, hdrs) {
            Plan::Fast(f) => f,
            Plan::Fallback => return Step::Fallback,
            Plan::Bad(why) => {
                self.refuse(c, 400, why).await;
                return Step::Done {
                    consumed: buf.len(),
                    keep_alive: false,
                };
            }
        };
        // Bodies are at most request::MAX_BODY here.
        let total = head_len + f.content_length as usize;
        if buf.len() < total {
            return Step::NeedBody(total);
        }
        let routed = self.policy.target(f.authority, f.path);
        if routed.as_ref().is_ok_and(Target::wants_http2) {
            return Step::Fallback;
        }

        let start = self.policy.begin();
        let generated;
        let request_id: &[u8] = match f.request_id {
            Some(id) => id.as_bytes(),
            None => {
                generated = headers::new_request_id_bytes();
                &generated
            }
        };
        let id_text = std::str::from_utf8(request_id).unwrap_or("-");
        let keep_alive = !f.close;
        let done = |keep_alive| Step::Done {
            consumed: total,
            keep_alive,
        };
        let target = match routed {
            Ok(target) => target,
            Err(refused) => {
                let log = request_log(&f, refused.host_text(), id_text, start);
                let ok = self.reject_fast(c, refused.reject, &log, f.close).await;
                return done(keep_alive && ok);
            }
        };
        // A route was found for a host, so there was one.
        let Some(authority) = f.authority else {
            return done(false);
        };
        let log = request_log(&f, target.host.as_str(), id_text, start);

        c.breq.clear();
        request::write_backend_head(
            &f,
            authority,
            hdrs,
            &Forwarding {
                client_ip: c.info.client_ip.as_bytes(),
                scheme: c.info.scheme,
                request_id,
                start_ms: headers::request_start_ms(),
            },
            &mut c.breq,
        );
        c.breq.extend_from_slice(&buf[head_len..total]);

        let mut exchange = Exchange {
            raw: &self.raw,
            request: &c.breq,
            out: &mut c.out,
            request_id,
            is_head: f.is_head,
            client_close: f.close,
            sticky: f.sticky,
            sticky_cookies: &self.policy.config().sticky_cookies,
        };
        let forwarded = self
            .policy
            .forward(&target.pool, f.sticky, id_text, &mut exchange)
            .await;
        let Forwarded {
            endpoint: ep,
            slot,
            answer: (mut conn, meta),
        } = match forwarded {
            Ok(forwarded) => forwarded,
            Err(reject) => {
                let ok = self.reject_fast(c, reject, &log, f.close).await;
                return done(keep_alive && ok);
            }
        };
        self.policy.answered(meta.status, start);
        let relayed = self.relay(&mut conn, meta.framing, c).await;
        if relayed.complete && meta.reusable && conn.buf.is_empty() {
            self.raw.put(ep.addr(), conn);
        }
        drop(slot);
        self.policy
            .log(&log.answered(meta.status, relayed.bytes, &ep, relayed.complete));
        done(keep_alive && relayed.complete && relayed.client_ok)
    }

    /// Relays the body after the response head in `c.out`.
    async fn relay(&self, conn: &mut Conn, framing: Framing, c: &mut Client<'_>) -> Relayed {
        let mut r = Relayed {
            bytes: 0,
            complete: false,
            client_ok: true,
        };
        match framing {
            Framing::Empty => {
                r.complete = true;
                r.client_ok = c.stream.write_all(&c.out).await.is_ok();
            }
            Framing::Length(n) => {
                let mut left = n;
                let first = conn
                    .buf
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                c.out.extend_from_slice(&conn.buf[..first]);
                conn.buf.advance(first);
                left -= first as u64;
                r.bytes += first as u64;
                if c.stream.write_all(&c.out).await.is_err() {
                    r.client_ok = false;
                    r.complete = left == 0;
                    return r;
                }
                while left > 0 {
                    if !self.read_body(conn).await {
                        return r;
                    }
                    let take = conn
                        .buf
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    left -= take as u64;
                    r.bytes += take as u64;
                    let written = c.stream.write_all(&conn.buf[..take]).await;
                    conn.buf.advance(take);
                    if written.is_err() {
                        r.client_ok = false;
                        r.complete = left == 0;
                        return r;
                    }
                }
                r.complete = true;
            }
            Framing::Chunked => {
                let mut dec = chunked::Decoder::default();
                let mut pending_out = true;
                loop {
                    let used = match dec.feed(&conn.buf) {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(error = e, "malformed chunked body from the backend");
                            r.bytes = dec.data_bytes();
                            return r;
                        }
                    };
                    let written = if pending_out {
                        pending_out = false;
                        c.out.extend_from_slice(&conn.buf[..used]);
                        c.stream.write_all(&c.out).await
                    } else {
                        c.stream.write_all(&conn.buf[..used]).await
                    };
                    conn.buf.advance(used);
                    r.bytes = dec.data_bytes();
                    if written.is_err() {
                        r.client_ok = false;
                        r.complete = dec.done();
                        return r;
                    }
                    if dec.done() {
                        r.complete = true;
                        return r;
                    }
                    if !self.read_body(conn).await {
                        return r;
                    }
                }
            }
            Framing::Close => {
                // Re-framed as chunked, so the client connection stays usable.
                chunked::push_chunk(&mut c.out, &conn.buf);
                r.bytes += conn.buf.len() as u64;
                conn.buf.clear();
                loop {
                    if c.stream.write_all(&c.out).await.is_err() {
                        r.client_ok = false;
                        return r;
                    }
                    c.out.clear();
                    match conn.read_more().await {
                        Ok(0) => {
                            r.complete = true;
                            r.client_ok = c.stream.write_all(chunked::LAST_CHUNK).await.is_ok();
                            return r;
                        }
                        Ok(_) => {
                            chunked::push_chunk(&mut c.out, &conn.buf);
                            r.bytes += conn.buf.len() as u64;
                            conn.buf.clear();
                        }
                        Err(_) => return r,
                    }
                }
            }
        }
        r
    }

    /// Reads the next piece of a body into `conn.buf` (emptied first), bounded by the idle
    /// timeout. False when the backend failed, closed or went silent.
    async fn read_body(&self, conn: &mut Conn) -> bool {
        conn.buf.clear();
        let idle_timeout = self.policy.body_idle_timeout();
        match tokio::time::timeout(idle_timeout, conn.read_more()).await {
            Ok(Ok(n)) if n > 0 => true,
            Ok(_) => {
                tracing::warn!("backend closed the connection in the middle of a body");
                false
            }
            Err(_) => {
                tracing::warn!(timeout = ?idle_timeout, "backend response body idle timeout");
                false
            }
        }
    }

    /// One of the router's own answers (the error contract), as the general engine sends
    /// it. False when the client is gone.
    async fn reject_fast(
        &self,
        c: &mut Client<'_>,
        r: Reject,
        log: &RequestLog<'_>,
        close: bool,
    ) -> bool {
        self.policy.rejected(r, log);
        c.out.clear();
        write_simple(
            &mut c.out,
            r.status().as_u16(),
            r.reason(),
            Some(log.request_id),
            close,
            &r.message(log.host),
        );
        c.stream.write_all(&c.out).await.is_ok()
    }

    /// Refuses a head the fast path cannot parse; the connection closes afterwards.
    async fn refuse(&self, c: &mut Client<'_>, status: u16, why: &str) {
        let reason = self.policy.malformed(status);
        tracing::debug!(remote = %c.info.remote, status, why, "refused a request head");
        let text = match status {
            431 => format!("431 Request Header Fields Too Large: {why}\n"),
            _ => format!("400 Bad Request: {why}\n"),
        };
        c.out.clear();
        write_simple(&mut c.out, status, reason, None, true, &text);
        let _ = c.stream.write_all(&c.out).await;
        let _ = c.stream.shutdown().await;
    }
}

fn request_log<'a>(
    f: &'a Fast<'_>,
    host: &'a str,
    request_id: &'a str,
    start: Instant,
) -> RequestLog<'a> {
    RequestLog {
        method: f.method,
        host,
        path: f.target,
        request_id,
        start,
    }
}

/// The fast path's side of an attempt: the request, already written whole (head and
/// body), goes to one endpoint; the client's response head is written into `out`.
struct Exchange<'a> {
    raw: &'a RawPool,
    request: &'a [u8],
    out: &'a mut Vec<u8>,
    request_id: &'a [u8],
    is_head: bool,
    client_close: bool,
    sticky: Option<&'a str>,
    sticky_cookies: &'a [String],
}

impl Upstream for Exchange<'_> {
    type Answer = (Conn, response::Meta);

    /// Sends the request on an idle connection (stale ones are skipped: the request goes
    /// again on the next) or a new one, and reads the response head.
    async fn send(&mut self, ep: &Endpoint, _last: bool) -> Result<Self::Answer, BackendError> {
        let cx = response::Context {
            request_id: self.request_id,
            is_head: self.is_head,
            client_close: self.client_close,
            sticky_id: &ep.sticky_id,
            restick: policy::restick(self.sticky, ep),
            sticky_cookies: self.sticky_cookies,
        };
        self.out.clear();
        let addr = ep.addr();
        loop {
            let mut conn = match self.raw.take(addr) {
                Some(conn) => conn,
                None => self.raw.connect(addr).await?,
            };
            match round_trip(&mut conn, self.request, &cx, self.out).await {
                Ok(meta) => return Ok((conn, meta)),
                Err(BackendError::Stale(e)) if conn.reused => {
                    tracing::debug!(backend = %addr, error = %e, "idle backend connection closed; resending");
                    self.out.clear();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The body was read whole before the first attempt.
    fn resendable(&self) -> bool {
        true
    }
}

struct Relayed {
    /// Body bytes (payload only) sent to the client.
    bytes: u64,
    /// The backend's answer was read to its end.
    complete: bool,
    client_ok: bool,
}

/// Writes the request (one write: head and body) and reads the response head, skipping
/// interim 1xx answers. The client head goes into `out`; body bytes stay in `conn.buf`.
async fn round_trip(
    conn: &mut Conn,
    request: &[u8],
    cx: &response::Context<'_>,
    out: &mut Vec<u8>,
) -> Result<response::Meta, BackendError> {
    conn.send(request).await?;
    // Bytes of an answer seen so far (1xx included): a stale connection sends none.
    let mut seen = 0;
    loop {
        conn.fill(seen).await?;
        seen += 1;
        loop {
            enum Parsed {
                Head(response::Meta, usize),
                Interim(usize),
                More,
            }
            let parsed = {
                let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut hdrs);
                match resp.parse(&conn.buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let status = resp.code.unwrap_or(0);
                        if status == 101 {
                            return Err(BackendError::BadResponse(
                                "101 Switching Protocols to a request without Upgrade",
                            ));
                        } else if status < 200 {
                            Parsed::Interim(n)
                        } else {
                            let meta = response::write_client_head(
                                status,
                                resp.reason.unwrap_or(""),
                                resp.version.unwrap_or(1),
                                resp.headers,
                                cx,
                                out,
                            )
                            .map_err(BackendError::BadResponse)?;
                            Parsed::Head(meta, n)
                        }
                    }
                    Ok(httparse::Status::Partial) if conn.buf.len() > MAX_HEAD => {
                        return Err(BackendError::BadResponse("head larger than 64 KiB"));
                    }
                    Ok(httparse::Status::Partial) => Parsed::More,
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(BackendError::BadResponse("more than 100 headers"));
                    }
                    Err(_) => return Err(BackendError::BadResponse("not an HTTP/1.x response")),
                }
            };
            match parsed {
                Parsed::Head(meta, n) => {
                    conn.buf.advance(n);
                    return Ok(meta);
                }
                Parsed::Interim(n) => {
                    conn.buf.advance(n);
                    if conn.buf.is_empty() {
                        break;
                    }
                }
                Parsed::More => break,
            }
        }
    }
}

/// A complete small response the router writes itself.
fn write_simple(
    out: &mut Vec<u8>,
    status: u16,
    router_error: &str,
    request_id: Option<&str>,
    close: bool,
    body: &str,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\nx-berth-router-error: ");
    out.extend_from_slice(router_error.as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\n");
    if let Some(id) = request_id {
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    response::write_date(out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}
