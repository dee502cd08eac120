//! Resource model shared by the parser, the evaluator and the other crates.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// True for the protocols whose packets carry ports.
pub fn protocol_has_ports(protocol: u8) -> bool {
    matches!(protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
}

/// Parses a protocol name (case-insensitive) or number 0-255.
pub fn parse_protocol(s: &str) -> Option<u8> {
    // Compared in place: no lowercased copy for each port of a large policy.
    const NAMES: [(&str, u8); 5] = [
        ("tcp", PROTO_TCP),
        ("udp", PROTO_UDP),
        ("sctp", PROTO_SCTP),
        ("icmp", PROTO_ICMP),
        ("icmpv6", PROTO_ICMPV6),
    ];
    NAMES
        .iter()
        .find(|(name, _)| s.eq_ignore_ascii_case(name))
        .map(|(_, p)| *p)
        .or_else(|| s.parse::<u8>().ok())
}

/// The canonical name of a protocol, if it has one.
pub fn protocol_name(protocol: u8) -> Option<&'static str> {
    match protocol {
        PROTO_TCP => Some("TCP"),
        PROTO_UDP => Some("UDP"),
        PROTO_SCTP => Some("SCTP"),
        PROTO_ICMP => Some("ICMP"),
        PROTO_ICMPV6 => Some("ICMPv6"),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
    Log,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Log => "log",
        })
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// Where a resource was defined (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Origin {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = crate::escape_control(&self.file);
        write!(f, "{file}:{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub interface: Option<String>,
    pub ips: Vec<IpAddr>,
    pub mode: Mode,
    pub origin: Origin,
}

pub const DEFAULT_PRIORITY: u32 = 1000;
pub const MAX_PRIORITY: u32 = 1_000_000_000;

// Size bounds of label maps and selectors. Real resources carry a few dozen labels and
// selectors a handful of terms; the bounds are far above that, yet keep one file from
// making every selector match and identity (which walk a workload's labels) arbitrarily
// slow. `values` is larger: an `In` list of namespaces or tenants can be long.
/// Labels of one resource (`metadata.labels`), and pairs of one `matchLabels`.
pub const MAX_LABELS: usize = 256;
/// Entries of one `matchExpressions` list.
pub const MAX_MATCH_EXPRESSIONS: usize = 256;
/// Values of one `matchExpressions` entry.
pub const MAX_VALUES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub name: String,
    pub selector: LabelSelector,
    pub priority: u32,
    pub mode: Mode,
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
    pub origin: Origin,
}

impl Policy {
    /// The rules of one direction; `None` when the policy has no such section.
    pub fn section(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub action: Action,
    /// Empty = any peer.
    pub peers: Vec<Peer>,
    /// Empty = any protocol and port.
    pub ports: Vec<PortMatch>,
    /// Empty = any source port.
    pub source_ports: Vec<PortRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    Selector(LabelSelector),
    Cidr { cidr: IpNet, except: Vec<IpNet> },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PortMatch {
    pub protocol: u8,
    /// None = any port (or a protocol without ports).
    pub ports: Option<PortRange>,
}

/// Inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        })
    }
}

/// An IP prefix; host bits are always zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl IpNet {
    /// Builds a prefix, masking host bits; None if the length is too long for the family.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<IpNet> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return None;
        }
        Some(IpNet {
            addr: mask(addr, prefix_len),
            prefix_len,
        })
    }

    pub fn max_prefix_len(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(*ip, self.prefix_len) == self.addr
    }

    pub fn contains_net(&self, other: &IpNet) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(&other.addr)
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for IpNet {
    type Err = String;

    /// Accepts "addr/len" (host bits are masked) or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| {
            let a = crate::escape_control(a);
            format!("\"{a}\" is not an IPv4 or IPv6 address")
        })?;
        let (max, fam) = if addr.is_ipv4() {
            (32u8, "IPv4")
        } else {
            (128u8, "IPv6")
        };
        let len = match l {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max && !l.starts_with('+') => n,
                _ => return Err(format!("prefix length must be 0-{max} for {fam}")),
            },
        };
        Ok(IpNet {
            addr: mask(addr, len),
            prefix_len: len,
        })
    }
}

impl Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ResourceSet {
    pub workloads: Vec<Workload>,
    pub policies: Vec<Arc<Policy>>,
}

impl ResourceSet {
    pub fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.name == name)
    }

    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name).map(|p| &**p)
    }
}
