//! The control-plane server: desired state in a store, real state in memory from agent
//! heartbeats, the reconciler that closes the gap, and the REST API and event stream.
//!
//! Owns: the REST API (`/v1/...`), the agent stream gRPC service, the in-memory real
//! state, the reconciler and the server's metrics. Placement and spec rules live in
//! `berth-core`, storage in `berth-store`, the agent link's protobuf mapping in
//! `berth-wire`, the registry look-ups in `berth-registry-client`. Must never depend on
//! another role's crate (agent, registry, router): roles talk only through their network
//! contracts.

mod agents;
mod api;
mod apps;
mod clock;
mod config;
mod context;
mod deploy;
mod events;
mod leader;
mod metrics;
mod reconcile;
mod retention;
pub mod sim;
mod state;
mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use berth_proto::agent::v1::agent_link_server::AgentLinkServer;
use berth_store::{PostgresStore, SqliteStore, Store, StoreError};
use berth_util::datadir::{DataDir, DataDirError};
use berth_util::net::{BindError, bind_tcp};
use berth_util::shutdown::Shutdown;

pub use agents::check_hello;
pub use config::ServerConfig;
pub use events::Event;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("{0}")]
    Insecure(String),
    #[error("cannot read a bound address: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] berth_identity::TlsError),
    /// A configuration the server will not start with; the message names the setting.
    #[error("{0}")]
    Refused(String),
}

/// A running server.
pub struct ServerHandle {
    http: SocketAddr,
    agent: SocketAddr,
    _data_dir: Arc<DataDir>,
}

impl ServerHandle {
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }
    pub fn agent_addr(&self) -> SocketAddr {
        self.agent
    }
}

/// Opens the store, binds both listeners and spawns every task on `shutdown`.
pub async fn start(config: ServerConfig, shutdown: &Shutdown) -> Result<ServerHandle, Error> {
    // Every reason not to start, in one message: an operator who moves a listener off
    // loopback learns at once everything it needs (certificates and ACLs), not one by one.
    match (config.agent_tls(), config.refusal()) {
        (Err(Error::Refused(tls)), Some(acl)) => {
            return Err(Error::Insecure(format!("{tls}; and {acl}")));
        }
        (Err(e), _) => return Err(e),
        (Ok(_), Some(acl)) => return Err(Error::Insecure(acl)),
        (Ok(_), None) => {}
    }
    let data_dir = Arc::new(DataDir::open(&config.data_dir)?);
    let db = data_dir.join("server.db");
    let postgres = config.postgres_url.clone();
    let store: Arc<dyn Store> = tokio::task::spawn_blocking(move || match postgres {
        Some(url) => PostgresStore::open(url.expose()).map(|s| Arc::new(s) as Arc<dyn Store>),
        None => SqliteStore::open(&db).map(|s| Arc::new(s) as Arc<dyn Store>),
    })
    .await
    .map_err(|e| StoreError::Engine(format!("store open task failed: {e}")))??;
    start_with_store(config, store, data_dir, shutdown).await
}

async fn start_with_store(
    config: ServerConfig,
    store: Arc<dyn Store>,
    data_dir: Arc<DataDir>,
    shutdown: &Shutdown,
) -> Result<ServerHandle, Error> {
    // Refusals and unreadable certificates stop the start before anything listens.
    let tls = match config.agent_tls()? {
        Some(files) => Some(berth_identity::ReloadingTls::load(files)?),
        None => None,
    };
    let http_listener = bind_tcp(config.listen, "--listen").await?;
    let agent_listener = bind_tcp(config.agent_listen, "--agent-listen").await?;
    let http = http_listener.local_addr()?;
    let agent = agent_listener.local_addr()?;

    let store = store::StoreHandle::new(store);
    let stored = store.run(|s| s.list_deployments()).await?;
    let deployments = deploy::Deployments::default();
    deployments.load(stored);

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let ctx = Arc::new(context::Ctx {
        store,
        state: Mutex::new(state::RealState::default()),
        sessions: agents::sessions::Sessions::default(),
        events: events::EventBus::new(),
        deployments,
        wake: tokio::sync::Notify::new(),
        metrics,
        registry: Arc::new(registry),
        server_id: format!("server-{}-{}", std::process::id(), clock::unix_ms()),
        started_ms: clock::unix_ms(),
        write_lock: tokio::sync::Mutex::new(None),
        cancel: shutdown.token(),
        leadership: Mutex::new(leader::Leadership::Unknown {
            reason: "the first election has not finished".into(),
        }),
        auth_failures: Default::default(),
        tokens: Default::default(),
        tls: tls.clone(),
        config,
    });

    if let Some(tls) = &tls {
        shutdown.spawn(
            tls.clone()
                .watch(ctx.config.tls_reload_interval, shutdown.token()),
        );
    }
    let router = api::router(ctx.clone());
    let grace = ctx.config.shutdown_grace;
    match &tls {
        // HTTPS, and plain HTTP from loopback, on the one port.
        Some(tls) => {
            let tls = tls.clone();
            let listener = berth_identity::HttpsListener::new(
                http_listener,
                move || tls.https_server(),
                shutdown.token(),
            )?;
            berth_util::http::serve(listener, router, shutdown, grace);
        }
        None => {
            berth_util::http::serve(http_listener, router, shutdown, grace);
        }
    }

    let tls_on = tls.is_some();
    let service = AgentLinkServer::new(agents::AgentService { ctx: ctx.clone() });
    let cancel = shutdown.token();
    shutdown.spawn(async move {
        // With TLS the handshake verifies the agent's certificate against the CA; the
        // session then checks the identity in it against the Hello.
        let server = tonic::transport::Server::builder().add_service(service);
        let result =
            berth_identity::accept::serve(server, agent_listener, "agent", tls, cancel).await;
        if let Err(e) = result {
            tracing::error!("agent stream server failed: {e}");
        }
    });

    let me = leader::LeaderInfo {
        server_id: ctx.server_id.clone(),
        api_url: ctx.config.advertise_url.clone().unwrap_or_else(|| {
            let scheme = if tls_on { "https" } else { "http" };
            format!("{scheme}://{http}")
        }),
        agent_addr: ctx
            .config
            .advertise_agent
            .clone()
            .unwrap_or_else(|| agent.to_string()),
    };
    // The first round runs before start returns, so a lone server leads from its first
    // request on.
    let mut elector = leader::Elector::new(ctx.clone(), me);
    let next = elector.round().await;
    shutdown.spawn(elector.run(next, shutdown.token()));
    tracing::info!(%http, %agent, "server started");
    Ok(ServerHandle {
        http,
        agent,
        _data_dir: data_dir,
    })
}
