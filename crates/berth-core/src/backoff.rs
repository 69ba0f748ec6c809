//! Launch backoff for apps whose instances keep failing.

use std::time::Duration;

/// Backoff settings taken from the app spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base_seconds: f64,
    pub factor: f64,
    pub max_seconds: f64,
}

/// An app that stayed up this long is healthy again: its failure count resets.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

impl Backoff {
    /// Delay before the next launch after `failures` consecutive failures:
    /// `base * factor^(failures-1)`, capped at `max`. Zero failures, no delay.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exp = (failures - 1).min(10_000) as i32;
        let secs = (self.base_seconds * self.factor.powi(exp)).min(self.max_seconds);
        if secs.is_finite() && secs > 0.0 {
            Duration::from_secs_f64(secs)
        } else {
            Duration::from_secs_f64(self.max_seconds.max(0.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let b = Backoff {
            base_seconds: 1.0,
            factor: 1.15,
            max_seconds: 300.0,
        };
        assert_eq!(b.delay(0), Duration::ZERO);
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert!((b.delay(2).as_secs_f64() - 1.15).abs() < 1e-9);
        assert_eq!(b.delay(100), Duration::from_secs(300));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
    }
}
