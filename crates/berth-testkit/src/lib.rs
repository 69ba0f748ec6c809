//! Test harness shared by every Berth crate: polling waits instead of sleeps, the real
//! `berth` binary as a child process for black-box tests, the reaper of instances left
//! behind, fake peers on the real wire (a fake agent for server tests, a fake server for
//! agent tests), throwaway PostgreSQL, Docker and NATS servers, temp folders, the Python
//! venv that holds third-party clients.
//!
//! Only tests depend on this crate. It must never be a dependency of a role crate, and it
//! depends on no role crate either (roles are started in-process by their own tests
//! through their public `start` functions).
#![forbid(unsafe_code)]

pub mod docker;
pub mod fake_agent;
pub mod fake_server;
pub mod nats;
pub mod postgres;
mod process;
mod reaper;
mod wait;

pub use process::BerthProcess;
pub use reaper::InstanceReaper;
pub use wait::{wait_for, wait_until};

use std::path::PathBuf;

/// The repository root (where `Cargo.toml` of the workspace lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

/// The Python interpreter of the venv `scripts/test` prepares with the third-party
/// clients (nacos-sdk-python, py-consul, nats-py).
pub fn python() -> PathBuf {
    let path = workspace_root().join("target/venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test once (it creates the venv with the Python clients)",
        path.display()
    );
    path
}

/// The Python interpreter of the venv holding nacos-sdk-python 3.x (the Nacos 2.x gRPC
/// client; the same package name as 1.x, so a venv of its own, made by `scripts/test`).
pub fn python_nacos3() -> PathBuf {
    let path = workspace_root().join("target/venv-nacos3/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test once (it creates the venv with nacos-sdk-python 3.x)",
        path.display()
    );
    path
}

/// A fresh temporary folder, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-test-")
        .tempdir()
        .expect("create a temp folder")
}

/// Every listener `berth dev` opens, as the role variables that move it.
pub const DEV_LISTENERS: [&str; 9] = [
    "BERTH_SERVER_LISTEN",
    "BERTH_SERVER_AGENT_LISTEN",
    "BERTH_REGISTRY_LISTEN",
    "BERTH_REGISTRY_GRPC_LISTEN",
    "BERTH_REGISTRY_DNS_LISTEN",
    "BERTH_ROUTER_LISTEN",
    "BERTH_ROUTER_STATUS_LISTEN",
    "BERTH_AGENT_LISTEN",
    "BERTH_DIAG_LISTEN",
];

/// `berth dev --data-dir DIR` with every listener on an ephemeral loopback port (read
/// them from the ready line: `api`, `router`, `registry`, ...), quiet logs, and a short
/// start-up grace so the server acts as soon as the embedded agent said hello. Add
/// `--no-demo` or more variables before spawning with [`BerthProcess::spawn`].
pub fn dev_command(bin: &str, data_dir: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(bin);
    command
        .arg("dev")
        .arg("--data-dir")
        .arg(data_dir)
        .env("BERTH_LOG", "warn")
        .env("BERTH_SERVER_STARTUP_GRACE", "1s");
    for var in DEV_LISTENERS {
        command.env(var, "127.0.0.1:0");
    }
    command
}
