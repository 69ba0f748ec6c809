//! Host port allocation for instances from a configured range.
//!
//! A port is handed out only if no instance of this agent holds it and it can be bound on
//! 127.0.0.1 right now (something outside Berth may use it). The cursor moves on after each
//! allocation so a port just released (possibly in TIME_WAIT, possibly still cached by a
//! router) is the last to be reused. The cursor starts at a random place in the range, so
//! a restarted agent, or several agents sharing one machine (tests, `berth dev` with
//! several nodes), do not all begin with the same port.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, TcpListener};
use std::str::FromStr;

/// An inclusive port range, written `20000-29999`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self {
            first: 20000,
            last: 29999,
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expected = || {
            format!(
                "{text:?} is not a port range: write FIRST-LAST with 1 <= FIRST <= LAST <= 65535, such as 20000-29999"
            )
        };
        let (first, last) = text.trim().split_once('-').ok_or_else(expected)?;
        let first: u16 = first.trim().parse().map_err(|_| expected())?;
        let last: u16 = last.trim().parse().map_err(|_| expected())?;
        if first == 0 || first > last {
            return Err(expected());
        }
        Ok(Self { first, last })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "no {wanted} free port(s) in the agent's port range {range} ({held} held by instances); \
     widen --port-range or stop instances"
)]
pub struct PortsExhausted {
    pub wanted: usize,
    pub range: PortRange,
    pub held: usize,
}

#[derive(Debug)]
pub struct PortAllocator {
    range: PortRange,
    next: u16,
    held: BTreeSet<u16>,
}

impl PortAllocator {
    pub fn new(range: PortRange) -> Self {
        let next = rand::random_range(range.first..=range.last);
        Self {
            range,
            next,
            held: BTreeSet::new(),
        }
    }

    /// Marks ports of a re-adopted instance as taken.
    pub fn reserve(&mut self, ports: &[u16]) {
        self.held.extend(ports.iter().copied());
    }

    pub fn release(&mut self, ports: &[u16]) {
        for port in ports {
            self.held.remove(port);
        }
    }

    /// `count` distinct free ports, or none at all.
    pub fn allocate(&mut self, count: usize) -> Result<Vec<u16>, PortsExhausted> {
        let mut picked = Vec::with_capacity(count);
        let mut port = self.next;
        for _ in 0..self.range.len() {
            if picked.len() == count {
                break;
            }
            if !self.held.contains(&port) && bindable(port) {
                picked.push(port);
            }
            port = if port >= self.range.last {
                self.range.first
            } else {
                port + 1
            };
        }
        if picked.len() < count {
            return Err(PortsExhausted {
                wanted: count,
                range: self.range,
                held: self.held.len(),
            });
        }
        self.next = port;
        self.held.extend(picked.iter().copied());
        Ok(picked)
    }
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_range(len: u16) -> PortRange {
        // Ask the kernel for a free port and use the ones above it; tests only need a
        // range that is mostly free, the allocator itself skips busy ports.
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let base = probe.local_addr().unwrap().port().clamp(1024, 65535 - 200);
        PortRange {
            first: base,
            last: base + len - 1,
        }
    }

    #[test]
    fn parses_and_rejects_ranges() {
        assert_eq!(
            "100-200".parse::<PortRange>(),
            Ok(PortRange {
                first: 100,
                last: 200
            })
        );
        for bad in ["", "100", "200-100", "0-10", "a-b", "1-70000"] {
            let err = bad.parse::<PortRange>().unwrap_err();
            assert!(err.contains("FIRST-LAST"), "{bad}: {err}");
        }
    }

    #[test]
    fn never_hands_out_a_port_twice_and_skips_busy_ports() {
        let range = free_range(50);
        let busy = TcpListener::bind((Ipv4Addr::LOCALHOST, range.first)).ok();
        let mut ports = PortAllocator::new(range);
        let a = ports.allocate(3).unwrap();
        let b = ports.allocate(2).unwrap();
        let all: BTreeSet<u16> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), 5);
        if busy.is_some() {
            assert!(!all.contains(&range.first));
        }
        assert!(all.iter().all(|p| (range.first..=range.last).contains(p)));
    }

    #[test]
    fn exhaustion_is_an_error_that_names_the_range_and_the_fix() {
        let range = free_range(3);
        let mut ports = PortAllocator::new(range);
        ports.reserve(&[range.first, range.first + 1]);
        let err = ports.allocate(2).unwrap_err();
        assert!(err.to_string().contains("--port-range"), "{err}");
        // A failed allocation holds nothing.
        assert_eq!(ports.held.len(), 2);
        ports.release(&[range.first]);
        assert!(ports.allocate(1).is_ok());
    }
}
