//! Version ids: every change to an app gets a new one. A version is a u64 made of the Unix
//! time in milliseconds times 1000 plus a counter, so versions sort by time, stay unique
//! when many changes land in one millisecond, and fit the wire format's `uint64`.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionId(pub u64);

impl VersionId {
    /// The next version after `prev` at time `now_ms`: strictly greater than `prev` even
    /// if the clock went backwards.
    pub fn next(prev: Option<VersionId>, now_ms: u64) -> VersionId {
        let from_clock = now_ms.saturating_mul(1000);
        match prev {
            Some(p) if p.0 >= from_clock => VersionId(p.0 + 1),
            _ => VersionId(from_clock),
        }
    }

    /// Unix milliseconds at which the version was made.
    pub fn unix_ms(self) -> u64 {
        self.0 / 1000
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_always_increase() {
        let a = VersionId::next(None, 1_000);
        let b = VersionId::next(Some(a), 1_000);
        let c = VersionId::next(Some(b), 999);
        let d = VersionId::next(Some(c), 2_000);
        assert!(a < b && b < c && c < d);
        assert_eq!(d.unix_ms(), 2_000);
    }
}
