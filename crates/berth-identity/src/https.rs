//! One port for HTTPS and for plain HTTP that never leaves the machine.
//!
//! The first byte a client sends decides: a TLS handshake record (0x16, the ClientHello)
//! is served HTTPS; anything else is plain HTTP, served only when the client is on
//! loopback (local tooling, `berth dev`, health checks on the node keep working without
//! certificates) and otherwise answered `400` naming the `https://` URL, so a token is
//! never read from a cleartext request that crossed a network. [`HttpsListener`] is an
//! axum [`Listener`]: `axum::serve` (or any accept loop) takes its connections.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Time a client has to send its first byte and finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections sorted out and waiting for the server to take them.
const BACKLOG: usize = 64;
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// What a connection gets, by its first byte and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Tls,
    Plain,
    /// Plain HTTP from off the machine: answered 400 and closed.
    Refuse,
}

/// The decision, alone: TLS whoever sends it, plain HTTP only from loopback.
pub fn route(first_byte: u8, peer: IpAddr) -> Route {
    if first_byte == TLS_HANDSHAKE {
        Route::Tls
    } else if peer.to_canonical().is_loopback() {
        Route::Plain
    } else {
        Route::Refuse
    }
}

/// The whole answer to plain HTTP from off the machine, for the port at `local`.
pub fn refusal(local: SocketAddr) -> String {
    let body = format!(
        "this port takes HTTPS from other machines (plain HTTP only from loopback): use https://{local}\n"
    );
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A connection as the HTTP server reads it: TLS, or plain from loopback.
pub enum HttpStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl HttpStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, HttpStream::Tls(_))
    }
}

/// The listener of a port that serves both (see the module docs).
pub struct HttpsListener {
    rx: mpsc::Receiver<(HttpStream, SocketAddr)>,
    local: SocketAddr,
}

impl HttpsListener {
    /// Takes over `listener` until `cancel`; `config` gives the server config of each
    /// new handshake (`move || tls.https_server()` for a reloading one).
    pub fn new(
        listener: TcpListener,
        config: impl Fn() -> Arc<ServerConfig> + Send + Sync + 'static,
        cancel: CancellationToken,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors and the like: pass, try again.
                            tracing::warn!(%local, "accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = cancel.cancelled() => return,
                    _ = tx.closed() => return,
                };
                let _ = tcp.set_nodelay(true);
                let config = config();
                let tx = tx.clone();
                // Each connection sorts itself out in its own task: a slow or silent
                // client never holds up the others.
                tokio::spawn(async move {
                    if let Some(stream) = sort(tcp, peer, local, config).await {
                        let _ = tx.send((stream, peer)).await;
                    }
                });
            }
        });
        Ok(HttpsListener { rx, local })
    }
}

/// Reads the first byte and does what [`route`] says; `None` when the connection ends
/// here (refused, timed out, handshake failed).
pub async fn sort(
    tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    config: Arc<ServerConfig>,
) -> Option<HttpStream> {
    let work = async {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await.ok()? == 0 {
            return None;
        }
        match route(first[0], peer.ip()) {
            Route::Tls => match TlsAcceptor::from(config).accept(tcp).await {
                Ok(tls) => Some(HttpStream::Tls(Box::new(tls))),
                Err(e) => {
                    tracing::debug!(%peer, "HTTPS handshake failed: {e}");
                    None
                }
            },
            Route::Plain => Some(HttpStream::Plain(tcp)),
            Route::Refuse => {
                tracing::debug!(%peer, "plain HTTP from off loopback refused");
                refuse(tcp, local).await;
                None
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            tracing::debug!(%peer, "HTTP(S) client sent nothing in time");
            None
        })
}

async fn refuse(mut tcp: TcpStream, local: SocketAddr) {
    // Read (some of) the request first, and drain after: closing with unread bytes sends
    // a reset, and the client may never see the answer.
    let mut buf = [0u8; 8192];
    let _ = tcp.read(&mut buf).await;
    let _ = tcp.write_all(refusal(local).as_bytes()).await;
    let _ = tcp.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

impl Listener for HttpsListener {
    type Io = HttpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (HttpStream, SocketAddr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The accept task stopped (shutdown): no more connections, ever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl AsyncRead for HttpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            HttpStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HttpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HttpStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            HttpStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpStream::Plain(s) => Pin::new(s).poll_flush(cx),
            HttpStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            HttpStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HttpStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            HttpStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            HttpStream::Plain(s) => s.is_write_vectored(),
            HttpStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const OUTSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));

    #[test]
    fn a_client_hello_is_tls_from_anywhere() {
        assert_eq!(route(0x16, OUTSIDE), Route::Tls);
        assert_eq!(route(0x16, Ipv4Addr::LOCALHOST.into()), Route::Tls);
    }

    #[test]
    fn plain_http_is_served_from_loopback_only() {
        for local in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(127, 3, 2, 1)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            // An IPv4 loopback client on a dual-stack socket.
            "::ffff:127.0.0.1".parse().unwrap(),
        ] {
            assert_eq!(route(b'G', local), Route::Plain, "{local}");
        }
        for outside in [
            OUTSIDE,
            "::ffff:10.0.0.7".parse().unwrap(),
            "fe80::1".parse().unwrap(),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ] {
            assert_eq!(route(b'G', outside), Route::Refuse, "{outside}");
            assert_eq!(route(b'P', outside), Route::Refuse, "{outside}");
        }
    }

    #[test]
    fn the_refusal_is_a_complete_400_naming_the_https_url() {
        let local: SocketAddr = "10.0.0.5:7070".parse().unwrap();
        let answer = refusal(local);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(body.contains("use https://10.0.0.5:7070"), "{body}");
        let v6: SocketAddr = "[fd00::5]:7070".parse().unwrap();
        assert!(refusal(v6).contains("https://[fd00::5]:7070"));
    }

    /// A loopback connection pair whose server side is then sorted as if `peer` sent it.
    async fn sorted_as(peer: IpAddr, request: &[u8]) -> (Option<HttpStream>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(local).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(request).await.unwrap();
        let config = unused_config();
        let sorting = tokio::spawn(sort(server, SocketAddr::new(peer, 40000), local, config));
        let stream = sorting.await.unwrap();
        let mut answer = Vec::new();
        if stream.is_none() {
            client.read_to_end(&mut answer).await.unwrap();
        }
        (stream, answer)
    }

    fn unused_config() -> Arc<ServerConfig> {
        let dir = tempfile::tempdir().unwrap();
        crate::create_ca(dir.path()).unwrap();
        let leaf = crate::create_cert(dir.path(), crate::Role::Server, "s1", &[]).unwrap();
        crate::tls::https_config(&crate::TlsFiles {
            cert: leaf.cert,
            key: leaf.key,
            ca: dir.path().join("ca.pem"),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn plain_http_from_off_loopback_gets_the_400_and_loopback_gets_through() {
        let request = b"GET /v1/apps HTTP/1.1\r\nhost: x\r\n\r\n";
        let (stream, answer) = sorted_as(OUTSIDE, request).await;
        assert!(stream.is_none());
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(answer.contains("use https://127.0.0.1:"), "{answer}");

        let (stream, _) = sorted_as(Ipv4Addr::LOCALHOST.into(), request).await;
        let stream = stream.expect("served");
        assert!(!stream.is_tls());
    }
}
