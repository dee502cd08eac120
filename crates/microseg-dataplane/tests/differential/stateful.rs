//! The run with sessions. The reference is the evaluator extended by the stateful rules of
//! docs/POLICY.md ("Connections are stateful"): a connection is judged by its first packet,
//! in that packet's direction, and its later packets and its replies get that verdict;
//! after a policy change, its next packet has it judged again by the new policy, as its
//! first packet would be. Each direction of a connection that crosses the local hooks both
//! ways (a workload talking to itself) is judged on its own: it is a leg of its own.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use microseg_dataplane::{common::*, Dataplane};
use microseg_policy::{compile::*, evaluate, Decision, Direction, Packet, ResourceSet, Verdict};

use crate::check::{compare, local_endpoints, resources, Addresses, Judged, Judging, Probe};
use crate::common::LO;
use crate::frames::{mutate, read, Reading};
use crate::odd::{check_odd, OddTally};
use crate::scenario::{PolicyChange, Scenario};
use crate::yaml::yaml;

pub struct StatefulChecker {
    pub dp: Dataplane,
    /// Long-lived, as in the run without sessions: every other case uses a fresh one.
    pub compiler: Compiler,
    pub cases: usize,
    /// Cases whose compile (before or after the change) was refused.
    pub refused: usize,
    pub tally: Tally,
    /// The odd frames sent between packets: only malformed ones and those passed without a
    /// verdict, which must leave the sessions as they were.
    pub odd: OddTally,
}

#[derive(Default)]
pub struct Tally {
    pub packets: usize,
    /// Replies passed, replies dropped, connections a policy change cut, connections a
    /// policy change let through.
    pub seen: [usize; 4],
}

/// A policy packets are judged under.
struct Version {
    text: String,
    set: ResourceSet,
    local: microseg_policy::Workload,
    rules: Arc<BTreeMap<u32, RuleInfo>>,
    fresh: bool,
    generation: u32,
}

impl Version {
    fn judging(&self) -> Judging<'_> {
        Judging {
            set: &self.set,
            local: &self.local,
            rules: &self.rules,
            fresh: self.fresh,
        }
    }
}

/// How one direction of a connection was judged, and under which version.
struct Leg {
    want: Decision,
    version: usize,
    generation: u32,
}

/// A connection as the reference sees it: the packet that opened it, and its legs,
/// indexed like the kernel's by the direction each judges (`direction::INGRESS`, `EGRESS`).
struct Connection {
    origin: Packet,
    legs: [Option<Leg>; 2],
}

/// Both directions of a connection share it: protocol and the two (address, port) ends,
/// ordered.
type ConnectionKey = (u8, (IpAddr, u16), (IpAddr, u16));

fn connection_key(p: &Packet) -> ConnectionKey {
    let (a, b) = ((p.src, p.src_port), (p.dst, p.dst_port));
    (p.protocol, a.min(b), a.max(b))
}

fn direction_code(d: Direction) -> u8 {
    match d {
        Direction::Ingress => direction::INGRESS,
        Direction::Egress => direction::EGRESS,
    }
}

fn leg_direction(leg: usize) -> Direction {
    if leg as u8 == direction::EGRESS {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

/// The reference's table of connections across the versions of one case.
struct Reference {
    versions: Vec<Version>,
    connections: HashMap<ConnectionKey, Connection>,
}

impl Reference {
    /// Follows `probe` under the newest version; returns the leg that decides it and
    /// whether that leg is new.
    fn follow(&mut self, probe: &Probe, seen: &mut [usize; 4]) -> (usize, bool) {
        let current = self.versions.len() - 1;
        let v = &self.versions[current];
        let p = probe.packet;
        let conn = self
            .connections
            .entry(connection_key(&p))
            .or_insert_with(|| Connection {
                origin: p,
                legs: [None, None],
            });
        let origin = conn.origin;
        let judge = |leg: usize| Leg {
            want: evaluate(&v.set, &v.local, leg_direction(leg), &origin),
            version: current,
            generation: v.generation,
        };
        // Legs judged under an older generation are judged again first.
        for leg in 0..2 {
            let Some(old) = &conn.legs[leg] else { continue };
            if old.generation != v.generation {
                let new = judge(leg);
                match (
                    old.want.verdict == Verdict::Deny,
                    new.want.verdict == Verdict::Deny,
                ) {
                    (false, true) => seen[2] += 1,
                    (true, false) => seen[3] += 1,
                    _ => {}
                }
                conn.legs[leg] = Some(new);
            }
        }
        let is_orig = (p.src, p.src_port) == (origin.src, origin.src_port);
        let leg = leg_of(direction_code(probe.direction), is_orig);
        let new_leg = conn.legs[leg].is_none();
        if new_leg {
            conn.legs[leg] = Some(judge(leg));
        }
        (leg, new_leg)
    }
}

/// Compiles and applies `sc`'s resources; None when the compile is refused.
fn apply(
    dp: &mut Dataplane,
    compiler: &mut Compiler,
    sc: &Scenario,
    fresh: bool,
) -> Result<Option<Version>, String> {
    let text = yaml(sc);
    let set = resources(&text)?;
    let compiled = compiler.compile(&set, &local_endpoints());
    if !compiled.problems.is_empty() {
        return Ok(None);
    }
    let report = dp
        .apply(&compiled.tables)
        .map_err(|e| format!("apply: {e}"))?;
    Ok(Some(Version {
        local: set.workload("w0").expect("w0").clone(),
        text,
        set,
        rules: compiled.rules.clone(),
        fresh,
        generation: report.generation,
    }))
}

/// Runs one case: the packets, their replies, the policy change, then the packets and
/// their replies again; Err carries a readable report.
pub fn check_stateful(c: &mut StatefulChecker, change: &PolicyChange) -> Result<(), String> {
    let StatefulChecker {
        dp,
        compiler: long_lived,
        cases,
        refused,
        tally,
        odd,
    } = c;
    *cases += 1;
    let fresh = cases.is_multiple_of(2);
    let mut fresh_compiler = Compiler::new();
    let compiler = if fresh {
        &mut fresh_compiler
    } else {
        long_lived
    };
    dp.clear_sessions();
    let Some(before) = apply(dp, compiler, &change.before, fresh)? else {
        *refused += 1;
        return Ok(());
    };
    dp.drain_events();
    let addresses = Addresses::of(&before.set);
    let forward: Vec<Probe> = change
        .before
        .packets
        .iter()
        .map(|ps| addresses.probe(ps))
        .collect();
    let replies: Vec<Probe> = forward.iter().map(Probe::reply).collect();
    let mut reference = Reference {
        versions: vec![before],
        connections: HashMap::new(),
    };
    // The case's odd frames that must not reach policy, one after each packet.
    let inert: Vec<(usize, Vec<u8>)> = change
        .before
        .odd
        .iter()
        .map(|&(i, seed)| (i, mutate(&forward[i].frame.bytes(), seed)))
        .filter(|(_, b)| matches!(read(b), Reading::Malformed | Reading::Passes))
        .collect();
    for (n, (probe, is_reply)) in forward
        .iter()
        .map(|p| (p, false))
        .chain(replies.iter().map(|p| (p, true)))
        .enumerate()
    {
        run(dp, tally, &mut reference, probe, is_reply)?;
        if let Some((i, bytes)) = inert.get(n) {
            let v = &reference.versions[0];
            let base = &forward[*i];
            let ran = check_odd(dp, odd, &v.judging(), base.direction, base.hook, bytes)
                .map_err(|e| format!("{e}\n--- resources ---\n{}", v.text))?;
            tally.packets += usize::from(ran);
        }
    }
    let after = Scenario {
        policies: change.after.clone(),
        ..change.before.clone()
    };
    // Judged by the same compiler as before the change, so its rule ids are not in name
    // order: any of the tied audit rules may be named.
    let Some(after) = apply(dp, compiler, &after, false)? else {
        *refused += 1;
        return Ok(());
    };
    reference.versions.push(after);
    for (probe, is_reply) in forward
        .iter()
        .map(|p| (p, false))
        .chain(replies.iter().map(|p| (p, true)))
    {
        run(dp, tally, &mut reference, probe, is_reply)?;
    }
    Ok(())
}

/// Runs one packet, then compares its TC action, its session's legs and its events with
/// the reference.
fn run(
    dp: &mut Dataplane,
    tally: &mut Tally,
    reference: &mut Reference,
    probe: &Probe,
    is_reply: bool,
) -> Result<(), String> {
    let (leg, new_leg) = reference.follow(probe, &mut tally.seen);
    let p = probe.packet;
    let conn = &reference.connections[&connection_key(&p)];
    let versions = &reference.versions;
    let report = |what: &str, got: String| {
        let mut texts = String::new();
        for (i, v) in versions.iter().enumerate() {
            texts += &format!(
                "--- resources, version {i} (generation {}) ---\n{}",
                v.generation, v.text
            );
        }
        let legs: Vec<_> = conn
            .legs
            .iter()
            .map(|l| l.as_ref().map(|l| (&l.want, l.version, l.generation)))
            .collect();
        format!(
            "{what}\n  packet: {:?} {p:?}{}, version {}\n  connection opened by: {:?}\n  oracle legs [ingress, egress]: {legs:?}\n  kernel: {got}\n{texts}",
            probe.direction,
            if is_reply { " (a reply)" } else { "" },
            versions.len() - 1,
            conn.origin,
        )
    };
    let result = dp
        .test_run(probe.hook, &probe.frame.bytes(), LO, 1)
        .map_err(|e| report("test run failed", e.to_string()))?;
    tally.packets += 1;
    let want = &conn.legs[leg].as_ref().expect("followed").want;
    let passes = want.verdict != Verdict::Deny;
    if is_reply {
        tally.seen[if passes { 0 } else { 1 }] += 1;
    }
    if result.passed() != passes {
        return Err(report(
            "TC action differs",
            format!("passed={}", result.passed()),
        ));
    }
    // A tuple every present leg denies is kept apart, in the denied table (docs/SECURITY.md,
    // "Floods of new tuples"), unless a leg let it through before a policy change: a
    // session stays where it is. Never in both.
    let found = |denied: bool| {
        let find = if denied {
            Dataplane::denied_for
        } else {
            Dataplane::session_for
        };
        find(dp, p.protocol, p.src, p.src_port, p.dst, p.dst_port)
    };
    let (in_sessions, in_denied) = (found(false), found(true));
    let all_deny = conn
        .legs
        .iter()
        .flatten()
        .all(|l| l.want.verdict == Verdict::Deny);
    let session = match (in_sessions, in_denied) {
        (Some((_, s)), None) if !all_deny => s,
        (Some((_, s)), None) | (None, Some((_, s))) if all_deny => s,
        (None, None) => return Err(report("no session", String::new())),
        (s, d) => {
            return Err(report(
                "in the wrong table",
                format!("session table: {s:?}\n  denied table: {d:?}"),
            ))
        }
    };
    for (i, (want, got)) in conn.legs.iter().zip(&session.legs).enumerate() {
        match (want, got.is_present()) {
            (None, false) => {}
            (Some(want), true) => {
                let v = &versions[want.version];
                let judged = Judged::of_leg(got);
                let describe = || {
                    format!(
                        "leg {i}: generation {} {}",
                        got.generation,
                        judged.describe(&v.rules)
                    )
                };
                if got.ifindex != LO || got.generation != want.generation {
                    return Err(report("leg's interface or generation differs", describe()));
                }
                compare(
                    &v.judging(),
                    leg_direction(i),
                    &conn.origin,
                    &want.want,
                    &judged,
                )
                .map_err(|what| report(what, describe()))?;
            }
            _ => return Err(report("legs differ", format!("{session:?}"))),
        }
    }
    // A new leg sends one NEW event unless it allows (an allowed connection is reported
    // when it ends); before any policy change nothing else does (after one, a leg judged
    // again sends one when its verdict or rule changed to anything but allow).
    let news = dp
        .drain_events()
        .into_iter()
        .filter(|e| e.kind == event_kind::NEW)
        .count();
    let expected = usize::from(new_leg && want.verdict != Verdict::Allow);
    let ok = if versions.len() == 1 {
        news == expected
    } else {
        (expected..=expected + 2).contains(&news)
    };
    if !ok {
        return Err(report("NEW events differ", format!("{news} NEW events")));
    }
    Ok(())
}
