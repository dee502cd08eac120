//! A flow record: one connection seen at one workload, in one direction, as reported.

use crate::time::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub time: Timestamp,
    pub node: String,
    /// The workload that judged the connection (and reported it).
    pub workload: String,
    pub direction: Direction,
    pub src_ip: String,
    pub dst_ip: String,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: Protocol,
    pub verdict: Verdict,
    pub policy: Option<String>,
    pub rule: Option<u32>,
    pub audit_verdict: Option<String>,
    pub audit_policy: Option<String>,
    /// Seen so far on this connection (a re-report carries larger ones).
    pub packets: u64,
    pub bytes: u64,
    /// Workload names, or `None` for an address that is no workload.
    pub src_workload: Option<String>,
    pub dst_workload: Option<String>,
    /// The labels as they were when the flow happened.
    pub src_labels: Labels,
    pub dst_labels: Labels,
    pub start: Timestamp,
    /// `None` while the connection is open.
    pub end: Option<Timestamp>,
}

impl FlowRecord {
    /// One number per connection leg: every re-report of the connection at this workload
    /// and direction has the same one (FNV-1a over node, workload, direction, 5-tuple and
    /// start), so edges count it once.
    pub fn connection_id(&self) -> i64 {
        let mut h = Fnv::new();
        h.eat(self.node.as_bytes());
        h.eat(self.workload.as_bytes());
        h.eat(self.direction.as_str().as_bytes());
        h.eat(self.src_ip.as_bytes());
        h.eat(self.dst_ip.as_bytes());
        h.eat(&self.src_port.to_be_bytes());
        h.eat(&self.dst_port.to_be_bytes());
        h.eat(&[self.protocol.0]);
        h.eat(&self.start.0.to_be_bytes());
        h.0 as i64
    }

    /// One number per edge: source and destination (workload name, or address),
    /// protocol, destination port, verdict and policy.
    pub fn edge_id(&self) -> i64 {
        let mut h = Fnv::new();
        for (workload, ip) in [
            (&self.src_workload, &self.src_ip),
            (&self.dst_workload, &self.dst_ip),
        ] {
            match workload {
                Some(w) => h.eat(b"w").eat(w.as_bytes()),
                None => h.eat(b"a").eat(ip.as_bytes()),
            };
        }
        h.eat(&[self.protocol.0]);
        h.eat(&self.dst_port.to_be_bytes());
        h.eat(self.verdict.as_str().as_bytes());
        h.eat(self.policy.as_deref().unwrap_or("").as_bytes());
        h.0 as i64
    }
}

/// FNV-1a, each field followed by a byte no UTF-8 text holds, so that fields cannot run
/// into each other.
pub(crate) struct Fnv(pub u64);

impl Fnv {
    pub(crate) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn eat(&mut self, bytes: &[u8]) -> &mut Fnv {
        for b in bytes.iter().chain(std::iter::once(&0xff)) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "ingress" => Some(Direction::Ingress),
            "egress" => Some(Direction::Egress),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
    Log,
    Audit,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [Verdict::Allow, Verdict::Deny, Verdict::Log, Verdict::Audit];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Log => "log",
            Verdict::Audit => "audit",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// An IP protocol number; JSON names TCP, UDP, ICMP and ICMPv6 and gives others as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Protocol(pub u8);

impl Protocol {
    pub const ICMP: Protocol = Protocol(1);
    pub const TCP: Protocol = Protocol(6);
    pub const UDP: Protocol = Protocol(17);
    pub const ICMPV6: Protocol = Protocol(58);

    pub fn name(self) -> Option<&'static str> {
        match self.0 {
            1 => Some("ICMP"),
            6 => Some("TCP"),
            17 => Some("UDP"),
            58 => Some("ICMPv6"),
            _ => None,
        }
    }

    /// A name (any case) or a number 0-255.
    pub fn parse(s: &str) -> Option<Protocol> {
        for p in [
            Protocol::ICMP,
            Protocol::TCP,
            Protocol::UDP,
            Protocol::ICMPV6,
        ] {
            if p.name().is_some_and(|n| n.eq_ignore_ascii_case(s)) {
                return Some(p);
            }
        }
        s.parse().ok().map(Protocol)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(n) => s.serialize_str(n),
            None => s.serialize_u8(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u8),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Protocol(n)),
            Raw::Name(s) => Protocol::parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "protocol {s:?}: TCP, UDP, ICMP, ICMPv6 or a number 0-255"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let text = r#"{"time":"2026-12-07T10:00:00.000000Z","node":"n1","workload":"web-1",
            "direction":"egress","src_ip":"10.0.0.1","dst_ip":"10.0.0.2","src_port":40000,
            "dst_port":5432,"protocol":"TCP","verdict":"allow","policy":"db","rule":0,
            "audit_verdict":null,"audit_policy":null,"packets":3,"bytes":180,
            "src_workload":"web-1","dst_workload":null,"src_labels":{"app":"web"},
            "dst_labels":{},"start":"2026-12-07T09:59:59.500000Z","end":null}"#;
        let r: FlowRecord = serde_json::from_str(text).unwrap();
        assert_eq!(r.protocol, Protocol::TCP);
        assert_eq!(r.src_labels["app"], "web");
        let back: serde_json::Value = serde_json::to_value(&r).unwrap();
        let orig: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, orig);
        let mut other = r.clone();
        other.protocol = Protocol(132);
        assert_eq!(serde_json::to_value(&other).unwrap()["protocol"], 132);
        // Re-reports share the connection; another start is another connection.
        other = r.clone();
        other.packets = 10;
        other.time = Timestamp(other.time.0 + 30_000_000);
        assert_eq!(other.connection_id(), r.connection_id());
        other.start = Timestamp(other.start.0 + 1);
        assert_ne!(other.connection_id(), r.connection_id());
    }
}
