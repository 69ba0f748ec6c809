//! A mutual-TLS listener for tonic: a tokio-rustls acceptor in front of a gRPC server.
//!
//! Each accepted TCP connection does its handshake in its own task (a slow or silent
//! client never holds up the others) and reaches tonic only once the client's
//! certificate verified against the CA. tonic puts the connection's [`PeerCert`] into
//! every request's extensions, where the service reads who the peer is. Every handshake
//! takes the config current at that moment (see [`crate::ReloadingTls`]), so a reloaded
//! certificate is used by new connections while established ones keep theirs.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::Identity;

/// Time a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for tonic to take them.
const BACKLOG: usize = 64;

/// Who is at the other end of a TLS connection: the identity read from its verified
/// certificate, or why none could be read.
#[derive(Debug, Clone)]
pub struct PeerCert {
    pub remote: SocketAddr,
    pub identity: Result<Identity, String>,
}

/// Serves `router` on `listener` until `cancel`: over mutual TLS with the current config
/// of `tls` when given (every handshake verified against the CA), in clear otherwise.
/// `link` names the listener in logs. The one way a role serves a gRPC listener.
pub async fn serve(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    link: &'static str,
    tls: Option<Arc<crate::ReloadingTls>>,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    match tls {
        Some(tls) => {
            let incoming = incoming(listener, link, move || tls.mutual_server(), cancel.clone());
            router
                .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
                .await
        }
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            router
                .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
                .await
        }
    }
}

/// A verified TLS connection, as tonic serves it (`serve_with_incoming`).
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    peer: PeerCert,
}

/// The stream of verified connections accepted on `listener` until `cancel`. `link`
/// names the link in log lines (`agent TLS handshake refused`); `config` gives the server
/// config for each new handshake: `move || tls.mutual_server()` for a reloading one.
pub fn incoming(
    listener: TcpListener,
    link: &'static str,
    config: impl Fn() -> Arc<ServerConfig> + Send + Sync + 'static,
    cancel: CancellationToken,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: pass, try again.
                        tracing::warn!("{link} accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = cancel.cancelled() => return,
                // tonic stopped taking connections.
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(config());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let identity = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .ok_or_else(|| "no client certificate".to_string())
                            .and_then(|leaf| crate::identity_of(leaf).map_err(|e| e.to_string()));
                        let peer = PeerCert { remote, identity };
                        let _ = tx.send(Ok(TlsConn { stream, peer })).await;
                    }
                    // A refused certificate ends here, before any gRPC.
                    Ok(Err(e)) => tracing::warn!(%remote, "{link} TLS handshake refused: {e}"),
                    Err(_) => tracing::warn!(%remote, "{link} TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

impl TlsConn {
    pub fn peer(&self) -> &PeerCert {
        &self.peer
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerCert;
    fn connect_info(&self) -> PeerCert {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
