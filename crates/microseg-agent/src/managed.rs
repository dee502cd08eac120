//! Managed mode: the agent's link to the controller.
//!
//! It reports the workloads it discovers, receives the desired state (full, then deltas;
//! a large revision in several parts, joined before anything of it is enforced), enforces
//! each revision through the same compile-and-apply path as files, acknowledges it, and
//! uploads flows in batches. When the link breaks it reconnects with backoff and resyncs
//! (from the revision it holds, when the controller's store is the one that sent it:
//! then only what changed since comes); enforcement of the last state never stops meanwhile. A stream that fails for a reason
//! the agent can name (a message it cannot decode, parts out of order) is acknowledged
//! with that error, so that the controller shows it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use microseg_policy::{parse_str, Resource, ResourceSet};
use microseg_proto::parts::{Joiner, PartOutOfPlace};
use microseg_proto::v1::{
    agent_link_client::AgentLinkClient, AckRequest, DesiredState, DiscoveredWorkload, FlowBatch,
    SyncRequest, WorkloadReport,
};
use microseg_proto::{MAX_MESSAGE_BYTES, STORE_HEADER};
use tonic::codegen::tokio_stream;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::discovery::{discover, read_labels, Discovered};
use crate::error::EnforceError;
use crate::handle::DataPlaneHandle;
use crate::reconcile::Enforced;
use crate::AgentOptions;

/// Where the controller is and how to prove who we are.
#[derive(Clone, Debug)]
pub struct ControllerLink {
    pub url: String,
    pub token: String,
    pub labels_file: Option<PathBuf>,
    /// For an `https://` URL: the CAs that issued the controller's certificate (PEM).
    pub tls_ca: Option<PathBuf>,
    /// For mutual TLS: this agent's certificate chain and private key (PEM). The files
    /// are read at every (re)connect, so renewed certificates take effect then.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// Why a connected stretch with the controller ended (the agent reconnects).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{url}: {source}: give --controller as http(s)://HOST:PORT")]
    BadUrl {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS for {url}: {source}")]
    Tls {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// tonic's transport error says little by itself: the message carries its sources.
    #[error("connecting to {url}: {}", chain(.source))]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the token is not valid in a header: use the one `microseg node-token` printed")]
    BadToken,
    /// A call the controller refused or that broke off, with what it was.
    #[error("{call}: {}", .status.message())]
    Call {
        call: &'static str,
        #[source]
        status: tonic::Status,
    },
    /// The desired state arrived in parts that do not join.
    #[error(transparent)]
    Parts(#[from] PartOutOfPlace),
}

fn call(name: &'static str) -> impl FnOnce(tonic::Status) -> LinkError {
    move |status| LinkError::Call { call: name, status }
}

/// An error and its sources, each after a colon.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

type Client = AgentLinkClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// The controller's resources as this agent last received them, by (kind, name).
#[derive(Default)]
struct Desired {
    revision: u64,
    /// The controller's store `revision` counts in (from the answer that brought the last
    /// full state): given back at a resync, it lets the controller send only what changed.
    store: Option<u64>,
    resources: BTreeMap<(String, String), Received>,
}

/// One resource's JSON and what it parsed to. Parsed when it arrives, so that a delta
/// costs its own parse and the unchanged resources reach the compiler as the same shared
/// values (which it recognizes as unchanged without comparing them).
struct Received {
    json: String,
    resources: Vec<Resource>,
    errors: Vec<String>,
}

impl Desired {
    fn update(&mut self, d: DesiredState) {
        if d.full {
            // A resync: keep what parsed before if its JSON is the same.
            let mut before = std::mem::take(&mut self.resources);
            for r in d.upserts {
                let key = (r.kind, r.name);
                let received = match before.remove(&key) {
                    Some(old) if old.json == r.json => old,
                    _ => Received::parse(&key, r.json),
                };
                self.resources.insert(key, received);
            }
        } else {
            for r in d.upserts {
                let key = (r.kind, r.name);
                if self
                    .resources
                    .get(&key)
                    .is_none_or(|old| old.json != r.json)
                {
                    let received = Received::parse(&key, r.json);
                    self.resources.insert(key, received);
                }
            }
        }
        for r in d.deletes {
            self.resources.remove(&(r.kind, r.name));
        }
        self.revision = d.revision;
    }

    fn resource_set(&self) -> Result<ResourceSet, Vec<String>> {
        let mut set = ResourceSet::default();
        let mut errors = Vec::new();
        for r in self.resources.values() {
            errors.extend(r.errors.iter().cloned());
            set.extend(r.resources.iter().cloned());
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }
}

impl Received {
    fn parse((kind, name): &(String, String), json: String) -> Received {
        let (resources, diags) = parse_str(&format!("controller:{kind}/{name}"), &json);
        Received {
            json,
            resources,
            errors: diags.iter().map(|d| d.to_string()).collect(),
        }
    }
}

/// Runs the link until the process stops.
pub async fn run(link: ControllerLink, opts: AgentOptions, state: DataPlaneHandle) {
    state.flows().upload_to_controller(opts.flow_upload_buffer);
    let mut desired = Desired::default();
    let mut backoff = Duration::from_millis(250);
    loop {
        match session(&link, &opts, &state, &mut desired).await {
            Ok(()) => tracing::warn!("controller closed the stream; resyncing"),
            Err(e) => tracing::warn!(
                error = %e,
                retry_in = ?backoff,
                revision = desired.revision,
                "controller link failed; the revision in force stays"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if desired.revision > 0 {
            // A stream that got as far as a revision earns a quick first retry.
            backoff = backoff.min(Duration::from_secs(1));
        }
    }
}

async fn connect(link: &ControllerLink) -> Result<Client, LinkError> {
    let url = || link.url.clone();
    let mut endpoint = tonic::transport::Endpoint::from_shared(link.url.clone())
        .map_err(|source| LinkError::BadUrl { url: url(), source })?;
    if link.url.starts_with("https://") {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|source| LinkError::ReadFile {
                path: p.clone(),
                source,
            })
        };
        let mut tls = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &link.tls_ca {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&link.tls_cert, &link.tls_key) {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|source| LinkError::Tls { url: url(), source })?;
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(3))
        .tcp_keepalive(Some(Duration::from_secs(10)))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|source| LinkError::Connect { url: url(), source })?;
    let value = format!("Bearer {}", link.token)
        .parse()
        .map_err(|_| LinkError::BadToken)?;
    Ok(AgentLinkClient::with_interceptor(channel, Bearer(value))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

fn report(node: &str, found: &[Discovered]) -> WorkloadReport {
    WorkloadReport {
        node: node.to_string(),
        workloads: found
            .iter()
            .map(|d| DiscoveredWorkload {
                name: d.name.clone(),
                interface: d.interface.clone(),
                ips: d.ips.iter().map(|ip| ip.to_string()).collect(),
                labels: d.labels.clone().into_iter().collect(),
            })
            .collect(),
    }
}

fn discover_now(link: &ControllerLink, node: &str) -> Vec<Discovered> {
    let labels = match &link.labels_file {
        Some(p) => read_labels(p).unwrap_or_else(|e| {
            tracing::error!(path = %p.display(), error = %e, "labels file unreadable");
            BTreeMap::new()
        }),
        None => BTreeMap::new(),
    };
    discover(node, &labels).unwrap_or_else(|e| {
        tracing::error!(error = %e, "workload discovery failed");
        Vec::new()
    })
}

/// One connected stretch: report, sync, enforce, acknowledge, upload, until the link breaks.
async fn session(
    link: &ControllerLink,
    opts: &AgentOptions,
    state: &DataPlaneHandle,
    desired: &mut Desired,
) -> Result<(), LinkError> {
    let mut client = connect(link).await?;
    let mut found = discover_now(link, &opts.node);
    report_found(&mut client, &opts.node, &found).await?;
    let mut request = tonic::Request::new(SyncRequest {
        node: opts.node.clone(),
        revision: desired.revision,
        accepts_parts: true,
    });
    if let Some(v) = desired.store.and_then(|id| id.to_string().parse().ok()) {
        request.metadata_mut().insert(STORE_HEADER, v);
    }
    let answer = client.sync(request).await.map_err(call("sync"))?;
    let store: Option<u64> = answer
        .metadata()
        .get(STORE_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let mut stream = answer.into_inner();
    tracing::info!(
        url = link.url,
        node = opts.node,
        "connected to the controller"
    );
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let upload = upload_flows(client.clone(), opts.node.clone(), state.clone());
    tokio::pin!(upload);
    let mut parts = Joiner::default();
    loop {
        tokio::select! {
            msg = stream.message() => {
                let part = match msg {
                    Ok(Some(part)) => part,
                    Ok(None) => return Ok(()),
                    Err(status) => {
                        let tell = nameable(&status);
                        let error = call("receiving the desired state")(status);
                        if tell {
                            let text = error.to_string();
                            ack_failure(&mut client, &opts.node, parts.incomplete(), &text).await;
                        }
                        return Err(error);
                    }
                };
                let revision = part.revision;
                let d = match parts.push(part) {
                    Ok(Some(d)) => d,
                    Ok(None) => continue,
                    Err(error) => {
                        ack_failure(&mut client, &opts.node, Some(revision), &error.to_string()).await;
                        return Err(LinkError::Parts(error));
                    }
                };
                if d.full {
                    desired.store = store;
                }
                desired.update(d);
                let outcome = enforce_desired(desired, opts, state).await;
                // The protocol's empty error means enforced.
                let error = outcome.err().map(|e| e.to_string()).unwrap_or_default();
                let ack = AckRequest { node: opts.node.clone(), revision: desired.revision, error };
                client.ack(ack).await.map_err(call("ack"))?;
            }
            _ = tick.tick() => {
                let now = discover_now(link, &opts.node);
                if now != found {
                    found = now;
                    report_found(&mut client, &opts.node, &found).await?;
                }
            }
            error = &mut upload => return Err(error),
        }
    }
}

/// Reports the node's workloads. A report the controller refuses (over its per-node
/// limit, or invalid) is logged and the link goes on: the node keeps enforcing and syncing
/// policy with the workloads the controller last took (docs/CONTROLLER.md, "Bad nodes").
async fn report_found(
    client: &mut Client,
    node: &str,
    found: &[Discovered],
) -> Result<(), LinkError> {
    match client.report_workloads(report(node, found)).await {
        Ok(_) => Ok(()),
        Err(status) if refused(&status) => {
            tracing::warn!(
                code = ?status.code(),
                reason = status.message(),
                "the controller refused this node's workload report: policy still syncs, with the workloads it last accepted"
            );
            Ok(())
        }
        Err(status) => Err(call("reporting workloads")(status)),
    }
}

/// Whether the controller refused a report for what it holds, not for the connection.
fn refused(e: &tonic::Status) -> bool {
    matches!(
        e.code(),
        tonic::Code::ResourceExhausted
            | tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::AlreadyExists
    )
}

/// Flows at most this many to a batch: about 1 MB on the wire.
const UPLOAD_BATCH: usize = 5_000;
/// How long an upload waits for more flows after a batch that was not full.
const UPLOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Sends the upload queue's flows, a batch at a time, each only after the controller took
/// the last (back-pressure: a slow controller fills the agent's bounded queue, not its
/// memory). A flow leaves the queue only once sent, so a broken link loses none of it.
/// Returns only when an upload fails.
async fn upload_flows(mut client: Client, node: String, state: DataPlaneHandle) -> LinkError {
    loop {
        let (flows, dropped_total) = match state.flows().upload() {
            Some(q) => (q.batch(UPLOAD_BATCH), q.dropped()),
            None => (Vec::new(), 0),
        };
        let n = flows.len();
        if n > 0 {
            let msg = FlowBatch {
                node: node.clone(),
                flows_json: Vec::new(),
                flows,
                dropped_total,
            };
            if let Err(status) = client.upload_flows(tokio_stream::iter([msg])).await {
                return call("uploading flows")(status);
            }
            if let Some(q) = state.flows().upload() {
                q.sent(n);
            }
        }
        if n < UPLOAD_BATCH {
            tokio::time::sleep(UPLOAD_INTERVAL).await;
        }
    }
}

/// Where a managed agent notes the controller revision it enforces, for the next agent's
/// start-up log: the pinned maps hold the policy, not which revision it came from.
pub(crate) fn revision_file(opts: &AgentOptions) -> PathBuf {
    opts.state_dir.join("controller-revision")
}

fn note_revision(opts: &AgentOptions, revision: u64) {
    let path = revision_file(opts);
    let written = std::fs::create_dir_all(&opts.state_dir)
        .and_then(|()| std::fs::write(&path, format!("{revision}\n")));
    if let Err(e) = written {
        tracing::debug!(path = %path.display(), error = %e, "revision not noted");
    }
}

/// The revision a previous agent noted, if any.
pub(crate) fn noted_revision(opts: &AgentOptions) -> Option<u64> {
    let text = std::fs::read_to_string(revision_file(opts)).ok()?;
    text.trim().parse().ok()
}

/// Whether a stream error is about what arrived (too large, undecodable) rather than the
/// connection, so that the controller is worth telling.
fn nameable(e: &tonic::Status) -> bool {
    matches!(
        e.code(),
        tonic::Code::OutOfRange | tonic::Code::Internal | tonic::Code::DataLoss
    )
}

/// Tells the controller why the stream is dropped (best effort: the connection may be what
/// failed). `revision` is the one that failed, or 0 when it is not known.
async fn ack_failure(client: &mut Client, node: &str, revision: Option<u64>, error: &str) {
    let ack = AckRequest {
        node: node.to_string(),
        revision: revision.unwrap_or(0),
        error: error.to_string(),
    };
    match tokio::time::timeout(Duration::from_secs(5), client.ack(ack)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(error = e.message(), "acknowledging the failure failed"),
        Err(_) => tracing::debug!("acknowledging the failure: no answer within 5 s"),
    }
}

/// Why a revision from the controller is not (wholly) enforced: what it acknowledges.
#[derive(Debug, thiserror::Error)]
pub enum NotEnforced {
    /// Resources that do not parse: nothing of the revision was applied.
    #[error("{}", .0.join("; "))]
    Unparsed(Vec<String>),
    /// Nothing of the revision was applied.
    #[error(transparent)]
    Refused(#[from] EnforceError),
    /// The tables are in force, but some interfaces lack the classifiers.
    #[error("{0}")]
    Incomplete(Box<Enforced>),
}

/// Enforces the desired state.
async fn enforce_desired(
    desired: &Desired,
    opts: &AgentOptions,
    state: &DataPlaneHandle,
) -> Result<Enforced, NotEnforced> {
    let revision = desired.revision;
    let set = desired.resource_set().map_err(|errors| {
        tracing::error!(revision, error = errors.join("; "), "revision not enforced");
        NotEnforced::Unparsed(errors)
    })?;
    match state.enforce(set, Some(revision)).await {
        Ok(enforced) if enforced.is_complete() => {
            tracing::info!(revision, "enforcing {enforced}");
            note_revision(opts, revision);
            Ok(enforced)
        }
        Ok(incomplete) => {
            tracing::error!(revision, "{incomplete}");
            Err(NotEnforced::Incomplete(Box::new(incomplete)))
        }
        Err(e) => {
            tracing::error!(revision, "{e}");
            Err(e.into())
        }
    }
}
