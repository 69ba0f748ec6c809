//! Certificates that follow their files: the current rustls configs of one side of a
//! link, rebuilt when the files change (modification times polled) or at once on SIGHUP.
//!
//! Rotating a certificate is then a file copy, with no restart: every new handshake reads
//! the config current at that moment, while established connections keep the one they
//! were made with. A reload that fails (a half-written file, a key that does not match
//! the certificate) keeps the previous certificates and logs why, so a careless copy never
//! takes a listener down.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::{ClientConfig, ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::tls::{TlsError, TlsFiles, client_config, https_config, server_config};

/// How often the files' modification times are compared when a role does not say.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The configs built from one load of the files.
struct Configs {
    mutual: Arc<ServerConfig>,
    https: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// What a file looked like at the last load: a change of either means "read it again".
type Stamp = Option<(SystemTime, u64)>;

/// The current server and client configs of [`TlsFiles`], swapped atomically on reload.
pub struct ReloadingTls {
    files: TlsFiles,
    current: ArcSwap<Configs>,
    stamps: Mutex<Vec<Stamp>>,
}

impl fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingTls {
    /// Reads the files once; an error here stops the role's start, naming the file.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let stamps = stamps(&files);
        let configs = build(&files)?;
        Ok(Arc::new(ReloadingTls {
            files,
            current: ArcSwap::from_pointee(configs),
            stamps: Mutex::new(stamps),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The mutual-TLS server config (client certificate required, ALPN `h2`): internal
    /// gRPC links.
    pub fn mutual_server(&self) -> Arc<ServerConfig> {
        self.current.load().mutual.clone()
    }

    /// The HTTPS server config (no client certificate: tokens authenticate API users;
    /// ALPN `h2` and `http/1.1`).
    pub fn https_server(&self) -> Arc<ServerConfig> {
        self.current.load().https.clone()
    }

    /// The client config (presents this side's certificate, trusts only the CA).
    pub fn client(&self) -> Arc<ClientConfig> {
        self.current.load().client.clone()
    }

    /// Reads every file again. On error the previous configs stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let now = stamps(&self.files);
        // Remember the times even if the build fails: a half-written file is retried when
        // the next write lands, not logged on every poll.
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = now;
        let configs = build(&self.files)?;
        self.current.store(Arc::new(configs));
        tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded");
        Ok(())
    }

    /// Reloads when any file's modification time or size changed since the last load.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let changed = *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) != stamps(&self.files);
        if changed {
            self.reload()?;
        }
        Ok(changed)
    }

    /// Polls the files every `every` and reloads on SIGHUP, until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(hup) => Some(hup),
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP, certificates reload on change only: {e}");
                None
            }
        };
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                // The error names the file and what is wrong with it, never its content.
                tracing::warn!(error = %e, "TLS reload failed; keeping the previous certificates");
            }
        }
    }
}

fn build(files: &TlsFiles) -> Result<Configs, TlsError> {
    Ok(Configs {
        mutual: server_config(files)?,
        https: https_config(files)?,
        client: client_config(files)?,
    })
}

fn stamps(files: &TlsFiles) -> Vec<Stamp> {
    [&files.cert, &files.key, &files.ca]
        .into_iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::pki::{CertFiles, create_ca, create_cert};
    use crate::{Role, SERVER_NAME, server_name};

    /// The certificate a client sees in a handshake run in memory (no sockets).
    fn served_leaf(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Vec<u8> {
        let mut c = rustls::ClientConnection::new(client, server_name(SERVER_NAME)).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        while c.is_handshaking() || s.is_handshaking() {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            let mut rd = wire.as_slice();
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets().unwrap();
            }
            let mut wire = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut wire).unwrap();
            }
            let mut rd = wire.as_slice();
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets().unwrap();
            }
        }
        c.peer_certificates().unwrap()[0].to_vec()
    }

    fn der(pem: &std::path::Path) -> Vec<u8> {
        let bytes = std::fs::read(pem).unwrap();
        rustls_pemfile::certs(&mut bytes.as_slice())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    /// Overwrites `to` with `from`, dated later so the change is seen even within the
    /// file system's time granularity.
    fn replace(from: &std::path::Path, to: &std::path::Path) {
        std::fs::write(to, std::fs::read(from).unwrap()).unwrap();
        bump(to);
    }

    fn bump(path: &std::path::Path) {
        let later = SystemTime::now() + Duration::from_secs(30);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(later)
            .unwrap();
    }

    struct Pki {
        _dir: tempfile::TempDir,
        server: TlsFiles,
        next: CertFiles,
        client: Arc<ClientConfig>,
    }

    fn pki() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = create_ca(dir.path()).unwrap().cert;
        let first = create_cert(dir.path(), Role::Server, "s1", &[]).unwrap();
        let next = create_cert(dir.path(), Role::Server, "s2", &[]).unwrap();
        let agent = create_cert(dir.path(), Role::Agent, "n1", &[]).unwrap();
        let client = client_config(&TlsFiles {
            cert: agent.cert,
            key: agent.key,
            ca: ca.clone(),
        })
        .unwrap();
        Pki {
            _dir: dir,
            server: TlsFiles {
                cert: first.cert,
                key: first.key,
                ca,
            },
            next,
            client,
        }
    }

    #[test]
    fn a_replaced_pair_is_served_after_the_next_poll() {
        let pki = pki();
        let tls = ReloadingTls::load(pki.server.clone()).unwrap();
        let first = der(&pki.server.cert);
        assert_eq!(served_leaf(tls.mutual_server(), pki.client.clone()), first);
        assert!(!tls.reload_if_changed().unwrap(), "nothing changed yet");

        replace(&pki.next.cert, &pki.server.cert);
        replace(&pki.next.key, &pki.server.key);
        assert!(tls.reload_if_changed().unwrap());
        let next = der(&pki.next.cert);
        assert_ne!(first, next);
        assert_eq!(served_leaf(tls.mutual_server(), pki.client.clone()), next);
        // The HTTPS config follows the same files (it asks for no client certificate).
        let anonymous = anonymous_client(&pki.server.ca);
        assert_eq!(served_leaf(tls.https_server(), anonymous), next);
        assert!(
            !tls.reload_if_changed().unwrap(),
            "reloaded once per change"
        );
    }

    fn anonymous_client(ca: &std::path::Path) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let bytes = std::fs::read(ca).unwrap();
        for cert in rustls_pemfile::certs(&mut bytes.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        Arc::new(
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    #[test]
    fn a_broken_replacement_keeps_the_previous_certificate() {
        let pki = pki();
        let tls = ReloadingTls::load(pki.server.clone()).unwrap();
        let first = der(&pki.server.cert);

        // Half-written: the certificate file cut short.
        let whole = std::fs::read(&pki.server.cert).unwrap();
        std::fs::write(&pki.server.cert, &whole[..whole.len() / 2]).unwrap();
        bump(&pki.server.cert);
        let err = tls.reload_if_changed().unwrap_err().to_string();
        assert!(err.contains("--tls-cert-file"), "{err}");
        assert_eq!(served_leaf(tls.mutual_server(), pki.client.clone()), first);
        // A failed reload is not retried on every poll, only on the next change.
        assert!(!tls.reload_if_changed().unwrap());

        // A new certificate whose key was not copied (yet): the pair does not match.
        replace(&pki.next.cert, &pki.server.cert);
        let err = tls.reload().unwrap_err().to_string();
        assert!(err.contains("do not belong together"), "{err}");
        assert!(
            !err.contains("PRIVATE KEY"),
            "no key material in errors: {err}"
        );
        assert_eq!(served_leaf(tls.mutual_server(), pki.client.clone()), first);

        // Once the key lands too, the next poll takes the pair.
        replace(&pki.next.key, &pki.server.key);
        assert!(tls.reload_if_changed().unwrap());
        assert_eq!(
            served_leaf(tls.mutual_server(), pki.client.clone()),
            der(&pki.next.cert)
        );
    }

    #[tokio::test]
    async fn watch_polls_until_stopped() {
        let pki = pki();
        let tls = ReloadingTls::load(pki.server.clone()).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(tls.clone().watch(Duration::from_millis(20), stop.clone()));
        replace(&pki.next.cert, &pki.server.cert);
        replace(&pki.next.key, &pki.server.key);
        let next = der(&pki.next.cert);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while served_leaf(tls.mutual_server(), pki.client.clone()) != next {
            assert!(tokio::time::Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap();
    }
}
