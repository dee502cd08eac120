//! One simulated node: its own gRPC link and node token, speaking the agent protocol as
//! crates/microseg-agent/src/managed.rs does (report, sync with parts, ack every revision,
//! upload flows), and logging what it received and acked, timestamped (docs/FLEETSIM.md).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::churn::Churn;
use microseg_proto::parts::Joiner;
use microseg_proto::prost::Message;
use microseg_proto::v1::{
    agent_link_client::AgentLinkClient, AckRequest, DiscoveredWorkload, Flow, FlowBatch,
    SyncRequest, WorkloadReport,
};
use microseg_proto::{MAX_MESSAGE_BYTES, STORE_HEADER};
use tokio::sync::watch;
use tonic::codegen::tokio_stream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A revision as one node received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub revision: u64,
    pub full: bool,
    /// Sum of the encoded sizes of its messages (parts).
    pub bytes: u64,
    pub received: Instant,
    /// When the Ack call for it returned.
    pub acked: Option<Instant>,
}

#[derive(Default)]
pub struct NodeLog {
    pub revisions: Vec<Received>,
    /// (when, what) for every failed call or broken stream.
    pub errors: Vec<(Instant, String)>,
}

/// What every node shares with the driver: the logs, plus atomics the driver polls.
pub struct Fleet {
    pub logs: Vec<Mutex<NodeLog>>,
    /// The last revision each node acked (0: none yet).
    pub acked: Vec<AtomicU64>,
    /// How many streams each node has joined and acked the first revision of (a full
    /// state, or what changed since the revision it held when it resumed).
    pub fulls: Vec<AtomicU64>,
    /// The controller's store each node's revision counts in (0: none yet).
    pub stores: Vec<AtomicU64>,
    pub connects: AtomicUsize,
    pub flows_sent: Arc<AtomicU64>,
    /// Churn: reports with replaced workloads that the controller took, and failed.
    pub churn_reports: AtomicU64,
    pub churn_failed: AtomicU64,
}

impl Fleet {
    pub fn new(n: usize) -> Fleet {
        Fleet {
            logs: (0..n).map(|_| Mutex::default()).collect(),
            acked: (0..n).map(|_| AtomicU64::new(0)).collect(),
            fulls: (0..n).map(|_| AtomicU64::new(0)).collect(),
            stores: (0..n).map(|_| AtomicU64::new(0)).collect(),
            connects: AtomicUsize::new(0),
            flows_sent: Arc::default(),
            churn_reports: AtomicU64::new(0),
            churn_failed: AtomicU64::new(0),
        }
    }

    fn error(&self, i: usize, e: String) {
        self.logs[i]
            .lock()
            .unwrap()
            .errors
            .push((Instant::now(), e));
    }
}

pub struct NodeSpec {
    pub index: usize,
    pub name: String,
    pub token: String,
    pub workloads: Vec<DiscoveredWorkload>,
    /// Churn steps asked of this node so far (docs/FLEETSIM.md "Churn").
    pub churn: watch::Receiver<u64>,
}

#[derive(Clone)]
pub struct SimConfig {
    pub url: String,
    /// Flow records per second per node (0: none).
    pub flow_rate: u32,
    /// None: wait as long as it takes, as `microseg agent` does.
    pub call_timeout: Option<Duration>,
    /// Resync from the revision held (as the agent does); false: always ask for a full state.
    pub resume: bool,
}

/// `m` workloads of node `i`, each with labels and one address unique in the fleet: the
/// first 250 in 10.0.0.0/8 (`10.<i/256>.<i%256>.<j+1>`), the next in 100.64.0.0/10
/// (unique for i < 4096 and j < 1024).
pub fn workloads(i: usize, m: usize) -> Vec<DiscoveredWorkload> {
    (0..m)
        .map(|j| {
            let ip = if j < 250 {
                std::net::Ipv4Addr::from(0x0a00_0000 + ((i as u32) << 8) + j as u32 + 1)
            } else {
                std::net::Ipv4Addr::from(0x6440_0000 + ((i as u32) << 10) + j as u32)
            };
            DiscoveredWorkload {
                name: format!("w{j}"),
                interface: format!("veth{j}"),
                ips: vec![ip.to_string()],
                labels: [
                    ("app".to_string(), format!("app{}", j % 10)),
                    ("tier".to_string(), format!("t{}", j % 3)),
                ]
                .into_iter()
                .collect(),
            }
        })
        .collect()
}

#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Client = AgentLinkClient<InterceptedService<Channel, Bearer>>;

/// Runs the node until aborted: a session, and a new one after a break (backoff as the
/// agent's: 250 ms doubling to 5 s) or at once when `storm` changes.
pub async fn run(
    cfg: Arc<SimConfig>,
    spec: NodeSpec,
    fleet: Arc<Fleet>,
    storm: watch::Receiver<u64>,
) {
    let mut storm = storm;
    let mut backoff = Duration::from_millis(250);
    let mut churn = Churn::new(spec.index, spec.workloads.clone());
    let mut steps = spec.churn.clone();
    loop {
        storm.borrow_and_update();
        match session(&cfg, &spec, &fleet, &mut storm, &mut churn, &mut steps).await {
            Ok(()) => {
                backoff = Duration::from_millis(250);
                continue;
            }
            Err(e) => fleet.error(spec.index, e),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = storm.changed() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if fleet.acked[spec.index].load(Ordering::Relaxed) > 0 {
            // As the agent: a node that got as far as a revision retries within 1 s.
            backoff = backoff.min(Duration::from_secs(1));
        }
    }
}

async fn connect(cfg: &SimConfig, spec: &NodeSpec) -> Result<Client, String> {
    connect_token(cfg, &spec.token).await
}

/// A link with `token` as its bearer.
pub async fn connect_token(cfg: &SimConfig, token: &str) -> Result<Client, String> {
    let channel = Endpoint::from_shared(cfg.url.clone())
        .map_err(|e| format!("url: {e}"))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Some(Duration::from_secs(10)))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| "token not valid in a header".to_string())?;
    Ok(AgentLinkClient::with_interceptor(channel, Bearer(bearer))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

fn status(call: &str) -> impl FnOnce(tonic::Status) -> String + '_ {
    move |s| format!("{call}: {:?}: {}", s.code(), s.message())
}

async fn timed<T>(
    limit: Option<Duration>,
    call: &str,
    f: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, String> {
    let Some(limit) = limit else {
        return f.await.map_err(status(call));
    };
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(status(call)),
        Err(_) => Err(format!("{call}: no answer within {limit:?}")),
    }
}

/// One connected stretch. Ok when a storm asked for a reconnect.
async fn session(
    cfg: &SimConfig,
    spec: &NodeSpec,
    fleet: &Fleet,
    storm: &mut watch::Receiver<u64>,
    churn: &mut Churn,
    steps: &mut watch::Receiver<u64>,
) -> Result<(), String> {
    let i = spec.index;
    let mut client = connect(cfg, spec).await?;
    fleet.connects.fetch_add(1, Ordering::Relaxed);
    churn.advance(*steps.borrow_and_update());
    let report = WorkloadReport {
        node: spec.name.clone(),
        workloads: churn.current(),
    };
    timed(cfg.call_timeout, "report", client.report_workloads(report)).await?;
    let mut sync = tonic::Request::new(SyncRequest {
        node: spec.name.clone(),
        revision: fleet.acked[i].load(Ordering::Relaxed),
        accepts_parts: true,
    });
    let held = fleet.stores[i].load(Ordering::Relaxed);
    if cfg.resume && held != 0 {
        let v = held.to_string().parse().expect("digits");
        sync.metadata_mut().insert(STORE_HEADER, v);
    }
    let answer = timed(cfg.call_timeout, "sync", client.sync(sync)).await?;
    let store: u64 = answer
        .metadata()
        .get(STORE_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let mut stream = answer.into_inner();
    let mut first = true;
    let uploads = (cfg.flow_rate > 0).then(|| {
        tokio::spawn(upload(
            client.clone(),
            spec.name.clone(),
            spec.workloads.clone(),
            cfg.flow_rate,
            cfg.call_timeout,
            fleet.flows_sent.clone(),
        ))
    });
    let _abort = AbortOnDrop(uploads);
    let mut joiner = Joiner::default();
    let mut bytes = 0u64;
    loop {
        let part = tokio::select! {
            m = stream.message() => match m {
                Ok(Some(part)) => part,
                Ok(None) => return Err("stream ended by the controller".into()),
                Err(s) => return Err(status("stream")(s)),
            },
            _ = storm.changed() => return Ok(()),
            Ok(()) = steps.changed() => {
                if churn.advance(*steps.borrow_and_update()) {
                    let report = WorkloadReport {
                        node: spec.name.clone(),
                        workloads: churn.current(),
                    };
                    let r = timed(cfg.call_timeout, "churn report", client.report_workloads(report)).await;
                    let counter = if r.is_ok() { &fleet.churn_reports } else { &fleet.churn_failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    r?;
                }
                continue;
            }
        };
        bytes += part.encoded_len() as u64;
        let whole = joiner.push(part).map_err(|e| format!("parts: {e}"))?;
        let Some(state) = whole else { continue };
        let mut got = Received {
            revision: state.revision,
            full: state.full,
            bytes: std::mem::take(&mut bytes),
            received: Instant::now(),
            acked: None,
        };
        drop(state);
        let ack = AckRequest {
            node: spec.name.clone(),
            revision: got.revision,
            error: String::new(),
        };
        let acked = timed(cfg.call_timeout, "ack", client.ack(ack)).await;
        if acked.is_ok() {
            got.acked = Some(Instant::now());
            fleet.acked[i].store(got.revision, Ordering::Release);
            if got.full {
                fleet.stores[i].store(store, Ordering::Release);
            }
            if first {
                fleet.fulls[i].fetch_add(1, Ordering::Release);
            }
            first = false;
        }
        fleet.logs[i].lock().unwrap().revisions.push(got);
        acked?;
    }
}

struct AbortOnDrop(Option<tokio::task::JoinHandle<Result<(), String>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Sends `rate` made-up flow records a second, one batch a second, each after the last
/// was taken (as the agent does).
async fn upload(
    mut client: Client,
    node: String,
    workloads: Vec<DiscoveredWorkload>,
    rate: u32,
    limit: Option<Duration>,
    sent: Arc<AtomicU64>,
) -> Result<(), String> {
    if workloads.is_empty() {
        return Ok(());
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let flows: Vec<Flow> = (0..rate)
            .map(|k| {
                seq += 1;
                let w = &workloads[k as usize % workloads.len().max(1)];
                Flow {
                    time_us: now,
                    start_us: now - 1_000_000,
                    end_us: Some(now),
                    workload: w.name.clone(),
                    direction: "ingress".into(),
                    src_ip: "192.0.2.1".into(),
                    dst_ip: w.ips.first().cloned().unwrap_or_default(),
                    src_port: 1024 + (seq % 60000) as u32,
                    dst_port: 443,
                    protocol: 6,
                    verdict: "allow".into(),
                    packets: 10,
                    bytes: 1000,
                    ..Default::default()
                }
            })
            .collect();
        let batch = FlowBatch {
            node: node.clone(),
            flows_json: Vec::new(),
            flows,
            dropped_total: 0,
        };
        timed(
            limit,
            "upload",
            client.upload_flows(tokio_stream::iter([batch])),
        )
        .await?;
        sent.fetch_add(u64::from(rate), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_address_in_the_fleet_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for i in [0, 1, 255, 256, 1999] {
            for w in workloads(i, 300) {
                assert_eq!(w.ips.len(), 1);
                assert!(seen.insert(w.ips[0].clone()), "{} twice", w.ips[0]);
            }
        }
    }
}
