//! Black-box tests of the registry's Consul DNS interface: the real binary, services
//! registered through the Consul and Nacos HTTP APIs, queried with `dig` (bind9-dnsutils)
//! and dnspython (`tests/registry_clients/dns_client.py`).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use berth_testkit::{BerthProcess, python, temp_dir, wait_until};
use common::{BIN, run_client_script};

async fn start_registry(data_dir: &Path, extra: &[&str]) -> BerthProcess {
    let dir = data_dir.to_str().expect("utf-8 temp path");
    let mut args = vec![
        "registry",
        "--listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--data-dir",
        dir,
        "--expiry-check-interval",
        "100ms",
        "--check-interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    BerthProcess::start(BIN, &args).await
}

/// `dig @dns -p PORT args...`, its stdout.
async fn dig(dns: SocketAddr, args: &[&str]) -> String {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", dns.ip()))
        .args(["-p", &dns.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run dig (apt-get install bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sorted lines of `dig +short`.
async fn short(dns: SocketAddr, name: &str, qtype: &str) -> Vec<String> {
    let text = dig(dns, &["+short", name, qtype]).await;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The status word of the answer's header (`NOERROR`, `NXDOMAIN`, `REFUSED`...).
fn status(text: &str) -> String {
    text.split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no status in:\n{text}"))
        .to_string()
}

/// The header flags (`qr aa tc`...).
fn flags(text: &str) -> BTreeSet<String> {
    text.split("flags: ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no flags in:\n{text}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The records of one section of `dig +noall +SECTION` output, as whitespace-split fields.
fn records(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

async fn put(http: SocketAddr, path: &str, body: serde_json::Value) {
    let resp = reqwest::Client::new()
        .put(format!("http://{http}{path}"))
        .json(&body)
        .send()
        .await
        .expect("PUT");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
}

async fn consul_register(http: SocketAddr, body: serde_json::Value) {
    put(http, "/v1/agent/service/register", body).await;
}

#[tokio::test]
async fn dig_reads_services_tags_srv_nodes_and_nacos_names() {
    let dir = temp_dir();
    let registry = start_registry(
        dir.path(),
        &["--dns-listen", "127.0.0.1:0", "--dns-ttl", "30s"],
    )
    .await;
    let http = registry.addr("http");
    let dns = registry.addr("dns");
    consul_register(
        http,
        serde_json::json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.1", "Port": 80, "Tags": ["v1"]}),
    )
    .await;
    consul_register(
        http,
        serde_json::json!({"Name": "web", "ID": "web-2", "Address": "10.0.0.2", "Port": 81, "Tags": ["v2"], "Weights": {"Passing": 3}}),
    )
    .await;
    // A TTL check starts critical.
    consul_register(
        http,
        serde_json::json!({"Name": "web", "ID": "web-3", "Address": "10.0.0.3", "Port": 82, "Check": {"TTL": "30s"}}),
    )
    .await;
    // A Nacos service of another group and namespace.
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{http}/nacos/v1/ns/instance?serviceName=orders&groupName=SHOP&namespaceId=dev&ip=10.1.0.1&port=90&ephemeral=false"
        ))
        .send()
        .await
        .expect("register on the Nacos API");
    assert!(resp.status().is_success(), "{}", resp.status());

    // A: only the passing instances, with the configured TTL.
    assert_eq!(
        short(dns, "web.service.consul", "A").await,
        ["10.0.0.1", "10.0.0.2"]
    );
    let answer = dig(dns, &["+noall", "+answer", "web.service.consul", "A"]).await;
    assert!(
        records(&answer).iter().all(|r| r[1] == "30"),
        "TTL 30 expected:\n{answer}"
    );
    assert_eq!(
        short(dns, "web.service.dc1.consul", "A").await,
        ["10.0.0.1", "10.0.0.2"]
    );
    // Tags, both forms.
    assert_eq!(short(dns, "v1.web.service.consul", "A").await, ["10.0.0.1"]);
    assert_eq!(
        short(dns, "_web._v2.service.consul", "A").await,
        ["10.0.0.2"]
    );
    // SRV: priority 1, the weight, the port, an addr target with its A record in the
    // additional section.
    let srv = dig(
        dns,
        &[
            "+noall",
            "+answer",
            "+additional",
            "_web._tcp.service.consul",
            "SRV",
        ],
    )
    .await;
    let recs = records(&srv);
    let mut srvs: Vec<String> = recs
        .iter()
        .filter(|r| r[3] == "SRV")
        .map(|r| r[4..].join(" "))
        .collect();
    srvs.sort();
    assert_eq!(
        srvs,
        [
            "1 1 80 0a000001.addr.dc1.consul.",
            "1 3 81 0a000002.addr.dc1.consul."
        ],
        "{srv}"
    );
    let mut extra: Vec<String> = recs
        .iter()
        .filter(|r| r[3] == "A")
        .map(|r| format!("{} {}", r[0], r[4]))
        .collect();
    extra.sort();
    assert_eq!(
        extra,
        [
            "0a000001.addr.dc1.consul. 10.0.0.1",
            "0a000002.addr.dc1.consul. 10.0.0.2"
        ],
        "{srv}"
    );
    assert_eq!(
        short(dns, "0a000002.addr.dc1.consul", "A").await,
        ["10.0.0.2"]
    );
    // The node /v1/agent/self names.
    assert_eq!(short(dns, "berth.node.consul", "A").await, ["127.0.0.1"]);
    // Nacos names, case-insensitive.
    assert_eq!(
        short(dns, "orders.shop.dev.nacos.service.consul", "A").await,
        ["10.1.0.1"]
    );
    assert!(short(dns, "orders.service.consul", "A").await.is_empty());

    // Unknown names: NXDOMAIN with the SOA; a known name of another type: no data + SOA.
    let nx = dig(
        dns,
        &[
            "+noall",
            "+comments",
            "+authority",
            "nope.service.consul",
            "A",
        ],
    )
    .await;
    assert_eq!(status(&nx), "NXDOMAIN", "{nx}");
    assert!(flags(&nx).contains("aa"), "{nx}");
    let soa = records(&nx);
    assert!(
        soa.iter().any(|r| r[0] == "consul." && r[3] == "SOA"),
        "{nx}"
    );
    let nodata = dig(
        dns,
        &[
            "+noall",
            "+comments",
            "+authority",
            "web.service.consul",
            "TXT",
        ],
    )
    .await;
    assert_eq!(status(&nodata), "NOERROR", "{nodata}");
    assert!(records(&nodata).iter().any(|r| r[3] == "SOA"), "{nodata}");
    // Other zones are refused, never forwarded.
    let refused = dig(dns, &["+noall", "+comments", "example.com", "A"]).await;
    assert_eq!(status(&refused), "REFUSED", "{refused}");

    // The TTL check passes, then fails: the instance comes and goes.
    put(
        http,
        "/v1/agent/check/pass/service:web-3",
        serde_json::json!(null),
    )
    .await;
    assert_eq!(
        short(dns, "web.service.consul", "A").await,
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    );
    put(
        http,
        "/v1/agent/check/fail/service:web-3",
        serde_json::json!(null),
    )
    .await;
    wait_until(
        "the failed instance leaves the A answers",
        Duration::from_secs(2),
        || async { short(dns, "web.service.consul", "A").await == ["10.0.0.1", "10.0.0.2"] },
    )
    .await;

    // Datagrams that are no DNS message do not stop the server.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for junk in [
        &b""[..],
        b"\x00",
        &[0xff; 40],
        &[0; 12],
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fweb",
    ] {
        socket.send_to(junk, dns).await.unwrap();
    }
    // ... nor do bytes on TCP that are not DNS.
    {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(dns).await.unwrap();
        tcp.write_all(b"\x00\x05hello\x00\x00").await.unwrap();
    }
    assert_eq!(short(dns, "v1.web.service.consul", "A").await, ["10.0.0.1"]);
    let tcp = dig(dns, &["+tcp", "+short", "v1.web.service.consul", "A"]).await;
    assert_eq!(tcp.trim(), "10.0.0.1");
    registry.terminate().await;
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let dir = temp_dir();
    let registry = start_registry(dir.path(), &["--dns-listen", "127.0.0.1:0"]).await;
    let http = registry.addr("http");
    let dns = registry.addr("dns");
    for n in 1..=60 {
        consul_register(
            http,
            serde_json::json!({"Name": "many", "ID": format!("many-{n}"), "Address": format!("10.2.0.{n}"), "Port": 8000 + n}),
        )
        .await;
    }
    // No EDNS: 512 bytes, TC set (+ignore: dig does not retry over TCP itself).
    let udp = dig(
        dns,
        &[
            "+noedns",
            "+ignore",
            "+noall",
            "+comments",
            "+answer",
            "many.service.consul",
            "A",
        ],
    )
    .await;
    assert!(flags(&udp).contains("tc"), "{udp}");
    let cut = records(&udp).len();
    assert!(cut > 0 && cut < 60, "{cut} records:\n{udp}");
    // TCP: the whole answer.
    let tcp = dig(
        dns,
        &[
            "+tcp",
            "+noall",
            "+comments",
            "+answer",
            "many.service.consul",
            "A",
        ],
    )
    .await;
    assert!(!flags(&tcp).contains("tc"), "{tcp}");
    assert_eq!(records(&tcp).len(), 60, "{tcp}");
    // dig's default: retried over TCP after the TC answer.
    assert_eq!(short(dns, "many.service.consul", "A").await.len(), 60);
    // A large EDNS0 buffer takes 60 A records over UDP.
    let edns = dig(
        dns,
        &[
            "+bufsize=4096",
            "+ignore",
            "+noall",
            "+comments",
            "+answer",
            "many.service.consul",
            "A",
        ],
    )
    .await;
    assert!(!flags(&edns).contains("tc"), "{edns}");
    assert_eq!(records(&edns).len(), 60, "{edns}");
    // SRV with additional records over TCP.
    let srv = dig(
        dns,
        &[
            "+tcp",
            "+noall",
            "+answer",
            "+additional",
            "many.service.consul",
            "SRV",
        ],
    )
    .await;
    assert_eq!(records(&srv).len(), 120, "{srv}");
    registry.terminate().await;
}

#[tokio::test]
async fn dnspython_falls_back_to_tcp_and_sees_expiry() {
    let dir = temp_dir();
    let registry = start_registry(
        dir.path(),
        &[
            "--dns-listen",
            "127.0.0.1:0",
            "--beat-timeout",
            "1s",
            "--delete-timeout",
            "60s",
        ],
    )
    .await;
    run_client_script(
        &python(),
        "dns_client.py",
        &[
            registry.addr("http").to_string(),
            registry.addr("dns").to_string(),
        ],
        Duration::from_secs(60),
        Some(&registry),
    )
    .await;
    registry.terminate().await;
}

/// The ports of this process's sockets: (listening TCP ports, bound UDP ports).
fn own_ports(pid: u32) -> (BTreeSet<u16>, BTreeSet<u16>) {
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let target = target.to_string_lossy().into_owned();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let ports = |files: &[&str], listening_only: bool| -> BTreeSet<u16> {
        let mut out = BTreeSet::new();
        for file in files {
            let text =
                std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap_or_default();
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
                if f.len() > 9 && inodes.contains(f[9]) && (!listening_only || f[3] == "0A") {
                    let port = f[1].rsplit(':').next().unwrap();
                    out.insert(u16::from_str_radix(port, 16).unwrap());
                }
            }
        }
        out
    };
    (
        ports(&["tcp", "tcp6"], true),
        ports(&["udp", "udp6"], false),
    )
}

#[tokio::test]
async fn dns_listen_off_opens_nothing() {
    let dir = temp_dir();
    let on = start_registry(dir.path(), &["--dns-listen", "127.0.0.1:0"]).await;
    let dns = on.addr("dns");
    let (tcp, udp) = own_ports(on.pid());
    assert!(
        tcp.contains(&dns.port()) && udp.contains(&dns.port()),
        "{tcp:?} {udp:?}"
    );
    on.terminate().await;

    let dir = temp_dir();
    let off = start_registry(dir.path(), &["--dns-listen", "off"]).await;
    let ready = off.output();
    assert!(!ready.contains("dns="), "{ready}");
    let (tcp, udp) = own_ports(off.pid());
    let expected_tcp: BTreeSet<u16> = [off.addr("http").port(), off.addr("grpc").port()].into();
    assert_eq!(tcp, expected_tcp, "listening TCP ports");
    // The one UDP socket is the push sender.
    assert_eq!(udp.len(), 1, "UDP ports {udp:?}");
    off.terminate().await;
}

#[tokio::test]
async fn dns_off_loopback_requires_auth_like_any_listener() {
    let dir = temp_dir();
    let out = tokio::process::Command::new(BIN)
        .args([
            "registry",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--dns-listen",
            "0.0.0.0:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .await
        .expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth"), "{err}");
    // A bad value is named.
    let out = tokio::process::Command::new(BIN)
        .args(["registry", "--dns-listen", "nowhere", "--dns-ttl", "5s"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .await
        .expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dns_listen") && err.contains("off"), "{err}");
}
