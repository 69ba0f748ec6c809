//! Black-box tests of the registry's Nacos 2.x gRPC protocol with the real
//! nacos-sdk-python 3.x (`tests/registry_clients/nacos3_*.py`): naming with pushes,
//! connection-held instances, every API seeing them; and raw payloads a client should
//! never send, answered without a dropped connection.

mod common;

use std::process::Stdio;
use std::time::Duration;

use berth_proto::nacos as pb;
use berth_proto::nacos::bi_request_stream_client::BiRequestStreamClient;
use berth_proto::nacos::request_client::RequestClient;
use berth_testkit::postgres::TempPostgres;
use berth_testkit::{BerthProcess, python_nacos3, temp_dir};
use common::registry_cluster::{Cluster, ClusterOptions};
use common::{BIN, run_client_script};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The gRPC port's distance from the HTTP port in the cluster test (Nacos's own).
const OFFSET: u16 = 1000;

async fn start_registry(data_dir: &std::path::Path) -> BerthProcess {
    let dir = data_dir.to_str().expect("utf-8 temp path");
    BerthProcess::start(
        BIN,
        &[
            "registry",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--data-dir",
            dir,
            "--expiry-check-interval",
            "100ms",
        ],
    )
    .await
}

/// The SDK dials the gRPC port as the HTTP port plus an offset (1000 by default); the
/// scripts are told the offset of the ephemeral ports.
fn grpc_offset(registry: &BerthProcess) -> i64 {
    i64::from(registry.addr("grpc").port()) - i64::from(registry.addr("http").port())
}

/// Runs a client script; it asserts itself and prints OK.
async fn run_script(name: &str, registry: &BerthProcess) -> String {
    run_client_script(
        &python_nacos3(),
        name,
        &[
            registry.addr("http").to_string(),
            grpc_offset(registry).to_string(),
        ],
        Duration::from_secs(90),
        Some(registry),
    )
    .await
}

#[tokio::test]
async fn nacos3_sdk_naming_over_grpc() {
    let dir = temp_dir();
    let registry = start_registry(dir.path()).await;
    let out = run_script("nacos3_naming.py", &registry).await;
    eprintln!("{out}");
    registry.terminate().await;
}

#[tokio::test]
async fn nacos3_sdk_config_over_grpc() {
    let dir = temp_dir();
    let registry = start_registry(dir.path()).await;
    let out = run_script("nacos3_config.py", &registry).await;
    eprintln!("{out}");
    registry.terminate().await;
}

#[tokio::test]
async fn nacos3_sdk_with_auth_and_the_connection_loader() {
    let dir = temp_dir();
    let secret = "a-registry-secret-of-at-least-32-bytes!";
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, secret).unwrap();
    let data = dir.path().join("data");
    let registry = BerthProcess::start(
        BIN,
        &[
            "registry",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--auth-secret-file",
            secret_file.to_str().unwrap(),
        ],
    )
    .await;
    run_client_script(
        &python_nacos3(),
        "nacos3_ops.py",
        &[
            registry.addr("http").to_string(),
            grpc_offset(&registry).to_string(),
            secret.to_string(),
        ],
        Duration::from_secs(90),
        Some(&registry),
    )
    .await;
    registry.terminate().await;
}

/// Three members sharing PostgreSQL for configs, SDK clients spread over them, and a
/// member killed under its clients (the script asks for it on its stdout).
#[tokio::test]
async fn nacos3_sdk_against_a_three_member_cluster_with_a_member_killed() {
    let pg = TempPostgres::start();
    let url = pg.create_database("nacos_configs");
    let mut cluster = Cluster::start_with(
        3,
        ClusterOptions {
            grpc_offset: Some(OFFSET),
            kv_postgres_url: Some(url),
            extra: [
                "--beat-timeout",
                "2s",
                "--delete-timeout",
                "4s",
                "--beat-interval",
                "1s",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        },
    )
    .await;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.http.to_string()).collect();
    let mut child = tokio::process::Command::new(python_nacos3())
        .arg(common::client_scripts().join("nacos3_cluster.py"))
        .arg(addrs.join(","))
        .arg(OFFSET.to_string())
        .current_dir(common::client_scripts())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr = child.stderr.take().expect("stderr");
    let mut said = Vec::new();
    let run = async {
        while let Some(line) = lines.next_line().await.expect("read the script") {
            if let Some(member) = line.strip_prefix("CTL kill ") {
                let member: usize = member.parse().expect("a member number");
                cluster.kill(member).await;
                stdin
                    .write_all(b"killed\n")
                    .await
                    .expect("answer the script");
            } else {
                said.push(line);
            }
        }
        child.wait().await.expect("the script ends")
    };
    let status = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the cluster script finishes within 180 s");
    let mut errors = String::new();
    let _ = stderr.read_to_string(&mut errors).await;
    assert!(
        status.success() && said.last().map(String::as_str) == Some("OK"),
        "nacos3_cluster.py failed ({status}):\n--- stdout\n{}\n--- stderr\n{errors}",
        said.join("\n")
    );
    eprintln!("{}", said.join("\n"));
    // A member with the PostgreSQL store stops cleanly on SIGTERM.
    let member = cluster.nodes[2].process.take().expect("member 2 runs");
    let status = member.terminate().await;
    assert!(
        status.success(),
        "a PostgreSQL-backed member exited with {status}"
    );
}

fn payload(kind: &str, body: &[u8]) -> pb::Payload {
    pb::Payload {
        metadata: Some(pb::Metadata {
            r#type: kind.into(),
            client_ip: String::new(),
            headers: Default::default(),
        }),
        body: Some(pb::Any {
            type_url: String::new(),
            value: body.to_vec(),
        }),
    }
}

fn answer(p: &pb::Payload) -> (String, serde_json::Value) {
    let kind = p
        .metadata
        .as_ref()
        .map(|m| m.r#type.clone())
        .unwrap_or_default();
    let body = p.body.as_ref().map(|b| b.value.clone()).unwrap_or_default();
    (kind, serde_json::from_slice(&body).expect("a JSON body"))
}

#[tokio::test]
async fn unknown_and_broken_requests_get_nacos_errors_not_dropped_connections() {
    let dir = temp_dir();
    let registry = start_registry(dir.path()).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", registry.addr("grpc")))
            .unwrap()
            .connect()
            .await
            .expect("connect");
    let mut client = RequestClient::new(channel.clone());
    let check = client
        .request(payload("ServerCheckRequest", b"{}"))
        .await
        .expect("server check")
        .into_inner();
    let (kind, body) = answer(&check);
    assert_eq!(kind, "ServerCheckResponse");
    assert!(
        body["connectionId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{body}"
    );
    assert_eq!(body["supportAbilityNegotiation"], false);

    // Before the stream's setup a request names the unregistered connection.
    let early = client
        .request(payload("InstanceRequest", b"{}"))
        .await
        .expect("an answer")
        .into_inner();
    let (kind, body) = answer(&early);
    assert_eq!(
        (kind.as_str(), body["errorCode"].as_u64()),
        ("ErrorResponse", Some(301)),
        "{body}"
    );

    // The stream's setup registers the connection (same channel, same TCP connection).
    let (setup_tx, setup_rx) = tokio::sync::mpsc::channel(4);
    setup_tx
        .send(payload(
            "ConnectionSetupRequest",
            br#"{"clientVersion":"test","tenant":"","labels":{"module":"naming"}}"#,
        ))
        .await
        .unwrap();
    let mut streams = BiRequestStreamClient::new(channel.clone());
    let _stream = streams
        .request_bi_stream(tokio_stream::wrappers::ReceiverStream::new(setup_rx))
        .await
        .expect("the stream opens");

    // Garbage of every kind gets an error response naming what is wrong, on the same
    // connection.
    for (kind, raw, code) in [
        ("", &b"{}"[..], 400),
        ("InstanceRequest", b"not json", 400),
        ("InstanceRequest", b"[1,2]", 400),
        ("NoSuchRequest", b"{}", 302),
        ("InstanceRequest", br#"{"serviceName":"s","type":"registerInstance","instance":{"ip":"1.2.3.4","port":70000}}"#, 400),
        ("InstanceRequest", br#"{"type":"registerInstance","instance":{"ip":"1.2.3.4","port":80}}"#, 400),
        ("InstanceRequest", br#"{"serviceName":"s","type":"explode"}"#, 400),
    ] {
        let got = client
            .request(payload(kind, raw))
            .await
            .expect("an answer, never a dropped call")
            .into_inner();
        let (_, body) = answer(&got);
        assert_eq!(body["resultCode"], 500, "{kind}: {body}");
        assert_eq!(body["errorCode"], code, "{kind}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    let port = client
        .request(payload("InstanceRequest", br#"{"serviceName":"s","type":"registerInstance","instance":{"ip":"1.2.3.4","port":70000}}"#))
        .await
        .unwrap()
        .into_inner();
    assert!(
        answer(&port).1["message"]
            .as_str()
            .unwrap()
            .contains("instance.port"),
        "the field is named"
    );
    // The connection still serves.
    let again = client
        .request(payload("ServerCheckRequest", b"{}"))
        .await
        .expect("still served")
        .into_inner();
    assert_eq!(answer(&again).0, "ServerCheckResponse");
    registry.terminate().await;
}
