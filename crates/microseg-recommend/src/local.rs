//! Edges from a standalone agent's own flows (`recommend --socket`): the same aggregation
//! as the controller's (docs/FLOWS.md "Edges"), with ends named by the known workloads.

use std::collections::BTreeMap;
use std::net::IpAddr;

use microseg_flowstore::{Edge, Endpoint, Labels, Protocol, Timestamp, Verdict};
use microseg_policy::Workload;

/// One flow report of the local agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub time: Timestamp,
    /// The workload that judged (and reported) it.
    pub workload: String,
    pub egress: bool,
    pub src_ip: String,
    pub dst_ip: String,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub verdict: Verdict,
    pub policy: Option<String>,
    /// Seen so far on the connection (a re-report carries larger ones).
    pub packets: u64,
    pub bytes: u64,
}

type EdgeKey = (Endpoint, Endpoint, u8, u16, Verdict, Option<String>);
/// Reporting workload, egress, source, destination, source port, destination port.
type LegKey = (String, bool, String, String, u16, u16);

#[derive(Default)]
struct Acc {
    /// Per connection leg (5-tuple, workload, direction): its largest counters.
    legs: BTreeMap<LegKey, (u64, u64)>,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
}

/// The edges of `legs`, sorted as the controller sorts them. An address is a workload
/// when one of `workloads` has it, or when it is the reporting workload's own end.
pub fn edges_from_legs(legs: &[Leg], workloads: &[Workload]) -> Vec<Edge> {
    let by_ip: BTreeMap<IpAddr, &Workload> = workloads
        .iter()
        .flat_map(|w| w.ips.iter().map(move |ip| (*ip, w)))
        .collect();
    let labels_of = |name: &str| -> Labels {
        workloads
            .iter()
            .find(|w| w.name == name)
            .map(|w| w.labels.clone())
            .unwrap_or_default()
    };
    let end = |ip: &str, own: Option<&str>| -> Endpoint {
        if let Some(w) = ip.parse().ok().and_then(|ip: IpAddr| by_ip.get(&ip)) {
            return Endpoint::Workload {
                workload: w.name.clone(),
                labels: w.labels.clone(),
            };
        }
        match own {
            Some(name) => Endpoint::Workload {
                workload: name.to_string(),
                labels: labels_of(name),
            },
            None => Endpoint::Address { ip: ip.to_string() },
        }
    };
    let mut acc: BTreeMap<EdgeKey, Acc> = BTreeMap::new();
    for l in legs {
        let own = |is_own: bool| is_own.then_some(l.workload.as_str());
        let src = end(&l.src_ip, own(l.egress));
        let dst = end(&l.dst_ip, own(!l.egress));
        let key = (
            src,
            dst,
            l.protocol,
            l.dst_port,
            l.verdict,
            l.policy.clone(),
        );
        let a = acc.entry(key).or_default();
        let leg = (
            l.workload.clone(),
            l.egress,
            l.src_ip.clone(),
            l.dst_ip.clone(),
            l.src_port,
            l.dst_port,
        );
        let c = a.legs.entry(leg).or_default();
        c.0 = c.0.max(l.packets);
        c.1 = c.1.max(l.bytes);
        a.first = Some(a.first.map_or(l.time, |t| t.min(l.time)));
        a.last = Some(a.last.map_or(l.time, |t| t.max(l.time)));
    }
    acc.into_iter()
        .map(
            |((src, dst, protocol, dst_port, verdict, policy), a)| Edge {
                src,
                dst,
                protocol: Protocol(protocol),
                dst_port,
                verdict,
                policy,
                connections: a.legs.len() as u64,
                packets: a.legs.values().map(|c| c.0).sum(),
                bytes: a.legs.values().map(|c| c.1).sum(),
                first_seen: a.first.unwrap_or(Timestamp(0)),
                last_seen: a.last.unwrap_or(Timestamp(0)),
            },
        )
        .collect()
}
