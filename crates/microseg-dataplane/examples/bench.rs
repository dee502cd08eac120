//! Data-plane benchmark: nanoseconds per packet through `BPF_PROG_TEST_RUN`, compared with
//! a do-nothing classifier measured in the same run.
//!
//! ```text
//! cargo run --release -p microseg-dataplane --example bench [-- --repeat N] [-- --quick]
//! ```
//!
//! Needs root (or CAP_BPF + CAP_NET_ADMIN) and interface `lo` (ifindex 1).
//!
//! Cases, per scenario (rule count):
//! - floor: `Hook::Pass`, a classifier that only returns TC_ACT_OK;
//! - parse only (for analysis): an ARP frame through `Hook::ToWorkload` (config, stats,
//!   Ethernet parse, return: everything but the session lookup);
//! - established: the ACK of an allowed TCP connection, a session hit on every run;
//! - new session, allowed: a SYN matching the last rule, with session inserts switched off
//!   (`NO_SESSION_INSERT`) so every run misses the session table and takes the policy path;
//! - new session, denied: a SYN from an address no rule names (default deny).
//!
//! Every case runs `--rounds` times, cases interleaved, and the median and minimum are
//! reported. Cases that emit a ring-buffer event per packet run in batches small enough
//! for the ring, which is drained before each batch, so the event reservation never fails
//! fast on a full ring (events_lost is reported to prove it).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    process::Command,
    time::{Duration, Instant},
};

use microseg_dataplane::{
    common::{config_flags, FlowEvent, Stats},
    packet::*,
    Dataplane, Hook, LoadOptions,
};
use microseg_policy::{compile::*, *};

const IFINDEX_LO: u32 = 1;
const DB_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);
/// Rule i allows peer PEER_BASE + i.
const PEER_BASE: u32 = u32::from_be_bytes([172, 16, 0, 0]);
/// An address no rule names: its packets meet the default deny.
const WORLD_PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Source ports the session fill uses per peer (1024..1024+FILL_PORTS).
const FILL_PORTS: u32 = 60_000;

const TARGET_ESTABLISHED_RATIO: f64 = 2.0;
const TARGET_NEW_SESSION_NS: f64 = 300.0;

struct Args {
    repeat: u32,
    rounds: usize,
    sessions: u32,
    rules: Vec<usize>,
    quick: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench [--repeat N] [--rounds N] [--sessions N] [--rules N,N,...] [--quick]\n\
         \x20 --repeat N    packets per measurement (default 1000000; --quick: 100000)\n\
         \x20 --rounds N    measurements per case, interleaved; median and min reported (default 5; --quick: 3)\n\
         \x20 --sessions N  sessions filled before the loaded-table cases (default 1000000; --quick: 100000)\n\
         \x20 --rules LIST  rule counts of the loaded-table scenarios (default 10000,100000)\n\
         \x20 --quick       short run (smaller repeat, rounds and session fill)"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let quick = argv.iter().any(|a| a == "--quick");
    let mut a = Args {
        repeat: if quick { 100_000 } else { 1_000_000 },
        rounds: if quick { 3 } else { 5 },
        sessions: if quick { 100_000 } else { 1_000_000 },
        rules: vec![10_000, 100_000],
        quick,
    };
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> String {
            it.next().cloned().unwrap_or_else(|| {
                eprintln!("{name} needs a value");
                usage()
            })
        };
        let num = |name: &str, v: String| -> u64 {
            v.replace('_', "").parse().unwrap_or_else(|_| {
                eprintln!("{name}: not a number: {v}");
                usage()
            })
        };
        match arg.as_str() {
            "--quick" => {}
            "--repeat" => {
                a.repeat = num("--repeat", value("--repeat")).clamp(1, 100_000_000) as u32
            }
            "--rounds" => a.rounds = num("--rounds", value("--rounds")).clamp(1, 50) as usize,
            "--sessions" => a.sessions = num("--sessions", value("--sessions")).min(1 << 20) as u32,
            "--rules" => {
                let v = value("--rules");
                a.rules = v
                    .split(',')
                    .map(|s| num("--rules", s.to_string()).clamp(1, 250_000) as usize)
                    .collect();
            }
            "-h" | "--help" => usage(),
            other => {
                eprintln!("unknown argument {other}");
                usage()
            }
        }
    }
    a
}

// ---------------------------------------------------------------- policy

fn peer(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(PEER_BASE + i as u32)
}

fn port(i: usize) -> u16 {
    1024 + (i % 60_000) as u16
}

/// Workload `db` on `lo`, and one policy selecting it with `n` ingress rules: rule i allows
/// TCP from peer(i)/32 to port(i).
fn resource_set(n: usize) -> ResourceSet {
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

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    Frame::tcp(IpAddr::V4(src), IpAddr::V4(dst), sport, dport, flags).bytes()
}

// ---------------------------------------------------------------- measuring

/// Events the ring holds: each record is an 8-byte header plus the event, 8-aligned.
fn ring_capacity_events(ring_bytes: u32) -> u32 {
    let record = (8 + std::mem::size_of::<FlowEvent>() + 7) & !7;
    ring_bytes / record as u32
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Floor,
    ParseOnly,
    Established,
    NewAllowed,
    NewDenied,
}

struct Case {
    name: String,
    kind: Kind,
    hook: Hook,
    frame: Vec<u8>,
    /// The TC action every run must return.
    expect_action: u32,
    /// One ring event per packet: run in batches that fit the ring.
    emits_events: bool,
    samples: Vec<f64>,
    events_lost: u64,
    /// Counter deltas of the first measurement, to check the path taken.
    first_delta: Option<Stats>,
}

fn stats_delta(a: &Stats, b: &Stats) -> Stats {
    Stats {
        packets: b.packets - a.packets,
        session_hits: b.session_hits - a.session_hits,
        session_misses: b.session_misses - a.session_misses,
        sessions_created: b.sessions_created - a.sessions_created,
        events_lost: b.events_lost - a.events_lost,
        rejudged: b.rejudged - a.rejudged,
        arp: b.arp - a.arp,
        ..Default::default()
    }
}

/// One measurement: `repeat` packets, in batches of at most `batch` when the case emits
/// events (ring drained before each batch). Returns kernel-measured ns per packet.
fn measure(dp: &mut Dataplane, case: &mut Case, repeat: u32, batch: u32) -> f64 {
    let before = dp.stats().expect("stats");
    let chunk = if case.emits_events {
        batch.min(repeat)
    } else {
        repeat
    };
    let mut left = repeat;
    let mut total_ns = 0f64;
    while left > 0 {
        let n = chunk.min(left);
        dp.drain_events();
        let r = dp
            .test_run(case.hook, &case.frame, IFINDEX_LO, n)
            .expect("test_run");
        assert_eq!(
            r.action, case.expect_action,
            "{}: TC action {} (expected {})",
            case.name, r.action, case.expect_action
        );
        total_ns += r.per_run.as_nanos() as f64 * n as f64;
        left -= n;
    }
    dp.drain_events();
    let after = dp.stats().expect("stats");
    let d = stats_delta(&before, &after);
    case.events_lost += d.events_lost;
    if case.first_delta.is_none() {
        case.first_delta = Some(d);
    }
    total_ns / repeat as f64
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Runs every case `rounds` times, interleaved (the starting case rotates each round).
fn run_rounds(dp: &mut Dataplane, cases: &mut [Case], args: &Args, batch: u32) {
    for round in 0..args.rounds {
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let ns = measure(dp, &mut cases[i], args.repeat, batch);
            cases[i].samples.push(ns);
        }
    }
}

// ---------------------------------------------------------------- reporting

struct Row {
    scenario: String,
    case: String,
    median: f64,
    min: f64,
    ratio: f64,
    target: String,
    result: String,
}

fn path_check(c: &Case, repeat: u32) -> String {
    let Some(d) = c.first_delta else {
        return String::new();
    };
    let r = repeat as u64;
    match c.kind {
        Kind::Floor => format!("classifier counters untouched: {}", d.packets == 0),
        Kind::ParseOnly => format!("arp {} of {r}", d.arp),
        Kind::Established => format!(
            "session hits {} of {r}, misses {}, rejudged {}",
            d.session_hits, d.session_misses, d.rejudged
        ),
        Kind::NewAllowed | Kind::NewDenied => format!(
            "session misses {} of {r}, sessions created {}",
            d.session_misses, d.sessions_created
        ),
    }
}

fn report(scenario: &str, cases: &[Case], args: &Args, rows: &mut Vec<Row>, rules: usize) {
    let floor = cases
        .iter()
        .find(|c| c.kind == Kind::Floor)
        .map(|c| median(&c.samples))
        .unwrap();
    println!(
        "  {:<44} {:>10} {:>9} {:>8}  {:<16} {:<6} samples ns | path check | events lost",
        "case", "median ns", "min ns", "x floor", "target", "result"
    );
    for c in cases {
        let (md, mn) = (median(&c.samples), min(&c.samples));
        let ratio = md / floor;
        let (target, pass) = match c.kind {
            Kind::Established => (
                format!("<= {TARGET_ESTABLISHED_RATIO}x floor"),
                Some(ratio <= TARGET_ESTABLISHED_RATIO),
            ),
            Kind::NewAllowed | Kind::NewDenied if rules >= 100_000 => (
                format!("<= {TARGET_NEW_SESSION_NS} ns"),
                Some(md <= TARGET_NEW_SESSION_NS),
            ),
            _ => ("-".to_string(), None),
        };
        let result = match pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "-",
        };
        let samples: Vec<String> = c.samples.iter().map(|s| format!("{s:.1}")).collect();
        println!(
            "  {:<44} {:>10.1} {:>9.1} {:>8.2}  {:<16} {:<6} [{}] | {} | {}",
            c.name,
            md,
            mn,
            ratio,
            target,
            result,
            samples.join(" "),
            path_check(c, args.repeat),
            c.events_lost
        );
        rows.push(Row {
            scenario: scenario.to_string(),
            case: c.name.clone(),
            median: md,
            min: mn,
            ratio,
            target,
            result: result.to_string(),
        });
    }
}

// ---------------------------------------------------------------- kernel memory

struct FdInfo {
    fields: BTreeMap<String, String>,
}

/// fdinfo of every fd of this process whose target is `anon_inode:bpf-<what>`.
fn bpf_fds(what: &str) -> Vec<FdInfo> {
    let want = format!("anon_inode:bpf-{what}");
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if target.to_string_lossy() != want {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            e.file_name().to_string_lossy()
        )) else {
            continue;
        };
        let fields = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        out.push(FdInfo { fields });
    }
    out
}

/// id → (name, rest of the line) from `bpftool <obj> show`.
fn bpftool_show(obj: &str) -> BTreeMap<u64, (String, String)> {
    let mut out = BTreeMap::new();
    let Ok(o) = Command::new("bpftool").args([obj, "show"]).output() else {
        return out;
    };
    let text = String::from_utf8_lossy(&o.stdout);
    let mut cur: Option<u64> = None;
    for line in text.lines() {
        if let Some((id, rest)) = line
            .split_once(':')
            .filter(|(id, _)| id.trim().parse::<u64>().is_ok())
        {
            let id: u64 = id.trim().parse().unwrap();
            let toks: Vec<&str> = rest.split_whitespace().collect();
            let name = toks
                .iter()
                .position(|t| *t == "name")
                .and_then(|p| toks.get(p + 1))
                .unwrap_or(&"?");
            out.insert(id, (name.to_string(), String::new()));
            cur = Some(id);
        } else if let Some(id) = cur {
            if let Some(e) = out.get_mut(&id) {
                e.1.push_str(line.trim());
                e.1.push(' ');
            }
        }
    }
    out
}

fn map_type_name(t: &str) -> &'static str {
    match t {
        "1" => "hash",
        "2" => "array",
        "3" => "prog_array",
        "6" => "percpu_array",
        "9" => "lru_hash",
        "11" => "lpm_trie",
        "27" => "ringbuf",
        _ => "other",
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Prints every BPF map this process holds (fdinfo memlock) and returns the total bytes.
fn print_map_memory() -> u64 {
    let names = bpftool_show("map");
    let mut maps: Vec<(String, &'static str, u64, u64)> = bpf_fds("map")
        .iter()
        .map(|f| {
            let id: u64 = f
                .fields
                .get("map_id")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let name = names
                .get(&id)
                .map(|n| n.0.clone())
                .unwrap_or_else(|| format!("id {id}"));
            let ty = map_type_name(f.fields.get("map_type").map(String::as_str).unwrap_or(""));
            let max: u64 = f
                .fields
                .get("max_entries")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let memlock: u64 = f
                .fields
                .get("memlock")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (name, ty, max, memlock)
        })
        .collect();
    maps.sort_by(|a, b| b.3.cmp(&a.3).then(a.0.cmp(&b.0)));
    maps.dedup_by(|a, b| a.0 == b.0 && a.3 == b.3);
    let mut total = 0;
    println!(
        "  {:<20} {:<13} {:>12} {:>14} {:>11}",
        "map", "type", "max_entries", "memlock bytes", ""
    );
    for (name, ty, max, mem) in &maps {
        println!(
            "  {name:<20} {ty:<13} {max:>12} {mem:>14} {:>11}",
            mib(*mem)
        );
        total += mem;
    }
    println!(
        "  {:<20} {:<13} {:>12} {:>14} {:>11}",
        "total",
        "",
        "",
        total,
        mib(total)
    );
    total
}

fn print_programs() {
    let info = bpftool_show("prog");
    let mut seen = std::collections::BTreeSet::new();
    for f in bpf_fds("prog") {
        let id: u64 = f
            .fields
            .get("prog_id")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if !seen.insert(id) {
            continue;
        }
        if let Some((name, rest)) = info.get(&id) {
            let keep: Vec<&str> = rest
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|w| matches!(w[0], "xlated" | "jited" | "memlock"))
                .map(|w| w[1])
                .collect();
            println!(
                "  {name:<16} xlated {:>7}  jited {:>7}  verified_insns {}",
                keep.first().unwrap_or(&"?"),
                keep.get(1).unwrap_or(&"?"),
                f.fields
                    .get("verified_insns")
                    .map(String::as_str)
                    .unwrap_or("?")
            );
        }
    }
}

// ---------------------------------------------------------------- scenarios

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
            &tcp(DB_IP, dport, p, sport, TCP_SYN | TCP_ACK),
            IFINDEX_LO,
            1,
        )
        .unwrap();
    assert!(synack.passed(), "SYN-ACK of the benchmark flow refused");
    let ack = tcp(p, sport, DB_IP, dport, TCP_ACK);
    assert!(dp
        .test_run(Hook::ToWorkload, &ack, IFINDEX_LO, 1)
        .unwrap()
        .passed());
    dp.drain_events();
    ack
}

fn case(
    name: String,
    kind: Kind,
    hook: Hook,
    frame: Vec<u8>,
    expect_action: u32,
    emits_events: bool,
) -> Case {
    Case {
        name,
        kind,
        hook,
        frame,
        expect_action,
        emits_events,
        samples: vec![],
        events_lost: 0,
        first_delta: None,
    }
}

type PolicyKeyT = microseg_dataplane::common::PolicyKey;
type IpKeyT = microseg_dataplane::common::IpKey;

#[derive(Default)]
struct Totals {
    rows: Vec<Row>,
    compile: Vec<(
        usize,
        Duration,
        Duration,
        microseg_dataplane::common::tables::TableSizes,
    )>,
    fills: Vec<(usize, u32, usize)>,
    memory: Vec<(String, u64)>,
    /// Rules, then per one-rule change (add, remove).
    changes: Vec<(usize, Vec<ChangeSample>)>,
}

/// One change: compile time, apply time, keys written or removed.
type ChangeSample = (Duration, Duration, usize);

/// A policy of one rule that denies what the last rule of `resource_set(n)` allows, ahead
/// of it (priority 10): the "one rule change" of the side-by-side comparison.
fn deny_one(n: usize) -> Policy {
    let mut p = resource_set(n).policies[0].as_ref().clone();
    p.name = "deny-one".into();
    p.priority = 10;
    let mut rule = p.ingress.as_ref().expect("ingress")[n - 1].clone();
    rule.action = Action::Deny;
    p.ingress = Some(vec![rule]);
    p
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
fn scenario(args: &Args, rules: usize, fill: u32, totals: &mut Totals) {
    let title = match (rules, fill) {
        (0, _) => "no policy applied [info]".to_string(),
        (_, 0) => format!("{rules} rule(s), empty session table"),
        _ => format!("{rules} rules, {fill} sessions"),
    };
    println!("\n=== scenario: {title} ===");
    let opts = LoadOptions::default();
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
    let floor_frame = ack.clone();
    let new_allowed = tcp(peer(last), 65_000, DB_IP, port(last), TCP_SYN);
    let new_denied = tcp(WORLD_PEER, 65_000, DB_IP, 5432, TCP_SYN);
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
        cases.push(case(
            "new session, allowed (last rule)".into(),
            Kind::NewAllowed,
            Hook::ToWorkload,
            new_allowed,
            0,
            true,
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
    report(&title, &cases, args, &mut totals.rows, rules);
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

// ---------------------------------------------------------------- component costs

/// Hand-assembled test programs, to price single operations in the same harness.
mod raw {
    pub struct Insn([u8; 8]);

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        let mut b = [0u8; 8];
        b[0] = code;
        b[1] = (src << 4) | (dst & 0xf);
        b[2..4].copy_from_slice(&off.to_le_bytes());
        b[4..8].copy_from_slice(&imm.to_le_bytes());
        Insn(b)
    }

    pub fn mov_imm(dst: u8, imm: i32) -> Insn {
        insn(0xb7, dst, 0, 0, imm)
    }
    pub fn mov_reg(dst: u8, src: u8) -> Insn {
        insn(0xbf, dst, src, 0, 0)
    }
    pub fn add_imm(dst: u8, imm: i32) -> Insn {
        insn(0x07, dst, 0, 0, imm)
    }
    /// *(u32 *)(r10 + off) = imm
    pub fn st_w(off: i16, imm: i32) -> Insn {
        insn(0x62, 10, 0, off, imm)
    }
    pub fn call(helper: i32) -> Insn {
        insn(0x85, 0, 0, 0, helper)
    }
    pub fn exit() -> Insn {
        insn(0x95, 0, 0, 0, 0)
    }
    /// r{dst} = map (two instructions).
    pub fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [insn(0x18, dst, 1, 0, fd), insn(0, 0, 0, 0, 0)]
    }

    pub const HELPER_MAP_LOOKUP: i32 = 1;
    pub const HELPER_KTIME_GET_NS: i32 = 5;
    pub const HELPER_JIFFIES64: i32 = 118;
    pub const HELPER_RINGBUF_RESERVE: i32 = 131;
    pub const HELPER_RINGBUF_SUBMIT: i32 = 132;
    pub const HELPER_KTIME_GET_COARSE_NS: i32 = 160;

    /// r0 = bpf_ringbuf_reserve(map, size, 0); if r0 { bpf_ringbuf_submit(r0, 0) }; return 0.
    pub fn ringbuf_event(map_fd: i32, size: i32) -> Vec<Insn> {
        let mut v = Vec::new();
        v.extend(ld_map_fd(1, map_fd));
        v.push(mov_imm(2, size));
        v.push(mov_imm(3, 0));
        v.push(call(HELPER_RINGBUF_RESERVE));
        v.push(insn(0x15, 0, 0, 3, 0)); // if r0 == 0 goto +3
        v.push(mov_reg(1, 0));
        v.push(mov_imm(2, 0));
        v.push(call(HELPER_RINGBUF_SUBMIT));
        v.push(mov_imm(0, 0));
        v.push(exit());
        v
    }

    fn sys_bpf(cmd: i64, attr: &mut [u8]) -> i64 {
        // SAFETY: attr is a zero-padded bpf_attr of the right layout for `cmd`.
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
    }

    /// A loaded SCHED_CLS program; closed on drop.
    pub struct Prog(i32);

    impl Drop for Prog {
        fn drop(&mut self) {
            // SAFETY: we own the fd.
            unsafe { libc::close(self.0) };
        }
    }

    pub fn load(insns: &[Insn]) -> Result<Prog, String> {
        let code: Vec<u8> = insns.iter().flat_map(|i| i.0).collect();
        let license = b"GPL\0";
        let mut log = vec![0u8; 1 << 16];
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&3u32.to_ne_bytes()); // BPF_PROG_TYPE_SCHED_CLS
        attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(code.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
        attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
        attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
        attr[48..56].copy_from_slice(b"mseg_bench\0\0\0\0\0\0"[..8].as_ref());
        let fd = sys_bpf(5, &mut attr); // BPF_PROG_LOAD
        if fd < 0 {
            let end = log.iter().position(|b| *b == 0).unwrap_or(0);
            return Err(format!(
                "BPF_PROG_LOAD: {}: {}",
                std::io::Error::last_os_error(),
                String::from_utf8_lossy(&log[..end])
            ));
        }
        Ok(Prog(fd as i32))
    }

    /// Kernel-measured ns per run (integer, as the kernel reports it).
    pub fn test_run(p: &Prog, frame: &[u8], repeat: u32) -> Result<u32, String> {
        let mut out = vec![0u8; frame.len() + 256];
        let mut attr = [0u8; 80];
        attr[0..4].copy_from_slice(&(p.0 as u32).to_ne_bytes());
        attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        attr[12..16].copy_from_slice(&(out.len() as u32).to_ne_bytes());
        attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
        attr[24..32].copy_from_slice(&(out.as_mut_ptr() as u64).to_ne_bytes());
        attr[32..36].copy_from_slice(&repeat.to_ne_bytes());
        if sys_bpf(10, &mut attr) < 0 {
            // BPF_PROG_TEST_RUN
            return Err(format!(
                "BPF_PROG_TEST_RUN: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(u32::from_ne_bytes(attr[36..40].try_into().unwrap()))
    }

    /// `copies` times: r0 = bpf_map_lookup_elem(map, key on the stack); then return 0.
    pub fn lookups(map_fd: i32, key: &[u8], copies: usize) -> Vec<Insn> {
        let mut k = key.to_vec();
        k.resize(key.len().div_ceil(8) * 8, 0);
        let base = -(k.len() as i16);
        let mut v = Vec::new();
        for (i, w) in k.chunks(4).enumerate() {
            v.push(st_w(
                base + 4 * i as i16,
                i32::from_ne_bytes(w.try_into().unwrap()),
            ));
        }
        for _ in 0..copies {
            v.extend(ld_map_fd(1, map_fd));
            v.push(mov_reg(2, 10));
            v.push(add_imm(2, base as i32));
            v.push(call(HELPER_MAP_LOOKUP));
        }
        v.push(mov_imm(0, 0));
        v.push(exit());
        v
    }

    pub fn helper_calls(helper: i32, copies: usize) -> Vec<Insn> {
        let mut v: Vec<Insn> = (0..copies).map(|_| call(helper)).collect();
        v.push(mov_imm(0, 0));
        v.push(exit());
        v
    }
}

/// fd of a map this process holds, by (possibly truncated) kernel name.
fn map_fd(name: &str) -> Option<i32> {
    let names = bpftool_show("map");
    let short = &name[..name.len().min(15)];
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    for e in dir.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:bpf-map" {
            continue;
        }
        let fd: i32 = e.file_name().to_string_lossy().parse().ok()?;
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        let id: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse().ok())?;
        if names.get(&id).is_some_and(|n| n.0 == short) {
            return Some(fd);
        }
    }
    None
}

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: the map key types are repr(C) with explicit padding: every byte is initialised.
    unsafe {
        std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()).to_vec()
    }
}

/// Prices single operations of the classifier paths with hand-assembled programs run in the
/// same harness, against the maps of `dp` as they are now (informative, not a target).
fn components(
    dp: &mut Dataplane,
    args: &Args,
    ack: &[u8],
    last: usize,
    policy_key: Option<PolicyKeyT>,
    batch: u32,
) {
    const COPIES: usize = 4;
    let Some((skey, sess)) = dp.session_for(
        IFINDEX_LO,
        PROTO_TCP,
        IpAddr::V4(peer(last)),
        64_000,
        IpAddr::V4(DB_IP),
        port(last),
    ) else {
        println!("components: benchmark session not found, skipped");
        return;
    };
    let slot = dp.config().map(|c| c.active_slot).unwrap_or(0);
    // (name, program, operations per run, repeat)
    let mut progs: Vec<(String, raw::Prog, usize, u32)> = Vec::new();
    let mut add_n = |name: String,
                     insns: Result<Vec<raw::Insn>, String>,
                     ops: usize,
                     repeat: u32| match insns.and_then(|i| raw::load(&i)) {
        Ok(p) => progs.push((name, p, ops, repeat)),
        Err(e) => println!("  {name}: {e}"),
    };
    let ev_size = std::mem::size_of::<FlowEvent>() as i32;
    add_n(
        "empty program (return 0)".into(),
        Ok(raw::helper_calls(0, 0)),
        1,
        args.repeat,
    );
    add_n(
        format!("1 x ringbuf reserve+submit ({ev_size} B; ring drained, batches of {batch})"),
        map_fd("MSEG_EVENTS")
            .ok_or("map MSEG_EVENTS not found".to_string())
            .map(|f| raw::ringbuf_event(f, ev_size)),
        1,
        batch.min(args.repeat),
    );
    let mut add = |name: String, insns: Result<Vec<raw::Insn>, String>| {
        add_n(name, insns, COPIES, args.repeat)
    };
    add(
        format!("{COPIES} x bpf_ktime_get_coarse_ns()"),
        Ok(raw::helper_calls(raw::HELPER_KTIME_GET_COARSE_NS, COPIES)),
    );
    add(
        format!("{COPIES} x bpf_jiffies64()"),
        Ok(raw::helper_calls(raw::HELPER_JIFFIES64, COPIES)),
    );
    add(
        format!("{COPIES} x bpf_ktime_get_ns()"),
        Ok(raw::helper_calls(raw::HELPER_KTIME_GET_NS, COPIES)),
    );
    let fd = |n: &str| map_fd(n).ok_or(format!("map {n} not found"));
    add(
        format!("{COPIES} x MSEG_SESSIONS lookup (hit)"),
        fd("MSEG_SESSIONS").map(|f| raw::lookups(f, &bytes_of(&skey), COPIES)),
    );
    let mut miss = skey;
    miss.lo_port ^= 0x5555;
    add(
        format!("{COPIES} x MSEG_SESSIONS lookup (miss)"),
        fd("MSEG_SESSIONS").map(|f| raw::lookups(f, &bytes_of(&miss), COPIES)),
    );
    add(
        format!("{COPIES} x MSEG_RULE_COUNTERS lookup"),
        fd("MSEG_RULE_COUNTERS").map(|f| raw::lookups(f, &sess.rule_id.to_ne_bytes(), COPIES)),
    );
    let host_key = IpKeyT {
        slot,
        addr: microseg_dataplane::common::tables::addr_words(IpAddr::V4(peer(last))),
    };
    add(
        format!("{COPIES} x MSEG_HOST_IDENTITIES hash lookup (peer, exact address)"),
        fd("MSEG_HOST_IDENTITIES").map(|f| raw::lookups(f, &bytes_of(&host_key), COPIES)),
    );
    let mut lpm = (160u32).to_ne_bytes().to_vec();
    lpm.extend(bytes_of(&IpKeyT {
        slot,
        addr: microseg_dataplane::common::tables::addr_words(IpAddr::V4(peer(last))),
    }));
    add(
        format!("{COPIES} x MSEG_IDENTITIES LPM lookup (peer)"),
        fd("MSEG_IDENTITIES").map(|f| raw::lookups(f, &lpm, COPIES)),
    );
    if let Some(mut k) = policy_key {
        k.flags = (k.flags & !1) | (slot as u8 & 1);
        add(
            format!("{COPIES} x MSEG_POLICY lookup (hit)"),
            fd("MSEG_POLICY").map(|f| raw::lookups(f, &bytes_of(&k), COPIES)),
        );
        k.port ^= 0x5555;
        add(
            format!("{COPIES} x MSEG_POLICY lookup (miss)"),
            fd("MSEG_POLICY").map(|f| raw::lookups(f, &bytes_of(&k), COPIES)),
        );
    }
    let mut samples: Vec<Vec<f64>> = vec![vec![]; progs.len()];
    for round in 0..args.rounds {
        for k in 0..progs.len() {
            let i = (k + round) % progs.len();
            dp.drain_events();
            match raw::test_run(&progs[i].1, ack, progs[i].3) {
                Ok(ns) => samples[i].push(ns as f64),
                Err(e) => {
                    println!("  {}: {e}", progs[i].0);
                    return;
                }
            }
        }
    }
    let empty = median(&samples[0]);
    dp.drain_events();
    println!(
        "component costs [info] (hand-assembled programs, median of {} rounds; per op = (median - empty) / ops):",
        args.rounds
    );
    for (i, (name, _, ops, _)) in progs.iter().enumerate() {
        let md = median(&samples[i]);
        let per = if i == 0 {
            String::new()
        } else {
            format!("{:>6.1} ns per op", (md - empty) / *ops as f64)
        };
        println!("  {name:<44} {md:>7.1} ns  {per}");
    }
}

fn machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split_once(':').unwrap().1.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "machine: {cpus} CPUs, {cpu}, kernel {}, {date}",
        kernel.trim()
    );
}

fn main() {
    let args = parse_args();
    let start = Instant::now();
    println!("microseg data-plane benchmark (BPF_PROG_TEST_RUN, kernel-measured ns per packet)");
    machine();
    println!(
        "repeat {} packets per measurement, {} rounds, session fill {}, rule counts {:?}{}",
        args.repeat,
        args.rounds,
        args.sessions,
        args.rules,
        if args.quick { " (--quick)" } else { "" }
    );
    let mut totals = Totals::default();
    scenario(&args, 1, 0, &mut totals);
    for &n in &args.rules {
        scenario(&args, n, args.sessions, &mut totals);
    }

    println!(
        "\n=== summary (median of {} rounds; ratio = median / same scenario's floor median) ===",
        args.rounds
    );
    println!(
        "{:<34} {:<44} {:>10} {:>9} {:>8}  {:<16} result",
        "scenario", "case", "median ns", "min ns", "x floor", "target"
    );
    for r in &totals.rows {
        println!(
            "{:<34} {:<44} {:>10.1} {:>9.1} {:>8.2}  {:<16} {}",
            r.scenario, r.case, r.median, r.min, r.ratio, r.target, r.result
        );
    }
    for (n, c, a, _) in &totals.compile {
        println!(
            "compile+apply {n:>6} rules: {:.3} s (compile {:.3} s, apply {:.3} s){}",
            (*c + *a).as_secs_f64(),
            c.as_secs_f64(),
            a.as_secs_f64(),
            if *n >= 10_000 {
                format!(
                    "  target < 1 s: {}",
                    if (*c + *a).as_secs_f64() < 1.0 {
                        "PASS"
                    } else {
                        "MISS"
                    }
                )
            } else {
                String::new()
            }
        );
    }
    for (n, samples) in &totals.changes {
        let mut total: Vec<f64> = samples
            .iter()
            .map(|(c, a, _)| (*c + *a).as_secs_f64() * 1e3)
            .collect();
        total.sort_by(f64::total_cmp);
        let med = total[total.len() / 2];
        let c_med = {
            let mut v: Vec<f64> = samples.iter().map(|s| s.0.as_secs_f64() * 1e3).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let written: Vec<usize> = samples.iter().map(|s| s.2).collect();
        println!(
            "one-rule change {n:>6} rules: compile+apply median {med:.3} ms (compile {c_med:.3} ms; max {:.3} ms over {} changes; keys written per change {:?})  target < 10 ms: {}",
            total[total.len() - 1],
            total.len(),
            written,
            if med < 10.0 { "PASS" } else { "MISS" }
        );
    }
    for (n, fill, count) in &totals.fills {
        println!("session table at {n} rules: {fill} SYNs sent, session_count() = {count}");
    }
    for (title, bytes) in &totals.memory {
        println!("map memory, {title}: {bytes} bytes ({})", mib(*bytes));
    }
    println!("for comparison, the design this replaces claimed 2000-5000 ns per packet and 8000-15000 ns per new session");
    println!("total time {:.1} s", start.elapsed().as_secs_f64());
}
