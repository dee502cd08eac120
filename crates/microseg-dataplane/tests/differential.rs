//! Differential test: random workloads and policies, compiled and loaded into the kernel,
//! must give every random packet the verdict, the rule (one of the tied winners), the
//! audit verdict and the audit policy of the reference evaluator (CONTRACT §1).
//!
//! `MICROSEG_SOAK=N` multiplies the number of cases for a longer run.

mod common;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::IpAddr;

use common::*;
use microseg_dataplane::{common::*, packet::*, Dataplane, Hook};
use microseg_policy::{compile::*, evaluate, Direction, IpNet, Packet, ResourceSet, Verdict};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const CASES: u32 = 1000;
const PACKETS_PER_CASE: usize = 48;

const LABEL_KEYS: [&str; 3] = ["app", "env", "tier"];
const LABEL_VALUES: [&str; 3] = ["a", "b", "c"];

const V4_HOSTS: [&str; 8] = [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.1.1",
    "10.0.1.2",
    "10.1.0.1",
    "10.1.128.1",
    "192.168.0.1",
    "192.168.1.1",
];
const V6_HOSTS: [&str; 8] = [
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
const OTHER_PEERS: [&str; 10] = [
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
const V4_CIDRS: [&str; 11] = [
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
const V6_CIDRS: [&str; 10] = [
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
const RULE_PORTS: [(u16, Option<u16>); 14] = [
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
const PACKET_PORTS: [u16; 26] = [
    1, 53, 79, 80, 85, 89, 90, 91, 100, 101, 443, 445, 999, 1000, 1023, 1024, 1550, 2000, 2001,
    5000, 5063, 5064, 5432, 8080, 8100, 65535,
];
const PRIORITIES: [Option<u32>; 5] = [None, Some(10), Some(100), Some(100), Some(1000)];

#[derive(Clone, Debug)]
struct WorkloadSpec {
    labels: Vec<(usize, usize)>,
    v4: bool,
    v6: bool,
    audit: bool,
}

#[derive(Clone, Debug)]
enum SelectorSpec {
    Labels(Vec<(usize, usize)>),
    Expr(Vec<(usize, usize)>, Vec<(usize, u8, Vec<usize>)>),
}

#[derive(Clone, Debug)]
enum PeerSpec {
    Selector(SelectorSpec),
    Cidr {
        v6: bool,
        cidr: usize,
        excepts: Vec<usize>,
    },
}

#[derive(Clone, Debug)]
enum PortSpec {
    /// TCP/UDP/SCTP (0/1/2), optional index into RULE_PORTS.
    L4(u8, Option<usize>),
    Icmp,
    Icmpv6,
    Number(u8),
}

#[derive(Clone, Debug)]
struct RuleSpec {
    action: u8,
    peers: Vec<PeerSpec>,
    ports: Vec<PortSpec>,
    /// Indexes into RULE_PORTS for `sourcePorts`.
    source_ports: Vec<usize>,
}

#[derive(Clone, Debug)]
struct PolicySpec {
    selector: SelectorSpec,
    priority: Option<u32>,
    audit: bool,
    /// None: no section; Some(empty): `ingress: []`.
    ingress: Option<Vec<RuleSpec>>,
    egress: Option<Vec<RuleSpec>>,
}

#[derive(Clone, Debug)]
struct PacketSpec {
    egress: bool,
    v6: bool,
    /// Index into the peer candidates of the family.
    peer: usize,
    /// 0 TCP, 1 UDP, 2 SCTP, 3 ICMP echo, 4 protocol 47, 5 protocol 59.
    kind: u8,
    sport: usize,
    dport: usize,
}

#[derive(Clone, Debug)]
struct Scenario {
    /// Offset into the address pools, so workloads get different addresses case to case.
    ip_offset: usize,
    workloads: Vec<WorkloadSpec>,
    policies: Vec<PolicySpec>,
    packets: Vec<PacketSpec>,
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

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        0..8usize,
        prop::collection::vec(workload(), 3..=8),
        prop::collection::vec(policy(), 1..=6),
        prop::collection::vec(packet(), PACKETS_PER_CASE),
    )
        .prop_map(|(ip_offset, workloads, policies, packets)| Scenario {
            ip_offset,
            workloads,
            policies,
            packets,
        })
}

fn selector_yaml(s: &SelectorSpec) -> String {
    let labels = |l: &[(usize, usize)]| {
        // Later duplicates of a key override earlier ones, as in a YAML map: keep one.
        let mut m = std::collections::BTreeMap::new();
        for (k, v) in l {
            m.insert(LABEL_KEYS[*k], LABEL_VALUES[*v]);
        }
        m.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match s {
        SelectorSpec::Labels(l) if l.is_empty() => "{}".into(),
        SelectorSpec::Labels(l) => format!("{{matchLabels: {{{}}}}}", labels(l)),
        SelectorSpec::Expr(l, exprs) => {
            let exprs: Vec<String> = exprs
                .iter()
                .map(|(k, op, vals)| {
                    let key = LABEL_KEYS[*k];
                    let vals: Vec<&str> = vals.iter().map(|v| LABEL_VALUES[*v]).collect();
                    match op {
                        0 => format!(
                            "{{key: {key}, operator: In, values: [{}]}}",
                            vals.join(", ")
                        ),
                        1 => format!(
                            "{{key: {key}, operator: NotIn, values: [{}]}}",
                            vals.join(", ")
                        ),
                        2 => format!("{{key: {key}, operator: Exists}}"),
                        _ => format!("{{key: {key}, operator: DoesNotExist}}"),
                    }
                })
                .collect();
            if l.is_empty() {
                format!("{{matchExpressions: [{}]}}", exprs.join(", "))
            } else {
                format!(
                    "{{matchLabels: {{{}}}, matchExpressions: [{}]}}",
                    labels(l),
                    exprs.join(", ")
                )
            }
        }
    }
}

fn net(s: &str) -> IpNet {
    let (a, l) = s.split_once('/').expect("cidr");
    IpNet::new(a.parse().expect("address"), l.parse().expect("length")).expect("prefix")
}

fn peer_yaml(p: &PeerSpec) -> String {
    match p {
        PeerSpec::Selector(s) => format!("{{selector: {}}}", selector_yaml(s)),
        PeerSpec::Cidr { v6, cidr, excepts } => {
            let pool: &[&str] = if *v6 { &V6_CIDRS } else { &V4_CIDRS };
            let c = pool[cidr % pool.len()];
            let outer = net(c);
            let mut ex: Vec<&str> = excepts
                .iter()
                .map(|e| pool[e % pool.len()])
                .filter(|e| {
                    let n = net(e);
                    n.prefix_len > outer.prefix_len && outer.contains_net(&n)
                })
                .collect();
            ex.sort();
            ex.dedup();
            if ex.is_empty() {
                format!("{{cidr: \"{c}\"}}")
            } else {
                let ex: Vec<String> = ex.iter().map(|e| format!("\"{e}\"")).collect();
                format!("{{cidr: \"{c}\", except: [{}]}}", ex.join(", "))
            }
        }
    }
}

fn port_yaml(p: &PortSpec) -> String {
    match p {
        PortSpec::L4(proto, range) => {
            let name = ["TCP", "UDP", "SCTP"][*proto as usize];
            match range.map(|i| RULE_PORTS[i]) {
                None => format!("{{protocol: {name}}}"),
                Some((port, None)) => format!("{{protocol: {name}, port: {port}}}"),
                Some((port, Some(end))) => {
                    format!("{{protocol: {name}, port: {port}, endPort: {end}}}")
                }
            }
        }
        PortSpec::Icmp => "{protocol: ICMP}".into(),
        PortSpec::Icmpv6 => "{protocol: ICMPv6}".into(),
        PortSpec::Number(n) => format!("{{protocol: {n}}}"),
    }
}

fn section_yaml(out: &mut String, name: &str, peer_key: &str, rules: &Option<Vec<RuleSpec>>) {
    let Some(rules) = rules else { return };
    if rules.is_empty() {
        let _ = writeln!(out, "  {name}: []");
        return;
    }
    let _ = writeln!(out, "  {name}:");
    for r in rules {
        let _ = writeln!(
            out,
            "    - action: {}",
            ["allow", "deny", "log"][r.action as usize]
        );
        if !r.peers.is_empty() {
            let peers: Vec<String> = r.peers.iter().map(peer_yaml).collect();
            let _ = writeln!(out, "      {peer_key}: [{}]", peers.join(", "));
        }
        if !r.ports.is_empty() {
            let ports: Vec<String> = r.ports.iter().map(port_yaml).collect();
            let _ = writeln!(out, "      ports: [{}]", ports.join(", "));
        }
        if !r.source_ports.is_empty() {
            let sports: Vec<String> = r
                .source_ports
                .iter()
                .map(|i| match RULE_PORTS[*i] {
                    (port, None) => format!("{{port: {port}}}"),
                    (port, Some(end)) => format!("{{port: {port}, endPort: {end}}}"),
                })
                .collect();
            let _ = writeln!(out, "      sourcePorts: [{}]", sports.join(", "));
        }
    }
}

/// The workloads' addresses: workload i gets pool entry (i + offset) of each family it has.
fn workload_ips(sc: &Scenario, i: usize) -> Vec<&'static str> {
    let w = &sc.workloads[i];
    let mut ips = Vec::new();
    if w.v4 {
        ips.push(V4_HOSTS[(i + sc.ip_offset) % V4_HOSTS.len()]);
    }
    if w.v6 {
        ips.push(V6_HOSTS[(i + sc.ip_offset * 3) % V6_HOSTS.len()]);
    }
    ips
}

fn yaml(sc: &Scenario) -> String {
    let mut out = String::new();
    for (i, w) in sc.workloads.iter().enumerate() {
        let mut labels = std::collections::BTreeMap::new();
        for (k, v) in &w.labels {
            labels.insert(LABEL_KEYS[*k], LABEL_VALUES[*v]);
        }
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let ips: Vec<String> = workload_ips(sc, i)
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect();
        let iface = if i == 0 {
            "lo".to_string()
        } else {
            format!("veth{i}")
        };
        let _ = write!(
            out,
            "---\napiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: w{i}, labels: {{{}}}}}\nspec: {{interface: {iface}, ips: [{}]{}}}\n",
            labels.join(", "),
            ips.join(", "),
            if w.audit && i == 0 { ", mode: audit" } else { "" }
        );
    }
    for (i, p) in sc.policies.iter().enumerate() {
        let _ = write!(
            out,
            "---\napiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: p{i}}}\nspec:\n  selector: {}\n",
            selector_yaml(&p.selector)
        );
        if let Some(prio) = p.priority {
            let _ = writeln!(out, "  priority: {prio}");
        }
        if p.audit {
            let _ = writeln!(out, "  mode: audit");
        }
        section_yaml(&mut out, "ingress", "from", &p.ingress);
        section_yaml(&mut out, "egress", "to", &p.egress);
    }
    out
}

fn verdict_code(v: Verdict) -> u8 {
    match v {
        Verdict::Allow => verdict::ALLOW,
        Verdict::Deny => verdict::DENY,
        Verdict::Log => verdict::LOG,
        Verdict::Audit => verdict::AUDIT,
    }
}

struct Checker {
    dp: Dataplane,
    packets: usize,
    /// Checked packets by outcome: allow, deny, log, audit, default deny, open, audit-tier verdicts.
    seen: [usize; 7],
    /// One compiler across cases, as the agent keeps one across policy changes: its
    /// numbering (identities, rule ids, profiles) carries over from case to case.
    compiler: Compiler,
    cases: usize,
    /// Cases whose compile was refused (too many sourcePorts rules for one peer).
    refused: usize,
}

/// Builds, runs and checks the packets of one scenario; Err carries a readable report.
fn check(checker: &mut Checker, sc: &Scenario) -> Result<(), String> {
    let text = yaml(sc);
    let (res, diags) = microseg_policy::parse_str("random.yaml", &text);
    if !diags.is_empty() {
        return Err(format!(
            "generated resources do not parse:\n{text}\n{diags:?}"
        ));
    }
    let set: ResourceSet = res.into_iter().collect();
    let diags = microseg_policy::validate_set(&set);
    if !diags.is_empty() {
        return Err(format!(
            "generated resources do not validate:\n{text}\n{diags:?}"
        ));
    }
    // Every other case with a fresh compiler (rule ids in name order, as the oracle breaks
    // ties), the others with the long-lived one.
    checker.cases += 1;
    let fresh = checker.cases.is_multiple_of(2);
    let endpoints = [LocalEndpoint {
        workload: "w0".into(),
        ifindex: LO,
    }];
    let compiled = if fresh {
        Compiler::new().compile(&set, &endpoints)
    } else {
        checker.compiler.compile(&set, &endpoints)
    };
    if !compiled.problems.is_empty() {
        // More sourcePorts rules for one peer than a table holds: refused, not enforced.
        checker.refused += 1;
        return Ok(());
    }
    let dp = &mut checker.dp;
    dp.apply(&compiled.tables)
        .map_err(|e| format!("apply: {e}"))?;
    // Some cases catch the standby slot up, as the agent does when idle: the next case
    // then writes only its own changes into it, and its verdicts show whether that slot
    // held exactly this state.
    if checker.cases.is_multiple_of(3) {
        dp.catch_up_standby()
            .map_err(|e| format!("catch up: {e}"))?;
    }
    dp.drain_events();
    let local = set.workload("w0").expect("w0").clone();

    let local4: Option<IpAddr> = local.ips.iter().copied().find(|a| a.is_ipv4());
    let local6: Option<IpAddr> = local.ips.iter().copied().find(|a| a.is_ipv6());
    let mut peers4: Vec<IpAddr> = Vec::new();
    let mut peers6: Vec<IpAddr> = Vec::new();
    for a in set
        .workloads
        .iter()
        .flat_map(|w| w.ips.iter().copied())
        .chain(OTHER_PEERS.iter().map(|s| ip(s)))
    {
        if a.is_ipv4() {
            peers4.push(a)
        } else {
            peers6.push(a)
        }
    }

    for ps in &sc.packets {
        let v6 = match (local4, local6) {
            (Some(_), Some(_)) => ps.v6,
            (Some(_), None) => false,
            _ => true,
        };
        let (me, peers) = if v6 {
            (local6.unwrap(), &peers6)
        } else {
            (local4.unwrap(), &peers4)
        };
        let peer = peers[ps.peer % peers.len()];
        let (src, dst) = if ps.egress { (me, peer) } else { (peer, me) };
        let (sport, dport) = (PACKET_PORTS[ps.sport], PACKET_PORTS[ps.dport]);
        let (frame, packet) = match ps.kind {
            0 => (
                Frame::tcp(src, dst, sport, dport, TCP_SYN),
                (6, sport, dport),
            ),
            1 => (Frame::udp(src, dst, sport, dport), (17, sport, dport)),
            2 => (Frame::sctp(src, dst, sport, dport), (132, sport, dport)),
            3 => {
                let f = Frame::echo_request(src, dst, sport);
                let p = f.protocol;
                (f, (p, sport, 0))
            }
            4 => (Frame::new(src, dst, 47, vec![0; 16]), (47, 0, 0)),
            _ => (Frame::new(src, dst, 59, vec![0; 16]), (59, 0, 0)),
        };
        let packet = Packet {
            src,
            dst,
            protocol: packet.0,
            src_port: packet.1,
            dst_port: packet.2,
        };
        let direction = if ps.egress {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let hook = if ps.egress {
            Hook::FromWorkload
        } else {
            Hook::ToWorkload
        };
        let want = evaluate(&set, &local, direction, &packet);

        let report = |what: &str, got: String| {
            format!(
                "{what}\n  packet: {direction:?} {packet:?}\n  oracle: {want:?}\n  kernel: {got}\n  rules: {:?}\n--- resources ---\n{text}",
                compiled.rules
            )
        };
        let run = dp
            .test_run(hook, &frame.bytes(), LO, 1)
            .map_err(|e| report("test run failed", e.to_string()))?;
        let events = dp.drain_events();
        checker.packets += 1;
        let [e] = events.as_slice() else {
            return Err(report("expected exactly one event", format!("{events:?}")));
        };
        let got_policy = rule_policy_name(&compiled.rules, e.rule_id);
        let got_audit_policy = rule_policy_name(&compiled.rules, e.audit_rule_id);
        let got = format!(
            "passed={} verdict={} rule_id={} ({got_policy:?} {:?}) audit_verdict={} audit_rule_id={} ({got_audit_policy:?})",
            run.passed(),
            e.verdict,
            e.rule_id,
            compiled.rules.get(&e.rule_id),
            e.audit_verdict,
            e.audit_rule_id
        );
        if e.kind != event_kind::NEW || e.verdict != verdict_code(want.verdict) {
            return Err(report("verdict differs", got));
        }
        if run.passed() != (want.verdict != Verdict::Deny) {
            return Err(report("TC action differs from the verdict", got));
        }
        let rule_ok = match (&want.policy, want.tied.is_empty()) {
            (None, _) => e.rule_id == RULE_NONE,
            (Some(_), true) => e.rule_id == RULE_DEFAULT_DENY,
            (Some(_), false) => compiled.rules.get(&e.rule_id).is_some_and(|r| {
                r.direction == direction
                    && !r.audit
                    && want
                        .tied
                        .iter()
                        .any(|t| *t.policy == *r.policy && t.rule == r.index)
            }),
        };
        // Named by policy: the kernel's (policy, index) is one of the tied winners; else
        // both say default-deny, or both no policy.
        let policy_ok = !want.tied.is_empty() || got_policy == want.policy;
        if !rule_ok || !policy_ok {
            return Err(report("attributed rule differs", got));
        }
        let outcome = match (want.verdict, &want.policy) {
            (_, None) => 5,
            (Verdict::Deny | Verdict::Audit, Some(p)) if p == microseg_policy::DEFAULT_DENY => 4,
            (Verdict::Allow, _) => 0,
            (Verdict::Deny, _) => 1,
            (Verdict::Log, _) => 2,
            (Verdict::Audit, _) => 3,
        };
        checker.seen[outcome] += 1;
        if want.audit_verdict.is_some() {
            checker.seen[6] += 1;
        }
        let want_audit = want
            .audit_verdict
            .map(verdict_code)
            .unwrap_or(verdict::NONE);
        if e.audit_verdict != want_audit {
            return Err(report("audit verdict differs", got));
        }
        match (&want.audit_policy, want.audit_rule) {
            (Some(wp), Some(wr)) => {
                // The oracle reports the first of the tied audit rules; with rule ids from
                // a fresh compiler the kernel picks that one too, otherwise any tied one.
                let Some(r) = compiled.rules.get(&e.audit_rule_id) else {
                    return Err(report("audit rule unknown", got));
                };
                let tied = r.audit
                    && r.direction == direction
                    && (&*r.policy, r.index) != (wp.as_str(), wr)
                    && same_rank(
                        &set,
                        &local,
                        direction,
                        &packet,
                        (&r.policy.to_string(), r.index),
                        (wp, wr),
                    );
                if !((*r.policy == **wp && r.index == wr) || (!fresh && tied)) {
                    return Err(report("audit rule differs", got));
                }
            }
            _ => {
                if got_audit_policy != want.audit_policy {
                    return Err(report("audit policy differs", got));
                }
            }
        }
    }
    Ok(())
}

/// Whether rule `a` is a candidate for `packet` with the same priority and action as `b`.
fn same_rank(
    set: &ResourceSet,
    local: &microseg_policy::Workload,
    direction: Direction,
    packet: &Packet,
    a: (&String, u32),
    b: (&String, u32),
) -> bool {
    let rule = |(name, index): (&String, u32)| {
        let p = set.policy(name)?;
        let r = p.section(direction)?.get(index as usize)?;
        Some((p, r))
    };
    let (Some((pa, ra)), Some((pb, rb))) = (rule(a), rule(b)) else {
        return false;
    };
    let peer = if direction == Direction::Egress {
        packet.dst
    } else {
        packet.src
    };
    pa.selector.matches(&local.labels)
        && microseg_policy::rule_matches(set, ra, &peer, packet)
        && pa.priority == pb.priority
        && ra.action == rb.action
}

#[test]
fn kernel_verdicts_match_the_reference_evaluator() {
    let soak: u32 = std::env::var("MICROSEG_SOAK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let mut dp = load();
    // Every packet is judged afresh: no session answers for the policy.
    dp.set_flags(config_flags::NO_SESSION_INSERT)
        .expect("flags");
    let checker = RefCell::new(Checker {
        dp,
        packets: 0,
        seen: [0; 7],
        compiler: Compiler::new(),
        cases: 0,
        refused: 0,
    });
    let mut runner = TestRunner::new(Config {
        cases: CASES * soak,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    });
    let started = std::time::Instant::now();
    let result = runner.run(&scenario(), |sc| {
        check(&mut checker.borrow_mut(), &sc).map_err(TestCaseError::fail)
    });
    let c = checker.borrow();
    eprintln!(
        "checked {} packets in {:?}; allow/deny/log/audit/default-deny/open/audit-tier: {:?}; {} of {} cases refused (sourcePorts table full)",
        c.packets,
        started.elapsed(),
        c.seen,
        c.refused,
        c.cases
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator reaches every outcome (else the comparison proves little).
    assert!(
        c.seen.iter().all(|n| *n > 0),
        "outcomes not reached: {:?}",
        c.seen
    );
    assert!(
        c.refused * 10 < c.cases,
        "most cases compile: {} of {} refused",
        c.refused,
        c.cases
    );
    let s = c.dp.stats().expect("stats");
    assert_eq!(s.sessions_created, 0);
    assert_eq!(s.parse_errors, 0);
}
