//! Who may make a call on a mutual-TLS link, read from the verified certificate of the
//! connection it came on ([`crate::PeerCert`]): a certificate of one role never acts as
//! another, and where the caller claims a name (an agent its node id) the certificate
//! must carry that name.

use tonic::Status;

use crate::{Identity, PeerCert, Role};

/// Checks that the caller's certificate is of `role` and, with `claimed`, names it.
/// `peer` is `None` on a cleartext loopback listener, where no certificate exists and
/// the call is allowed. `fix` tells the operator which certificate to give the caller
/// (`berth tls cert create --role server --name NAME`).
#[allow(clippy::result_large_err)]
pub fn require(
    peer: Option<&PeerCert>,
    role: Role,
    claimed: Option<&str>,
    fix: &str,
) -> Result<Option<Identity>, Status> {
    let Some(peer) = peer else { return Ok(None) };
    let identity = peer.identity.as_ref().map_err(|reason| {
        Status::permission_denied(format!(
            "this call needs a {role} certificate, and the client's names no Berth identity: {reason}; {fix}"
        ))
    })?;
    if identity.role != role {
        return Err(Status::permission_denied(format!(
            "this call needs a {role} certificate, and the client presented {} (role {}): a certificate of one role cannot act as another; {fix}",
            identity.dns_name(),
            identity.role
        )));
    }
    if let Some(claimed) = claimed
        && identity.name != claimed
    {
        return Err(Status::permission_denied(format!(
            "the call claims {role} {claimed:?} but the certificate is {:?}'s ({}): a {role} may only claim the name in its certificate",
            identity.name,
            identity.dns_name()
        )));
    }
    Ok(Some(identity.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(identity: Result<Identity, String>) -> PeerCert {
        PeerCert {
            remote: "127.0.0.1:1".parse().unwrap(),
            identity,
        }
    }

    fn of(role: Role, name: &str) -> PeerCert {
        peer(Ok(Identity {
            role,
            name: name.into(),
        }))
    }

    #[test]
    fn the_role_and_the_claimed_name_must_match_the_certificate() {
        let n1 = of(Role::Agent, "n1");
        let got = require(Some(&n1), Role::Agent, Some("n1"), "fix").unwrap();
        assert_eq!(got.unwrap().name, "n1");
        assert!(require(Some(&n1), Role::Agent, None, "fix").is_ok());

        let liar = require(Some(&n1), Role::Agent, Some("n2"), "fix").unwrap_err();
        assert_eq!(liar.code(), tonic::Code::PermissionDenied);
        assert!(
            liar.message().contains("\"n2\"") && liar.message().contains("agent.n1.berth"),
            "{}",
            liar.message()
        );

        let wrong_role = require(Some(&n1), Role::Server, None, "use a server's").unwrap_err();
        assert_eq!(wrong_role.code(), tonic::Code::PermissionDenied);
        assert!(
            wrong_role.message().contains(
                "needs a server certificate, and the client presented agent.n1.berth (role agent)"
            ) && wrong_role.message().contains("use a server's"),
            "{}",
            wrong_role.message()
        );
        for role in [Role::Diag, Role::Registry, Role::Server] {
            let other = of(role, "n1");
            assert!(require(Some(&other), Role::Agent, Some("n1"), "fix").is_err());
        }
    }

    #[test]
    fn a_certificate_without_an_identity_is_refused_and_cleartext_passes() {
        let anonymous = peer(Err("no client certificate".into()));
        let err = require(Some(&anonymous), Role::Server, None, "fix").unwrap_err();
        assert!(
            err.message().contains("no client certificate"),
            "{}",
            err.message()
        );
        assert_eq!(require(None, Role::Server, None, "fix").unwrap(), None);
    }
}
