//! A fake agent for server tests: speaks the real agent stream over real gRPC and "runs"
//! instances by keeping them in a map, so tests can drive failures and silence. It proves
//! the server's side of the contract; the real agent has its own tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::agent::v1 as pb;
use berth_proto::agent::v1::agent_link_client::AgentLinkClient;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Inner {
    pub instances: BTreeMap<String, pb::InstanceStatus>,
    pub starts: Vec<pb::StartInstance>,
    pub stops: Vec<pb::StopInstance>,
    pub welcome: Option<pb::Welcome>,
    /// While set, heartbeats are not sent (the node goes silent).
    pub silent: bool,
}

pub struct FakeAgent {
    pub node_id: String,
    pub inner: Arc<Mutex<Inner>>,
    tx: mpsc::Sender<pb::AgentMessage>,
    cancel: CancellationToken,
}

pub struct NodeSpec {
    pub id: String,
    pub cpus: f64,
    pub mem_mib: u64,
    pub labels: Vec<(String, String)>,
    /// Already running (as after an agent or server restart).
    pub running: Vec<pb::InstanceStatus>,
}

impl NodeSpec {
    pub fn new(id: &str, cpus: f64, mem_mib: u64) -> Self {
        NodeSpec {
            id: id.into(),
            cpus,
            mem_mib,
            labels: Vec::new(),
            running: Vec::new(),
        }
    }
}

pub fn status(start: &pb::StartInstance, state: pb::InstanceState) -> pb::InstanceStatus {
    pb::InstanceStatus {
        instance_id: start.instance_id.clone(),
        app_id: start.app_id.clone(),
        app_version: start.app_version,
        state: state as i32,
        ports: (0..start.port_count).map(|i| 20000 + i).collect(),
        pid: 4242,
        started_at_ms: now_ms(),
        updated_at_ms: now_ms(),
        exit_code: None,
        message: String::new(),
        stderr_tail: String::new(),
        resources: start.resources,
    }
}

/// Strictly increasing, so start order is unambiguous even within one millisecond.
fn now_ms() -> i64 {
    static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let prev = LAST.fetch_max(wall, std::sync::atomic::Ordering::SeqCst);
    if prev >= wall {
        LAST.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    } else {
        wall
    }
}

impl FakeAgent {
    pub async fn connect(server: SocketAddr, spec: NodeSpec) -> FakeAgent {
        let mut client = AgentLinkClient::connect(format!("http://{server}"))
            .await
            .expect("connect to agent listener");
        let (tx, rx) = mpsc::channel(64);
        let inner = Arc::new(Mutex::new(Inner::default()));
        {
            let mut i = inner.lock().unwrap();
            for s in &spec.running {
                i.instances.insert(s.instance_id.clone(), s.clone());
            }
        }
        tx.send(pb::AgentMessage {
            kind: Some(pb::agent_message::Kind::Hello(pb::Hello {
                node_id: spec.id.clone(),
                hostname: spec.id.clone(),
                labels: spec.labels.into_iter().collect(),
                total: Some(pb::Resources {
                    cpus: spec.cpus,
                    mem_mib: spec.mem_mib,
                    disk_mib: 10_000,
                }),
                drivers: vec!["process".into()],
                version: "fake".into(),
                address: "127.0.0.1".into(),
                instances: spec.running,
                status_url: String::new(),
            })),
        })
        .await
        .unwrap();
        let mut inbound = client
            .session(ReceiverStream::new(rx))
            .await
            .expect("session accepted")
            .into_inner();
        let cancel = CancellationToken::new();

        // Commands: starts run at once, stops end at once.
        let (inner2, tx2, cancel2) = (inner.clone(), tx.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = inbound.next() => m,
                    _ = cancel2.cancelled() => return,
                };
                let Some(Ok(msg)) = msg else { return };
                let event = {
                    let mut i = inner2.lock().unwrap();
                    match msg.kind {
                        Some(pb::server_message::Kind::Welcome(w)) => {
                            i.welcome = Some(w);
                            None
                        }
                        Some(pb::server_message::Kind::Start(s)) => {
                            let st = status(&s, pb::InstanceState::Running);
                            i.instances.insert(s.instance_id.clone(), st.clone());
                            i.starts.push(s);
                            Some(st)
                        }
                        Some(pb::server_message::Kind::Stop(s)) => {
                            let gone = i.instances.remove(&s.instance_id);
                            i.stops.push(s);
                            gone.map(|mut g| {
                                g.state = pb::InstanceState::Exited as i32;
                                g
                            })
                        }
                        None => None,
                    }
                };
                if let Some(st) = event {
                    let _ = tx2
                        .send(pb::AgentMessage {
                            kind: Some(pb::agent_message::Kind::Event(pb::InstanceEvent {
                                instance: Some(st),
                            })),
                        })
                        .await;
                }
            }
        });

        // Heartbeats at the interval the server asked for.
        let (inner3, tx3, cancel3) = (inner.clone(), tx.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let (interval, hb) = {
                    let i = inner3.lock().unwrap();
                    let interval = i
                        .welcome
                        .as_ref()
                        .map(|w| Duration::from_millis(u64::from(w.heartbeat_interval_ms)))
                        .unwrap_or(Duration::from_millis(50));
                    let hb = (!i.silent).then(|| pb::Heartbeat {
                        used: None,
                        load1: 0.1,
                        instances: i.instances.values().cloned().collect(),
                    });
                    (interval, hb)
                };
                if let Some(hb) = hb
                    && tx3
                        .send(pb::AgentMessage {
                            kind: Some(pb::agent_message::Kind::Heartbeat(hb)),
                        })
                        .await
                        .is_err()
                {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = cancel3.cancelled() => return,
                }
            }
        });
        FakeAgent {
            node_id: spec.id,
            inner,
            tx,
            cancel,
        }
    }

    pub fn running(&self) -> Vec<pb::InstanceStatus> {
        self.inner
            .lock()
            .unwrap()
            .instances
            .values()
            .cloned()
            .collect()
    }

    pub fn running_of(&self, app: &str) -> usize {
        self.running().iter().filter(|i| i.app_id == app).count()
    }

    pub fn starts(&self) -> usize {
        self.inner.lock().unwrap().starts.len()
    }

    pub fn stops(&self) -> usize {
        self.inner.lock().unwrap().stops.len()
    }

    /// The instance dies: reported as failed at once, then dropped from heartbeats.
    pub async fn fail(&self, instance_id: &str) {
        let st = {
            let mut i = self.inner.lock().unwrap();
            let mut st = i.instances.remove(instance_id).expect("instance exists");
            st.state = pb::InstanceState::Failed as i32;
            st.exit_code = Some(1);
            st.message = "exited with code 1".into();
            st
        };
        self.tx
            .send(pb::AgentMessage {
                kind: Some(pb::agent_message::Kind::Event(pb::InstanceEvent {
                    instance: Some(st),
                })),
            })
            .await
            .unwrap();
    }

    /// Moves an instance to `state` (e.g. healthy) and reports it at once.
    pub async fn set_state(&self, instance_id: &str, state: pb::InstanceState) {
        let st = {
            let mut i = self.inner.lock().unwrap();
            let st = i.instances.get_mut(instance_id).expect("instance exists");
            st.state = state as i32;
            st.clone()
        };
        self.tx
            .send(pb::AgentMessage {
                kind: Some(pb::agent_message::Kind::Event(pb::InstanceEvent {
                    instance: Some(st),
                })),
            })
            .await
            .unwrap();
    }

    /// Stops heartbeats and closes the stream: the node vanishes.
    pub fn vanish(&self) {
        self.inner.lock().unwrap().silent = true;
        self.cancel.cancel();
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
