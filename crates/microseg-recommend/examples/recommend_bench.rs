//! Recommend at scale (docs/RECOMMEND.md, docs/PERFORMANCE.md): flow records of 500
//! workloads stored in a flow store, then the window's edges query, the recommendation and
//! its preview timed, with this process's peak RSS over those three (the stores' servers
//! run in processes of their own; SQLite runs in this one and counts).
//!
//!   cargo run --release -p microseg-recommend --example recommend_bench -- \
//!       [--backend sqlite|clickhouse|all] [--records N]
//!
//! Targets: under 10 s and under 1 GiB for 1,000,000 records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use microseg_flowstore::{
    open, Direction, EdgeWindow, FlowRecord, Labels, Protocol, Timestamp, Verdict,
};
use microseg_policy::{Mode, Policy, Workload};
use microseg_recommend::{preview, recommend, to_yaml, Input, Options};
use microseg_testsupport::{ClickHouse, TempDir};

const WORKLOADS: usize = 500;
const APPS: usize = 50;
const NODES: usize = 20;
/// Apps each app calls (apps of higher number: a layered call graph).
const CALLEES: usize = 3;
const ACTIVE_TIMEOUT_US: i64 = 30_000_000;
const BATCH: usize = 5000;

fn usage(msg: &str) -> ! {
    eprintln!("recommend_bench: {msg}\nusage: recommend_bench [--backend sqlite|clickhouse|all] [--records N]");
    std::process::exit(2)
}

/// xorshift64*: the same data on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Wl {
    name: String,
    node: String,
    ip: String,
    labels: Labels,
}

/// An app-level call: `from` app to `to` (an app, or an outside address pool) on a port.
struct Call {
    from: usize,
    to: Option<usize>,
    protocol: Protocol,
    port: u16,
    verdict: Verdict,
}

struct Generator {
    rng: Rng,
    workloads: Vec<Wl>,
    calls: Vec<Call>,
    end: Timestamp,
    total: usize,
    made: usize,
    pending: Vec<FlowRecord>,
    next_port: u16,
}

fn workloads() -> Vec<Wl> {
    (0..WORKLOADS)
        .map(|i| {
            let app = format!("app{:02}", i % APPS);
            let name = format!("{app}-{}", i / APPS);
            let node = format!("node-{}", i % NODES);
            let labels = [
                ("app", app.as_str()),
                (
                    "env",
                    if (i % APPS).is_multiple_of(3) {
                        "prod"
                    } else {
                        "dev"
                    },
                ),
                ("netns", name.as_str()),
                ("node", node.as_str()),
                ("pod-template-hash", &format!("{:x}", i * 7919)),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            Wl {
                ip: format!("10.{}.{}.{}", 10 + i / 250, i % 250, 10),
                name,
                node,
                labels,
            }
        })
        .collect()
}

impl Generator {
    fn new(total: usize, end: Timestamp) -> Generator {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut calls = Vec::new();
        for a in 0..APPS - 1 {
            for _ in 0..CALLEES {
                let b = a + 1 + rng.below(APPS - 1 - a);
                let (protocol, port) = match b % 5 {
                    0 => (Protocol::TCP, 5432),
                    1 => (Protocol::TCP, 6379),
                    2 => (Protocol::UDP, 9000 + b as u16),
                    _ => (Protocol::TCP, 8000 + b as u16),
                };
                // Some apps already run under a policy in audit or log.
                let verdict = match a % 10 {
                    0 => Verdict::Audit,
                    1 => Verdict::Log,
                    _ => Verdict::Allow,
                };
                calls.push(Call {
                    from: a,
                    to: Some(b),
                    protocol,
                    port,
                    verdict,
                });
            }
            if a % 4 == 0 {
                calls.push(Call {
                    from: a,
                    to: None,
                    protocol: Protocol::TCP,
                    port: 443,
                    verdict: Verdict::Allow,
                });
            }
        }
        // Attempts a policy denied: never evidence.
        for _ in 0..40 {
            calls.push(Call {
                from: rng.below(APPS),
                to: Some(rng.below(APPS)),
                protocol: Protocol::TCP,
                port: 22,
                verdict: Verdict::Deny,
            });
        }
        Generator {
            rng,
            workloads: workloads(),
            calls,
            end,
            total,
            made: 0,
            pending: Vec::new(),
            next_port: 32768,
        }
    }

    /// One connection's reports at both of its workload ends, at a time moving evenly
    /// through the hour before `end`.
    fn connection(&mut self) {
        let hour = 3_600_000_000i64;
        let start = self.end.0 - hour + (self.made as i64 * hour / self.total.max(1) as i64);
        let c = &self.calls[self.rng.below(self.calls.len())];
        let replica = |rng: &mut Rng, app: usize| app + APPS * rng.below(WORKLOADS / APPS);
        let src = &self.workloads[replica(&mut self.rng, c.from)];
        let dst = c.to.map(|b| &self.workloads[replica(&mut self.rng, b)]);
        let outside = format!("198.51.100.{}", 1 + self.rng.below(12));
        let deny = c.verdict == Verdict::Deny;
        let reports = if deny { 1 } else { 1 + self.rng.below(3) };
        self.next_port = self.next_port.checked_add(1).unwrap_or(32768);
        let policy = match c.verdict {
            Verdict::Allow => None,
            v => Some(format!("policy-{}-{v:?}", c.from).to_lowercase()),
        };
        let mut legs = vec![(src, Direction::Egress)];
        if let (Some(d), false) = (dst, deny) {
            legs.push((d, Direction::Ingress));
        }
        for (at, direction) in legs {
            let base = FlowRecord {
                time: Timestamp(start),
                node: at.node.clone(),
                workload: at.name.clone(),
                direction,
                src_ip: src.ip.clone(),
                dst_ip: dst.map_or(outside.clone(), |d| d.ip.clone()),
                src_port: self.next_port,
                dst_port: c.port,
                protocol: c.protocol,
                verdict: c.verdict,
                policy: policy.clone(),
                rule: policy.as_ref().map(|_| 0),
                audit_verdict: (c.verdict == Verdict::Audit).then(|| "deny".into()),
                audit_policy: None,
                packets: 0,
                bytes: 0,
                src_workload: Some(src.name.clone()),
                dst_workload: dst.map(|d| d.name.clone()),
                src_labels: src.labels.clone(),
                dst_labels: dst.map(|d| d.labels.clone()).unwrap_or_default(),
                start: Timestamp(start),
                end: None,
            };
            for i in 0..reports {
                let mut r = base.clone();
                r.time = Timestamp((start + i as i64 * ACTIVE_TIMEOUT_US).min(self.end.0));
                r.packets = 4 + 20 * i as u64;
                r.bytes = 300 + 24_000 * i as u64;
                if i + 1 == reports {
                    r.end = Some(r.time);
                }
                self.pending.push(r);
            }
        }
    }

    fn batch(&mut self, n: usize) -> Vec<FlowRecord> {
        let n = n.min(self.total - self.made);
        while self.pending.len() < n {
            self.connection();
        }
        self.made += n;
        self.pending.drain(..n).collect()
    }
}

/// The Workloads as the controller knows them.
fn known_workloads() -> Vec<Workload> {
    workloads()
        .into_iter()
        .map(|w| Workload {
            name: w.name,
            labels: w.labels,
            interface: None,
            ips: vec![w.ip.parse().unwrap()],
            mode: Mode::Enforce,
            origin: Default::default(),
        })
        .collect()
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn run(backend: &str, url: &str, records: usize) {
    let store = open(url).await.expect("open the store");
    let now = Timestamp::now();
    let mut gen = Generator::new(records, now);
    let t = Instant::now();
    while gen.made < records {
        let batch = gen.batch(BATCH);
        store.insert(&batch).await.expect("insert");
    }
    println!(
        "{backend:>10}: {records} records of {WORKLOADS} workloads stored in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drop(gen);
    let workloads = known_workloads();
    let policies: Vec<Arc<Policy>> = Vec::new();
    // Twice: the first may read from disk, the second from the page cache.
    for run in ["first", "second"] {
        reset_peak_rss();
        let base_rss = peak_rss_kib();
        let all = Instant::now();
        let window = EdgeWindow {
            since: now.minus(Duration::from_secs(3600)),
            until: Some(now),
        };
        let t = Instant::now();
        let edges = store.edges(&window).await.expect("edges");
        let query = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let input = Input {
            edges: &edges,
            workloads: &workloads,
            policies: &policies,
        };
        let rec = recommend(input, &Options::default()).expect("recommend");
        let yaml = to_yaml(&rec);
        let made = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let p = preview(&rec, &edges, &policies);
        let previewed = t.elapsed().as_secs_f64();
        let total = all.elapsed().as_secs_f64();
        // Once the proposal is applied in audit: the preview replays against it too.
        let applied: Vec<Arc<Policy>> = rec
            .policies
            .iter()
            .map(|p| Arc::new(p.policy.clone()))
            .collect();
        let t = Instant::now();
        let again = preview(&rec, &edges, &applied);
        let previewed_applied = t.elapsed().as_secs_f64();
        assert_eq!(again.would_deny(), 0);
        let conns: u64 = edges.iter().map(|e| e.connections).sum();
        let rules: usize = rec
            .policies
            .iter()
            .map(|p| p.ingress.len() + p.egress.len())
            .sum();
        assert_eq!(p.would_deny(), 0, "a would-deny is a defect");
        println!(
            "{backend:>10} ({run} run): edges query {query:.2} s ({} edges, {conns} connections), \
             recommend {made:.2} s ({} policies, {rules} rules, {} KiB of YAML), preview {previewed:.2} s; \
             total {total:.2} s; peak RSS {} MiB (from {} MiB); \
             preview with the proposal applied in audit {previewed_applied:.2} s",
            edges.len(),
            rec.policies.len(),
            yaml.len() / 1024,
            peak_rss_kib() / 1024,
            base_rss / 1024,
        );
    }
}

#[tokio::main]
async fn main() {
    let mut backends = vec!["sqlite".to_string(), "clickhouse".to_string()];
    let mut records = 1_000_000;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--backend" if value == "all" => {}
            "--backend" if ["sqlite", "clickhouse"].contains(&value.as_str()) => {
                backends = vec![value]
            }
            "--records" => records = value.parse().unwrap_or_else(|_| usage("--records N")),
            _ => usage(&format!("unknown {flag} {value}")),
        }
    }
    for backend in backends {
        if backend == "sqlite" {
            let dir = TempDir::new("recommend-bench");
            let url = dir.join("flows.db").display().to_string();
            run(&backend, &url, records).await;
        } else {
            // Stopped and removed when dropped.
            let ch = ClickHouse::start();
            run(&backend, &ch.url("recommend_bench"), records).await;
        }
    }
}
