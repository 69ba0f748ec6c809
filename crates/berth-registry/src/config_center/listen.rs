//! Waiting for configs to change: what the v1 long-polling listener and the gRPC
//! listeners share. A listener names configs with the md5 it holds; a config "changed"
//! for it when the stored md5 differs (a config that does not exist has md5 `""`).

use std::collections::HashSet;
use std::time::Duration;

use berth_kv::Change;
use tokio::sync::broadcast::error::RecvError;

use super::{ConfigCenter, ConfigError, ConfigKey};

/// The keys among `watched` whose md5 differs from the one given.
pub async fn changed(
    center: &ConfigCenter,
    watched: &[(ConfigKey, String)],
) -> Result<Vec<ConfigKey>, ConfigError> {
    let mut out = Vec::new();
    for (key, md5) in watched {
        let current = center.get(key).await?.map(|c| c.md5).unwrap_or_default();
        if !current.eq_ignore_ascii_case(md5) {
            out.push(key.clone());
        }
    }
    Ok(out)
}

/// Waits up to `timeout` until one of `watched` changes; returns the changed keys at
/// once when some already differ, else those that changed first (empty on timeout).
pub async fn wait_for_change(
    center: &ConfigCenter,
    watched: &[(ConfigKey, String)],
    timeout: Duration,
) -> Result<Vec<ConfigKey>, ConfigError> {
    let Some(kv) = center.handle() else {
        return Err(ConfigError::Unavailable);
    };
    // Subscribed before the first look, so a change between the look and the wait
    // still wakes it.
    let mut feed = kv.subscribe();
    let now = changed(center, watched).await?;
    if !now.is_empty() {
        return Ok(now);
    }
    let keys: HashSet<String> = watched.iter().map(|(k, _)| k.store_key()).collect();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::select! {
            next = feed.recv() => next,
            () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
        };
        let recheck = match next {
            Ok(change @ Change::Written { .. }) => {
                keys.iter().any(|k| change.affects(center.space_ref(), k))
            }
            Ok(Change::Resync { .. }) | Err(RecvError::Lagged(_)) => true,
            Err(RecvError::Closed) => return Ok(Vec::new()),
        };
        if recheck {
            let now = changed(center, watched).await?;
            if !now.is_empty() {
                return Ok(now);
            }
        }
    }
}
