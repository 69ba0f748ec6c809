//! Nacos 1.x UDP push: a list request with `udpPort` subscribes the client; every change
//! of that service sends a `dom` packet (gzip from 1 KiB), waits for the client's
//! `push-ack`, retries, and drops subscribers that stop acking or stop asking.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

use crate::core::Registry;
use crate::http::nacos_json::{ListFilter, render_hosts, render_service_info};
use crate::model::{BeatTimings, ServiceKey};

/// Packets at least this big are gzipped (as Nacos does).
pub const GZIP_FROM: usize = 1024;

/// Push tunables.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Wait this long for an ack before resending.
    pub ack_timeout: Duration,
    /// Sends per change before the subscriber is dropped.
    pub attempts: u32,
    /// A subscriber that has not listed the service for this long is dropped.
    pub subscriber_ttl: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_millis(500),
            attempts: 3,
            subscriber_ttl: Duration::from_secs(30),
        }
    }
}

/// Push counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PushStats {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    /// Sum and count of send-to-ack latency in microseconds.
    pub latency_us_sum: AtomicU64,
    pub latency_count: AtomicU64,
}

#[derive(Debug, Clone)]
struct Subscriber {
    filter: ListFilter,
    last_seen: Instant,
}

/// Subscribers and the UDP socket pushes leave from.
pub struct PushService {
    socket: UdpSocket,
    subscribers: Mutex<HashMap<ServiceKey, HashMap<SocketAddr, Subscriber>>>,
    /// Batches waiting for acks, by the nonce their packet carries.
    pending: Mutex<HashMap<u64, Arc<Batch>>>,
    nonce: AtomicU64,
    options: PushOptions,
    beat: BeatTimings,
    pub stats: PushStats,
}

impl PushService {
    /// Binds the push socket (an ephemeral port on `ip`).
    pub async fn bind(
        ip: std::net::IpAddr,
        options: PushOptions,
        beat: BeatTimings,
    ) -> std::io::Result<Arc<Self>> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        Ok(Arc::new(Self {
            socket,
            subscribers: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            nonce: AtomicU64::new(nacos_nanos()),
            options,
            beat,
            stats: PushStats::default(),
        }))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Adds or refreshes a subscriber.
    pub fn subscribe(&self, key: ServiceKey, filter: ListFilter, target: SocketAddr) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.entry(key).or_default().insert(
            target,
            Subscriber {
                filter,
                last_seen: Instant::now(),
            },
        );
    }

    /// Number of subscriptions (service, client) pairs.
    pub fn len(&self) -> usize {
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(HashMap::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn drop_subscriber(&self, key: &ServiceKey, target: SocketAddr) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = subs.get_mut(key) {
            if m.remove(&target).is_some() {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            if m.is_empty() {
                subs.remove(key);
            }
        }
    }

    fn prune(&self, now: Instant) {
        let ttl = self.options.subscriber_ttl;
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        for m in subs.values_mut() {
            let before = m.len();
            m.retain(|_, s| now.duration_since(s.last_seen) < ttl);
            self.stats
                .dropped
                .fetch_add((before - m.len()) as u64, Ordering::Relaxed);
        }
        subs.retain(|_, m| !m.is_empty());
    }

    /// Runs until the registry goes away: pushes changes and prunes, while a task of its
    /// own reads acks. A push to a thousand subscribers brings a thousand acks back; read
    /// in this loop they would hold the next change up behind them.
    pub async fn run(self: Arc<Self>, registry: Registry) {
        let mut changes = registry.changes();
        let mut prune =
            tokio::time::interval(self.options.subscriber_ttl.min(Duration::from_secs(5)));
        let acks = tokio::spawn(self.clone().read_acks());
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(change) => self.clone().push_change(&registry, &change.key),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too far behind: push every subscribed service's current state.
                        let keys: Vec<ServiceKey> = self.subscribers.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
                        for key in keys {
                            self.clone().push_change(&registry, &key);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = prune.tick() => self.prune(Instant::now()),
            }
        }
        acks.abort();
    }

    async fn read_acks(self: Arc<Self>) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Ok((n, from)) = self.socket.recv_from(&mut buf).await {
                self.handle_ack(&buf[..n], from);
            }
        }
    }

    fn handle_ack(&self, packet: &[u8], from: SocketAddr) {
        // A thousand acks follow every push: read the two fields, build no tree.
        let Ok(ack) = serde_json::from_slice::<Ack<'_>>(packet) else {
            return;
        };
        if ack.kind != "push-ack" {
            return;
        }
        let nonce = match ack.last_ref_time {
            Some(Nonce::Text(s)) => s.parse::<u64>().ok(),
            Some(Nonce::Number(n)) => Some(n),
            None => None,
        };
        let Some(batch) = nonce.and_then(|n| {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&n)
                .cloned()
        }) else {
            return;
        };
        if batch.ack(from) {
            self.stats.acked.fetch_add(1, Ordering::Relaxed);
            self.stats
                .latency_us_sum
                .fetch_add(batch.since_sent().as_micros() as u64, Ordering::Relaxed);
            self.stats.latency_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn push_change(self: Arc<Self>, registry: &Registry, key: &ServiceKey) {
        // Subscribers mostly share a filter: each distinct view is rendered, wrapped and
        // gzipped once, and that one packet goes to every subscriber of the view.
        let mut views: HashMap<ListFilter, Vec<SocketAddr>> = HashMap::new();
        {
            let subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
            let Some(m) = subs.get(key) else { return };
            for (addr, sub) in m {
                views.entry(sub.filter.clone()).or_default().push(*addr);
            }
        }
        let svc = registry.get(key);
        for (filter, targets) in views {
            let hosts = render_hosts(key, svc.as_deref(), &filter, &self.beat);
            let info = render_service_info(key, svc.as_deref(), &filter, 10_000, &hosts);
            let data = String::from_utf8_lossy(&info);
            let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
            let packet = encode_packet(&data, nonce);
            let this = self.clone();
            let key = key.clone();
            tokio::spawn(async move { this.deliver(key, nonce, packet, targets).await });
        }
    }

    /// Sends one packet to many subscribers, resends to those that have not acked, and
    /// drops the ones that never do.
    ///
    /// One nonce (`lastRefTime`) serves the whole batch and an ack is matched by its
    /// sender's address and that nonce, which is how Nacos pairs acks with pushes too.
    async fn deliver(
        &self,
        key: ServiceKey,
        nonce: u64,
        packet: Vec<u8>,
        targets: Vec<SocketAddr>,
    ) {
        let batch = Arc::new(Batch::new(targets));
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(nonce, batch.clone());
        for _ in 0..self.options.attempts.max(1) {
            let unacked = batch.unacked();
            if unacked.is_empty() {
                break;
            }
            batch.mark_sent();
            // A tight loop of non-blocking sends: a subscriber's packet never waits on a
            // task switch per earlier subscriber. Only a full socket buffer awaits.
            self.stats
                .sent
                .fetch_add(unacked.len() as u64, Ordering::Relaxed);
            for target in unacked {
                let sent = match self.socket.try_send_to(&packet, target) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        self.socket.send_to(&packet, target).await
                    }
                    other => other,
                };
                if let Err(e) = sent {
                    tracing::debug!(%target, error = %e, "push send failed");
                }
            }
            let _ = tokio::time::timeout(self.options.ack_timeout, batch.all_acked()).await;
        }
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&nonce);
        for target in batch.unacked() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%target, service = %key, "push not acked; subscriber dropped");
            self.drop_subscriber(&key, target);
        }
    }
}

/// The fields of a client's `push-ack` the server reads.
#[derive(serde::Deserialize)]
struct Ack<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(rename = "lastRefTime", borrow, default)]
    last_ref_time: Option<Nonce<'a>>,
}

/// Clients echo `lastRefTime` as a number or as a string.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Nonce<'a> {
    Number(u64),
    #[serde(borrow)]
    Text(std::borrow::Cow<'a, str>),
}

/// One packet on its way to several subscribers: who still owes an ack.
struct Batch {
    waiting: Mutex<HashSet<SocketAddr>>,
    sent_at: Mutex<Instant>,
    done: Notify,
}

impl Batch {
    fn new(targets: Vec<SocketAddr>) -> Self {
        Self {
            waiting: Mutex::new(targets.into_iter().collect()),
            sent_at: Mutex::new(Instant::now()),
            done: Notify::new(),
        }
    }

    fn unacked(&self) -> Vec<SocketAddr> {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    fn mark_sent(&self) {
        *self.sent_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn since_sent(&self) -> Duration {
        self.sent_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// Records an ack from `from`; true when it settled a subscriber.
    ///
    /// A client behind an address translation acks from another ip; when exactly one
    /// waiting subscriber has the sender's port, that one is taken as the sender.
    fn ack(&self, from: SocketAddr) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let settled = waiting.remove(&from) || {
            let mut same_port = waiting.iter().filter(|a| a.port() == from.port());
            match (same_port.next().copied(), same_port.next()) {
                (Some(only), None) => waiting.remove(&only),
                _ => false,
            }
        };
        if settled && waiting.is_empty() {
            self.done.notify_one();
        }
        settled
    }

    async fn all_acked(&self) {
        loop {
            let notified = self.done.notified();
            if self
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
            {
                return;
            }
            notified.await;
        }
    }
}

/// The datagram: `{"type":"dom","data":"...","lastRefTime":N}`, gzipped from 1 KiB.
pub fn encode_packet(data: &str, nonce: u64) -> Vec<u8> {
    let raw = json!({"type": "dom", "data": data, "lastRefTime": nonce})
        .to_string()
        .into_bytes();
    if raw.len() < GZIP_FROM {
        return raw;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(&raw);
    gz.finish().unwrap_or(raw)
}

fn nacos_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::io::Read;

    #[test]
    fn acks_are_read_with_either_nonce_form() {
        let n: Ack =
            serde_json::from_slice(br#"{"type":"push-ack","lastRefTime":"12","data":""}"#).unwrap();
        assert!(matches!(n.last_ref_time, Some(Nonce::Text(t)) if t == "12"));
        let n: Ack = serde_json::from_slice(br#"{"type":"push-ack","lastRefTime":12}"#).unwrap();
        assert!(matches!(n.last_ref_time, Some(Nonce::Number(12))));
        assert!(serde_json::from_slice::<Ack>(b"{").is_err());
    }

    #[test]
    fn small_packets_are_plain_and_big_ones_gzipped() {
        let small = encode_packet("{}", 7);
        let v: Value = serde_json::from_slice(&small).unwrap();
        assert_eq!(v["type"], "dom");
        assert_eq!(v["lastRefTime"], 7);
        let big = encode_packet(&"x".repeat(2000), 8);
        assert_eq!(&big[..2], &[0x1f, 0x8b]);
        let mut out = String::new();
        flate2::read::GzDecoder::new(&big[..])
            .read_to_string(&mut out)
            .unwrap();
        assert!(out.contains("\"lastRefTime\":8"));
    }
}
