//! Turns: one contender with one rule count (install, apply, measure, change one rule,
//! remove), and all of them, rule count by rule count, rep by rep, in a rotating order.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::cleanup::STOP;
use crate::contender::{Change, Ctx, Who};
use crate::measure::{cps, iperf, rr, udp_pps};
use crate::memory::kernel_kb;
use crate::report::fmt;

#[derive(Default, Clone)]
pub(crate) struct Sample {
    pub(crate) cps: f64,
    pub(crate) cps_failed: u64,
    pub(crate) tput1: f64,
    pub(crate) tput4: f64,
    pub(crate) udp: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) apply_cmd_ms: f64,
    pub(crate) apply_traffic_ms: f64,
    /// One rule change, every sample of this turn: ms until new connections fail.
    pub(crate) change_ms: Vec<f64>,
    /// The same, until the command returned (microseg: until the agent logged the revision).
    pub(crate) change_cmd_ms: Vec<f64>,
    /// Undoing it: ms until new connections pass again.
    pub(crate) undo_ms: Vec<f64>,
    /// The whole rule set replaced by one without the connection-port rule: ms until new
    /// connections fail, and until the command returned (microseg: the agent's log line).
    pub(crate) replace_ms: f64,
    pub(crate) replace_cmd_ms: f64,
    pub(crate) mem_kernel_kb: f64,
    pub(crate) mem_memlock_kb: f64,
    pub(crate) agent_rss_kb: f64,
    /// The agent's peak RSS (VmHWM) since it started, after the apply.
    pub(crate) agent_hwm_kb: f64,
    /// microseg: the agent's CPU time during the connection loop, in % of one CPU.
    pub(crate) agent_cpu_pct: f64,
}

impl Ctx {
    fn battery(&self, s: &mut Sample) {
        let c0 = self.agent_cpu_ticks();
        let w0 = Instant::now();
        let (c, f) = cps(&self.t, self.secs, 2_000_000);
        if let (Some(a), Some(b)) = (c0, self.agent_cpu_ticks()) {
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            s.agent_cpu_pct = (b - a) / hz / w0.elapsed().as_secs_f64() * 100.0;
        }
        s.cps = c;
        s.cps_failed = f;
        s.tput1 = iperf(&self.t, 1, self.iperf_secs);
        s.tput4 = iperf(&self.t, 4, self.iperf_secs);
        s.udp = udp_pps(&self.t, self.secs, 200_000_000);
        let (p50, p99) = rr(&self.t, self.secs, 200_000);
        s.p50 = p50;
        s.p99 = p99;
    }

    /// One turn: install, apply `n` rules, measure, change one rule, remove.
    fn turn(&mut self, who: Who, n: usize) -> Result<Sample, String> {
        let mut s = Sample::default();
        self.install_base(who)?;
        std::thread::sleep(Duration::from_millis(200));
        let k0 = kernel_kb();
        let m0 = if who == Who::Microseg {
            self.memlock_kb()
        } else {
            0.0
        };
        if who.enforces() {
            let (cmd, traffic) = self.apply(who, n);
            s.apply_cmd_ms = cmd;
            s.apply_traffic_ms = traffic;
            if traffic.is_nan() {
                return Err(format!(
                    "{}: traffic never passed after applying {n} rules",
                    who.name()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        s.mem_kernel_kb = kernel_kb() as f64 - k0 as f64;
        if who == Who::Microseg {
            s.mem_memlock_kb = self.memlock_kb() - m0;
            if let Some(a) = &self.agent {
                let st =
                    std::fs::read_to_string(format!("/proc/{}/status", a.id())).unwrap_or_default();
                let kb = |field: &str| {
                    st.lines()
                        .find(|l| l.starts_with(field))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                        .unwrap_or(f64::NAN)
                };
                s.agent_rss_kb = kb("VmRSS:");
                s.agent_hwm_kb = kb("VmHWM:");
            }
        }
        self.battery(&mut s);
        if who.enforces() {
            // The one-rule change, `changes` times (change, then undo), then the whole rule
            // set replaced by one without that rule.
            for _ in 0..self.changes {
                let (cmd, traffic) = self.change(who, n, Change::One);
                s.change_cmd_ms.push(cmd);
                s.change_ms.push(traffic);
                let (_, back) = self.change(who, n, Change::Undo);
                s.undo_ms.push(back);
                if back.is_nan() {
                    eprintln!(
                        "  {}: traffic did not pass again after the undo",
                        who.name()
                    );
                    break;
                }
            }
            let (cmd, traffic) = self.change(who, n, Change::Replace);
            s.replace_cmd_ms = cmd;
            s.replace_ms = traffic;
        }
        Ok(s)
    }
}

/// Every turn's sample, and its ratio to no filter of the same rep, per (rules, contender).
pub(crate) struct Results {
    pub(crate) samples: BTreeMap<(usize, Who), Vec<Sample>>,
    pub(crate) ratios: BTreeMap<(usize, Who), Vec<Sample>>,
}

/// Every rule count `reps` times, each contender once per rep; a line per turn on stderr.
pub(crate) fn compare(ctx: &mut Ctx, rules: &[usize], reps: usize) -> Result<Results, String> {
    let whos = Who::ALL;
    let mut samples: BTreeMap<(usize, Who), Vec<Sample>> = BTreeMap::new();
    let mut ratios: BTreeMap<(usize, Who), Vec<Sample>> = BTreeMap::new();
    for &n in rules {
        for rep in 0..reps {
            let mut got: BTreeMap<Who, Sample> = BTreeMap::new();
            for k in 0..whos.len() {
                // Rotate the order every repetition so drift falls on every contender.
                let who = whos[(k + rep) % whos.len()];
                if STOP.load(Ordering::SeqCst) {
                    return Err("stopped".into());
                }
                let t0 = Instant::now();
                let res = ctx.turn(who, n);
                ctx.teardown(who);
                match res {
                    Ok(s) => {
                        eprintln!(
                            "rules {n:>6} rep {rep} {:<13} cps {:>7.0} (failed {}) tcp1 {:>6.2} tcp4 {:>6.2} Gbit/s udp {:>8.0} pps rr p50 {:>6.1} p99 {:>7.1} us apply {:>8} ms (traffic {:>8} ms) one change {:?} ms undo {:?} ms replaced {} ms agent cpu {}% rss {} MB peak {} MB [{:.1}s]",
                            who.name(), s.cps, s.cps_failed, s.tput1, s.tput4, s.udp, s.p50, s.p99,
                            fmt(s.apply_cmd_ms, 1), fmt(s.apply_traffic_ms, 1),
                            s.change_ms.iter().map(|x| fmt(*x, 1)).collect::<Vec<_>>(),
                            s.undo_ms.iter().map(|x| fmt(*x, 1)).collect::<Vec<_>>(),
                            fmt(s.replace_ms, 1), fmt(s.agent_cpu_pct, 0),
                            fmt(s.agent_rss_kb / 1024.0, 1), fmt(s.agent_hwm_kb / 1024.0, 1),
                            t0.elapsed().as_secs_f64()
                        );
                        got.insert(who, s);
                    }
                    Err(e) => eprintln!("rules {n:>6} rep {rep} {:<13} FAILED: {e}", who.name()),
                }
            }
            if let Some(base) = got.get(&Who::None).cloned() {
                for (who, s) in &got {
                    ratios.entry((n, *who)).or_default().push(Sample {
                        cps: s.cps / base.cps,
                        tput1: s.tput1 / base.tput1,
                        tput4: s.tput4 / base.tput4,
                        udp: s.udp / base.udp,
                        p50: s.p50 / base.p50,
                        p99: s.p99 / base.p99,
                        ..Default::default()
                    });
                }
            }
            for (who, s) in got {
                samples.entry((n, who)).or_default().push(s);
            }
        }
    }
    Ok(Results { samples, ratios })
}
