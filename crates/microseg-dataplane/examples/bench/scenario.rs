//! One scenario: a fresh data plane with a policy of n rules and a filled session table,
//! its cases measured and reported, one-rule changes timed, and its kernel memory.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use microseg_dataplane::{
    common::{capacity, config_flags, FlowEvent},
    packet::*,
    Dataplane, Hook, LoadOptions,
};
use microseg_policy::{compile::*, *};

use crate::{
    args::Args,
    components::components,
    measure::{case, ring_capacity_events, run_rounds, Case, Kind},
    memory::{print_map_memory, print_programs},
    policy::{deny_one, peer, port, resource_set, tcp, DB_IP, IFINDEX_LO},
    report::{report, ChangeSample, Totals},
};

/// An address no rule names: its packets meet the default deny.
const WORLD_PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Source ports the session fill uses per peer (1024..1024+FILL_PORTS).
const FILL_PORTS: u32 = 60_000;

/// Opens `n` distinct allowed TCP sessions (one SYN each): peers 0.. of the policy, each
/// on its rule's port, source ports 1024..1024+FILL_PORTS.
fn fill_sessions(dp: &mut Dataplane, n: u32, rules: usize, batch: u32) -> (Duration, u32) {
    let start = Instant::now();
    let mut refused = 0;
    for i in 0..n {
        let p = (i / FILL_PORTS) as usize % rules;
        let sport = 1024 + (i % FILL_PORTS) as u16;
        let f = tcp(peer(p), sport, DB_IP, port(p), TCP_SYN);
        let r = dp
            .test_run(Hook::ToWorkload, &f, IFINDEX_LO, 1)
            .expect("test_run");
        if !r.passed() {
            refused += 1;
        }
        if i % batch == batch - 1 {
            dp.drain_events();
        }
    }
    dp.drain_events();
    (start.elapsed(), refused)
}

/// SYN, SYN-ACK, ACK of an allowed connection from peer(rule): the ACK is then a session hit.
fn establish(dp: &mut Dataplane, rule: usize, sport: u16) -> Vec<u8> {
    let (p, dport) = (peer(rule), port(rule));
    let syn = dp
        .test_run(
            Hook::ToWorkload,
            &tcp(p, sport, DB_IP, dport, TCP_SYN),
            IFINDEX_LO,
            1,
        )
        .unwrap();
    assert!(syn.passed(), "SYN of the benchmark flow refused");
    let synack = dp
        .test_run(
            Hook::FromWorkload,
            // It acknowledges the SYN (sequence 0): the session takes no other answer.
            &Frame::tcp(DB_IP.into(), p.into(), dport, sport, TCP_SYN | TCP_ACK)
                .with_seq(0, 1)
                .bytes(),
            IFINDEX_LO,
            1,
        )
        .unwrap();
    assert!(synack.passed(), "SYN-ACK of the benchmark flow refused");
    let ack = Frame::tcp(p.into(), DB_IP.into(), sport, dport, TCP_ACK)
        .with_seq(1, 1)
        .bytes();
    assert!(dp
        .test_run(Hook::ToWorkload, &ack, IFINDEX_LO, 1)
        .unwrap()
        .passed());
    // What is measured is an established session's packet, nothing else.
    let (_, session) = dp
        .session_for(6, p.into(), sport, DB_IP.into(), dport)
        .expect("the benchmark flow's session");
    assert_eq!(
        session.state,
        microseg_dataplane::common::session_state::ESTABLISHED
    );
    dp.drain_events();
    ack
}

/// Copies the session table into the LRU reference's map, the benchmark flow's session
/// last (were the LRU to evict while filling, it would not be that one). The ACK must miss
/// before (TC action 2) and hit after: the reference finds its key, and only after the fill.
fn fill_lru_reference(dp: &mut Dataplane, rule: usize, sport: u16, ack: &[u8]) {
    let action = |dp: &Dataplane| {
        dp.test_run(Hook::LruReference, ack, IFINDEX_LO, 1)
            .expect("test_run")
            .action
    };
    assert_eq!(action(dp), 2, "LRU reference hit before its fill");
    let t = Instant::now();
    let (bench_key, _) = dp
        .session_for(6, peer(rule).into(), sport, DB_IP.into(), port(rule))
        .expect("the benchmark flow's session");
    let mut entries = dp.sessions();
    let at = entries
        .iter()
        .position(|(k, _)| *k == bench_key)
        .expect("the benchmark flow in the session table");
    let bench = entries.remove(at);
    entries.push(bench);
    dp.fill_lru_reference(&entries)
        .expect("fill the LRU reference");
    assert_eq!(action(dp), 0, "LRU reference missed the benchmark flow");
    println!(
        "LRU reference filled: {} entries, a copy of the session table, in {:.2} s",
        entries.len(),
        t.elapsed().as_secs_f64()
    );
}

/// Adds `deny_one` next to the loaded rules and removes it again, a few times, each
/// compiled by the long-lived compiler and applied as changes: (compile, apply, written).
fn one_rule_changes(
    compiler: &mut Compiler,
    dp: &mut Dataplane,
    set: &ResourceSet,
    local: &[LocalEndpoint],
) -> Vec<ChangeSample> {
    let n = set.policies[0].ingress.as_ref().map_or(0, |r| r.len());
    let mut with = set.clone();
    with.policies.push(std::sync::Arc::new(deny_one(n)));
    // As the agent does when idle after an update: the standby slot gets the whole state
    // once, then each change writes only its own keys.
    let t = Instant::now();
    let caught_up = dp.catch_up_standby().expect("catch up");
    println!(
        "standby slot caught up after the first apply: {caught_up} keys in {:.3} s (the agent does this when idle)",
        t.elapsed().as_secs_f64()
    );
    let mut out = Vec::new();
    for i in 0..10 {
        let next = if i % 2 == 0 { &with } else { set };
        let t = Instant::now();
        let compiled = compiler.compile(next, local);
        let changes = compiled
            .changes
            .expect("an update of one policy is incremental");
        drop(compiled.tables);
        let compile = t.elapsed();
        let t = Instant::now();
        let rep = dp.apply_changes(&changes).expect("apply changes");
        out.push((compile, t.elapsed(), rep.written + rep.removed));
        dp.catch_up_standby().expect("catch up");
    }
    out
}

/// One scenario: a fresh data plane with `rules` rules (0: no policy applied at all, so
/// sessions carry no rule and hits skip the rule counter); with `fill` sessions opened first.
pub(crate) fn scenario(args: &Args, rules: usize, fill: u32, totals: &mut Totals) {
    let title = match (rules, fill) {
        (0, _) => "no policy applied [info]".to_string(),
        (_, 0) => format!("{rules} rule(s), empty session table"),
        _ => format!("{rules} rules, {fill} sessions"),
    };
    println!("\n=== scenario: {title} ===");
    let opts = LoadOptions {
        lru_reference: capacity::SESSIONS,
        ..Default::default()
    };
    let t = Instant::now();
    let mut dp = Dataplane::load(&opts).expect("load (needs root)");
    println!(
        "load: {:.3} s (session table capacity {})",
        t.elapsed().as_secs_f64(),
        opts.sessions
    );

    let mut policy_key = None;
    if rules > 0 {
        let set = resource_set(rules);
        let local = [LocalEndpoint {
            workload: "db".into(),
            ifindex: IFINDEX_LO,
        }];
        let mut compiler = Compiler::new();
        let t = Instant::now();
        let compiled = compiler.compile(&set, &local);
        let compile = t.elapsed();
        let t = Instant::now();
        let _ = Identities::build(&set, &mut IdentityAllocator::default());
        let identities = t.elapsed();
        let t = Instant::now();
        let rep = dp.apply(&compiled.tables).expect("apply");
        let apply = t.elapsed();
        let sz = compiled.tables.sizes();
        println!(
            "compile: {:.3} s   apply: {:.3} s ({} entries written, one slot)   compile+apply: {:.3} s{}",
            compile.as_secs_f64(),
            apply.as_secs_f64(),
            rep.written,
            (compile + apply).as_secs_f64(),
            if rules >= 10_000 {
                format!("  [target < 1 s: {}]", if (compile + apply).as_secs_f64() < 1.0 { "PASS" } else { "MISS" })
            } else {
                String::new()
            }
        );
        println!(
            "  [info] of which Identities::build alone: {:.3} s (timed separately)",
            identities.as_secs_f64()
        );
        println!(
            "tables.sizes(): endpoints {} endpoint_addrs {} identities {} policy {} port_ranges {}",
            sz.endpoints, sz.endpoint_addrs, sz.identities, sz.policy, sz.port_ranges
        );
        totals.compile.push((rules, compile, apply, sz));
        policy_key = compiled
            .tables
            .policy
            .keys()
            .find(|k| k.port == port(rules - 1))
            .copied();
        drop(compiled);
        totals.changes.push((
            rules,
            one_rule_changes(&mut compiler, &mut dp, &set, &local),
        ));
    }

    let ring_events = ring_capacity_events(opts.events_bytes);
    // Leave room for the few events other cases may add in between.
    let batch = (ring_events * 3 / 4).max(1);

    if fill > 0 {
        let (took, refused) = fill_sessions(&mut dp, fill, rules.max(1), batch);
        let t = Instant::now();
        let count = dp.session_count();
        println!(
            "session fill: {fill} SYNs in {:.2} s ({refused} refused); session_count() = {count} of {} ({:.1}% full; counted in {:.2} s)",
            took.as_secs_f64(),
            opts.sessions,
            100.0 * count as f64 / opts.sessions as f64,
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let batched = dp.sessions().len();
        let batched_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let single = dp.sessions_one_by_one().len();
        println!(
            "session table read: {batched} sessions in {batched_s:.3} s in batches, {single} in {:.3} s one key at a time ({:.1}x)",
            t.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64() / batched_s
        );
        totals.fills.push((rules, fill, count));
    }

    let last = rules.max(1) - 1;
    let ack = establish(&mut dp, last, 64_000);
    fill_lru_reference(&mut dp, last, 64_000, &ack);
    let floor_frame = ack.clone();
    let new_allowed = tcp(peer(last), 65_000, DB_IP, port(last), TCP_SYN);
    let new_denied = tcp(WORLD_PEER, 65_000, DB_IP, 5432, TCP_SYN);
    // Judged once here, so that its entry is there: its later copies are found, denied, and
    // send an event at most once a second.
    let denied_again = tcp(WORLD_PEER, 65_001, DB_IP, 5432, TCP_SYN);
    if rules > 0 {
        let run = dp.test_run(Hook::ToWorkload, &denied_again, IFINDEX_LO, 1);
        assert_eq!(run.expect("test run").action, 2, "denied");
    }
    // Every packet without a session now takes the policy path and is never remembered.
    dp.set_flags(config_flags::NO_SESSION_INSERT)
        .expect("set_flags");

    let est_name = match (rules, fill) {
        (0, _) => "established, no rule counter [info]".to_string(),
        (_, 0) => "established (session hit)".to_string(),
        (_, f) => format!("established (session hit), {f} sessions"),
    };
    let mut cases = vec![
        case(
            "floor (Hook::Pass)".into(),
            Kind::Floor,
            Hook::Pass,
            floor_frame,
            0,
            false,
        ),
        // Action 0 on every run: the key was found (a miss returns 2).
        case(
            "LRU lookup reference (one hit, 1M entries, 40-byte key)".into(),
            Kind::LruReference,
            Hook::LruReference,
            ack.clone(),
            0,
            false,
        ),
        case(
            "parse only (ARP, ToWorkload) [info]".into(),
            Kind::ParseOnly,
            Hook::ToWorkload,
            arp(),
            0,
            false,
        ),
        case(
            est_name,
            Kind::Established,
            Hook::ToWorkload,
            ack.clone(),
            0,
            false,
        ),
    ];
    if rules > 0 {
        // An allowed connection is reported at its end: its first packet sends no event,
        // unless the agent set REPORT_START (docs/FLOWS.md).
        cases.push(case(
            "new session, allowed (last rule)".into(),
            Kind::NewAllowed,
            Hook::ToWorkload,
            new_allowed.clone(),
            0,
            false,
        ));
        cases.push(Case {
            report_start: true,
            ..case(
                "new session, allowed, REPORT_START".into(),
                Kind::NewAllowed,
                Hook::ToWorkload,
                new_allowed,
                0,
                true,
            )
        });
        cases.push(case(
            "denied again (its entry found)".into(),
            Kind::DeniedAgain,
            Hook::ToWorkload,
            denied_again,
            2,
            false,
        ));
        cases.push(case(
            "new session, denied (default deny)".into(),
            Kind::NewDenied,
            Hook::ToWorkload,
            new_denied,
            2,
            true,
        ));
    }
    println!(
        "measuring: {} rounds x {} cases x {} packets (event-emitting cases in batches of {batch}; the {} KiB ring holds {ring_events} events of {} B + 8 B header)",
        args.rounds,
        cases.len(),
        args.repeat,
        opts.events_bytes / 1024,
        std::mem::size_of::<FlowEvent>()
    );
    let t = Instant::now();
    run_rounds(&mut dp, &mut cases, args, batch);
    println!("measured in {:.1} s", t.elapsed().as_secs_f64());
    report(&title, &cases, args, totals, rules);
    let st = dp.stats().expect("stats");
    println!(
        "stats: packets {} session_hits {} session_misses {} sessions_created {} rejudged {} events_lost {}",
        st.packets, st.session_hits, st.session_misses, st.sessions_created, st.rejudged, st.events_lost
    );
    if rules > 0 {
        components(&mut dp, args, &ack, last, policy_key, batch);
    }
    if rules == 0 {
        return;
    }
    println!("kernel memory of the maps (fdinfo memlock):");
    let total = print_map_memory();
    totals.memory.push((title.clone(), total));
    println!("programs:");
    print_programs();
}
