//! Identities on Berth's links, shared by every role and the CLI.
//!
//! Owns: token secrets ([`secret`]: generation, SHA-256 hashing, constant-time compare);
//! the private CA and its leaf certificates ([`pki`], what `berth tls` writes); loading
//! PEM files into rustls server and client configs that verify the other side against
//! the CA ([`tls`]); and the Berth identity `(role, name)` a certificate carries in its
//! SAN `ROLE.NAME.berth` ([`identity`]); configs that follow their files, reloaded on
//! change or SIGHUP ([`reload`]); and the two listeners every role puts TLS on: the
//! mutual-TLS acceptor in front of tonic ([`accept`]) and the port that serves HTTPS, and
//! plain HTTP from loopback only ([`https`]); the matching mutual-TLS dialer
//! ([`dial`]) and the check of a caller's role and claimed name ([`authorize`]).

pub mod accept;
pub mod authorize;
pub mod dial;
pub mod https;
pub mod identity;
pub mod pki;
pub mod reload;
pub mod secret;
pub mod tls;

pub use accept::{PeerCert, TlsConn};
pub use https::HttpsListener;
pub use identity::{Identity, IdentityError, Role, identity_of};
pub use pki::{PkiError, create_ca, create_cert};
pub use reload::{DEFAULT_RELOAD_INTERVAL, ReloadingTls};
pub use secret::{constant_time_eq, generate_secret, hash_secret};
pub use tls::{
    SERVER_NAME, TlsError, TlsFiles, client_config, https_config, server_config, server_name,
};
