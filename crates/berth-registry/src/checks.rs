//! Server-side health checks of persistent instances: TCP connect (default) or HTTP GET.
//! Verdicts become `SetHealth` ops; Consul's `DeregisterCriticalServiceAfter` becomes a
//! `Deregister` once an instance has been critical that long.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::core::Registry;
use crate::model::{CheckSpec, HealthStatus, Instance, InstanceKey, ServiceKey};
use crate::naming::Op;

/// Check tunables.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub every: Duration,
    pub timeout: Duration,
    /// Checks run at once at most.
    pub concurrency: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            concurrency: 64,
        }
    }
}

/// Runs one check.
pub async fn probe(instance: &Instance, timeout: Duration) -> HealthStatus {
    match &instance.check {
        Some(CheckSpec::Tcp) => {
            let target = format!("{}:{}", instance.ip, instance.port);
            match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
                Ok(Ok(_)) => HealthStatus::Passing,
                _ => HealthStatus::Critical,
            }
        }
        Some(CheckSpec::TcpAddr { addr }) => {
            match tokio::time::timeout(timeout, TcpStream::connect(addr.as_str())).await {
                Ok(Ok(_)) => HealthStatus::Passing,
                _ => HealthStatus::Critical,
            }
        }
        Some(CheckSpec::Http { path }) => tokio::time::timeout(timeout, http_get(instance, path))
            .await
            .unwrap_or(HealthStatus::Critical),
        _ => instance.status,
    }
}

/// Splits `http://host:port/path` or a bare `/path` into (authority, path).
fn http_target(instance: &Instance, path: &str) -> (String, String) {
    if let Some(rest) = path.strip_prefix("http://") {
        let (authority, p) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        return (authority, p.to_string());
    }
    let p = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    (format!("{}:{}", instance.ip, instance.port), p)
}

async fn http_get(instance: &Instance, path: &str) -> HealthStatus {
    let (authority, path) = http_target(instance, path);
    let Ok(mut stream) = TcpStream::connect(&authority).await else {
        return HealthStatus::Critical;
    };
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: berth-registry\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return HealthStatus::Critical;
    }
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match stream.read(&mut head[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    match code {
        200..=299 => HealthStatus::Passing,
        // Consul's convention: 429 Too Many Requests is a warning.
        429 => HealthStatus::Warning,
        _ => HealthStatus::Critical,
    }
}

/// Checks every persistent instance with a TCP/HTTP check, forever.
pub async fn run(registry: Registry, options: CheckOptions) {
    let mut critical_since: HashMap<(ServiceKey, InstanceKey), Instant> = HashMap::new();
    let mut tick = tokio::time::interval(options.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (_, services) = registry.snapshot();
        // In a cluster only a service's owner checks it; its verdicts replicate.
        let targets: Vec<(ServiceKey, Instance)> = services
            .iter()
            .filter(|s| registry.owns(&s.key))
            .flat_map(|s| {
                s.instances
                    .values()
                    .filter(|i| {
                        !i.ephemeral
                            && matches!(
                                i.check,
                                Some(
                                    CheckSpec::Tcp
                                        | CheckSpec::TcpAddr { .. }
                                        | CheckSpec::Http { .. }
                                )
                            )
                    })
                    .map(|i| (s.key.clone(), (**i).clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let timeout = options.timeout;
        let results: Vec<(ServiceKey, Instance, HealthStatus)> = futures::stream::iter(targets)
            .map(|(k, i)| async move {
                let status = probe(&i, timeout).await;
                (k, i, status)
            })
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
        let now = Instant::now();
        let mut seen = std::collections::HashSet::new();
        for (service, instance, status) in results {
            let key = (service.clone(), instance.key());
            seen.insert(key.clone());
            if status == HealthStatus::Critical {
                let since = *critical_since.entry(key.clone()).or_insert(now);
                if let Some(ms) = instance.deregister_critical_after_ms
                    && now.duration_since(since) >= Duration::from_millis(ms)
                {
                    critical_since.remove(&key);
                    let _ = registry
                        .submit(Op::Deregister {
                            service,
                            instance: instance.key(),
                        })
                        .await;
                    continue;
                }
            } else {
                critical_since.remove(&key);
            }
            if status != instance.status {
                let _ = registry
                    .submit(Op::SetHealth {
                        service,
                        instance: instance.key(),
                        status,
                    })
                    .await;
            }
        }
        critical_since.retain(|k, _| seen.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::CoreOptions;
    use crate::model::DEFAULT_CLUSTER;

    fn persistent(s: &ServiceKey, port: u16, check: CheckSpec) -> Instance {
        let mut i = Instance::new(s, "127.0.0.1", port, DEFAULT_CLUSTER);
        i.ephemeral = false;
        i.check = Some(check);
        i
    }

    #[tokio::test]
    async fn tcp_and_http_checks_follow_the_target() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /ok ") {
                    "200 OK"
                } else {
                    "503 Unavailable"
                };
                let _ = sock
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let s = ServiceKey::simple("x");
        let t = Duration::from_secs(1);
        assert_eq!(
            probe(&persistent(&s, port, CheckSpec::Tcp), t).await,
            HealthStatus::Passing
        );
        let ok = CheckSpec::Http { path: "/ok".into() };
        assert_eq!(
            probe(&persistent(&s, port, ok), t).await,
            HealthStatus::Passing
        );
        let bad = CheckSpec::Http {
            path: format!("http://127.0.0.1:{port}/bad"),
        };
        assert_eq!(
            probe(&persistent(&s, port, bad), t).await,
            HealthStatus::Critical
        );
        // A port nobody listens on.
        let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = free.local_addr().unwrap().port();
        drop(free);
        assert_eq!(
            probe(&persistent(&s, dead, CheckSpec::Tcp), t).await,
            HealthStatus::Critical
        );
    }

    #[tokio::test]
    async fn checker_marks_dead_instance_critical_and_deregisters_it() {
        let r = Registry::start(CoreOptions::default()).unwrap();
        let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = free.local_addr().unwrap().port();
        drop(free);
        let s = ServiceKey::simple("x");
        let mut i = persistent(&s, dead, CheckSpec::Tcp);
        i.deregister_critical_after_ms = Some(150);
        r.submit(Op::Register {
            service: s.clone(),
            instance: i,
        })
        .await
        .unwrap();
        let opts = CheckOptions {
            every: Duration::from_millis(50),
            timeout: Duration::from_millis(200),
            concurrency: 4,
        };
        tokio::spawn(run(r.clone(), opts));
        let mut saw_critical = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let svc = r.get(&s).unwrap();
            match svc.instances.values().next() {
                Some(i) if !i.healthy() => saw_critical = true,
                Some(_) => {}
                None => break,
            }
        }
        assert!(saw_critical);
        assert!(r.get(&s).unwrap().instances.is_empty());
    }
}
