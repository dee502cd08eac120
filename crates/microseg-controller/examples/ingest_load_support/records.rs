//! The records of the ingest_load example: a few hundred Workloads spread over the
//! simulated agents' nodes, and flows at them (docs/FLOWS.md describes the record).

use microseg_proto::v1::Flow;
use std::time::{SystemTime, UNIX_EPOCH};

pub const WORKLOADS: usize = 300;
const APPS: [(&str, u32); 12] = [
    ("web", 443),
    ("api", 8080),
    ("db", 5432),
    ("cache", 6379),
    ("queue", 5672),
    ("auth", 8443),
    ("search", 9200),
    ("billing", 8081),
    ("mail", 25),
    ("metrics", 9090),
    ("dns", 53),
    ("files", 2049),
];
pub fn node_name(i: usize) -> String {
    format!("load-node-{i}")
}

#[derive(Clone)]
pub struct Workload {
    pub index: usize,
    pub name: String,
    pub node: String,
    pub ip: String,
    pub app: &'static str,
    pub port: u32,
    pub env: &'static str,
}

/// Spread over the agents' nodes; each app listens on its own port.
pub fn workloads(agents: usize) -> Vec<Workload> {
    (0..WORKLOADS)
        .map(|i| {
            let (app, port) = APPS[i % APPS.len()];
            Workload {
                index: i,
                name: format!("{app}-{i}"),
                node: node_name(i % agents),
                ip: format!("10.{}.{}.{}", 20 + i / 200, (i % 200) + 1, 10 + i % 7),
                app,
                port,
                env: if i % 5 == 0 { "staging" } else { "prod" },
            }
        })
        .collect()
}

pub fn owned(all: &[Workload], node: &str) -> Vec<Workload> {
    let mine: Vec<Workload> = all.iter().filter(|w| w.node == node).cloned().collect();
    // More agents than workloads: the extra ones report for any.
    if mine.is_empty() {
        all.to_vec()
    } else {
        mine
    }
}

pub fn apply_body(ws: &[Workload]) -> String {
    ws.iter()
        .map(|w| {
            format!(
                "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: {}, labels: {{app: {}, env: {}}}}}\nspec: {{interface: lw{}, ips: [\"{}\"]}}\n",
                w.name, w.app, w.env, w.index, w.ip
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// xorshift64*: the same records on every run.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub struct Gen {
    pub rng: Rng,
    pub mine: Vec<Workload>,
    pub all: Vec<Workload>,
}

impl Gen {
    /// One record at a local workload: mostly to and from other workloads, some from
    /// outside; mostly allowed, some denied, logged or audited.
    pub fn flow(&mut self) -> Flow {
        let r = &mut self.rng;
        let local = &self.mine[r.below(self.mine.len() as u64) as usize];
        let (peer_ip, peer_port) = if r.below(100) < 85 {
            let p = &self.all[r.below(self.all.len() as u64) as usize];
            (p.ip.clone(), p.port)
        } else {
            (format!("198.51.100.{}", 1 + r.below(250)), 443)
        };
        let ephemeral = 32768 + r.below(28000) as u32;
        let egress = r.below(100) < 60;
        let (direction, src_ip, dst_ip, src_port, dst_port) = if egress {
            ("egress", local.ip.clone(), peer_ip, ephemeral, peer_port)
        } else {
            ("ingress", peer_ip, local.ip.clone(), ephemeral, local.port)
        };
        let v = r.below(100);
        let (verdict, policy, audit) = match v {
            0..=79 => ("allow", format!("allow-{}", local.app), None),
            80..=92 => ("deny", "default-deny".to_string(), None),
            93..=97 => ("log", format!("log-{}", local.app), None),
            _ => (
                "audit",
                format!("allow-{}", local.app),
                Some("audit-strict"),
            ),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let started = now - r.below(300_000_000) as i64;
        let packets = 1 + r.below(2000);
        Flow {
            time_us: now,
            start_us: started,
            end_us: (r.below(10) < 7).then_some(now),
            workload: local.name.clone(),
            direction: direction.into(),
            src_ip,
            dst_ip,
            src_port,
            dst_port,
            protocol: if dst_port == 53 { 17 } else { 6 },
            verdict: verdict.into(),
            policy: Some(policy),
            rule: Some(r.below(4) as u32),
            audit_verdict: audit.map(|_| "deny".to_string()),
            audit_policy: audit.map(str::to_string),
            packets,
            bytes: packets * (60 + r.below(1400)),
        }
    }
}
