//! The CA and leaves `berth tls` writes, loaded into rustls configs, over a real loopback
//! TCP handshake: both sides verify each other, a foreign CA or a missing client
//! certificate is refused, and the identity is read from the peer's certificate.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use berth_identity::pki::CertFiles;
use berth_identity::{Identity, Role, TlsFiles, client_config, identity_of, server_config};
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn files(dir: &Path, leaf: &CertFiles) -> TlsFiles {
    TlsFiles {
        cert: leaf.cert.clone(),
        key: leaf.key.clone(),
        ca: dir.join("ca.pem"),
    }
}

fn der(path: &Path) -> CertificateDer<'static> {
    let bytes = std::fs::read(path).unwrap();
    rustls_pemfile::certs(&mut bytes.as_slice())
        .next()
        .unwrap()
        .unwrap()
}

/// One handshake over loopback; Ok(what each side saw of the other) or the first error.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Result<(Identity, Identity), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| format!("server: {e}"))?;
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        identity_of(&peer).map_err(|e| e.to_string())
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = berth_identity::server_name(berth_identity::SERVER_NAME);
    let client_side = TlsConnector::from(client).connect(name, tcp).await;
    let server_side = accept.await.unwrap();
    let tls = client_side.map_err(|e| format!("client: {e}"))?;
    let client_saw =
        identity_of(&tls.get_ref().1.peer_certificates().unwrap()[0]).map_err(|e| e.to_string())?;
    Ok((server_side?, client_saw))
}

#[test]
fn ca_and_leaves_are_written_once_with_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let ca = berth_identity::create_ca(&pki).unwrap();
    assert_eq!(ca.cert, pki.join("ca.pem"));
    assert_eq!(ca.key, pki.join("ca-key.pem"));
    let leaf = berth_identity::create_cert(&pki, Role::Agent, "n1", &[]).unwrap();
    assert_eq!(leaf.cert, pki.join("agent-n1.pem"));
    assert_eq!(leaf.key, pki.join("agent-n1-key.pem"));
    for key in [&ca.key, &leaf.key] {
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    let again = berth_identity::create_ca(&pki).unwrap_err().to_string();
    assert!(again.contains("ca.pem already exists"), "{again}");
    let again = berth_identity::create_cert(&pki, Role::Agent, "n1", &[])
        .unwrap_err()
        .to_string();
    assert!(again.contains("agent-n1.pem already exists"), "{again}");

    let identity = identity_of(&der(&leaf.cert)).unwrap();
    assert_eq!(
        identity,
        Identity {
            role: Role::Agent,
            name: "n1".into()
        }
    );

    let no_ca = tempfile::tempdir().unwrap();
    let err = berth_identity::create_cert(no_ca.path(), Role::Server, "s1", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("berth tls ca create --dir"), "{err}");
    let err = berth_identity::create_cert(&pki, Role::Agent, "n9", &["x.berth".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("reserved"), "{err}");
    let err = berth_identity::create_cert(&pki, Role::Agent, "bad name", &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--name"), "{err}");
}

#[tokio::test]
async fn both_sides_verify_each_other_and_strangers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    berth_identity::create_ca(pki).unwrap();
    let server = berth_identity::create_cert(pki, Role::Server, "s1", &[]).unwrap();
    let agent = berth_identity::create_cert(pki, Role::Agent, "n1", &["10.0.0.7".into()]).unwrap();
    let server_tls = server_config(&files(pki, &server)).unwrap();
    let agent_tls = client_config(&files(pki, &agent)).unwrap();

    let (server_saw, agent_saw) = handshake(server_tls.clone(), agent_tls.clone())
        .await
        .unwrap();
    assert_eq!(
        server_saw,
        Identity {
            role: Role::Agent,
            name: "n1".into()
        }
    );
    assert_eq!(
        agent_saw,
        Identity {
            role: Role::Server,
            name: "s1".into()
        }
    );

    // A certificate from another CA: the server refuses it, and a client trusting only
    // that other CA refuses the server.
    let other = tempfile::tempdir().unwrap();
    berth_identity::create_ca(other.path()).unwrap();
    let stranger = berth_identity::create_cert(other.path(), Role::Agent, "n1", &[]).unwrap();
    let stranger_tls = client_config(&files(other.path(), &stranger)).unwrap();
    let err = handshake(server_tls.clone(), stranger_tls)
        .await
        .unwrap_err();
    assert!(err.contains("server") || err.contains("client"), "{err}");

    // No client certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(&pki.join("ca.pem"))).unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let err = handshake(server_tls, Arc::new(anonymous))
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("cert"), "{err}");
}

#[test]
fn config_errors_name_the_file_and_the_flag() {
    let err = TlsFiles::from_options(Some("a".into()), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--tls-key-file and --tls-ca-file are missing"),
        "{err}"
    );
    assert!(TlsFiles::from_options(None, None, None).unwrap().is_none());

    let dir = tempfile::tempdir().unwrap();
    berth_identity::create_ca(dir.path()).unwrap();
    let leaf = berth_identity::create_cert(dir.path(), Role::Server, "s1", &[]).unwrap();
    let mut bad = files(dir.path(), &leaf);
    bad.ca = dir.path().join("nope.pem");
    let err = server_config(&bad).unwrap_err().to_string();
    assert!(
        err.contains("--tls-ca-file") && err.contains("nope.pem"),
        "{err}"
    );
    let mut swapped = files(dir.path(), &leaf);
    swapped.key = dir.path().join("ca-key.pem");
    let err = client_config(&swapped).unwrap_err().to_string();
    assert!(err.contains("do not belong together"), "{err}");
}
