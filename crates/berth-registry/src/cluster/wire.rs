//! Payload encoding of the peer protocol: the registry's own model types as JSON inside
//! protobuf bytes fields, so a service state is never re-mapped field by field.

use berth_proto::registry::v1 as pb;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Stamp;
use crate::model::{Service, ServiceKey};

pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Model types hold only strings, numbers, maps and lists: encoding cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// One service's state for the wire.
pub fn encode_state(key: &ServiceKey, service: Option<&Service>, stamp: &Stamp) -> pb::ServiceState {
    pb::ServiceState {
        key: to_json(key),
        service: service.map(to_json).unwrap_or_default(),
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
        Some(from_json::<Service>(&s.service).map_err(|e| format!("field 'service': {e}"))?)
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
