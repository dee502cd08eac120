//! Contenders (no filter, an empty TC program, microseg, iptables, nftables) and what each
//! does in a turn: install its base state, apply a rule set, change one rule, tear down.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::agent::{AGENT_POLL, DENY_ONE_FILE};
use crate::probe::spawn_probe;
use crate::rules::{iptables_rules, microseg_deny_one, nft_rules, RuleFiles};
use crate::tools::sh;
use crate::topology::{Topo, CLI_IP, P_CPS, SRV_IP};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Who {
    None,
    /// The floor of any TC-based filter: an empty classifier on the four hooks microseg
    /// uses (ingress and egress of both workload veths), enforcing nothing.
    TcEmpty,
    Microseg,
    Iptables,
    Nft,
}

impl Who {
    /// Every contender, in the order of the report.
    pub(crate) const ALL: [Who; 5] = [
        Who::None,
        Who::TcEmpty,
        Who::Microseg,
        Who::Iptables,
        Who::Nft,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Who::None => "no filter",
            Who::TcEmpty => "empty tc prog",
            Who::Microseg => "microseg",
            Who::Iptables => "iptables-nft",
            Who::Nft => "nftables",
        }
    }

    /// Whether it enforces the rule sets (and so has apply and change times).
    pub(crate) fn enforces(self) -> bool {
        !matches!(self, Who::None | Who::TcEmpty)
    }
}

/// The workload veths in NODE, where microseg attaches.
const WORKLOAD_VETHS: [&str; 2] = ["veth-cli", "veth-srv"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Change {
    /// The one-rule change: microseg writes a one-rule deny file (priority 10) next to the
    /// big policy; iptables deletes one rule; nftables deletes one map element.
    One,
    /// Undoes `One`: removes the file, appends the rule, adds the element back.
    Undo,
    /// The whole rule set replaced by the same set without the connection-port rule
    /// (microseg: the 10 MB policy file rewritten; iptables-nft-restore; nft -f).
    Replace,
}

static RNG: AtomicU64 = AtomicU64::new(0);

/// A uniformly random duration in [0, max), from a xorshift64* seeded by the clock and pid.
fn jitter(max: Duration) -> Duration {
    let mut x = RNG.load(Ordering::Relaxed);
    if x == 0 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        x = t ^ ((std::process::id() as u64) << 32) | 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    RNG.store(x, Ordering::Relaxed);
    let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    Duration::from_nanos(((r >> 11) as f64 / (1u64 << 53) as f64 * max.as_nanos() as f64) as u64)
}

/// Ms since `t0` when the command succeeded; NaN (and the error printed) when it failed.
fn ms_since(t0: Instant, r: Result<String, String>) -> f64 {
    match r {
        Ok(_) => t0.elapsed().as_secs_f64() * 1e3,
        Err(e) => {
            eprintln!("  {e}");
            f64::NAN
        }
    }
}

pub(crate) struct Ctx {
    pub(crate) bin: PathBuf,
    pub(crate) t: Topo,
    pub(crate) secs: f64,
    pub(crate) iperf_secs: u32,
    pub(crate) files: BTreeMap<usize, RuleFiles>,
    pub(crate) agent: Option<Child>,
    /// One-rule changes (each followed by its undo) per turn.
    pub(crate) changes: usize,
    pub(crate) revision_seen: u64,
    /// `--agent-logs DIR`: each agent's log is kept there (with `MICROSEG_LOG=debug`, the
    /// step timings of every update).
    pub(crate) agent_logs: Option<PathBuf>,
    pub(crate) agents_started: usize,
}

impl Ctx {
    fn node_exec(&self, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["ip", "netns", "exec", self.t.node.as_str()];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Installs the contender's base state: default deny for the server (microseg: agent
    /// up with an empty ingress section; iptables/nftables: FORWARD policy drop).
    pub(crate) fn install_base(&mut self, who: Who) -> Result<(), String> {
        match who {
            Who::None => Ok(()),
            Who::TcEmpty => {
                for dev in WORKLOAD_VETHS {
                    self.node_exec(&["tc", "qdisc", "add", "dev", dev, "clsact"])?;
                    for hook in ["ingress", "egress"] {
                        // Classic BPF "return 0": no match, the packet goes on.
                        self.node_exec(&[
                            "tc",
                            "filter",
                            "add",
                            "dev",
                            dev,
                            hook,
                            "bpf",
                            "bytecode",
                            "1,6 0 0 0",
                        ])?;
                    }
                }
                Ok(())
            }
            Who::Microseg => self.start_agent(),
            Who::Iptables => {
                let f = self.t.dir.join("ipt-base.rules");
                std::fs::write(&f, iptables_rules(None, true)).unwrap();
                self.node_exec(&["iptables-nft-restore", f.to_str().unwrap()])
                    .map(|_| ())
            }
            Who::Nft => {
                let f = self.t.dir.join("nft-base.nft");
                std::fs::write(&f, nft_rules(None, true)).unwrap();
                self.node_exec(&["nft", "-f", f.to_str().unwrap()])
                    .map(|_| ())
            }
        }
    }

    /// Applies the rule set of size `n`: (command ms, traffic ms).
    pub(crate) fn apply(&mut self, who: Who, n: usize) -> (f64, f64) {
        std::thread::sleep(jitter(AGENT_POLL));
        let (tx, probe) = spawn_probe(&self.t, true, Duration::from_secs(90));
        let files = &self.files[&n];
        let (mseg, ipt, nft) = (
            files.mseg_full.clone(),
            files.ipt.clone(),
            files.nft.clone(),
        );
        let t0 = Instant::now();
        tx.send(t0).ok();
        let cmd_ms = match who {
            Who::Microseg => {
                self.copy_policy_file("bench.yaml", &mseg);
                self.wait_revision(t0, Duration::from_secs(90))
            }
            Who::Iptables => ms_since(
                t0,
                self.node_exec(&["iptables-nft-restore", ipt.to_str().unwrap()]),
            ),
            Who::Nft => ms_since(t0, self.node_exec(&["nft", "-f", nft.to_str().unwrap()])),
            Who::None | Who::TcEmpty => f64::NAN,
        };
        let traffic = probe.join().ok().flatten().unwrap_or(f64::NAN);
        (cmd_ms, traffic)
    }

    /// One change of the rules (see `Change`): (command ms, traffic ms). Traffic: for
    /// `One`/`Replace` the start time of the first probe that got no answer within 200 ms
    /// (new connections fail); for `Undo` the time the first probe connected.
    /// Every change waits a random 0..AGENT_POLL first, so the write lands at a random phase
    /// of the agent's poll tick (the same wait for every contender; it is not counted).
    pub(crate) fn change(&mut self, who: Who, n: usize, kind: Change) -> (f64, f64) {
        std::thread::sleep(jitter(AGENT_POLL));
        let (tx, probe) = spawn_probe(&self.t, kind == Change::Undo, Duration::from_secs(60));
        let files = &self.files[&n];
        let (mseg_rev, ipt_rev, nft_rev) = (
            files.mseg_revoked.clone(),
            files.ipt_revoked.clone(),
            files.nft_revoked.clone(),
        );
        let cps_rule =
            format!("-s {CLI_IP}/32 -d {SRV_IP}/32 -p tcp -m tcp --dport {P_CPS} -j ACCEPT");
        let el = format!("{{ {CLI_IP} . {SRV_IP} . tcp . {P_CPS} : accept }}");
        let el_key = format!("{{ {CLI_IP} . {SRV_IP} . tcp . {P_CPS} }}");
        let t0 = Instant::now();
        tx.send(t0).ok();
        let done = |r: Result<String, String>| ms_since(t0, r);
        let cmd_ms = match (who, kind) {
            (Who::None | Who::TcEmpty, _) => f64::NAN,
            (Who::Microseg, k) => {
                match k {
                    Change::One => self.write_policy_file(DENY_ONE_FILE, &microseg_deny_one()),
                    Change::Undo => {
                        std::fs::remove_file(self.t.dir.join("policy").join(DENY_ONE_FILE)).unwrap()
                    }
                    Change::Replace => self.copy_policy_file("bench.yaml", &mseg_rev),
                }
                self.wait_revision(t0, Duration::from_secs(60))
            }
            (Who::Iptables, Change::One) | (Who::Iptables, Change::Undo) => {
                let op = if kind == Change::One { "-D" } else { "-A" };
                let mut args = vec!["iptables-nft", op, "FORWARD"];
                args.extend(cps_rule.split(' '));
                done(self.node_exec(&args))
            }
            (Who::Iptables, Change::Replace) => {
                done(self.node_exec(&["iptables-nft-restore", ipt_rev.to_str().unwrap()]))
            }
            (Who::Nft, Change::One) => done(
                self.node_exec(&["nft", "delete", "element", "inet", "mcmp", "allow", &el_key]),
            ),
            (Who::Nft, Change::Undo) => {
                done(self.node_exec(&["nft", "add", "element", "inet", "mcmp", "allow", &el]))
            }
            (Who::Nft, Change::Replace) => {
                done(self.node_exec(&["nft", "-f", nft_rev.to_str().unwrap()]))
            }
        };
        let traffic = probe.join().ok().flatten().unwrap_or(f64::NAN);
        (cmd_ms, traffic)
    }

    pub(crate) fn teardown(&mut self, who: Who) {
        match who {
            Who::None => {}
            Who::TcEmpty => {
                for dev in WORKLOAD_VETHS {
                    let _ = self.node_exec(&["tc", "qdisc", "del", "dev", dev, "clsact"]);
                }
            }
            Who::Microseg => self.stop_agent(),
            Who::Iptables | Who::Nft => {
                let _ = self.node_exec(&["nft", "flush", "ruleset"]);
            }
        }
    }
}
