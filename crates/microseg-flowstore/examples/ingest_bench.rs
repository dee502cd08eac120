//! Ingest and edge-query benchmark of the flow store's back ends, on servers it starts
//! itself (as the tests do):
//!
//!   cargo run --release -p microseg-flowstore --example ingest_bench -- \
//!       [--backend sqlite|postgres|clickhouse|all] [--records N] [--batch N]
//!
//! Prints records stored per second, the peak RSS of this process while it ingested
//! (the servers run in processes of their own), and the time of a 24-hour edges query.

#[path = "../tests/common/mod.rs"]
mod common;

use microseg_flowstore::{
    open, Direction, EdgeWindow, FlowFilter, FlowRecord, FlowStore, Labels, Protocol, Timestamp,
    Verdict,
};
use std::time::{Duration, Instant};

const WORKLOADS: usize = 200;
const NODES: usize = 10;
const APPS: usize = 25;
const EDGES: usize = 3000;
const ACTIVE_TIMEOUT_US: i64 = 30_000_000;

struct Args {
    backends: Vec<String>,
    records: usize,
    batch: usize,
}

fn args() -> Args {
    let mut a = Args {
        backends: vec!["sqlite".into(), "postgres".into(), "clickhouse".into()],
        records: 10_000_000,
        batch: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--backend" if value == "all" => {}
            "--backend" if ["sqlite", "postgres", "clickhouse"].contains(&value.as_str()) => {
                a.backends = vec![value]
            }
            "--records" => a.records = value.parse().unwrap_or_else(|_| usage("--records N")),
            "--batch" => a.batch = value.parse().unwrap_or_else(|_| usage("--batch N")),
            _ => usage(&format!("unknown {flag} {value}")),
        }
    }
    a
}

fn usage(msg: &str) -> ! {
    eprintln!("ingest_bench: {msg}\nusage: ingest_bench [--backend sqlite|postgres|clickhouse|all] [--records N] [--batch N]");
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

struct Workload {
    name: String,
    node: String,
    ip: String,
    labels: Labels,
}

/// A (source, destination, port, verdict, policy) the data draws connections from; a
/// destination of None is an outside address.
struct Pair {
    src: usize,
    dst: Option<usize>,
    outside: String,
    port: u16,
    protocol: Protocol,
    verdict: Verdict,
    policy: Option<String>,
}

/// Realistic flows: 200 workloads of 25 apps on 10 nodes, a few thousand edges, each
/// connection reported every active timeout (1 to 6 reports), over the 24 hours to `end`.
struct Generator {
    rng: Rng,
    workloads: Vec<Workload>,
    pairs: Vec<Pair>,
    end: Timestamp,
    total: usize,
    made: usize,
    pending: Vec<FlowRecord>,
    next_port: u16,
}

impl Generator {
    fn new(total: usize, end: Timestamp) -> Generator {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let workloads: Vec<Workload> = (0..WORKLOADS)
            .map(|i| {
                let app = format!("app{:02}", i % APPS);
                let name = format!("{app}-{}", i / APPS);
                let node = format!("node-{}", i % NODES);
                let labels = [
                    ("app", app.as_str()),
                    ("env", if i % 3 == 0 { "prod" } else { "dev" }),
                    ("netns", name.as_str()),
                    ("node", node.as_str()),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                Workload {
                    ip: format!("10.{}.{}.{}", i / 250, i % 250, 10),
                    name,
                    node,
                    labels,
                }
            })
            .collect();
        let pairs = (0..EDGES)
            .map(|_| {
                let src = rng.below(WORKLOADS);
                let dst = (rng.below(10) != 0).then(|| rng.below(WORKLOADS));
                let verdict = match rng.below(20) {
                    0 | 1 => Verdict::Deny,
                    2 => Verdict::Log,
                    3 => Verdict::Audit,
                    _ => Verdict::Allow,
                };
                let udp = rng.below(8) == 0;
                Pair {
                    src,
                    dst,
                    outside: format!("192.0.2.{}", rng.below(250)),
                    port: [80, 443, 5432, 6379, 8080, 9090, 53][rng.below(7)],
                    protocol: if udp { Protocol::UDP } else { Protocol::TCP },
                    policy: (verdict != Verdict::Deny || rng.below(2) == 0)
                        .then(|| format!("policy-{}", rng.below(40))),
                    verdict,
                }
            })
            .collect();
        Generator {
            rng,
            workloads,
            pairs,
            end,
            total,
            made: 0,
            pending: Vec::new(),
            next_port: 32768,
        }
    }

    /// The next connection's reports, at a time that moves evenly through the day.
    fn connection(&mut self) {
        let day = 86_400_000_000i64;
        let start = self.end.0 - day + (self.made as i64 * day / self.total.max(1) as i64);
        let p = &self.pairs[self.rng.below(self.pairs.len())];
        let src = &self.workloads[p.src];
        let dst = p.dst.map(|d| &self.workloads[d]);
        let deny = p.verdict == Verdict::Deny;
        let reports = if deny { 1 } else { 1 + self.rng.below(6) };
        self.next_port = self.next_port.checked_add(1).unwrap_or(32768);
        let base = FlowRecord {
            time: Timestamp(start),
            node: src.node.clone(),
            workload: src.name.clone(),
            direction: Direction::Egress,
            src_ip: src.ip.clone(),
            dst_ip: dst.map_or(p.outside.clone(), |d| d.ip.clone()),
            src_port: self.next_port,
            dst_port: p.port,
            protocol: p.protocol,
            verdict: p.verdict,
            policy: p.policy.clone(),
            rule: p.policy.as_ref().map(|_| 0),
            audit_verdict: (p.verdict == Verdict::Audit).then(|| "deny".into()),
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

    fn batch(&mut self, n: usize) -> Vec<FlowRecord> {
        let n = n.min(self.total - self.made);
        while self.pending.len() < n {
            self.connection();
        }
        self.made += n;
        self.pending.drain(..n).collect()
    }
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

async fn run(backend: &str, url: &str, a: &Args) {
    let store = open(url).await.expect("open the store");
    let now = Timestamp::now();
    let mut gen = Generator::new(a.records, now);
    reset_peak_rss();
    let mut in_store = Duration::ZERO;
    let all = Instant::now();
    while gen.made < a.records {
        let batch = gen.batch(a.batch);
        let t = Instant::now();
        store.insert(&batch).await.expect("insert");
        in_store += t.elapsed();
    }
    let wall = all.elapsed().as_secs_f64();
    let rss = peak_rss_kib();
    println!(
        "{backend:>10}: {} records in batches of {}: {:.0} records/s in insert calls \
         ({:.1} s), {:.0} records/s with generation ({wall:.1} s); peak RSS {} MiB",
        a.records,
        a.batch,
        a.records as f64 / in_store.as_secs_f64(),
        in_store.as_secs_f64(),
        a.records as f64 / wall,
        rss / 1024
    );
    edges(backend, store.as_ref(), now).await;
}

async fn edges(backend: &str, store: &dyn FlowStore, now: Timestamp) {
    let window = EdgeWindow {
        since: now.minus(Duration::from_secs(86_400)),
        until: Some(now),
    };
    // Twice: the first may read from disk, the second from the page cache.
    for run in ["first", "second"] {
        let t = Instant::now();
        let edges = store.edges(&window).await.expect("edges");
        let took = t.elapsed().as_secs_f64();
        let conns: u64 = edges.iter().map(|e| e.connections).sum();
        println!(
            "{backend:>10}: 24-hour edges query ({run} run): {took:.2} s, {} edges, {conns} connections",
            edges.len()
        );
    }
    let t = Instant::now();
    let f = FlowFilter::from_params([("verdict", "deny"), ("limit", "1000")], now).unwrap();
    let page = store.query(&f).await.expect("query");
    println!(
        "{backend:>10}: newest 1000 denied records: {:.3} s ({} returned)",
        t.elapsed().as_secs_f64(),
        page.records.len()
    );
}

#[tokio::main]
async fn main() {
    let a = args();
    for backend in a.backends.clone() {
        let _dir;
        let url = match backend.as_str() {
            "sqlite" => {
                let dir = common::TempDir::new("bench-sqlite");
                let url = dir.0.join("flows.db").display().to_string();
                _dir = Some(dir);
                url
            }
            "postgres" => common::postgres_url().await,
            _ => common::clickhouse_url(),
        };
        run(&backend, &url, &a).await;
    }
}
