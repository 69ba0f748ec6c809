//! Registry cluster (Distro, AP): three real `berth registry` processes on loopback,
//! their peer traffic through links the tests cut and heal.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_proto::registry::v1 as pb;
use berth_testkit::wait_until;
use common::registry_cluster::{self, Beater, Cluster, expected};

const CONVERGE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn writes_through_any_member_reach_every_member_and_watchers() {
    let c = Cluster::start(3).await;

    // A watcher on node 2 sees changes made through node 0 (replicated changes take the
    // same broadcast path as local ones).
    let mut watch =
        pb::registry_client::RegistryClient::connect(format!("http://{}", c.nodes[2].grpc))
            .await
            .expect("connect watch")
            .watch(pb::WatchRequest {
                services: vec!["orders".into()],
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();
    let first = watch.message().await.expect("event").expect("snapshot");
    assert!(matches!(
        first.kind,
        Some(pb::watch_event::Kind::Snapshot(_))
    ));

    let mut beaters = Vec::new();
    for k in 0..12u16 {
        let via = c.nodes[usize::from(k % 3)].http;
        let svc = if k < 3 {
            "orders".to_string()
        } else {
            format!("svc-{k}")
        };
        beaters.push(Beater::start(&c.http, via, &svc, "10.1.0.1", 8000 + k).await);
    }
    c.wait_converged(
        "registrations through every member",
        &expected(&beaters),
        CONVERGE,
    )
    .await;

    let seen = tokio::time::timeout(CONVERGE, async {
        let mut ports = BTreeSet::new();
        while ports.len() < 3 {
            let e = watch.message().await.expect("stream").expect("event");
            if let Some(pb::watch_event::Kind::Change(ch)) = e.kind {
                for i in ch.service.expect("service").instances {
                    ports.insert(i.port);
                }
            }
        }
        ports
    })
    .await
    .expect("the watcher on node 2 saw the three instances of orders");
    assert_eq!(seen.len(), 3);

    // Every service is owned by exactly one member, the same on every member.
    for b in &beaters {
        let owners: BTreeSet<_> = futures::future::join_all((0..3).map(|i| c.owner(i, &b.service)))
            .await
            .into_iter()
            .collect();
        assert_eq!(
            owners.len(),
            1,
            "members disagree on the owner of {}",
            b.service
        );
        assert!(owners.iter().all(Option::is_some));
    }

    // The cluster views.
    let peers: Vec<String> = c
        .http
        .get(format!("http://{}/v1/status/peers", c.nodes[1].http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut want: Vec<String> = c.nodes.iter().map(|n| n.grpc.to_string()).collect();
    want.sort();
    assert_eq!(peers, want);
    let v = c.cluster_json(0, None).await.unwrap();
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["state"] == "healthy"), "{v}");
    let owned: u64 = members
        .iter()
        .map(|m| m["ownedServices"].as_u64().unwrap())
        .sum();
    assert_eq!(owned, 10, "{v}");
    let empty = c
        .http
        .get(format!("http://{}/v1/cluster?service=", c.nodes[0].http))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 400);
    assert!(empty.text().await.unwrap().contains("parameter 'service'"));
    let servers: serde_json::Value = c
        .http
        .get(format!(
            "http://{}/nacos/v1/ns/operator/servers",
            c.nodes[0].http
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(servers["servers"].as_array().unwrap().len(), 3);
    let metrics = c
        .http
        .get(format!("http://{}/metrics", c.nodes[0].http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("berth_registry_cluster_members 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_registry_cluster_loaded 1"),
        "{metrics}"
    );

    // Peer calls without the cluster secret are refused.
    let mut intruder =
        pb::cluster_client::ClusterClient::connect(format!("http://{}", c.nodes[0].grpc))
            .await
            .unwrap();
    let refused = intruder
        .snapshot(pb::SnapshotRequest { from: "x".into() })
        .await
        .expect_err("no secret, no snapshot");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // A deregistration through a non-owner reaches everyone.
    let b = beaters.remove(0);
    let owner = c.owner(0, &b.service).await.unwrap();
    let other = (owner + 1) % 3;
    b.via.lock().unwrap().clone_from(&c.nodes[other].http);
    let (svc, ip, port) = (b.service.clone(), b.ip.clone(), b.port);
    b.stop().await;
    let r = c
        .http
        .delete(format!(
            "http://{}/nacos/v1/ns/instance",
            c.nodes[other].http
        ))
        .query(&[
            ("serviceName", svc.as_str()),
            ("ip", ip.as_str()),
            ("port", &port.to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    c.wait_converged(
        "a deregistration through a non-owner",
        &expected(&beaters),
        CONVERGE,
    )
    .await;
    for b in beaters {
        b.stop().await;
    }
}

#[tokio::test]
async fn owner_killed_restarted_empty_and_expiry_everywhere() {
    let mut c = Cluster::start(3).await;
    // Clients beat through node 0; find services owned by node 1 and 2.
    let mut beaters = Vec::new();
    for k in 0..9u16 {
        beaters.push(
            Beater::start(
                &c.http,
                c.nodes[0].http,
                &format!("pay-{k}"),
                "10.2.0.1",
                9000 + k,
            )
            .await,
        );
    }
    let want = expected(&beaters);
    c.wait_converged("initial registrations", &want, CONVERGE)
        .await;
    let mut victim = None;
    for b in &beaters {
        if let Some(o) = c.owner(0, &b.service).await
            && o != 0
        {
            victim = Some(o);
            break;
        }
    }
    let victim = victim.expect("some service is owned by node 1 or 2");

    // Kill the owner; while clients keep beating through node 0, no live instance may
    // disappear from the survivors (checked continuously, not only at the end).
    c.kill(victim).await;
    let survivors: Vec<usize> = c.alive();
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(registry_cluster::BEAT_TIMEOUT_MS + 2_000);
    while tokio::time::Instant::now() < deadline {
        for &i in &survivors {
            for (svc, set) in &want {
                let got = c.instances(i, svc).await.expect("survivor answers");
                let live: BTreeSet<String> = got
                    .iter()
                    .filter(|(_, _, healthy)| *healthy)
                    .map(|(ip, port, _)| format!("{ip}:{port}"))
                    .collect();
                assert_eq!(
                    &live, set,
                    "node{i} lost a live instance of {svc} after node{victim} died"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.wait_all_loaded(2).await;

    // Restart the dead member with an empty data folder: it loads a snapshot, converges.
    c.restart(victim, true).await;
    c.wait_all_loaded(3).await;
    c.wait_converged("the restarted member", &want, CONVERGE)
        .await;

    // Stop beating: expiry (on each owner) reaches every member.
    let stopped: Vec<Beater> = beaters.drain(..5).collect();
    for b in stopped {
        b.stop().await;
    }
    let want = expected(&beaters);
    let mut gone: BTreeMap<String, BTreeSet<String>> = want.clone();
    for k in 0..5u16 {
        gone.entry(format!("pay-{k}")).or_default();
    }
    c.wait_converged("expiry of silent instances", &gone, Duration::from_secs(15))
        .await;
    for b in beaters {
        b.stop().await;
    }
}

#[tokio::test]
async fn partitioned_member_rejoins_and_no_live_instance_is_lost() {
    let c = Cluster::start(3).await;
    let mut beaters = Vec::new();
    for k in 0..6u16 {
        let via = c.nodes[usize::from(k % 3)].http;
        beaters.push(Beater::start(&c.http, via, &format!("cart-{k}"), "10.3.0.1", 7000 + k).await);
    }
    c.wait_converged("before the partition", &expected(&beaters), CONVERGE)
        .await;

    // Cut node 2 off its peers; both sides go on serving (AP).
    c.isolate(2);
    wait_until(
        "both sides notice the partition",
        Duration::from_secs(10),
        || async {
            let a = c.cluster_json(0, None).await;
            let b = c.cluster_json(2, None).await;
            a.is_some_and(|v| v["view"].as_array().map_or(0, Vec::len) == 2)
                && b.is_some_and(|v| v["view"].as_array().map_or(0, Vec::len) == 1)
        },
    )
    .await;
    // New registrations on both sides during the partition.
    beaters.push(Beater::start(&c.http, c.nodes[0].http, "cart-new-a", "10.3.0.2", 7100).await);
    beaters.push(Beater::start(&c.http, c.nodes[2].http, "cart-new-c", "10.3.0.3", 7200).await);
    // Each side keeps its own clients' instances.
    let majority: BTreeMap<_, _> = expected(&beaters)
        .into_iter()
        .filter(|(s, _)| s != "cart-new-c")
        .collect();
    for svc in majority.keys() {
        wait_until("the majority side lists its clients", CONVERGE, || async {
            c.addrs(1, svc).await.as_ref() == majority.get(svc)
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    c.heal_all();
    c.wait_all_loaded(3).await;
    c.wait_converged(
        "after the heal",
        &expected(&beaters),
        Duration::from_secs(15),
    )
    .await;
    for b in beaters {
        b.stop().await;
    }
}

#[tokio::test]
async fn bad_cluster_settings_are_named() {
    let dir = berth_testkit::temp_dir();
    let run = |extra: Vec<String>| {
        let dir = dir.path().to_path_buf();
        async move {
            let out = tokio::process::Command::new(common::BIN)
                .args([
                    "registry",
                    "--listen",
                    "127.0.0.1:0",
                    "--grpc-listen",
                    "127.0.0.1:0",
                ])
                .arg("--data-dir")
                .arg(&dir)
                .args(extra)
                .output()
                .await
                .expect("run berth");
            assert!(!out.status.success());
            String::from_utf8_lossy(&out.stderr).to_string()
        }
    };
    let err = run(vec!["--peers".into(), "127.0.0.1:9848,nowhere".into()]).await;
    assert!(err.contains("peers") && err.contains("nowhere"), "{err}");
    // Peers without a cluster secret: refused, the message says which flag to give.
    let err = run(vec!["--peers".into(), "127.0.0.1:9848".into()]).await;
    assert!(err.contains("cluster-secret-file"), "{err}");
    let short = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(short.path(), "short").unwrap();
    let err = run(vec![
        "--peers".into(),
        "127.0.0.1:9848".into(),
        "--cluster-secret-file".into(),
        short.path().display().to_string(),
    ])
    .await;
    assert!(err.contains("cluster secret is 5 bytes"), "{err}");
    let err = run(vec!["--cluster-heartbeat".into(), "often".into()]).await;
    assert!(
        err.contains("cluster_heartbeat") && err.contains("often"),
        "{err}"
    );
}
