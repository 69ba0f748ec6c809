//! Native watch stream (`berth.registry.v1.Registry/Watch`): a snapshot (or the missed
//! changes when resuming) then every change of the watched services, in revision order.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use berth_proto::registry::v1 as pb;
use berth_proto::registry::v1::registry_server::{Registry as RegistryRpc, RegistryServer};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::core::Registry;
use crate::model::{DEFAULT_GROUP, DEFAULT_NAMESPACE, Service, ServiceKey};
use crate::naming::Change;

/// Which services one watch wants.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    namespace: String,
    services: Option<HashSet<ServiceKey>>,
}

impl WatchFilter {
    pub fn new(namespace: &str, services: &[String]) -> Self {
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE.to_string()
        } else {
            namespace.to_string()
        };
        let services = (!services.is_empty()).then(|| {
            services
                .iter()
                .map(|s| ServiceKey::parse_grouped(&namespace, s, DEFAULT_GROUP))
                .collect()
        });
        Self {
            namespace,
            services,
        }
    }

    pub fn matches(&self, key: &ServiceKey) -> bool {
        *key.namespace == *self.namespace && self.services.as_ref().is_none_or(|s| s.contains(key))
    }
}

/// Converts a service to its wire form.
pub fn to_proto(s: &Service) -> pb::Service {
    pb::Service {
        namespace: s.key.namespace.to_string(),
        group: s.key.group.to_string(),
        name: s.key.name.to_string(),
        metadata: s.metadata.clone().into_iter().collect(),
        revision: s.revision,
        instances: s
            .instances
            .values()
            .map(|i| pb::Instance {
                id: i.id(&s.key).into_owned(),
                ip: i.ip.to_string(),
                port: u32::from(i.port),
                weight: i.weight,
                healthy: i.healthy(),
                enabled: i.enabled,
                ephemeral: i.ephemeral,
                cluster: i.cluster.to_string(),
                metadata: i
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect(),
    }
}

fn snapshot_event(registry: &Registry, filter: &WatchFilter) -> pb::WatchEvent {
    let (revision, services) = registry.snapshot();
    let mut services: Vec<pb::Service> = services
        .iter()
        .filter(|s| filter.matches(&s.key))
        .map(|s| to_proto(s))
        .collect();
    services.sort_by(|a, b| (&a.group, &a.name).cmp(&(&b.group, &b.name)));
    pb::WatchEvent {
        revision,
        kind: Some(pb::watch_event::Kind::Snapshot(pb::Snapshot { services })),
    }
}

fn change_event(c: &Change) -> pb::WatchEvent {
    let (service, deleted) = match &c.service {
        Some(s) => (to_proto(s), false),
        None => (
            pb::Service {
                namespace: c.key.namespace.to_string(),
                group: c.key.group.to_string(),
                name: c.key.name.to_string(),
                revision: c.revision,
                ..Default::default()
            },
            true,
        ),
    };
    pb::WatchEvent {
        revision: c.revision,
        kind: Some(pb::watch_event::Kind::Change(pb::ServiceChange {
            service: Some(service),
            deleted,
        })),
    }
}

/// The gRPC service. Streams end when `shutdown` fires or the client goes away.
#[derive(Clone)]
pub struct WatchService {
    registry: Registry,
    shutdown: CancellationToken,
    active: Arc<std::sync::atomic::AtomicU64>,
}

impl WatchService {
    pub fn new(registry: Registry, shutdown: CancellationToken) -> Self {
        Self {
            registry,
            shutdown,
            active: Arc::default(),
        }
    }

    pub fn into_server(self) -> RegistryServer<Self> {
        RegistryServer::new(self)
    }

    /// Open watch streams.
    pub fn active(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.active.clone()
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl RegistryRpc for WatchService {
    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        if req.services.len() > 10_000 {
            return Err(Status::invalid_argument(
                "services lists more than 10000 names; watch all services instead",
            ));
        }
        let filter = WatchFilter::new(&req.namespace, &req.services);
        let registry = self.registry.clone();
        let shutdown = self.shutdown.clone();
        let active = self.active.clone();
        let (tx, rx) = mpsc::channel(256);
        // Subscribe before reading state so no change falls between the two.
        let changes = registry.changes();
        tokio::spawn(async move {
            active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            stream_events(registry, filter, req.from_revision, changes, tx, shutdown).await;
            active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn stream_events(
    registry: Registry,
    filter: WatchFilter,
    from: u64,
    mut changes: broadcast::Receiver<Change>,
    tx: mpsc::Sender<Result<pb::WatchEvent, Status>>,
    shutdown: CancellationToken,
) {
    let current = registry.revision();
    let resumed = (from > 0 && from <= current)
        .then(|| registry.changes_since(from))
        .flatten();
    let mut last = match resumed {
        Some(missed) => {
            let mut last = from;
            for c in missed.iter().filter(|c| filter.matches(&c.key)) {
                if tx.send(Ok(change_event(c))).await.is_err() {
                    return;
                }
            }
            if let Some(c) = missed.last() {
                last = c.revision;
            }
            last
        }
        None => {
            let snap = snapshot_event(&registry, &filter);
            let rev = snap.revision;
            if tx.send(Ok(snap)).await.is_err() {
                return;
            }
            rev
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tx.closed() => return,
            received = changes.recv() => match received {
                Ok(c) => {
                    if c.revision <= last {
                        continue;
                    }
                    last = c.revision;
                    if filter.matches(&c.key) && tx.send(Ok(change_event(&c))).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // The consumer fell behind the change buffer: start it over.
                    let snap = snapshot_event(&registry, &filter);
                    last = snap.revision;
                    if tx.send(Ok(snap)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::CoreOptions;
    use crate::model::{DEFAULT_CLUSTER, Instance};
    use crate::naming::Op;
    use futures::StreamExt;

    async fn reg(r: &Registry, name: &str, port: u16) {
        let s = ServiceKey::simple(name);
        r.submit(Op::Register {
            instance: Instance::new(&s, "10.0.0.1", port, DEFAULT_CLUSTER),
            service: s,
        })
        .await
        .unwrap();
    }

    fn kind(e: &pb::WatchEvent) -> &pb::watch_event::Kind {
        e.kind.as_ref().unwrap()
    }

    #[tokio::test]
    async fn snapshot_then_changes_then_resume() {
        let r = Registry::start(CoreOptions::default()).unwrap();
        reg(&r, "a", 1).await;
        let svc = WatchService::new(r.clone(), CancellationToken::new());
        let req = pb::WatchRequest {
            services: vec!["a".into()],
            ..Default::default()
        };
        let mut stream = svc.watch(Request::new(req)).await.unwrap().into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.revision, 1);
        assert!(
            matches!(kind(&first), pb::watch_event::Kind::Snapshot(s) if s.services.len() == 1)
        );
        reg(&r, "b", 1).await; // filtered out
        reg(&r, "a", 2).await;
        let next = stream.next().await.unwrap().unwrap();
        assert_eq!(next.revision, 3);
        match kind(&next) {
            pb::watch_event::Kind::Change(c) => {
                assert_eq!(c.service.as_ref().unwrap().instances.len(), 2)
            }
            other => panic!("expected a change, got {other:?}"),
        }
        // Resume from revision 1: only the missed change of "a".
        let req = pb::WatchRequest {
            from_revision: 1,
            ..Default::default()
        };
        let mut resumed = svc.watch(Request::new(req)).await.unwrap().into_inner();
        let revs: Vec<u64> = vec![
            resumed.next().await.unwrap().unwrap().revision,
            resumed.next().await.unwrap().unwrap().revision,
        ];
        assert_eq!(revs, vec![2, 3]);
        // A revision from a previous life of the registry gets a snapshot.
        let req = pb::WatchRequest {
            from_revision: 99,
            ..Default::default()
        };
        let mut fresh = svc.watch(Request::new(req)).await.unwrap().into_inner();
        let e = fresh.next().await.unwrap().unwrap();
        assert!(matches!(kind(&e), pb::watch_event::Kind::Snapshot(s) if s.services.len() == 2));
    }
}
