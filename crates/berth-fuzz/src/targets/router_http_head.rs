//! Request heads on the router's HTTP/1.1 fast path: parsed with `httparse` as
//! `serve_http1` does (the same header limit), judged by `request::classify`, and for a
//! fast-path request rewritten by `write_backend_head` into the head the backend gets.

use crate::within;
use berth_router::proxy::fast::MAX_HEADERS;
use berth_router::proxy::fast::request::{
    Forwarding, MAX_BODY, Plan, classify, write_backend_head,
};

/// Never forwarded as received (RFC 9110 §7.6.1); `TE: trailers` is the one kept.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// One input: parsed, and what came out checked against what must hold.
pub fn run(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = req.parse(data) else {
        return;
    };
    let head = &data[..len];
    let (method, target, version) = (
        req.method.unwrap_or(""),
        req.path.unwrap_or(""),
        req.version.unwrap_or(0),
    );
    let f = match classify(method, target, version, req.headers) {
        Plan::Fast(f) => f,
        Plan::Fallback => return,
        Plan::Bad(why) => {
            assert!(
                why.contains("Content-Length"),
                "a 400 that names nothing: {why}"
            );
            return;
        }
    };
    // Every part of an accepted head is a slice of the bytes received.
    for part in [f.method, f.target, f.path]
        .into_iter()
        .chain(f.authority)
        .chain(f.request_id)
        .chain(f.sticky)
    {
        assert!(
            within(head, part.as_bytes()),
            "{part:?} is not from the head"
        );
    }
    assert!(f.target.starts_with('/') && f.target.starts_with(f.path));
    assert!(!f.path.contains('?'));
    assert!(f.content_length <= MAX_BODY);
    assert_eq!(f.is_head, f.method == "HEAD");
    assert!(f.authority.is_none_or(|a| !a.is_empty() && a.trim() == a));
    assert!(
        f.request_id
            .is_none_or(|r| !r.is_empty() && r.bytes().all(|b| (0x20..0x7f).contains(&b)))
    );

    // The head sent on is one well-formed HTTP/1.1 request.
    let authority = f.authority.unwrap_or("fallback.example");
    let mut out = Vec::new();
    let fw = Forwarding {
        client_ip: b"192.0.2.7",
        scheme: "http",
        request_id: b"fuzz-1",
        start_ms: 1,
    };
    write_backend_head(&f, authority, req.headers, &fw, &mut out);
    let mut sent = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
    let mut back = httparse::Request::new(&mut sent);
    match back.parse(&out) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, out.len(), "bytes after the head"),
        other => panic!(
            "the backend head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
    assert_eq!(back.method, Some(f.method));
    assert_eq!(back.path, Some(f.target));
    assert_eq!(back.version, Some(1));
    let count = |name: &str| {
        back.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    };
    assert_eq!(count("host"), 1);
    assert_eq!(count("x-forwarded-for"), 1);
    assert_eq!(count("x-request-id"), 1);
    // The body follows the head in the same write: without its length the backend would
    // read it as the next request.
    assert!(
        f.content_length == 0 || count("content-length") > 0,
        "the body's length was dropped"
    );
    for h in back.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        assert!(
            !HOP_BY_HOP.contains(&name.as_str()),
            "hop-by-hop {name} forwarded"
        );
        if name == "te" {
            assert!(h.value.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
        if name == "host" {
            assert_eq!(h.value, authority.as_bytes());
        }
        if name == "content-length" {
            let n: u64 = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.parse().ok())
                .expect("a checked length");
            assert_eq!(n, f.content_length);
        }
    }
    // Headers the client's `Connection` named are hop-by-hop for this message too.
    for c in req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
    {
        for token in c.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.is_empty()
                || token.eq_ignore_ascii_case(b"close")
                || token.eq_ignore_ascii_case(b"keep-alive")
            {
                continue;
            }
            let named = std::str::from_utf8(token).unwrap_or("");
            let forwarded = back
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(named));
            // Ours, added whatever the client sent, and the body's length, which framing
            // needs whatever Connection says.
            let ours = [
                "content-length",
                "host",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-request-start",
                "x-request-id",
            ];
            assert!(
                !forwarded || ours.contains(&named.to_ascii_lowercase().as_str()),
                "{named} forwarded though Connection named it"
            );
        }
    }
}
