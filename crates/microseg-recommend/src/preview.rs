//! The preview: every observed edge of the window replayed, as a connection, through the
//! reference evaluator with the current policies, and with the current plus the proposed
//! ones (in `mode: enforce`), counted per proposed policy (docs/RECOMMEND.md "Preview").

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use microseg_flowstore::{Edge, Endpoint};
use microseg_policy::{evaluate, Direction, Mode, Packet, Policy, ResourceSet, Verdict, Workload};

use crate::{passed, Recommendation};

/// Examples of would-deny connections shown per policy.
pub const MAX_EXAMPLES: usize = 10;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyPreview {
    pub name: String,
    /// Observed edges (and their connections) this policy judges that it allows.
    pub allowed_edges: usize,
    pub allowed_connections: u64,
    /// Observed edges it would deny: a recommendation with any is a defect.
    pub would_deny_edges: usize,
    pub would_deny_connections: u64,
    /// Of those, the ones the current policies allow.
    pub newly_denied_edges: usize,
    /// `web-1 -> db-1 TCP/5432 egress (3 connections)`, at most MAX_EXAMPLES.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Preview {
    pub policies: Vec<PolicyPreview>,
    /// Denied edges of the window, left out of the recommendation.
    pub denied_edges: usize,
    pub denied_connections: u64,
}

impl Preview {
    pub fn would_deny(&self) -> u64 {
        self.policies.iter().map(|p| p.would_deny_connections).sum()
    }
}

/// Addresses for workloads without one of a family (a workload only seen in flows, or a
/// single-stack one): from ranges no real network uses (240.0.0.0/4, 100::/64), past any
/// address in use.
struct Spare {
    used: BTreeSet<IpAddr>,
    v4: u32,
    v6: u128,
}

impl Spare {
    fn v4(&mut self) -> IpAddr {
        loop {
            self.v4 += 1;
            let ip = IpAddr::V4(Ipv4Addr::from(0xf000_0000 + self.v4));
            if self.used.insert(ip) {
                return ip;
            }
        }
    }

    fn v6(&mut self) -> IpAddr {
        loop {
            self.v6 += 1;
            let ip = IpAddr::V6(Ipv6Addr::from((0x0100u128 << 112) + self.v6));
            if self.used.insert(ip) {
                return ip;
            }
        }
    }
}

/// The workloads as the evaluator sees them: every one with an address of each family.
pub(crate) fn eval_workloads(rec: &Recommendation, edges: &[Edge]) -> Vec<Workload> {
    let mut used: BTreeSet<IpAddr> = rec
        .world
        .members
        .values()
        .flat_map(|m| m.ips.iter().copied())
        .collect();
    for e in edges {
        for end in [&e.src, &e.dst] {
            if let Endpoint::Address { ip } = end {
                if let Ok(ip) = ip.parse() {
                    used.insert(ip);
                }
            }
        }
    }
    let mut spare = Spare { used, v4: 0, v6: 0 };
    rec.world
        .members
        .iter()
        .map(|(name, m)| {
            let mut ips = m.ips.clone();
            if !ips.iter().any(IpAddr::is_ipv4) {
                ips.push(spare.v4());
            }
            if !ips.iter().any(IpAddr::is_ipv6) {
                ips.push(spare.v6());
            }
            Workload {
                name: name.clone(),
                labels: m.labels.clone(),
                interface: None,
                ips,
                mode: Mode::Enforce,
                origin: Default::default(),
            }
        })
        .collect()
}

/// The address of an end for a connection of `family` (true: IPv4).
fn address(set: &ResourceSet, end: &Endpoint, v4: bool) -> Option<IpAddr> {
    match end {
        Endpoint::Address { ip } => ip.parse().ok(),
        Endpoint::Workload { workload, .. } => set
            .workload(workload)?
            .ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == v4),
    }
}

fn denied(v: Verdict) -> bool {
    matches!(v, Verdict::Deny | Verdict::Audit)
}

/// Replays the observed edges (those that passed) through the evaluator.
pub fn preview(rec: &Recommendation, edges: &[Edge], current: &[Arc<Policy>]) -> Preview {
    let workloads = eval_workloads(rec, edges);
    let now = ResourceSet {
        workloads: workloads.clone(),
        policies: current.to_vec(),
    };
    let mut with = now.clone();
    with.policies.extend(rec.policies.iter().map(|p| {
        let mut p = p.policy.clone();
        p.mode = Mode::Enforce;
        Arc::new(p)
    }));
    let mut out: BTreeMap<&str, PolicyPreview> = rec
        .policies
        .iter()
        .map(|p| {
            let name = p.policy.name.as_str();
            (
                name,
                PolicyPreview {
                    name: name.into(),
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut sorted: Vec<&Edge> = edges.iter().filter(|e| passed(e.verdict)).collect();
    sorted.sort_by(|a, b| {
        (&a.src, &a.dst, a.protocol, a.dst_port).cmp(&(&b.src, &b.dst, b.protocol, b.dst_port))
    });
    for e in sorted {
        let v4 = [&e.src, &e.dst].iter().all(|end| match end {
            Endpoint::Address { ip } => !ip.contains(':'),
            Endpoint::Workload { .. } => true,
        });
        let (Some(src), Some(dst)) = (address(&with, &e.src, v4), address(&with, &e.dst, v4))
        else {
            continue;
        };
        let packet = Packet {
            src,
            dst,
            protocol: e.protocol.0,
            src_port: 0,
            dst_port: e.dst_port,
        };
        for (end, dir) in [(&e.src, Direction::Egress), (&e.dst, Direction::Ingress)] {
            let Endpoint::Workload { workload, .. } = end else {
                continue;
            };
            let Some(group) = rec.world.group(workload) else {
                continue;
            };
            let Some(stats) = rec
                .world
                .names
                .get(group)
                .and_then(|n| out.get_mut(n.as_str()))
            else {
                continue;
            };
            let wl = with.workload(workload).expect("every member is in the set");
            if denied(evaluate(&with, wl, dir, &packet).verdict) {
                stats.would_deny_edges += 1;
                stats.would_deny_connections += e.connections;
                if !denied(evaluate(&now, wl, dir, &packet).verdict) {
                    stats.newly_denied_edges += 1;
                }
                if stats.examples.len() < MAX_EXAMPLES {
                    stats.examples.push(example(e, dir));
                }
            } else {
                stats.allowed_edges += 1;
                stats.allowed_connections += e.connections;
            }
        }
    }
    Preview {
        policies: out.into_values().collect(),
        denied_edges: rec.denied_edges,
        denied_connections: rec.denied_connections,
    }
}

fn end_name(end: &Endpoint) -> &str {
    match end {
        Endpoint::Workload { workload, .. } => workload,
        Endpoint::Address { ip } => ip,
    }
}

fn example(e: &Edge, dir: Direction) -> String {
    let proto = e
        .protocol
        .name()
        .map_or_else(|| e.protocol.0.to_string(), str::to_string);
    let port = if microseg_policy::protocol_has_ports(e.protocol.0) {
        format!("/{}", e.dst_port)
    } else {
        String::new()
    };
    format!(
        "{} -> {} {proto}{port} {dir} ({} connections)",
        end_name(&e.src),
        end_name(&e.dst),
        e.connections
    )
}
