//! Two cluster members in one process: replication (deltas, gaps), forwarding, the
//! hand-off of writes whose owner does not answer, and idempotent forwarded writes,
//! fast enough to run on every change of the cluster code.

use std::net::SocketAddr;
use std::time::Duration;

use berth_proto::registry::v1 as pb;
use berth_registry::cluster::Stamp;
use berth_registry::cluster::peer::Peer;
use berth_registry::cluster::view::describe;
use berth_registry::cluster::wire::Delta;
use berth_registry::core::{Forwarded, ForwardedReply};
use berth_registry::model::{DEFAULT_CLUSTER, Instance, ServiceKey};
use berth_registry::{Op, RegistryConfig, RegistryHandle, start};
use berth_util::shutdown::Shutdown;

const SECRET: &str = "cluster-secret-for-tests-0123456789abcdef";

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

/// A TCP forwarder one member dials another through; cut, it moves no bytes and
/// accepts nothing through (the caller sees silence, as in a partition).
struct Link {
    addr: SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Link {
    async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let is_cut = *cut_rx.borrow();
                    if is_cut {
                        drop(cut_rx.wait_for(|c| !*c).await);
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let cut = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        r = cut_rx.wait_for(|c| *c) => r.is_ok(),
                    };
                    if cut {
                        // Hold both ends silent until healed, then close them.
                        drop(cut_rx.wait_for(|c| !*c).await);
                    }
                });
            }
        });
        Self { addr, cut }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn heal(&self) {
        self.cut.send_replace(false);
    }
}

/// Two members: the first dials the second through a [`Link`], the second dials the
/// first directly. Heartbeats every 100 ms; with 50 missed allowed a short cut only
/// makes calls time out, without moving ownership.
async fn linked_pair(
    shutdown: &Shutdown,
    missed_beats: u32,
) -> (Vec<RegistryHandle>, Link, Vec<tempfile::TempDir>) {
    let ports = [free_port().await, free_port().await];
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let link = Link::start(addrs[1]).await;
    let mut handles = Vec::new();
    let mut dirs = Vec::new();
    for (n, a) in addrs.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RegistryConfig::for_test(dir.path());
        config.grpc_listen = *a;
        config.cluster.peers = if n == 0 {
            vec![addrs[0].to_string(), link.addr.to_string()]
        } else {
            addrs.iter().map(ToString::to_string).collect()
        };
        config.cluster.advertise = Some(a.to_string());
        config.cluster.secret = Some(SECRET.into());
        config.cluster.heartbeat = Duration::from_millis(100);
        config.cluster.missed_beats = missed_beats;
        config.cluster.sync_interval = Duration::from_millis(300);
        config.cluster.replicate_delay = Duration::from_millis(20);
        config.cluster.rpc_timeout = Duration::from_millis(300);
        handles.push(start(config, shutdown).await.unwrap());
        dirs.push(dir);
    }
    wait("both loaded, each seeing both", || {
        handles.iter().all(|h| {
            let c = h.cluster().unwrap();
            c.is_loaded() && c.view().len() == 2
        })
    })
    .await;
    (handles, link, dirs)
}

/// A service name the second member owns.
fn owned_by(h: &RegistryHandle, owner: &RegistryHandle) -> ServiceKey {
    let id = owner.cluster().unwrap().id().to_string();
    (0..)
        .map(|n| ServiceKey::simple(format!("handoff-{n}")))
        .find(|k| h.cluster().unwrap().owner_of(k).as_deref() == Some(id.as_str()))
        .unwrap()
}

fn stat(h: &RegistryHandle, name: &str) -> u64 {
    describe(h.cluster().unwrap(), None)["stats"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("stat {name} missing"))
}

fn ports_of(h: &RegistryHandle, s: &ServiceKey) -> Vec<u16> {
    h.registry()
        .get(s)
        .map(|s| s.instances.keys().map(|k| k.port).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whose_owner_does_not_answer_are_handed_off_in_order_and_land_everywhere() {
    let shutdown = Shutdown::new();
    let (h, link, _dirs) = linked_pair(&shutdown, 50).await;
    let s = owned_by(&h[0], &h[1]);
    link.cut();
    // Three writes through the non-owner while its owner is silent: register 1,
    // deregister 1, register 2. Each client gets an answer within its own deadline.
    let r = h[0].registry().clone();
    let t0 = tokio::time::Instant::now();
    for op in [
        Op::Register {
            service: s.clone(),
            instance: Instance::new(&s, "10.0.0.1", 1, DEFAULT_CLUSTER),
        },
        Op::Deregister {
            service: s.clone(),
            instance: Instance::new(&s, "10.0.0.1", 1, DEFAULT_CLUSTER).key(),
        },
        Op::Register {
            service: s.clone(),
            instance: Instance::new(&s, "10.0.0.1", 2, DEFAULT_CLUSTER),
        },
    ] {
        r.submit(op).await.unwrap();
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(stat(&h[0], "forwardFailures") >= 1);
    assert_eq!(stat(&h[0], "handoffWaiting"), 3);
    // Not applied on the non-owner (the owner's state would overwrite it): it holds
    // only what the owner holds (the first request may have slipped through as the link
    // was cut, with only its answer lost).
    let (here, owner) = (ports_of(&h[0], &s), ports_of(&h[1], &s));
    assert!(here.iter().all(|p| owner.contains(p)), "{here:?} {owner:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stat(&h[0], "handoffRetries") >= 1);
    link.heal();
    wait(
        "the writes reach the owner, in order, and every member",
        || stat(&h[0], "handoffWaiting") == 0 && h.iter().all(|h| ports_of(h, &s) == vec![2]),
    )
    .await;
    assert_eq!(
        stat(&h[0], "handoffDelivered"),
        3,
        "{}",
        describe(h[0].cluster().unwrap(), None)
    );
    // Anti-entropy rounds later, nothing was overwritten.
    let rounds = stat(&h[1], "syncRounds");
    wait("two anti-entropy rounds", || {
        stat(&h[1], "syncRounds") >= rounds + 2
    })
    .await;
    assert!(h.iter().all(|h| ports_of(h, &s) == vec![2]));
    shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_sent_again_is_applied_once_and_a_delta_gap_is_reported() {
    let shutdown = Shutdown::new();
    let (h, _link, _dirs) = linked_pair(&shutdown, 50).await;
    let s = owned_by(&h[0], &h[1]);
    let owner = h[1].cluster().unwrap();
    let peer = Peer::new(
        owner.id(),
        SECRET,
        None,
        Duration::from_secs(2),
        Duration::from_secs(1),
    )
    .unwrap();
    let register = Forwarded::Op(Op::Register {
        service: s.clone(),
        instance: Instance::new(&s, "10.0.0.9", 9, DEFAULT_CLUSTER),
    });
    let timeout = Duration::from_secs(2);
    let (reply, _) = peer
        .forward("tester:1", (5, 1, 1), &register, timeout)
        .await
        .unwrap();
    assert!(matches!(reply, ForwardedReply::Op(Ok(()))));
    assert_eq!(ports_of(&h[1], &s), vec![9]);
    h[1].registry()
        .submit_local(Op::Deregister {
            service: s.clone(),
            instance: Instance::new(&s, "10.0.0.9", 9, DEFAULT_CLUSTER).key(),
        })
        .await
        .unwrap();
    // The same write again (its first answer was lost): answered, not re-applied.
    let (reply, raw) = peer
        .forward("tester:1", (5, 1, 1), &register, timeout)
        .await
        .unwrap();
    assert!(matches!(reply, ForwardedReply::Op(Ok(()))));
    assert!(raw.delta.is_none() && raw.state.is_none());
    assert!(ports_of(&h[1], &s).is_empty());
    assert_eq!(stat(&h[1], "forwardedAgain"), 1);
    // Once the sender says it finished number 1, a late copy is refused as stale.
    let later = Forwarded::Op(Op::Deregister {
        service: s.clone(),
        instance: Instance::new(&s, "10.0.0.9", 8, DEFAULT_CLUSTER).key(),
    });
    peer.forward("tester:1", (5, 2, 2), &later, timeout)
        .await
        .unwrap();
    let stale = peer
        .forward("tester:1", (5, 1, 2), &register, timeout)
        .await;
    assert!(stale.is_err(), "{stale:?}");
    assert!(ports_of(&h[1], &s).is_empty());

    // A delta from an owner life this member never heard of: a gap, named in the ack.
    let other = ServiceKey::simple("gap");
    let mut svc = berth_registry::Service::new(other.clone());
    let i = Instance::new(&other, "10.0.0.1", 1, DEFAULT_CLUSTER);
    svc.instances
        .insert(i.key(), std::sync::Arc::new(i.clone()));
    let stamp = Stamp {
        origin: "tester:1".into(),
        incarnation: 5,
        revision: 9,
    };
    let delta = Delta::of(&svc, 8, stamp, [&i.key()]).encode();
    let ack = peer
        .replicate(
            pb::StateBatch {
                from: "tester:1".into(),
                states: Vec::new(),
                deltas: vec![delta],
            },
            timeout,
        )
        .await
        .unwrap();
    assert_eq!(ack.gaps.len(), 1);
    assert_eq!(ack.applied, 0);
    shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_existing_services_replicate_as_deltas() {
    let shutdown = Shutdown::new();
    let (h, _link, _dirs) = linked_pair(&shutdown, 50).await;
    let s = owned_by(&h[0], &h[1]);
    for port in 1..=20u16 {
        h[0].registry()
            .submit(Op::Register {
                service: s.clone(),
                instance: Instance::new(&s, "10.0.0.1", port, DEFAULT_CLUSTER),
            })
            .await
            .unwrap();
    }
    h[1].registry()
        .submit(Op::Deregister {
            service: s.clone(),
            instance: Instance::new(&s, "10.0.0.1", 7, DEFAULT_CLUSTER).key(),
        })
        .await
        .unwrap();
    let want: Vec<u16> = (1..=20).filter(|p| *p != 7).collect();
    wait("every member holds the same 19 instances", || {
        h.iter().all(|h| ports_of(h, &s) == want)
    })
    .await;
    assert!(
        stat(&h[1], "deltasSent") >= 1,
        "{}",
        describe(h[1].cluster().unwrap(), None)
    );
    assert!(stat(&h[0], "deltasApplied") >= 1);
    shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waiting_for_an_owner_that_leaves_is_applied_by_its_new_owner() {
    let shutdown = Shutdown::new();
    let (h, link, _dirs) = linked_pair(&shutdown, 5).await;
    let s = owned_by(&h[0], &h[1]);
    link.cut();
    h[0].registry()
        .submit(Op::Register {
            service: s.clone(),
            instance: Instance::new(&s, "10.0.0.1", 1, DEFAULT_CLUSTER),
        })
        .await
        .unwrap();
    // Five missed heartbeats later the first member owns the key and applies the write
    // itself, and writes after it go straight in.
    wait("the new owner applied the waiting write", || {
        ports_of(&h[0], &s) == vec![1]
    })
    .await;
    assert_eq!(stat(&h[0], "handoffAppliedHere"), 1);
    assert_eq!(stat(&h[0], "handoffWaiting"), 0);
    h[0].registry()
        .submit(Op::Register {
            service: s.clone(),
            instance: Instance::new(&s, "10.0.0.1", 2, DEFAULT_CLUSTER),
        })
        .await
        .unwrap();
    assert_eq!(ports_of(&h[0], &s), vec![1, 2]);
    link.heal();
    shutdown.trigger();
}
