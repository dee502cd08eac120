//! Policy recommendation end to end on a real multi-service application (docs/RECOMMEND.md
//! "Lifecycle"): ten workloads of nine services on two nodes with managed agents and a
//! controller, a web front end calling several back ends over TCP and UDP, back ends
//! calling a database and a cache, and one calling a host that is no workload. Traffic
//! with no policy, `microseg recommend`, applied in audit (the same traffic again: no
//! would-be deny in the flow record), promoted, then every observed path still works and
//! paths never observed are denied.
//!
//! ```text
//!   node a: web (10.78.0.11), orders .31, auth .33, search .35
//!   node b: web-2 (.12), db .21, cache .22, catalog .32, stats .34, payments .36,
//!           bank .99 (a host behind the bridge: no workload)
//! ```

mod cluster_support;
mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use cluster_support::Cluster;
use common::{addr, eventually, in_netns, tcp_echo_in, tcp_ok_from, udp_echo_in, BIN};
use microseg_flowstore::Timestamp;
use serde_json::Value;

const BANK: &str = "10.78.0.99";

/// (short name, node, address, app); web and web-2 are two replicas of one app.
const SERVICES: [(&str, &str, &str, &str); 7] = [
    ("web-2", "nodeb", "10.78.0.12", "web"),
    ("orders", "nodea", "10.78.0.31", "orders"),
    ("catalog", "nodeb", "10.78.0.32", "catalog"),
    ("auth", "nodea", "10.78.0.33", "auth"),
    ("stats", "nodeb", "10.78.0.34", "stats"),
    ("search", "nodea", "10.78.0.35", "search"),
    ("payments", "nodeb", "10.78.0.36", "payments"),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    Tcp,
    Udp,
}

/// One path of the application: from a workload to a service's address and port.
type Path = (&'static str, &'static str, Proto, u16);

/// The application's call graph: everything it does.
const CALLS: [Path; 15] = [
    ("web", "orders", Proto::Tcp, 8081),
    ("web", "catalog", Proto::Tcp, 8082),
    ("web", "auth", Proto::Tcp, 8083),
    ("web", "search", Proto::Tcp, 9200),
    ("web", "stats", Proto::Udp, 8125),
    ("web-2", "orders", Proto::Tcp, 8081),
    ("web-2", "stats", Proto::Udp, 8125),
    ("orders", "db", Proto::Tcp, 5432),
    ("orders", "payments", Proto::Tcp, 8084),
    ("orders", "stats", Proto::Udp, 8125),
    ("catalog", "db", Proto::Tcp, 5432),
    ("catalog", "cache", Proto::Tcp, 6379),
    ("auth", "cache", Proto::Tcp, 6379),
    ("search", "catalog", Proto::Tcp, 8082),
    ("payments", "bank", Proto::Tcp, 443),
];

/// Paths the application never takes, to servers that listen: a wrong peer, a wrong
/// protocol, a host that is no workload calling in, a workload with no egress at all.
const NEVER: [Path; 7] = [
    ("web", "db", Proto::Tcp, 5432),
    ("web", "payments", Proto::Tcp, 8084),
    ("web", "stats", Proto::Tcp, 8125),
    ("catalog", "bank", Proto::Tcp, 443),
    ("stats", "db", Proto::Tcp, 5432),
    ("cache", "db", Proto::Tcp, 5432),
    ("bank", "db", Proto::Tcp, 5432),
];

fn ip_of(short: &str) -> &'static str {
    match short {
        "web" => "10.78.0.11",
        "db" => "10.78.0.21",
        "cache" => "10.78.0.22",
        "bank" => BANK,
        s => SERVICES.iter().find(|x| x.0 == s).expect("service").2,
    }
}

/// One exchange on `path`: a connection (TCP) or a datagram answered (UDP, up to three
/// tries of 1 s: the first may wait for ARP).
fn works(c: &Cluster, (from, to, proto, port): Path) -> bool {
    let to = addr(ip_of(to), port);
    match proto {
        Proto::Tcp => tcp_ok_from(&c.name(from), to),
        Proto::Udp => in_netns(&c.name(from), move || {
            let Ok(s) = UdpSocket::bind("0.0.0.0:0") else {
                return false;
            };
            s.set_read_timeout(Some(Duration::from_secs(1))).ok();
            let mut buf = [0u8; 16];
            (0..3).any(|_| {
                s.send_to(b"ping", to).is_ok()
                    && matches!(s.recv_from(&mut buf), Ok((4, _)) if &buf[..4] == b"ping")
            })
        }),
    }
}

/// The paths of `paths` that fail.
fn failing(c: &Cluster, paths: &[Path]) -> Vec<Path> {
    paths.iter().copied().filter(|p| !works(c, *p)).collect()
}

/// The controller's edges since `since`.
fn edges(c: &Cluster, since: &str) -> Vec<Value> {
    let token = std::fs::read_to_string(c.dir.join("token")).unwrap();
    let out = c
        .in_ns("ctl", &["curl", "-sS", "--max-time", "10", "-H"])
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .arg(format!("{}/v1/flows/edges?since={since}", c.url()))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["items"].as_array().cloned().unwrap_or_default()
}

/// Whether `e` is an edge of `path` (a host that is no workload appears by address).
fn edge_of(c: &Cluster, e: &Value, (from, to, proto, port): Path) -> bool {
    let end = |v: &Value, short: &str| {
        if short == "bank" {
            v["ip"] == BANK
        } else {
            v["workload"] == c.name(short).as_str()
        }
    };
    let proto = match proto {
        Proto::Tcp => "TCP",
        Proto::Udp => "UDP",
    };
    end(&e["src"], from) && end(&e["dst"], to) && e["protocol"] == proto && e["dst_port"] == port
}

/// Waits until the flow record holds an edge for every path of `CALLS` since `since`.
fn await_edges(c: &Cluster, since: &str, what: &str) -> Vec<Value> {
    eventually(Duration::from_secs(30), || {
        let got = edges(c, since);
        let missing: Vec<Path> = CALLS
            .iter()
            .copied()
            .filter(|p| !got.iter().any(|e| edge_of(c, e, *p)))
            .collect();
        if missing.is_empty() {
            Ok(got)
        } else {
            Err(format!("missing {missing:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{what}: {e}\n{}", c.logs()))
}

/// `microseg flows -o json --since SINCE ARGS`: the records.
fn flows(c: &Cluster, since: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["flows", "-o", "json", "--limit", "10000", "--since", since];
    all.extend_from_slice(args);
    let out = c.cli(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn stdout_ok(out: std::process::Output, what: &str) -> String {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{what}: {stdout}{stderr}");
    stdout
}

fn policy_names(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.strip_prefix("  name: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn recommend_audit_promote_on_a_multi_service_application() {
    let started = Instant::now();
    let mut c = Cluster::new("recommend-app").with_agent_args(&["--flow-active-timeout", "2s"]);
    for (short, node, ip, app) in SERVICES {
        c.add_workload(node, short, ip, &[("app", app), ("tier", "backend")]);
    }
    c.add_host("nodeb", "bank", BANK);
    c.start_controller();
    c.start_agent("nodea");
    c.start_agent("nodeb");
    let mut listening = Vec::new();
    for (_, to, proto, port) in CALLS.iter().chain(&NEVER) {
        if listening.contains(&(to, port)) {
            continue;
        }
        listening.push((to, port));
        let ns = c.name(to);
        c.servers.push(tcp_echo_in(ns.clone(), *port));
        if let Proto::Udp = proto {
            c.servers.push(udp_echo_in(ns, *port));
        }
    }
    c.await_sync(Duration::from_secs(20), "nodes in sync");
    // Ten workloads known to the controller, the bank not among them.
    let out = stdout_ok(c.cli(&["workload", "list", "-o", "json"]), "workload list");
    assert!(!out.contains("bank") && !out.contains(BANK), "{out}");
    eventually(Duration::from_secs(20), || {
        let out = stdout_ok(c.cli(&["workload", "list"]), "workload list");
        let n = out.lines().filter(|l| l.contains(&c.prefix)).count();
        (n == 10).then_some(()).ok_or(out)
    })
    .unwrap_or_else(|e| panic!("ten workloads: {e}\n{}", c.logs()));

    // 1. The application runs with no policy; its flows reach the controller.
    // Records are stamped from the kernel's clock, a few ms off the wall clock: the
    // window opens a second early (nothing ran before).
    let since = Timestamp::now().minus(Duration::from_secs(1)).to_string();
    assert_eq!(failing(&c, &CALLS), [], "no policy: every call works");
    await_edges(&c, &since, "the first round's edges");

    // 2. The recommendation: one policy per app, peers by app, the bank by address.
    let out = c.cli(&["recommend", "--since", &since]);
    let yaml = stdout_ok(out, "recommend");
    println!("--- microseg recommend\n{yaml}");
    let mut apps: Vec<&str> = SERVICES.iter().map(|s| s.3).collect();
    apps.extend(["web", "db", "cache"]);
    apps.sort();
    apps.dedup();
    let want: Vec<String> = apps.iter().map(|a| format!("recommended.{a}")).collect();
    assert_eq!(policy_names(&yaml), want, "{yaml}");
    for present in [
        "mode: audit",
        "- {cidr: 10.78.0.99/32}",
        "- {protocol: TCP, port: 443}",
        "- {protocol: UDP, port: 8125}",
        "- {protocol: TCP, port: 5432}",
        "matchLabels: {app: web}",
    ] {
        assert!(yaml.contains(present), "{present} not in\n{yaml}");
    }
    // Replicas share one policy; no per-instance label, no ephemeral port.
    let (web, web2) = (c.name("web"), c.name("web-2"));
    assert!(
        yaml.contains(&format!("recommended-workloads: \"{web}, {web2}\""))
            || yaml.contains(&format!("recommended-workloads: \"{web2}, {web}\"")),
        "{yaml}"
    );
    for absent in ["netns", "node: node", "tier", "enforce"] {
        assert!(!yaml.contains(absent), "{absent} in\n{yaml}");
    }
    let file = c.dir.join("recommended.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let check = Command::new(BIN)
        .args(["policy", "check", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    stdout_ok(check, "policy check");
    let preview = stdout_ok(
        c.cli(&["recommend", "--since", &since, "--preview"]),
        "preview",
    );
    assert_eq!(
        preview.matches(", would deny 0 (0 edges;").count(),
        apps.len(),
        "{preview}"
    );

    // 3. Applied in audit: the same traffic passes and no record says enforcement would
    // have denied it.
    // From before the apply (the first round is over by then; records stamped before
    // the policies arrived carry no audit verdict).
    let audit_since = Timestamp::now().to_string();
    c.apply(&yaml);
    c.await_sync(
        Duration::from_secs(20),
        "both nodes have the audit policies",
    );
    assert_eq!(failing(&c, &CALLS), [], "in audit: every call works");
    await_edges(&c, &audit_since, "the audit round's edges");
    let records = eventually(Duration::from_secs(20), || {
        let r = flows(&c, &audit_since, &[]);
        let judged = CALLS.iter().all(|p| {
            r.iter().any(|f| {
                f["audit_verdict"].is_string()
                    && f["src_workload"] == c.name(p.0).as_str()
                    && f["dst_port"] == p.3
            })
        });
        if judged {
            Ok(r)
        } else {
            Err(format!("{} records", r.len()))
        }
    })
    .unwrap_or_else(|e| panic!("audit verdicts for every call: {e}\n{}", c.logs()));
    let would_deny: Vec<&Value> = records
        .iter()
        .filter(|f| f["audit_verdict"] == "deny" || f["verdict"] != "allow")
        .collect();
    assert!(would_deny.is_empty(), "would-be denies: {would_deny:#?}");
    // Judged by the recommended policies, not by some default.
    for f in records.iter().filter(|f| f["audit_verdict"].is_string()) {
        let by = f["audit_policy"].as_str().unwrap_or("");
        assert!(by.starts_with("recommended."), "{f:#}");
    }

    // 4. Promoted: enforced on both nodes.
    let enforced_since = Timestamp::now().to_string();
    for name in &want {
        stdout_ok(c.cli(&["policy", "promote", name]), "promote");
    }
    c.await_sync(
        Duration::from_secs(20),
        "both nodes enforce the promoted policies",
    );
    let list = stdout_ok(c.cli(&["policy", "list", "-o", "json"]), "policy list");
    let list: Value = serde_json::from_str(&list).unwrap();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    for name in &want {
        let p = items
            .iter()
            .find(|p| p["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} in {list:#}"));
        assert_eq!(p["spec"]["mode"], "enforce", "{p}");
    }

    // 5. Every observed path still works; paths never observed are denied.
    assert_eq!(failing(&c, &CALLS), [], "enforced: every call works");
    // stats' TCP server listens (answered on its own loopback, where no policy applies).
    assert!(tcp_ok_from(&c.name("stats"), addr("127.0.0.1", 8125)));
    let passed: Vec<Path> = NEVER.iter().copied().filter(|p| works(&c, *p)).collect();
    assert_eq!(passed, [], "never observed, yet not denied");
    // The denies are in the flow record, by the recommended policies' default deny.
    eventually(Duration::from_secs(20), || {
        let denied = flows(&c, &enforced_since, &["--verdict", "deny"]);
        let web_db = denied
            .iter()
            .any(|f| f["src_workload"] == c.name("web").as_str() && f["dst_port"] == 5432);
        let bank_db = denied
            .iter()
            .any(|f| f["src_ip"] == BANK && f["workload"] == c.name("db").as_str());
        (web_db && bank_db)
            .then_some(())
            .ok_or(format!("{denied:#?}"))
    })
    .unwrap_or_else(|e| panic!("the denies in the flow record: {e}\n{}", c.logs()));
    eprintln!(
        "recommend on a multi-service application: {:?}",
        started.elapsed()
    );
}
