//! Black-box test of mutual TLS on the registry's peer links: two members, each with its
//! own `registry` certificate on `--cluster-listen`, replicate a registration; a caller
//! holding the cluster secret but a certificate of another role is refused.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use berth_identity::{ReloadingTls, Role, TlsFiles};
use berth_proto::registry::v1 as pb;
use berth_proto::registry::v1::cluster_client::ClusterClient;
use berth_testkit::{BerthProcess, temp_dir, wait_until};
use common::registry_cluster::free_port;
use common::{BIN, WAIT_ROLES, get_json, tls_flags, tls_pki, token_file};

const CLUSTER_SECRET: &str = "0123456789abcdef0123456789abcdef-cluster";

async fn member(dir: &Path, pki: &Path, name: &str, me: u16, peers: &str) -> BerthProcess {
    let secret = token_file(dir, &format!("{name}.secret"), CLUSTER_SECRET);
    let mut args: Vec<String> = [
        "registry",
        "--listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.join(name).display().to_string(),
        "--cluster-listen",
        &format!("127.0.0.1:{me}"),
        "--peers",
        peers,
        "--cluster-secret-file",
        &secret,
        "--cluster-heartbeat",
        "300ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(tls_flags(pki, "registry", name));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    BerthProcess::start(BIN, &args).await
}

async fn register(http: SocketAddr) -> bool {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    client
        .post(format!(
            "http://{http}/nacos/v1/ns/instance?serviceName=tls.web&ip=10.0.0.7&port=8080&ephemeral=false"
        ))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn lists_it(http: SocketAddr) -> bool {
    let listing = get_json(&format!(
        "http://{http}/nacos/v1/ns/instance/list?serviceName=tls.web"
    ))
    .await;
    listing["hosts"]
        .as_array()
        .is_some_and(|hosts| hosts.iter().any(|h| h["port"] == 8080))
}

#[tokio::test]
async fn members_replicate_over_mutual_tls_and_other_roles_are_refused() {
    let dir = temp_dir();
    let dir = dir.path();
    let pki = dir.join("pki");
    tls_pki(
        &pki,
        &[("registry", "r1"), ("registry", "r2"), ("diag", "d1")],
    );
    let (p1, p2) = (free_port().await, free_port().await);
    let peers = format!("127.0.0.1:{p1},127.0.0.1:{p2}");
    let r1 = member(dir, &pki, "r1", p1, &peers).await;
    let r2 = member(dir, &pki, "r2", p2, &peers).await;
    assert_eq!(r1.addr("cluster").port(), p1);

    wait_until("r1 takes the registration", WAIT_ROLES, || async {
        register(r1.addr("http")).await
    })
    .await;
    wait_until("r2 has it over the TLS peer link", WAIT_ROLES, || async {
        lists_it(r2.addr("http")).await
    })
    .await;

    // The cluster secret with a gateway's certificate: the TLS handshake passes (same
    // CA), the call does not.
    let diag = ReloadingTls::load(TlsFiles {
        cert: pki.join("diag-d1.pem"),
        key: pki.join("diag-d1-key.pem"),
        ca: pki.join("ca.pem"),
    })
    .unwrap();
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{p1}")).unwrap();
    let channel = berth_identity::dial::connect(endpoint, diag, Role::Registry)
        .await
        .expect("the handshake accepts any certificate of the CA");
    let mut beat = tonic::Request::new(pb::Beat::default());
    beat.metadata_mut()
        .insert("x-berth-cluster-secret", CLUSTER_SECRET.parse().unwrap());
    let refused = ClusterClient::new(channel)
        .heartbeat(beat)
        .await
        .expect_err("a diag certificate is not a member");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("needs a registry certificate")
            && refused.message().contains("diag.d1.berth"),
        "{}",
        refused.message()
    );

    // Without a certificate the peer listener takes nothing.
    let plain = ClusterClient::connect(format!("http://127.0.0.1:{p1}")).await;
    let answered = match plain {
        Ok(mut client) => client.heartbeat(pb::Beat::default()).await.is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "a cleartext caller got an answer");
    wait_until("r1 logged the refused handshake", WAIT_ROLES, || async {
        r1.output().contains("registry peer TLS handshake refused")
    })
    .await;
}

#[tokio::test]
async fn peer_links_off_loopback_or_tls_without_their_listener_refuse_to_start() {
    let dir = temp_dir();
    let secret = token_file(dir.path(), "cluster.secret", CLUSTER_SECRET);
    let auth = token_file(dir.path(), "auth.secret", CLUSTER_SECRET);
    let data = dir.path().join("data").display().to_string();
    let open = common::berth(&[
        "registry",
        "--listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--cluster-listen",
        "0.0.0.0:0",
        "--cluster-advertise",
        "10.0.0.1:9849",
        "--auth-secret-file",
        &auth,
        "--data-dir",
        &data,
        "--peers",
        "10.0.0.1:9849,10.0.0.2:9849",
        "--cluster-secret-file",
        &secret,
    ]);
    let stderr = String::from_utf8_lossy(&open.stderr);
    assert!(!open.status.success());
    assert!(
        stderr.contains("off loopback, without TLS")
            && stderr.contains("--tls-cert-file")
            && stderr.contains("--role registry"),
        "{stderr}"
    );

    let pki = dir.path().join("pki");
    tls_pki(&pki, &[("registry", "r1")]);
    let mut args: Vec<String> = [
        "registry",
        "--listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--peers",
        "127.0.0.1:1,127.0.0.1:2",
        "--cluster-secret-file",
        &secret,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(tls_flags(&pki, "registry", "r1"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let shared = common::berth(&args);
    let stderr = String::from_utf8_lossy(&shared.stderr);
    assert!(!shared.status.success());
    assert!(stderr.contains("--cluster-listen"), "{stderr}");
}
