//! The one "ready" line a role prints once every listener is bound.
//!
//! Scripts and tests wait for it instead of sleeping, and read the real addresses from it
//! (ports may be ephemeral): `berth registry ready http=127.0.0.1:8848 grpc=127.0.0.1:9848`.

use std::io::Write;
use std::net::SocketAddr;

/// Formats the ready line without printing it.
pub fn line(role: &str, addrs: &[(&str, SocketAddr)]) -> String {
    let mut text = format!("berth {role} ready");
    for (name, addr) in addrs {
        text.push_str(&format!(" {name}={addr}"));
    }
    text
}

/// Prints the ready line on stdout (flushed at once, stdout may be a pipe) and logs it.
pub fn announce(role: &str, addrs: &[(&str, SocketAddr)]) {
    let text = line(role, addrs);
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop a role from serving.
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
    tracing::info!("{text}");
}

/// Parses a ready line back into its role and named addresses.
pub fn parse(text: &str) -> Option<(String, Vec<(String, SocketAddr)>)> {
    let mut words = text.split_whitespace();
    if words.next()? != "berth" {
        return None;
    }
    let role = words.next()?.to_string();
    if words.next()? != "ready" {
        return None;
    }
    let mut addrs = Vec::new();
    for word in words {
        let (name, addr) = word.split_once('=')?;
        addrs.push((name.to_string(), addr.parse().ok()?));
    }
    Some((role, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_round_trips() {
        let http: SocketAddr = "127.0.0.1:8848".parse().unwrap();
        let grpc: SocketAddr = "[::1]:9848".parse().unwrap();
        let text = line("registry", &[("http", http), ("grpc", grpc)]);
        assert_eq!(
            text,
            "berth registry ready http=127.0.0.1:8848 grpc=[::1]:9848"
        );
        let (role, addrs) = parse(&text).unwrap();
        assert_eq!(role, "registry");
        assert_eq!(addrs, vec![("http".into(), http), ("grpc".into(), grpc)]);
        assert!(parse("berth registry starting").is_none());
        assert!(parse("INFO something").is_none());
    }
}
