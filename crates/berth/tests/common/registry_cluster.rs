//! Shared harness of the registry cluster tests: three `berth registry` processes on
//! loopback whose peer traffic runs through in-test TCP links that can be cut (traffic
//! blackholed, as in a network partition) and healed; beating clients on the Nacos API.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_testkit::{BerthProcess, temp_dir};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::BIN;

/// Beat timings the test clients ask for (metadata), short so expiry is quick.
pub const BEAT_TIMEOUT_MS: u64 = 3_000;
pub const DELETE_TIMEOUT_MS: u64 = 5_000;
pub const BEAT_EVERY: Duration = Duration::from_millis(400);

/// A free loopback port (bound then released; the OS hands out ports in order, so a
/// reuse race is unlikely in a test).
pub async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One directed peer link: a TCP forwarder that can be cut. Cut, it accepts nothing
/// through: bytes are neither delivered nor refused, like packets lost in a partition.
pub struct Link {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Link {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind link");
        let addr = listener.local_addr().expect("addr");
        let (cut, cut_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    // Held while cut: the caller sees silence, never a reset.
                    let is_cut = *cut_rx.borrow();
                    if is_cut {
                        drop(cut_rx.wait_for(|c| !*c).await);
                        return;
                    }
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    let cut = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        r = cut_rx.wait_for(|c| *c) => r.is_ok(),
                    };
                    if cut {
                        // Partition: stop moving bytes, keep both sockets open until
                        // the link heals, then close them.
                        let healed = cut_rx.wait_for(|c| !*c).await.is_ok();
                        let _ = healed;
                        let _ = inbound.shutdown().await;
                    }
                });
            }
        });
        Self { addr, cut, task }
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One member: fixed ports so a restart comes back at the same addresses.
pub struct Node {
    pub name: String,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub data: tempfile::TempDir,
    pub process: Option<BerthProcess>,
    /// Links this node dials its peers through.
    pub peers: Vec<String>,
}

/// Three members with a link per ordered pair.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// links[(from, to)]
    pub links: BTreeMap<(usize, usize), Link>,
    pub secret_file: tempfile::NamedTempFile,
    pub http: reqwest::Client,
    /// The PostgreSQL URL of the shared config store, when the cluster has one.
    pub kv_url_file: Option<tempfile::NamedTempFile>,
    extra: Vec<String>,
}

/// How [`Cluster::start_with`] sets members up.
#[derive(Default)]
pub struct ClusterOptions {
    /// Each member's HTTP port this far below its gRPC port (Nacos 2.x SDKs dial the
    /// gRPC port as the HTTP port plus one offset for every server they are given).
    pub grpc_offset: Option<u16>,
    /// The PostgreSQL database every member keeps its config store in.
    pub kv_postgres_url: Option<String>,
    /// More flags for every member.
    pub extra: Vec<String>,
}

/// A free gRPC port whose HTTP port `offset` below is free too.
async fn free_port_pair(offset: u16) -> (u16, u16) {
    loop {
        let grpc = free_port().await;
        let Some(http) = grpc.checked_sub(offset).filter(|p| *p > 1024) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", http)).await.is_ok() {
            return (http, grpc);
        }
    }
}

impl Cluster {
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, ClusterOptions::default()).await
    }

    pub async fn start_with(n: usize, options: ClusterOptions) -> Self {
        let mut secret_file = tempfile::NamedTempFile::new().expect("secret file");
        std::io::Write::write_all(
            &mut secret_file,
            b"cluster-secret-for-tests-0123456789abcdef\n",
        )
        .expect("write secret");
        let mut grpcs = Vec::new();
        let mut https = Vec::new();
        for _ in 0..n {
            let (http, grpc) = match options.grpc_offset {
                Some(offset) => free_port_pair(offset).await,
                None => (free_port().await, free_port().await),
            };
            grpcs.push(SocketAddr::from(([127, 0, 0, 1], grpc)));
            https.push(SocketAddr::from(([127, 0, 0, 1], http)));
        }
        let mut links = BTreeMap::new();
        for from in 0..n {
            for (to, target) in grpcs.iter().enumerate() {
                if from != to {
                    links.insert((from, to), Link::start(*target).await);
                }
            }
        }
        let mut nodes = Vec::new();
        for (i, grpc) in grpcs.iter().enumerate() {
            let peers = (0..n)
                .filter(|to| *to != i)
                .map(|to| links[&(i, to)].addr.to_string())
                .collect();
            nodes.push(Node {
                name: format!("node{i}"),
                http: https[i],
                grpc: *grpc,
                data: temp_dir(),
                process: None,
                peers,
            });
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .expect("client");
        let kv_url_file = options.kv_postgres_url.map(|url| {
            let mut file = tempfile::NamedTempFile::new().expect("url file");
            std::io::Write::write_all(&mut file, url.as_bytes()).expect("write url");
            file
        });
        let mut c = Self {
            nodes,
            links,
            secret_file,
            http,
            kv_url_file,
            extra: options.extra,
        };
        // Start together: a cold cluster elects its first loaded member by itself.
        let starts: Vec<_> = (0..n).map(|i| c.spawn_args(i)).collect();
        let procs = futures::future::join_all(starts.into_iter().map(|args| async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            BerthProcess::start(BIN, &refs).await
        }))
        .await;
        for (node, p) in c.nodes.iter_mut().zip(procs) {
            node.process = Some(p);
        }
        c.wait_all_loaded(n).await;
        c
    }

    fn spawn_args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i];
        [
            "registry",
            "--listen",
            &n.http.to_string(),
            "--grpc-listen",
            &n.grpc.to_string(),
            "--data-dir",
            n.data.path().to_str().expect("utf-8"),
            "--peers",
            &n.peers.join(","),
            "--cluster-secret-file",
            self.secret_file.path().to_str().expect("utf-8"),
            "--cluster-advertise",
            &n.grpc.to_string(),
            "--cluster-heartbeat",
            "200ms",
            "--cluster-missed-beats",
            "3",
            "--cluster-sync-interval",
            "500ms",
            "--cluster-replicate-delay",
            "50ms",
            "--cluster-rpc-timeout",
            "400ms",
            "--cluster-startup-attempts",
            "3",
            "--expiry-check-interval",
            "100ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(self.kv_url_file.iter().flat_map(|f| {
            [
                "--kv-postgres-url-file".to_string(),
                f.path().display().to_string(),
            ]
        }))
        .chain(self.extra.iter().cloned())
        .collect()
    }

    pub fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].process.is_some())
            .collect()
    }

    pub async fn kill(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].process.take() {
            p.kill().await;
        }
    }

    /// Restarts a node; `wipe` gives it an empty data folder.
    pub async fn restart(&mut self, i: usize, wipe: bool) {
        self.kill(i).await;
        if wipe {
            self.nodes[i].data = temp_dir();
        }
        let args = self.spawn_args(i);
        let p =
            BerthProcess::start(BIN, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        self.nodes[i].process = Some(p);
    }

    /// Cuts every link to and from node `i`.
    pub fn isolate(&self, i: usize) {
        for ((from, to), link) in &self.links {
            if *from == i || *to == i {
                link.cut();
            }
        }
    }

    pub fn heal_all(&self) {
        for link in self.links.values() {
            link.heal();
        }
    }

    pub async fn cluster_json(&self, i: usize, service: Option<&str>) -> Option<Value> {
        let mut url = format!("http://{}/v1/cluster", self.nodes[i].http);
        if let Some(s) = service {
            url.push_str(&format!("?service={s}"));
        }
        let r = self.http.get(url).send().await.ok()?;
        r.json().await.ok()
    }

    /// Waits until `count` running members report themselves loaded with a full view.
    pub async fn wait_all_loaded(&self, count: usize) {
        berth_testkit::wait_until(
            "every member loaded with a full view",
            Duration::from_secs(20),
            || async {
                for i in self.alive() {
                    let Some(v) = self.cluster_json(i, None).await else {
                        return false;
                    };
                    if v["loaded"] != true || v["view"].as_array().map_or(0, Vec::len) != count {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }

    /// The owner of a service as node `i` sees it.
    pub async fn owner(&self, i: usize, service: &str) -> Option<usize> {
        let v = self.cluster_json(i, Some(service)).await?;
        let id = v["owner"].as_str()?.to_string();
        self.nodes.iter().position(|n| n.grpc.to_string() == id)
    }

    /// (ip, port, healthy) of a service's instances on node `i`; `None` when it does not answer.
    pub async fn instances(
        &self,
        i: usize,
        service: &str,
    ) -> Option<BTreeSet<(String, u16, bool)>> {
        let url = format!(
            "http://{}/nacos/v1/ns/instance/list?serviceName={service}",
            self.nodes[i].http
        );
        let r = self.http.get(url).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        Some(
            v["hosts"]
                .as_array()?
                .iter()
                .filter_map(|h| {
                    Some((
                        h["ip"].as_str()?.to_string(),
                        u16::try_from(h["port"].as_u64()?).ok()?,
                        h["healthy"].as_bool()?,
                    ))
                })
                .collect(),
        )
    }

    /// Addresses (ip:port) of a service's instances on node `i`.
    pub async fn addrs(&self, i: usize, service: &str) -> Option<BTreeSet<String>> {
        Some(
            self.instances(i, service)
                .await?
                .into_iter()
                .map(|(ip, port, _)| format!("{ip}:{port}"))
                .collect(),
        )
    }

    /// Waits until every running member lists exactly `want` for each service.
    pub async fn wait_converged(
        &self,
        what: &str,
        want: &BTreeMap<String, BTreeSet<String>>,
        timeout: Duration,
    ) {
        let alive = self.alive();
        let mut last = String::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut ok = true;
            last.clear();
            'outer: for i in &alive {
                for (svc, set) in want {
                    let got = self.addrs(*i, svc).await.unwrap_or_default();
                    if &got != set {
                        last = format!("node{i} lists {svc} as {got:?}, want {set:?}");
                        ok = false;
                        break 'outer;
                    }
                }
            }
            if ok {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let mut out = String::new();
                for i in &alive {
                    out.push_str(&format!(
                        "--- node{i} cluster: {}\n",
                        self.cluster_json(*i, None).await.unwrap_or_default()
                    ));
                    if let Some(p) = &self.nodes[*i].process {
                        let o = p.output();
                        let tail: String = o
                            .lines()
                            .rev()
                            .take(40)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join("\n");
                        out.push_str(&format!("--- node{i} output (tail)\n{tail}\n"));
                    }
                }
                panic!("{what}: not converged within {timeout:?}: {last}\n{out}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A client instance that registers then beats through one node until stopped. Its beat
/// carries the instance (as Nacos clients do), so an owner that lost it re-creates it.
pub struct Beater {
    pub service: String,
    pub ip: String,
    pub port: u16,
    pub via: Arc<std::sync::Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

pub fn metadata() -> String {
    format!(
        r#"{{"preserved.heart.beat.timeout":"{BEAT_TIMEOUT_MS}","preserved.ip.delete.timeout":"{DELETE_TIMEOUT_MS}","preserved.heart.beat.interval":"{}"}}"#,
        BEAT_EVERY.as_millis()
    )
}

impl Beater {
    pub async fn start(
        http: &reqwest::Client,
        via: SocketAddr,
        service: &str,
        ip: &str,
        port: u16,
    ) -> Self {
        let via = Arc::new(std::sync::Mutex::new(via));
        let stop = Arc::new(AtomicBool::new(false));
        let beat = serde_json::json!({
            "ip": ip, "port": port, "cluster": "DEFAULT", "serviceName": service,
            "metadata": serde_json::from_str::<Value>(&metadata()).unwrap(),
        })
        .to_string();
        // Registers once (retrying through the node until it answers), then beats.
        let target = *via.lock().unwrap();
        berth_testkit::wait_until(
            "the registration is accepted",
            Duration::from_secs(10),
            || {
                let http = http.clone();
                async move {
                    http.post(format!("http://{target}/nacos/v1/ns/instance"))
                        .query(&[
                            ("serviceName", service),
                            ("ip", ip),
                            ("port", &port.to_string()),
                            ("metadata", &metadata()),
                        ])
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await;
        let task = {
            let (http, via, stop, service) =
                (http.clone(), via.clone(), stop.clone(), service.to_string());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let target = *via.lock().unwrap();
                    let _ = http
                        .put(format!("http://{target}/nacos/v1/ns/instance/beat"))
                        .query(&[("serviceName", service.as_str()), ("beat", beat.as_str())])
                        .send()
                        .await;
                    tokio::time::sleep(BEAT_EVERY).await;
                }
            })
        };
        Self {
            service: service.to_string(),
            ip: ip.to_string(),
            port,
            via,
            stop,
            task,
        }
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn switch(&self, via: SocketAddr) {
        *self.via.lock().unwrap() = via;
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

/// What every member must list for the beaters still running.
pub fn expected(beaters: &[Beater]) -> BTreeMap<String, BTreeSet<String>> {
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for b in beaters {
        want.entry(b.service.clone()).or_default().insert(b.addr());
    }
    want
}
