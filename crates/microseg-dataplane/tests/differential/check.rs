//! One scenario run through the kernel, every verdict compared with the reference evaluator's;
//! and the pieces the run with sessions shares: the packets of a scenario, and the comparison
//! of one judgement.

use std::collections::BTreeMap;
use std::net::IpAddr;

use microseg_dataplane::{common::*, packet::*, Dataplane, Hook};
use microseg_policy::{compile::*, evaluate, Decision, Direction, Packet, ResourceSet, Verdict};

use crate::common::*;
use crate::frames::{later_of, mutate, read, Reading};
use crate::odd::{check_odd, OddTally};
use crate::scenario::{PacketSpec, Scenario, OTHER_PEERS, PACKET_PORTS};
use crate::yaml::yaml;

pub fn verdict_code(v: Verdict) -> u8 {
    match v {
        Verdict::Allow => verdict::ALLOW,
        Verdict::Deny => verdict::DENY,
        Verdict::Log => verdict::LOG,
        Verdict::Audit => verdict::AUDIT,
    }
}

pub struct Checker {
    pub dp: Dataplane,
    pub packets: usize,
    /// Checked packets by outcome: allow, deny, log, audit, default deny, open, audit-tier
    /// verdicts.
    pub seen: [usize; 7],
    /// One compiler across cases, as the agent keeps one across policy changes: its
    /// numbering (identities, rule ids, profiles) carries over from case to case.
    pub compiler: Compiler,
    pub cases: usize,
    /// Cases whose compile was refused (too many sourcePorts rules for one peer).
    pub refused: usize,
    pub odd: OddTally,
}

/// Generated resources, parsed and validated.
pub fn resources(text: &str) -> Result<ResourceSet, String> {
    let (res, diags) = microseg_policy::parse_str("random.yaml", text);
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
    Ok(set)
}

/// The local workload `w0` on `lo`, the only endpoint of every scenario.
pub fn local_endpoints() -> [LocalEndpoint; 1] {
    [LocalEndpoint {
        workload: "w0".into(),
        ifindex: LO,
    }]
}

/// The local workload's addresses and its peer candidates, by family.
pub struct Addresses {
    local4: Option<IpAddr>,
    local6: Option<IpAddr>,
    peers4: Vec<IpAddr>,
    peers6: Vec<IpAddr>,
}

/// One packet as the kernel gets it (a frame through a hook) and as the evaluator does.
#[derive(Clone)]
pub struct Probe {
    /// [`PacketSpec::kind`].
    pub kind: u8,
    pub frame: Frame,
    pub packet: Packet,
    pub direction: Direction,
    pub hook: Hook,
}

impl Addresses {
    pub fn of(set: &ResourceSet) -> Addresses {
        let local = set.workload("w0").expect("w0");
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
        Addresses {
            local4: local.ips.iter().copied().find(|a| a.is_ipv4()),
            local6: local.ips.iter().copied().find(|a| a.is_ipv6()),
            peers4,
            peers6,
        }
    }

    /// The packet `ps` describes, in or out of the local workload.
    pub fn probe(&self, ps: &PacketSpec) -> Probe {
        let v6 = match (self.local4, self.local6) {
            (Some(_), Some(_)) => ps.v6,
            (Some(_), None) => false,
            _ => true,
        };
        let (me, peers) = if v6 {
            (self.local6.unwrap(), &self.peers6)
        } else {
            (self.local4.unwrap(), &self.peers4)
        };
        let peer = peers[ps.peer % peers.len()];
        let (src, dst) = if ps.egress { (me, peer) } else { (peer, me) };
        let (sport, dport) = (PACKET_PORTS[ps.sport], PACKET_PORTS[ps.dport]);
        let (frame, (protocol, src_port, dst_port)) = match ps.kind {
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
        let (direction, hook) = if ps.egress {
            (Direction::Egress, Hook::FromWorkload)
        } else {
            (Direction::Ingress, Hook::ToWorkload)
        };
        Probe {
            kind: ps.kind,
            frame,
            packet: Packet {
                src,
                dst,
                protocol,
                src_port,
                dst_port,
            },
            direction,
            hook,
        }
    }
}

impl Probe {
    /// The answer to this packet, the other way through the other hook: a SYN-ACK to a
    /// SYN, an echo reply to an echo request, swapped addresses and ports otherwise.
    pub fn reply(&self) -> Probe {
        let p = &self.packet;
        let (src, dst, sport, dport) = (p.dst, p.src, p.dst_port, p.src_port);
        let frame = match self.kind {
            0 => Frame::tcp(src, dst, sport, dport, TCP_SYN | TCP_ACK),
            1 => Frame::udp(src, dst, sport, dport),
            2 => Frame::sctp(src, dst, sport, dport),
            // The request's identifier is its source port, the reply's its destination port.
            3 => Frame::echo_reply(src, dst, dport),
            _ => Frame::new(src, dst, p.protocol, vec![0; 16]),
        };
        let (direction, hook) = match self.direction {
            Direction::Egress => (Direction::Ingress, Hook::ToWorkload),
            Direction::Ingress => (Direction::Egress, Hook::FromWorkload),
        };
        Probe {
            kind: self.kind,
            frame,
            packet: Packet {
                src,
                dst,
                protocol: p.protocol,
                src_port: sport,
                dst_port: dport,
            },
            direction,
            hook,
        }
    }
}

/// What the kernel decided for one direction: from a NEW event, or from a session's leg.
#[derive(Clone, Copy, Debug)]
pub struct Judged {
    pub verdict: u8,
    pub rule_id: u32,
    pub audit_verdict: u8,
    pub audit_rule_id: u32,
}

impl Judged {
    pub fn of_event(e: &FlowEvent) -> Judged {
        Judged {
            verdict: e.verdict,
            rule_id: e.rule_id,
            audit_verdict: e.audit_verdict,
            audit_rule_id: e.audit_rule_id,
        }
    }

    pub fn of_leg(l: &SessionLeg) -> Judged {
        Judged {
            verdict: l.verdict,
            rule_id: l.rule_id,
            audit_verdict: l.audit_verdict,
            audit_rule_id: l.audit_rule_id,
        }
    }

    /// The judgement with the rules it names, for a report.
    pub fn describe(&self, rules: &BTreeMap<u32, RuleInfo>) -> String {
        format!(
            "verdict={} rule_id={} ({:?} {:?}) audit_verdict={} audit_rule_id={} ({:?})",
            self.verdict,
            self.rule_id,
            rule_policy_name(rules, self.rule_id),
            rules.get(&self.rule_id),
            self.audit_verdict,
            self.audit_rule_id,
            rule_policy_name(rules, self.audit_rule_id)
        )
    }
}

/// What a judgement was made under: resources, the local workload and the compile's rules.
pub struct Judging<'a> {
    pub set: &'a ResourceSet,
    pub local: &'a microseg_policy::Workload,
    pub rules: &'a BTreeMap<u32, RuleInfo>,
    /// Rule ids from a fresh compiler, in name order: the kernel then names the same audit
    /// rule among tied ones as the evaluator does.
    pub fresh: bool,
}

/// Compares the kernel's judgement of `packet` in `direction` with the evaluator's
/// decision; Err names what differs.
pub fn compare(
    at: &Judging,
    direction: Direction,
    packet: &Packet,
    want: &Decision,
    got: &Judged,
) -> Result<(), &'static str> {
    if got.verdict != verdict_code(want.verdict) {
        return Err("verdict differs");
    }
    let rules = at.rules;
    let got_policy = rule_policy_name(rules, got.rule_id);
    let rule_ok = match (&want.policy, want.tied.is_empty()) {
        (None, _) => got.rule_id == RULE_NONE,
        (Some(_), true) => got.rule_id == RULE_DEFAULT_DENY,
        (Some(_), false) => rules.get(&got.rule_id).is_some_and(|r| {
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
        return Err("attributed rule differs");
    }
    let want_audit = want
        .audit_verdict
        .map(verdict_code)
        .unwrap_or(verdict::NONE);
    if got.audit_verdict != want_audit {
        return Err("audit verdict differs");
    }
    match (&want.audit_policy, want.audit_rule) {
        (Some(wp), Some(wr)) => {
            // The evaluator reports the first of the tied audit rules; with rule ids from
            // a fresh compiler the kernel picks that one too, otherwise any tied one.
            let Some(r) = rules.get(&got.audit_rule_id) else {
                return Err("audit rule unknown");
            };
            let tied = r.audit
                && r.direction == direction
                && (&*r.policy, r.index) != (wp.as_str(), wr)
                && same_rank(
                    at.set,
                    at.local,
                    direction,
                    packet,
                    (&r.policy.to_string(), r.index),
                    (wp, wr),
                );
            if !((*r.policy == **wp && r.index == wr) || (!at.fresh && tied)) {
                return Err("audit rule differs");
            }
        }
        _ => {
            if rule_policy_name(rules, got.audit_rule_id) != want.audit_policy {
                return Err("audit policy differs");
            }
        }
    }
    Ok(())
}

/// Builds, runs and checks the packets of one scenario; Err carries a readable report.
pub fn check(checker: &mut Checker, sc: &Scenario) -> Result<(), String> {
    let text = yaml(sc);
    let set = resources(&text)?;
    // Every other case with a fresh compiler (rule ids in name order, as the evaluator
    // breaks ties), the others with the long-lived one.
    checker.cases += 1;
    let fresh = checker.cases.is_multiple_of(2);
    let endpoints = local_endpoints();
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
    let at = Judging {
        set: &set,
        local: &local,
        rules: &compiled.rules,
        fresh,
    };
    let addresses = Addresses::of(&set);

    for ps in &sc.packets {
        let Probe {
            frame,
            packet,
            direction,
            hook,
            ..
        } = addresses.probe(ps);
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
        let got = Judged::of_event(e);
        let describe = || format!("passed={} {}", run.passed(), got.describe(&compiled.rules));
        if e.kind != event_kind::NEW {
            return Err(report("verdict differs", describe()));
        }
        compare(&at, direction, &packet, &want, &got).map_err(|what| report(what, describe()))?;
        if run.passed() != (want.verdict != Verdict::Deny) {
            return Err(report("TC action differs from the verdict", describe()));
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
    }
    for &(i, seed) in &sc.odd {
        let base = addresses.probe(&sc.packets[i]);
        let bytes = mutate(&base.frame.bytes(), seed);
        // A first fragment is followed by its next fragment, which must get its verdict.
        let later = match read(&bytes) {
            Reading::Ip { first: Some(_), .. } => later_of(&bytes),
            _ => None,
        };
        for frame in std::iter::once(&bytes).chain(&later) {
            let ran = check_odd(dp, &mut checker.odd, &at, base.direction, base.hook, frame)
                .map_err(|e| {
                    format!("{e}\n  from packet {i}, seed {seed}\n--- resources ---\n{text}")
                })?;
            checker.packets += usize::from(ran);
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
