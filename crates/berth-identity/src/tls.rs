//! PEM files into rustls configs for Berth's mutually authenticated links.
//!
//! Both sides trust only the private CA of `--tls-ca-file` (never the system roots) and
//! present their own certificate: a server requires and verifies a client certificate,
//! a client verifies the server for the role-wide name (`server.berth`) whatever address
//! it dialed. Who the verified peer is comes from [`crate::identity_of`]. The mutual
//! configs offer ALPN `h2` (every Berth link on them is gRPC); the HTTPS config
//! ([`https_config`]) asks for no client certificate and offers `h2` and `http/1.1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The name an agent verifies the server's certificate by.
pub const SERVER_NAME: &str = "server.berth";

/// The three files of one side of a link: its certificate chain, its key, the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "TLS needs all three of --tls-cert-file, --tls-key-file and --tls-ca-file (tls_cert_file, tls_key_file, tls_ca_file); {missing} missing"
    )]
    Incomplete { missing: String },
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {path} holds no {what}: {fix}")]
    Empty {
        flag: &'static str,
        path: PathBuf,
        what: &'static str,
        fix: &'static str,
    },
    #[error("{flag} {path}: {reason}")]
    Invalid {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("--tls-cert-file {cert} and --tls-key-file {key} do not belong together: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

const FIX: &str = "make the files with `berth tls ca create` and `berth tls cert create`";

impl TlsFiles {
    /// The three optional settings: all set, none set, or an error naming the missing.
    pub fn from_options(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> Result<Option<TlsFiles>, TlsError> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles { cert, key, ca })),
            (cert, key, ca) => {
                let missing: Vec<&str> = [
                    (cert.is_none(), "--tls-cert-file"),
                    (key.is_none(), "--tls-key-file"),
                    (ca.is_none(), "--tls-ca-file"),
                ]
                .into_iter()
                .filter_map(|(m, flag)| m.then_some(flag))
                .collect();
                Err(TlsError::Incomplete {
                    missing: format!(
                        "{} {}",
                        missing.join(" and "),
                        if missing.len() == 1 { "is" } else { "are" }
                    ),
                })
            }
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config that requires a client certificate signed by the CA.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let roots = Arc::new(load_roots(&files.ca)?);
    let (chain, key) = load_pair(files)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Invalid {
            flag: "--tls-ca-file",
            path: files.ca.clone(),
            reason: e.to_string(),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid_pair(files, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| invalid_pair(files, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// An HTTPS server config: the same certificate, no client certificate asked for (API
/// users authenticate with tokens), HTTP/2 or HTTP/1.1.
pub fn https_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    // The CA is read too, so that a broken CA file fails the same way for every config.
    load_roots(&files.ca)?;
    let (chain, key) = load_pair(files)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid_pair(files, e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid_pair(files, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client config that trusts only the CA and presents its own certificate.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = load_roots(&files.ca)?;
    let (chain, key) = load_pair(files)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid_pair(files, e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| invalid_pair(files, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The name a client verifies a server of `role` by.
pub fn server_name(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).expect("role names are valid DNS names")
}

fn invalid_pair(files: &TlsFiles, e: rustls::Error) -> TlsError {
    TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn certs(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(flag, path)?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            flag,
            path: path.to_path_buf(),
            reason: format!("not PEM: {e} ({FIX})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            flag,
            path: path.to_path_buf(),
            what: "PEM certificate",
            fix: FIX,
        });
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs("--tls-ca-file", path)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            flag: "--tls-ca-file",
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

fn load_pair(
    files: &TlsFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certs("--tls-cert-file", &files.cert)?;
    let bytes = read("--tls-key-file", &files.key)?;
    let key = rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| TlsError::Invalid {
            flag: "--tls-key-file",
            path: files.key.clone(),
            reason: format!("not PEM: {e} ({FIX})"),
        })?
        .ok_or_else(|| TlsError::Empty {
            flag: "--tls-key-file",
            path: files.key.clone(),
            what: "PEM private key",
            fix: FIX,
        })?;
    Ok((chain, key))
}
