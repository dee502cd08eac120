//! Differential test: random workloads and policies, compiled and loaded into the kernel,
//! must give every random packet the verdict, the rule (one of the tied winners), the
//! audit verdict and the audit policy of the reference evaluator (CONTRACT §1).
//!
//! `MICROSEG_SOAK=N` multiplies the number of cases for a longer run.

#[path = "../common/mod.rs"]
mod common;

mod check;
mod scenario;
mod yaml;

use std::cell::RefCell;

use check::{check, Checker};
use common::load;
use microseg_dataplane::common::config_flags;
use microseg_policy::compile::Compiler;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use scenario::scenario;

const CASES: u32 = 1000;

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
