//! Wiring: from an [`AgentConfig`] to running tasks (status listener, server link,
//! supervisor housekeeping) and the handle tests and `berth dev` hold.
//!
//! Shutting the agent down stops its own tasks only. Instances keep running (their
//! records stay in the data folder) and the next agent on that folder re-adopts them.

use std::net::SocketAddr;
use std::sync::Arc;

use berth_core::ResourceRequest;
use berth_proto::agent::v1 as pb;
use berth_util::shutdown::Shutdown;
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, DriverKind, validate_node_id};
use crate::driver::{DockerDriver, Driver, Drivers, LogRotator, ProcessDriver, SimDriver};
use crate::link::{self, LinkConfig, LinkStatus, NodeInfo, server_uri};
use crate::metrics::AgentMetrics;
use crate::record::{RecordError, RecordStore};
use crate::registry::{Credentials, NacosClient};

/// How the registry's secret is given to the agent, named when the registry refuses.
const REGISTRY_SECRET_SETTING: &str =
    "--registry-secret-file FILE (or BERTH_AGENT_REGISTRY_SECRET_FILE)";
use crate::status::{self, StatusState};
use crate::supervisor::{Supervisor, SupervisorConfig};
use crate::tasks::Tasks;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid agent setting `{key}`: {problem}")]
    Config { key: &'static str, problem: String },
    #[error("cannot use the data folder {path}: {reason} (check --data-dir)")]
    DataDir { path: String, reason: String },
    #[error(transparent)]
    Lock(#[from] berth_util::datadir::DataDirError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Tls(#[from] berth_identity::TlsError),
    #[error("cannot listen on {addr} for the agent's status endpoints: {source} (change --listen)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running agent.
#[derive(Clone)]
pub struct AgentHandle {
    status_addr: SocketAddr,
    node_id: String,
    supervisor: Supervisor,
    link: watch::Receiver<LinkStatus>,
    tasks: Tasks,
    diag: Option<Arc<std::sync::Mutex<crate::diag::DiagStatus>>>,
}

impl AgentHandle {
    /// The bound status listener (`/health`, `/metrics`).
    pub fn http_addr(&self) -> SocketAddr {
        self.status_addr
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The diagnostics gateway this agent is attached to now, if any.
    pub fn diag_gateway(&self) -> Option<String> {
        let status = self
            .diag
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        status.gateway_id.clone()
    }

    pub fn instances(&self) -> Vec<pb::InstanceStatus> {
        self.supervisor.statuses()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<pb::InstanceStatus> {
        self.supervisor.subscribe()
    }

    pub fn link_status(&self) -> LinkStatus {
        self.link.borrow().clone()
    }

    /// Resolves once the agent was told to stop and all its tasks ended.
    pub async fn finished(&self) {
        self.tasks.finished().await;
    }
}

/// Starts the agent: binds its listener, re-adopts the instances of its data folder and
/// spawns its tasks on `shutdown` (they stop when it fires; instances keep running).
pub async fn start(config: AgentConfig, shutdown: &Shutdown) -> Result<AgentHandle, Error> {
    let handle = start_with_token(config, shutdown.token()).await?;
    let finished = handle.clone();
    shutdown.spawn(async move { finished.finished().await });
    Ok(handle)
}

/// [`start`] with a bare cancellation token, for embedding and tests.
pub async fn start_with_token(
    config: AgentConfig,
    token: CancellationToken,
) -> Result<AgentHandle, Error> {
    if config.servers.is_empty() {
        return Err(Error::Config {
            key: "server",
            problem: "no server address: give --server HOST:PORT[,HOST:PORT...]".into(),
        });
    }
    if config.advertise.is_unspecified() {
        return Err(Error::Config {
            key: "advertise",
            problem: format!(
                "{} cannot be reached by anyone: give this node's address (127.0.0.1 on one machine)",
                config.advertise
            ),
        });
    }
    // Unreadable certificates stop the start, before anything is adopted or listens.
    let tls = berth_identity::TlsFiles::from_options(
        config.tls_cert_file.clone(),
        config.tls_key_file.clone(),
        config.tls_ca_file.clone(),
    )?
    .map(berth_identity::ReloadingTls::load)
    .transpose()?;
    // One agent per data folder: two would adopt and stop each other's instances.
    let data_dir = berth_util::datadir::DataDir::open(&config.data_dir)?;
    let node_id = node_id(&config)?;
    let store = RecordStore::open(&config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    let status_addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;

    let tasks = Tasks::new(token);
    let lock_until_stopped = tasks.token().clone();
    tasks.spawn(async move {
        lock_until_stopped.cancelled().await;
        drop(data_dir);
    });
    let metrics = Arc::new(AgentMetrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    let nacos = config.registry_http.map(|addr| {
        let credentials = Credentials::new(
            config
                .registry_secret
                .as_ref()
                .map(|s| s.expose().to_string()),
            REGISTRY_SECRET_SETTING,
        );
        NacosClient::new(format!("http://{addr}"), config.registry_timeout)
            .with_credentials(credentials)
    });
    let driver: Arc<dyn Driver> = match config.driver {
        DriverKind::Process => Arc::new(ProcessDriver::new(config.exit_poll)),
        DriverKind::Sim => Arc::new(SimDriver::new()),
    };
    let mut drivers = Drivers::new(driver);
    if let Some(socket) = &config.docker_socket {
        let docker = DockerDriver::new(socket);
        // Offered even while the engine is down (it may come up later); a start then
        // fails with the reason on the instance's stderr.
        if let Err(err) = docker.api().ping().await {
            tracing::warn!("docker driver: {err}");
        }
        drivers = drivers.with_docker(docker);
    }
    let supervisor = Supervisor::new(
        SupervisorConfig {
            node_id: node_id.clone(),
            advertise: config.advertise.to_string(),
            port_range: config.port_range,
            log_rotator: LogRotator {
                max_bytes: config.log_max_bytes,
                keep: config.log_keep,
            },
            housekeeping_interval: config.housekeeping,
            terminal_retention: config.retention,
            stderr_tail_lines: 20,
            registry_beat: config.registry_beat,
            default_grace: config.stop_grace,
            log_addr: Some(format!("http://{status_addr}")),
        },
        drivers,
        store.clone(),
        nacos,
        tasks.clone(),
        metrics,
    );
    for problem in supervisor.recover() {
        tracing::warn!("{problem}");
    }
    {
        let supervisor = supervisor.clone();
        tasks.spawn(async move {
            supervisor.sweep_orphan_containers().await;
        });
    }
    supervisor.spawn_housekeeping();

    let (link_tx, link_rx) = watch::channel(LinkStatus::default());
    let state = StatusState {
        node_id: node_id.clone(),
        supervisor: supervisor.clone(),
        link: link_rx.clone(),
        registry: Arc::new(registry),
        store: store.clone(),
        stop: tasks.token().clone(),
    };
    let app = status::router(state);
    let stop = tasks.token().clone();
    tasks.spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(err) = serve.await {
            tracing::error!("status listener failed: {err}");
        }
    });

    let node = NodeInfo {
        node_id: node_id.clone(),
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into()),
        labels: config.labels.clone(),
        total: ResourceRequest {
            cpus: config.cpus.unwrap_or_else(crate::procfs::cpus),
            mem_mib: config
                .mem_mib
                .or_else(crate::procfs::mem_total_mib)
                .unwrap_or(0),
            disk_mib: config
                .disk_mib
                .or_else(|| crate::procfs::disk_free_mib(&config.data_dir))
                .unwrap_or(0),
        },
        version: env!("CARGO_PKG_VERSION").to_string(),
        address: config.advertise.to_string(),
        status_url: status_url(status_addr, config.advertise),
    };
    if let Some(tls) = &tls {
        // A reconnecting agent presents whatever certificate its files hold by then.
        tasks.spawn(
            tls.clone()
                .watch(config.tls_reload_interval, tasks.token().clone()),
        );
    }
    let link_config = LinkConfig {
        servers: config
            .servers
            .iter()
            .map(|s| server_uri(s, tls.is_some()))
            .collect(),
        connect_timeout: config.connect_timeout,
        default_heartbeat: config.heartbeat,
        backoff_initial: config.backoff_initial,
        backoff_max: config.backoff_max,
        keepalive: config.keepalive,
        tls: tls.clone(),
    };
    tasks.spawn(link::run(
        link_config,
        node,
        supervisor.clone(),
        tasks.token().clone(),
        link_tx,
    ));
    let diag = if config.diag.is_empty() {
        None
    } else {
        let link = crate::diag::DiagLink::new(
            crate::diag::DiagOptions {
                gateways: config.diag.clone(),
                secret: config.diag_secret.clone(),
                node_id: node_id.clone(),
                tls: tls.clone(),
            },
            supervisor.clone(),
            store.clone(),
        );
        let status = link.status();
        tasks.spawn(link.run(tasks.token().clone()));
        Some(status)
    };
    tracing::info!(%node_id, status = %status_addr, servers = ?config.servers, "agent started");
    Ok(AgentHandle {
        status_addr,
        node_id,
        supervisor,
        link: link_rx,
        tasks,
        diag,
    })
}

/// The configured node id, else the one kept in the data folder, else a new one (kept).
fn node_id(config: &AgentConfig) -> Result<String, Error> {
    let invalid = |problem| Error::Config {
        key: "node_id",
        problem,
    };
    if let Some(id) = &config.node_id {
        validate_node_id(id).map_err(invalid)?;
        return Ok(id.clone());
    }
    let path = config.data_dir.join("node_id");
    let data_err = |err: std::io::Error| Error::DataDir {
        path: path.display().to_string(),
        reason: err.to_string(),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_string();
            validate_node_id(&id).map_err(|problem| Error::DataDir {
                path: path.display().to_string(),
                reason: format!("{problem}; fix or delete the file"),
            })?;
            Ok(id)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let host = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default();
            let host: String = host
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(40)
                .collect();
            let suffix: u32 = rand::random();
            let id = if host.is_empty() {
                format!("node-{suffix:08x}")
            } else {
                format!("{host}-{suffix:08x}")
            };
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{id}\n")).map_err(data_err)?;
            std::fs::rename(&tmp, &path).map_err(data_err)?;
            Ok(id)
        }
        Err(err) => Err(data_err(err)),
    }
}

/// Where others reach the status listener: its own address, or the advertised one when it
/// listens on every interface.
fn status_url(bound: SocketAddr, advertise: std::net::IpAddr) -> String {
    let host = if bound.ip().is_unspecified() {
        advertise
    } else {
        bound.ip()
    };
    format!("http://{}", SocketAddr::new(host, bound.port()))
}
