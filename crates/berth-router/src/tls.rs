//! TLS termination with SNI: certificate/key pairs from PEM files, chosen per handshake by
//! the name the client asks for (first pair when no SNI or no match). The set reloads
//! without restart when a file's modification time changes (polled) or on demand (SIGHUP).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::Error;

/// One certificate chain and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    leaf: CertificateDer<'static>,
}

struct SniResolver {
    pairs: Vec<Loaded>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SniResolver({} certificates)", self.pairs.len())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello.server_name().and_then(|name| {
            let name = ServerName::try_from(name).ok()?;
            self.pairs.iter().find(|p| {
                webpki::EndEntityCert::try_from(&p.leaf)
                    .and_then(|c| c.verify_is_valid_for_subject_name(&name))
                    .is_ok()
            })
        });
        by_name.or(self.pairs.first()).map(|p| p.key.clone())
    }
}

/// The current TLS acceptor, swapped atomically on reload.
pub struct TlsAcceptorSource {
    pairs: Vec<CertPair>,
    current: ArcSwap<TlsAcceptor>,
    stamps: std::sync::Mutex<Vec<Option<SystemTime>>>,
}

impl TlsAcceptorSource {
    pub fn load(pairs: Vec<CertPair>) -> Result<Self, Error> {
        let acceptor = build(&pairs)?;
        let stamps = stamps(&pairs);
        Ok(TlsAcceptorSource {
            pairs,
            current: ArcSwap::from_pointee(acceptor),
            stamps: std::sync::Mutex::new(stamps),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        (**self.current.load()).clone()
    }

    /// Re-reads every file. On error the previous certificates stay in use.
    pub fn reload(&self) -> Result<(), Error> {
        let acceptor = build(&self.pairs)?;
        self.current.store(Arc::new(acceptor));
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps(&self.pairs);
        tracing::info!(certificates = self.pairs.len(), "TLS certificates reloaded");
        Ok(())
    }

    /// Reloads when any file's modification time changed since the last load.
    pub fn reload_if_changed(&self) -> Result<bool, Error> {
        let now = stamps(&self.pairs);
        let changed = {
            let mut seen = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            // Remember the times even if the reload fails: a half-written pair is retried
            // when the next file write lands, not logged on every poll.
            std::mem::replace(&mut *seen, now.clone()) != now
        };
        if changed {
            self.reload()?;
        }
        Ok(changed)
    }

    /// Polls file times every `every` and reloads on SIGHUP, until `stop`.
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(every);
        loop {
            let hup_fired = async {
                match hup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.reload_if_changed().map(|_| ()),
                _ = hup_fired => self.reload(),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "TLS reload failed; keeping the previous certificates");
            }
        }
    }
}

fn stamps(pairs: &[CertPair]) -> Vec<Option<SystemTime>> {
    pairs
        .iter()
        .flat_map(|p| [&p.cert, &p.key])
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

fn build(pairs: &[CertPair]) -> Result<TlsAcceptor, Error> {
    if pairs.is_empty() {
        return Err(Error::Tls {
            path: PathBuf::new(),
            reason: "no certificate configured; set tls_cert_files and tls_key_files".into(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut loaded = Vec::new();
    for pair in pairs {
        let certs = read_certs(&pair.cert)?;
        let key = read_key(&pair.key)?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| tls_err(&pair.key, format!("unusable private key: {e}")))?;
        let leaf = certs[0].clone();
        let ck = CertifiedKey::new(certs, signing);
        ck.keys_match().map_err(|e| {
            tls_err(
                &pair.key,
                format!("key does not match {}: {e}", pair.cert.display()),
            )
        })?;
        loaded.push(Loaded {
            key: Arc::new(ck),
            leaf,
        });
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&pairs[0].cert, e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { pairs: loaded }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn tls_err(path: &Path, reason: String) -> Error {
    Error::Tls {
        path: path.to_path_buf(),
        reason,
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let data = std::fs::read(path).map_err(|e| tls_err(path, format!("cannot read: {e}")))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(
            path,
            "no CERTIFICATE block; give a PEM certificate chain".into(),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let data = std::fs::read(path).map_err(|e| tls_err(path, format!("cannot read: {e}")))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| tls_err(path, format!("not PEM: {e}")))?
        .ok_or_else(|| tls_err(path, "no PRIVATE KEY block; give a PEM private key".into()))
}
