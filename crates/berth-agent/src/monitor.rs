//! One monitor per running instance: it decides healthy/unhealthy and keeps the
//! instance's registry entry in step with that decision.
//!
//! - No health checks: healthy once the process runs and, if it has ports, once port 0
//!   accepts TCP connections (a process that has not bound its port yet cannot serve).
//! - With checks: healthy once every check passed; unhealthy once any check failed
//!   `max_consecutive_failures` times in a row (failures during the grace period, before
//!   the first success, do not count). The server decides what to do with an unhealthy
//!   instance.
//! - Registry: registered while every check's last result passed, so a single failed
//!   probe takes the instance out of routing within one interval, long before it counts
//!   as unhealthy; beats every 5 s; re-registered when the registry forgot it;
//!   deregistered when the instance stops or exits (not when the agent itself stops:
//!   instances outlive the agent).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use berth_core::instance::InstanceState;
use berth_core::launch::{CheckKind, HealthCheckSpec, InstanceSpec};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health::{CheckState, Prober, next_delay, tcp_accepts};
use crate::registry::{BeatOutcome, NacosClient, Registration};
use crate::supervisor::Supervisor;

pub(crate) struct MonitorCtx {
    pub spec: InstanceSpec,
    pub ports: Vec<u16>,
    pub env: BTreeMap<String, String>,
    pub work_dir: PathBuf,
    /// The instance is stopping or gone.
    pub cancel: CancellationToken,
    /// The agent is stopping.
    pub agent: CancellationToken,
    pub prober: Prober,
    /// Runs command checks inside the instance when its driver isolates it.
    pub inside: Option<Inside>,
    pub registry: Option<NacosClient>,
    pub advertise: String,
    pub node_id: String,
    pub beat_interval: Duration,
    pub previously_healthy: bool,
}

/// The driver and handle of an isolated instance (a container), for command checks.
pub(crate) struct Inside {
    pub driver: std::sync::Arc<dyn crate::driver::Driver>,
    pub handle: crate::driver::DriverHandle,
}

impl Inside {
    /// `None` when the driver runs checks on the host after all.
    async fn probe(
        &self,
        check: &HealthCheckSpec,
        env: &BTreeMap<String, String>,
    ) -> Option<Result<(), String>> {
        let CheckKind::Command { argv } = &check.kind else {
            return None;
        };
        let exec = self.driver.exec_check(&self.handle, argv, env)?;
        Some(match tokio::time::timeout(check.timeout, exec).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", check.timeout)),
        })
    }
}

/// How often a port-less-check instance's port 0 is tried until it accepts.
const PORT_POLL: Duration = Duration::from_millis(100);

pub(crate) async fn run(ctx: MonitorCtx, supervisor: Supervisor) {
    let registration =
        crate::registry::registration(&ctx.spec, &ctx.ports, &ctx.advertise, &ctx.node_id);
    let mut entry = Entry {
        client: ctx.registry.clone(),
        registration,
        registered: false,
        next_beat: Instant::now(),
        beat_interval: ctx.beat_interval,
        supervisor: supervisor.clone(),
    };
    let id = ctx.spec.instance_id.clone();
    let started = Instant::now();
    let checks = &ctx.spec.health_checks;
    let mut states: Vec<CheckState> = checks
        .iter()
        .map(|_| CheckState::new(ctx.previously_healthy))
        .collect();
    let mut due: Vec<Instant> = checks.iter().map(|_| Instant::now()).collect();
    let mut healthy = false;
    loop {
        let next_check = due.iter().min().copied();
        let wake = if checks.is_empty() && !healthy {
            Instant::now() + PORT_POLL
        } else {
            match (next_check, entry.wants_beat()) {
                (Some(check), true) => check.min(entry.next_beat),
                (Some(check), false) => check,
                (None, true) => entry.next_beat,
                (None, false) => Instant::now() + Duration::from_secs(3600),
            }
        };
        tokio::select! {
            // A stop or the agent's shutdown wins over a probe that is due as well.
            biased;
            _ = ctx.agent.cancelled() => return,
            _ = ctx.cancel.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {}
        }
        if checks.is_empty() {
            if !healthy {
                let ready = match ctx.ports.first() {
                    None => true,
                    Some(port) => tcp_accepts(SocketAddr::from((Ipv4Addr::LOCALHOST, *port)))
                        .await
                        .is_ok(),
                };
                if ready {
                    healthy = true;
                    let why = if ctx.ports.is_empty() {
                        "process running (no health checks)".to_string()
                    } else {
                        format!(
                            "port {} accepts connections (no health checks)",
                            ctx.ports[0]
                        )
                    };
                    supervisor.set_health(&id, InstanceState::Healthy, why);
                }
            }
        } else {
            let now = Instant::now();
            let in_grace =
                |check: &berth_core::launch::HealthCheckSpec| now < started + check.grace;
            let mut failure = None;
            for (i, check) in checks.iter().enumerate() {
                if due[i] > now {
                    continue;
                }
                let inside = match &ctx.inside {
                    Some(inside) => inside.probe(check, &ctx.env).await,
                    None => None,
                };
                let result = match inside {
                    Some(result) => result,
                    None => {
                        ctx.prober
                            .probe(check, &ctx.ports, &ctx.env, &ctx.work_dir)
                            .await
                    }
                };
                supervisor
                    .metrics()
                    .check(check.kind.protocol().as_str(), result.is_ok());
                states[i].record(
                    result.is_ok(),
                    in_grace(check),
                    Instant::now(),
                    check.interval,
                );
                if let Err(why) = result {
                    tracing::debug!(instance = %id, check = i, "health check failed: {why}");
                    failure.get_or_insert((i, why));
                }
                due[i] = Instant::now() + next_delay(check, &states[i]);
            }
            let all_pass = states.iter().all(|s| s.last_ok == Some(true));
            let failed_for_good = checks
                .iter()
                .zip(&states)
                .any(|(check, state)| state.failed_for_good(check.max_consecutive_failures));
            if all_pass && !healthy {
                healthy = true;
                supervisor.set_health(&id, InstanceState::Healthy, "all health checks pass".into());
            } else if failed_for_good {
                healthy = false;
                let (i, why) = failure.unwrap_or((0, "failing".into()));
                let count = states[i].consecutive_failures;
                supervisor.set_health(
                    &id,
                    InstanceState::Unhealthy,
                    format!("health check {i} failed {count} times in a row: {why}"),
                );
            } else if !all_pass {
                // Below the threshold: out of routing already, not yet unhealthy.
                healthy = false;
            }
            entry.sync(all_pass).await;
            entry.beat_if_due().await;
            continue;
        }
        entry.sync(healthy).await;
        entry.beat_if_due().await;
    }
    entry.sync(false).await;
}

/// The instance's registry entry.
struct Entry {
    client: Option<NacosClient>,
    registration: Option<Registration>,
    registered: bool,
    next_beat: Instant,
    beat_interval: Duration,
    supervisor: Supervisor,
}

impl Entry {
    fn wants_beat(&self) -> bool {
        self.client.is_some() && self.registration.is_some()
    }

    /// Registers or deregisters so the registry matches `routable`.
    async fn sync(&mut self, routable: bool) {
        let (Some(client), Some(reg)) = (&self.client, &self.registration) else {
            return;
        };
        let metrics = self.supervisor.metrics();
        if routable && !self.registered {
            let result = client.register(reg).await;
            metrics.registry_call("register", result.is_ok());
            match result {
                Ok(()) => {
                    tracing::info!(service = %reg.service, port = reg.port, "registered in the registry");
                    self.registered = true;
                    self.next_beat = Instant::now() + self.beat_interval;
                }
                Err(err) => {
                    if client.should_report(&err) {
                        tracing::warn!("{err}; retrying");
                    } else {
                        tracing::debug!("{err}; retrying");
                    }
                    // Retry at the next beat slot rather than on every wake-up.
                    self.next_beat =
                        Instant::now() + self.beat_interval.min(Duration::from_secs(1));
                }
            }
        } else if !routable && self.registered {
            let result = client.deregister(reg).await;
            metrics.registry_call("deregister", result.is_ok());
            if let Err(err) = &result
                && client.should_report(err)
            {
                // The registry drops it on its own once beats stop (15 s / 30 s).
                tracing::warn!("{err}; the registry will expire the instance without beats");
            }
            self.registered = false;
        }
    }

    async fn beat_if_due(&mut self) {
        if !self.registered || Instant::now() < self.next_beat {
            return;
        }
        let (Some(client), Some(reg)) = (&self.client, &self.registration) else {
            return;
        };
        self.next_beat = Instant::now() + self.beat_interval;
        let result = client.beat(reg).await;
        self.supervisor
            .metrics()
            .registry_call("beat", result.is_ok());
        match result {
            Ok(BeatOutcome::Alive) => {}
            Ok(BeatOutcome::NotFound) => {
                tracing::info!(service = %reg.service, "the registry forgot the instance: registering again");
                self.registered = false;
                self.sync(true).await;
            }
            Err(err) if client.should_report(&err) => tracing::warn!("{err}"),
            Err(err) => tracing::debug!("{err}"),
        }
    }
}
