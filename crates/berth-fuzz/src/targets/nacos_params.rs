//! Nacos request parameters: the query string and form body every `/nacos/v1/ns/...`
//! handler reads (`Params::parse`), then what the handlers build from them: the service
//! key, an instance, a beat body, metadata and a health checker. The input's first line is
//! the query string, the rest the form body.

use berth_registry::ServiceKey;
use berth_registry::http::nacos::{instance_from, instance_key, parse_beat, service_key};
use berth_registry::http::nacos_json::{ListFilter, parse_health_checker, parse_metadata};
use berth_registry::http::params::{ApiError, MAX_PARAM, Params};
use berth_registry::model::CheckSpec;
use http::StatusCode;

/// A refusal is a 400 that names the parameter it is about.
fn names(result: Result<impl Sized, ApiError>, param: &str) {
    if let Err(e) = result {
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
        assert!(
            e.message.contains(&format!("'{param}'")),
            "the refusal does not name '{param}': {}",
            e.message
        );
    }
}

fn valid_name(n: &str) -> bool {
    n.len() <= 512 && !n.contains('#') && !n.chars().any(char::is_control)
}

/// One input: parsed, and what came out checked against what must hold.
pub fn run(data: &[u8]) {
    let (query, form) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // A URI's query is text; axum hands the handler a `&str`.
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let p = match Params::parse(query, form) {
        Ok(p) => p,
        Err(e) => {
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains("parameter '"), "{}", e.message);
            assert!(e.message.contains(&MAX_PARAM.to_string()), "{}", e.message);
            return;
        }
    };
    for name in ["serviceName", "ip", "port", "metadata", "beat", "clusters"] {
        if let Some(v) = p.opt(name) {
            assert!(!v.is_empty() && v.trim() == v, "opt({name}) = {v:?}");
            assert!(p.has(name), "opt({name}) is set but has({name}) is false");
            assert!(v.len() <= MAX_PARAM);
        }
    }
    names(p.port("port"), "port");
    names(p.opt_port("udpPort"), "udpPort");
    names(p.bool("healthy"), "healthy");
    names(p.bool("enabled"), "enabled");
    names(p.bool("enable"), "enable");
    names(p.u64("pageNo"), "pageNo");
    match p.f64("weight") {
        Ok(Some(w)) => assert!(w.is_finite() && w >= 0.0, "weight {w}"),
        other => names(other, "weight"),
    }
    match p.ip("ip") {
        Ok(ip) => assert!(!ip.is_empty() && ip.len() <= 253 && !ip.contains(['#', ','])),
        other => names(other, "ip"),
    }

    match service_key(&p) {
        Ok(key) => {
            assert!(!key.name.is_empty());
            for part in [&key.namespace, &key.group, &key.name] {
                assert!(valid_name(part), "accepted name {part:?}");
            }
            // The grouped form Nacos clients see reads back as the same service.
            let again = ServiceKey::parse_grouped(&key.namespace, &key.grouped_name(), "other");
            assert_eq!(again, key);
            match instance_from(&p, &key, None, None) {
                Ok(i) => {
                    assert_eq!(i.port, p.port("port").expect("accepted port"));
                    assert_eq!(&*i.ip, p.ip("ip").expect("accepted ip"));
                    assert!(
                        i.weight.is_finite() && i.weight >= 0.0,
                        "weight {}",
                        i.weight
                    );
                    assert_eq!(i.check.is_none(), i.ephemeral, "{i:?}");
                }
                Err(e) => assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}"),
            }
        }
        Err(e) => {
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
            assert!(e.message.contains("parameter '"), "{}", e.message);
        }
    }
    if let Ok(k) = instance_key(&p) {
        assert_eq!(k.port, p.port("port").expect("accepted port"));
    }
    if let Some(raw) = p.opt("beat") {
        match parse_beat(raw) {
            Ok(b) => {
                assert!(
                    !b.ip.is_empty() && !b.ip.contains('#'),
                    "beat ip {:?}",
                    b.ip
                );
                assert!(b.weight.is_none_or(|w| w.is_finite() && w >= 0.0));
                assert!(b.cluster.as_deref().is_none_or(|c| !c.is_empty()));
            }
            Err(e) => names(Err::<(), _>(e), "beat"),
        }
    }
    if let Some(raw) = p.opt("metadata")
        && let Err(e) = parse_metadata(raw)
    {
        assert!(!e.is_empty());
    }
    if let Some(raw) = p.opt("healthChecker") {
        match parse_health_checker(raw) {
            Ok(CheckSpec::Http { path }) => assert!(path.starts_with('/'), "path {path:?}"),
            Ok(CheckSpec::Tcp | CheckSpec::None) => {}
            Ok(other) => panic!("a Nacos health checker became {other:?}"),
            Err(e) => assert!(!e.is_empty()),
        }
    }
    let filter = ListFilter::parse(p.opt("clusters"), false);
    assert!(
        filter.clusters.windows(2).all(|w| w[0] < w[1]),
        "{filter:?}"
    );
    assert!(
        filter
            .clusters
            .iter()
            .all(|c| !c.is_empty() && c.trim() == c && !c.contains(','))
    );
    assert_eq!(
        ListFilter::parse(Some(&filter.clusters_param()), false),
        filter
    );
}
