//! Consul request bodies: `PUT /v1/agent/service/register` (`parse_registration`, with its
//! `Check`/`Checks`, `Meta`, `Tags` and `Weights`) and the Go durations its checks carry
//! (`parse_duration`). Consul's KV store is not part of the subset the registry serves.

use berth_registry::http::consul::{META_ROUTES, parse_duration, parse_registration};
use berth_registry::model::CheckSpec;
use http::StatusCode;

/// One input: parsed, and what came out checked against what must hold.
pub fn run(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(d) = parse_duration(text)
    {
        // Each part is capped at 1e9 s; a short input cannot add up to more.
        assert!(
            d.as_secs_f64() <= 1e9 * (text.len() as f64 + 1.0),
            "{text:?} -> {d:?}"
        );
    }
    match parse_registration(data) {
        Ok((key, i)) => {
            assert!(
                !key.name.trim().is_empty() && key.name.len() <= 256,
                "{key:?}"
            );
            assert!(!key.name.contains(['#', '/']), "{key:?}");
            assert!(!i.ephemeral, "a Consul registration is persistent");
            assert!(!i.ip.is_empty(), "{i:?}");
            assert!(
                i.weight.is_finite() && i.weight >= 0.0,
                "weight {}",
                i.weight
            );
            match i
                .check
                .as_ref()
                .expect("a Consul instance always has a check")
            {
                CheckSpec::Http { path } => assert!(path.starts_with("http://"), "{path:?}"),
                CheckSpec::Ttl { ttl_ms } => assert!(*ttl_ms >= 1),
                CheckSpec::TcpAddr { .. } | CheckSpec::None => {}
                CheckSpec::Tcp => panic!("a Consul check became a Nacos TCP check"),
            }
            let prefixed = i.tags.iter().any(|t| t.starts_with("urlprefix-"));
            assert!(!prefixed || i.metadata.contains_key(META_ROUTES), "{i:?}");
        }
        Err(e) => {
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
            // Every refusal says which part of the body is wrong.
            assert!(
                e.message.starts_with("body ")
                    || e.message.contains("field '")
                    || e.message.starts_with("only one check"),
                "the refusal names nothing: {}",
                e.message
            );
        }
    }
}
