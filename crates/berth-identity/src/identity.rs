//! The Berth identity a certificate carries: role and name in the DNS SAN
//! `ROLE.NAME.berth` (`agent.n1.berth` is node n1's agent), as `berth tls cert create`
//! writes it. The role-wide SAN `ROLE.berth` (what clients verify a server by) and any
//! other SAN are not identities and are skipped.

use std::fmt;
use std::str::FromStr;

/// The suffix every Berth identity name ends with.
pub const SUFFIX: &str = ".berth";

/// What a certificate may act as. A certificate of one role never acts as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Server,
    Agent,
    Diag,
    Registry,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Server, Role::Agent, Role::Diag, Role::Registry];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
            Role::Diag => "diag",
            Role::Registry => "registry",
        }
    }

    /// `ROLE.berth`: the name every certificate of the role carries, which clients
    /// verify (an agent checks `server.berth` whatever address it dialed).
    pub fn dns_name(self) -> String {
        format!("{}{SUFFIX}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownRole(s.to_string()))
    }
}

/// Who a peer is, from its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

impl Identity {
    /// `ROLE.NAME.berth`, the SAN that carries this identity.
    pub fn dns_name(&self) -> String {
        format!("{}.{}{SUFFIX}", self.role, self.name)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("unknown role {0:?}: use one of server, agent, diag, registry")]
    UnknownRole(String),
    #[error(
        "name {0:?} is not usable in a certificate: use letters, digits, '-', '_' and '.', at most 200 characters, not starting or ending with '.'"
    )]
    BadName(String),
    #[error("the certificate cannot be parsed: {0}")]
    Parse(String),
    #[error(
        "the certificate carries no Berth identity (a SAN ROLE.NAME.berth): make it with `berth tls cert create --role ROLE --name NAME`"
    )]
    Missing,
    #[error("the certificate carries several Berth identities ({0}); it must carry exactly one")]
    Ambiguous(String),
}

/// Checks a name for `ROLE.NAME.berth`.
pub fn check_name(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadName(name.to_string()))
    }
}

/// Reads `ROLE.NAME.berth` from a DNS name, if it is one.
pub fn parse_dns_name(dns: &str) -> Option<Identity> {
    let rest = dns.strip_suffix(SUFFIX)?;
    let (role, name) = rest.split_once('.')?;
    let role = role.parse().ok()?;
    check_name(name).ok()?;
    Some(Identity {
        role,
        name: name.to_string(),
    })
}

/// The Berth identity of a DER certificate (the peer's leaf, already verified against
/// the CA by the TLS handshake: this only reads it).
pub fn identity_of(cert_der: &[u8]) -> Result<Identity, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| IdentityError::Parse(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Parse(e.to_string()))?;
    let mut found: Vec<Identity> = Vec::new();
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        if let x509_parser::extensions::GeneralName::DNSName(dns) = name
            && let Some(identity) = parse_dns_name(dns)
            && !found.contains(&identity)
        {
            found.push(identity);
        }
    }
    match found.len() {
        0 => Err(IdentityError::Missing),
        1 => Ok(found.remove(0)),
        _ => Err(IdentityError::Ambiguous(
            found
                .iter()
                .map(Identity::dns_name)
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_parse_into_identities() {
        assert_eq!(
            parse_dns_name("agent.n1.berth"),
            Some(Identity {
                role: Role::Agent,
                name: "n1".into()
            })
        );
        assert_eq!(
            parse_dns_name("agent.host.example.com.berth").map(|i| i.name),
            Some("host.example.com".into())
        );
        assert_eq!(parse_dns_name("server.berth"), None);
        assert_eq!(parse_dns_name("localhost"), None);
        assert_eq!(parse_dns_name("wizard.n1.berth"), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("n1").is_ok());
        assert!(check_name("node_1.rack-2").is_ok());
        for bad in ["", ".a", "a.", "a..b", "a b", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
