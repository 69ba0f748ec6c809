//! The HTTP/1.1 fast path's framing, against scripted raw backends and raw clients: what
//! the bytes on both sides look like, not just what a forgiving client library accepts.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a scripted backend answers to one request (head text, body).
type Script = Arc<dyn Fn(&str, &[u8]) -> Answer + Send + Sync>;

struct Answer {
    bytes: Vec<u8>,
    /// Close the connection after answering.
    close: bool,
}

fn answer(bytes: impl Into<Vec<u8>>) -> Answer {
    Answer {
        bytes: bytes.into(),
        close: false,
    }
}

/// Request heads and bodies as a backend received them.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

struct RawBackend {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    /// Request heads and bodies as received.
    seen: Seen,
}

async fn raw_backend(script: Script) -> RawBackend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c, s) = (conns.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let (script, seen) = (script.clone(), s.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some((head, body)) = read_request(&mut stream, &mut buf).await else {
                        return;
                    };
                    let a = script(&head, &body);
                    seen.lock().unwrap().push((head, body));
                    if stream.write_all(&a.bytes).await.is_err() || a.close {
                        return;
                    }
                }
            });
        }
    });
    RawBackend { addr, conns, seen }
}

/// One request head and its `Content-Length` body.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
            while buf.len() < end + 4 + len {
                read_some(s, buf).await?;
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((head, body));
        }
        read_some(s, buf).await?;
    }
}

async fn read_some(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
}

/// A response as the client saw it: head text and the body with chunk framing removed.
#[derive(Debug)]
struct Answered {
    head: String,
    body: Vec<u8>,
    /// The raw body bytes (chunk framing included).
    raw_body: Vec<u8>,
}

impl Answered {
    fn status(&self) -> u16 {
        self.head[9..12].parse().unwrap()
    }
    fn header(&self, name: &str) -> Option<String> {
        header(&self.head, name)
    }
}

/// Reads one response from `s` (`buf` keeps bytes of later ones).
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Answered {
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        read_some(s, buf)
            .await
            .expect("connection closed before a head");
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let status: u16 = head[9..12].parse().unwrap();
    if head_request || status == 204 || status == 304 {
        return Answered {
            head,
            body: Vec::new(),
            raw_body: Vec::new(),
        };
    }
    if let Some(len) = header(&head, "content-length") {
        let len: usize = len.parse().unwrap();
        while buf.len() < len {
            read_some(s, buf).await.expect("body cut short");
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        return Answered {
            head,
            raw_body: body.clone(),
            body,
        };
    }
    assert_eq!(
        header(&head, "transfer-encoding").as_deref(),
        Some("chunked"),
        "{head}"
    );
    let (mut body, mut raw) = (Vec::new(), Vec::new());
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            read_some(s, buf).await.expect("chunk size cut short");
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
        raw.extend(buf.drain(..line_end + 2));
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let e = loop {
                    if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    read_some(s, buf).await.expect("trailers cut short");
                };
                raw.extend(buf.drain(..e + 2));
                if e == 0 {
                    return Answered {
                        head,
                        body,
                        raw_body: raw,
                    };
                }
            }
        }
        while buf.len() < size + 2 {
            read_some(s, buf).await.expect("chunk cut short");
        }
        body.extend_from_slice(&buf[..size]);
        raw.extend(buf.drain(..size + 2));
    }
}

async fn routed(script: Script) -> (TestRouter, RawBackend) {
    let b = raw_backend(script).await;
    let r = router(fast_config()).await;
    r.store
        .set_source("static", vec![entry("f.example", &[b.addr])]);
    (r, b)
}

fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: f.example\r\n\r\n")
}

#[tokio::test]
async fn content_length_answers_reuse_both_connections() {
    let (r, b) = routed(Arc::new(|head: &str, _: &[u8]| {
        let path = head.split(' ').nth(1).unwrap().to_string();
        answer(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Path: yes\r\n\r\n{path}",
            path.len()
        ))
    }))
    .await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..5 {
        let path = format!("/n/{i}");
        s.write_all(get_req(&path).as_bytes()).await.unwrap();
        let got = read_response(&mut s, &mut buf, false).await;
        assert_eq!(got.status(), 200, "{}", got.head);
        assert_eq!(got.body, path.as_bytes());
        assert_eq!(got.header("x-path").as_deref(), Some("yes"));
        assert_eq!(got.header("x-request-id").map(|v| v.len()), Some(36));
        assert!(got.header("date").is_some(), "{}", got.head);
    }
    assert_eq!(
        b.conns.load(Ordering::SeqCst),
        1,
        "one pooled backend connection"
    );
    let seen = b.seen.lock().unwrap();
    assert_eq!(seen.len(), 5);
    assert!(
        seen[0].0.starts_with("GET /n/0 HTTP/1.1\r\n"),
        "{}",
        seen[0].0
    );
    assert_eq!(
        header(&seen[0].0, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn chunked_answers_pass_through_verbatim_with_trailers() {
    const BODY: &str = "4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Sum: 9\r\n\r\n";
    let (r, b) = routed(Arc::new(|_: &str, _: &[u8]| {
        answer(format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n{BODY}"
        ))
    }))
    .await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(get_req("/c").as_bytes()).await.unwrap();
        let got = read_response(&mut s, &mut buf, false).await;
        assert_eq!(got.body, b"wikipedia");
        assert_eq!(got.raw_body, BODY.as_bytes());
        // The hop-by-hop `Trailer` header is dropped like any other.
        assert!(got.header("trailer").is_none(), "{}", got.head);
    }
    assert_eq!(b.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn close_delimited_answers_are_rechunked_and_the_client_stays() {
    let (r, b) = routed(Arc::new(|_: &str, _: &[u8]| Answer {
        bytes: b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end".to_vec(),
        close: true,
    }))
    .await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(get_req("/close").as_bytes()).await.unwrap();
        let got = read_response(&mut s, &mut buf, false).await;
        assert_eq!(got.body, b"until the end");
        assert_eq!(got.header("transfer-encoding").as_deref(), Some("chunked"));
    }
    // Each close-delimited answer used up its backend connection.
    assert_eq!(b.conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn head_answers_carry_no_body() {
    let (r, _b) = routed(Arc::new(|head: &str, _: &[u8]| {
        if head.starts_with("HEAD") {
            answer("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        } else {
            answer("HTTP/1.1 204 No Content\r\n\r\n")
        }
    }))
    .await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: f.example\r\n\r\n")
        .await
        .unwrap();
    let got = read_response(&mut s, &mut buf, true).await;
    assert_eq!(got.header("content-length").as_deref(), Some("1000"));
    s.write_all(get_req("/").as_bytes()).await.unwrap();
    let got = read_response(&mut s, &mut buf, false).await;
    assert_eq!(got.status(), 204);
    assert!(buf.is_empty(), "no stray body bytes: {buf:?}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (r, _b) = routed(Arc::new(|head: &str, body: &[u8]| {
        let path = head.split(' ').nth(1).unwrap();
        let text = format!("{path}:{}", String::from_utf8_lossy(body));
        answer(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        ))
    }))
    .await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let pipelined = "GET /1 HTTP/1.1\r\nHost: f.example\r\n\r\n\
                     POST /2 HTTP/1.1\r\nHost: f.example\r\nContent-Length: 3\r\n\r\nabc\
                     GET /3 HTTP/1.1\r\nHost: f.example\r\n\r\n";
    s.write_all(pipelined.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    for want in ["/1:", "/2:abc", "/3:"] {
        let got = read_response(&mut s, &mut buf, false).await;
        assert_eq!(String::from_utf8_lossy(&got.body), want);
    }
}

#[tokio::test]
async fn a_body_arriving_in_pieces_is_sent_whole() {
    let (r, b) = routed(Arc::new(|_: &str, _: &[u8]| {
        answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    }))
    .await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: f.example\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .unwrap();
    s.flush().await.unwrap();
    // The router waits for the rest before contacting the backend.
    tokio::task::yield_now().await;
    s.write_all(b"world").await.unwrap();
    let mut buf = Vec::new();
    let got = read_response(&mut s, &mut buf, false).await;
    assert_eq!(got.status(), 200);
    assert_eq!(b.seen.lock().unwrap()[0].1, b"helloworld");
}

#[tokio::test]
async fn malformed_heads_get_400_naming_the_problem() {
    let r = router(fast_config()).await;
    for (bad, problem) in [
        ("GET / HTTP/1.1\r\nHo st: x\r\n\r\n", "header name"),
        (
            "GET / HTTP/1.1\r\nHost: f.example\r\nContent-Length: x\r\n\r\n",
            "Content-Length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: f.example\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "conflicting Content-Length",
        ),
    ] {
        let answer = raw(r.addr, bad).await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let lower = answer.to_ascii_lowercase();
        assert!(
            lower.contains("x-berth-router-error: malformed_request"),
            "{answer}"
        );
        assert!(lower.contains("connection: close"), "{answer}");
        assert!(answer.contains(problem), "{problem}: {answer}");
    }
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let r = router(fast_config()).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: f.example\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let answer = raw(r.addr, &big).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(answer.contains("larger than 64 KiB"), "{answer}");
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw(
        r.addr,
        &format!("GET / HTTP/1.1\r\nHost: f.example\r\n{many}\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(answer.contains("more than 100"), "{answer}");
}

#[tokio::test]
async fn an_idle_connection_the_backend_closed_is_not_a_502() {
    // Every answer closes its connection without saying so: the router pools it, finds it
    // closed on the next request and sends that request again on a new connection.
    let (r, b) = routed(Arc::new(|_: &str, _: &[u8]| Answer {
        bytes: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        close: true,
    }))
    .await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..4 {
        s.write_all(get_req("/").as_bytes()).await.unwrap();
        let got = read_response(&mut s, &mut buf, false).await;
        assert_eq!(got.status(), 200, "request {i}: {}", got.head);
    }
    assert_eq!(
        b.seen.lock().unwrap().len(),
        4,
        "each request reached the backend once"
    );
    assert_eq!(r.metrics.bad_gateways.get(), 0);
}

#[tokio::test]
async fn broken_backend_heads_are_502() {
    let (r, _b) = routed(Arc::new(|head: &str, _: &[u8]| {
        if head.contains("/gzip") {
            answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")
        } else {
            answer("NOT HTTP\r\n\r\n")
        }
    }))
    .await;
    for path in ["/junk", "/gzip"] {
        let got = get(r.addr, "f.example", path).await;
        assert_eq!(got.status, 502, "{path}");
        assert_eq!(got.router_error(), Some("endpoint_failure"), "{path}");
    }
}

#[tokio::test]
async fn unusual_requests_switch_the_connection_to_the_general_engine() {
    let (r, b) = routed(Arc::new(|_: &str, body: &[u8]| {
        answer(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            String::from_utf8_lossy(body)
        ))
    }))
    .await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut buf = Vec::new();
    // Fast, then a body too large to buffer (general engine, streamed) on the same
    // connection, then another plain request the general engine keeps serving.
    s.write_all(get_req("/first").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s, &mut buf, false).await.status(), 200);
    let large = "x".repeat(70_000);
    s.write_all(
        format!("POST /large HTTP/1.1\r\nHost: f.example\r\nContent-Length: 70000\r\n\r\n{large}")
            .as_bytes(),
    )
    .await
    .unwrap();
    let got = read_response(&mut s, &mut buf, false).await;
    assert_eq!(got.body, large.as_bytes(), "{}", got.head);
    s.write_all(get_req("/third").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s, &mut buf, false).await.status(), 200);
    assert_eq!(b.seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn the_access_log_has_a_line_per_fast_request() {
    let b = raw_backend(Arc::new(|_: &str, _: &[u8]| {
        answer("HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello")
    }))
    .await;
    let dir = berth_testkit::temp_dir();
    let log = dir.path().join("access.log");
    let path = log.clone();
    let r = start_router(dir, move |c| {
        c.proxy.access_log = true;
        c.access_log_file = Some(path);
    })
    .await;
    r.handle.set_routes(vec![entry("f.example", &[b.addr])]);
    let got = send(
        r.addr(),
        http::Request::get(format!("http://{}/logged?x=1", r.addr()))
            .header("host", "f.example")
            .header("x-request-id", "log-me"),
        "",
    )
    .await;
    assert_eq!(got.status, 201);
    let want = "GET f.example/logged?x=1 status=201 bytes=5";
    let backend = format!("backend={} request_id=log-me", b.addr);
    berth_testkit::wait_until("access line written", WAIT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let ok = text.contains(want) && text.contains(&backend);
        async move { ok }
    })
    .await;
}

#[tokio::test]
async fn drain_closes_idle_keep_alive_connections() {
    let b = raw_backend(Arc::new(|_: &str, _: &[u8]| {
        answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    }))
    .await;
    // A head deadline far beyond the wait below, so only the drain can close it.
    let r = start_router(berth_testkit::temp_dir(), |c| {
        c.header_read_timeout = std::time::Duration::from_secs(300);
    })
    .await;
    r.handle.set_routes(vec![entry("f.example", &[b.addr])]);
    let mut s = TcpStream::connect(r.addr()).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(get_req("/").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s, &mut buf, false).await.status(), 200);
    // The connection now idles between requests; the drain must close it rather than
    // leave it open (nothing else would: the test's runtime outlives the router).
    r.shutdown.trigger();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?} {rest:?}");
}
