//! The AgentLink gRPC service: desired state down (full, then deltas, each in parts of at
//! most [`STATE_CHUNK_BYTES`] when larger), acks, discovered workloads and flows up.

use crate::auth::Bearer;
use crate::core::{for_node, now, Core};
use crate::error::Error;
use crate::store::Row;
use microseg_policy::check_name;
use microseg_proto::parts::split;
use microseg_proto::v1::agent_link_server::{AgentLink, AgentLinkServer};
use microseg_proto::v1::{
    AckRequest, AckResponse, DesiredState, FlowBatch, ReportResponse, Resource, ResourceRef,
    SyncRequest, UploadResponse, WorkloadReport,
};
use microseg_proto::{MAX_MESSAGE_BYTES, STATE_CHUNK_BYTES};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub struct Link {
    core: Arc<Core>,
}

impl Link {
    pub fn new(core: Arc<Core>) -> Link {
        Link { core }
    }
}

/// The gRPC service, taking and sending messages up to [`MAX_MESSAGE_BYTES`] (tonic's
/// default of 4 MiB would refuse a large workload report or flow batch).
pub fn server(core: Arc<Core>) -> AgentLinkServer<Link> {
    AgentLinkServer::new(Link::new(core))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Sends one revision, in parts when it is large and the agent joins parts (`chunk`);
/// false when the agent is gone.
async fn send_state(
    tx: &mpsc::Sender<Result<DesiredState, Status>>,
    state: DesiredState,
    chunk: usize,
) -> bool {
    for part in split(state, chunk) {
        if tx.send(Ok(part)).await.is_err() {
            return false;
        }
    }
    true
}

fn status(e: Error) -> Status {
    match e {
        Error::BadInput { message, details } => {
            Status::invalid_argument(format!("{message} {}", details.join("; ")))
        }
        Error::NotFound(m) => Status::not_found(m),
        Error::Conflict(m) => Status::failed_precondition(m),
        e @ Error::Store(_) => Status::unavailable(e.to_string()),
        Error::Http { message, .. } => Status::invalid_argument(message),
    }
}

/// Who is calling: a node may only speak for itself, as its client certificate (under
/// mutual TLS) and its node token (when it has one) name it.
struct Caller {
    cert: Option<crate::tls::ClientCertificate>,
    bearer: Option<Bearer>,
}

impl Caller {
    fn of<T>(req: &Request<T>) -> Caller {
        let x = req.extensions();
        Caller {
            cert: x
                .get::<axum::extract::ConnectInfo<crate::tls::ClientCertificate>>()
                .map(|c| c.0.clone()),
            bearer: x.get::<Bearer>().cloned(),
        }
    }

    fn may_speak_for(&self, node: &str) -> Result<(), Status> {
        if self.cert.as_ref().is_some_and(|c| !c.allows_node(node)) {
            return Err(Status::permission_denied(format!(
                "the client certificate is not issued to node \"{node}\" (it needs a DNS subject alternative name \"{node}\")"
            )));
        }
        match &self.bearer {
            Some(Bearer::Node(n)) if n != node => Err(Status::permission_denied(format!(
                "this token is node \"{n}\"'s, not node \"{node}\"'s (microseg node-token {node})"
            ))),
            _ => Ok(()),
        }
    }
}

fn node_name(n: &str) -> Result<(), Status> {
    match check_name(n) {
        Some(e) => Err(Status::invalid_argument(format!("node: {e}"))),
        None => Ok(()),
    }
}

/// The rows as the agent on `node` receives them.
fn as_sent<'r>(rows: impl Iterator<Item = &'r Row>, node: &str) -> Result<Vec<Resource>, Error> {
    rows.map(|r| {
        Ok(Resource {
            kind: r.kind.clone(),
            name: r.name.clone(),
            json: for_node(r, node)?,
        })
    })
    .collect()
}

/// Counts the node's open streams while it lives.
struct Connected {
    core: Arc<Core>,
    node: String,
}

impl Drop for Connected {
    fn drop(&mut self) {
        if let Ok(mut s) = self.core.streams.lock() {
            if let Some(n) = s.get_mut(&self.node) {
                *n -= 1;
                if *n == 0 {
                    s.remove(&self.node);
                }
            }
        }
    }
}

async fn stream_state(
    core: Arc<Core>,
    node: String,
    accepts_parts: bool,
    tx: mpsc::Sender<Result<DesiredState, Status>>,
) {
    let chunk = if accepts_parts {
        STATE_CHUNK_BYTES
    } else {
        usize::MAX
    };
    if let Ok(mut s) = core.streams.lock() {
        *s.entry(node.clone()).or_default() += 1;
    }
    let _guard = Connected {
        core: core.clone(),
        node: node.clone(),
    };
    // Subscribe before reading, so no change between the read and the wait is missed.
    let mut rev_rx = core.rev.subscribe();
    let mut shutdown = core.shutdown.clone();
    let full = core
        .store
        .full()
        .await
        .and_then(|(rev, rows)| Ok((rev, as_sent(rows.iter(), &node)?)));
    let (rev, upserts) = match full {
        Ok(x) => x,
        Err(e) => {
            let _ = tx.send(Err(status(e))).await;
            return;
        }
    };
    let full = DesiredState {
        revision: rev,
        full: true,
        upserts,
        deletes: Vec::new(),
        more: false,
    };
    tracing::info!(
        node,
        revision = rev,
        resources = full.upserts.len(),
        "sending the full state"
    );
    if !send_state(&tx, full, chunk).await {
        return;
    }
    let mut last = rev;
    let mut touch = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            r = rev_rx.changed() => if r.is_err() { return },
            _ = touch.tick() => {
                let _ = core.store.touch_node(&node, now()).await;
                continue;
            }
            _ = tx.closed() => return,
            _ = shutdown.changed() => return,
        }
        if *rev_rx.borrow_and_update() <= last {
            continue;
        }
        let changed = core.store.since(last).await.and_then(|rows| {
            let upserts = as_sent(rows.iter().filter(|r| !r.deleted), &node)?;
            Ok((rows, upserts))
        });
        let (rows, upserts) = match changed {
            Ok(x) => x,
            Err(e) => {
                let _ = tx.send(Err(status(e))).await;
                return;
            }
        };
        let Some(max) = rows.iter().map(|r| r.revision).max() else {
            continue;
        };
        let delta = DesiredState {
            revision: max,
            full: false,
            upserts,
            deletes: rows
                .iter()
                .filter(|r| r.deleted)
                .map(|r| ResourceRef {
                    kind: r.kind.clone(),
                    name: r.name.clone(),
                })
                .collect(),
            more: false,
        };
        tracing::debug!(
            node,
            revision = max,
            upserts = delta.upserts.len(),
            deletes = delta.deletes.len(),
            "sending a delta"
        );
        if !send_state(&tx, delta, chunk).await {
            return;
        }
        last = max;
    }
}

type StateStream = Pin<Box<dyn Stream<Item = Result<DesiredState, Status>> + Send>>;

#[tonic::async_trait]
impl AgentLink for Link {
    type SyncStream = StateStream;

    async fn sync(&self, req: Request<SyncRequest>) -> Result<Response<Self::SyncStream>, Status> {
        let caller = Caller::of(&req);
        caller.may_speak_for(&req.get_ref().node)?;
        let r = req.into_inner();
        node_name(&r.node)?;
        if caller.bearer == Some(Bearer::Agent) {
            tracing::warn!(
                node = r.node,
                "the node uses the shared agent token, which can speak for any node; give it \
                 its own: microseg node-token {}",
                r.node
            );
        }
        self.core
            .store
            .touch_node(&r.node, now())
            .await
            .map_err(status)?;
        tracing::info!(
            node = r.node,
            revision = r.revision,
            "node connected (it enforces that revision)"
        );
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(stream_state(self.core.clone(), r.node, r.accepts_parts, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn ack(&self, req: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        Caller::of(&req).may_speak_for(&req.get_ref().node)?;
        let r = req.into_inner();
        node_name(&r.node)?;
        if !r.error.is_empty() {
            tracing::warn!(
                node = r.node,
                revision = r.revision,
                error = r.error,
                "node failed to enforce a revision"
            );
        }
        self.core
            .store
            .ack(&r.node, r.revision, &r.error, now())
            .await
            .map_err(status)?;
        Ok(Response::new(AckResponse {}))
    }

    async fn report_workloads(
        &self,
        req: Request<WorkloadReport>,
    ) -> Result<Response<ReportResponse>, Status> {
        Caller::of(&req).may_speak_for(&req.get_ref().node)?;
        let r = req.into_inner();
        node_name(&r.node)?;
        self.core
            .store
            .touch_node(&r.node, now())
            .await
            .map_err(status)?;
        self.core
            .report(&r.node, r.workloads)
            .await
            .map_err(status)?;
        Ok(Response::new(ReportResponse {}))
    }

    async fn upload_flows(
        &self,
        req: Request<Streaming<FlowBatch>>,
    ) -> Result<Response<UploadResponse>, Status> {
        let caller = Caller::of(&req);
        let mut s = req.into_inner();
        let mut accepted = 0;
        // Answered once queued, not stored: the agent sends its next batch after it.
        while let Some(batch) = s.message().await? {
            caller.may_speak_for(&batch.node)?;
            node_name(&batch.node)?;
            let node = batch.node.clone();
            accepted += self.core.add_flows(&node, batch).await;
        }
        Ok(Response::new(UploadResponse { accepted }))
    }
}
