//! Nacos 1.x UDP push: a list request with `udpPort` subscribes the client; every change
//! of that service sends a `dom` packet (gzip from 1 KiB), waits for the client's
//! `push-ack`, retries, and drops subscribers that stop acking or stop asking.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;

use crate::core::Registry;
use crate::http::nacos_json::{ListFilter, service_info};
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
    pending: Mutex<HashMap<u64, oneshot::Sender<()>>>,
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

    /// Runs until the registry goes away: pushes changes, reads acks, prunes.
    pub async fn run(self: Arc<Self>, registry: Registry) {
        let mut changes = registry.changes();
        let mut prune =
            tokio::time::interval(self.options.subscriber_ttl.min(Duration::from_secs(5)));
        let mut buf = vec![0u8; 64 * 1024];
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
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, _from)) = received {
                        self.handle_ack(&buf[..n]);
                    }
                }
                _ = prune.tick() => self.prune(Instant::now()),
            }
        }
    }

    fn handle_ack(&self, packet: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(packet) else {
            return;
        };
        if v.get("type").and_then(Value::as_str) != Some("push-ack") {
            return;
        }
        let nonce = match v.get("lastRefTime") {
            Some(Value::String(s)) => s.parse::<u64>().ok(),
            Some(Value::Number(n)) => n.as_u64(),
            _ => None,
        };
        if let Some(nonce) = nonce
            && let Some(tx) = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&nonce)
        {
            let _ = tx.send(());
        }
    }

    fn push_change(self: Arc<Self>, registry: &Registry, key: &ServiceKey) {
        let targets: Vec<(SocketAddr, ListFilter)> = {
            let subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
            match subs.get(key) {
                Some(m) => m.iter().map(|(a, s)| (*a, s.filter.clone())).collect(),
                None => return,
            }
        };
        let svc = registry.get(key);
        // Subscribers mostly share a filter: render each distinct view once.
        let mut views: HashMap<ListFilter, Arc<str>> = HashMap::new();
        for (target, filter) in targets {
            let data = views
                .entry(filter)
                .or_insert_with_key(|f| {
                    service_info(key, svc.as_deref(), f, &self.beat, 10_000)
                        .to_string()
                        .into()
                })
                .clone();
            let this = self.clone();
            let key = key.clone();
            tokio::spawn(async move { this.deliver(key, target, data).await });
        }
    }

    async fn deliver(&self, key: ServiceKey, target: SocketAddr, data: Arc<str>) {
        for _ in 0..self.options.attempts.max(1) {
            let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
            let packet = encode_packet(&data, nonce);
            let (tx, rx) = oneshot::channel();
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(nonce, tx);
            let started = Instant::now();
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
            let sent = self.socket.send_to(&packet, target).await;
            let acked = sent.is_ok()
                && tokio::time::timeout(self.options.ack_timeout, rx)
                    .await
                    .is_ok_and(|r| r.is_ok());
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&nonce);
            if acked {
                self.stats.acked.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .latency_us_sum
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                self.stats.latency_count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%target, service = %key, "push not acked; subscriber dropped");
        self.drop_subscriber(&key, target);
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
    use std::io::Read;

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
