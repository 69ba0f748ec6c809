//! A small in-process registry implementing the watch contract of `berth-proto`, so the
//! router's client is tested against a real gRPC server over loopback.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use berth_proto::registry::v1 as pb;
use berth_proto::registry::v1::registry_server::{Registry, RegistryServer};
use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct State {
    revision: u64,
    services: Vec<pb::Service>,
    history: Vec<pb::WatchEvent>,
}

#[derive(Clone)]
pub struct FakeRegistry {
    state: Arc<Mutex<State>>,
    tx: broadcast::Sender<pb::WatchEvent>,
    pub requests: Arc<Mutex<Vec<pb::WatchRequest>>>,
    /// Fires when the current server is stopped: open streams fail like a crash would.
    stop: Arc<Mutex<CancellationToken>>,
}

impl Default for FakeRegistry {
    fn default() -> Self {
        FakeRegistry {
            state: Default::default(),
            tx: broadcast::channel(1024).0,
            requests: Default::default(),
            stop: Default::default(),
        }
    }
}

impl FakeRegistry {
    /// Replaces (or adds) a service and pushes the change to every watcher.
    pub fn put(&self, mut service: pb::Service, deleted: bool) -> u64 {
        let mut st = self.state.lock().unwrap();
        st.revision += 1;
        service.revision = st.revision;
        st.services.retain(|s| s.name != service.name);
        if !deleted {
            st.services.push(service.clone());
        }
        let event = pb::WatchEvent {
            revision: st.revision,
            kind: Some(pb::watch_event::Kind::Change(pb::ServiceChange {
                service: Some(service),
                deleted,
            })),
        };
        st.history.push(event.clone());
        let _ = self.tx.send(event);
        st.revision
    }

    pub fn revision(&self) -> u64 {
        self.state.lock().unwrap().revision
    }

    /// Serves on `addr` (port 0 for a fresh one) until the returned token is cancelled;
    /// then open watch streams fail and the listener closes.
    pub async fn serve(&self, addr: SocketAddr) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        *self.stop.lock().unwrap() = stop.clone();
        let svc = RegistryServer::new(self.clone());
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    until.cancelled_owned(),
                )
                .await;
        });
        (addr, stop)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Registry for FakeRegistry {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: tonic::Request<pb::WatchRequest>,
    ) -> Result<tonic::Response<WatchStream>, tonic::Status> {
        let req = request.into_inner();
        self.requests.lock().unwrap().push(req.clone());
        let rx = self.tx.subscribe();
        let first: Vec<pb::WatchEvent> = {
            let st = self.state.lock().unwrap();
            if req.from_revision == 0 {
                vec![pb::WatchEvent {
                    revision: st.revision,
                    kind: Some(pb::watch_event::Kind::Snapshot(pb::Snapshot {
                        services: st.services.clone(),
                    })),
                }]
            } else {
                st.history
                    .iter()
                    .filter(|e| e.revision > req.from_revision)
                    .cloned()
                    .collect()
            }
        };
        let live = BroadcastStream::new(rx).filter_map(|e| async move { e.ok() });
        let stop = self.stop.lock().unwrap().clone();
        let stream = futures::stream::iter(first)
            .chain(live)
            .map(Ok)
            .take_until(stop.cancelled_owned())
            .chain(futures::stream::once(async {
                Err(tonic::Status::unavailable("registry stopped"))
            }));
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

pub fn instance(addr: SocketAddr, healthy: bool, meta: &[(&str, &str)]) -> pb::Instance {
    pb::Instance {
        id: format!("{}#{}#DEFAULT#svc", addr.ip(), addr.port()),
        ip: addr.ip().to_string(),
        port: u32::from(addr.port()),
        weight: 1.0,
        healthy,
        enabled: true,
        ephemeral: true,
        cluster: "DEFAULT".into(),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

pub fn service(name: &str, instances: Vec<pb::Instance>) -> pb::Service {
    pb::Service {
        namespace: "public".into(),
        group: "DEFAULT_GROUP".into(),
        name: name.into(),
        metadata: Default::default(),
        instances,
        revision: 0,
    }
}
