//! `start`: binds every listener, seeds the table from the cache, spawns the proxy, the
//! status listener, the sources and the drain sequence on the caller's shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_util::metrics::Registry;
use berth_util::shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::RouterMetrics;
use crate::proxy::Proxy;
use crate::proxy::access::AccessSink;
use crate::route::RouteEntry;
use crate::server::{self, Listener};
use crate::sources::{cache, nats, registry};
use crate::status::{self, StatusState};
use crate::store::{RouteStore, SOURCE_STATIC};
use crate::tls::TlsAcceptorSource;
use crate::{Error, RouterConfig};

/// A running router.
#[derive(Clone)]
pub struct RouterHandle {
    http: SocketAddr,
    status: SocketAddr,
    https: Option<SocketAddr>,
    store: Arc<RouteStore>,
    metrics: Arc<RouterMetrics>,
    draining: Arc<AtomicBool>,
    tls: Option<Arc<TlsAcceptorSource>>,
}

impl RouterHandle {
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    pub fn status_addr(&self) -> SocketAddr {
        self.status
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https
    }

    /// The live table and its sources.
    pub fn store(&self) -> &Arc<RouteStore> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<RouterMetrics> {
        &self.metrics
    }

    /// Replaces the routes pushed by in-process callers (`berth dev`, tests).
    pub fn set_routes(&self, entries: Vec<RouteEntry>) -> u64 {
        self.store.set_source(SOURCE_STATIC, entries)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Re-reads TLS certificate files now (what SIGHUP does).
    pub fn reload_tls(&self) -> Result<(), Error> {
        match &self.tls {
            Some(t) => t.reload(),
            None => Ok(()),
        }
    }
}

async fn bind(addr: SocketAddr, setting: &'static str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        addr,
        setting,
        source,
    })
}

/// Starts the router; returns once every listener is bound.
pub async fn start(config: RouterConfig, shutdown: &Shutdown) -> Result<RouterHandle, Error> {
    let http_listener = bind(config.listen, "listen").await?;
    let status_listener = bind(config.status_listen, "status-listen").await?;
    let tls = if config.tls_certs.is_empty() {
        None
    } else {
        Some(Arc::new(TlsAcceptorSource::load(config.tls_certs.clone())?))
    };
    let https_listener = match config.tls_listen {
        Some(addr) => Some(bind(addr, "tls-listen").await?),
        None => None,
    };
    let http = local(&http_listener, config.listen);
    let status_addr = local(&status_listener, config.status_listen);
    let https = https_listener
        .as_ref()
        .zip(config.tls_listen)
        .map(|(l, a)| local(l, a));

    let store = Arc::new(RouteStore::new());
    if let Some(path) = &config.route_cache {
        match cache::load(path) {
            Ok(Some(sources)) => {
                let routes: usize = sources.values().map(Vec::len).sum();
                store.update(|s| *s = sources);
                tracing::info!(path = %path.display(), routes, "serving cached routes until sources report");
            }
            Ok(None) => {}
            // A broken cache must not keep the router down: start empty, sources refill it.
            Err(e) => tracing::warn!(error = %e, "ignoring the route cache"),
        }
    }

    let upstreams = Arc::new(crate::sources::upstreams::Upstreams::open(
        store.clone(),
        config.upstreams_file.clone(),
    )?);

    let metrics = Arc::new(RouterMetrics::default());
    let mut registry_metrics = Registry::default();
    metrics.register(&mut registry_metrics);
    let draining = Arc::new(AtomicBool::new(false));
    // The proxy listeners stop only after /health has reported draining for `drain_wait`;
    // the status listener (and the access log writer) stop last, so probes see 503 rather
    // than a refused connection and the last requests are logged.
    let proxy_stop = CancellationToken::new();
    let status_stop = CancellationToken::new();
    let mut proxy = Proxy::new(store.clone(), config.proxy.clone(), metrics.clone());
    if config.proxy.access_log {
        let (sink, writer) = match &config.access_log_file {
            Some(path) => {
                let (sink, writer) = AccessSink::file(path, status_stop.clone())?;
                (sink, futures::future::Either::Left(writer))
            }
            None => {
                let (sink, writer) = AccessSink::stdout(status_stop.clone());
                (sink, futures::future::Either::Right(writer))
            }
        };
        shutdown.spawn(writer);
        proxy = proxy.with_access_sink(sink);
    }
    let proxy = Arc::new(proxy);
    let sources_stop = shutdown.token().child_token();

    let mut proxy_tasks = Vec::new();
    proxy_tasks.push(shutdown.spawn(server::serve(
        Listener {
            listener: http_listener,
            tls: None,
        },
        proxy.clone(),
        proxy_stop.clone(),
        config.drain_timeout,
        config.header_read_timeout,
    )));
    if let (Some(listener), Some(tls)) = (https_listener, &tls) {
        proxy_tasks.push(shutdown.spawn(server::serve(
            Listener {
                listener,
                tls: Some(tls.clone()),
            },
            proxy.clone(),
            proxy_stop.clone(),
            config.drain_timeout,
            config.header_read_timeout,
        )));
    }
    if let Some(tls) = &tls {
        shutdown.spawn(
            tls.clone()
                .watch(config.tls_reload_interval, sources_stop.clone()),
        );
    }

    let status_state = StatusState {
        store: store.clone(),
        metrics: metrics.clone(),
        registry: Arc::new(registry_metrics),
        draining: draining.clone(),
        started: Instant::now(),
        auth: config.status_auth.clone(),
        upstreams,
    };
    let status_app = status::router(status_state);
    let stop = status_stop.clone();
    shutdown.spawn(async move {
        let served = axum::serve(status_listener, status_app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "status listener failed");
        }
    });

    let token = shutdown.token();
    let (drain_flag, drain_wait) = (draining.clone(), config.drain_wait);
    shutdown.spawn(async move {
        token.cancelled().await;
        drain_flag.store(true, Ordering::SeqCst);
        tracing::info!(?drain_wait, "draining: /health reports 503");
        tokio::time::sleep(drain_wait).await;
        proxy_stop.cancel();
        for t in proxy_tasks {
            let _ = t.await;
        }
        status_stop.cancel();
    });

    if let Some(path) = config.route_cache.clone() {
        shutdown.spawn(cache::run_writer(store.clone(), path, sources_stop.clone()));
    }
    if let Some(nats_cfg) = config.nats.clone() {
        let advertise = if config.listen.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            config.listen.ip()
        };
        shutdown.spawn(nats::run(
            nats_cfg,
            store.clone(),
            metrics.clone(),
            advertise,
            sources_stop.clone(),
        ));
    }
    if let Some(reg_cfg) = config.registry.clone() {
        shutdown.spawn(registry::run(
            reg_cfg,
            store.clone(),
            metrics.clone(),
            sources_stop.clone(),
        ));
    }
    tracing::info!(%http, status = %status_addr, https = ?https, "router started");
    Ok(RouterHandle {
        http,
        status: status_addr,
        https,
        store,
        metrics,
        draining,
        tls,
    })
}

fn local(l: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
}
