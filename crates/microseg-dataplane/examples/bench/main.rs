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
//! - LRU lookup reference: `Hook::LruReference`, the established ACK's key found by one
//!   lookup in an LRU hash of the session table's capacity, key and value, holding as many
//!   entries as the session table (a copy of it); the established case's target is a
//!   ratio to it (docs/PERFORMANCE.md section 1);
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

mod args;
mod components;
mod measure;
mod memory;
mod policy;
mod raw;
mod report;
mod scenario;

use std::{process::Command, time::Instant};

use args::parse_args;
use report::{summary, Totals};
use scenario::scenario;

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
    summary(&args, &totals);
    println!("total time {:.1} s", start.elapsed().as_secs_f64());
}
