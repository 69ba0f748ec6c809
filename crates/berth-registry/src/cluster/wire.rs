//! Payload encoding of the peer protocol: the registry's own model types as JSON inside
//! protobuf bytes fields, so a service state is never re-mapped field by field.

use berth_proto::registry::v1 as pb;
use serde::Serialize;
use serde::de::DeserializeOwned;

use std::sync::Arc;

use super::Stamp;
use crate::model::{Instance, InstanceKey, Service, ServiceKey};

pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Every type sent here has string map keys only ([`WireService`] turns the instance
    // map into a list), so encoding cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// A service as sent to peers: JSON maps need string keys, so instances go as a list
/// (in key order, so equal services encode to equal bytes).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct WireService {
    key: ServiceKey,
    metadata: std::collections::BTreeMap<String, String>,
    protect_threshold: f32,
    selector: Option<String>,
    clusters: std::collections::BTreeMap<String, crate::model::ClusterConfig>,
    instances: Vec<std::sync::Arc<crate::model::Instance>>,
    revision: u64,
}

impl WireService {
    pub fn from_service(s: &Service) -> Self {
        Self {
            key: s.key.clone(),
            metadata: s.metadata.clone(),
            protect_threshold: s.protect_threshold,
            selector: s.selector.clone(),
            clusters: s.clusters.clone(),
            instances: s.instances.values().cloned().collect(),
            revision: s.revision,
        }
    }

    pub fn into_service(self) -> Service {
        let mut s = Service::new(self.key);
        s.metadata = self.metadata;
        s.protect_threshold = self.protect_threshold;
        s.selector = self.selector;
        s.clusters = self.clusters;
        s.instances = self.instances.into_iter().map(|i| (i.key(), i)).collect();
        s.revision = self.revision;
        s
    }
}

/// A service's bytes on the wire (and for checksums).
pub fn service_json(s: &Service) -> Vec<u8> {
    to_json(&WireService::from_service(s))
}

pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// One service's state for the wire.
pub fn encode_state(
    key: &ServiceKey,
    service: Option<&Service>,
    stamp: &Stamp,
) -> pb::ServiceState {
    pb::ServiceState {
        key: to_json(key),
        service: service.map(service_json).unwrap_or_default(),
        origin: stamp.origin.clone(),
        incarnation: stamp.incarnation,
        revision: stamp.revision,
    }
}

/// Decodes a state; the error names the field.
pub fn decode_state(s: &pb::ServiceState) -> Result<(ServiceKey, Option<Service>, Stamp), String> {
    let key: ServiceKey = from_json(&s.key).map_err(|e| format!("field 'key': {e}"))?;
    let service = if s.service.is_empty() {
        None
    } else {
        Some(
            from_json::<WireService>(&s.service)
                .map_err(|e| format!("field 'service': {e}"))?
                .into_service(),
        )
    };
    Ok((
        key,
        service,
        Stamp {
            origin: s.origin.clone(),
            incarnation: s.incarnation,
            revision: s.revision,
        },
    ))
}

/// Some instances of one service, as an owner changed them after revision `base`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub key: ServiceKey,
    /// The owner life and the revision the delta leads to.
    pub stamp: Stamp,
    pub base: u64,
    pub put: Vec<Arc<Instance>>,
    pub removed: Vec<InstanceKey>,
}

impl Delta {
    /// The delta taking a replica from `base` to `service`'s state for the `touched`
    /// instances: those still in `service` are put, the others removed.
    pub fn of<'a>(
        service: &Service,
        base: u64,
        stamp: Stamp,
        touched: impl IntoIterator<Item = &'a InstanceKey>,
    ) -> Self {
        let (mut put, mut removed) = (Vec::new(), Vec::new());
        for key in touched {
            match service.instances.get(key) {
                Some(i) => put.push(i.clone()),
                None => removed.push(key.clone()),
            }
        }
        Self {
            key: service.key.clone(),
            stamp,
            base,
            put,
            removed,
        }
    }

    pub fn encode(&self) -> pb::ServiceDelta {
        pb::ServiceDelta {
            key: to_json(&self.key),
            origin: self.stamp.origin.clone(),
            incarnation: self.stamp.incarnation,
            base: self.base,
            revision: self.stamp.revision,
            put: to_json(&self.put),
            removed: to_json(&self.removed),
        }
    }

    /// Decodes a delta; the error names the field.
    pub fn decode(d: &pb::ServiceDelta) -> Result<Self, String> {
        Ok(Self {
            key: from_json(&d.key).map_err(|e| format!("field 'key': {e}"))?,
            stamp: Stamp {
                origin: d.origin.clone(),
                incarnation: d.incarnation,
                revision: d.revision,
            },
            base: d.base,
            put: from_json(&d.put).map_err(|e| format!("field 'put': {e}"))?,
            removed: from_json(&d.removed).map_err(|e| format!("field 'removed': {e}"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DEFAULT_CLUSTER, Instance};

    #[test]
    fn a_service_round_trips_and_bad_bytes_name_the_field() {
        let key = ServiceKey::simple("orders");
        let mut svc = Service::new(key.clone());
        for port in [2, 1] {
            let i = Instance::new(&key, "10.0.0.1", port, DEFAULT_CLUSTER);
            svc.instances.insert(i.key(), std::sync::Arc::new(i));
        }
        svc.revision = 7;
        let stamp = Stamp {
            origin: "a:1".into(),
            incarnation: 3,
            revision: 7,
        };
        let wire = encode_state(&key, Some(&svc), &stamp);
        let (k, back, st) = decode_state(&wire).unwrap();
        assert_eq!((k, back, st), (key.clone(), Some(svc), stamp.clone()));
        let deleted = encode_state(&key, None, &stamp);
        assert!(decode_state(&deleted).unwrap().1.is_none());
        let mut bad = wire;
        bad.service = b"{".to_vec();
        assert!(decode_state(&bad).unwrap_err().contains("'service'"));
    }

    #[test]
    fn a_delta_puts_present_instances_removes_gone_ones_and_round_trips() {
        let key = ServiceKey::simple("orders");
        let mut svc = Service::new(key.clone());
        let kept = Instance::new(&key, "10.0.0.1", 1, DEFAULT_CLUSTER);
        let gone = Instance::new(&key, "10.0.0.1", 2, DEFAULT_CLUSTER).key();
        svc.instances.insert(kept.key(), Arc::new(kept.clone()));
        let stamp = Stamp {
            origin: "a:1".into(),
            incarnation: 3,
            revision: 9,
        };
        let d = Delta::of(&svc, 7, stamp, [&kept.key(), &gone]);
        assert_eq!(d.put, vec![Arc::new(kept)]);
        assert_eq!(d.removed, vec![gone]);
        assert_eq!(Delta::decode(&d.encode()).unwrap(), d);
        let mut bad = d.encode();
        bad.removed = b"[1]".to_vec();
        assert!(Delta::decode(&bad).unwrap_err().contains("'removed'"));
    }
}
