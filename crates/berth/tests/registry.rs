//! Black-box tests of `berth registry`: the real binary on loopback, driven by the real
//! third-party clients (nacos-sdk-python 1.0.0, py-consul) from `tests/registry_clients`.

mod common;

use std::path::Path;
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
        "--push-ack-timeout",
        "200ms",
        "--check-interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    BerthProcess::start(BIN, &args).await
}

/// Runs a client script against `addr`; it asserts itself and prints OK.
async fn run_script(name: &str, addr: &str, registry: &BerthProcess) {
    run_client_script(
        &python(),
        name,
        &[addr.to_string()],
        Duration::from_secs(60),
        Some(registry),
    )
    .await;
}

#[tokio::test]
async fn nacos_sdk_registers_lists_beats_expires_and_deregisters() {
    let dir = temp_dir();
    let registry = start_registry(dir.path(), &[]).await;
    let addr = registry.addr("http").to_string();
    run_script("nacos_lifecycle.py", &addr, &registry).await;
    registry.terminate().await;
}

#[tokio::test]
async fn nacos_raw_api_edges_and_bad_input() {
    let dir = temp_dir();
    let registry = start_registry(dir.path(), &[]).await;
    let addr = registry.addr("http").to_string();
    run_script("nacos_http_edges.py", &addr, &registry).await;
    registry.terminate().await;
}

#[tokio::test]
async fn udp_push_is_received_acked_and_silent_subscribers_dropped() {
    let dir = temp_dir();
    let registry = start_registry(dir.path(), &[]).await;
    let addr = registry.addr("http").to_string();
    run_script("udp_push.py", &addr, &registry).await;
    registry.terminate().await;
}

#[tokio::test]
async fn py_consul_register_health_blocking_queries_and_ttl() {
    let dir = temp_dir();
    let registry = start_registry(dir.path(), &[]).await;
    let addr = registry.addr("http").to_string();
    run_script("consul_client.py", &addr, &registry).await;
    registry.terminate().await;
}

#[tokio::test]
async fn persistent_instances_survive_a_restart() {
    let dir = temp_dir();
    let registry = start_registry(dir.path(), &[]).await;
    let addr = registry.addr("http").to_string();
    run_script("persistent_register.py", &addr, &registry).await;
    let status = registry.terminate().await;
    assert!(status.success(), "registry exited with {status}");
    let registry = start_registry(dir.path(), &[]).await;
    let addr = registry.addr("http").to_string();
    run_script("persistent_check.py", &addr, &registry).await;
    registry.terminate().await;
}

#[tokio::test]
async fn a_second_registry_on_the_same_data_dir_is_refused() {
    let dir = temp_dir();
    let first = start_registry(dir.path(), &[]).await;
    let out = tokio::process::Command::new(BIN)
        .args([
            "registry",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .await
        .expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    first.terminate().await;
}

#[tokio::test]
async fn bad_flags_and_missing_data_dir_are_named() {
    let out = tokio::process::Command::new(BIN)
        .args([
            "registry",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .output()
        .await
        .expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data_dir") || err.contains("data-dir"),
        "{err}"
    );

    let dir = temp_dir();
    let out = tokio::process::Command::new(BIN)
        .args([
            "registry",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .args(["--beat-timeout", "soon"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .await
        .expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("beat") && err.contains("soon"), "{err}");

    // Off loopback without a secret: refused before binding anything.
    let out = tokio::process::Command::new(BIN)
        .args([
            "registry",
            "--listen",
            "0.0.0.0:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .await
        .expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth"), "{err}");
}

#[tokio::test]
async fn corrupt_state_file_stops_start_and_is_kept() {
    let dir = temp_dir();
    let state = dir.path().join("naming.json");
    std::fs::write(&state, b"{ not json").unwrap();
    let out = tokio::process::Command::new(BIN)
        .args([
            "registry",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .await
        .expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("naming.json") && err.contains("move it aside"),
        "{err}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), b"{ not json");
}

#[tokio::test]
async fn sigterm_stops_the_registry_cleanly() {
    let dir = temp_dir();
    let registry = start_registry(dir.path(), &[]).await;
    let addr = registry.addr("http");
    wait_until("registry answers", Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    let status = registry.terminate().await;
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn services_command_lists_and_shows_what_clients_registered() {
    let dir = temp_dir();
    let registry = start_registry(dir.path(), &[]).await;
    let http = registry.addr("http").to_string();
    let grpc = registry.addr("grpc").to_string();
    let register = format!(
        "import nacos; c = nacos.NacosClient('{http}', namespace=''); \
         assert c.add_naming_instance('shop', '127.0.0.1', 8080, cluster_name='DEFAULT', metadata={{'berth.routes': 'shop.example'}}); print('OK')"
    );
    let out = tokio::process::Command::new(python())
        .args(["-c", &register])
        .output()
        .await
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = tokio::process::Command::new(BIN)
        .args(["services", "--registry", &grpc, "list"])
        .output()
        .await
        .expect("run berth");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("shop") && text.contains("DEFAULT_GROUP"),
        "{text}"
    );

    let out = tokio::process::Command::new(BIN)
        .args([
            "-o",
            "json",
            "services",
            "--registry",
            &grpc,
            "show",
            "shop",
        ])
        .output()
        .await
        .expect("run berth");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("\"port\":8080") && text.contains("shop.example"),
        "{text}"
    );

    let out = tokio::process::Command::new(BIN)
        .args(["services", "--registry", &grpc, "show", "nope"])
        .output()
        .await
        .expect("run berth");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("berth services list"));
    registry.terminate().await;
}

#[tokio::test]
async fn auth_on_requires_a_token_from_the_secret() {
    let dir = temp_dir();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-secret\n").unwrap();
    let data = dir.path().join("data");
    let secret_arg = secret.to_str().unwrap().to_string();
    let registry = start_registry(&data, &["--auth-secret-file", &secret_arg]).await;
    let addr = registry.addr("http").to_string();
    let output = tokio::process::Command::new(python())
        .arg(common::client_scripts().join("auth.py"))
        .args([&addr, &secret_arg])
        .current_dir(common::client_scripts())
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim_end().ends_with("OK"),
        "auth.py failed:\n{stdout}\n{}\n--- registry\n{}",
        String::from_utf8_lossy(&output.stderr),
        registry.output()
    );
    // The watch refuses callers without the token too.
    let out = tokio::process::Command::new(BIN)
        .args([
            "services",
            "--registry",
            &registry.addr("grpc").to_string(),
            "list",
        ])
        .env_remove("BERTH_REGISTRY_TOKEN")
        .output()
        .await
        .expect("run berth");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Bearer"));
    let out = tokio::process::Command::new(BIN)
        .args([
            "services",
            "--registry",
            &registry.addr("grpc").to_string(),
            "list",
        ])
        .env(
            "BERTH_REGISTRY_TOKEN",
            "0123456789abcdef0123456789abcdef-secret",
        )
        .output()
        .await
        .expect("run berth");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("secured"));
    registry.terminate().await;
}
