//! The cluster-wide flow record end to end, once per flow store back end (SQLite,
//! PostgreSQL, ClickHouse): real connections between workloads on two nodes, reported by
//! the kernel and the agents' session walk, uploaded to the controller, stored, and read
//! back with `microseg flows --server` and `/v1/flows/edges`, across a controller restart.
//! docs/FLOWS.md says what a record holds and when it is made; docs/CONTROLLER.md the
//! controller's side.

mod cluster_support;
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::Cluster;
use common::{addr, eventually, in_netns, tcp_echo_in};
use serde_json::Value;

const DB: &str = "10.78.0.21";
const CACHE: &str = "10.78.0.22";

/// web may reach db on 5432/TCP and nothing else; db takes 5432 from web only.
const POLICY: &str = r#"
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: web-egress}
spec:
  selector: {matchLabels: {app: web}}
  egress:
    - action: allow
      to: [{selector: {matchLabels: {app: db}}}]
      ports: [{protocol: TCP, port: 5432}]
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress:
    - action: allow
      from: [{selector: {matchLabels: {app: web}}}]
      ports: [{protocol: TCP, port: 5432}]
"#;

#[test]
fn the_flow_record_on_sqlite() {
    scenario("sqlite", &[]);
}

#[test]
fn the_flow_record_on_postgres() {
    let pg = microseg_testsupport::Postgres::start();
    let url = pg.database("flows");
    scenario("postgres", &["--flow-db", &url]);
}

#[test]
fn the_flow_record_on_clickhouse() {
    let ch = microseg_testsupport::ClickHouse::start();
    let url = ch.url("flows");
    scenario("clickhouse", &["--flow-db", &url]);
}

/// The database servers listen on the host's loopback; the controller runs in the ctl
/// namespace, whose loopback gets a relay to the same port.
fn relay_for(c: &Cluster, flow_db: &[&str]) -> Option<Relay> {
    let url = flow_db.get(1)?;
    let port: u16 = url
        .rsplit_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("a loopback port in the URL");
    Some(Relay::start(&c.name("ctl"), port))
}

fn scenario(backend: &str, flow_db: &[&str]) {
    let started = Instant::now();
    let mut c = Cluster::new(&format!("flows-{backend}"))
        .with_controller_args(flow_db)
        .with_agent_args(&["--flow-active-timeout", "2s"]);
    let _relay = relay_for(&c, flow_db);
    c.start_controller();
    c.start_agent("nodea");
    c.start_agent("nodeb");
    c.servers.push(tcp_echo_in(c.name("db"), 5432));
    c.await_sync(Duration::from_secs(20), "nodes in sync");
    c.apply(POLICY);
    c.await_sync(Duration::from_secs(20), "both nodes enforce the policy");
    let status = flows_status(&c);
    assert_eq!(status["backend"], backend, "{status}");

    // A short allowed connection, a denied one to cache, one from cache that db refuses,
    // and one that lasts about 5 s.
    let short = connect(&c, "web", DB, 5432, Duration::ZERO).expect("web reaches db");
    assert!(
        connect(&c, "web", CACHE, 6379, Duration::ZERO).is_none(),
        "web -> cache denied"
    );
    assert!(
        connect(&c, "cache", DB, 5432, Duration::ZERO).is_none(),
        "cache -> db denied at db"
    );
    let long = connect(&c, "web", DB, 5432, Duration::from_secs(5)).expect("a lasting one");

    let (web, db, cache) = (c.name("web"), c.name("db"), c.name("cache"));
    // Both ends of both allowed connections, ended.
    let ended = |port: u16| {
        let got = of_port(&flows(&c, &["--port", "5432"]), port);
        let done = got.iter().filter(|f| !f["end"].is_null()).count();
        if done >= 2 {
            Ok(got)
        } else {
            Err(format!("{got:?}"))
        }
    };
    let short_records = eventually(Duration::from_secs(20), || ended(short))
        .unwrap_or_else(|e| panic!("the short connection's records: {e}\n{}", c.logs()));
    let long_records = eventually(Duration::from_secs(20), || ended(long))
        .unwrap_or_else(|e| panic!("the long connection's records: {e}\n{}", c.logs()));

    // The short one: exactly one record at each end, named and labelled, with its policy.
    assert_eq!(short_records.len(), 2, "{short_records:#?}");
    for (node, workload, direction, policy) in [
        ("nodea", &web, "egress", "web-egress"),
        ("nodeb", &db, "ingress", "db-ingress"),
    ] {
        let r = short_records
            .iter()
            .find(|f| f["node"] == node)
            .unwrap_or_else(|| panic!("no record from {node}: {short_records:#?}"));
        let what = format!("{node}: {r}");
        assert_eq!(r["workload"], workload.as_str(), "{what}");
        assert_eq!(r["direction"], direction, "{what}");
        assert_eq!(r["verdict"], "allow", "{what}");
        assert_eq!(r["policy"], policy, "{what}");
        assert_eq!(r["protocol"], "TCP", "{what}");
        assert_eq!(
            (r["src_workload"].as_str(), r["dst_workload"].as_str()),
            (Some(web.as_str()), Some(db.as_str())),
            "{what}"
        );
        assert_eq!(
            (&r["src_labels"]["app"], &r["dst_labels"]["app"]),
            (&Value::from("web"), &Value::from("db")),
            "{what}"
        );
        assert!(r["packets"].as_u64() > Some(0), "{what}");
        assert!(r["end"].is_string(), "{what}");
    }

    // The lasting one: at each end, reports while open with one start and growing
    // counters, then one that ends it.
    let mut start_mismatches = Vec::new();
    for node in ["nodea", "nodeb"] {
        let legs: Vec<&Value> = long_records.iter().filter(|f| f["node"] == node).collect();
        let (open, done): (Vec<&Value>, Vec<&Value>) =
            legs.iter().partition(|f| f["end"].is_null());
        assert!(open.len() >= 2, "{node}: two reports while open: {legs:#?}");
        assert_eq!(done.len(), 1, "{node}: one end: {legs:#?}");
        // Checked last, so that the rest of the scenario still says what it found.
        if !legs.iter().all(|f| f["start"] == legs[0]["start"]) {
            let starts: Vec<&Value> = legs.iter().map(|f| &f["start"]).collect();
            start_mismatches.push(format!("{node}: {starts:?}"));
        }
        let packets: Vec<u64> = legs
            .iter()
            .map(|f| f["packets"].as_u64().unwrap())
            .collect();
        assert!(
            packets.windows(2).all(|w| w[0] < w[1]),
            "{node}: growing packets, the end last: {legs:#?}"
        );
        assert_eq!(legs.last().unwrap()["end"], done[0]["end"], "{node}");
    }

    // The denied attempts, at the workload that judged them.
    let denied = flows(&c, &["--verdict", "deny"]);
    assert!(denied.iter().all(|f| f["verdict"] == "deny"), "{denied:#?}");
    let to_cache = denied
        .iter()
        .find(|f| f["dst_port"] == 6379)
        .unwrap_or_else(|| panic!("web -> cache: {denied:#?}"));
    assert_eq!(
        (
            &to_cache["node"],
            &to_cache["workload"],
            &to_cache["direction"]
        ),
        (
            &Value::from("nodea"),
            &Value::from(web.as_str()),
            &Value::from("egress")
        ),
        "{to_cache}"
    );
    assert_eq!(to_cache["dst_workload"], cache.as_str(), "{to_cache}");
    let from_cache = denied
        .iter()
        .find(|f| f["src_workload"] == cache.as_str())
        .unwrap_or_else(|| panic!("cache -> db: {denied:#?}"));
    assert_eq!(
        (&from_cache["node"], &from_cache["workload"]),
        (&Value::from("nodeb"), &Value::from(db.as_str())),
        "{from_cache}"
    );

    // Each filter narrows: to its own kind, and not to everything.
    let all = flows(&c, &[]);
    for (args, holds) in [
        (["--verdict", "deny"], ("verdict", "deny")),
        (["--node", "nodeb"], ("node", "nodeb")),
    ] {
        let got = flows(&c, &args);
        let (field, want) = holds;
        assert!(
            !got.is_empty() && got.len() < all.len() && got.iter().all(|f| f[field] == want),
            "{args:?}: {got:#?}"
        );
    }
    for (args, side, app) in [
        (["--from", "app=web"], "src_labels", "web"),
        (["--to", "app=db"], "dst_labels", "db"),
    ] {
        let got = flows(&c, &args);
        assert!(
            !got.is_empty() && got.len() < all.len() && got.iter().all(|f| f[side]["app"] == app),
            "{args:?}: {got:#?}"
        );
    }
    let on_5432 = flows(&c, &["--port", "5432"]);
    assert!(
        on_5432.len() < all.len() && on_5432.iter().all(|f| f["dst_port"] == 5432),
        "{on_5432:#?}"
    );
    assert!(of_port(&on_5432, short).len() == 2 && of_port(&on_5432, long).len() >= 6);

    // web -> db is one edge per deciding policy: each counts its end's legs of the short
    // and the long connection (a re-reported leg once).
    let edges = get(&c, "/v1/flows/edges?since=5m");
    for policy in ["web-egress", "db-ingress"] {
        let web_db = edges["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{edges}"))
            .iter()
            .find(|e| {
                e["src"]["workload"] == web.as_str()
                    && e["dst"]["workload"] == db.as_str()
                    && e["dst_port"] == 5432
                    && e["verdict"] == "allow"
                    && e["policy"] == policy
            })
            .unwrap_or_else(|| panic!("no web -> db edge by {policy}: {edges:#}"));
        assert!(web_db["connections"].as_u64() >= Some(1), "{web_db}");
        if web_db["connections"] != 2 {
            start_mismatches.push(format!("edge by {policy}: {web_db}"));
        }
    }

    // Restarted on the same state and store: the record is all there, a connection made
    // while the controller was away arrives from the agents' backlog, and new uploads too.
    Cluster::stop(&mut c.controller, libc::SIGTERM);
    let during = connect(&c, "web", DB, 5432, Duration::ZERO).expect("enforcement goes on");
    c.start_controller();
    let kept = of_port(&flows(&c, &["--port", "5432"]), short);
    assert_eq!(kept.len(), 2, "after the restart: {kept:#?}");
    c.await_sync(Duration::from_secs(20), "agents back after the restart");
    let after = connect(&c, "web", DB, 5432, Duration::ZERO).expect("web reaches db");
    eventually(Duration::from_secs(20), || {
        let now = flows(&c, &["--port", "5432"]);
        of_port(&now, during).len() == 2 && of_port(&now, after).len() == 2
    })
    .unwrap_or_else(|e| panic!("uploads after the restart: {e}\n{}", c.logs()));

    // A bad filter is refused before any request, naming the flag.
    let out = c.cli(&["flows", "--verdict", "maybe"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--verdict") && stderr.contains("maybe"),
        "{stderr}"
    );
    let out = c.cli(&["flows", "--since", "5x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));

    eprintln!("{backend}: {:?}", started.elapsed());
    assert!(
        start_mismatches.is_empty(),
        "the reports of one connection carry one start (and count once in its edge): {start_mismatches:#?}"
    );
}

/// `microseg flows --server ... -o json ARGS`: the records, oldest first.
fn flows(c: &Cluster, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["flows", "-o", "json"];
    all.extend_from_slice(args);
    let out = c.cli(&all);
    assert!(
        out.status.success(),
        "flows {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The records of the connection from source port `port`.
fn of_port(records: &[Value], port: u16) -> Vec<Value> {
    records
        .iter()
        .filter(|f| f["src_port"] == port)
        .cloned()
        .collect()
}

/// A GET on the controller's API, from the ctl namespace, with the token.
fn get(c: &Cluster, path: &str) -> Value {
    let token = std::fs::read_to_string(c.dir.join("token")).unwrap();
    let out = c
        .in_ns("ctl", &["curl", "-sS", "--max-time", "10", "-H"])
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .arg(format!("{}{path}", c.url()))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "GET {path}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn flows_status(c: &Cluster) -> Value {
    get(c, "/v1/flows/status")
}

/// Connects from workload `from` to `ip:port`, sends a byte and reads it back every
/// second for `hold`, then closes. Its source port, or `None` when it was refused.
fn connect(c: &Cluster, from: &str, ip: &str, port: u16, hold: Duration) -> Option<u16> {
    let to = addr(ip, port);
    in_netns(&c.name(from), move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(1500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
        let local = s.local_addr().ok()?.port();
        let until = Instant::now() + hold;
        let mut buf = [0u8; 5];
        s.write_all(b"hello").ok()?;
        s.read_exact(&mut buf).ok()?;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_secs(1));
            s.write_all(b"x").ok()?;
            s.read_exact(&mut buf[..1]).ok()?;
        }
        Some(local)
    })
}

/// Forwards connections to 127.0.0.1:`port` in namespace `ns` to the host's
/// 127.0.0.1:`port`; stops taking new ones on drop (those open end with their peers).
struct Relay {
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(ns: &str, port: u16) -> Relay {
        // Made inside the namespace; the connections out are made on the host's side.
        let listener = in_netns(ns, move || TcpListener::bind(("127.0.0.1", port)).unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let accept = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((inside, _)) => {
                        inside.set_nonblocking(false).unwrap();
                        if let Ok(host) = TcpStream::connect(("127.0.0.1", port)) {
                            pipe(inside.try_clone().unwrap(), host.try_clone().unwrap());
                            pipe(host, inside);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Relay {
            stop,
            accept: Some(accept),
        }
    }
}

/// Copies `from` to `to` on a thread until either ends.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}
