//! The cases measured, one measurement of a case, and the rounds that interleave them.

use microseg_dataplane::{
    common::{FlowEvent, Stats},
    Dataplane, Hook,
};

use crate::{args::Args, policy::IFINDEX_LO};

/// Events the ring holds: each record is an 8-byte header plus the event, 8-aligned.
pub(crate) fn ring_capacity_events(ring_bytes: u32) -> u32 {
    let record = (8 + std::mem::size_of::<FlowEvent>() + 7) & !7;
    ring_bytes / record as u32
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Floor,
    LruReference,
    ParseOnly,
    Established,
    NewAllowed,
    NewDenied,
    /// A denied tuple's next packet: its entry is found (docs/SECURITY.md, "Floods of new
    /// tuples": in `MSEG_DENIED`, after a miss in the session table).
    DeniedAgain,
}

pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) hook: Hook,
    pub(crate) frame: Vec<u8>,
    /// The TC action every run must return.
    pub(crate) expect_action: u32,
    /// One ring event per packet: run in batches that fit the ring.
    pub(crate) emits_events: bool,
    /// Run with `REPORT_START` set: allowed new sessions send their NEW event too.
    pub(crate) report_start: bool,
    pub(crate) samples: Vec<f64>,
    pub(crate) events_lost: u64,
    /// Counter deltas of the first measurement, to check the path taken.
    pub(crate) first_delta: Option<Stats>,
}

pub(crate) fn case(
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
        report_start: false,
        samples: vec![],
        events_lost: 0,
        first_delta: None,
    }
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
pub(crate) fn measure(dp: &mut Dataplane, case: &mut Case, repeat: u32, batch: u32) -> f64 {
    dp.set_report_start(case.report_start)
        .expect("set REPORT_START");
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

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub(crate) fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Runs every case `rounds` times, interleaved (the starting case rotates each round).
pub(crate) fn run_rounds(dp: &mut Dataplane, cases: &mut [Case], args: &Args, batch: u32) {
    for round in 0..args.rounds {
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let ns = measure(dp, &mut cases[i], args.repeat, batch);
            cases[i].samples.push(ns);
        }
    }
}
