//! A real Prometheus server scrapes both agents and the controller of a two-node test
//! cluster (docs/METRICS.md): denied traffic the test causes shows in
//! `rate(microseg_verdicts_total{verdict="deny"}[1m])` as Prometheus computes it, and the
//! controller's `microseg_nodes` says both nodes are in sync. Prometheus runs in the
//! controller's namespace with a config, storage and port of its own, and is killed
//! however the test ends. Needs root and /usr/bin/prometheus (scripts/setup.sh).

mod cluster_support;
mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use cluster_support::Cluster;
use common::{eventually, in_netns, tcp_echo_in};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Prometheus's address, in the controller's namespace (private to the test).
const PROMETHEUS_ADDR: &str = "10.79.0.1:9090";

const DB_FROM_CACHE_ONLY: &str = r#"
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress:
    - action: allow
      from: [{selector: {matchLabels: {app: cache}}}]
      ports: [{protocol: TCP, port: 5432}]
"#;

/// The Prometheus server; killed and reaped on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(c: &Cluster) -> String {
    let token = c.dir.join("token");
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: agents
    static_configs:
      - targets: ["10.79.0.2:9970", "10.79.0.3:9970"]
  - job_name: controller
    authorization:
      credentials_file: {}
    static_configs:
      - targets: ["10.79.0.1:7070"]
"#,
        token.display()
    )
}

fn start_prometheus(c: &Cluster) -> Prometheus {
    let dir = c.dir.join("prometheus");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config(c)).unwrap();
    let log = File::create(c.dir.join("prometheus.log")).unwrap();
    let child = c
        .in_ns("ctl", &[PROMETHEUS])
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={PROMETHEUS_ADDR}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus (scripts/setup.sh installs it)");
    Prometheus(child)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus's answer to an instant query, from inside the controller's namespace;
/// None while it does not answer.
fn query(c: &Cluster, promql: &str) -> Option<Value> {
    let path = format!("/api/v1/query?query={}", percent_encode(promql));
    in_netns(&c.name("ctl"), move || {
        let mut s = TcpStream::connect(PROMETHEUS_ADDR).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n");
        s.write_all(req.as_bytes()).ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        let (_, body) = answer.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    })
}

/// The samples of a vector result: (labels, value).
fn samples(answer: &Value) -> Vec<(Value, f64)> {
    answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let v = r["value"][1].as_str()?.parse().ok()?;
            Some((r["metric"].clone(), v))
        })
        .collect()
}

#[test]
fn prometheus_scrapes_agents_and_controller_and_sees_the_denies() {
    assert!(
        std::path::Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} is missing: run scripts/setup.sh"
    );
    let mut c = Cluster::new("prometheus").with_agent_args(&["--metrics", "0.0.0.0:9970"]);
    c.start_controller();
    c.start_agent("nodea");
    c.start_agent("nodeb");
    c.servers.push(tcp_echo_in(c.name("db"), 5432));
    c.await_sync(Duration::from_secs(20), "nodes in sync");
    c.apply(DB_FROM_CACHE_ONLY);
    c.await_sync(Duration::from_secs(20), "both nodes enforce the policy");
    let prometheus = start_prometheus(&c);
    let logs = |c: &Cluster| {
        let p = std::fs::read_to_string(c.dir.join("prometheus.log")).unwrap_or_default();
        format!("{}\nprometheus:\n{p}", c.logs())
    };

    // Every target up: the agents' metrics and the controller's, through the token.
    let up = eventually(Duration::from_secs(30), || {
        let answer = query(&c, "up").ok_or("no answer")?;
        let up = samples(&answer);
        if up.len() == 3 && up.iter().all(|(_, v)| *v == 1.0) {
            Ok(up)
        } else {
            Err(answer.to_string())
        }
    });
    if let Err(e) = up {
        panic!("targets not up: {e}\n{}", logs(&c));
    }

    // web (node a) -> db (node b): denied on node b, a few times over.
    for _ in 0..3 {
        assert!(!c.tcp_ok("web", "10.78.0.21", 5432), "web is denied");
    }
    let rate = r#"rate(microseg_verdicts_total{verdict="deny"}[1m])"#;
    let seen = eventually(Duration::from_secs(60), || {
        let answer = query(&c, rate).ok_or("no answer")?;
        samples(&answer)
            .into_iter()
            .find(|(m, v)| m["instance"] == "10.79.0.3:9970" && *v > 0.0)
            .ok_or(answer.to_string())
    });
    match seen {
        Ok((_, v)) => assert!(v > 0.0),
        Err(e) => panic!("Prometheus never saw node b's denies: {e}\n{}", logs(&c)),
    }
    let increase =
        r#"increase(microseg_drops_total{reason="policy",instance="10.79.0.3:9970"}[1m])"#;
    let dropped = eventually(Duration::from_secs(30), || {
        let answer = query(&c, increase).ok_or("no answer")?;
        samples(&answer)
            .first()
            .filter(|(_, v)| *v >= 1.0)
            .cloned()
            .ok_or(answer.to_string())
    });
    assert!(dropped.is_ok(), "{dropped:?}");

    // The controller's view: two nodes, both in sync, none lagging.
    let nodes = query(&c, r#"microseg_nodes{job="controller",state="in_sync"}"#).unwrap();
    assert_eq!(
        samples(&nodes).first().map(|(_, v)| *v),
        Some(2.0),
        "{nodes}"
    );
    let lag = query(&c, "max(microseg_node_revision_lag)").unwrap();
    assert_eq!(samples(&lag).first().map(|(_, v)| *v), Some(0.0), "{lag}");
    drop(prometheus);
}
