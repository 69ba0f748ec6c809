//! Request heads on the fast path: decides whether a parsed head is one the fast path
//! serves (everything else goes to the general engine), and writes the head the backend
//! receives: hop-by-hop headers dropped, `X-Forwarded-*`, `X-Request-Id` and
//! `X-Request-Start` added, exactly as the general engine does.

use httparse::Header;
use smallvec::SmallVec;

use super::names::{self, Name};
use crate::proxy::policy::{self, STICKY_COOKIE};

/// Request bodies up to this size are read whole before a backend is contacted, so a
/// retry can resend them; larger ones are streamed by the general engine.
pub const MAX_BODY: u64 = 64 * 1024;

/// What to do with one parsed request head.
pub enum Plan<'a> {
    Fast(Fast<'a>),
    /// Valid, but for the general engine (HTTP/1.0, upgrades, `Expect`, chunked or large
    /// request bodies, absolute-form targets, `CONNECT`).
    Fallback,
    /// Malformed: answer 400 naming the problem, then close.
    Bad(&'static str),
}

/// A request the fast path serves, borrowing from the received head.
pub struct Fast<'a> {
    pub method: &'a str,
    /// Path and query as received (origin form).
    pub target: &'a str,
    /// The path alone, for route lookup.
    pub path: &'a str,
    /// The `Host` header, trimmed; `None` when missing or blank.
    pub authority: Option<&'a str>,
    pub content_length: u64,
    /// The client asked to close after this response.
    pub close: bool,
    pub is_head: bool,
    /// A usable incoming `X-Request-Id` (non-empty, at most 200 visible characters).
    pub request_id: Option<&'a str>,
    /// The sticky-session cookie's value.
    pub sticky: Option<&'a str>,
    /// The first non-blank `X-Forwarded-For`.
    forwarded_for: Option<&'a [u8]>,
    has_proto: bool,
    has_forwarded_host: bool,
    has_start: bool,
    /// Header names the `Connection` header lists (hop-by-hop for this message).
    connection_named: SmallVec<[&'a [u8]; 4]>,
}

pub fn classify<'a>(
    method: &'a str,
    target: &'a str,
    version: u8,
    headers: &[Header<'a>],
) -> Plan<'a> {
    if version != 1 || method == "CONNECT" || !target.starts_with('/') {
        return Plan::Fallback;
    }
    let mut f = Fast {
        method,
        target,
        path: target.split_once('?').map_or(target, |(p, _)| p),
        authority: None,
        content_length: 0,
        close: false,
        is_head: method == "HEAD",
        request_id: None,
        sticky: None,
        forwarded_for: None,
        has_proto: false,
        has_forwarded_host: false,
        has_start: false,
        connection_named: SmallVec::new(),
    };
    let mut seen_host = false;
    let mut seen_length: Option<u64> = None;
    let mut seen_request_id = false;
    for h in headers {
        match names::classify(h.name) {
            Name::Host if !seen_host => {
                seen_host = true;
                f.authority = std::str::from_utf8(h.value)
                    .ok()
                    .map(str::trim)
                    .filter(|a| !a.is_empty());
            }
            Name::ContentLength => {
                let Some(n) = names::content_length(h.value) else {
                    return Plan::Bad("invalid Content-Length header (digits only)");
                };
                if seen_length.is_some_and(|m| m != n) {
                    return Plan::Bad("conflicting Content-Length headers");
                }
                seen_length = Some(n);
            }
            Name::TransferEncoding | Name::Expect | Name::Upgrade => return Plan::Fallback,
            Name::Connection => {
                for t in names::tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        f.close = true;
                    } else if t.eq_ignore_ascii_case(b"upgrade") {
                        return Plan::Fallback;
                    } else if !t.eq_ignore_ascii_case(b"keep-alive")
                        // The body follows the head in the same write: a backend head
                        // without the length would read the body as the next request.
                        && !t.eq_ignore_ascii_case(b"content-length")
                    {
                        f.connection_named.push(t);
                    }
                }
            }
            Name::XForwardedFor if f.forwarded_for.is_none() => {
                let v = h.value.trim_ascii();
                if !v.is_empty() {
                    f.forwarded_for = Some(v);
                }
            }
            Name::XForwardedProto => f.has_proto = true,
            Name::XForwardedHost => f.has_forwarded_host = true,
            Name::XRequestStart => f.has_start = true,
            Name::XRequestId if !seen_request_id => {
                seen_request_id = true;
                f.request_id = usable_request_id(h.value);
            }
            Name::Cookie if f.sticky.is_none() => f.sticky = sticky_cookie(h.value),
            _ => {}
        }
    }
    f.content_length = seen_length.unwrap_or(0);
    if f.content_length > MAX_BODY {
        return Plan::Fallback;
    }
    Plan::Fast(f)
}

/// An incoming id the policy keeps; here it must also be visible ASCII to be logged and
/// echoed as it came.
fn usable_request_id(v: &[u8]) -> Option<&str> {
    if !policy::keeps_request_id(v) || !v.iter().all(|b| (0x20..0x7f).contains(b)) {
        return None;
    }
    std::str::from_utf8(v).ok()
}

fn sticky_cookie(v: &[u8]) -> Option<&str> {
    std::str::from_utf8(v)
        .ok()?
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == STICKY_COOKIE)
        .map(|(_, v)| v.trim())
}

/// Per-connection facts the backend head needs.
pub struct Forwarding<'a> {
    pub client_ip: &'a [u8],
    pub scheme: &'a str,
    pub request_id: &'a [u8],
    /// `X-Request-Start` value (Unix milliseconds).
    pub start_ms: u64,
}

/// Writes the head sent to the backend (HTTP/1.1, origin form) into `out`.
pub fn write_backend_head(
    f: &Fast<'_>,
    authority: &str,
    headers: &[Header<'_>],
    fw: &Forwarding<'_>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(f.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(f.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        let name = names::classify(h.name);
        let skip = match name {
            Name::Host | Name::XForwardedFor | Name::XRequestId => true,
            Name::Te => !h.value.trim_ascii().eq_ignore_ascii_case(b"trailers"),
            n => names::is_hop_by_hop(n),
        };
        if skip
            || f.connection_named
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
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(prev) = f.forwarded_for {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(fw.client_ip);
    if !f.has_proto {
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(fw.scheme.as_bytes());
    }
    if !f.has_forwarded_host {
        out.extend_from_slice(b"\r\nx-forwarded-host: ");
        out.extend_from_slice(authority.as_bytes());
    }
    if !f.has_start {
        out.extend_from_slice(b"\r\nx-request-start: ");
        out.extend_from_slice(itoa::Buffer::new().format(fw.start_ms).as_bytes());
    }
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(fw.request_id);
    out.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], f: impl FnOnce(Plan<'_>, &[Header<'_>])) {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(raw).unwrap().is_complete());
        let plan = classify(
            req.method.unwrap(),
            req.path.unwrap(),
            req.version.unwrap(),
            req.headers,
        );
        f(plan, req.headers)
    }

    #[test]
    fn backend_head_rewrites_like_the_general_engine() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost:  Shop.example:8080 \r\nConnection: keep-alive, X-Hop\r\n\
            X-Hop: 1\r\nX-Forwarded-For: 10.0.0.1\r\nTE: gzip\r\nProxy-Authorization: x\r\n\
            Content-Length: 2\r\nX-Request-Id: rid-1\r\nCookie: a=1; __VCAP_ID=i-2\r\nX-Kept: y\r\n\r\nok";
        parse(raw, |plan, headers| {
            let Plan::Fast(f) = plan else {
                panic!("fast path expected")
            };
            assert_eq!(f.path, "/a");
            assert_eq!(f.content_length, 2);
            assert_eq!(f.sticky, Some("i-2"));
            assert_eq!(f.request_id, Some("rid-1"));
            assert!(!f.close);
            let authority = f.authority.unwrap();
            let mut out = Vec::new();
            write_backend_head(
                &f,
                authority,
                headers,
                &Forwarding {
                    client_ip: b"127.0.0.1",
                    scheme: "http",
                    request_id: b"rid-1",
                    start_ms: 42,
                },
                &mut out,
            );
            let text = String::from_utf8(out).unwrap();
            assert_eq!(
                text,
                "POST /a?b=1 HTTP/1.1\r\nhost: Shop.example:8080\r\nContent-Length: 2\r\n\
                 Cookie: a=1; __VCAP_ID=i-2\r\nX-Kept: y\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\n\
                 x-forwarded-proto: http\r\nx-forwarded-host: Shop.example:8080\r\n\
                 x-request-start: 42\r\nx-request-id: rid-1\r\n\r\n"
            );
        });
    }

    #[test]
    fn unusual_requests_go_to_the_general_engine() {
        for raw in [
            &b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"[..],
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 70000\r\n\r\n",
        ] {
            parse(raw, |plan, _| {
                assert!(
                    matches!(plan, Plan::Fallback),
                    "{}",
                    String::from_utf8_lossy(raw)
                )
            });
        }
    }

    #[test]
    fn bad_lengths_are_named() {
        parse(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            |plan, _| assert!(matches!(plan, Plan::Bad(m) if m.contains("conflicting"))),
        );
        parse(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            |plan, _| assert!(matches!(plan, Plan::Bad(m) if m.contains("Content-Length"))),
        );
    }

    /// Found by the `router_http_head` fuzz target (fuzz/regressions/router_http_head/).
    #[test]
    fn a_connection_header_cannot_drop_the_body_length() {
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok";
        parse(raw, |plan, headers| {
            let Plan::Fast(f) = plan else {
                panic!("fast path expected")
            };
            let mut out = Vec::new();
            let fw = Forwarding {
                client_ip: b"127.0.0.1",
                scheme: "http",
                request_id: b"r",
                start_ms: 1,
            };
            write_backend_head(&f, "a", headers, &fw, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("\r\nContent-Length: 2\r\n"), "{text}");
            assert!(!text.to_ascii_lowercase().contains("connection"), "{text}");
        });
    }

    #[test]
    fn close_and_missing_host_are_seen() {
        parse(
            b"GET / HTTP/1.1\r\nConnection: close\r\nX-Request-Id: \r\n\r\n",
            |plan, _| {
                let Plan::Fast(f) = plan else { panic!() };
                assert!(f.close);
                assert!(f.authority.is_none());
                assert!(f.request_id.is_none());
            },
        );
    }
}
