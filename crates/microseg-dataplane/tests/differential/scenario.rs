//! Random scenarios (workloads, policies, packets from fixed pools) and their strategies.

use proptest::prelude::*;

const PACKETS_PER_CASE: usize = 64;
/// Odd frames per case: a packet's frame mutated (`frames::mutate`).
const ODD_PER_CASE: usize = 64;

pub const LABEL_KEYS: [&str; 3] = ["app", "env", "tier"];
pub const LABEL_VALUES: [&str; 3] = ["a", "b", "c"];

pub const V4_HOSTS: [&str; 8] = [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.1.1",
    "10.0.1.2",
    "10.1.0.1",
    "10.1.128.1",
    "192.168.0.1",
    "192.168.1.1",
];
pub const V6_HOSTS: [&str; 8] = [
    "fd00::1",
    "fd00::2",
    "fd00:0:0:1::1",
    "fd00:0:0:1::2",
    "fd01::1",
    "fd01:8000::1",
    "2001:db8::1",
    "2001:db8:1::1",
];
/// Peers that are no workload: some inside the CIDRs below, some outside all of them.
pub const OTHER_PEERS: [&str; 10] = [
    "10.0.0.99",
    "10.1.200.5",
    "192.168.1.77",
    "172.16.0.1",
    "8.8.8.8",
    "fd00::99",
    "fd01:8000::5",
    "2001:db8:1::77",
    "2001:db9::1",
    "fe80::1",
];
pub const V4_CIDRS: [&str; 11] = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.0.0.0/16",
    "10.0.0.0/24",
    "10.0.1.0/24",
    "10.1.0.0/16",
    "10.1.128.0/17",
    "192.168.0.0/16",
    "192.168.0.0/23",
    "192.168.1.0/24",
    "10.0.0.2/32",
];
pub const V6_CIDRS: [&str; 10] = [
    "::/0",
    "fd00::/8",
    "fd00::/16",
    "fd00::/64",
    "fd00:0:0:1::/64",
    "fd01::/16",
    "fd01:8000::/17",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "fd00::2/128",
];
/// (port, endPort): exact ports, narrow and wide ranges, overlapping, at the expansion limit.
pub const RULE_PORTS: [(u16, Option<u16>); 14] = [
    (53, None),
    (80, None),
    (443, None),
    (5432, None),
    (80, Some(90)),
    (85, Some(100)),
    (440, Some(450)),
    (1000, Some(2000)),
    (1024, Some(65535)),
    (1, Some(65535)),
    (5000, Some(5063)),
    (5000, Some(5064)),
    (8000, Some(8100)),
    (1500, Some(1600)),
];
pub const PACKET_PORTS: [u16; 26] = [
    1, 53, 79, 80, 85, 89, 90, 91, 100, 101, 443, 445, 999, 1000, 1023, 1024, 1550, 2000, 2001,
    5000, 5063, 5064, 5432, 8080, 8100, 65535,
];
const PRIORITIES: [Option<u32>; 5] = [None, Some(10), Some(100), Some(100), Some(1000)];

#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub labels: Vec<(usize, usize)>,
    pub v4: bool,
    pub v6: bool,
    pub audit: bool,
}

#[derive(Clone, Debug)]
pub enum SelectorSpec {
    Labels(Vec<(usize, usize)>),
    Expr(Vec<(usize, usize)>, Vec<(usize, u8, Vec<usize>)>),
}

#[derive(Clone, Debug)]
pub enum PeerSpec {
    Selector(SelectorSpec),
    Cidr {
        v6: bool,
        cidr: usize,
        excepts: Vec<usize>,
    },
}

#[derive(Clone, Debug)]
pub enum PortSpec {
    /// TCP/UDP/SCTP (0/1/2), optional index into RULE_PORTS.
    L4(u8, Option<usize>),
    Icmp,
    Icmpv6,
    Number(u8),
}

#[derive(Clone, Debug)]
pub struct RuleSpec {
    pub action: u8,
    pub peers: Vec<PeerSpec>,
    pub ports: Vec<PortSpec>,
    /// Indexes into RULE_PORTS for `sourcePorts`.
    pub source_ports: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct PolicySpec {
    pub selector: SelectorSpec,
    pub priority: Option<u32>,
    pub audit: bool,
    /// None: no section; Some(empty): `ingress: []`.
    pub ingress: Option<Vec<RuleSpec>>,
    pub egress: Option<Vec<RuleSpec>>,
}

#[derive(Clone, Debug)]
pub struct PacketSpec {
    pub egress: bool,
    pub v6: bool,
    /// Index into the peer candidates of the family.
    pub peer: usize,
    /// 0 TCP, 1 UDP, 2 SCTP, 3 ICMP echo, 4 protocol 47, 5 protocol 59.
    pub kind: u8,
    pub sport: usize,
    pub dport: usize,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    /// Offset into the address pools, so workloads get different addresses case to case.
    pub ip_offset: usize,
    pub workloads: Vec<WorkloadSpec>,
    pub policies: Vec<PolicySpec>,
    pub packets: Vec<PacketSpec>,
    /// (index into `packets`, mutation seed): that packet's frame made odd.
    pub odd: Vec<(usize, u64)>,
}

fn labels() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop::collection::vec((0..LABEL_KEYS.len(), 0..LABEL_VALUES.len()), 0..=2)
}

fn workload() -> impl Strategy<Value = WorkloadSpec> {
    (labels(), 0..3u8, prop::bool::weighted(0.2)).prop_map(|(labels, fam, audit)| WorkloadSpec {
        labels,
        v4: fam != 1,
        v6: fam != 0,
        audit,
    })
}

fn selector() -> impl Strategy<Value = SelectorSpec> {
    let expr = (
        0..LABEL_KEYS.len(),
        0..4u8,
        prop::collection::vec(0..LABEL_VALUES.len(), 1..=2),
    );
    prop_oneof![
        2 => labels().prop_map(SelectorSpec::Labels),
        1 => (prop::collection::vec((0..LABEL_KEYS.len(), 0..LABEL_VALUES.len()), 0..=1),
              prop::collection::vec(expr, 1..=2))
            .prop_map(|(l, e)| SelectorSpec::Expr(l, e)),
    ]
}

fn peer() -> impl Strategy<Value = PeerSpec> {
    prop_oneof![
        selector().prop_map(PeerSpec::Selector),
        (
            any::<bool>(),
            0..V6_CIDRS.len().max(V4_CIDRS.len()),
            prop::collection::vec(0..11usize, 0..=2)
        )
            .prop_map(|(v6, cidr, excepts)| PeerSpec::Cidr { v6, cidr, excepts }),
    ]
}

fn port() -> impl Strategy<Value = PortSpec> {
    prop_oneof![
        6 => (0..3u8, prop::option::weighted(0.8, 0..RULE_PORTS.len())).prop_map(|(p, r)| PortSpec::L4(p, r)),
        1 => Just(PortSpec::Icmp),
        1 => Just(PortSpec::Icmpv6),
        1 => prop::sample::select(vec![47u8, 59, 6, 17]).prop_map(PortSpec::Number),
    ]
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    (
        0..3u8,
        prop_oneof![1 => Just(Vec::new()), 2 => prop::collection::vec(peer(), 1..=2)],
        prop_oneof![1 => Just(Vec::new()), 2 => prop::collection::vec(port(), 1..=3)],
        prop_oneof![4 => Just(Vec::new()), 1 => prop::collection::vec(0..RULE_PORTS.len(), 1..=2)],
    )
        .prop_map(|(action, peers, ports, source_ports)| RuleSpec {
            action,
            peers,
            ports,
            source_ports,
        })
}

fn section() -> impl Strategy<Value = Option<Vec<RuleSpec>>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Vec::new())),
        4 => prop::collection::vec(rule(), 1..=4).prop_map(Some),
    ]
}

fn policy() -> impl Strategy<Value = PolicySpec> {
    (
        selector(),
        prop::sample::select(PRIORITIES.to_vec()),
        prop::bool::weighted(0.25),
        section(),
        section(),
    )
        .prop_map(|(selector, priority, audit, ingress, egress)| PolicySpec {
            selector,
            priority,
            audit,
            ingress,
            egress,
        })
}

fn packet() -> impl Strategy<Value = PacketSpec> {
    (
        any::<bool>(),
        any::<bool>(),
        0..64usize,
        0..6u8,
        0..PACKET_PORTS.len(),
        0..PACKET_PORTS.len(),
    )
        .prop_map(|(egress, v6, peer, kind, sport, dport)| PacketSpec {
            egress,
            v6,
            peer,
            kind,
            sport,
            dport,
        })
}

pub fn scenario() -> impl Strategy<Value = Scenario> {
    (
        0..8usize,
        prop::collection::vec(workload(), 3..=8),
        prop::collection::vec(policy(), 1..=6),
        prop::collection::vec(packet(), PACKETS_PER_CASE),
        prop::collection::vec((0..PACKETS_PER_CASE, any::<u64>()), ODD_PER_CASE),
    )
        .prop_map(|(ip_offset, workloads, policies, packets, odd)| Scenario {
            ip_offset,
            workloads,
            policies,
            packets,
            odd,
        })
}

/// A scenario, then another set of policies for the same workloads: the policy change.
#[derive(Clone, Debug)]
pub struct PolicyChange {
    pub before: Scenario,
    pub after: Vec<PolicySpec>,
}

pub fn policy_change() -> impl Strategy<Value = PolicyChange> {
    (scenario(), prop::collection::vec(policy(), 1..=6))
        .prop_map(|(before, after)| PolicyChange { before, after })
}
