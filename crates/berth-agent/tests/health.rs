//! Every health-check type against real programs: http, https (self-signed, with and
//! without ignore_tls_errors), tcp and command.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_agent::driver::{Drivers, LogRotator, ProcessDriver};
use berth_agent::metrics::AgentMetrics;
use berth_agent::ports::PortRange;
use berth_agent::record::RecordStore;
use berth_agent::supervisor::{Supervisor, SupervisorConfig};
use berth_agent::tasks::Tasks;
use berth_proto::agent::v1 as pb;
use common::wait_for_state;
use tokio_util::sync::CancellationToken;

fn supervisor(dir: &std::path::Path) -> (Supervisor, CancellationToken) {
    let token = CancellationToken::new();
    let config = SupervisorConfig {
        node_id: "n1".into(),
        advertise: "127.0.0.1".into(),
        port_range: PortRange::default(),
        log_rotator: LogRotator {
            max_bytes: 1 << 20,
            keep: 1,
        },
        housekeeping_interval: Duration::from_secs(1),
        terminal_retention: Duration::from_secs(60),
        stderr_tail_lines: 5,
        registry_beat: Duration::from_secs(5),
        default_grace: Duration::from_secs(2),
        log_addr: None,
    };
    let sup = Supervisor::new(
        config,
        Drivers::new(Arc::new(ProcessDriver::new(Duration::from_millis(50)))),
        RecordStore::open(dir).unwrap(),
        None,
        Tasks::new(token.clone()),
        Arc::new(AgentMetrics::default()),
    );
    (sup, token)
}

fn start(id: &str, cmd: &str, check: pb::HealthCheck) -> pb::StartInstance {
    pb::StartInstance {
        instance_id: id.into(),
        app_id: "checks".into(),
        cmd: cmd.into(),
        port_count: 1,
        health_checks: vec![check],
        ..Default::default()
    }
}

fn check(protocol: &str, path: &str) -> pb::HealthCheck {
    pb::HealthCheck {
        protocol: protocol.into(),
        path: path.into(),
        interval_seconds: 1,
        timeout_seconds: 2,
        max_consecutive_failures: 2,
        // Covers the start of python (and openssl's key generation) on a busy machine.
        grace_period_seconds: 3,
        ..Default::default()
    }
}

const HTTP_APP: &str = "exec python3 -m http.server $PORT --bind 127.0.0.1";
/// A TLS server on $PORT with the self-signed certificate made by [`self_signed`] in `dir`.
fn https_app(dir: &std::path::Path) -> String {
    format!(
        r#"exec python3 -c '
import http.server, os, ssl
server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), http.server.SimpleHTTPRequestHandler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("{dir}/cert.pem", "{dir}/key.pem")
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
'"#,
        dir = dir.display()
    )
}

/// Made once before the instances start, so key generation does not eat into the
/// checks' grace period on a busy machine.
fn self_signed(dir: &std::path::Path) {
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
}

#[tokio::test]
async fn http_check_passes_on_200_and_fails_on_404() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let (sup, _token) = supervisor(dir.path());
    let mut events = sup.subscribe();
    let mut events2 = sup.subscribe();
    sup.start_instance(&start("ok", HTTP_APP, check("http", "/")));
    sup.start_instance(&start("missing", HTTP_APP, check("http", "/no-such-page")));
    let healthy = wait_for_state(&mut events, "ok", pb::InstanceState::Healthy).await;
    assert_eq!(healthy.message, "all health checks pass");
    let unhealthy = wait_for_state(&mut events2, "missing", pb::InstanceState::Unhealthy).await;
    assert!(
        unhealthy.message.contains("HTTP 404"),
        "{}",
        unhealthy.message
    );
}

#[tokio::test]
async fn https_check_needs_ignore_tls_errors_for_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let (sup, _token) = supervisor(dir.path());
    let mut events = sup.subscribe();
    let mut events2 = sup.subscribe();
    let certs = tempfile::tempdir().unwrap();
    self_signed(certs.path());
    let app = https_app(certs.path());
    let mut lenient = check("https", "/");
    lenient.ignore_tls_errors = true;
    sup.start_instance(&start("lenient", &app, lenient));
    sup.start_instance(&start("strict", &app, check("https", "/")));
    wait_for_state(&mut events, "lenient", pb::InstanceState::Healthy).await;
    let strict = wait_for_state(&mut events2, "strict", pb::InstanceState::Unhealthy).await;
    assert!(
        strict.message.to_lowercase().contains("certificate"),
        "{}",
        strict.message
    );
}

#[tokio::test]
async fn tcp_check_and_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let (sup, _token) = supervisor(dir.path());
    let mut events = sup.subscribe();
    // Listens only after 1.5 s: failures inside the grace do not count (the grace is long
    // so a slow machine cannot push the start past it; the first success ends it anyway).
    let mut tcp = check("tcp", "");
    tcp.grace_period_seconds = 20;
    tcp.max_consecutive_failures = 1;
    sup.start_instance(&start("late", &format!("sleep 1.5; {HTTP_APP}"), tcp));
    let mut seen = Vec::new();
    loop {
        let event = common::next_event(&mut events, "late").await;
        seen.push(event.state());
        if event.state == pb::InstanceState::Healthy as i32 {
            break;
        }
    }
    assert_eq!(
        seen,
        vec![pb::InstanceState::Running, pb::InstanceState::Healthy],
        "no Unhealthy during the grace period"
    );
}

#[tokio::test]
async fn without_checks_an_instance_with_ports_is_healthy_once_port_0_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let (sup, _token) = supervisor(dir.path());
    let mut events = sup.subscribe();
    let mut spec = start("plain", &format!("sleep 1; {HTTP_APP}"), check("tcp", ""));
    spec.health_checks.clear();
    sup.start_instance(&spec);
    let running = wait_for_state(&mut events, "plain", pb::InstanceState::Running).await;
    let healthy = wait_for_state(&mut events, "plain", pb::InstanceState::Healthy).await;
    assert!(healthy.updated_at_ms - running.updated_at_ms >= 900);
    assert!(std::net::TcpStream::connect(("127.0.0.1", healthy.ports[0] as u16)).is_ok());
}
