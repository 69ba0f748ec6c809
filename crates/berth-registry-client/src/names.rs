//! Names of the registry services Berth writes and reads, so the writer and the reader of
//! each agree by construction.

/// The registry service name of an app: the app id with `/` replaced by `.` (`shop/web` ->
/// `shop.web`), because `/` would be read as a path separator by HTTP tooling and is not
/// valid in DNS names that Consul-style lookups derive from service names.
pub fn app_service(app_id: &str) -> String {
    app_id.replace('/', ".")
}

/// The service with one instance per diagnostics gateway.
pub const DIAG_GATEWAYS: &str = "berth.diag";

/// The service whose one instance is the diagnostics gateway holding `node`.
pub fn diag_node_service(node: &str) -> String {
    format!("berth.diag.node.{node}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_replace_slashes() {
        assert_eq!(app_service("shop/web"), "shop.web");
        assert_eq!(app_service("a/b/c"), "a.b.c");
        assert_eq!(app_service("plain"), "plain");
        assert_eq!(diag_node_service("node-a"), "berth.diag.node.node-a");
    }
}
