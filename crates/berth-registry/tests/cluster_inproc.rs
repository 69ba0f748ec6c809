//! Two cluster members in one process: replication, forwarding and the owner's expiry,
//! fast enough to run on every change of the cluster code.

use std::net::SocketAddr;
use std::time::Duration;

use berth_registry::model::{DEFAULT_CLUSTER, Instance, ServiceKey};
use berth_registry::{Op, RegistryConfig, start};
use berth_util::shutdown::Shutdown;

async fn free_port() -> u16 {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_replicate_both_ways() {
    let ports = [free_port().await, free_port().await];
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let shutdown = Shutdown::new();
    let mut handles = Vec::new();
    let mut dirs = Vec::new();
    for a in &addrs {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RegistryConfig::for_test(dir.path());
        config.grpc_listen = *a;
        config.cluster.peers = addrs.iter().map(ToString::to_string).collect();
        config.cluster.secret = Some("s".repeat(32));
        config.cluster.heartbeat = Duration::from_millis(100);
        config.cluster.sync_interval = Duration::from_millis(300);
        config.cluster.replicate_delay = Duration::from_millis(20);
        config.cluster.rpc_timeout = Duration::from_millis(500);
        handles.push(start(config, &shutdown).await.unwrap());
        dirs.push(dir);
    }
    wait("both loaded with a full view", || {
        handles.iter().all(|h| h.cluster().unwrap().is_loaded())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 0..20u16 {
        let s = ServiceKey::simple(format!("s{n}"));
        let h = &handles[usize::from(n % 2)];
        h.registry()
            .submit(Op::Register {
                instance: Instance::new(&s, "10.0.0.1", n, DEFAULT_CLUSTER),
                service: s.clone(),
            })
            .await
            .unwrap();
        // Read-your-writes on the member written through, owner or not.
        assert_eq!(h.registry().get(&s).map(|s| s.instances.len()), Some(1));
    }
    wait("every service on both members", || {
        handles.iter().all(|h| h.registry().counts().1 == 20)
    })
    .await;
    shutdown.trigger();
}
