//! The native watch over a real gRPC connection to a started registry.

use std::time::Duration;

use berth_proto::registry::v1::registry_client::RegistryClient;
use berth_proto::registry::v1::{WatchRequest, watch_event::Kind};
use berth_registry::model::DEFAULT_CLUSTER;
use berth_registry::{Instance, Op, RegistryConfig, ServiceKey};
use berth_util::shutdown::Shutdown;

async fn register(handle: &berth_registry::RegistryHandle, name: &str, port: u16) {
    let key = ServiceKey::simple(name);
    let mut i = Instance::new(&key, "127.0.0.1", port, DEFAULT_CLUSTER);
    std::sync::Arc::make_mut(&mut i.metadata)
        .insert("berth.routes".into(), format!("{name}.example"));
    handle
        .registry()
        .submit(Op::Register {
            service: key,
            instance: i,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn watch_streams_snapshot_changes_and_resumes_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = Shutdown::new();
    let handle = berth_registry::start(RegistryConfig::for_test(dir.path()), &shutdown)
        .await
        .unwrap();
    register(&handle, "web", 8080).await;

    let url = format!("http://{}", handle.grpc_addr());
    let mut client = RegistryClient::connect(url.clone()).await.unwrap();
    let mut stream = client
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Some(Kind::Snapshot(snap)) = first.kind else {
        panic!("first event must be a snapshot: {first:?}");
    };
    assert_eq!(snap.services.len(), 1);
    assert_eq!(
        snap.services[0].instances[0].metadata["berth.routes"],
        "web.example"
    );
    let snapshot_rev = first.revision;

    register(&handle, "web", 8081).await;
    let next = tokio::time::timeout(Duration::from_secs(1), stream.message())
        .await
        .expect("change pushed within a second")
        .unwrap()
        .unwrap();
    assert!(next.revision > snapshot_rev);
    let Some(Kind::Change(change)) = next.kind else {
        panic!("expected a change: {next:?}");
    };
    assert_eq!(change.service.unwrap().instances.len(), 2);

    // Resume from the snapshot's revision: only the missed change comes.
    let mut resumed = client
        .watch(WatchRequest {
            from_revision: snapshot_rev,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let e = resumed.message().await.unwrap().unwrap();
    assert_eq!(e.revision, next.revision);
    assert!(matches!(e.kind, Some(Kind::Change(_))));

    // Shutdown ends open streams instead of hanging the drain.
    shutdown.trigger();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
    assert!(matches!(end, Ok(Ok(None)) | Ok(Err(_))), "{end:?}");
    shutdown.drain(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn start_reports_a_taken_port_by_flag() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = RegistryConfig::for_test(dir.path());
    config.grpc_listen = taken.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let err = berth_registry::start(config, &shutdown)
        .await
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("--grpc-listen"), "{err}");
}
