//! Two CPUs judging a connection's first packets at once (issue 22 item 3): both find no
//! session and judge it, but only the one whose insert lands opens it; the other reports
//! nothing. Expected: one NEW event and one session per connection, however the first
//! packets of each fall on the CPUs.
//!
//! Two threads, each pinned to a CPU of its own, send each connection's SYN into db at
//! the same moment (a spin barrier per connection), with every start reported
//! (`REPORT_START`). Whether a given pair overlaps inside the kernel is up to the machine;
//! the test counts how many pairs could have raced (both SYNs judged by policy) and needs
//! some for its verdict to mean anything.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use microseg_dataplane::{packet::*, Hook};

use crate::bypass_helpers::*;
use crate::common::*;

const CONNECTIONS: u16 = 2000;

/// Spins until both threads arrived at round `round` (rounds count from 1), or fails
/// after 10 s (the other thread failed).
fn meet(arrived: &AtomicUsize, round: usize) {
    arrived.fetch_add(1, Ordering::AcqRel);
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrived.load(Ordering::Acquire) < 2 * round {
        assert!(
            Instant::now() < deadline,
            "the other thread stopped at round {round}"
        );
        std::hint::spin_loop();
    }
}

fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Sends `CONNECTIONS` SYNs to `port` from both CPUs at once, each pair at the same moment;
/// returns how many pairs were judged by policy on both CPUs.
fn syns_on_two_cpus(env: &Env, port: u16, passes: bool) -> usize {
    let arrived = AtomicUsize::new(0);
    let misses_before = env.dp.stats().expect("stats").session_misses;
    std::thread::scope(|scope| {
        for cpu in 0..2 {
            let arrived = &arrived;
            scope.spawn(move || {
                assert!(pin_to_cpu(cpu), "pin to CPU {cpu}");
                for i in 0..CONNECTIONS {
                    let syn = Frame::tcp(web4(), db4(), 20000 + i, port, TCP_SYN);
                    let frame = syn.with_seq(1000, 0).bytes();
                    meet(arrived, i as usize + 1);
                    let run = env.dp.test_run(Hook::ToWorkload, &frame, LO, 1);
                    assert_eq!(
                        run.expect("test run").passed(),
                        passes,
                        "SYN {i}, CPU {cpu}"
                    );
                }
            });
        }
    });
    let misses = env.dp.stats().expect("stats").session_misses - misses_before;
    // Each pair's second SYN finds the session (or the denied entry) unless it was judged
    // at the same time.
    let judged_twice = misses as usize - CONNECTIONS as usize;
    eprintln!("port {port}: pairs judged by policy on both CPUs: {judged_twice} of {CONNECTIONS}");
    judged_twice
}

#[test]
fn first_packets_judged_at_once_on_two_cpus_open_one_session_and_report_it_once() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipped: one CPU, nothing can race");
        return;
    }
    let mut env = Env::reporting(&with(POLICY), "db");
    let raced = syns_on_two_cpus(&env, ALLOWED_TCP, true);
    assert_eq!(
        env.new_events().len(),
        CONNECTIONS as usize,
        "NEW events, allowed"
    );
    let stats = env.dp.stats().expect("stats");
    assert_eq!(
        stats.sessions_created, CONNECTIONS as u64,
        "sessions opened"
    );
    // Denied tuples go to their own table, under the same rule.
    let raced_denied = syns_on_two_cpus(&env, DENIED_TCP, false);
    assert_eq!(
        env.new_events().len(),
        CONNECTIONS as usize,
        "NEW events, denied"
    );
    assert!(
        raced > 0 && raced_denied > 0,
        "no pair was judged at once: the test proved nothing on this machine"
    );
}
