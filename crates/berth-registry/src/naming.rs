//! The naming state and the one function that changes it.
//!
//! Every mutation is an [`Op`] value applied by [`Naming::apply`]. That keeps the state
//! machine replayable: replication (Distro) only has to ship ops to peers, and tests can
//! drive the state without any runtime.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{ClusterConfig, HealthStatus, Instance, InstanceKey, Name, Service, ServiceKey};

/// One mutation of the naming state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Adds or replaces an instance; creates the service when missing.
    Register {
        service: ServiceKey,
        instance: Instance,
    },
    /// Replaces an existing instance's fields; fails when it does not exist.
    Update {
        service: ServiceKey,
        instance: Instance,
    },
    /// Removes an instance (no error when absent: deregistration is idempotent).
    Deregister {
        service: ServiceKey,
        instance: InstanceKey,
    },
    /// Removes an instance only while the connection `owner` holds it: a connection that
    /// closed releases what it registered, and an instance another connection (or a
    /// beating client) registered since is left alone.
    Release {
        service: ServiceKey,
        instance: InstanceKey,
        owner: Name,
    },
    /// Health verdict from beats or server-side checks.
    SetHealth {
        service: ServiceKey,
        instance: InstanceKey,
        status: HealthStatus,
    },
    CreateService {
        service: ServiceKey,
        metadata: BTreeMap<String, String>,
        protect_threshold: f32,
        selector: Option<String>,
    },
    UpdateService {
        service: ServiceKey,
        metadata: BTreeMap<String, String>,
        protect_threshold: f32,
        selector: Option<String>,
    },
    DeleteService {
        service: ServiceKey,
    },
    /// Sets a cluster's check (and metadata); its persistent instances take the check.
    UpdateCluster {
        service: ServiceKey,
        cluster: String,
        config: ClusterConfig,
    },
    /// A service's whole state as its owner replicated it (`None`: it no longer exists).
    /// The only op a cluster peer sends; it replaces whatever this node holds.
    Put {
        service: ServiceKey,
        state: Option<Service>,
    },
    /// Some instances of a service as its owner replicated them: `put` adds or replaces,
    /// `removed` drops. Refused when the service is missing (its owner then sends it
    /// whole). Like `Put`, only a cluster peer sends it.
    Patch {
        service: ServiceKey,
        put: Vec<Arc<Instance>>,
        removed: Vec<InstanceKey>,
    },
}

impl Op {
    pub fn service(&self) -> &ServiceKey {
        match self {
            Op::Register { service, .. }
            | Op::Update { service, .. }
            | Op::Deregister { service, .. }
            | Op::Release { service, .. }
            | Op::SetHealth { service, .. }
            | Op::CreateService { service, .. }
            | Op::UpdateService { service, .. }
            | Op::DeleteService { service }
            | Op::UpdateCluster { service, .. }
            | Op::Put { service, .. }
            | Op::Patch { service, .. } => service,
        }
    }
}

/// Why an op was refused. Messages say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NamingError {
    #[error("service {0} not found; register an instance or create the service first")]
    ServiceNotFound(String),
    #[error("service {0} already exists; update it instead")]
    ServiceExists(String),
    #[error(
        "instance {ip}:{port} (cluster {cluster}) not found in service {service}; register it first"
    )]
    InstanceNotFound {
        service: String,
        ip: String,
        port: u16,
        cluster: String,
    },
    #[error("service {0} still has instances; deregister them before deleting the service")]
    ServiceNotEmpty(String),
    #[error("the registry is shutting down; retry against another node")]
    ShuttingDown,
    #[error(
        "the member owning service {0} is not answering and too many writes already wait for it here; retry shortly"
    )]
    OwnerBusy(String),
}

/// Which part of a service a change touched: replication sends only that part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// Creation, deletion, settings or clusters: the whole service.
    Whole,
    /// These instances only; each now holds its new value in the service, or is gone.
    Instances(Arc<[InstanceKey]>),
}

/// A committed change: the service's whole state after it, or `None` when deleted.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: u64,
    pub key: ServiceKey,
    pub service: Option<Arc<Service>>,
    /// The service's revision before this change (0: it did not exist): a replica that
    /// holds exactly that revision can apply the touched part alone.
    pub base: u64,
    pub touched: Touched,
}

/// What [`Naming::apply`] did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// `None` when the op changed nothing (same data, or removing what was absent).
    pub change: Option<Change>,
    /// The instance as it was before the op, if the op touched one.
    pub previous: Option<Arc<Instance>>,
}

/// All services, the global revision and a bounded history of recent changes.
#[derive(Debug)]
pub struct Naming {
    services: HashMap<ServiceKey, Arc<Service>>,
    revision: u64,
    history: VecDeque<Change>,
    history_limit: usize,
}

impl Default for Naming {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl Naming {
    pub fn new(history_limit: usize) -> Self {
        Self {
            services: HashMap::new(),
            revision: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn get(&self, key: &ServiceKey) -> Option<Arc<Service>> {
        self.services.get(key).cloned()
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub fn instance_count(&self) -> usize {
        self.services.values().map(|s| s.instances.len()).sum()
    }

    /// Changes after `revision`, oldest first, or `None` when history no longer reaches
    /// back that far (the caller then needs a snapshot).
    pub fn changes_since(&self, revision: u64) -> Option<Vec<Change>> {
        if revision >= self.revision {
            return Some(Vec::new());
        }
        let oldest = self.history.front()?.revision;
        if revision + 1 < oldest {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|c| c.revision > revision)
                .cloned()
                .collect(),
        )
    }

    /// Applies one op. The only function that mutates the naming state.
    pub fn apply(&mut self, op: Op) -> Result<Applied, NamingError> {
        match op {
            Op::Register {
                service,
                mut instance,
            } => {
                let current = self.services.get(&service).cloned();
                let mut svc = current
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| Service::new(service.clone()));
                compact(&svc, &instance.key(), &mut instance);
                let instance = Arc::new(instance);
                let previous = svc.instances.insert(instance.key(), instance.clone());
                if current.is_some() && previous.as_deref() == Some(&*instance) {
                    return Ok(Applied {
                        change: None,
                        previous,
                    });
                }
                Ok(self.commit(svc, previous, one(instance.key())))
            }
            Op::Update {
                service,
                mut instance,
            } => {
                let mut svc = self.existing(&service)?;
                let key = instance.key();
                if !svc.instances.contains_key(&key) {
                    return Err(not_found(&service, &key));
                }
                compact(&svc, &key, &mut instance);
                let key = instance.key();
                let instance = Arc::new(instance);
                let previous = svc.instances.insert(key, instance.clone());
                if previous.as_deref() == Some(&*instance) {
                    return Ok(Applied {
                        change: None,
                        previous,
                    });
                }
                Ok(self.commit(svc, previous, one(instance.key())))
            }
            Op::Deregister { service, instance } => {
                let Some(current) = self.services.get(&service) else {
                    return Ok(Applied {
                        change: None,
                        previous: None,
                    });
                };
                if !current.instances.contains_key(&instance) {
                    return Ok(Applied {
                        change: None,
                        previous: None,
                    });
                }
                let mut svc = (**current).clone();
                let previous = svc.instances.remove(&instance);
                Ok(self.commit(svc, previous, one(instance)))
            }
            Op::Release {
                service,
                instance,
                owner,
            } => {
                let held = self
                    .services
                    .get(&service)
                    .and_then(|s| s.instances.get(&instance))
                    .is_some_and(|i| i.owner.as_deref() == Some(&*owner));
                if !held {
                    return Ok(Applied {
                        change: None,
                        previous: None,
                    });
                }
                self.apply(Op::Deregister { service, instance })
            }
            Op::SetHealth {
                service,
                instance,
                status,
            } => {
                let mut svc = self.existing(&service)?;
                let Some(inst) = svc.instances.get_mut(&instance) else {
                    return Err(not_found(&service, &instance));
                };
                let previous = Some(inst.clone());
                if inst.status == status {
                    return Ok(Applied {
                        change: None,
                        previous,
                    });
                }
                Arc::make_mut(inst).status = status;
                Ok(self.commit(svc, previous, one(instance)))
            }
            Op::CreateService {
                service,
                metadata,
                protect_threshold,
                selector,
            } => {
                if self.services.contains_key(&service) {
                    return Err(NamingError::ServiceExists(service.to_string()));
                }
                let mut svc = Service::new(service);
                svc.metadata = metadata;
                svc.protect_threshold = protect_threshold;
                svc.selector = selector;
                Ok(self.commit(svc, None, Touched::Whole))
            }
            Op::UpdateService {
                service,
                metadata,
                protect_threshold,
                selector,
            } => {
                let mut svc = self.existing(&service)?;
                if svc.metadata == metadata
                    && svc.protect_threshold == protect_threshold
                    && svc.selector == selector
                {
                    return Ok(Applied {
                        change: None,
                        previous: None,
                    });
                }
                svc.metadata = metadata;
                svc.protect_threshold = protect_threshold;
                svc.selector = selector;
                Ok(self.commit(svc, None, Touched::Whole))
            }
            Op::UpdateCluster {
                service,
                cluster,
                config,
            } => {
                let mut svc = self.existing(&service)?;
                if svc.clusters.get(&cluster) == Some(&config) {
                    return Ok(Applied {
                        change: None,
                        previous: None,
                    });
                }
                let keys: Vec<InstanceKey> = svc
                    .instances
                    .iter()
                    .filter(|(k, i)| *k.cluster == *cluster && !i.ephemeral)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    if let Some(i) = svc.instances.get_mut(&key) {
                        Arc::make_mut(i).check = Some(config.check.clone());
                    }
                }
                svc.clusters.insert(cluster, config);
                Ok(self.commit(svc, None, Touched::Whole))
            }
            Op::Put { service, state } => Ok(self.put(service, state)),
            Op::Patch {
                service,
                put,
                removed,
            } => {
                let mut svc = self.existing(&service)?;
                let mut touched = Vec::with_capacity(put.len() + removed.len());
                for instance in put {
                    let key = instance.key();
                    if svc.instances.get(&key) != Some(&instance) {
                        svc.instances.insert(key.clone(), instance);
                        touched.push(key);
                    }
                }
                for key in removed {
                    if svc.instances.remove(&key).is_some() {
                        touched.push(key);
                    }
                }
                if touched.is_empty() {
                    return Ok(Applied {
                        change: None,
                        previous: None,
                    });
                }
                Ok(self.commit(svc, None, Touched::Instances(touched.into())))
            }
            Op::DeleteService { service } => {
                let svc = self.existing(&service)?;
                if !svc.instances.is_empty() {
                    return Err(NamingError::ServiceNotEmpty(service.to_string()));
                }
                self.services.remove(&service);
                self.revision += 1;
                let change = Change {
                    revision: self.revision,
                    key: service,
                    service: None,
                    base: svc.revision,
                    touched: Touched::Whole,
                };
                self.record(change.clone());
                Ok(Applied {
                    change: Some(change),
                    previous: None,
                })
            }
        }
    }

    /// Replaces a whole service with a replicated state; no change when equal but for
    /// the revision (revisions are per node).
    fn put(&mut self, key: ServiceKey, state: Option<Service>) -> Applied {
        let unchanged = Applied {
            change: None,
            previous: None,
        };
        match state {
            None => {
                let Some(gone) = self.services.remove(&key) else {
                    return unchanged;
                };
                self.revision += 1;
                let change = Change {
                    revision: self.revision,
                    key,
                    service: None,
                    base: gone.revision,
                    touched: Touched::Whole,
                };
                self.record(change.clone());
                Applied {
                    change: Some(change),
                    previous: None,
                }
            }
            Some(mut svc) => {
                svc.key = key;
                if let Some(current) = self.services.get(&svc.key) {
                    svc.revision = current.revision;
                    if **current == svc {
                        return unchanged;
                    }
                }
                self.commit(svc, None, Touched::Whole)
            }
        }
    }

    /// Applies one sweep's expiry verdicts for one service (`SetHealth` to critical,
    /// `Deregister`; other ops are ignored) as a single change. When thousands of
    /// instances of a service fall silent together (a client fleet restarting, a network
    /// cut), watchers and pushes get one new state instead of thousands, and the sweep
    /// copies the service's tree once. Returns the change, and whether a persistent
    /// instance was touched (the caller then saves).
    pub fn apply_expiry(
        &mut self,
        service: &ServiceKey,
        verdicts: &[Op],
    ) -> (Option<Change>, bool) {
        let Some(current) = self.services.get(service) else {
            return (None, false);
        };
        let mut svc = (**current).clone();
        let mut touched = Vec::new();
        let mut durable = false;
        for op in verdicts {
            match op {
                Op::SetHealth {
                    instance, status, ..
                } => {
                    if svc
                        .instances
                        .get(instance)
                        .is_some_and(|i| i.status != *status)
                        && let Some(i) = svc.instances.get_mut(instance)
                    {
                        durable |= !i.ephemeral;
                        Arc::make_mut(i).status = *status;
                        touched.push(instance.clone());
                    }
                }
                Op::Deregister { instance, .. } => {
                    if let Some(i) = svc.instances.remove(instance) {
                        durable |= !i.ephemeral;
                        touched.push(instance.clone());
                    }
                }
                _ => {}
            }
        }
        if touched.is_empty() {
            return (None, false);
        }
        (
            self.commit(svc, None, Touched::Instances(touched.into()))
                .change,
            durable,
        )
    }

    fn existing(&self, key: &ServiceKey) -> Result<Service, NamingError> {
        self.services
            .get(key)
            .map(|s| (**s).clone())
            .ok_or_else(|| NamingError::ServiceNotFound(key.to_string()))
    }

    fn commit(
        &mut self,
        mut svc: Service,
        previous: Option<Arc<Instance>>,
        touched: Touched,
    ) -> Applied {
        self.revision += 1;
        svc.revision = self.revision;
        let svc = Arc::new(svc);
        let base = self
            .services
            .insert(svc.key.clone(), svc.clone())
            .map_or(0, |old| old.revision);
        let change = Change {
            revision: self.revision,
            key: svc.key.clone(),
            service: Some(svc),
            base,
            touched,
        };
        self.record(change.clone());
        Applied {
            change: Some(change),
            previous,
        }
    }

    fn record(&mut self, change: Change) {
        if self.history.len() >= self.history_limit {
            self.history.pop_front();
        }
        self.history.push_back(change);
    }
}

/// Trims what an instance about to be stored at `key` holds on its own: its metadata map
/// and cluster name are shared with the instance it replaces or its neighbours in key
/// order when equal (replicas of one deployment register side by side with the same
/// metadata), and an id equal to the derived Nacos id is dropped. Costs O(log n)
/// lookups; at a million instances it is most of the difference between one metadata
/// map per instance and a handful per service.
fn compact(svc: &Service, key: &InstanceKey, instance: &mut Instance) {
    use std::ops::Bound::{Excluded, Unbounded};
    if let Some(id) = &instance.id
        && **id
            == *crate::model::nacos_instance_id(
                &instance.ip,
                instance.port,
                &instance.cluster,
                &svc.key,
            )
    {
        instance.id = None;
    }
    let neighbours = svc
        .instances
        .get(key)
        .into_iter()
        .chain(svc.instances.range(..key).next_back().map(|(_, i)| i))
        .chain(
            svc.instances
                .range((Excluded(key), Unbounded))
                .next()
                .map(|(_, i)| i),
        );
    let mut metadata_shared = false;
    let mut cluster_shared = false;
    for n in neighbours {
        if !metadata_shared && n.metadata == instance.metadata {
            instance.metadata = n.metadata.clone();
            metadata_shared = true;
        }
        if !cluster_shared && n.cluster == instance.cluster {
            instance.cluster = n.cluster.clone();
            cluster_shared = true;
        }
        if metadata_shared && cluster_shared {
            break;
        }
    }
}

/// The touched part of a change to one instance.
fn one(key: InstanceKey) -> Touched {
    Touched::Instances(Arc::from([key]))
}

fn not_found(service: &ServiceKey, key: &InstanceKey) -> NamingError {
    NamingError::InstanceNotFound {
        service: service.to_string(),
        ip: key.ip.to_string(),
        port: key.port,
        cluster: key.cluster.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DEFAULT_CLUSTER;

    fn reg(n: &mut Naming, svc: &ServiceKey, ip: &str, port: u16) -> Applied {
        n.apply(Op::Register {
            service: svc.clone(),
            instance: Instance::new(svc, ip, port, DEFAULT_CLUSTER),
        })
        .unwrap()
    }

    #[test]
    fn register_creates_service_and_bumps_revisions() {
        let mut n = Naming::default();
        let a = ServiceKey::simple("a");
        let b = ServiceKey::simple("b");
        let c1 = reg(&mut n, &a, "10.0.0.1", 80).change.unwrap();
        let c2 = reg(&mut n, &b, "10.0.0.2", 80).change.unwrap();
        let c3 = reg(&mut n, &a, "10.0.0.3", 80).change.unwrap();
        assert_eq!((c1.revision, c2.revision, c3.revision), (1, 2, 3));
        assert_eq!(n.get(&a).unwrap().instances.len(), 2);
        assert_eq!(n.get(&a).unwrap().revision, 3);
        assert_eq!(n.get(&b).unwrap().revision, 2);
        assert_eq!(n.revision(), 3);
    }

    #[test]
    fn identical_register_is_not_a_change() {
        let mut n = Naming::default();
        let a = ServiceKey::simple("a");
        reg(&mut n, &a, "10.0.0.1", 80);
        assert!(reg(&mut n, &a, "10.0.0.1", 80).change.is_none());
        assert_eq!(n.revision(), 1);
    }

    #[test]
    fn deregister_is_idempotent() {
        let mut n = Naming::default();
        let a = ServiceKey::simple("a");
        reg(&mut n, &a, "10.0.0.1", 80);
        let op = Op::Deregister {
            service: a.clone(),
            instance: InstanceKey::new("10.0.0.1", 80, DEFAULT_CLUSTER),
        };
        assert!(n.apply(op.clone()).unwrap().change.is_some());
        assert!(n.apply(op).unwrap().change.is_none());
        assert!(n.get(&a).unwrap().instances.is_empty());
    }

    #[test]
    fn update_of_unknown_instance_is_refused() {
        let mut n = Naming::default();
        let a = ServiceKey::simple("a");
        reg(&mut n, &a, "10.0.0.1", 80);
        let err = n
            .apply(Op::Update {
                service: a.clone(),
                instance: Instance::new(&a, "10.0.0.9", 80, DEFAULT_CLUSTER),
            })
            .unwrap_err();
        assert!(err.to_string().contains("10.0.0.9:80"), "{err}");
    }

    #[test]
    fn service_lifecycle() {
        let mut n = Naming::default();
        let a = ServiceKey::simple("a");
        let create = Op::CreateService {
            service: a.clone(),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            protect_threshold: 0.5,
            selector: None,
        };
        n.apply(create.clone()).unwrap();
        assert!(matches!(
            n.apply(create),
            Err(NamingError::ServiceExists(_))
        ));
        reg(&mut n, &a, "10.0.0.1", 80);
        assert!(matches!(
            n.apply(Op::DeleteService { service: a.clone() }),
            Err(NamingError::ServiceNotEmpty(_))
        ));
        n.apply(Op::Deregister {
            service: a.clone(),
            instance: InstanceKey::new("10.0.0.1", 80, DEFAULT_CLUSTER),
        })
        .unwrap();
        let del = n.apply(Op::DeleteService { service: a.clone() }).unwrap();
        assert!(del.change.unwrap().service.is_none());
        assert!(n.get(&a).is_none());
    }

    #[test]
    fn health_changes_only_when_different() {
        let mut n = Naming::default();
        let a = ServiceKey::simple("a");
        reg(&mut n, &a, "10.0.0.1", 80);
        let set = |s| Op::SetHealth {
            service: a.clone(),
            instance: InstanceKey::new("10.0.0.1", 80, DEFAULT_CLUSTER),
            status: s,
        };
        assert!(
            n.apply(set(HealthStatus::Passing))
                .unwrap()
                .change
                .is_none()
        );
        assert!(
            n.apply(set(HealthStatus::Critical))
                .unwrap()
                .change
                .is_some()
        );
        assert!(
            !n.get(&a)
                .unwrap()
                .instances
                .values()
                .next()
                .unwrap()
                .healthy()
        );
    }

    #[test]
    fn cluster_check_applies_to_its_persistent_instances() {
        use crate::model::CheckSpec;
        let mut n = Naming::default();
        let a = ServiceKey::simple("a");
        let mut p = Instance::new(&a, "10.0.0.1", 80, DEFAULT_CLUSTER);
        p.ephemeral = false;
        p.check = Some(CheckSpec::Tcp);
        n.apply(Op::Register {
            service: a.clone(),
            instance: p,
        })
        .unwrap();
        reg(&mut n, &a, "10.0.0.2", 80);
        let config = ClusterConfig {
            check: CheckSpec::Http {
                path: "/health".into(),
            },
            metadata: BTreeMap::new(),
        };
        let op = Op::UpdateCluster {
            service: a.clone(),
            cluster: DEFAULT_CLUSTER.into(),
            config,
        };
        assert!(n.apply(op.clone()).unwrap().change.is_some());
        assert!(n.apply(op).unwrap().change.is_none());
        let svc = n.get(&a).unwrap();
        let checks: Vec<_> = svc.instances.values().map(|i| i.check.clone()).collect();
        assert_eq!(
            checks,
            vec![
                Some(CheckSpec::Http {
                    path: "/health".into()
                }),
                None
            ]
        );
    }

    #[test]
    fn one_sweep_of_a_service_is_one_change() {
        let mut n = Naming::default();
        let a = ServiceKey::simple("a");
        for port in 1..=3 {
            reg(&mut n, &a, "10.0.0.1", port);
        }
        let before = n.revision();
        let key = |port| InstanceKey::new("10.0.0.1", port, DEFAULT_CLUSTER);
        let verdicts = vec![
            Op::SetHealth {
                service: a.clone(),
                instance: key(1),
                status: HealthStatus::Critical,
            },
            Op::Deregister {
                service: a.clone(),
                instance: key(2),
            },
            // Already gone: ignored, not an error.
            Op::Deregister {
                service: a.clone(),
                instance: key(9),
            },
        ];
        let (change, durable) = n.apply_expiry(&a, &verdicts);
        let change = change.expect("a change");
        assert!(!durable, "only ephemeral instances were touched");
        assert_eq!(change.revision, before + 1);
        assert_eq!(n.revision(), before + 1);
        let svc = n.get(&a).unwrap();
        assert_eq!(svc.instances.len(), 2);
        assert!(!svc.instances[&key(1)].healthy());
        assert!(svc.instances[&key(3)].healthy());
        // The same verdicts again change nothing.
        assert!(n.apply_expiry(&a, &verdicts).0.is_none());
        assert!(
            n.apply_expiry(&ServiceKey::simple("none"), &verdicts)
                .0
                .is_none()
        );
    }

    #[test]
    fn equal_metadata_is_shared_and_derivable_ids_are_not_stored() {
        let mut n = Naming::default();
        let a = ServiceKey::simple("a");
        let with_meta = |ip: &str, v: &str| {
            let mut i = Instance::new(&a, ip, 80, DEFAULT_CLUSTER);
            i.metadata = Arc::new(BTreeMap::from([("version".into(), v.into())]));
            i
        };
        for (ip, v) in [("10.0.0.1", "1"), ("10.0.0.2", "1"), ("10.0.0.3", "2")] {
            n.apply(Op::Register {
                service: a.clone(),
                instance: with_meta(ip, v),
            })
            .unwrap();
        }
        let svc = n.get(&a).unwrap();
        let meta = |ip: &str| {
            svc.instances[&InstanceKey::new(ip, 80, DEFAULT_CLUSTER)]
                .metadata
                .clone()
        };
        assert!(Arc::ptr_eq(&meta("10.0.0.1"), &meta("10.0.0.2")));
        assert!(!Arc::ptr_eq(&meta("10.0.0.2"), &meta("10.0.0.3")));
        assert_eq!(meta("10.0.0.3")["version"], "2");

        // An id equal to the one Nacos derives is dropped; any other id is kept.
        let mut same = Instance::new(&a, "10.0.0.4", 80, DEFAULT_CLUSTER);
        same.id = Some("10.0.0.4#80#DEFAULT#DEFAULT_GROUP@@a".into());
        let mut own = Instance::new(&a, "10.0.0.5", 80, DEFAULT_CLUSTER);
        own.id = Some("web-5".into());
        for i in [same, own] {
            n.apply(Op::Register {
                service: a.clone(),
                instance: i,
            })
            .unwrap();
        }
        let svc = n.get(&a).unwrap();
        let stored = &svc.instances[&InstanceKey::new("10.0.0.4", 80, DEFAULT_CLUSTER)];
        assert_eq!(stored.id, None);
        assert_eq!(stored.id(&a), "10.0.0.4#80#DEFAULT#DEFAULT_GROUP@@a");
        assert_eq!(
            svc.find_by_id("10.0.0.4#80#DEFAULT#DEFAULT_GROUP@@a")
                .unwrap()
                .port,
            80
        );
        assert_eq!(&*svc.find_by_id("web-5").unwrap().ip, "10.0.0.5");
        assert!(
            svc.find_by_id("10.0.0.5#80#DEFAULT#DEFAULT_GROUP@@a")
                .is_none()
        );
    }

    #[test]
    fn history_resumes_or_asks_for_snapshot() {
        let mut n = Naming::new(2);
        let a = ServiceKey::simple("a");
        for port in 1..=4 {
            reg(&mut n, &a, "10.0.0.1", port);
        }
        assert_eq!(n.changes_since(4).unwrap().len(), 0);
        let since2: Vec<u64> = n
            .changes_since(2)
            .unwrap()
            .iter()
            .map(|c| c.revision)
            .collect();
        assert_eq!(since2, vec![3, 4]);
        assert!(n.changes_since(1).is_none());
    }
}
