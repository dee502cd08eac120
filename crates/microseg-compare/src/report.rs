//! The report on stdout: machine and run, the table of medians and ratios to no filter, their
//! spread, the one-rule changes, session memory, and the targets for microseg.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::agent::AGENT_POLL;
use crate::args::Args;
use crate::contender::{Ctx, Who};
use crate::interval::{median, median_interval};
use crate::tools::sh;
use crate::turn::{Results, Sample};

pub(crate) fn fmt(x: f64, dec: usize) -> String {
    if x.is_finite() {
        format!("{x:.dec$}")
    } else {
        "-".into()
    }
}

pub(crate) fn fmt_rules(n: usize) -> String {
    match n {
        0 => "0".into(),
        n if n % 1000 == 0 => format!("{},000", n / 1000),
        n => n.to_string(),
    }
}

/// Medians per (rules, contender) that the targets are checked against; `cps_med` is also
/// the plot's data.
pub(crate) struct Medians {
    pub(crate) cps_med: BTreeMap<(usize, Who), f64>,
    cps_ratio: BTreeMap<(usize, Who), f64>,
    tput_ratio: BTreeMap<(usize, Who), (f64, f64)>,
    change: BTreeMap<(usize, Who), f64>,
    apply: BTreeMap<(usize, Who), f64>,
    replace: BTreeMap<(usize, Who), f64>,
}

/// The whole report, and the medians of conn/s for the plot.
pub(crate) fn render(
    a: &Args,
    ctx: &Ctx,
    res: &Results,
    sess_line: &str,
    started: Instant,
) -> (String, BTreeMap<(usize, Who), f64>) {
    let mut out = String::new();
    let uname = sh(&["uname", "-r"]).unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let date = sh(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default();
    let nproc = sh(&["nproc"]).unwrap_or_default();
    out += &format!(
        "\nmicroseg-compare {}\nmachine: nproc {}, {}, kernel {}, date {}\nreps {} per (rules, contender), order rotated every rep; loop {} s; iperf3 -t {}; ratio = contender / no filter of the same rep; medians\n\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        nproc.trim(), cpu, uname.trim(), date.trim(), a.reps, ctx.secs, ctx.iperf_secs
    );
    let (rows, med, change_lines) = table(a, res);
    out += &rows;
    out += &spread(a, &res.ratios);
    out += &format!(
        "\none rule change (ms; every change and undo after a random 0-{} ms wait, all samples of all reps pooled):\n{change_lines}",
        AGENT_POLL.as_millis()
    );
    out += &format!("\nsessions:\n{sess_line}");

    out += &targets(a, &med, &res.ratios);
    out += &format!("\ntotal time {:.0} s\n", started.elapsed().as_secs_f64());
    (out, med.cps_med)
}

/// The table, one row per (rules, contender); with the medians and the lines on the
/// one-rule changes.
fn table(a: &Args, res: &Results) -> (String, Medians, String) {
    let Results { samples, ratios } = res;
    let whos = Who::ALL;
    let mut out = String::new();
    out += "| rules | contender | conn/s | x | TCP 1 stream Gbit/s | x | TCP 4 streams Gbit/s | x | UDP 64 B kpps | x | RR p50 us | x | RR p99 us | x | apply ms (cmd / traffic) | one rule change ms (traffic) | rule set replaced ms (traffic) | rule memory KiB |\n";
    out += "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n";
    let mut cps_med: BTreeMap<(usize, Who), f64> = BTreeMap::new();
    let mut cps_ratio: BTreeMap<(usize, Who), f64> = BTreeMap::new();
    let mut tput_ratio: BTreeMap<(usize, Who), (f64, f64)> = BTreeMap::new();
    let mut change: BTreeMap<(usize, Who), f64> = BTreeMap::new();
    let mut apply: BTreeMap<(usize, Who), f64> = BTreeMap::new();
    let mut replace: BTreeMap<(usize, Who), f64> = BTreeMap::new();
    let mut change_lines = String::new();
    for &n in &a.rules {
        for who in whos {
            let Some(v) = samples.get(&(n, who)) else {
                continue;
            };
            let m = |f: fn(&Sample) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
            let rt = ratios.get(&(n, who)).cloned().unwrap_or_default();
            let r = |f: fn(&Sample) -> f64| median(&rt.iter().map(f).collect::<Vec<_>>());
            cps_med.insert((n, who), m(|s| s.cps));
            cps_ratio.insert((n, who), r(|s| s.cps));
            tput_ratio.insert((n, who), (r(|s| s.tput1), r(|s| s.tput4)));
            // Every one-rule-change sample of every rep, pooled.
            let all = |f: fn(&Sample) -> &Vec<f64>| -> Vec<f64> {
                v.iter().flat_map(|s| f(s).iter().copied()).collect()
            };
            let ch_all = all(|s| &s.change_ms);
            change.insert((n, who), median(&ch_all));
            if who.enforces() {
                let span = |x: &[f64]| {
                    let x: Vec<f64> = x.iter().copied().filter(|x| x.is_finite()).collect();
                    format!(
                        "median {} (min..max {}..{}, n={})",
                        fmt(median(&x), 1),
                        fmt(x.iter().copied().fold(f64::INFINITY, f64::min), 1),
                        fmt(x.iter().copied().fold(f64::NEG_INFINITY, f64::max), 1),
                        x.len()
                    )
                };
                change_lines += &format!(
                    "  {:>7} {:<13} change: traffic {}; cmd {}\n  {:>7} {:<13} undo:   traffic {}\n  {:>7} {:<13} rule set replaced: traffic {}; cmd {}\n",
                    fmt_rules(n), who.name(), span(&ch_all), span(&all(|s| &s.change_cmd_ms)),
                    "", "", span(&all(|s| &s.undo_ms)),
                    "", "", span(&v.iter().map(|s| s.replace_ms).collect::<Vec<_>>()),
                    span(&v.iter().map(|s| s.replace_cmd_ms).collect::<Vec<_>>())
                );
            }
            replace.insert((n, who), m(|s| s.replace_ms));
            apply.insert((n, who), m(|s| s.apply_traffic_ms));
            let mem = match who {
                Who::None | Who::TcEmpty => "-".to_string(),
                Who::Microseg => format!(
                    "memlock +{} / kernel {:+.0} / agent RSS {} (peak {}) (agent CPU {}% during conn/s)",
                    fmt(m(|s| s.mem_memlock_kb), 0),
                    m(|s| s.mem_kernel_kb),
                    fmt(m(|s| s.agent_rss_kb), 0),
                    fmt(m(|s| s.agent_hwm_kb), 0),
                    fmt(m(|s| s.agent_cpu_pct), 0)
                ),
                _ => format!("kernel {:+.0}", m(|s| s.mem_kernel_kb)),
            };
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                fmt_rules(n), who.name(),
                fmt(m(|s| s.cps), 0), fmt(r(|s| s.cps), 2),
                fmt(m(|s| s.tput1), 2), fmt(r(|s| s.tput1), 2),
                fmt(m(|s| s.tput4), 2), fmt(r(|s| s.tput4), 2),
                fmt(m(|s| s.udp) / 1e3, 0), fmt(r(|s| s.udp), 2),
                fmt(m(|s| s.p50), 1), fmt(r(|s| s.p50), 2),
                fmt(m(|s| s.p99), 1), fmt(r(|s| s.p99), 2),
                if !who.enforces() { "-".into() } else { format!("{} / {}", fmt(m(|s| s.apply_cmd_ms), 1), fmt(m(|s| s.apply_traffic_ms), 1)) },
                if !who.enforces() { "-".into() } else { fmt(change[&(n, who)], 1) },
                if !who.enforces() { "-".into() } else { fmt(m(|s| s.replace_ms), 1) },
                mem
            );
        }
    }
    let med = Medians {
        cps_med,
        cps_ratio,
        tput_ratio,
        change,
        apply,
        replace,
    };
    (out, med, change_lines)
}

/// The spread of the ratio to no filter over the reps.
fn spread(a: &Args, ratios: &BTreeMap<(usize, Who), Vec<Sample>>) -> String {
    let mut out = String::new();
    out += "\nspread of the ratio to no filter over the reps (min..max):\n";
    for &n in &a.rules {
        for who in [Who::TcEmpty, Who::Microseg, Who::Iptables, Who::Nft] {
            let Some(rt) = ratios.get(&(n, who)) else {
                continue;
            };
            let span = |f: fn(&Sample) -> f64| {
                let v: Vec<f64> = rt.iter().map(f).filter(|x| x.is_finite()).collect();
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("{}..{}", fmt(lo, 2), fmt(hi, 2))
            };
            out += &format!(
                "  {:>7} {:<13} conn/s {}  tcp1 {}  tcp4 {}  udp {}  (n={})\n",
                fmt_rules(n),
                who.name(),
                span(|s| s.cps),
                span(|s| s.tput1),
                span(|s| s.tput4),
                span(|s| s.udp),
                rt.len()
            );
        }
    }
    out
}

/// Coverage asked of the intervals beside the targets' medians.
const COVERAGE: f64 = 0.9;

/// ` (93% CI 0.79-0.90, n=8; 0.9 is inside: not resolved by this run)`: how sure this run
/// is of a median against a target's `line`.
fn interval_note(ratios: &[f64], line: f64) -> String {
    match median_interval(ratios, COVERAGE) {
        Some(i) => format!(
            " ({:.0}% CI {}-{}, n={}; {})",
            i.coverage * 100.0,
            fmt(i.low, 2),
            fmt(i.high, 2),
            ratios.iter().filter(|x| x.is_finite()).count(),
            if i.excludes(line) {
                format!("resolved against {line}")
            } else {
                format!("{line} is inside: not resolved by this run")
            }
        ),
        None => String::new(),
    }
}

/// Targets for microseg (issue 5).
fn targets(a: &Args, med: &Medians, ratios: &BTreeMap<(usize, Who), Vec<Sample>>) -> String {
    // One contender's per-repetition ratios of one measure, at one rule count or pooled.
    let reps = |who: Who, rules: &[usize], f: fn(&Sample) -> f64| -> Vec<f64> {
        rules
            .iter()
            .filter_map(|n| ratios.get(&(*n, who)))
            .flat_map(|v| v.iter().map(f))
            .collect()
    };
    let Medians {
        cps_ratio,
        tput_ratio,
        change,
        apply,
        replace,
        ..
    } = med;
    let mut out = String::new();
    out += "\ntargets for microseg (issue 5):\n";
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let fin = |x: f64| x.is_finite();
    for &n in &a.rules {
        let r = cps_ratio
            .get(&(n, Who::Microseg))
            .copied()
            .unwrap_or(f64::NAN);
        out += &format!(
            "  {} conn/s >= 0.9x no filter at {} rules: {}x{}\n",
            verdict(fin(r) && r >= 0.9),
            fmt_rules(n),
            fmt(r, 2),
            interval_note(&reps(Who::Microseg, &[n], |s| s.cps), 0.9)
        );
    }
    if let Some(&top) = a.rules.iter().max() {
        let m = cps_ratio
            .get(&(top, Who::Microseg))
            .copied()
            .unwrap_or(f64::NAN);
        let nf = cps_ratio.get(&(top, Who::Nft)).copied().unwrap_or(f64::NAN);
        let ip = cps_ratio
            .get(&(top, Who::Iptables))
            .copied()
            .unwrap_or(f64::NAN);
        out += &format!(
            "  {} conn/s at {} rules at least nftables: microseg {}x vs nftables {}x\n",
            verdict(fin(m) && fin(nf) && m >= nf),
            fmt_rules(top),
            fmt(m, 2),
            fmt(nf, 2)
        );
        out += &format!(
            "  {} conn/s at {} rules > 15x iptables: microseg/iptables = {}\n",
            verdict(fin(m) && fin(ip) && m > 15.0 * ip),
            fmt_rules(top),
            fmt(m / ip, 1)
        );
        let ch = change
            .get(&(top, Who::Microseg))
            .copied()
            .unwrap_or(f64::NAN);
        out += &format!("  {} one rule change enforced on traffic < 10 ms with {} rules: {} ms (nftables {} ms, iptables {} ms)\n", verdict(fin(ch) && ch < 10.0), fmt_rules(top), fmt(ch, 1), fmt(change.get(&(top, Who::Nft)).copied().unwrap_or(f64::NAN), 1), fmt(change.get(&(top, Who::Iptables)).copied().unwrap_or(f64::NAN), 1));
        let rp = |w: Who| replace.get(&(top, w)).copied().unwrap_or(f64::NAN);
        out += &format!(
            "  info: rule set replaced (whole set rewritten without that rule) with {} rules: {} ms (nftables {} ms, iptables {} ms)\n",
            fmt_rules(top),
            fmt(rp(Who::Microseg), 1),
            fmt(rp(Who::Nft), 1),
            fmt(rp(Who::Iptables), 1)
        );
        let ap = apply
            .get(&(top, Who::Microseg))
            .copied()
            .unwrap_or(f64::NAN);
        out += &format!(
            "  {} {} rules applied (traffic passes) < 1 s: {} ms\n",
            verdict(fin(ap) && ap < 1000.0),
            fmt_rules(top),
            fmt(ap, 1)
        );
    }
    for &n in &a.rules {
        let (t1, t4) = tput_ratio
            .get(&(n, Who::Microseg))
            .copied()
            .unwrap_or((f64::NAN, f64::NAN));
        out += &format!(
            "  {} TCP throughput >= 0.95x at {} rules: 1 stream {}x{}, 4 streams {}x\n",
            verdict(fin(t1) && fin(t4) && t1 >= 0.95 && t4 >= 0.95),
            fmt_rules(n),
            fmt(t1, 2),
            interval_note(&reps(Who::Microseg, &[n], |s| s.tput1), 0.95),
            fmt(t4, 2)
        );
    }
    // microseg's work per connection is the same at every rule count (--diagnose), so all
    // its repetitions measure one level; pooled, they pin it down far better than 8 do.
    if a.rules.len() > 1 {
        for (what, line, f) in [
            ("conn/s", 0.9, (|s: &Sample| s.cps) as fn(&Sample) -> f64),
            ("TCP 1 stream", 0.95, |s: &Sample| s.tput1),
        ] {
            for who in [Who::Microseg, Who::Nft, Who::TcEmpty] {
                let v = reps(who, &a.rules, f);
                out += &format!(
                    "  info: {what} pooled over all rule counts, {}: {}x{}\n",
                    who.name(),
                    fmt(median(&v), 3),
                    interval_note(&v, line)
                );
            }
        }
    }
    // What microseg adds to the hook itself: its ratio over the empty program's (medians).
    for &n in &a.rules {
        let get = |w: Who| cps_ratio.get(&(n, w)).copied().unwrap_or(f64::NAN);
        let tput = |w: Who| tput_ratio.get(&(n, w)).map_or(f64::NAN, |t| t.0);
        out += &format!(
            "  info: at {} rules the empty tc program got conn/s {}x and TCP 1 stream {}x; microseg relative to it: conn/s {}x, TCP 1 stream {}x\n",
            fmt_rules(n),
            fmt(get(Who::TcEmpty), 2),
            fmt(tput(Who::TcEmpty), 2),
            fmt(get(Who::Microseg) / get(Who::TcEmpty), 2),
            fmt(tput(Who::Microseg) / tput(Who::TcEmpty), 2)
        );
    }
    out
}
