//! The audit trail's retention: while this server leads, entries older than
//! `audit_retention` are pruned from the store, at once and then every ten minutes.
//! One leader prunes for every server sharing the store.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::context::Ctx;

const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The oldest time kept at `now_ms`; `None` keeps everything.
pub fn cutoff(now_ms: u64, retention: Option<Duration>) -> Option<u64> {
    retention.map(|r| now_ms.saturating_sub(r.as_millis().try_into().unwrap_or(u64::MAX)))
}

/// Prunes until `term` (this server's time as leader) ends.
pub async fn run(ctx: Arc<Ctx>, term: CancellationToken) {
    let retention = ctx.config.audit_retention;
    if retention.is_none() {
        return;
    }
    loop {
        if let Some(before) = cutoff(crate::clock::unix_ms(), retention) {
            match ctx.store.run(move |s| s.prune_audit(before)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("pruned {n} audit entries older than the retention"),
                Err(e) => tracing::warn!("cannot prune the audit trail, retrying later: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = term.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_now_minus_the_retention_and_none_keeps_all() {
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(cutoff(10 * 86_400_000, Some(day)), Some(9 * 86_400_000));
        assert_eq!(cutoff(1_000, Some(day)), Some(0), "no underflow");
        assert_eq!(cutoff(1_000, None), None);
    }

    fn entry(time_ms: u64) -> berth_store::AuditRecord {
        berth_store::AuditRecord {
            time_ms,
            accessor_id: None,
            token_name: None,
            client: "127.0.0.1:1".into(),
            action: "app.create".into(),
            target: None,
            decision: berth_store::Decision::Allowed,
            status: Some(201),
            params: Default::default(),
        }
    }

    /// The leader prunes what is older than the retention as soon as it leads, and keeps
    /// the rest.
    #[tokio::test]
    async fn the_leader_prunes_entries_past_the_retention() {
        use berth_store::{AuditFilter, SqliteStore, Store};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("server.db")).unwrap();
        let now = crate::clock::unix_ms();
        store.append_audit(&entry(now - 7_200_000)).unwrap();
        store.append_audit(&entry(now)).unwrap();
        let mut config = crate::ServerConfig::for_test(dir.path());
        config.registry_http = None;
        config.audit_retention = Some(Duration::from_secs(3600));
        let shutdown = berth_util::shutdown::Shutdown::new();
        let _server = crate::start(config, &shutdown).await.unwrap();
        let left = || store.list_audit(&AuditFilter::default()).unwrap();
        berth_testkit::wait_until("the old entry is pruned", Duration::from_secs(10), || {
            let n = left().len();
            async move { n == 1 }
        })
        .await;
        assert_eq!(left()[0].record.time_ms, now, "the recent one stays");
        shutdown.trigger();
    }
}
