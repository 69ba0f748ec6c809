//! The client side of HTTPS: the HTTP client every server command uses, trusting the
//! cluster's CA when `--ca-cert FILE` (or `BERTH_CACERT`) names it, and the message for a
//! server certificate the client cannot verify (which names that setting).

use std::path::{Path, PathBuf};

/// The environment variable naming the CA file.
pub const ENV_CACERT: &str = "BERTH_CACERT";

#[derive(Debug, thiserror::Error)]
pub enum CaCertError {
    /// The I/O error is the source: the CLI prints the chain (`cannot read ...: No such
    /// file or directory`).
    #[error("cannot read --ca-cert {path} ({ENV_CACERT})")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--ca-cert {path} ({ENV_CACERT}) holds no PEM certificate: give the cluster CA, the ca.pem of `berth tls ca create`"
    )]
    Empty { path: PathBuf },
    #[error("--ca-cert {path} ({ENV_CACERT}): {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The client: with `ca`, it trusts that CA only (the cluster's servers have no
/// certificate from a public CA); without, the usual public roots.
pub fn http_client(ca: Option<&Path>) -> Result<reqwest::Client, CaCertError> {
    let builder = reqwest::Client::builder();
    let Some(path) = ca else {
        return builder.build().map_err(|e| CaCertError::Invalid {
            path: PathBuf::new(),
            reason: e.to_string(),
        });
    };
    let invalid = |e: reqwest::Error| CaCertError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let pem = std::fs::read(path).map_err(|source| CaCertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(invalid)?;
    if certs.is_empty() {
        return Err(CaCertError::Empty {
            path: path.to_path_buf(),
        });
    }
    certs
        .into_iter()
        .fold(builder.tls_built_in_root_certs(false), |b, cert| {
            b.add_root_certificate(cert)
        })
        .build()
        .map_err(invalid)
}

/// When `err` is the server's certificate failing verification: what to do about it.
pub fn explain_certificate_error(
    err: &(dyn std::error::Error + 'static),
    base: &str,
    ca: Option<&Path>,
) -> Option<String> {
    let reason = std::iter::successors(Some(err), |e| e.source())
        .map(ToString::to_string)
        .find(|text| text.contains("invalid peer certificate"))?;
    let fix = match ca {
        None => format!(
            "pass the cluster CA with --ca-cert FILE (or {ENV_CACERT}), the ca.pem of `berth tls ca create`"
        ),
        Some(path) => format!(
            "check that --ca-cert {} is the CA that signed the server's certificate, and that the certificate names the host of the URL (`berth tls cert create --role server --san HOST`)",
            path.display()
        ),
    };
    Some(format!(
        "the server at {base} presented a certificate this client does not trust ({reason}): {fix}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_is_missing_or_not_pem_is_refused_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = http_client(Some(&missing)).unwrap_err().to_string();
        assert!(
            err.contains("--ca-cert") && err.contains("nope.pem"),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = http_client(Some(&empty)).unwrap_err().to_string();
        assert!(
            err.contains("--ca-cert") && err.contains("berth tls ca create"),
            "{err}"
        );
    }

    #[test]
    fn the_cluster_ca_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let ca = berth_identity::create_ca(dir.path()).unwrap();
        http_client(Some(&ca.cert)).unwrap();
        http_client(None).unwrap();
    }

    #[test]
    fn only_certificate_failures_are_explained() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        let text = explain_certificate_error(&io, "https://h:7070", None).unwrap();
        assert!(text.contains("--ca-cert FILE"), "{text}");
        assert!(text.contains("UnknownIssuer"), "{text}");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(explain_certificate_error(&refused, "https://h:7070", None).is_none());
    }
}
