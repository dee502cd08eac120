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
    /// What the record reports: `new` (first packet or re-judged), `deny`, `log`, `end`.
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
        _ => "unknown",
    }
}

pub use microseg_common::time::rfc3339;

/// The monotonic and wall clocks read once, to date a batch of events.
#[derive(Clone, Copy)]
pub struct Clock {
    mono_ns: u64,
    wall_s: f64,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            mono_ns: microseg_dataplane::sessions::monotonic_ns(),
            wall_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64(),
        }
    }

    /// Seconds since the epoch of a kernel monotonic timestamp.
    pub fn wall(&self, mono_ns: u64) -> f64 {
        self.wall_s - self.mono_ns.saturating_sub(mono_ns) as f64 / 1e9
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

    /// The event with the names it has now. Nothing is formatted here: the agent keeps
    /// tens of thousands of flows a second, and most are never looked at.
    pub fn flow(&self, e: &FlowEvent, clock: &Clock) -> Flow {
        let audit = verdict_name(e.audit_verdict).is_some() && e.audit_rule_id != RULE_NONE;
        Flow {
            event: *e,
            unix_time: clock.wall(e.time_ns),
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

fn default_deny() -> Arc<str> {
    static NAME: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    NAME.get_or_init(|| Arc::from(microseg_policy::DEFAULT_DENY))
        .clone()
}

/// A flow as kept: the kernel's event and the names it had when it came.
#[derive(Clone, Debug)]
pub struct Flow {
    event: FlowEvent,
    unix_time: f64,
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
            time: rfc3339(self.unix_time),
            node: node.to_string(),
            workload: match &self.workload {
                Some(w) => w.to_string(),
                None => format!("ifindex-{}", e.ifindex),
            },
            direction: if e.direction == microseg_common::direction::EGRESS {
                "egress"
            } else {
                "ingress"
            }
            .into(),
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
            unix_time: self.unix_time,
        }
    }
}

/// The most recent flows, bounded, with a feed for followers.
pub struct FlowLog {
    recent: VecDeque<Flow>,
    capacity: usize,
    /// Reported in every record.
    node: String,
    feed: broadcast::Sender<FlowRecord>,
}

impl FlowLog {
    pub fn new(capacity: usize, node: &str) -> FlowLog {
        FlowLog {
            recent: VecDeque::with_capacity(capacity.min(65_536)),
            capacity: capacity.max(1),
            node: node.to_string(),
            feed: broadcast::channel(4096).0,
        }
    }

    pub fn push(&mut self, f: Flow) {
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
