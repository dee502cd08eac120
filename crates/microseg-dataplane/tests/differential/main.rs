//! Differential tests: random workloads and policies, compiled and loaded into the kernel,
//! must give every random packet the verdict, the rule (one of the tied winners), the
//! audit verdict and the audit policy of the reference evaluator (docs/POLICY.md, "How a
//! verdict is reached"). Once with every packet judged afresh, once with sessions: the
//! packets, their replies, a policy change, then the packets and replies again, against
//! the evaluator extended by the stateful rules (`stateful.rs`).
//!
//! Each case also sends odd frames, its packets' frames cut, overwritten, tagged, given
//! options or extension headers, or replaced by random bytes (`frames.rs`): each must get
//! the verdict docs/POLICY.md gives it (`odd.rs`); with sessions, the malformed ones and
//! those passed without a verdict go between the packets and must leave sessions alone.
//!
//! `MICROSEG_SOAK=N` multiplies the number of cases for a longer run.

#[path = "../common/mod.rs"]
mod common;

mod check;
mod frames;
mod odd;
mod scenario;
mod stateful;
mod yaml;

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use check::{check, Checker};
use common::load;
use microseg_dataplane::common::config_flags;
use microseg_policy::compile::Compiler;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use scenario::{policy_change, scenario};
use stateful::{check_stateful, StatefulChecker};

const CASES: u32 = 1000;
/// Each is four times the packets of a case above, with a session read after each.
const STATEFUL_CASES: u32 = 500;

/// Packets both tests checked, and how many tests finished: the last prints the total.
static CHECKED: AtomicUsize = AtomicUsize::new(0);
static FINISHED: AtomicUsize = AtomicUsize::new(0);

/// Adds one test's packets; the second test to finish prints the run's total (a failing
/// test stops at its first mismatch, so a total is only printed with none).
fn add_checked(packets: usize) {
    let total = CHECKED.fetch_add(packets, Ordering::SeqCst) + packets;
    if FINISHED.fetch_add(1, Ordering::SeqCst) == 1 {
        eprintln!("differential: {total} packets checked, 0 mismatches");
    }
}

fn soak() -> u32 {
    std::env::var("MICROSEG_SOAK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

#[test]
fn kernel_verdicts_match_the_reference_evaluator() {
    let soak = soak();
    let mut dp = load();
    // Every packet is judged afresh: no session answers for the policy. Its NEW event,
    // allowed ones too, tells the verdict.
    dp.set_flags(config_flags::NO_SESSION_INSERT | config_flags::REPORT_START)
        .expect("flags");
    let checker = RefCell::new(Checker {
        dp,
        packets: 0,
        seen: [0; 7],
        compiler: Compiler::new(),
        cases: 0,
        refused: 0,
        odd: Default::default(),
    });
    let mut runner = runner(CASES * soak);
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
    eprintln!(
        "  of them {} odd frames: malformed/passed without a verdict/later fragments/spoofed/judged: {:?} ({} later fragments after their first); {} more the kernel would not run",
        c.odd.seen.iter().sum::<usize>(),
        c.odd.seen,
        c.odd.followed,
        c.odd.not_run
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
        c.odd.seen.iter().all(|n| *n > 0) && c.odd.followed > 0,
        "odd frames' outcomes not reached: {:?}, {} later fragments after their first",
        c.odd.seen,
        c.odd.followed
    );
    assert!(
        c.refused * 10 < c.cases,
        "most cases compile: {} of {} refused",
        c.refused,
        c.cases
    );
    let s = c.dp.stats().expect("stats");
    assert_eq!(s.sessions_created, 0);
    assert_eq!(s.parse_errors, c.odd.seen[0] as u64);
    add_checked(c.packets);
}

#[test]
fn kernel_verdicts_with_sessions_match_the_stateful_reference() {
    let checker = RefCell::new(StatefulChecker {
        dp: load(),
        compiler: Compiler::new(),
        cases: 0,
        refused: 0,
        tally: Default::default(),
        odd: Default::default(),
    });
    let mut runner = runner(STATEFUL_CASES * soak());
    let started = std::time::Instant::now();
    let result = runner.run(&policy_change(), |change| {
        check_stateful(&mut checker.borrow_mut(), &change).map_err(TestCaseError::fail)
    });
    let c = checker.borrow();
    eprintln!(
        "checked {} packets in {:?}; replies passed/dropped, connections cut/let through by a change: {:?}; {} of {} cases refused (sourcePorts table full); between them {:?} malformed/passed odd frames",
        c.tally.packets,
        started.elapsed(),
        c.tally.seen,
        c.refused,
        c.cases,
        &c.odd.seen[..2]
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // Replies pass and drop with their connection, and policy changes cut connections and
    // let others through (else the comparison proves little).
    let seen = c.tally.seen;
    assert!(
        seen.iter().all(|n| *n > 0),
        "outcomes not reached: {seen:?}"
    );
    assert!(
        c.refused * 10 < c.cases,
        "most cases compile: {} of {} refused",
        c.refused,
        c.cases
    );
    let s = c.dp.stats().expect("stats");
    assert!(s.session_hits > 0 && s.rejudged > 0, "{s:?}");
    assert_eq!(s.parse_errors, c.odd.seen[0] as u64);
    add_checked(c.tally.packets);
}

/// A proptest runner for `cases` cases that keeps no failure file (the seeds are random
/// per run; a failure prints its case).
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    })
}
