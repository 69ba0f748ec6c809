//! Liveness of instances whose health the client reports: Nacos ephemeral instances
//! (beats) and Consul TTL checks (pass/warn/fail).
//!
//! Pure bookkeeping: callers pass `now`, and [`Liveness::sweep`] turns deadlines into
//! [`Op`]s for the naming core to apply. Nothing here touches the naming state.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{HealthStatus, InstanceKey, ServiceKey};
use crate::naming::Op;

/// When a silent instance is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletePolicy {
    /// This long after the last beat (Nacos `ip.delete.timeout`).
    AfterLastBeat(Duration),
    /// This long after it turned critical (Consul `DeregisterCriticalServiceAfter`).
    AfterCritical(Duration),
    Never,
}

/// Deadlines of one tracked instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub unhealthy_after: Duration,
    pub delete: DeletePolicy,
}

#[derive(Debug)]
struct Entry {
    last: Instant,
    deadlines: Deadlines,
    failed_at: Option<Instant>,
    marked_critical: bool,
}

/// Beat bookkeeping for every client-reported instance.
///
/// Nested by service so that a beat looks its entry up by reference (no key is cloned
/// on the hot path) and each service key is held once, not once per instance.
#[derive(Debug, Default)]
pub struct Liveness {
    services: HashMap<ServiceKey, HashMap<InstanceKey, Entry>>,
    len: usize,
}

impl Liveness {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn entry(&mut self, service: &ServiceKey, instance: &InstanceKey) -> Option<&mut Entry> {
        self.services.get_mut(service)?.get_mut(instance)
    }

    /// Starts (or restarts) tracking with a fresh beat at `now`.
    pub fn track(
        &mut self,
        service: &ServiceKey,
        instance: &InstanceKey,
        d: Deadlines,
        now: Instant,
    ) {
        let entry = Entry {
            last: now,
            deadlines: d,
            failed_at: None,
            marked_critical: false,
        };
        let instances = match self.services.get_mut(service) {
            Some(m) => m,
            None => self.services.entry(service.clone()).or_default(),
        };
        if instances.insert(instance.clone(), entry).is_none() {
            self.len += 1;
        }
    }

    /// Updates deadlines (metadata changed) without counting a beat.
    pub fn retime(&mut self, service: &ServiceKey, instance: &InstanceKey, d: Deadlines) {
        if let Some(e) = self.entry(service, instance) {
            e.deadlines = d;
        }
    }

    pub fn forget(&mut self, service: &ServiceKey, instance: &InstanceKey) {
        let Some(instances) = self.services.get_mut(service) else {
            return;
        };
        if instances.remove(instance).is_some() {
            self.len -= 1;
        }
        if instances.is_empty() {
            self.services.remove(service);
        }
    }

    pub fn contains(&self, service: &ServiceKey, instance: &InstanceKey) -> bool {
        self.services
            .get(service)
            .is_some_and(|m| m.contains_key(instance))
    }

    /// Records a beat (or a Consul pass/warn). False when the instance is not tracked.
    pub fn beat(&mut self, service: &ServiceKey, instance: &InstanceKey, now: Instant) -> bool {
        match self.entry(service, instance) {
            Some(e) => {
                e.last = now;
                e.failed_at = None;
                e.marked_critical = false;
                true
            }
            None => false,
        }
    }

    /// Records an explicit failure (Consul `check/fail`). False when not tracked.
    pub fn fail(&mut self, service: &ServiceKey, instance: &InstanceKey, now: Instant) -> bool {
        match self.entry(service, instance) {
            Some(e) => {
                e.failed_at.get_or_insert(now);
                e.marked_critical = true;
                true
            }
            None => false,
        }
    }

    /// Turns passed deadlines into ops: critical once, then removal.
    pub fn sweep(&mut self, now: Instant) -> Vec<Op> {
        self.sweep_owned(now, |_| true)
    }

    /// [`Liveness::sweep`] for the services `owned` accepts. In a cluster only a key's
    /// owner expires it; every other node keeps its entries fresh, so a node that takes
    /// a key over gives each instance a full timeout to beat it first.
    pub fn sweep_owned(&mut self, now: Instant, owned: impl Fn(&ServiceKey) -> bool) -> Vec<Op> {
        let mut ops = Vec::new();
        let mut removed = 0;
        self.services.retain(|service, instances| {
            if !owned(service) {
                for e in instances.values_mut() {
                    e.last = now;
                    e.failed_at = None;
                    e.marked_critical = false;
                }
                return true;
            }
            instances.retain(|instance, e| {
                let silent_since = e.last + e.deadlines.unhealthy_after;
                let critical_since = e
                    .failed_at
                    .or((now >= silent_since).then_some(silent_since));
                let delete = match (e.deadlines.delete, critical_since) {
                    (DeletePolicy::AfterLastBeat(d), _) => now >= e.last + d,
                    (DeletePolicy::AfterCritical(d), Some(since)) => now >= since + d,
                    _ => false,
                };
                if delete {
                    ops.push(Op::Deregister {
                        service: service.clone(),
                        instance: instance.clone(),
                    });
                    removed += 1;
                    return false;
                }
                if critical_since.is_some() && !e.marked_critical {
                    e.marked_critical = true;
                    ops.push(Op::SetHealth {
                        service: service.clone(),
                        instance: instance.clone(),
                        status: HealthStatus::Critical,
                    });
                }
                true
            });
            !instances.is_empty()
        });
        self.len -= removed;
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nacos() -> Deadlines {
        Deadlines {
            unhealthy_after: Duration::from_secs(15),
            delete: DeletePolicy::AfterLastBeat(Duration::from_secs(30)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silent_instance_turns_critical_then_goes() {
        let mut l = Liveness::default();
        let s = ServiceKey::simple("s");
        let i = InstanceKey::new("10.0.0.1", 80, "DEFAULT");
        let t0 = Instant::now();
        l.track(&s, &i, nacos(), t0);
        assert!(l.sweep(t0 + Duration::from_secs(14)).is_empty());
        let ops = l.sweep(t0 + Duration::from_secs(15));
        assert!(matches!(
            ops.as_slice(),
            [Op::SetHealth {
                status: HealthStatus::Critical,
                ..
            }]
        ));
        // Marked once, not on every sweep.
        assert!(l.sweep(t0 + Duration::from_secs(16)).is_empty());
        let ops = l.sweep(t0 + Duration::from_secs(30));
        assert!(matches!(ops.as_slice(), [Op::Deregister { .. }]));
        assert!(l.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn beats_push_deadlines_back() {
        let mut l = Liveness::default();
        let s = ServiceKey::simple("s");
        let i = InstanceKey::new("10.0.0.1", 80, "DEFAULT");
        let t0 = Instant::now();
        l.track(&s, &i, nacos(), t0);
        assert!(l.beat(&s, &i, t0 + Duration::from_secs(10)));
        assert!(l.sweep(t0 + Duration::from_secs(24)).is_empty());
        assert!(!l.beat(&s, &InstanceKey::new("10.0.0.2", 80, "DEFAULT"), t0));
    }

    #[tokio::test(start_paused = true)]
    async fn consul_fail_then_deregister_after_critical() {
        let mut l = Liveness::default();
        let s = ServiceKey::simple("s");
        let i = InstanceKey::new("10.0.0.1", 80, "DEFAULT");
        let t0 = Instant::now();
        let d = Deadlines {
            unhealthy_after: Duration::from_secs(60),
            delete: DeletePolicy::AfterCritical(Duration::from_secs(5)),
        };
        l.track(&s, &i, d, t0);
        assert!(l.fail(&s, &i, t0 + Duration::from_secs(1)));
        assert!(l.sweep(t0 + Duration::from_secs(5)).is_empty());
        let ops = l.sweep(t0 + Duration::from_secs(6));
        assert!(matches!(ops.as_slice(), [Op::Deregister { .. }]));
    }
}
