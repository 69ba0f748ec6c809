//! The simulated driver: instances without processes, for many-node tests and
//! benchmarks of the server on one machine.
//!
//! A simulated instance is a task in the agent. If it has ports it answers HTTP on
//! 127.0.0.1:PORT with `200 simulated instance <id>`, so readiness, http/tcp health checks,
//! registration and routing behave as with a real program. It runs until stopped, or
//! until `BERTH_SIM_EXIT_AFTER_MS` (from the spec's env) passes, then exits with
//! `BERTH_SIM_EXIT_CODE` (default 0): that is how tests make an instance crash. Simulated
//! instances end with the agent: a restarted agent reports them exited.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::{Driver, DriverError, DriverHandle, ExecChild, ExecCommand, Exit, LaunchSpec, Running};

#[derive(Debug, Default)]
pub struct SimDriver {
    next: AtomicU64,
    /// Stop switches of running instances, by `DriverHandle::start_ticks` (a counter here).
    running: Arc<Mutex<HashMap<u64, oneshot::Sender<Exit>>>>,
}

impl SimDriver {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Driver for SimDriver {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn exec(
        &self,
        _handle: &DriverHandle,
        _cmd: &ExecCommand,
    ) -> BoxFuture<'static, Result<ExecChild, DriverError>> {
        async {
            Err(DriverError::Spec(
                "the sim driver runs no processes, so there is nothing to exec into: run the app on the process or docker driver".into(),
            ))
        }
        .boxed()
    }

    fn start(&self, spec: &LaunchSpec) -> Result<Running, DriverError> {
        let key = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let listener = match spec.env.get("PORT").and_then(|p| p.parse::<u16>().ok()) {
            Some(port) => {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                let bind = || -> std::io::Result<tokio::net::TcpListener> {
                    let listener = std::net::TcpListener::bind(addr)?;
                    listener.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(listener)
                };
                Some(bind().map_err(|source| DriverError::Spawn {
                    program: format!("simulated instance on {addr}"),
                    source,
                })?)
            }
            None => None,
        };
        let exit_after = spec
            .env
            .get("BERTH_SIM_EXIT_AFTER_MS")
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(Duration::from_millis);
        let exit_code = spec
            .env
            .get("BERTH_SIM_EXIT_CODE")
            .and_then(|code| code.parse::<i32>().ok())
            .unwrap_or(0);
        let (stop_tx, stop_rx) = oneshot::channel();
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, stop_tx);
        let body = format!("simulated instance {}\n", spec.instance_id);
        let running = self.running.clone();
        let exit = async move {
            let serve = async {
                match listener {
                    Some(listener) => serve_http(listener, body).await,
                    None => std::future::pending().await,
                }
            };
            let timer = async {
                match exit_after {
                    Some(after) => tokio::time::sleep(after).await,
                    None => std::future::pending().await,
                }
            };
            let exit = tokio::select! {
                exit = stop_rx => exit.unwrap_or(Exit::Unknown),
                () = timer => Exit::Code(exit_code),
                () = serve => Exit::Unknown,
            };
            running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            exit
        }
        .boxed();
        Ok(Running {
            handle: DriverHandle {
                driver: self.name().to_string(),
                pid: 0,
                start_ticks: key,
                boot_id: String::new(),
                container: None,
            },
            exit,
        })
    }

    fn adopt(&self, _handle: &DriverHandle) -> Option<Running> {
        None
    }

    fn stop(
        &self,
        handle: &DriverHandle,
        _grace: Duration,
    ) -> BoxFuture<'static, Result<(), DriverError>> {
        let stop = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&handle.start_ticks);
        if let Some(stop) = stop {
            let _ = stop.send(Exit::Signal(15));
        }
        futures::future::ready(Ok(())).boxed()
    }
}

async fn serve_http(listener: tokio::net::TcpListener, body: String) {
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            // Out of file descriptors, say: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let response = response.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            // One request per connection is all a health check or a proxy probe needs.
            let _ = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await;
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::LogFiles;
    use berth_core::InstanceId;
    use berth_core::launch::CommandLine;
    use std::collections::BTreeMap;

    fn spec(env: &[(&str, String)]) -> LaunchSpec {
        LaunchSpec {
            instance_id: InstanceId::try_from("sim-1".to_string()).unwrap(),
            command: Some(CommandLine::Shell("ignored".into())),
            image: None,
            labels: BTreeMap::new(),
            resources: Default::default(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            work_dir: std::env::temp_dir(),
            logs: LogFiles::in_dir(&std::env::temp_dir()),
        }
    }

    #[tokio::test]
    async fn serves_http_on_its_port_until_stopped() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = SimDriver::new();
        let running = driver.start(&spec(&[("PORT", port.to_string())])).unwrap();
        let handle = running.handle.clone();
        // The instance lives in its exit future, which the supervisor always polls.
        let exit = tokio::spawn(running.exit);
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        socket.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut reply = String::new();
        socket.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(reply.ends_with("simulated instance sim-1\n"), "{reply}");
        assert!(driver.adopt(&handle).is_none());
        driver.stop(&handle, Duration::ZERO).await.unwrap();
        assert_eq!(exit.await.unwrap(), Exit::Signal(15));
        // The port is released with the instance.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }

    #[tokio::test]
    async fn exits_with_the_asked_code_after_the_asked_time() {
        let driver = SimDriver::new();
        let running = driver
            .start(&spec(&[
                ("BERTH_SIM_EXIT_AFTER_MS", "20".into()),
                ("BERTH_SIM_EXIT_CODE", "7".into()),
            ]))
            .unwrap();
        assert_eq!(running.exit.await, Exit::Code(7));
    }
}
