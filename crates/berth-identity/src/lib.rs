//! Who is who in Berth: token secrets (this part), and, from the TLS part, the private CA,
//! leaf certificates and rustls configs.
//!
//! Owns: [`secret`] (random secrets of 128 bits and more, their SHA-256 hash as stored,
//! constant-time comparison). Lower crate: depends on no other Berth crate.

pub mod secret;
