//! `--diagnose`: where microseg's time per new connection goes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::agent::map_show;
use crate::cleanup::{register, Undo};
use crate::contender::{Ctx, Who};
use crate::interval::median;
use crate::measure::{cps, iperf};
use crate::report::fmt_rules;
use crate::tools::sh;

/// By BPF program (id, name): (run_cnt, run_time_ns).
type ProgStats = BTreeMap<(u64, String), (u64, u64)>;

/// (run_cnt, run_time_ns) of every BPF program that uses one of our pinned maps.
fn prog_stats(ctx: &Ctx) -> ProgStats {
    let mut ours = std::collections::HashSet::new();
    if let Ok(rd) = std::fs::read_dir(ctx.t.bpffs.join("maps")) {
        for e in rd.flatten() {
            if let Some(v) = map_show(e.path().to_str().unwrap()) {
                if let Some(id) = v["id"].as_u64() {
                    ours.insert(id);
                }
            }
        }
    }
    let mut res = BTreeMap::new();
    let Ok(out) = sh(&["bpftool", "prog", "show", "-j"]) else {
        return res;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) else {
        return res;
    };
    for p in v.as_array().into_iter().flatten() {
        let uses = p["map_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m.as_u64().is_some_and(|m| ours.contains(&m)));
        if uses {
            res.insert(
                (
                    p["id"].as_u64().unwrap_or(0),
                    p["name"].as_str().unwrap_or("?").to_string(),
                ),
                (
                    p["run_cnt"].as_u64().unwrap_or(0),
                    p["run_time_ns"].as_u64().unwrap_or(0),
                ),
            );
        }
    }
    res
}

/// Adds each program's runs and run time between `before` and `after`, divided by `per` and
/// by `reps`, to `into` (by program name).
fn add_delta(
    into: &mut BTreeMap<String, (f64, f64)>,
    before: &ProgStats,
    after: &ProgStats,
    per: f64,
    reps: usize,
) {
    for (k, (cnt1, ns1)) in after {
        let (cnt0, ns0) = before.get(k).copied().unwrap_or((0, 0));
        let (dc, dn) = ((cnt1 - cnt0) as f64, (ns1 - ns0) as f64);
        if dc > 0.0 {
            let e = into.entry(k.1.clone()).or_insert((0.0, 0.0));
            e.0 += dc / per / reps as f64;
            e.1 += dn / per / reps as f64;
        }
    }
}

pub(crate) fn diagnose(ctx: &mut Ctx, rules: &[usize], reps: usize) -> Result<(), String> {
    let stats_path = "/proc/sys/kernel/bpf_stats_enabled";
    let old = std::fs::read_to_string(stats_path).unwrap_or_else(|_| "0".into());
    register(Undo::Cmd(vec![
        "sh".into(),
        "-c".into(),
        format!("echo {} > {stats_path}", old.trim()),
    ]));
    let secs = ctx.secs;
    let mut out = String::from("\nmicroseg --diagnose: conn/s and TCP medians; BPF run time from kernel.bpf_stats_enabled (on only during the 'bpf stats' loops)\n");
    let isecs = ctx.iperf_secs;
    for &n in rules {
        let (mut base, mut base_tcp1) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            base.push(cps(&ctx.t, secs, 2_000_000).0);
            base_tcp1.push(iperf(&ctx.t, 1, isecs));
        }
        ctx.install_base(Who::Microseg)?;
        let (_, tr) = ctx.apply(Who::Microseg, n);
        if tr.is_nan() {
            ctx.teardown(Who::Microseg);
            return Err("microseg: traffic never passed".into());
        }
        std::thread::sleep(Duration::from_millis(300));
        let (mut normal, mut stopped, mut with_stats) = (Vec::new(), Vec::new(), Vec::new());
        let mut per_conn: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        let pid = ctx.agent.as_ref().map(|a| a.id() as i32).unwrap_or(0);
        for _ in 0..reps {
            normal.push(cps(&ctx.t, secs, 2_000_000).0);
            // Agent stopped: the kernel still enforces; no user-space event processing.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            stopped.push(cps(&ctx.t, secs, 2_000_000).0);
            unsafe { libc::kill(pid, libc::SIGCONT) };
            std::thread::sleep(Duration::from_millis(300));
            let _ = std::fs::write(stats_path, "1");
            let before = prog_stats(ctx);
            let w0 = Instant::now();
            let (c, _) = cps(&ctx.t, secs, 2_000_000);
            let conns = c * w0.elapsed().as_secs_f64();
            let after = prog_stats(ctx);
            let _ = std::fs::write(stats_path, old.trim());
            with_stats.push(c);
            add_delta(&mut per_conn, &before, &after, conns, reps);
        }
        // One TCP stream: the programs' share of a CPU while it runs.
        let (mut tcp1, mut tcp1_stats) = (Vec::new(), Vec::new());
        let mut per_sec: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for _ in 0..reps {
            tcp1.push(iperf(&ctx.t, 1, isecs));
            let _ = std::fs::write(stats_path, "1");
            let before = prog_stats(ctx);
            let w0 = Instant::now();
            let g = iperf(&ctx.t, 1, isecs);
            let wall = w0.elapsed().as_secs_f64();
            let after = prog_stats(ctx);
            let _ = std::fs::write(stats_path, old.trim());
            tcp1_stats.push(g);
            add_delta(&mut per_sec, &before, &after, wall, reps);
        }
        let mut ts = String::new();
        let mut busy = 0.0;
        for (name, (runs, ns)) in &per_sec {
            busy += ns;
            ts += &format!(
                "    {name:<24} {runs:>9.0} runs/s  {:>7.0} ns/run  {:>5.2}% of one CPU\n",
                ns / runs,
                ns / 1e7
            );
        }
        let mut ps = String::new();
        let mut total = 0.0;
        for (name, (runs, ns)) in &per_conn {
            total += ns;
            ps += &format!(
                "    {name:<24} {runs:>6.1} runs/conn  {:>7.0} ns/run  {ns:>7.0} ns/conn\n",
                ns / runs
            );
        }
        let m = median(&normal);
        out += &format!(
            "  {} rules: no filter {:.0} conn/s; microseg {:.0} conn/s ({:.2}x); agent SIGSTOPped {:.0} conn/s ({:.2}x); with bpf_stats {:.0}\n{ps}    all microseg programs: {total:.0} ns per connection = {:.1}% of one CPU at {m:.0} conn/s\n",
            fmt_rules(n), median(&base), m, m / median(&base), median(&stopped), median(&stopped) / median(&base), median(&with_stats), total * m / 1e9 * 100.0
        );
        let t1 = median(&tcp1);
        out += &format!(
            "  {} rules, TCP 1 stream: no filter {:.2} Gbit/s; microseg {t1:.2} Gbit/s ({:.2}x); with bpf_stats {:.2} (per second of the iperf3 run, setup included)\n{ts}    all microseg programs: {:.2}% of one CPU\n",
            fmt_rules(n), median(&base_tcp1), t1 / median(&base_tcp1), median(&tcp1_stats), busy / 1e7
        );
        ctx.teardown(Who::Microseg);
    }
    println!("{out}");
    Ok(())
}
