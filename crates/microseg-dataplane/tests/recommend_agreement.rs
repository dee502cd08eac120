//! Recommended policies judged by the kernel (docs/RECOMMEND.md "Guarantees"): for random
//! workloads, labels and traffic, the recommendation, enforced, allows every observed
//! connection that passed and denies a connection between groups never seen talking;
//! checked by the reference evaluator and by the kernel through `BPF_PROG_TEST_RUN`, with
//! every workload local on an interface of its own, as one agent enforces them.
//!
//! `MICROSEG_SOAK=N` multiplies the number of cases for a longer run.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use common::resources;
use microseg_dataplane::{common::*, packet::*, Dataplane, Hook};
use microseg_flowstore::{Edge, Endpoint, Protocol, Timestamp, Verdict as FlowVerdict};
use microseg_policy::compile::{Compiler, LocalEndpoint};
use microseg_policy::{evaluate, Direction, Mode, Packet, ResourceSet, Verdict};
use microseg_recommend::{recommend, to_yaml, Input, Options};
use microseg_testsupport::{ifindex, ip, on_own_netns};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

const CASES: u32 = 300;
const MAX_WORKLOADS: usize = 8;

/// One end of a connection: a workload (index) or an address that is none (index).
type End = (bool, usize);
/// (source, destination, protocol, port, IPv6, verdict 0..4: allow, log, audit, deny)
type Traffic = (End, End, u8, u16, bool, u8);

#[derive(Debug, Clone)]
struct Spec {
    /// Per workload: its app (None: no app label) and tier.
    workloads: Vec<(Option<u8>, Option<u8>)>,
    traffic: Vec<Traffic>,
}

fn spec() -> impl Strategy<Value = Spec> {
    let workload = (
        prop::option::weighted(0.85, 0u8..4),
        prop::option::of(0u8..2),
    );
    prop::collection::vec(workload, 2..=MAX_WORKLOADS).prop_flat_map(|workloads| {
        let n = workloads.len();
        // Mostly workloads; sometimes an address (10 of a /24, so some get summarised).
        let end = (prop::bool::weighted(0.75), 0usize..16).prop_map(move |(wl, i)| {
            if wl {
                (true, i % n)
            } else {
                (false, i)
            }
        });
        let proto = prop::sample::select(vec![6u8, 6, 17, 1, 58]);
        let port = prop::sample::select(vec![
            22u16, 53, 80, 443, 5432, 6379, 8000, 8001, 8002, 8003, 8005, 8006, 8007, 8008,
        ]);
        let t = (
            end.clone(),
            end,
            proto,
            port,
            prop::bool::weighted(0.2),
            0u8..4,
        );
        (Just(workloads), prop::collection::vec(t, 1..32))
            .prop_map(|(workloads, traffic)| Spec { workloads, traffic })
    })
}

fn name(i: usize) -> String {
    format!("w{i}")
}

fn workload_ip(i: usize, v6: bool) -> IpAddr {
    let s = if v6 {
        format!("fd00::{}", i + 1)
    } else {
        format!("10.1.0.{}", i + 1)
    };
    s.parse().unwrap()
}

/// Addresses that are no workload: 192.0.2.1-10 (one /24), 198.51.100.10-15, 2001:db8::/64.
fn address_ip(i: usize, v6: bool) -> IpAddr {
    let s = match (v6, i < 10) {
        (true, _) => format!("2001:db8::{}", i + 1),
        (false, true) => format!("192.0.2.{}", i + 1),
        (false, false) => format!("198.51.100.{i}"),
    };
    s.parse().unwrap()
}

/// The workloads as YAML (each on its interface `wI`, dual-stack) and their labels.
fn workloads_yaml(s: &Spec) -> (String, Vec<BTreeMap<String, String>>) {
    let mut yaml = String::new();
    let mut all = Vec::new();
    for (i, (app, tier)) in s.workloads.iter().enumerate() {
        let mut labels = BTreeMap::new();
        labels.insert("netns".to_string(), name(i));
        labels.insert("pod-template-hash".to_string(), format!("h{i}x"));
        if let Some(a) = app {
            labels.insert("app".to_string(), format!("app{a}"));
        }
        if let Some(t) = tier {
            labels.insert("tier".to_string(), format!("t{t}"));
        }
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        yaml.push_str(&format!(
            "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: {}, labels: {{{}}}}}\nspec: {{interface: {}, ips: [{}, {}]}}\n---\n",
            name(i),
            l.join(", "),
            name(i),
            workload_ip(i, false),
            workload_ip(i, true)
        ));
        all.push(labels);
    }
    (yaml, all)
}

/// One observed connection: the edge the flow record holds and the packet that opened it.
struct Observed {
    edge: Edge,
    packet: Packet,
}

fn observed(s: &Spec, labels: &[BTreeMap<String, String>]) -> Vec<Observed> {
    s.traffic
        .iter()
        .enumerate()
        .map(|(k, &(src, dst, proto, port, v6, verdict))| {
            // At least one end is a workload; ICMPv6 only over IPv6, ICMP over IPv4.
            let src = if src.0 || dst.0 { src } else { (true, 0) };
            let v6 = match proto {
                58 => true,
                1 => false,
                _ => v6,
            };
            let end = |(wl, i): End| {
                if wl {
                    let e = Endpoint::Workload {
                        workload: name(i),
                        labels: labels[i].clone(),
                    };
                    (e, workload_ip(i, v6))
                } else {
                    let a = address_ip(i, v6);
                    (Endpoint::Address { ip: a.to_string() }, a)
                }
            };
            let ((src_end, src_ip), (dst_end, dst_ip)) = (end(src), end(dst));
            let has_ports = proto == 6 || proto == 17;
            let dst_port = if has_ports { port } else { 0 };
            Observed {
                edge: Edge {
                    src: src_end,
                    dst: dst_end,
                    protocol: Protocol(proto),
                    dst_port,
                    verdict: [
                        FlowVerdict::Allow,
                        FlowVerdict::Log,
                        FlowVerdict::Audit,
                        FlowVerdict::Deny,
                    ][verdict as usize],
                    policy: None,
                    connections: 1 + k as u64 % 3,
                    packets: 5,
                    bytes: 500,
                    first_seen: Timestamp(1_800_000_000_000_000 + k as i64),
                    last_seen: Timestamp(1_800_000_000_000_000 + 10 * k as i64),
                },
                packet: Packet {
                    src: src_ip,
                    dst: dst_ip,
                    protocol: proto,
                    // An ephemeral port (an echo's identifier for ICMP).
                    src_port: 40000 + k as u16,
                    dst_port,
                },
            }
        })
        .collect()
}

/// The frame that opens the connection `p` describes.
fn frame(p: &Packet) -> Frame {
    match p.protocol {
        6 => Frame::tcp(p.src, p.dst, p.src_port, p.dst_port, TCP_SYN),
        17 => Frame::udp(p.src, p.dst, p.src_port, p.dst_port),
        _ => Frame::echo_request(p.src, p.dst, p.src_port),
    }
}

fn verdict_code(v: Verdict) -> u8 {
    match v {
        Verdict::Allow => verdict::ALLOW,
        Verdict::Deny => verdict::DENY,
        Verdict::Log => verdict::LOG,
        Verdict::Audit => verdict::AUDIT,
    }
}

struct Checker {
    dp: Dataplane,
    /// Interface of workload `wI`, by index.
    ifindexes: Vec<u32>,
    cases: u32,
    refused_inputs: u32,
    /// Judgements compared: observed connections (allowed by both), unseen pairs (denied
    /// by both), at either end.
    observed: u64,
    unseen: u64,
}

impl Checker {
    /// The evaluator's and the kernel's verdict on `p` at workload `w` in `dir`; Err when
    /// they differ.
    fn judge(
        &mut self,
        set: &ResourceSet,
        w: usize,
        dir: Direction,
        p: &Packet,
    ) -> Result<Verdict, String> {
        let local = set.workload(&name(w)).expect("workload");
        let want = evaluate(set, local, dir, p);
        let hook = match dir {
            Direction::Egress => Hook::FromWorkload,
            Direction::Ingress => Hook::ToWorkload,
        };
        let run = self
            .dp
            .test_run(hook, &frame(p).bytes(), self.ifindexes[w], 1)
            .map_err(|e| format!("test run: {e}"))?;
        let events = self.dp.drain_events();
        let [e] = events.as_slice() else {
            return Err(format!("{p:?} at w{w} {dir:?}: events {events:?}"));
        };
        let agree = e.kind == event_kind::NEW
            && e.verdict == verdict_code(want.verdict)
            && run.passed() == (want.verdict != Verdict::Deny);
        if !agree {
            return Err(format!(
                "{p:?} at w{w} {dir:?}: evaluator {want:?}, kernel passed={} event {e:?}",
                run.passed()
            ));
        }
        Ok(want.verdict)
    }

    fn check(&mut self, s: &Spec) -> Result<(), String> {
        self.cases += 1;
        let (workloads_text, labels) = workloads_yaml(s);
        let traffic = observed(s, &labels);
        let edges: Vec<Edge> = traffic.iter().map(|o| o.edge.clone()).collect();
        let world = resources(&workloads_text);
        let opts = Options {
            mode: Mode::Enforce,
            ..Options::default()
        };
        let input = Input {
            edges: &edges,
            workloads: &world.workloads,
            policies: &[],
        };
        let rec = match recommend(input, &opts) {
            Ok(r) => r,
            Err(e) => {
                // Only bad input is refused: denied traffic only, or no workload with app.
                let only_denied = edges.iter().all(|e| e.verdict == FlowVerdict::Deny);
                let no_app = labels.iter().all(|l| !l.contains_key("app"));
                self.refused_inputs += 1;
                return if only_denied || no_app {
                    Ok(())
                } else {
                    Err(format!("refused: {e}"))
                };
            }
        };
        // The YAML as a user applies it, with the workloads, as one agent compiles it.
        let yaml = format!("{workloads_text}{}", to_yaml(&rec));
        let set = resources(&yaml);
        let locals: Vec<LocalEndpoint> = (0..s.workloads.len())
            .map(|i| LocalEndpoint {
                workload: name(i),
                ifindex: self.ifindexes[i],
            })
            .collect();
        let compiled = Compiler::new().compile(&set, &locals);
        if !compiled.problems.is_empty() {
            return Err(format!("compile: {:?}\n{yaml}", compiled.problems));
        }
        self.dp
            .apply(&compiled.tables)
            .map_err(|e| format!("apply: {e}"))?;
        self.dp.drain_events();
        let fail = |e: String| format!("{e}\n--- resources ---\n{yaml}");

        // Every observed connection that passed passes at both of its workload ends.
        let group = |l: &BTreeMap<String, String>| match l.get("app") {
            Some(a) => (Some(a.clone()), None),
            None => (None, l.get("tier").cloned()),
        };
        let mut talked = BTreeSet::new();
        for o in traffic
            .iter()
            .filter(|o| o.edge.verdict != FlowVerdict::Deny)
        {
            let ends = [
                (&o.edge.src, Direction::Egress),
                (&o.edge.dst, Direction::Ingress),
            ];
            for (end, dir) in ends {
                if let Endpoint::Workload { workload, .. } = end {
                    let w: usize = workload[1..].parse().unwrap();
                    let v = self.judge(&set, w, dir, &o.packet).map_err(fail)?;
                    if matches!(v, Verdict::Deny | Verdict::Audit) {
                        return Err(fail(format!(
                            "observed {:?} denied at w{w} {dir:?}",
                            o.edge
                        )));
                    }
                    self.observed += 1;
                }
            }
            if let (Endpoint::Workload { labels: a, .. }, Endpoint::Workload { labels: b, .. }) =
                (&o.edge.src, &o.edge.dst)
            {
                talked.insert((group(a), group(b)));
            }
        }

        // Groups never seen talking (in that direction): denied wherever a policy applies.
        let selected =
            |l: &BTreeMap<String, String>| set.policies.iter().any(|p| p.selector.matches(l));
        for a in 0..s.workloads.len() {
            for b in 0..s.workloads.len() {
                if talked.contains(&(group(&labels[a]), group(&labels[b]))) {
                    continue;
                }
                let p = Packet {
                    src: workload_ip(a, false),
                    dst: workload_ip(b, false),
                    protocol: 6,
                    src_port: 41000,
                    dst_port: 5432,
                };
                for (w, dir) in [(a, Direction::Egress), (b, Direction::Ingress)] {
                    // The kernel agrees with the evaluator either way.
                    let v = self.judge(&set, w, dir, &p).map_err(fail)?;
                    if selected(&labels[w]) {
                        if v != Verdict::Deny {
                            return Err(fail(format!(
                                "w{a} -> w{b} never seen, {v:?} at w{w} {dir:?}"
                            )));
                        }
                        self.unseen += 1;
                    }
                }
            }
        }
        Ok(())
    }
}

#[test]
fn the_kernel_enforces_recommendations_as_the_evaluator_does() {
    on_own_netns(|| {
        // BPF_PROG_TEST_RUN names real interfaces: a veth end per workload.
        let ifindexes = (0..MAX_WORKLOADS)
            .map(|i| {
                let peer = format!("p{i}");
                ip(&[
                    "link",
                    "add",
                    &name(i),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &peer,
                ]);
                ifindex(&name(i))
            })
            .collect();
        let mut dp = common::load();
        // Every packet judged afresh, its verdict in its NEW event (allowed ones too).
        dp.set_flags(config_flags::NO_SESSION_INSERT | config_flags::REPORT_START)
            .expect("flags");
        let checker = RefCell::new(Checker {
            dp,
            ifindexes,
            cases: 0,
            refused_inputs: 0,
            observed: 0,
            unseen: 0,
        });
        let soak: u32 = std::env::var("MICROSEG_SOAK")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1u32)
            .max(1);
        let config = Config {
            cases: CASES * soak,
            failure_persistence: None,
            max_shrink_iters: 500,
            ..Config::default()
        };
        // Seeded: every run checks the same cases (a failure prints its case).
        let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
        let mut runner = TestRunner::new_with_rng(config, rng);
        let started = std::time::Instant::now();
        let result = runner.run(&spec(), |s| {
            checker.borrow_mut().check(&s).map_err(TestCaseError::fail)
        });
        let c = checker.borrow();
        eprintln!(
            "{} cases ({} refused as bad input) in {:?}: {} observed judgements allowed, {} unseen denied, by both",
            c.cases,
            c.refused_inputs,
            started.elapsed(),
            c.observed,
            c.unseen
        );
        if let Err(e) = result {
            panic!("{e}");
        }
        // The generator reaches both properties (else the agreement proves little).
        assert!(c.observed > 1000 && c.unseen > 1000, "too few judgements");
        assert!(c.refused_inputs * 10 < c.cases, "most cases recommend");
        let stats = c.dp.stats().expect("stats");
        assert_eq!(stats.parse_errors, 0);
    });
}
