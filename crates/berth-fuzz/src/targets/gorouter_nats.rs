//! gorouter's `router.register` / `router.unregister` NATS messages
//! (`RegistryMessage::parse`), as Cloud Foundry's route emitters publish them.

use berth_router::RouteKey;
use berth_router::sources::nats::RegistryMessage;

/// One input: parsed, and what came out checked against what must hold.
pub fn run(data: &[u8]) {
    let r = match RegistryMessage::parse(data) {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(!r.keys.is_empty(), "a registration without routes");
    assert_ne!(r.endpoint.addr.port(), 0);
    assert!(r.ttl.is_none_or(|t| !t.is_zero()));
    for key in &r.keys {
        let written = key.to_string();
        assert_eq!(RouteKey::parse(&written).as_ref(), Ok(key), "{written:?}");
    }
}
