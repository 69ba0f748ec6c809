//! Resources in integer units so sums never drift: CPU in thousandths of a core, memory
//! and disk in MiB.

use std::fmt;
use std::ops::{Add, Sub};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub mem_mib: u64,
    pub disk_mib: u64,
}

impl Resources {
    pub fn new(cpus: f64, mem_mib: u64, disk_mib: u64) -> Self {
        Self {
            cpu_millis: cpus_to_millis(cpus),
            mem_mib,
            disk_mib,
        }
    }

    pub fn cpus(&self) -> f64 {
        self.cpu_millis as f64 / 1000.0
    }

    /// True when `need` fits inside `self` in every dimension.
    pub fn fits(&self, need: &Resources) -> bool {
        need.cpu_millis <= self.cpu_millis
            && need.mem_mib <= self.mem_mib
            && need.disk_mib <= self.disk_mib
    }

    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            mem_mib: self.mem_mib.saturating_sub(other.mem_mib),
            disk_mib: self.disk_mib.saturating_sub(other.disk_mib),
        }
    }
}

/// Resources as asked for: the spec's cpus as written (decimal cores), before
/// [`Resources`] rounds them to thousandths. Whoever is handed a request (the agent, by
/// the server) keeps and reports exactly these numbers, so rounding happens in one place
/// only, where they are accounted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceRequest {
    pub cpus: f64,
    pub mem_mib: u64,
    pub disk_mib: u64,
}

impl ResourceRequest {
    /// What the request reserves.
    pub fn reserve(&self) -> Resources {
        Resources::new(self.cpus, self.mem_mib, self.disk_mib)
    }
}

impl Add for ResourceRequest {
    type Output = ResourceRequest;
    fn add(self, o: ResourceRequest) -> ResourceRequest {
        ResourceRequest {
            cpus: self.cpus + o.cpus,
            mem_mib: self.mem_mib + o.mem_mib,
            disk_mib: self.disk_mib + o.disk_mib,
        }
    }
}

/// Rounds up so a spec asking for 0.0001 cpus still reserves something.
pub fn cpus_to_millis(cpus: f64) -> u64 {
    if cpus.is_finite() && cpus > 0.0 {
        (cpus * 1000.0).ceil() as u64
    } else {
        0
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis + o.cpu_millis,
            mem_mib: self.mem_mib + o.mem_mib,
            disk_mib: self.disk_mib + o.disk_mib,
        }
    }
}

impl Sub for Resources {
    type Output = Resources;
    fn sub(self, o: Resources) -> Resources {
        self.saturating_sub(&o)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cpus, {} MiB memory, {} MiB disk",
            self.cpus(),
            self.mem_mib,
            self.disk_mib
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_and_subtracts() {
        let total = Resources::new(2.0, 1024, 100);
        let need = Resources::new(0.25, 512, 0);
        assert!(total.fits(&need));
        let left = total - need - need;
        assert_eq!(left, Resources::new(1.5, 0, 100));
        assert!(!left.fits(&need));
        assert_eq!(cpus_to_millis(0.0001), 1);
    }
}
