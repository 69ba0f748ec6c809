//! TLS termination: SNI picks the certificate, ALPN offers h2, files reload live.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_router::tls::CertPair;
use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

struct Issued {
    der: CertificateDer<'static>,
    pair: CertPair,
}

fn issue(dir: &Path, name: &str, file: &str) -> Issued {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let cert = dir.join(format!("{file}.crt"));
    let key = dir.join(format!("{file}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Issued {
        der: ck.cert.der().clone(),
        pair: CertPair { cert, key },
    }
}

fn connector(trusted: &[&CertificateDer<'static>], alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in trusted {
        roots.add((*c).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

/// Handshakes with `sni` and returns the certificate the router presented.
async fn presented(addr: std::net::SocketAddr, sni: &str) -> Option<CertificateDer<'static>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    // Accept any certificate: this helper only reports which one was offered.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .ok()?;
    tls.get_ref().1.peer_certificates()?.first().cloned()
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn start_tls(pairs: Vec<CertPair>) -> Running {
    start_router(berth_testkit::temp_dir(), |c| {
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls_certs = pairs;
        c.tls_reload_interval = Duration::from_millis(50);
    })
    .await
}

#[tokio::test]
async fn sni_selects_the_certificate_and_https_is_forwarded() {
    let dir = berth_testkit::temp_dir();
    let a = issue(dir.path(), "a.example", "a");
    let b = issue(dir.path(), "b.example", "b");
    let be = backend("secure").await;
    let r = start_tls(vec![a.pair.clone(), b.pair.clone()]).await;
    r.handle.set_routes(vec![
        entry("a.example", &[be.addr]),
        entry("b.example", &[be.addr]),
    ]);
    let https = r.handle.https_addr().unwrap();

    assert_eq!(presented(https, "a.example").await.unwrap(), a.der);
    assert_eq!(presented(https, "b.example").await.unwrap(), b.der);
    // Unknown name: the first certificate.
    assert_eq!(presented(https, "other.example").await.unwrap(), a.der);

    // A verifying client, HTTP/1.1 over TLS.
    let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
    let mut tls = connector(&[&b.der], &[b"http/1.1"])
        .connect(ServerName::try_from("b.example").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /hi HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(r#""x-forwarded-proto":"https""#), "{out}");
}

#[tokio::test]
async fn alpn_negotiates_http2_over_tls() {
    let dir = berth_testkit::temp_dir();
    let a = issue(dir.path(), "a.example", "a");
    let be = backend("h2tls").await;
    let r = start_tls(vec![a.pair.clone()]).await;
    r.handle.set_routes(vec![entry("a.example", &[be.addr])]);
    let tcp = tokio::net::TcpStream::connect(r.handle.https_addr().unwrap())
        .await
        .unwrap();
    let tls = connector(&[&a.der], &[b"h2"])
        .connect(ServerName::try_from("a.example").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("https://a.example/x")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("h2tls"));
}

#[tokio::test]
async fn certificates_reload_when_files_change() {
    let dir = berth_testkit::temp_dir();
    let first = issue(dir.path(), "a.example", "a");
    let r = start_tls(vec![first.pair.clone()]).await;
    let https = r.handle.https_addr().unwrap();
    assert_eq!(presented(https, "a.example").await.unwrap(), first.der);

    // A broken write keeps the old certificate in service...
    std::fs::write(&first.pair.cert, b"garbage").unwrap();
    assert!(r.handle.reload_tls().is_err());
    assert_eq!(presented(https, "a.example").await.unwrap(), first.der);

    // ...and a renewed pair is picked up without a restart.
    let renewed = issue(dir.path(), "a.example", "a");
    assert_ne!(renewed.der, first.der);
    berth_testkit::wait_until("renewed certificate served", WAIT, || {
        let want = renewed.der.clone();
        async move { presented(https, "a.example").await == Some(want) }
    })
    .await;
}

#[tokio::test]
async fn unreadable_certificates_fail_start_naming_the_file() {
    let dir = berth_testkit::temp_dir();
    let pair = CertPair {
        cert: PathBuf::from("/nonexistent/x.crt"),
        key: dir.path().join("k"),
    };
    let mut cfg = berth_router::RouterConfig::for_test(dir.path());
    cfg.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.tls_certs = vec![pair];
    let shutdown = berth_util::shutdown::Shutdown::new();
    let err = berth_router::start(cfg, &shutdown)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/x.crt"), "{err}");
    shutdown.trigger();
}
