//! Response heads on the fast path: reads the backend's framing and writes the head the
//! client receives (hop-by-hop headers dropped, `X-Request-Id` set, the sticky-session
//! cookie added when needed, `Date` supplied when the backend sent none).

use httparse::Header;
use smallvec::SmallVec;

use super::names::{self, Name};
use crate::proxy::policy::{self, STICKY_COOKIE};

/// How the backend delimits the response body (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: `HEAD`, 1xx, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes; re-framed as chunked for the client.
    Close,
}

#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub status: u16,
    pub framing: Framing,
    /// The backend connection can carry another request once this body is read.
    pub reusable: bool,
}

/// What the client head depends on besides the backend's answer.
pub struct Context<'a> {
    pub request_id: &'a [u8],
    pub is_head: bool,
    pub client_close: bool,
    /// The endpoint's sticky id, and whether the client's cookie named another one
    /// (`policy::restick`).
    pub sticky_id: &'a str,
    pub restick: bool,
    /// Response cookies that start a sticky session.
    pub sticky_cookies: &'a [String],
}

/// Writes the client's response head into `out`. `Err` names what is wrong with the
/// backend's head.
pub fn write_client_head(
    status: u16,
    reason: &str,
    version: u8,
    headers: &[Header<'_>],
    cx: &Context<'_>,
    out: &mut Vec<u8>,
) -> Result<Meta, &'static str> {
    let mut named: SmallVec<[&[u8]; 4]> = SmallVec::new();
    let mut backend_close = version == 0;
    let mut chunked = false;
    let mut length: Option<u64> = None;
    let mut has_date = false;
    let mut sets_sticky = false;
    for h in headers {
        match names::classify(h.name) {
            Name::Connection => {
                for t in names::tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        backend_close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        if version == 0 {
                            backend_close = false;
                        }
                    } else {
                        named.push(t);
                    }
                }
            }
            Name::TransferEncoding => {
                let last = names::tokens(h.value).last();
                if !last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")) {
                    return Err("unsupported Transfer-Encoding (chunked must be last)");
                }
                chunked = true;
            }
            Name::ContentLength => {
                let n = names::content_length(h.value).ok_or("invalid Content-Length")?;
                if length.is_some_and(|m| m != n) {
                    return Err("conflicting Content-Length headers");
                }
                length = Some(n);
            }
            Name::Date => has_date = true,
            Name::SetCookie if !sets_sticky => {
                sets_sticky = sets_cookie(h.value, cx.sticky_cookies)
            }
            _ => {}
        }
    }
    let framing = if cx.is_head || status < 200 || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    // Both framings at once is a smuggling vector: honour chunked, never reuse.
    let reusable = !backend_close && framing != Framing::Close && !(chunked && length.is_some());

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    let reason = if reason.is_empty() {
        http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
    } else {
        reason
    };
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut wrote_length = false;
    for h in headers {
        let name = names::classify(h.name);
        let skip = match name {
            Name::XRequestId => true,
            Name::ContentLength => {
                // The body is re-framed for chunked and close-delimited answers.
                let drop = wrote_length || matches!(framing, Framing::Chunked | Framing::Close);
                wrote_length = true;
                drop
            }
            Name::Te => !h.value.trim_ascii().eq_ignore_ascii_case(b"trailers"),
            n => names::is_hop_by_hop(n),
        };
        if skip
            || named
                .iter()
                .any(|c| c.eq_ignore_ascii_case(h.name.as_bytes()))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(cx.request_id);
    out.extend_from_slice(b"\r\n");
    if cx.restick || sets_sticky {
        out.extend_from_slice(b"set-cookie: ");
        out.extend_from_slice(STICKY_COOKIE.as_bytes());
        out.push(b'=');
        out.extend_from_slice(cx.sticky_id.as_bytes());
        out.extend_from_slice(policy::STICKY_COOKIE_ATTRIBUTES.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        write_date(out);
    }
    if matches!(framing, Framing::Chunked | Framing::Close) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if cx.client_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Meta {
        status,
        framing,
        reusable,
    })
}

fn sets_cookie(value: &[u8], names: &[String]) -> bool {
    std::str::from_utf8(value).is_ok_and(|v| policy::starts_session(v, names))
}

/// `date: <IMF-fixdate>\r\n`, formatted once per second per thread.
pub fn write_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(c.1.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8], cx: &Context<'_>) -> (Result<Meta, &'static str>, String) {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(resp.parse(raw).unwrap().is_complete());
        let mut out = Vec::new();
        let meta = write_client_head(
            resp.code.unwrap(),
            resp.reason.unwrap_or(""),
            resp.version.unwrap(),
            resp.headers,
            cx,
            &mut out,
        );
        (meta, String::from_utf8(out).unwrap())
    }

    fn cx() -> Context<'static> {
        Context {
            request_id: b"rid",
            is_head: false,
            client_close: false,
            sticky_id: "inst-1",
            restick: false,
            sticky_cookies: &[],
        }
    }

    #[test]
    fn framing_follows_the_rfc_order() {
        let (m, text) = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: t=5\r\nDate: d\r\n\r\n",
            &cx(),
        );
        let m = m.unwrap();
        assert_eq!(m.framing, Framing::Length(5));
        assert!(m.reusable);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: d\r\nx-request-id: rid\r\n\r\n"
        );
        let (m, text) = head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &cx(),
        );
        assert_eq!(m.unwrap().framing, Framing::Chunked);
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert!(text.contains("date: "), "{text}");
        let (m, _) = head(b"HTTP/1.1 200 OK\r\n\r\n", &cx());
        let m = m.unwrap();
        assert_eq!(m.framing, Framing::Close);
        assert!(!m.reusable);
        let (m, text) = head(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            &cx(),
        );
        assert_eq!(m.unwrap().framing, Framing::Empty);
        assert!(text.contains("Content-Length: 9"), "{text}");
        let (m, _) = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            &cx(),
        );
        let m = m.unwrap();
        assert_eq!(m.framing, Framing::Chunked);
        assert!(!m.reusable);
    }

    #[test]
    fn bad_backend_heads_are_named() {
        let (m, _) = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", &cx());
        assert!(m.unwrap_err().contains("Transfer-Encoding"));
        let (m, _) = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            &cx(),
        );
        assert!(m.unwrap_err().contains("Content-Length"));
    }

    #[test]
    fn sticky_cookie_and_close() {
        let names = vec!["JSESSIONID".to_string()];
        let c = Context {
            sticky_cookies: &names,
            client_close: true,
            ..cx()
        };
        let (_, text) = head(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=a; Path=/\r\nContent-Length: 0\r\nx-request-id: theirs\r\n\r\n",
            &c,
        );
        assert!(
            text.contains("set-cookie: __VCAP_ID=inst-1; Path=/; HttpOnly\r\n"),
            "{text}"
        );
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(!text.contains("theirs"), "{text}");
    }
}
