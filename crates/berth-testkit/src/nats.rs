//! A real `nats-server` (Debian's `nats-server`; `scripts/setup.d/router.sh` installs it)
//! on a loopback port, owned by one test and killed when dropped.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
}

impl NatsServer {
    /// Starts on a random port, or on `port` (to restart a stopped server in place).
    pub async fn start(port: Option<u16>) -> Self {
        let port_arg = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into());
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port_arg])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server not installed: run scripts/setup.d/router.sh (apt-get install nats-server)");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut found = None;
        let mut seen = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                found = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok());
            }
            if line.contains("Server is ready") {
                break;
            }
        }
        let port = found.unwrap_or_else(|| panic!("nats-server did not start:\n{seen}"));
        // Keep draining its log so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        NatsServer {
            child: Some(child),
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }
}
