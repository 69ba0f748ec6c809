//! Black-box test of mutual TLS on the diagnostics gateway, every role its own `berth`
//! process with certificates `berth tls` made: node n1's agent attaches with the
//! certificate it shows the server, the server calls the gateway with its own, and
//! `berth inspect` works end to end. Refused, each with the reason proven: an agent
//! certificate claiming another node id, a client without a certificate, and an agent
//! certificate calling the operations only a server may call.

mod common;

use std::path::Path;
use std::sync::Arc;

use berth_identity::{ReloadingTls, Role, TlsFiles};
use berth_proto::diag::v1 as pb;
use berth_proto::diag::v1::diag_gateway_client::DiagGatewayClient;
use berth_testkit::{BerthProcess, InstanceReaper, temp_dir, wait_for, wait_until};
use common::{WAIT_ROLES, cli, role, tls_flags, tls_pki};

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// The certificate of `ROLE-NAME` as a client of the tests' own gateway calls.
fn client_tls(pki: &Path, role: &str, name: &str) -> Arc<ReloadingTls> {
    ReloadingTls::load(TlsFiles {
        cert: pki.join(format!("{role}-{name}.pem")),
        key: pki.join(format!("{role}-{name}-key.pem")),
        ca: pki.join("ca.pem"),
    })
    .unwrap()
}

async fn gateway_client(
    gateway: &BerthProcess,
    tls: Arc<ReloadingTls>,
) -> DiagGatewayClient<tonic::transport::Channel> {
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.addr("grpc")))
            .unwrap();
    let channel = berth_identity::dial::connect(endpoint, tls, Role::Diag)
        .await
        .expect("the gateway takes a certificate of the cluster's CA");
    DiagGatewayClient::new(channel)
}

fn run_request() -> pb::RunRequest {
    pb::RunRequest {
        node_id: "n1".into(),
        operation: Some(pb::Operation {
            app_id: "tls/sleeper".into(),
            op: Some(pb::operation::Op::Processes(pb::Processes {})),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn inspect_runs_over_mutual_tls_and_the_gateway_holds_each_caller_to_its_role() {
    let dir = temp_dir();
    let dir = dir.path();
    let _reaper = InstanceReaper::new([dir.join("n1")]);
    let pki = dir.join("pki");
    tls_pki(&pki, &[("server", "s1"), ("agent", "n1"), ("diag", "d1")]);
    let registry = role(
        "registry",
        &[
            ("BERTH_REGISTRY_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_REGISTRY_GRPC_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_REGISTRY_DATA_DIR", path(dir, "registry")),
        ],
    )
    .await;
    let nacos = registry.addr("http").to_string();
    let mut gateway_args = vec![
        "diag".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--registry-http".into(),
        nacos.clone(),
    ];
    gateway_args.extend(tls_flags(&pki, "diag", "d1"));
    let gateway_args: Vec<&str> = gateway_args.iter().map(String::as_str).collect();
    let gateway = BerthProcess::start(common::BIN, &gateway_args).await;

    let mut server_args = vec![
        "--registry-http".to_string(),
        nacos.clone(),
        "--startup-grace".into(),
        "1s".into(),
    ];
    server_args.extend(tls_flags(&pki, "server", "s1"));
    let server = common::loopback_server(&dir.join("server"), &server_args).await;
    let api = server.addr("http");

    let mut agent_args = vec![
        "agent".to_string(),
        "--server".into(),
        server.addr("grpc").to_string(),
        "--registry-http".into(),
        nacos,
        "--data-dir".into(),
        path(dir, "n1"),
        "--node-id".into(),
        "n1".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--cpus".into(),
        "2".into(),
        "--mem-mib".into(),
        "2048".into(),
        "--diag".into(),
        gateway.addr("grpc").to_string(),
    ];
    agent_args.extend(tls_flags(&pki, "agent", "n1"));
    let agent_args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let _agent = BerthProcess::start(common::BIN, &agent_args).await;

    let spec = dir.join("sleeper.toml");
    std::fs::write(
        &spec,
        "id = \"tls/sleeper\"\ncmd = \"exec sleep 300\"\ninstances = 1\nmem = 16\n",
    )
    .unwrap();
    let deployed = cli(
        api,
        &["apps", "deploy", "--timeout", "40s", spec.to_str().unwrap()],
    )
    .await;
    assert!(deployed.ok, "{}{}", deployed.stdout, deployed.stderr);

    // End to end: the CLI asks the server, which calls the gateway with its certificate;
    // the gateway relays to n1's agent, attached with its own.
    let ps = wait_for("inspect ps over mutual TLS", WAIT_ROLES, || async {
        let out = cli(api, &["inspect", "ps", "tls/sleeper"]).await;
        (out.ok && out.stdout.contains("sleep 300")).then_some(out.stdout)
    })
    .await;
    assert!(ps.contains("sleep 300"), "{ps}");

    // n1's certificate claiming node n2: refused after the Hello, naming both.
    let mut as_n1 = gateway_client(&gateway, client_tls(&pki, "agent", "n1")).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::AgentFrame {
        kind: Some(pb::agent_frame::Kind::Hello(pb::AgentHello {
            node_id: "n2".into(),
            version: "test".into(),
        })),
    })
    .await
    .unwrap();
    let refused = as_n1
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("n1's certificate cannot attach as n2");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("claims agent \"n2\"")
            && refused.message().contains("agent.n1.berth"),
        "{}",
        refused.message()
    );

    // An agent's certificate calling what only a server may call.
    let refused = as_n1
        .run(run_request())
        .await
        .expect_err("an agent cannot run operations");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("needs a server certificate")
            && refused.message().contains("agent.n1.berth"),
        "{}",
        refused.message()
    );
    let refused = as_n1
        .nodes(pb::NodesRequest {})
        .await
        .expect_err("an agent cannot list nodes");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // The server's own certificate may.
    let mut as_server = gateway_client(&gateway, client_tls(&pki, "server", "s1")).await;
    let nodes = as_server.nodes(pb::NodesRequest {}).await.unwrap();
    assert_eq!(nodes.into_inner().node_ids, vec!["n1".to_string()]);

    // No certificate at all: the handshake ends it before any call.
    let plain = format!("http://{}", gateway.addr("grpc"));
    let anonymous = match DiagGatewayClient::connect(plain).await {
        Ok(mut client) => client.nodes(pb::NodesRequest {}).await.is_err(),
        Err(_) => true,
    };
    assert!(anonymous, "a client without a certificate got an answer");
    wait_until(
        "the gateway logged the refused handshake",
        WAIT_ROLES,
        || async { gateway.output().contains("diag TLS handshake refused") },
    )
    .await;
}
