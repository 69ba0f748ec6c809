//! Identities on Berth's links, shared by every role and the CLI.
//!
//! Owns: token secrets ([`secret`]: generation, SHA-256 hashing, constant-time compare);
//! the private CA and its leaf certificates ([`pki`], what `berth tls` writes); loading
//! PEM files into rustls server and client configs that verify the other side against
//! the CA ([`tls`]); and the Berth identity `(role, name)` a certificate carries in its
//! SAN `ROLE.NAME.berth` ([`identity`]). No network and no async here: the roles wire
//! these configs into their own listeners and dialers.

pub mod identity;
pub mod pki;
pub mod secret;
pub mod tls;

pub use identity::{Identity, IdentityError, Role, identity_of};
pub use pki::{PkiError, create_ca, create_cert};
pub use secret::{constant_time_eq, generate_secret, hash_secret};
pub use tls::{SERVER_NAME, TlsError, TlsFiles, client_config, server_config, server_name};
