//! Nacos 2.x gRPC payloads: the protobuf frame every SDK sends, the request inside it
//! (type, headers, a JSON object), then what the handlers build from it: an instance and
//! a config key. An accepted instance is one the registry can list; every refusal says
//! which field is wrong.

use berth_proto::nacos as pb;
use berth_registry::ServiceKey;
use berth_registry::config_center::ConfigKey;
use berth_registry::nacos_grpc::parse_instance;
use berth_registry::nacos_grpc::wire::Inbound;
use prost::Message;
use serde_json::Value;

pub fn run(data: &[u8]) {
    let Ok(payload) = pb::Payload::decode(data) else {
        return;
    };
    let request = match Inbound::decode(payload) {
        Ok(request) => request,
        Err(message) => {
            assert!(!message.is_empty(), "a refused payload without a reason");
            return;
        }
    };
    let service = ServiceKey::simple("fuzzed");
    if let Some(value) = request.body.get("instance") {
        match parse_instance(value, &service) {
            Ok(instance) => {
                assert!((1..=65535).contains(&instance.port), "{instance:?}");
                assert!(
                    !instance.ip.is_empty() && !instance.ip.contains('#'),
                    "{instance:?}"
                );
                assert!(
                    instance.weight.is_finite() && (0.0..=10_000.0).contains(&instance.weight),
                    "{instance:?}"
                );
            }
            Err(message) => assert!(
                message.starts_with("instance"),
                "a refusal that does not name the field: {message}"
            ),
        }
    }
    let field = |name: &str| request.body.get(name).and_then(Value::as_str).unwrap_or("");
    match ConfigKey::new(field("tenant"), field("group"), field("dataId")) {
        Ok(key) => {
            assert!(!key.data_id.is_empty());
            for part in [&key.tenant, &key.group, &key.data_id] {
                assert!(!part.contains('/'), "a key part with a slash: {key:?}");
            }
            assert_eq!(
                ConfigKey::from_store_key(&key.store_key()).as_ref(),
                Some(&key),
                "the store key does not round-trip"
            );
        }
        Err(err) => {
            let message = err.to_string();
            assert!(
                ["tenant", "group", "dataId"]
                    .iter()
                    .any(|f| message.starts_with(f)),
                "a refusal that does not name the field: {message}"
            );
        }
    }
}
