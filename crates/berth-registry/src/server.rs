//! Starting the role: bind every listener, spawn every task on the shutdown tracker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_util::datadir::{DataDir, DataDirError};
use berth_util::net::{BindError, bind_tcp};
use berth_util::shutdown::Shutdown;

use crate::auth::Auth;
use crate::checks::{self, CheckOptions};
use crate::cluster::{Cluster, ClusterOptions};
use crate::config::{MIN_SECRET, RegistryConfig};
use crate::config_center::ConfigCenter;
use crate::core::{CoreOptions, Registry};
use crate::grpc::WatchService;
use crate::http::{self, AppState};
use crate::nacos_grpc::{GrpcOptions, NacosGrpc};
use crate::persist::PersistError;
use crate::push::{PushOptions, PushService};

/// Why the registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Tls(#[from] berth_identity::TlsError),
    #[error("cannot read the bound HTTP address: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot open the UDP push socket on {ip}: {source}")]
    PushSocket {
        ip: std::net::IpAddr,
        source: std::io::Error,
    },
    #[error(
        "a listener is not on loopback, so auth must be on: give a secret of at least {MIN_SECRET} bytes with --auth-secret-file FILE (or BERTH_REGISTRY_AUTH_SECRET_FILE)"
    )]
    AuthRequired,
    #[error("the auth secret is {0} bytes; use at least {MIN_SECRET} random bytes")]
    WeakSecret(usize),
    #[error(
        "peers are set, so members must authenticate each other: give the same secret of at least {MIN_SECRET} bytes to every member with --cluster-secret-file FILE (or BERTH_REGISTRY_CLUSTER_SECRET_FILE)"
    )]
    ClusterSecretRequired,
    #[error("the cluster secret is {0} bytes; use at least {MIN_SECRET} random bytes")]
    WeakClusterSecret(usize),
    #[error(
        "the peer links listen on {0}, off loopback, without TLS: anyone reaching it who learns the cluster secret could act as a member; set --cluster-listen and --tls-cert-file, --tls-key-file, --tls-ca-file (tls_cert_file, tls_key_file, tls_ca_file; make them with `berth tls ca create` and `berth tls cert create --role registry`), or listen on 127.0.0.1"
    )]
    ClusterTlsRequired(SocketAddr),
    #[error(
        "the TLS files secure the peer links, which need a listener of their own: set --cluster-listen HOST:PORT (cluster_listen) and name the members by it in --peers"
    )]
    ClusterListenRequired,
    #[error(
        "cannot listen for DNS on {addr} (UDP and TCP; set --dns-listen ADDR or `off`): {source}"
    )]
    DnsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the config store: {0}")]
    Kv(#[from] berth_kv::KvError),
    #[error("`{0}` must be above zero")]
    NotPositive(&'static str),
    #[error(
        "the gRPC listener {0} is a wildcard address peers cannot dial; set --cluster-advertise HOST:PORT"
    )]
    AdvertiseRequired(SocketAddr),
}

/// A running registry.
pub struct RegistryHandle {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    push_addr: SocketAddr,
    cluster_addr: Option<SocketAddr>,
    dns_addr: Option<SocketAddr>,
    registry: Registry,
    cluster: Option<Arc<Cluster>>,
    _data_dir: Arc<DataDir>,
}

impl RegistryHandle {
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The peer links' own listener, when `cluster_listen` is set.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster_addr
    }

    /// The DNS listener (UDP and TCP), unless `dns_listen` is off.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns_addr
    }

    /// Where UDP pushes come from.
    pub fn push_addr(&self) -> SocketAddr {
        self.push_addr
    }

    /// The naming core, for in-process use (`berth dev`, tests).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The cluster member, when started with peers.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }
}

/// Binds every listener and spawns the role's tasks on `shutdown`.
pub async fn start(config: RegistryConfig, shutdown: &Shutdown) -> Result<RegistryHandle, Error> {
    match &config.auth_secret {
        None if !config.loopback_only() => return Err(Error::AuthRequired),
        Some(s) if s.len() < MIN_SECRET => return Err(Error::WeakSecret(s.len())),
        _ => {}
    }
    let cc = &config.cluster;
    if !cc.peers.is_empty() {
        match &cc.secret {
            None => return Err(Error::ClusterSecretRequired),
            Some(s) if s.len() < MIN_SECRET => return Err(Error::WeakClusterSecret(s.len())),
            _ => {}
        }
        for (key, d) in [
            ("cluster_heartbeat", cc.heartbeat),
            ("cluster_sync_interval", cc.sync_interval),
            ("cluster_rpc_timeout", cc.rpc_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::NotPositive(key));
            }
        }
        if cc.handoff_limit == 0 {
            return Err(Error::NotPositive("cluster_handoff_limit"));
        }
    }
    // Unreadable certificates stop the start before anything listens. One certificate
    // serves HTTPS and, with peers, the peer links' mutual TLS.
    let tls = config
        .tls()?
        .map(berth_identity::ReloadingTls::load)
        .transpose()?;
    if let Some(tls) = &tls {
        shutdown.spawn(
            tls.clone()
                .watch(config.tls_reload_interval, shutdown.token()),
        );
    }
    if !cc.peers.is_empty() {
        let peer_listen = cc.listen.unwrap_or(config.grpc_listen);
        if tls.is_none() && !peer_listen.ip().is_loopback() {
            return Err(Error::ClusterTlsRequired(peer_listen));
        }
        if tls.is_some() && cc.listen.is_none() {
            return Err(Error::ClusterListenRequired);
        }
    }
    let peer_tls = if cc.peers.is_empty() {
        None
    } else {
        tls.clone()
    };
    let data_dir = Arc::new(DataDir::open(&config.data_dir)?);
    let registry = Registry::start(CoreOptions {
        beat: config.beat,
        sweep_every: config.expiry_check_interval,
        state_file: Some(data_dir.join("naming.json")),
        history: 1024,
    })?;
    let kv = open_kv_store(&config, &data_dir).await?;
    let configs = Arc::new(match &kv {
        Some(kv) => ConfigCenter::new(kv.clone(), config.config_max_content),
        None => ConfigCenter::unavailable(),
    });
    let sessions = kv.clone().map(crate::sessions::SessionStore::new);
    if let Some(sessions) = &sessions {
        let checks: Arc<dyn crate::sessions::CheckSource> =
            Arc::new(crate::http::consul::RegistryChecks(registry.clone()));
        shutdown.spawn(sessions.clone().run(checks, shutdown.token()));
    }
    let http_listener = bind_tcp(config.listen, "--listen").await?;
    let grpc_listener = bind_tcp(config.grpc_listen, "--grpc-listen").await?;
    let http_addr = http_listener.local_addr().unwrap_or(config.listen);
    let grpc_addr = grpc_listener.local_addr().unwrap_or(config.grpc_listen);
    let cluster_listener = match cc.listen.filter(|_| !cc.peers.is_empty()) {
        Some(addr) => Some(bind_tcp(addr, "--cluster-listen").await?),
        None => None,
    };
    let cluster_addr = cluster_listener.as_ref().and_then(|l| l.local_addr().ok());
    let dns_sockets = match config.dns_listen {
        Some(addr) => Some(
            crate::dns::bind(addr)
                .await
                .map_err(|source| Error::DnsBind { addr, source })?,
        ),
        None => None,
    };
    let dns_addr = dns_sockets
        .as_ref()
        .and_then(|(udp, _)| udp.local_addr().ok());
    // The address peers reach this member's peer service at.
    let peer_addr = cluster_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(grpc_addr);

    let cluster = if cc.peers.is_empty() {
        None
    } else {
        let advertise = match &cc.advertise {
            Some(a) => a.clone(),
            None if peer_addr.ip().is_unspecified() => {
                return Err(Error::AdvertiseRequired(peer_addr));
            }
            None => peer_addr.to_string(),
        };
        let cluster = Cluster::new(
            ClusterOptions {
                peers: cc.peers.clone(),
                advertise,
                secret: cc.secret.clone().unwrap_or_default(),
                heartbeat: cc.heartbeat,
                missed_beats: cc.missed_beats,
                sync_interval: cc.sync_interval,
                replicate_delay: cc.replicate_delay,
                rpc_timeout: cc.rpc_timeout,
                startup_attempts: cc.startup_attempts,
                handoff_limit: cc.handoff_limit,
                tls: peer_tls.clone(),
            },
            registry.clone(),
        );
        registry.attach(cluster.clone());
        cluster.run(&shutdown.token(), |task| {
            shutdown.spawn(task);
        });
        Some(cluster)
    };

    let push_ip = config.listen.ip();
    let push = PushService::bind(
        push_ip,
        PushOptions {
            ack_timeout: config.push_ack_timeout,
            attempts: config.push_attempts,
            subscriber_ttl: config.push_subscriber_ttl,
        },
        config.beat,
    )
    .await
    .map_err(|source| Error::PushSocket {
        ip: push_ip,
        source,
    })?;
    let push_addr = push.local_addr().unwrap_or(SocketAddr::new(push_ip, 0));

    let token = shutdown.token();
    let auth = Arc::new(Auth::new(config.auth_secret.clone()));
    {
        let (push, registry, token) = (push.clone(), registry.clone(), token.clone());
        shutdown.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = push.run(registry) => {}
            }
        });
    }
    {
        let (registry, token) = (registry.clone(), token.clone());
        let options = CheckOptions {
            every: config.check_interval,
            timeout: config.check_timeout,
            concurrency: 64,
        };
        shutdown.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = checks::run(registry, options) => {}
            }
        });
    }

    let nacos = NacosGrpc::new(
        registry.clone(),
        auth.clone(),
        configs.clone(),
        GrpcOptions {
            release_grace: config.grpc_release_grace,
            beat_interval: Duration::from_millis(config.beat.interval_ms.max(100)),
            beat: config.beat,
            ..GrpcOptions::default()
        },
        token.clone(),
    );
    shutdown.spawn(nacos.clone().run());
    let watch = WatchService::new(registry.clone(), token.clone());
    let watchers = watch.active();
    let state = AppState {
        registry: registry.clone(),
        push,
        beat: config.beat,
        lists: Default::default(),
        http_addr,
        cluster: cluster.clone(),
        configs: configs.clone(),
        sessions,
    };
    let mut router = http::router(state.clone());
    if let Some(c) = &cluster {
        router = router.merge(crate::cluster::view::routes(c.clone()));
    }
    let router = router
        .merge(crate::metrics::route(state, watchers, nacos.clone()))
        .merge(crate::nacos_grpc::loader::routes(nacos.clone()))
        .merge(crate::auth::routes(auth.clone()))
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            crate::auth::http_guard,
        ));
    match tls {
        // HTTPS, and plain HTTP from loopback, on the one port.
        Some(tls) => {
            let listener = berth_identity::HttpsListener::new(
                http_listener,
                move || tls.https_server(),
                shutdown.token(),
            )?;
            http::serve::serve(listener, router, shutdown, config.http_grace);
        }
        None => {
            http::serve::serve(http_listener, router, shutdown, config.http_grace);
        }
    }

    {
        let token = token.clone();
        let interceptor = crate::auth::grpc_interceptor(auth);
        let peers = cluster.clone().map(crate::cluster::service::server);
        // Peer links with a listener of their own are served there, not here.
        let (peers, own) = match cluster_listener {
            Some(listener) => (None, peers.map(|svc| (listener, svc))),
            None => (peers, None),
        };
        if let Some((listener, svc)) = own {
            serve_peer_links(listener, svc, peer_tls, shutdown);
        }
        shutdown.spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    watch.into_server(),
                    interceptor,
                ))
                .add_service(nacos.request_server())
                .add_service(nacos.stream_server())
                .add_optional_service(peers)
                .serve_with_incoming_shutdown(
                    // Nagle would hold each small answer back ~40 ms waiting for the
                    // client's ACK; `serve_with_incoming` ignores the builder's nodelay.
                    tonic::transport::server::TcpIncoming::from(grpc_listener)
                        .with_nodelay(Some(true)),
                    token.cancelled_owned(),
                )
                .await;
            if let Err(err) = result {
                tracing::error!(%err, "gRPC server failed");
            }
        });
    }

    if let Some((udp, tcp)) = dns_sockets {
        let resolver = crate::dns::DnsResolver::new(registry.clone(), config.dns_ttl);
        shutdown.spawn(crate::dns::serve(udp, tcp, resolver, token.clone()));
    }

    tracing::info!(%http_addr, %grpc_addr, %push_addr, ?dns_addr, "registry started");
    Ok(RegistryHandle {
        cluster_addr,
        dns_addr,
        http_addr,
        grpc_addr,
        push_addr,
        registry,
        cluster,
        _data_dir: data_dir,
    })
}

/// The config center's store: PostgreSQL when configured (a cluster's members share it),
/// else SQLite in the data folder on a single node. A cluster without PostgreSQL gets a
/// center that refuses every call naming the setting: members keeping configs apart
/// would answer differently.
/// Opens the registry's kv store once, for the config center, Consul KV and sessions:
/// SQLite in the data folder on a single node, PostgreSQL shared by a cluster; `None`
/// in a cluster without `kv_postgres_url` (those APIs then answer 503).
async fn open_kv_store(
    config: &RegistryConfig,
    data_dir: &DataDir,
) -> Result<Option<berth_kv::KvHandle>, Error> {
    let options = crate::sessions::kv_options(crate::config_center::kv_options(
        berth_kv::KvOptions::default(),
    ));
    let store: Arc<dyn berth_kv::KvStore> = match &config.kv_postgres_url {
        Some(url) => {
            let url = url.clone();
            let options = options.clone();
            let opened =
                tokio::task::spawn_blocking(move || berth_kv::PostgresKv::open(&url, options))
                    .await
                    .map_err(|_| berth_kv::KvError::Cancelled)??;
            Arc::new(opened)
        }
        None if !config.cluster.peers.is_empty() => {
            tracing::warn!(
                "the config center and Consul KV are off: a cluster needs a shared store (kv_postgres_url)"
            );
            return Ok(None);
        }
        None => Arc::new(berth_kv::SqliteKv::open(
            &data_dir.join("kv.sqlite3"),
            options,
        )?),
    };
    Ok(Some(berth_kv::KvHandle::new(store)))
}

/// The peer service on its own listener: mutual TLS when `tls` is set (the caller's role
/// is checked with the cluster secret, `cluster::service`), cleartext otherwise.
fn serve_peer_links(
    listener: tokio::net::TcpListener,
    svc: crate::cluster::service::Server,
    tls: Option<Arc<berth_identity::ReloadingTls>>,
    shutdown: &Shutdown,
) {
    // The files are watched once, in `start`: this shares the HTTPS listener's copy.
    let token = shutdown.token();
    shutdown.spawn(async move {
        let server = tonic::transport::Server::builder().add_service(svc);
        let result =
            berth_identity::accept::serve(server, listener, "registry peer", tls, token).await;
        if let Err(err) = result {
            tracing::error!(%err, "peer link server failed");
        }
    });
}
