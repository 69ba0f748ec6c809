//! The private CA and its leaf certificates, as `berth tls ca create` and `berth tls
//! cert create` write them (like `nomad tls` / `consul tls`).
//!
//! Files in DIR: `ca.pem`, `ca-key.pem`; `ROLE-NAME.pem`, `ROLE-NAME-key.pem`. Keys are
//! 0600, nothing is ever overwritten (a CA replaced by accident orphans every certificate
//! it signed). Leaves carry the identity SAN `ROLE.NAME.berth`, the role-wide `ROLE.berth`,
//! `localhost`, 127.0.0.1 and ::1, and may be used as TLS server and client alike.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::identity::{Identity, IdentityError, Role, SUFFIX, check_name};

/// How long a CA is valid.
const CA_DAYS: i64 = 5 * 365;
/// How long a leaf is valid: a year, as Nomad's and Consul's defaults.
const LEAF_DAYS: i64 = 365;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "{path} already exists: refusing to overwrite it; remove it first or choose another --dir"
    )]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot read {path}: {source} (create the CA first: `berth tls ca create --dir {dir}`)"
    )]
    ReadCa {
        path: PathBuf,
        dir: String,
        source: std::io::Error,
    },
    #[error("{path} is not a usable CA {what}: {reason}")]
    BadCa {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("--name: {0}")]
    Name(IdentityError),
    #[error(
        "--san {0:?}: names ending in .berth are reserved for the role and identity SANs; pass another DNS name or an IP address"
    )]
    ReservedSan(String),
    #[error("--san {san:?} is not a usable DNS name or IP address: {reason}")]
    BadSan { san: String, reason: String },
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The two files of one certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Creates a new private CA in `dir` (made if missing).
pub fn create_ca(dir: &Path) -> Result<CertFiles, PkiError> {
    let files = CertFiles {
        cert: dir.join(CA_CERT),
        key: dir.join(CA_KEY),
    };
    refuse_existing(&files)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Berth");
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Berth CA {}", &crate::secret::generate_secret()[..8]),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_DAYS);
    let cert = params.self_signed(&key)?;
    write_pair(&files, &cert.pem(), &key.serialize_pem())?;
    Ok(files)
}

/// Signs a leaf for `role`/`name` with the CA in `dir`, writing `ROLE-NAME.pem` and
/// `ROLE-NAME-key.pem` there. `extra_sans` adds DNS names or IP addresses (the hosts a
/// client dials by, for other TLS clients than Berth's own).
pub fn create_cert(
    dir: &Path,
    role: Role,
    name: &str,
    extra_sans: &[String],
) -> Result<CertFiles, PkiError> {
    check_name(name).map_err(PkiError::Name)?;
    let identity = Identity {
        role,
        name: name.to_string(),
    };
    let mut sans = vec![
        SanType::DnsName(ia5(&identity.dns_name())?),
        SanType::DnsName(ia5(&role.dns_name())?),
        SanType::DnsName(ia5("localhost")?),
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
        SanType::IpAddress("::1".parse().expect("valid")),
    ];
    for san in extra_sans {
        if san.to_ascii_lowercase().ends_with(SUFFIX) {
            return Err(PkiError::ReservedSan(san.clone()));
        }
        sans.push(match san.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.as_str().try_into().map_err(|e: rcgen::Error| {
                PkiError::BadSan {
                    san: san.clone(),
                    reason: e.to_string(),
                }
            })?),
        });
    }
    let files = CertFiles {
        cert: dir.join(format!("{role}-{name}.pem")),
        key: dir.join(format!("{role}-{name}-key.pem")),
    };
    refuse_existing(&files)?;
    let issuer = load_issuer(dir)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Berth");
    params
        .distinguished_name
        .push(DnType::CommonName, identity.dns_name());
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_DAYS);
    let cert = params.signed_by(&key, &issuer)?;
    write_pair(&files, &cert.pem(), &key.serialize_pem())?;
    Ok(files)
}

fn ia5(name: &str) -> Result<rcgen::string::Ia5String, PkiError> {
    name.try_into().map_err(|e: rcgen::Error| PkiError::BadSan {
        san: name.to_string(),
        reason: e.to_string(),
    })
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // A minute back: a peer whose clock is slightly behind still accepts a fresh cert.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(days);
}

fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| PkiError::ReadCa {
            path,
            dir: dir.display().to_string(),
            source,
        })
    };
    let cert_pem = read(CA_CERT)?;
    let key_pem = read(CA_KEY)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadCa {
        path: dir.join(CA_KEY),
        what: "key",
        reason: e.to_string(),
    })?;
    Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| PkiError::BadCa {
        path: dir.join(CA_CERT),
        what: "certificate",
        reason: e.to_string(),
    })
}

fn refuse_existing(files: &CertFiles) -> Result<(), PkiError> {
    for path in [&files.cert, &files.key] {
        if path.exists() {
            return Err(PkiError::Exists { path: path.clone() });
        }
    }
    Ok(())
}

fn write_pair(files: &CertFiles, cert_pem: &str, key_pem: &str) -> Result<(), PkiError> {
    if let Some(dir) = files.cert.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // The key first, so a failure never leaves a certificate without its key.
    write_new(&files.key, key_pem, 0o600)?;
    write_new(&files.cert, cert_pem, 0o644)
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    // create_new: never replace a file that appeared since the check.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => PkiError::Exists {
                path: path.to_path_buf(),
            },
            _ => err(source),
        })?;
    file.write_all(text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}
