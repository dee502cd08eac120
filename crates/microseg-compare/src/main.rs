//! `microseg-compare`: microseg against no filter, an empty TC program, iptables (nft back
//! end) and nftables, side by side in one run, on a topology of network namespaces this
//! command creates and removes.
//!
//! Topology (all names carry the process id, everything is removed on exit, also on failure
//! and on SIGINT/SIGTERM/SIGHUP):
//!
//! ```text
//!  CLI netns            NODE netns (a router: ip_forward=1 in this namespace only)     SRV netns
//!  eth0 10.91.1.2 ──veth── veth-cli 10.91.1.1      veth-srv 10.91.2.1 ──veth── eth0 10.91.2.2
//! ```
//!
//! Every filter lives in NODE: microseg's classifiers on the host ends of the veths (the
//! agent runs there via `nsenter --net`), iptables/nftables in NODE's FORWARD hook. The empty
//! TC program (a classic-BPF `return 0` on the same four hooks, through `tc`) is the floor any
//! TC-based filter pays, so the table shows what the hook costs and what microseg adds. Nothing
//! is touched outside these namespaces except a bpffs directory of our own.
//!
//! Rule sets of size N: N-1 rules that match no test traffic (rule i allows TCP from
//! 172.16.0.0+i+1/32 to the server, port 1024+(i mod 60000)), then the rule that allows the
//! real client→server flows (TCP 7001 iperf3, 7002 connections, 7003 request/response,
//! UDP 7004). N = 0 means just that allowing rule.
//!
//! Rule changes: "one rule change" is one rule for every contender (microseg: a separate
//! one-rule deny file at priority 10 next to the big policy, removed again to undo;
//! iptables: `-D`/`-A` of one rule; nftables: delete/add of one map element), repeated
//! `--changes` times per turn; "rule set replaced" rewrites the whole set without that rule.
//! Every write waits a random 0-100 ms first, so it lands at a random phase of the agent's
//! 100 ms policy poll.

mod agent;
mod args;
mod cleanup;
mod contender;
mod diagnose;
mod interval;
mod measure;
mod memory;
mod plot;
mod probe;
mod report;
mod rules;
mod servers;
mod tools;
mod topology;
mod turn;

use std::collections::BTreeMap;
use std::time::Instant;

use args::{parse_args, Args};
use cleanup::{cleanup_all, install_signal_thread, register, Undo};
use contender::Ctx;
use rules::RuleFiles;
use topology::Topo;

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("microseg-compare: {e}");
            std::process::exit(2);
        }
    };
    install_signal_thread();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&args)));
    cleanup_all();
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("microseg-compare: {e}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(101),
    }
}

fn run(a: &Args) -> Result<(), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces, BPF, netfilter)".into());
    }
    let started = Instant::now();
    tools::ensure_tools()?;
    let bin = match &a.bin {
        Some(b) => b
            .canonicalize()
            .map_err(|e| format!("{}: {e}", b.display()))?,
        None => tools::build_microseg()?,
    };

    let t = Topo::new()?;
    servers::start_servers(&t)?;
    let mut files = BTreeMap::new();
    for &n in &a.rules {
        files.insert(n, RuleFiles::write(&t.dir, n));
    }
    let mut ctx = Ctx {
        bin,
        secs: if a.quick { 1.0 } else { 1.5 },
        iperf_secs: if a.quick { 1 } else { 2 },
        t,
        files,
        agent: None,
        changes: a.changes,
        revision_seen: 0,
        agent_logs: a.agent_logs.clone(),
        agents_started: 0,
    };
    register(Undo::Cmd(ctx.agent_cleanup_cmd()));
    register(Undo::Dir(ctx.t.bpffs.clone()));

    if a.diagnose {
        return diagnose::diagnose(&mut ctx, &a.rules, a.reps);
    }
    let res = turn::compare(&mut ctx, &a.rules, a.reps)?;
    let sess_line = memory::session_costs(&mut ctx);
    let (out, cps_med) = report::render(a, &ctx, &res, &sess_line, started);
    println!("{out}");
    if let Some(p) = &a.svg {
        plot::svg(
            p,
            &a.rules,
            &cps_med,
            "New TCP connections per second vs. rule count",
        )
        .map_err(|e| format!("{}: {e}", p.display()))?;
        println!("plot written to {}", p.display());
    }
    Ok(())
}
