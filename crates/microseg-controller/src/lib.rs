//! microseg-controller: the control plane. REST/JSON API and the AgentLink gRPC service
//! on one address (plain HTTP, or TLS with optional client certificates), behind a bearer
//! token; resources stored in SQLite (default) or
//! PostgreSQL (shared by several controllers), versioned by one global revision.

pub mod api_types;
mod apply;
mod auth;
pub mod client;
mod controller_error;
mod core;
mod error;
mod flow_convert;
mod flow_ingest;
mod grpc;
mod metrics;
pub mod node_token;
#[cfg(test)]
mod openapi_check;
mod promote;
mod recommendations;
pub mod resources;
mod rest;
mod rest_flows;
mod rest_input;
pub mod store;
mod sync_stream;
pub mod tls;
mod ui;

use crate::core::Core;
pub use crate::core::{DEFAULT_MAX_WORKLOADS_PER_NODE, MAX_WORKLOAD_ADDRESSES};
use crate::flow_ingest::FlowIngest;
pub use controller_error::{ControllerError, InputError, RuntimeError};
pub use error::Error;
pub use rest::OPENAPI;

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use tokio::sync::watch;

/// How the controller runs (the `microseg controller` flags).
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: String,
    /// None: SQLite at `<state_dir>/controller.db`; `sqlite:PATH`; `postgres://...`.
    pub db: Option<String>,
    pub token_file: Option<PathBuf>,
    /// The agents' token: it opens the gRPC agent link only, never the REST API.
    pub agent_token_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// The flow record (docs/CONTROLLER.md, "Flows"): None: SQLite at
    /// `<state_dir>/flows.db`; a SQLite path, `postgres://...` or `clickhouse://HOST:PORT/DB`.
    pub flow_db: Option<String>,
    /// How long flow records are kept.
    pub flow_retention: Duration,
    /// The most uploaded records waiting to be stored; more are dropped and counted.
    pub flow_queue: usize,
    /// TLS: the server's certificate chain and private key (PEM). Without them the
    /// controller serves plain HTTP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate issued by one of these CAs (PEM).
    pub tls_client_ca: Option<PathBuf>,
    /// PostgreSQL over TLS (required): the CAs (PEM) that issued the server's certificate.
    /// Without it, a URL with `sslmode=require` uses the system's CA bundle.
    pub db_ca: Option<PathBuf>,
    /// A recommended policy is stable after this long without a new edge
    /// (docs/RECOMMEND.md "Lifecycle").
    pub recommend_quiet: Duration,
    /// The most workloads one node may report; a larger report is refused whole
    /// (docs/CONTROLLER.md "Bad nodes").
    pub max_workloads_per_node: usize,
    /// A connected node that lags for longer than this is behind (`microseg status`,
    /// `microseg_controller_nodes_behind`).
    pub node_behind_after: Duration,
}

impl Options {
    pub fn new(state_dir: impl Into<PathBuf>) -> Options {
        Options {
            listen: "127.0.0.1:7070".into(),
            db: None,
            token_file: None,
            agent_token_file: None,
            state_dir: state_dir.into(),
            flow_db: None,
            flow_retention: microseg_flowstore::DEFAULT_RETENTION,
            flow_queue: DEFAULT_FLOW_QUEUE,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            db_ca: None,
            recommend_quiet: DEFAULT_RECOMMEND_QUIET,
            max_workloads_per_node: DEFAULT_MAX_WORKLOADS_PER_NODE,
            node_behind_after: DEFAULT_NODE_BEHIND_AFTER,
        }
    }

    /// The TLS configuration the flags ask for (None: plain HTTP).
    pub fn tls_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>, ControllerError> {
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), ca) => tls::server_config(cert, key, ca.as_deref())
                .map(Some)
                .map_err(|e| InputError::Tls(e).into()),
            _ => Err(InputError::TlsFlagsIncomplete.into()),
        }
    }
}

/// `--recommend-quiet`'s default.
pub const DEFAULT_RECOMMEND_QUIET: Duration = Duration::from_secs(3600);

/// `--node-behind-after`'s default: a change reaches a thousand nodes within a fraction
/// of a second, a reconnect storm within a few (docs/CONTROLLER.md "Sizing").
pub const DEFAULT_NODE_BEHIND_AFTER: Duration = Duration::from_secs(30);

/// How many uploaded flow records may wait to be stored.
pub const DEFAULT_FLOW_QUEUE: usize = 50_000;

/// The token file created under the state dir when no `--token-file` is given.
pub const TOKEN_FILE: &str = "controller.token";
/// The agents' token file created under the state dir when no `--agent-token-file` is
/// given: it opens the agent link (gRPC) only, so a node cannot change policy.
pub const AGENT_TOKEN_FILE: &str = "agent.token";

fn random_token() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The token from `--token-file`, or the one under the state dir (created on first run,
/// mode 0600).
pub fn load_token(opts: &Options) -> Result<String, ControllerError> {
    load_token_file(
        "--token-file",
        opts.token_file.as_deref(),
        &opts.state_dir.join(TOKEN_FILE),
    )
}

/// The agents' token from `--agent-token-file`, or the one under the state dir.
pub fn load_agent_token(opts: &Options) -> Result<String, ControllerError> {
    load_token_file(
        "--agent-token-file",
        opts.agent_token_file.as_deref(),
        &opts.state_dir.join(AGENT_TOKEN_FILE),
    )
}

/// The agents' token as the controller has it, never created here (`microseg node-token`).
pub fn existing_agent_token(opts: &Options) -> Result<String, ControllerError> {
    if opts.agent_token_file.is_some() {
        return load_agent_token(opts);
    }
    let path = opts.state_dir.join(AGENT_TOKEN_FILE);
    let t = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(InputError::AgentTokenUnreadable { path, source }.into()),
    };
    if t.trim().is_empty() {
        return Err(InputError::NoAgentToken { path }.into());
    }
    Ok(t.trim().to_string())
}

/// The token in `given` (named by `flag` in errors), else in `path`, created there (mode
/// 0600) when missing or empty.
fn load_token_file(
    flag: &'static str,
    given: Option<&Path>,
    path: &Path,
) -> Result<String, ControllerError> {
    if let Some(p) = given {
        let t = std::fs::read_to_string(p).map_err(|source| InputError::TokenUnreadable {
            flag,
            path: p.into(),
            source,
        })?;
        let t = t.trim().to_string();
        if t.is_empty() || t.contains(char::is_whitespace) {
            return Err(InputError::TokenNotOneWord {
                flag,
                path: p.into(),
            }
            .into());
        }
        return Ok(t);
    }
    if let Ok(t) = std::fs::read_to_string(path) {
        if !t.trim().is_empty() {
            tracing::info!(path = %path.display(), "token read");
            return Ok(t.trim().to_string());
        }
    }
    let rt = |source| RuntimeError::TokenCreate {
        path: path.into(),
        source,
    };
    let token = random_token().map_err(rt)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(rt)?;
    // `mode` applies only to a file it creates: an existing empty one keeps its own.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(rt)?;
    writeln!(f, "{token}").map_err(rt)?;
    tracing::info!(path = %path.display(), "token created");
    Ok(token)
}

/// TLS for PostgreSQL, when `--db-ca` is given or the URL asks for `sslmode=require`.
fn postgres_tls(
    url: &str,
    opts: &Options,
) -> Result<Option<Arc<rustls::ClientConfig>>, ControllerError> {
    let required = url
        .parse::<tokio_postgres::Config>()
        .is_ok_and(|c| matches!(c.get_ssl_mode(), tokio_postgres::config::SslMode::Require));
    if opts.db_ca.is_none() && !required {
        return Ok(None);
    }
    if opts.db_ca.is_none() && tls::system_ca_file().is_none() {
        return Err(InputError::NoSystemCa.into());
    }
    let cfg = tls::client_config(opts.db_ca.as_deref(), None).map_err(InputError::DbCa)?;
    let mut cfg = (*cfg).clone();
    cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(Arc::new(cfg)))
}

pub async fn open_store(opts: &Options) -> Result<Arc<dyn Store>, ControllerError> {
    let db = opts.db.clone().unwrap_or_default();
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        let pg = store::postgres::Postgres::open(&db, postgres_tls(&db, opts)?)
            .await
            .map_err(RuntimeError::Store)?;
        tracing::info!(storage = "PostgreSQL", "storage opened");
        return Ok(Arc::new(pg));
    }
    if opts.db_ca.is_some() {
        return Err(InputError::DbCaWithoutPostgres.into());
    }
    let path = if db.is_empty() {
        opts.state_dir.join("controller.db")
    } else if let Some(p) = db
        .strip_prefix("sqlite://")
        .or_else(|| db.strip_prefix("sqlite:"))
    {
        PathBuf::from(p)
    } else {
        return Err(InputError::DbUrl { db }.into());
    };
    let s = store::sqlite::Sqlite::open(&path).map_err(|source| RuntimeError::Sqlite {
        path: path.clone(),
        source,
    })?;
    tracing::info!(storage = "SQLite", path = %path.display(), "storage opened");
    Ok(Arc::new(s))
}

/// The flow store's URL, checked: a malformed one is refused here, while one that is
/// unreachable is opened in the background (`flow_ingest.rs`).
async fn flow_store(opts: &Options) -> Result<(String, Option<FlowStoreBox>), ControllerError> {
    if opts.flow_retention.is_zero() {
        return Err(InputError::FlowRetention {
            reason: "it must be more than 0".into(),
        }
        .into());
    }
    let url = match &opts.flow_db {
        Some(u) => u.clone(),
        None => opts.state_dir.join("flows.db").display().to_string(),
    };
    // The URL is checked before any connection is tried, so this answers at once for a
    // malformed one; a server that does not answer soon is the background opener's.
    // A SQLite file is opened here, so that flows are served from the first request.
    let wait = match microseg_flowstore::backend_of(&url) {
        "sqlite" => Duration::MAX,
        _ => Duration::from_secs(2),
    };
    let first = tokio::time::timeout(wait, microseg_flowstore::open(&url));
    match first.await {
        Ok(Err(e @ microseg_flowstore::Error::BadUrl { .. })) => Err(InputError::FlowDb {
            reason: flow_ingest::chain(&e),
        }
        .into()),
        Ok(Ok(store)) => Ok((url, Some(store))),
        _ => Ok((url, None)),
    }
}

type FlowStoreBox = Box<dyn microseg_flowstore::FlowStore>;

/// A controller serving in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub token: String,
    pub agent_token: String,
    /// Serving over TLS (`https://`).
    pub tls: bool,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops serving (open agent streams end) and waits, at most 5 s, for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

fn ensure_dir(p: &Path) -> Result<(), ControllerError> {
    std::fs::create_dir_all(p).map_err(|source| {
        RuntimeError::StateDir {
            path: p.into(),
            source,
        }
        .into()
    })
}

/// Binds `addr` with a listen queue of 4096 (the kernel may cap it lower): a thousand
/// agents that reconnect at once overflow tokio's default of 1024 while the controller is
/// busy, and an overflowed queue drops connections (docs/CONTROLLER.md "Sizing").
async fn listen(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = match a {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(4096)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{addr}: no address"))))
}

/// Opens the store, binds `opts.listen` and serves until [`Running::stop`].
pub async fn start(opts: &Options) -> Result<Running, ControllerError> {
    let tls = opts.tls_config()?;
    ensure_dir(&opts.state_dir)?;
    let token = load_token(opts)?;
    let agent_token = load_agent_token(opts)?;
    if agent_token == token {
        return Err(InputError::SameTokens.into());
    }
    let (flow_url, flows) = flow_store(opts).await?;
    let store = open_store(opts).await?;
    let listener = listen(&opts.listen)
        .await
        .map_err(|source| RuntimeError::Listen {
            addr: opts.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| RuntimeError::Io {
        what: "the listening socket's address",
        source,
    })?;
    let rev0 = store.revision().await.map_err(RuntimeError::Storage)?;
    let rev = Arc::new(watch::channel(rev0).0);
    let (stop, stop_rx) = watch::channel(false);
    store.clone().watch_changes(rev.clone(), stop_rx.clone());
    let ingest = FlowIngest::new(microseg_flowstore::backend_of(&flow_url), opts.flow_queue);
    ingest.spawn(flow_url, flows, opts.flow_retention, stop_rx.clone());
    let mut core = Core::new(store, rev, ingest, stop_rx.clone());
    core.recommend_quiet = opts.recommend_quiet;
    core.max_workloads_per_node = opts.max_workloads_per_node;
    core.node_behind_after = opts.node_behind_after;
    let core = Arc::new(core);
    core.track_revisions();
    let app = auth::app(core, token.clone(), agent_token.clone());
    let mut stopped = stop_rx.clone();
    let stopping = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let mode = match (&tls, &opts.tls_client_ca) {
        (None, _) => "plain HTTP",
        (Some(_), None) => "TLS",
        (Some(_), Some(_)) => "mutual TLS",
    };
    let task = match tls.clone() {
        None => tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stopping);
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "serving failed");
            }
        }),
        Some(cfg) => {
            let listener =
                tls::TlsListener::new(listener, cfg).map_err(|source| RuntimeError::Io {
                    what: "the TLS listener",
                    source,
                })?;
            let app = app.into_make_service_with_connect_info::<tls::ClientCertificate>();
            tokio::spawn(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(stopping);
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "serving failed");
                }
            })
        }
    };
    tracing::info!(
        %addr,
        mode,
        revision = rev0,
        "controller listening (REST and gRPC)"
    );
    Ok(Running {
        addr,
        token,
        agent_token,
        tls: tls.is_some(),
        stop,
        task,
    })
}

/// `microseg controller`: serves until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> Result<(), ControllerError> {
    let running = start(&opts).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| RuntimeError::Io {
            what: "the SIGTERM handler",
            source,
        })?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping");
    running.stop().await;
    Ok(())
}
