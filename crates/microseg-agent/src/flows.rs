//! Flow records: what the kernel's events mean to a user, in the contract's JSON shape.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use microseg_common::{
    event_kind, proto, tables::words_addr, verdict, FlowEvent, RULE_DEFAULT_DENY, RULE_NONE,
};
use microseg_policy::compile::RuleInfo;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// One flow, as `microseg flows -o json` prints it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlowRecord {
    pub time: String,
    pub node: String,
    pub workload: String,
    pub direction: String,
    pub src_ip: String,
    pub dst_ip: String,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: serde_json::Value,
    pub verdict: String,
    pub policy: Option<String>,
    pub rule: Option<u32>,
    pub audit_verdict: Option<String>,
    pub audit_policy: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    /// What the record reports: `new` (first packet or re-judged), `deny`, `log`, `audit`,
    /// `active` (a lasting connection, reported again), `end`.
    pub event: String,
    /// Seconds since the Unix epoch, for filtering by age.
    #[serde(skip)]
    pub unix_time: f64,
}

pub fn verdict_name(v: u8) -> Option<&'static str> {
    match v {
        verdict::ALLOW => Some("allow"),
        verdict::DENY => Some("deny"),
        verdict::LOG => Some("log"),
        verdict::AUDIT => Some("audit"),
        _ => None,
    }
}

pub fn protocol_json(p: u8) -> serde_json::Value {
    match p {
        proto::TCP => "TCP".into(),
        proto::UDP => "UDP".into(),
        proto::ICMP => "ICMP".into(),
        proto::ICMPV6 => "ICMPv6".into(),
        n => n.into(),
    }
}

fn event_name(kind: u8, verdict: u8) -> &'static str {
    match kind {
        event_kind::NEW => "new",
        // Later packets of an audit-mode workload's denied flow: reported, not dropped.
        event_kind::DENY if verdict == verdict::AUDIT => "audit",
        event_kind::DENY => "deny",
        event_kind::LOG => "log",
        event_kind::END => "end",
        event_kind::ACTIVE => "active",
        _ => "unknown",
    }
}

pub use microseg_common::time::rfc3339;

/// Turns the kernel's monotonic timestamps into wall-clock time by one offset between the
/// two clocks, read once per agent in whole microseconds: every report of a connection then
/// carries the same `start` (a fresh reading per batch moved it by a microsecond now and
/// then, and the store tells connections apart by it).
#[derive(Clone, Copy)]
pub struct Clock {
    offset_us: i64,
}

impl Clock {
    pub fn now() -> Clock {
        static OFFSET_US: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        let offset_us = *OFFSET_US.get_or_init(|| {
            let mono_us = (microseg_dataplane::sessions::monotonic_ns() / 1_000) as i64;
            let wall_us = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_micros() as i64;
            wall_us - mono_us
        });
        Clock { offset_us }
    }

    /// Microseconds since the epoch of a kernel monotonic timestamp.
    pub fn wall_us(&self, mono_ns: u64) -> i64 {
        self.offset_us + (mono_ns / 1_000) as i64
    }
}

/// What the agent knows to name an event's parts.
pub struct Names<'a> {
    pub endpoints: &'a BTreeMap<u32, Arc<str>>,
    pub rules: &'a BTreeMap<u32, RuleInfo>,
}

impl Names<'_> {
    fn policy(&self, rule_id: u32) -> Option<Arc<str>> {
        match rule_id {
            RULE_DEFAULT_DENY => Some(default_deny()),
            id => self.rules.get(&id).map(|r| r.policy.clone()),
        }
    }

    /// The event's flows with the names they have now: one, or for a report of a whole
    /// connection (`END`, `ACTIVE`) one per local leg. Nothing is formatted here: the agent
    /// keeps tens of thousands of flows a second, and most are never looked at.
    pub fn flows(&self, e: &FlowEvent, clock: &Clock) -> impl Iterator<Item = Flow> {
        let whole = matches!(e.kind, event_kind::END | event_kind::ACTIVE);
        let other = (whole && e.other.ifindex != 0).then(|| other_leg(e));
        [
            Some(self.flow(e, clock)),
            other.map(|o| self.flow(&o, clock)),
        ]
        .into_iter()
        .flatten()
    }

    fn flow(&self, e: &FlowEvent, clock: &Clock) -> Flow {
        let audit = verdict_name(e.audit_verdict).is_some() && e.audit_rule_id != RULE_NONE;
        Flow {
            event: *e,
            time_us: clock.wall_us(e.time_ns),
            start_us: clock.wall_us(e.start_ns),
            workload: self.endpoints.get(&e.ifindex).cloned(),
            policy: self.policy(e.rule_id),
            rule: self.rules.get(&e.rule_id).map(|r| r.index),
            audit_policy: if audit {
                self.policy(e.audit_rule_id)
            } else {
                None
            },
        }
    }
}

/// The event as its other leg tells it: that leg's interface, direction and judgement.
fn other_leg(e: &FlowEvent) -> FlowEvent {
    let o = e.other;
    FlowEvent {
        ifindex: o.ifindex,
        rule_id: o.rule_id,
        audit_rule_id: o.audit_rule_id,
        peer_identity: o.peer_identity,
        verdict: o.verdict,
        audit_verdict: o.audit_verdict,
        direction: e.direction ^ 1,
        other: microseg_common::EventLeg {
            ifindex: e.ifindex,
            rule_id: e.rule_id,
            audit_rule_id: e.audit_rule_id,
            peer_identity: e.peer_identity,
            verdict: e.verdict,
            audit_verdict: e.audit_verdict,
            _pad: [0; 2],
        },
        ..*e
    }
}

fn default_deny() -> Arc<str> {
    static NAME: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    NAME.get_or_init(|| Arc::from(microseg_policy::DEFAULT_DENY))
        .clone()
}

/// A flow as kept: the kernel's event and the names it had when it came.
#[derive(Clone, Debug)]
pub struct Flow {
    event: FlowEvent,
    /// When it was reported, and when the connection began: microseconds since the epoch.
    time_us: i64,
    start_us: i64,
    workload: Option<Arc<str>>,
    policy: Option<Arc<str>>,
    rule: Option<u32>,
    audit_policy: Option<Arc<str>>,
}

impl Flow {
    /// The flow as users see it, reported by `node`.
    pub fn record(&self, node: &str) -> FlowRecord {
        let e = &self.event;
        FlowRecord {
            time: rfc3339(self.unix_time()),
            node: node.to_string(),
            workload: self.workload_name(),
            direction: direction_name(e.direction).into(),
            src_ip: words_addr(e.src_addr).to_string(),
            dst_ip: words_addr(e.dst_addr).to_string(),
            src_port: e.src_port,
            dst_port: e.dst_port,
            protocol: protocol_json(e.protocol),
            verdict: verdict_name(e.verdict).unwrap_or("allow").to_string(),
            policy: self.policy.as_deref().map(str::to_string),
            rule: self.rule,
            audit_policy: self.audit_policy.as_deref().map(str::to_string),
            audit_verdict: verdict_name(e.audit_verdict).map(str::to_string),
            packets: e.packets,
            bytes: e.bytes,
            event: event_name(e.kind, e.verdict).into(),
            unix_time: self.unix_time(),
        }
    }
}

impl Flow {
    /// The flow as the agent link carries it to the controller (which adds the names and
    /// labels of both ends).
    pub fn to_proto(&self) -> microseg_proto::v1::Flow {
        let e = &self.event;
        microseg_proto::v1::Flow {
            time_us: self.time_us,
            start_us: self.start_us.min(self.time_us),
            end_us: (e.kind == event_kind::END).then_some(self.time_us),
            workload: self.workload_name(),
            direction: direction_name(e.direction).into(),
            src_ip: words_addr(e.src_addr).to_string(),
            dst_ip: words_addr(e.dst_addr).to_string(),
            src_port: e.src_port.into(),
            dst_port: e.dst_port.into(),
            protocol: e.protocol.into(),
            verdict: verdict_name(e.verdict).unwrap_or("allow").into(),
            policy: self.policy.as_deref().map(str::to_string),
            rule: self.rule,
            audit_verdict: verdict_name(e.audit_verdict).map(str::to_string),
            audit_policy: self.audit_policy.as_deref().map(str::to_string),
            packets: e.packets,
            bytes: e.bytes,
        }
    }

    fn unix_time(&self) -> f64 {
        self.time_us as f64 / 1e6
    }

    fn workload_name(&self) -> String {
        match &self.workload {
            Some(w) => w.to_string(),
            None => format!("ifindex-{}", self.event.ifindex),
        }
    }
}

fn direction_name(d: u8) -> &'static str {
    if d == microseg_common::direction::EGRESS {
        "egress"
    } else {
        "ingress"
    }
}

/// Flows waiting to go to the controller, oldest first. Bounded: while the link is down
/// or the controller slow, what does not fit is dropped and counted, and the backlog goes
/// out once the link is back.
pub struct UploadQueue {
    waiting: VecDeque<Flow>,
    capacity: usize,
    dropped: u64,
}

impl UploadQueue {
    pub fn new(capacity: usize) -> UploadQueue {
        UploadQueue {
            waiting: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    fn push(&mut self, f: &Flow) {
        if self.waiting.len() < self.capacity {
            self.waiting.push_back(f.clone());
        } else {
            self.dropped += 1;
        }
    }

    /// The oldest `max` waiting, to send; they stay until [`UploadQueue::sent`].
    pub fn batch(&self, max: usize) -> Vec<microseg_proto::v1::Flow> {
        self.waiting.iter().take(max).map(Flow::to_proto).collect()
    }

    /// The oldest `n` reached the controller.
    pub fn sent(&mut self, n: usize) {
        self.waiting.drain(..n.min(self.waiting.len()));
    }

    pub fn backlog(&self) -> usize {
        self.waiting.len()
    }

    /// Dropped since the agent started because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The most recent flows, bounded, with a feed for followers and, for a managed agent,
/// the queue of flows to upload.
pub struct FlowLog {
    recent: VecDeque<Flow>,
    capacity: usize,
    upload: Option<UploadQueue>,
    /// Reported in every record.
    node: String,
    feed: broadcast::Sender<FlowRecord>,
}

impl FlowLog {
    pub fn new(capacity: usize, node: &str) -> FlowLog {
        FlowLog {
            recent: VecDeque::with_capacity(capacity.min(65_536)),
            capacity: capacity.max(1),
            upload: None,
            node: node.to_string(),
            feed: broadcast::channel(4096).0,
        }
    }

    /// From now on every flow is also queued for the controller.
    pub fn upload_to_controller(&mut self, capacity: usize) {
        self.upload
            .get_or_insert_with(|| UploadQueue::new(capacity));
    }

    pub fn upload(&mut self) -> Option<&mut UploadQueue> {
        self.upload.as_mut()
    }

    pub fn push(&mut self, f: Flow) {
        if let Some(q) = &mut self.upload {
            q.push(&f);
        }
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        // Formatted for followers only when there are any.
        if self.feed.receiver_count() > 0 {
            let _ = self.feed.send(f.record(&self.node));
        }
        self.recent.push_back(f);
    }

    /// A copy of the kept flows, oldest first, and the node they are reported by: to be
    /// formatted without holding up whoever pushes new ones.
    pub fn copy(&self) -> (Vec<Flow>, String) {
        (self.recent.iter().cloned().collect(), self.node.clone())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FlowRecord> {
        self.feed.subscribe()
    }
}

/// Which flows a client asked for.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlowFilter {
    pub verdict: Option<String>,
    pub workload: Option<String>,
    /// Only flows newer than this many seconds.
    pub since_s: Option<f64>,
}

impl FlowFilter {
    pub fn matches(&self, r: &FlowRecord) -> bool {
        self.verdict
            .as_ref()
            .is_none_or(|v| v.eq_ignore_ascii_case(&r.verdict))
            && self.workload.as_ref().is_none_or(|w| w == &r.workload)
            && self.since_s.is_none_or(|s| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO);
                r.unix_time >= now.as_secs_f64() - s
            })
    }
}
