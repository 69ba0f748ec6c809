//! Bodies of the router's `PUT /v1/upstreams/NAME` (`upstreams::parse_body`): dyups' text
//! (`server 127.0.0.1:8081 weight=2;`) or JSON, then the route entries an upstream makes
//! (`Upstream::entries`). The input's first byte picks the content type (odd: JSON
//! allowed), the rest of its first line is the `routes` query parameter, then the body.

use berth_router::RouteKey;
use berth_router::sources::upstreams::{check_name, parse_body};

/// One input: parsed, and what came out checked against what must hold.
pub fn run(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let (routes, body) = rest.split_once('\n').unwrap_or(("", rest));
    let json = flags & 1 == 1;
    if check_name(routes).is_ok() {
        assert!(!routes.is_empty() && routes.len() <= 128);
    }
    let upstream = match parse_body(json, body, Some(routes).filter(|r| !r.is_empty())) {
        Ok(u) => u,
        Err(e) => {
            assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}");
            return;
        }
    };
    // Listing an upstream shows JSON that puts back the same upstream.
    let listed = serde_json::to_string(&upstream).expect("an upstream serialises");
    match parse_body(true, &listed, None) {
        Ok(again) => assert_eq!(again, upstream, "{listed}"),
        Err(e) => panic!("a listed upstream is refused: {e:?}\n{listed}"),
    }
    let entries = match upstream.entries() {
        Ok(entries) => entries,
        Err(e) => {
            assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}");
            return;
        }
    };
    assert_eq!(entries.len(), upstream.routes.len());
    for entry in &entries {
        assert_eq!(entry.endpoints.len(), upstream.servers.len());
        assert!(
            entry
                .endpoints
                .iter()
                .all(|e| (1..=1000).contains(&e.weight))
        );
        // A route key is written out (route listings, the route cache) and read back.
        let written = entry.key.to_string();
        assert_eq!(
            RouteKey::parse(&written).as_ref(),
            Ok(&entry.key),
            "{written:?}"
        );
    }
}
