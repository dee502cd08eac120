//! The AgentLink gRPC service: desired state down (`sync_stream.rs`: full, then deltas,
//! each in parts when large), acks, discovered workloads and flows up.

use crate::auth::Bearer;
use crate::core::{now, Core};
use crate::error::Error;
use crate::sync_stream::{stream_state, Start};
use microseg_policy::check_name;
use microseg_proto::v1::agent_link_server::{AgentLink, AgentLinkServer};
use microseg_proto::v1::{
    AckRequest, AckResponse, DesiredState, FlowBatch, ReportResponse, SyncRequest, UploadResponse,
    WorkloadReport,
};
use microseg_proto::MAX_MESSAGE_BYTES;
use std::pin::Pin;
use std::sync::Arc;
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

fn status(e: Error) -> Status {
    match e {
        Error::BadInput { message, details } => {
            Status::invalid_argument(format!("{message} {}", details.join("; ")))
        }
        Error::NotFound(m) => Status::not_found(m),
        Error::Conflict(m) => Status::failed_precondition(m),
        e @ Error::Store(_) => Status::unavailable(e.to_string()),
        // 413: more than the controller takes (a report over the workload limit).
        Error::Http {
            status: 413,
            message,
            ..
        } => Status::resource_exhausted(message),
        Error::Http {
            status: 503,
            message,
            ..
        } => Status::unavailable(message),
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

/// The gRPC metadata that names the controller's store: sent with the first answer of
/// `Sync`, and by an agent that resyncs with the revision it holds (docs/CONTROLLER.md,
/// "The agent link").
pub const STORE_HEADER: &str = microseg_proto::STORE_HEADER;

fn resumes_in(m: &tonic::metadata::MetadataMap) -> Option<u64> {
    m.get(STORE_HEADER)?.to_str().ok()?.parse().ok()
}

fn node_name(n: &str) -> Result<(), Status> {
    match check_name(n) {
        Some(e) => Err(Status::invalid_argument(format!("node: {e}"))),
        None => Ok(()),
    }
}

type StateStream = Pin<Box<dyn Stream<Item = Result<DesiredState, Status>> + Send>>;

#[tonic::async_trait]
impl AgentLink for Link {
    type SyncStream = StateStream;

    async fn sync(&self, req: Request<SyncRequest>) -> Result<Response<Self::SyncStream>, Status> {
        let caller = Caller::of(&req);
        caller.may_speak_for(&req.get_ref().node)?;
        let metadata = req.metadata().clone();
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
        self.core.touch(&r.node).await.map_err(status)?;
        tracing::info!(
            node = r.node,
            revision = r.revision,
            "node connected (it enforces that revision)"
        );
        let store_id = self.core.store.store_id();
        // The agent's revision counts in this store: it gets what changed since.
        let resume_from =
            (resumes_in(&metadata) == Some(store_id) && r.revision > 0).then_some(r.revision);
        let (tx, rx) = mpsc::channel(2);
        let start = Start {
            node: r.node,
            accepts_parts: r.accepts_parts,
            resume_from,
        };
        tokio::spawn(stream_state(self.core.clone(), start, tx, status));
        let mut answer: Response<Self::SyncStream> =
            Response::new(Box::pin(ReceiverStream::new(rx)));
        answer
            .metadata_mut()
            .insert(STORE_HEADER, store_id.to_string().parse().expect("digits"));
        Ok(answer)
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
        let ack = crate::store::AckRow {
            node: r.node,
            revision: r.revision,
            error: r.error,
            now: now(),
        };
        self.core.ack(ack).await.map_err(status)?;
        Ok(Response::new(AckResponse {}))
    }

    async fn report_workloads(
        &self,
        req: Request<WorkloadReport>,
    ) -> Result<Response<ReportResponse>, Status> {
        Caller::of(&req).may_speak_for(&req.get_ref().node)?;
        let r = req.into_inner();
        node_name(&r.node)?;
        self.core.touch(&r.node).await.map_err(status)?;
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
