//! Rendered instance lists, reused until their service changes.
//!
//! Nacos clients poll the lists of the services they use, and between two changes every
//! poll of one service with one filter renders the same `hosts` array. The cache keeps that
//! array per (service, filter), tagged with the service's revision: any change gives the
//! service a new revision, so a stale rendering is never served. Only the small envelope
//! (`lastRefTime` and friends) is built per request.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::http::nacos_json::{ListFilter, render_hosts};
use crate::model::{BeatTimings, Service, ServiceKey};

/// Default bound on the bytes the cache holds.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

struct Entry {
    revision: u64,
    hosts: Bytes,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<(ServiceKey, ListFilter), Entry>,
    bytes: usize,
}

/// Rendered `hosts` arrays by (service, filter).
pub struct HostsCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

impl HostsCache {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    /// The `hosts` array of `svc` under `filter`, rendered at most once per revision.
    pub fn hosts(
        &self,
        key: &ServiceKey,
        svc: Option<&Service>,
        filter: &ListFilter,
        defaults: &BeatTimings,
    ) -> Bytes {
        let Some(svc) = svc else {
            return Bytes::from_static(b"[]");
        };
        let cache_key = (key.clone(), filter.clone());
        if let Some(e) = self.lock().entries.get(&cache_key)
            && e.revision == svc.revision
        {
            return e.hosts.clone();
        }
        // Rendered outside the lock: other lists go on meanwhile. Two requests may render
        // the same revision at once; both results are equal, the last one stays.
        let hosts = Bytes::from(render_hosts(key, Some(svc), filter, defaults));
        let mut inner = self.lock();
        if hosts.len() > self.max_bytes {
            return hosts;
        }
        if inner.bytes + hosts.len() > self.max_bytes {
            // Crude but bounded: start over. Hot services come back on their next poll.
            inner.entries.clear();
            inner.bytes = 0;
        }
        inner.bytes += hosts.len();
        if let Some(old) = inner.entries.insert(
            cache_key,
            Entry {
                revision: svc.revision,
                hosts: hosts.clone(),
            },
        ) {
            inner.bytes -= old.hosts.len();
        }
        hosts
    }

    /// Bytes held (for metrics and tests).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for HostsCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Instance;

    fn service(key: &ServiceKey, revision: u64, ports: &[u16]) -> Service {
        let mut s = Service::new(key.clone());
        s.revision = revision;
        for p in ports {
            let i = Instance::new(key, "10.0.0.1", *p, "DEFAULT");
            s.instances.insert(i.key(), std::sync::Arc::new(i));
        }
        s
    }

    fn ports(raw: &[u8]) -> Vec<u64> {
        let v: serde_json::Value = serde_json::from_slice(raw).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| h["port"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn a_new_revision_is_rendered_again_and_the_same_one_is_reused() {
        let key = ServiceKey::simple("s");
        let cache = HostsCache::default();
        let f = ListFilter::default();
        let d = BeatTimings::default();
        let first = cache.hosts(&key, Some(&service(&key, 1, &[80])), &f, &d);
        assert_eq!(ports(&first), vec![80]);
        // Same revision: the stored rendering, even if handed another value.
        let again = cache.hosts(&key, Some(&service(&key, 1, &[80, 81])), &f, &d);
        assert_eq!(again.as_ptr(), first.as_ptr());
        let changed = cache.hosts(&key, Some(&service(&key, 2, &[80, 81])), &f, &d);
        assert_eq!(ports(&changed), vec![80, 81]);
        assert_eq!(cache.bytes(), changed.len());
    }

    #[test]
    fn filters_are_cached_apart_and_the_bound_holds() {
        let key = ServiceKey::simple("s");
        let d = BeatTimings::default();
        let svc = service(&key, 1, &[80, 81, 82]);
        let all = ListFilter::default();
        let other = ListFilter::parse(Some("OTHER"), false);
        let one = HostsCache::new(1 << 20);
        assert_eq!(ports(&one.hosts(&key, Some(&svc), &all, &d)).len(), 3);
        assert!(ports(&one.hosts(&key, Some(&svc), &other, &d)).is_empty());
        let tiny = HostsCache::new(10);
        assert_eq!(ports(&tiny.hosts(&key, Some(&svc), &all, &d)).len(), 3);
        assert_eq!(tiny.bytes(), 0, "a rendering above the bound is not kept");
        assert_eq!(&tiny.hosts(&key, None, &all, &d)[..], b"[]");
    }
}
