//! Black-box tests of the registry's Consul KV, transactions and sessions: the real
//! binary on loopback, driven by py-consul (`tests/registry_clients/consul_kv.py`).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use berth_testkit::{BerthProcess, python, temp_dir};
use common::BIN;

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/registry_clients")
}

#[tokio::test]
async fn py_consul_kv_txn_sessions_and_locks() {
    let dir = temp_dir();
    let data = dir.path().to_str().expect("utf-8 temp path");
    let registry = BerthProcess::start(
        BIN,
        &[
            "registry",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
        ],
    )
    .await;
    let addr = registry.addr("http").to_string();
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python())
            .arg(scripts().join("consul_kv.py"))
            .arg(&addr)
            .current_dir(scripts())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("consul_kv.py did not finish within 120 s")
    .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim_end().ends_with("OK"),
        "consul_kv.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- registry\n{}",
        output.status,
        registry.output()
    );
    registry.terminate().await;
}
