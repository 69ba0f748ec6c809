//! Wall-clock time for records people read (event times, version ids). Durations and
//! deadlines use `tokio::time::Instant` instead.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
