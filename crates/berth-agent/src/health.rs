//! Single health probes: one attempt of one check against one instance, bounded by the
//! check's timeout. Checks always target 127.0.0.1: the agent runs beside the instance.
//! HTTP(S) counts 2xx and 3xx as healthy (redirects are not followed), as Marathon does.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use berth_core::launch::{CheckKind, HealthCheckSpec};

#[derive(Debug, Clone)]
pub struct Prober {
    http: reqwest::Client,
    insecure: reqwest::Client,
}

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

impl Prober {
    pub fn new() -> Self {
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .danger_accept_invalid_certs(insecure)
                .build()
                .unwrap_or_default()
        };
        Self {
            http: build(false),
            insecure: build(true),
        }
    }

    /// `Ok` when healthy, otherwise why not.
    pub async fn probe(
        &self,
        check: &HealthCheckSpec,
        ports: &[u16],
        env: &BTreeMap<String, String>,
        work_dir: &Path,
    ) -> Result<(), String> {
        let attempt = self.attempt(check, ports, env, work_dir);
        match tokio::time::timeout(check.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", check.timeout)),
        }
    }

    async fn attempt(
        &self,
        check: &HealthCheckSpec,
        ports: &[u16],
        env: &BTreeMap<String, String>,
        work_dir: &Path,
    ) -> Result<(), String> {
        let addr = || -> Result<SocketAddr, String> {
            let port = ports
                .get(check.port_index)
                .ok_or_else(|| format!("the instance has no port {}", check.port_index))?;
            Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, *port)))
        };
        match &check.kind {
            CheckKind::Tcp => tcp_accepts(addr()?).await,
            CheckKind::Http { path } => {
                let url = format!("http://{}{}", addr()?, path);
                http_ok(&self.http, &url).await
            }
            CheckKind::Https {
                path,
                ignore_tls_errors,
            } => {
                let url = format!("https://{}{}", addr()?, path);
                let client = if *ignore_tls_errors {
                    &self.insecure
                } else {
                    &self.http
                };
                http_ok(client, &url).await
            }
            CheckKind::Command { argv } => command_ok(argv, env, work_dir).await,
        }
    }
}

pub async fn tcp_accepts(addr: SocketAddr) -> Result<(), String> {
    tokio::net::TcpStream::connect(addr)
        .await
        .map(drop)
        .map_err(|err| format!("tcp {addr}: {err}"))
}

async fn http_ok(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let response = client.get(url).send().await.map_err(|err| {
        // reqwest's top-level message hides the cause (refused, TLS): show the chain.
        let mut text = format!("GET {url}: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    })?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("GET {url}: HTTP {}", status.as_u16()))
    }
}

async fn command_ok(
    argv: &[String],
    env: &BTreeMap<String, String>,
    work_dir: &Path,
) -> Result<(), String> {
    let status = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(env)
        .current_dir(work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // A check that outlives its timeout is dropped, and must not linger.
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|err| format!("cannot run {:?}: {err}", argv[0]))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(format!("{:?} exited with code {code}", argv[0])),
        None => Err(format!("{:?} was killed by a signal", argv[0])),
    }
}

/// Failure count after which a check makes the instance unhealthy, with the grace
/// period: failures while in grace (and before the first success) do not count.
///
/// Probes before the first success run faster than the interval (see [`next_delay`]);
/// only failures at least one interval apart count, so the faster probing never makes
/// an instance unhealthy sooner than its configured interval would.
#[derive(Debug, Clone)]
pub struct CheckState {
    pub passed_once: bool,
    pub last_ok: Option<bool>,
    pub consecutive_failures: u32,
    last_counted: Option<Instant>,
}

impl CheckState {
    pub fn new(previously_healthy: bool) -> Self {
        Self {
            passed_once: previously_healthy,
            last_ok: None,
            consecutive_failures: 0,
            last_counted: None,
        }
    }

    /// Records one result at `now`; `in_grace` = the grace period has not ended yet.
    pub fn record(&mut self, ok: bool, in_grace: bool, now: Instant, interval: Duration) {
        self.last_ok = Some(ok);
        if ok {
            self.passed_once = true;
            self.consecutive_failures = 0;
            self.last_counted = None;
        } else if self.passed_once || !in_grace {
            let spaced = self
                .last_counted
                .is_none_or(|last| now.duration_since(last) >= interval);
            if spaced {
                self.consecutive_failures += 1;
                self.last_counted = Some(now);
            }
        }
    }

    pub fn failed_for_good(&self, max: u32) -> bool {
        self.consecutive_failures >= max
    }
}

/// How often to probe: until a check first passes, at most every 500 ms, so a rolling
/// deploy learns about a healthy instance well before a long interval ends.
pub fn next_delay(check: &HealthCheckSpec, state: &CheckState) -> Duration {
    if state.passed_once {
        check.interval
    } else {
        check.interval.min(Duration::from_millis(500))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: CheckKind) -> HealthCheckSpec {
        HealthCheckSpec {
            kind,
            port_index: 0,
            grace: Duration::ZERO,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            max_consecutive_failures: 2,
        }
    }

    #[test]
    fn grace_hides_failures_until_the_first_success() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut state = CheckState::new(false);
        state.record(false, true, t0, s);
        state.record(false, true, t0 + s, s);
        assert_eq!(state.consecutive_failures, 0);
        state.record(true, true, t0 + 2 * s, s);
        state.record(false, true, t0 + 3 * s, s);
        assert_eq!(
            state.consecutive_failures, 1,
            "grace ends at the first success"
        );
        // A failure less than an interval after the last counted one does not count.
        state.record(false, false, t0 + 3 * s + s / 2, s);
        assert_eq!(state.consecutive_failures, 1);
        state.record(false, false, t0 + 4 * s, s);
        assert!(state.failed_for_good(2));
        state.record(true, false, t0 + 5 * s, s);
        assert!(!state.failed_for_good(1));
    }

    #[tokio::test]
    async fn tcp_and_command_probes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let prober = Prober::new();
        let env = BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]);
        let dir = std::env::temp_dir();
        assert!(
            prober
                .probe(&check(CheckKind::Tcp), &[open], &env, &dir)
                .await
                .is_ok()
        );
        let err = prober
            .probe(&check(CheckKind::Tcp), &[closed], &env, &dir)
            .await
            .unwrap_err();
        assert!(err.contains("refused"), "{err}");
        let sh = |line: &str| CheckKind::Command {
            argv: vec!["/bin/sh".into(), "-c".into(), line.into()],
        };
        assert!(
            prober
                .probe(&check(sh("exit 0")), &[], &env, &dir)
                .await
                .is_ok()
        );
        let err = prober
            .probe(&check(sh("exit 4")), &[], &env, &dir)
            .await
            .unwrap_err();
        assert!(err.contains("code 4"), "{err}");
        let mut slow = check(sh("sleep 5"));
        slow.timeout = Duration::from_millis(100);
        let err = prober.probe(&slow, &[], &env, &dir).await.unwrap_err();
        assert!(err.contains("within"), "{err}");
    }
}
