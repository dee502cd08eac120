//! Reference evaluator: the verdict for one packet, straight from the resources.
//! The data plane is tested against it.

use crate::model::*;
use serde::Serialize;
use std::net::IpAddr;

/// Policy name the implicit deny is attributed to.
pub const DEFAULT_DENY: &str = "default-deny";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
    Log,
    Audit,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Log => "log",
            Verdict::Audit => "audit",
        })
    }
}

impl From<Action> for Verdict {
    fn from(a: Action) -> Verdict {
        match a {
            Action::Allow => Verdict::Allow,
            Action::Deny => Verdict::Deny,
            Action::Log => Verdict::Log,
        }
    }
}

/// Ports are 0 for protocols without ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// A rule by policy name and 0-based index within the policy's section.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RuleRef {
    pub policy: String,
    pub rule: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub policy: Option<String>,
    pub rule: Option<u32>,
    /// Every candidate with the winner's (priority, action), sorted.
    pub tied: Vec<RuleRef>,
    pub audit_verdict: Option<Verdict>,
    pub audit_policy: Option<String>,
    pub audit_rule: Option<u32>,
}

/// Precedence at equal priority: deny, then log, then allow.
pub fn action_rank(a: Action) -> u8 {
    match a {
        Action::Deny => 0,
        Action::Log => 1,
        Action::Allow => 2,
    }
}

/// True when `addr` belongs to the peer.
pub fn peer_matches(set: &ResourceSet, peer: &Peer, addr: &IpAddr) -> bool {
    match peer {
        Peer::Cidr { cidr, except } => {
            cidr.contains(addr) && !except.iter().any(|e| e.contains(addr))
        }
        Peer::Selector(sel) => set
            .workloads
            .iter()
            .any(|w| w.ips.contains(addr) && sel.matches(&w.labels)),
    }
}

pub fn port_match_matches(pm: &PortMatch, packet: &Packet) -> bool {
    pm.protocol == packet.protocol
        && match pm.ports {
            None => true,
            Some(r) => protocol_has_ports(packet.protocol) && r.contains(packet.dst_port),
        }
}

/// Whether one rule matches a packet whose peer address is `peer`.
pub fn rule_matches(set: &ResourceSet, rule: &Rule, peer: &IpAddr, packet: &Packet) -> bool {
    (rule.peers.is_empty() || rule.peers.iter().any(|p| peer_matches(set, p, peer)))
        && (rule.ports.is_empty() || rule.ports.iter().any(|pm| port_match_matches(pm, packet)))
        && (rule.source_ports.is_empty()
            || (protocol_has_ports(packet.protocol)
                && rule
                    .source_ports
                    .iter()
                    .any(|r| r.contains(packet.src_port))))
}

struct Outcome {
    verdict: Verdict,
    policy: Option<String>,
    rule: Option<u32>,
    tied: Vec<RuleRef>,
}

/// Evaluates the policies of one mode; None if none of them selects the workload.
fn evaluate_mode(
    set: &ResourceSet,
    wl: &Workload,
    dir: Direction,
    packet: &Packet,
    mode: Mode,
) -> Option<Outcome> {
    let peer = match dir {
        Direction::Egress => packet.dst,
        Direction::Ingress => packet.src,
    };
    let mut selected = false;
    let mut has_section = false;
    // (priority, action rank, rule ref)
    let mut candidates: Vec<(u32, u8, Action, RuleRef)> = Vec::new();
    for p in set
        .policies
        .iter()
        .filter(|p| p.mode == mode && p.selector.matches(&wl.labels))
    {
        selected = true;
        let Some(rules) = p.section(dir) else {
            continue;
        };
        has_section = true;
        for (i, r) in rules.iter().enumerate() {
            if rule_matches(set, r, &peer, packet) {
                let rr = RuleRef {
                    policy: p.name.clone(),
                    rule: i as u32,
                };
                candidates.push((p.priority, action_rank(r.action), r.action, rr));
            }
        }
    }
    if !selected {
        return None;
    }
    let best = candidates.iter().map(|c| (c.0, c.1)).min();
    Some(match best {
        Some(key) => {
            let mut tied: Vec<(RuleRef, Action)> = candidates
                .into_iter()
                .filter(|c| (c.0, c.1) == key)
                .map(|c| (c.3, c.2))
                .collect();
            tied.sort();
            let (first, action) = tied[0].clone();
            Outcome {
                verdict: action.into(),
                policy: Some(first.policy),
                rule: Some(first.rule),
                tied: tied.into_iter().map(|t| t.0).collect(),
            }
        }
        None if has_section => Outcome {
            verdict: Verdict::Deny,
            policy: Some(DEFAULT_DENY.into()),
            rule: None,
            tied: Vec::new(),
        },
        None => Outcome {
            verdict: Verdict::Allow,
            policy: None,
            rule: None,
            tied: Vec::new(),
        },
    })
}

/// The verdict for `packet` seen in `direction` of `workload` (docs/POLICY.md, "How a verdict is reached").
pub fn evaluate(
    set: &ResourceSet,
    workload: &Workload,
    direction: Direction,
    packet: &Packet,
) -> Decision {
    let enforce =
        evaluate_mode(set, workload, direction, packet, Mode::Enforce).unwrap_or(Outcome {
            verdict: Verdict::Allow,
            policy: None,
            rule: None,
            tied: Vec::new(),
        });
    let audit = evaluate_mode(set, workload, direction, packet, Mode::Audit);
    let mut verdict = enforce.verdict;
    if workload.mode == Mode::Audit && verdict == Verdict::Deny {
        verdict = Verdict::Audit;
    }
    let (audit_verdict, audit_policy, audit_rule) = match audit {
        Some(a) => (Some(a.verdict), a.policy, a.rule),
        None => (None, None, None),
    };
    Decision {
        verdict,
        policy: enforce.policy,
        rule: enforce.rule,
        tied: enforce.tied,
        audit_verdict,
        audit_policy,
        audit_rule,
    }
}
