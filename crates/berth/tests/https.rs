//! HTTPS on the server API and the registry's HTTP listener, black box: with the TLS
//! files set, the port serves HTTPS (the CLI verifies it with `--ca-cert`) and plain
//! HTTP to loopback clients; replaced certificate files are picked up by new handshakes
//! (polled, or at once on SIGHUP) while connected agents stay connected, and a broken
//! replacement keeps the old certificate.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_testkit::{BerthProcess, wait_for, wait_until};
use common::{BIN, WAIT, WAIT_PLATFORM, loopback_server, sim_agent, tls_flags, tls_pki};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The DER of the first certificate in a PEM file.
fn der(pem: &Path) -> Vec<u8> {
    let bytes = std::fs::read(pem).unwrap();
    rustls_pemfile::certs(&mut bytes.as_slice())
        .next()
        .expect("a certificate")
        .unwrap()
        .to_vec()
}

/// A client trusting only the CA, on a fresh connection (so a fresh handshake) each time.
fn https_client(ca: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The certificate a new HTTPS handshake with `addr` sees.
async fn served_cert(addr: SocketAddr, ca: &Path) -> Vec<u8> {
    let response = https_client(ca)
        .get(format!("https://{addr}/health"))
        .send()
        .await
        .expect("an HTTPS answer");
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the peer certificate")
        .to_vec()
}

/// Replaces `to` with a copy of `from` the way an operator rotates a file: written
/// beside it, then renamed over it.
fn rotate(from: &Path, to: &Path) {
    let staged = to.with_extension("new");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

/// The server's certificate files, copied to names the test can replace: `live.pem` and
/// `live-key.pem` start as server s1's pair.
fn live_pair(pki: &Path) -> (PathBuf, PathBuf) {
    let cert = pki.join("live.pem");
    let key = pki.join("live-key.pem");
    std::fs::copy(pki.join("server-s1.pem"), &cert).unwrap();
    std::fs::copy(pki.join("server-s1-key.pem"), &key).unwrap();
    (cert, key)
}

fn live_flags(pki: &Path, cert: &Path, key: &Path) -> Vec<String> {
    [
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-file",
        pki.join("ca.pem").to_str().unwrap(),
        "--registry-http",
        "off",
    ]
    .map(String::from)
    .to_vec()
}

struct Cli {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `berth --server-url URL ARGS` with only `env` of the BERTH_ client variables set.
async fn cli(url: &str, env: &[(&str, &str)], args: &[&str]) -> Cli {
    let out = tokio::process::Command::new(BIN)
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_TOKEN_FILE")
        .env_remove("BERTH_CACERT")
        .envs(env.iter().copied())
        .arg("--server-url")
        .arg(url)
        .args(args)
        .output()
        .await
        .expect("run berth");
    Cli {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn the_cli_talks_https_with_the_cluster_ca_and_loopback_keeps_plain_http() {
    let dir = berth_testkit::temp_dir();
    let pki = dir.path().join("pki");
    tls_pki(&pki, &[("server", "s1")]);
    let mut args = tls_flags(&pki, "server", "s1");
    args.extend(["--registry-http".into(), "off".into()]);
    let server = loopback_server(&dir.path().join("server"), &args).await;
    let api = server.addr("http");
    let https = format!("https://{api}");
    let ca = pki.join("ca.pem");
    let ca = ca.to_str().unwrap();

    // An app created over plain HTTP from loopback, then listed over HTTPS.
    let spec = dir.path().join("x.toml");
    std::fs::write(
        &spec,
        "id = \"demo/x\"\ncmd = \"sleep 1000\"\ninstances = 1\ncpus = 0.1\nmem = 16\n",
    )
    .unwrap();
    let plain = cli(
        &format!("http://{api}"),
        &[],
        &["apps", "deploy", spec.to_str().unwrap(), "--detach"],
    )
    .await;
    assert!(plain.ok, "plain HTTP from loopback: {}", plain.stderr);

    let listed = cli(&https, &[], &["--ca-cert", ca, "apps", "list"]).await;
    assert!(listed.ok, "{}", listed.stderr);
    assert!(listed.stdout.contains("demo/x"), "{}", listed.stdout);
    let listed = cli(&https, &[("BERTH_CACERT", ca)], &["apps", "list"]).await;
    assert!(listed.ok, "BERTH_CACERT: {}", listed.stderr);
    assert!(listed.stdout.contains("demo/x"), "{}", listed.stdout);

    // Without the CA the certificate cannot be verified, and the error says what to pass.
    let refused = cli(&https, &[], &["apps", "list"]).await;
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("does not trust") && refused.stderr.contains("--ca-cert FILE"),
        "{}",
        refused.stderr
    );
    // Another CA than the server's: named too.
    let other = dir.path().join("other");
    tls_pki(&other, &[]);
    let other_ca = other.join("ca.pem");
    let wrong = cli(
        &https,
        &[],
        &["--ca-cert", other_ca.to_str().unwrap(), "apps", "list"],
    )
    .await;
    assert!(!wrong.ok);
    assert!(
        wrong.stderr.contains("does not trust") && wrong.stderr.contains("--ca-cert"),
        "{}",
        wrong.stderr
    );
    server.terminate().await;
}

#[tokio::test]
async fn replaced_files_are_served_to_new_handshakes_and_agents_stay_connected() {
    let dir = berth_testkit::temp_dir();
    let pki = dir.path().join("pki");
    tls_pki(&pki, &[("server", "s1"), ("server", "s2"), ("agent", "n1")]);
    let (cert, key) = live_pair(&pki);
    let ca = pki.join("ca.pem");
    let mut args = live_flags(&pki, &cert, &key);
    args.extend(["--tls-reload-interval".into(), "200ms".into()]);
    let server = loopback_server(&dir.path().join("server"), &args).await;
    let api = server.addr("http");
    let agent = sim_agent(
        server.addr("grpc"),
        &dir.path().join("agent"),
        "n1",
        &tls_flags(&pki, "agent", "n1"),
    )
    .await;
    wait_until("agent n1 joined over mutual TLS", WAIT_PLATFORM, || async {
        agent.output().contains("session open")
    })
    .await;
    let old = der(&pki.join("server-s1.pem"));
    let new = der(&pki.join("server-s2.pem"));
    assert_ne!(old, new);
    assert_eq!(served_cert(api, &ca).await, old);

    rotate(&pki.join("server-s2-key.pem"), &key);
    rotate(&pki.join("server-s2.pem"), &cert);
    wait_until("a new handshake sees the new certificate", WAIT, || async {
        served_cert(api, &ca).await == new
    })
    .await;
    let reloaded = tokio::time::Instant::now();
    wait_until("the reload was logged", WAIT, || async {
        server.output().contains("TLS certificates reloaded")
    })
    .await;

    // The agent connected before is still in the same session and still beating.
    let client = https_client(&ca);
    wait_until("a heartbeat arrived after the reload", WAIT, || async {
        let nodes: Value = client
            .get(format!("https://{api}/v1/nodes"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let since = reloaded.elapsed().as_millis() as u64;
        nodes["nodes"].as_array().unwrap().iter().any(|n| {
            n["id"] == "n1"
                && n["last_seen_ms_ago"]
                    .as_u64()
                    .is_some_and(|ago| ago + 50 < since)
        })
    })
    .await;
    assert_eq!(
        agent.output().matches("session open").count(),
        1,
        "the agent reconnected: {}",
        agent.output()
    );
    drop(agent);
    server.terminate().await;
}

#[tokio::test]
async fn sighup_reloads_at_once_and_a_broken_replacement_keeps_the_old_certificate() {
    let dir = berth_testkit::temp_dir();
    let pki = dir.path().join("pki");
    tls_pki(&pki, &[("server", "s1"), ("server", "s2")]);
    let (cert, key) = live_pair(&pki);
    let ca = pki.join("ca.pem");
    // No poll within the test's time: only the signal can reload.
    let mut args = live_flags(&pki, &cert, &key);
    args.extend(["--tls-reload-interval".into(), "1h".into()]);
    let server = loopback_server(&dir.path().join("server"), &args).await;
    let api = server.addr("http");
    let old = der(&pki.join("server-s1.pem"));
    let new = der(&pki.join("server-s2.pem"));

    // Broken: the new certificate without its key. The old pair stays in use.
    rotate(&pki.join("server-s2.pem"), &cert);
    server.signal(Signal::SIGHUP);
    wait_until("the failed reload was logged", WAIT, || async {
        server
            .output()
            .contains("TLS reload failed; keeping the previous certificates")
    })
    .await;
    assert!(
        server.output().contains("do not belong together"),
        "{}",
        server.output()
    );
    assert!(
        !server.output().contains("PRIVATE KEY"),
        "key material logged"
    );
    assert_eq!(served_cert(api, &ca).await, old);

    // Whole: the key lands, one more SIGHUP, and the next handshake has the new pair.
    rotate(&pki.join("server-s2-key.pem"), &key);
    server.signal(Signal::SIGHUP);
    wait_until("SIGHUP reloaded the new pair", WAIT, || async {
        served_cert(api, &ca).await == new
    })
    .await;
    server.terminate().await;
}

#[tokio::test]
async fn the_registry_serves_https_and_plain_http_to_loopback() {
    let dir = berth_testkit::temp_dir();
    let pki = dir.path().join("pki");
    tls_pki(&pki, &[("registry", "r1")]);
    let mut args = vec![
        "registry".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--grpc-listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.path().join("registry").display().to_string(),
    ];
    args.extend(tls_flags(&pki, "registry", "r1"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let registry = BerthProcess::start(BIN, &args).await;
    let http = registry.addr("http");
    let ca = pki.join("ca.pem");

    let response = https_client(&ca)
        .get(format!("https://{http}/v1/catalog/services"))
        .send()
        .await
        .expect("an HTTPS answer");
    assert_eq!(response.status(), 200);
    let cert = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .unwrap()
        .to_vec();
    assert_eq!(cert, der(&pki.join("registry-r1.pem")));
    // Consul clients match header case exactly: still title-cased over TLS.
    let index = response.headers().get("x-consul-index");
    assert!(index.is_some(), "{:?}", response.headers());

    let plain: Value = wait_for("plain HTTP from loopback", WAIT, || async {
        let r = reqwest::get(format!("http://{http}/v1/catalog/services"))
            .await
            .ok()?;
        (r.status() == 200).then_some(r.json().await.ok()?)
    })
    .await;
    assert!(plain.is_object(), "{plain}");
    registry.terminate().await;
}

#[tokio::test]
async fn an_agent_redials_with_the_certificate_its_files_hold_by_then() {
    let dir = berth_testkit::temp_dir();
    let pki = dir.path().join("pki");
    tls_pki(&pki, &[("server", "s1"), ("agent", "n1")]);
    let stranger = dir.path().join("other-pki");
    tls_pki(&stranger, &[("agent", "n1")]);
    let mut args = tls_flags(&pki, "server", "s1");
    args.extend(["--registry-http".into(), "off".into()]);
    let server = loopback_server(&dir.path().join("server"), &args).await;

    // The agent starts with a certificate of another CA: every dial is refused.
    let cert = dir.path().join("agent.pem");
    let key = dir.path().join("agent-key.pem");
    std::fs::copy(stranger.join("agent-n1.pem"), &cert).unwrap();
    std::fs::copy(stranger.join("agent-n1-key.pem"), &key).unwrap();
    let flags: Vec<String> = [
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-file",
        pki.join("ca.pem").to_str().unwrap(),
        "--tls-reload-interval",
        "200ms",
        "--backoff-max",
        "500ms",
    ]
    .map(String::from)
    .to_vec();
    let agent = sim_agent(server.addr("grpc"), &dir.path().join("agent"), "n1", &flags).await;
    wait_until(
        "the stranger's certificate was refused",
        WAIT_PLATFORM,
        || async { server.output().contains("agent TLS handshake refused") },
    )
    .await;
    assert!(!agent.output().contains("session open"));

    // The right pair lands in the files: the next dial presents it and the node joins.
    rotate(&pki.join("agent-n1-key.pem"), &key);
    rotate(&pki.join("agent-n1.pem"), &cert);
    wait_until(
        "the agent joined with its new certificate",
        WAIT_PLATFORM,
        || async { agent.output().contains("session open") },
    )
    .await;
    assert_eq!(
        common::node_ids(server.addr("http")).await,
        vec!["n1".to_string()]
    );
    drop(agent);
    server.terminate().await;
}
