//! The benchmarked workload, `db` on `lo`, its policy of n rules, and the frames sent to it.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use microseg_dataplane::packet::*;
use microseg_policy::*;

pub(crate) const IFINDEX_LO: u32 = 1;
pub(crate) const DB_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);
/// Rule i allows peer PEER_BASE + i.
const PEER_BASE: u32 = u32::from_be_bytes([172, 16, 0, 0]);

pub(crate) fn peer(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(PEER_BASE + i as u32)
}

pub(crate) fn port(i: usize) -> u16 {
    1024 + (i % 60_000) as u16
}

/// Workload `db` on `lo`, and one policy selecting it with `n` ingress rules: rule i allows
/// TCP from peer(i)/32 to port(i).
pub(crate) fn resource_set(n: usize) -> ResourceSet {
    let labels: BTreeMap<String, String> = [("app".to_string(), "db".to_string())].into();
    let db = Workload {
        name: "db".into(),
        labels: labels.clone(),
        interface: Some("lo".into()),
        ips: vec![IpAddr::V4(DB_IP)],
        mode: Mode::Enforce,
        origin: Origin::default(),
    };
    let rules = (0..n)
        .map(|i| Rule {
            action: Action::Allow,
            peers: vec![Peer::Cidr {
                cidr: IpNet::new(IpAddr::V4(peer(i)), 32).unwrap(),
                except: vec![],
            }],
            ports: vec![PortMatch {
                protocol: PROTO_TCP,
                ports: Some(PortRange {
                    start: port(i),
                    end: port(i),
                }),
            }],
            source_ports: vec![],
        })
        .collect();
    let policy = Policy {
        name: "db-ingress".into(),
        selector: LabelSelector {
            match_labels: labels,
            match_expressions: vec![],
        },
        priority: DEFAULT_PRIORITY,
        mode: Mode::Enforce,
        ingress: Some(rules),
        egress: None,
        origin: Origin::default(),
    };
    ResourceSet {
        workloads: vec![db],
        policies: vec![std::sync::Arc::new(policy)],
    }
}

pub(crate) fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    Frame::tcp(IpAddr::V4(src), IpAddr::V4(dst), sport, dport, flags).bytes()
}

/// A policy of one rule that denies what the last rule of `resource_set(n)` allows, ahead
/// of it (priority 10): the "one rule change" of the side-by-side comparison.
pub(crate) fn deny_one(n: usize) -> Policy {
    let mut p = resource_set(n).policies[0].as_ref().clone();
    p.name = "deny-one".into();
    p.priority = 10;
    let mut rule = p.ingress.as_ref().expect("ingress")[n - 1].clone();
    rule.action = Action::Deny;
    p.ingress = Some(vec![rule]);
    p
}
