//! One scenario run through the kernel, every verdict compared with the reference evaluator's.

use std::net::IpAddr;

use microseg_dataplane::{common::*, packet::*, Dataplane, Hook};
use microseg_policy::{compile::*, evaluate, Direction, Packet, ResourceSet, Verdict};

use crate::common::*;
use crate::scenario::{Scenario, OTHER_PEERS, PACKET_PORTS};
use crate::yaml::yaml;

fn verdict_code(v: Verdict) -> u8 {
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
}

/// Builds, runs and checks the packets of one scenario; Err carries a readable report.
pub fn check(checker: &mut Checker, sc: &Scenario) -> Result<(), String> {
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
