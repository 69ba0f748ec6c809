//! The HTTP/1.1 fast path: a client connection served by one task that parses each
//! request head with `httparse` from a reused buffer, writes the rewritten head and body to
//! a pooled backend connection in one write, and relays the answer by its framing
//! (`Content-Length`, chunked, or until close) without building `http` types.
//!
//! It keeps every rule of the general engine (route lookup, retries only when nothing
//! reached a backend, passive health, per-backend limits, the error contract, forwarding
//! headers, sticky sessions, the access log and counters). Anything unusual (HTTP/2
//! prior knowledge, HTTP/1.0, upgrades, `Expect`, chunked or large request bodies,
//! absolute-form targets, HTTP/2 backends) hands the connection, from the first
//! unanswered byte, to the general engine (hyper) for the rest of its life.

mod backend;
mod chunked;
mod names;
mod request;
mod response;
mod rewind;

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::access::AccessRecord;
use super::{ConnInfo, Proxy, Reject, headers};
use crate::endpoint::Endpoint;
use crate::route::Host;
pub use backend::RawPool;
use backend::{Conn, ExchangeError, MAX_HEAD};
use request::{Fast, Forwarding, Plan};
use response::Framing;
pub use rewind::Rewind;

/// Most headers a request or response head may carry.
const MAX_HEADERS: usize = 100;
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
        let host = f.authority.and_then(Host::from_request_authority);
        let pool = host
            .as_ref()
            .and_then(|h| self.store.load().lookup(h, f.path).cloned());
        if pool
            .as_ref()
            .is_some_and(|p| p.endpoints.iter().any(|e| e.spec.http2))
        {
            // HTTP/2 backends go through the general engine's client.
            return Step::Fallback;
        }

        let start = Instant::now();
        self.metrics.requests.inc();
        let generated;
        let request_id: &[u8] = match f.request_id {
            Some(id) => id.as_bytes(),
            None => {
                generated = headers::new_request_id_bytes();
                &generated
            }
        };
        let id_text = std::str::from_utf8(request_id).unwrap_or("-");
        let host_text = host.as_ref().map_or("", Host::as_str);
        let reject = match (&host, &pool) {
            (None, _) => Some(Reject::EmptyHost),
            (Some(_), None) => Some(Reject::UnknownRoute),
            (Some(_), Some(p)) if p.endpoints.is_empty() => Some(Reject::NoEndpoints),
            _ => None,
        };
        let keep_alive = !f.close;
        let done = |keep_alive| Step::Done {
            consumed: total,
            keep_alive,
        };
        if let Some(r) = reject {
            let ok = self.reject_fast(c, r, &f, host_text, id_text, start).await;
            return done(keep_alive && ok);
        }
        let (Some(pool), Some(authority)) = (pool, f.authority) else {
            return done(false);
        };

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

        let max_attempts = (self.cfg.max_attempts.max(1) as usize).min(pool.endpoints.len());
        let mut tried: smallvec::SmallVec<[SocketAddr; 4]> = smallvec::SmallVec::new();
        let mut attempts = 0;
        while attempts < max_attempts {
            let Some(ep) = pool.pick(&tried, f.sticky) else {
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
            let cx = response::Context {
                request_id,
                is_head: f.is_head,
                client_close: f.close,
                sticky_id: &ep.sticky_id,
                restick: f.sticky.is_some_and(|s| s != ep.sticky_id),
                sticky_cookies: &self.cfg.sticky_cookies,
            };
            c.out.clear();
            let exchanged = tokio::time::timeout(
                self.cfg.response_header_timeout,
                self.exchange(ep.addr(), &c.breq, &cx, &mut c.out),
            )
            .await;
            match exchanged {
                Ok(Ok((mut conn, meta))) => {
                    ep.stats.mark_ok();
                    self.metrics.response(meta.status, start.elapsed());
                    let relayed = self.relay(&mut conn, meta.framing, c).await;
                    if relayed.complete && meta.reusable && conn.buf.is_empty() {
                        self.raw.put(ep.addr(), conn);
                    }
                    drop(slot);
                    self.access.record(&AccessRecord {
                        method: f.method,
                        host: host_text,
                        path: f.target,
                        status: meta.status,
                        bytes: relayed.bytes,
                        duration: start.elapsed(),
                        backend: Some(&ep.addr_text),
                        request_id: id_text,
                        router_error: None,
                        complete: relayed.complete,
                    });
                    return done(keep_alive && relayed.complete && relayed.client_ok);
                }
                Ok(Err(e)) => {
                    let retryable = e.is_connect();
                    self.backend_failed(&ep, &pool.key, id_text, retryable, &e);
                    if !retryable {
                        break;
                    }
                }
                Err(_) => {
                    ep.stats.mark_failed(self.cfg.failure_cooldown);
                    tracing::warn!(
                        backend = %ep.addr(), route = %pool.key, request_id = id_text,
                        timeout = ?self.cfg.response_header_timeout,
                        "backend sent no response headers in time"
                    );
                    break;
                }
            }
        }
        let r = if attempts == 0 {
            Reject::ConnectionLimit
        } else {
            Reject::EndpointFailure
        };
        let ok = self.reject_fast(c, r, &f, host_text, id_text, start).await;
        done(keep_alive && ok)
    }

    fn backend_failed(
        &self,
        ep: &Endpoint,
        route: &crate::route::RouteKey,
        request_id: &str,
        retryable: bool,
        e: &ExchangeError,
    ) {
        ep.stats.mark_failed(self.cfg.failure_cooldown);
        tracing::warn!(
            backend = %ep.addr(), %route, request_id, retryable,
            error = %super::error_chain(e), "backend request failed"
        );
    }

    /// Sends the request on an idle connection (stale ones are skipped: the request goes
    /// again on the next) or a new one, and reads the response head into `out`.
    async fn exchange(
        &self,
        addr: SocketAddr,
        request: &[u8],
        cx: &response::Context<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(Conn, response::Meta), ExchangeError> {
        loop {
            let mut conn = match self.raw.take(addr) {
                Some(conn) => conn,
                None => self.raw.connect(addr).await?,
            };
            match round_trip(&mut conn, request, cx, out).await {
                Ok(meta) => return Ok((conn, meta)),
                Err(ExchangeError::Stale(e)) if conn.reused => {
                    tracing::debug!(backend = %addr, error = %e, "idle backend connection closed; resending");
                    out.clear();
                }
                Err(e) => return Err(e),
            }
        }
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
        match tokio::time::timeout(self.cfg.idle_timeout, conn.read_more()).await {
            Ok(Ok(n)) if n > 0 => true,
            Ok(_) => {
                tracing::warn!("backend closed the connection in the middle of a body");
                false
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.cfg.idle_timeout, "backend response body idle timeout");
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
        f: &Fast<'_>,
        host: &str,
        request_id: &str,
        start: Instant,
    ) -> bool {
        self.metrics.router_error(r.reason());
        self.access.record(&AccessRecord {
            method: f.method,
            host,
            path: f.target,
            status: r.status().as_u16(),
            bytes: 0,
            duration: start.elapsed(),
            backend: None,
            request_id,
            router_error: Some(r.reason()),
            complete: true,
        });
        self.metrics.response(r.status().as_u16(), start.elapsed());
        c.out.clear();
        write_simple(
            &mut c.out,
            r.status().as_u16(),
            r.reason(),
            Some(request_id),
            f.close,
            &r.message(host),
        );
        c.stream.write_all(&c.out).await.is_ok()
    }

    /// Refuses a head the fast path cannot parse; the connection closes afterwards.
    async fn refuse(&self, c: &mut Client<'_>, status: u16, why: &str) {
        let reason = if status == 431 {
            "request_head_too_large"
        } else {
            "malformed_request"
        };
        self.metrics.requests.inc();
        self.metrics.response(status, Duration::ZERO);
        self.metrics.router_error(reason);
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
) -> Result<response::Meta, ExchangeError> {
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
                            return Err(ExchangeError::BadResponse(
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
                            .map_err(ExchangeError::BadResponse)?;
                            Parsed::Head(meta, n)
                        }
                    }
                    Ok(httparse::Status::Partial) if conn.buf.len() > MAX_HEAD => {
                        return Err(ExchangeError::BadResponse("head larger than 64 KiB"));
                    }
                    Ok(httparse::Status::Partial) => Parsed::More,
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(ExchangeError::BadResponse("more than 100 headers"));
                    }
                    Err(_) => return Err(ExchangeError::BadResponse("not an HTTP/1.x response")),
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

/// Convenience for callers holding an `Arc<Proxy>`.
pub async fn serve(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    info: Arc<ConnInfo>,
    stop: CancellationToken,
    header_timeout: Duration,
) -> Outcome {
    proxy
        .serve_http1(stream, &info, &stop, header_timeout)
        .await
}
