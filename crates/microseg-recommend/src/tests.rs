use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use microseg_flowstore::{Edge, Endpoint, Protocol, Timestamp, Verdict};
use microseg_policy::{parse_str, Mode, Policy, Resource, Workload};

use crate::*;

const T0: i64 = 1_800_000_000_000_000;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn workload(name: &str, l: &[(&str, &str)], ip: &str) -> Workload {
    Workload {
        name: name.into(),
        labels: labels(l),
        interface: None,
        ips: vec![ip.parse().unwrap()],
        mode: Mode::Enforce,
        origin: Default::default(),
    }
}

fn wl(ws: &[Workload], name: &str) -> Endpoint {
    let w = ws.iter().find(|w| w.name == name).unwrap();
    Endpoint::Workload {
        workload: w.name.clone(),
        labels: w.labels.clone(),
    }
}

fn addr(ip: &str) -> Endpoint {
    Endpoint::Address { ip: ip.into() }
}

fn edge(src: Endpoint, dst: Endpoint, proto: u8, port: u16, verdict: Verdict) -> Edge {
    Edge {
        src,
        dst,
        protocol: Protocol(proto),
        dst_port: port,
        verdict,
        policy: None,
        connections: 2,
        packets: 10,
        bytes: 1000,
        first_seen: Timestamp(T0),
        last_seen: Timestamp(T0 + 60_000_000),
    }
}

fn shop() -> Vec<Workload> {
    vec![
        workload("web-1", &[("app", "web"), ("netns", "web-1")], "10.0.0.1"),
        workload("web-2", &[("app", "web"), ("netns", "web-2")], "10.0.0.2"),
        workload(
            "db-1",
            &[("app", "db"), ("pod-template-hash", "7f9c")],
            "10.0.0.3",
        ),
        workload(
            "batch-1",
            &[("role", "batch"), ("netns", "batch-1")],
            "10.0.0.4",
        ),
    ]
}

fn shop_edges(ws: &[Workload]) -> Vec<Edge> {
    vec![
        edge(wl(ws, "web-1"), wl(ws, "db-1"), 6, 5432, Verdict::Allow),
        edge(wl(ws, "web-2"), wl(ws, "db-1"), 6, 5432, Verdict::Audit),
        edge(wl(ws, "web-1"), wl(ws, "db-1"), 6, 22, Verdict::Deny),
        edge(wl(ws, "db-1"), addr("192.0.2.7"), 17, 53, Verdict::Log),
        edge(wl(ws, "web-1"), wl(ws, "web-2"), 1, 0, Verdict::Allow),
        edge(wl(ws, "batch-1"), wl(ws, "db-1"), 6, 5432, Verdict::Allow),
    ]
}

fn run(ws: &[Workload], edges: &[Edge]) -> Recommendation {
    let input = Input {
        edges,
        workloads: ws,
        policies: &[],
    };
    recommend(input, &Options::default()).unwrap()
}

fn parse_back(yaml: &str) -> Vec<Arc<Policy>> {
    let (res, diags) = parse_str("recommended.yaml", yaml);
    assert!(diags.is_empty(), "{diags:?}\n{yaml}");
    res.into_iter()
        .map(|r| match r {
            Resource::Policy(p) => p,
            Resource::Workload(_) => panic!("a workload"),
        })
        .collect()
}

#[test]
fn the_shop_gets_one_policy_per_group_with_both_sections() {
    let ws = shop();
    let rec = run(&ws, &shop_edges(&ws));
    let yaml = to_yaml(&rec);
    let names: Vec<_> = rec
        .policies
        .iter()
        .map(|p| p.policy.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "recommended.db",
            "recommended.no-app-role-batch",
            "recommended.web"
        ]
    );
    // Parses back to the same policies, and says audit.
    let parsed = parse_back(&yaml);
    for (p, q) in parsed.iter().zip(&rec.policies) {
        let mut p = (**p).clone();
        p.origin = Default::default();
        assert_eq!(p, q.policy);
        assert_eq!(p.mode, Mode::Audit);
    }
    let expected_db = r#"apiVersion: microseg.io/v1
kind: Policy
metadata:
  annotations:
    microseg.io/evidence.egress.0: "2 connections, first 2027-01-15T08:00:00.000000Z, last 2027-01-15T08:01:00.000000Z"
    microseg.io/evidence.ingress.0: "2 connections, first 2027-01-15T08:00:00.000000Z, last 2027-01-15T08:01:00.000000Z"
    microseg.io/evidence.ingress.1: "4 connections, first 2027-01-15T08:00:00.000000Z, last 2027-01-15T08:01:00.000000Z"
    microseg.io/recommended-for: "app=db"
    microseg.io/recommended-workloads: db-1
  name: recommended.db
spec:
  selector:
    matchLabels: {app: db}
  priority: 1000
  mode: audit
  ingress:
    - action: allow
      from:
        - selector:
            matchLabels: {role: batch}
            matchExpressions:
              - {key: app, operator: DoesNotExist}
      ports:
        - {protocol: TCP, port: 5432}
    - action: allow
      from:
        - selector:
            matchLabels: {app: web}
      ports:
        - {protocol: TCP, port: 5432}
  egress:
    - action: allow
      to:
        - {cidr: 192.0.2.7/32}
      ports:
        - {protocol: UDP, port: 53}
---
"#;
    assert!(yaml.starts_with(expected_db), "{yaml}");
    // The denied port 22 is nowhere; ICMP between the web replicas is kept whole.
    assert!(!yaml.contains("22}"), "{yaml}");
    assert!(yaml.contains("- {protocol: ICMP}"), "{yaml}");
    assert_eq!((rec.denied_edges, rec.denied_connections), (1, 2));
    assert!(
        rec.notes
            .iter()
            .any(|n| n.contains("without a grouping label (batch-1)")),
        "{:?}",
        rec.notes
    );
}

#[test]
fn per_instance_labels_never_become_selectors() {
    let ws = shop();
    let yaml = to_yaml(&run(&ws, &shop_edges(&ws)));
    for key in ["netns", "pod-template-hash", "7f9c", "web-1}"] {
        assert!(!yaml.contains(key), "{key} in\n{yaml}");
    }
    let input = Input {
        edges: &shop_edges(&ws),
        workloads: &ws,
        policies: &[],
    };
    let opts = Options {
        group_by: vec!["netns".into()],
        ..Default::default()
    };
    assert_eq!(
        recommend(input, &opts).unwrap_err(),
        Error::PerInstanceKey {
            key: "netns".into()
        }
    );
}

#[test]
fn bad_input_gets_a_reason_never_a_policy() {
    let ws = shop();
    let none = Input {
        edges: &[],
        workloads: &ws,
        policies: &[],
    };
    assert_eq!(
        recommend(none, &Options::default()).unwrap_err(),
        Error::EmptyWindow
    );
    let denied = [edge(
        wl(&ws, "web-1"),
        wl(&ws, "db-1"),
        6,
        22,
        Verdict::Deny,
    )];
    let only = Input {
        edges: &denied,
        workloads: &ws,
        policies: &[],
    };
    let e = recommend(only, &Options::default()).unwrap_err();
    assert_eq!(
        e,
        Error::OnlyDenied {
            edges: 1,
            connections: 2
        }
    );
    assert!(e.to_string().contains("only denied traffic"));
    let edges = shop_edges(&ws);
    let input = Input {
        edges: &edges,
        workloads: &ws,
        policies: &[],
    };
    let opts = Options {
        group_by: vec!["tier".into()],
        ..Default::default()
    };
    let e = recommend(input, &opts).unwrap_err();
    assert_eq!(e.to_string(), "--group-by tier: no workload has this label (keys seen: app, netns, pod-template-hash, role)");
    let opts = Options {
        group_by: vec![],
        ..Default::default()
    };
    assert_eq!(recommend(input, &opts).unwrap_err(), Error::NoGroupKeys);
    let opts = Options {
        selector: Some(microseg_flowstore::Selector::parse("app=nothing").unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        recommend(input, &opts).unwrap_err(),
        Error::NoneSelected { .. }
    ));
}

#[test]
fn many_addresses_of_one_network_become_a_prefix_that_says_so() {
    let ws = shop();
    let mut edges: Vec<Edge> = (1..=9)
        .map(|i| {
            edge(
                wl(&ws, "web-1"),
                addr(&format!("198.51.100.{i}")),
                6,
                443,
                Verdict::Allow,
            )
        })
        .collect();
    // Few: each its own host prefix.
    edges.extend((1..=3).map(|i| {
        edge(
            wl(&ws, "web-1"),
            addr(&format!("203.0.113.{i}")),
            6,
            443,
            Verdict::Allow,
        )
    }));
    let rec = run(&ws, &edges);
    let web = &rec.by_name()["recommended.web"];
    let yaml = to_yaml(&rec);
    assert!(yaml.contains("{cidr: 198.51.100.0/28}"), "{yaml}");
    for i in 1..=3 {
        assert!(
            yaml.contains(&format!("{{cidr: 203.0.113.{i}/32}}")),
            "{yaml}"
        );
    }
    assert_eq!(web.egress.len(), 4);
    assert_eq!(web.egress[0].connections, 18);
    assert!(
        web.egress[0].notes[0].contains(
            "summarises 9 observed addresses (198.51.100.1 to 198.51.100.9) and holds 16"
        ),
        "{:?}",
        web.egress[0]
    );
}

#[test]
fn dense_ports_become_a_range_sparse_ones_stay_apart() {
    let ws = shop();
    let mut edges: Vec<Edge> = (9000..9010u16)
        .filter(|p| *p != 9004)
        .map(|p| edge(wl(&ws, "web-1"), wl(&ws, "db-1"), 6, p, Verdict::Allow))
        .collect();
    edges.push(edge(
        wl(&ws, "web-1"),
        wl(&ws, "db-1"),
        6,
        80,
        Verdict::Allow,
    ));
    edges.push(edge(
        wl(&ws, "web-1"),
        wl(&ws, "db-1"),
        6,
        443,
        Verdict::Allow,
    ));
    edges.push(edge(
        wl(&ws, "web-1"),
        wl(&ws, "db-1"),
        17,
        53,
        Verdict::Allow,
    ));
    edges.push(edge(
        wl(&ws, "web-1"),
        wl(&ws, "db-1"),
        17,
        54,
        Verdict::Allow,
    ));
    let rec = run(&ws, &edges);
    let yaml = to_yaml(&rec);
    for want in [
        "{protocol: TCP, port: 80}",
        "{protocol: TCP, port: 443}",
        "{protocol: TCP, port: 9000, endPort: 9009}",
        "{protocol: UDP, port: 53, endPort: 54}",
    ] {
        assert!(yaml.contains(want), "{want} in\n{yaml}");
    }
    let db = &rec.by_name()["recommended.db"];
    assert_eq!(
        db.ingress[0].notes,
        ["TCP 9000-9009 covers 10 ports for 9 seen: wider than what was seen"]
    );
}

#[test]
fn the_same_flows_in_any_order_give_the_same_bytes() {
    let ws = shop();
    let edges = shop_edges(&ws);
    let a = to_yaml(&run(&ws, &edges));
    let mut rev = edges.clone();
    rev.reverse();
    let mut wrev = ws.clone();
    wrev.reverse();
    assert_eq!(a, to_yaml(&run(&wrev, &rev)));
}

#[test]
fn the_preview_allows_every_observed_connection_and_catches_a_missing_rule() {
    let ws = shop();
    let edges = shop_edges(&ws);
    let mut rec = run(&ws, &edges);
    let p = preview(&rec, &edges, &[]);
    assert_eq!(p.would_deny(), 0, "{p:?}");
    let db = p
        .policies
        .iter()
        .find(|p| p.name == "recommended.db")
        .unwrap();
    // Ingress from web-1, web-2 and batch, egress to the resolver.
    assert_eq!((db.allowed_edges, db.allowed_connections), (4, 8));
    // Without the rule for the batch job, its connection to db is a would-deny.
    let db = rec
        .policies
        .iter_mut()
        .find(|p| p.policy.name == "recommended.db")
        .unwrap();
    db.policy.ingress.as_mut().unwrap().remove(0);
    let p = preview(&rec, &edges, &[]);
    let db = p
        .policies
        .iter()
        .find(|p| p.name == "recommended.db")
        .unwrap();
    assert_eq!(db.would_deny_connections, 2);
    assert_eq!(
        db.examples,
        ["batch-1 -> db-1 TCP/5432 ingress (2 connections)"]
    );
}

#[test]
fn workloads_gone_since_are_grouped_by_the_labels_of_their_flows() {
    let ws = shop();
    let old = Endpoint::Workload {
        workload: "web-0".into(),
        labels: labels(&[("app", "web")]),
    };
    let edges = vec![edge(old, wl(&ws, "db-1"), 6, 5432, Verdict::Allow)];
    let rec = run(&ws, &edges);
    assert!(
        rec.notes.iter().any(|n| n.contains("web-0")),
        "{:?}",
        rec.notes
    );
    assert_eq!(rec.by_name()["recommended.web"].members, ["web-0"]);
    assert_eq!(preview(&rec, &edges, &[]).would_deny(), 0);
}

#[test]
fn local_legs_become_edges_counted_per_connection() {
    let ws = shop();
    let leg = |port: u16, time: i64, packets: u64| Leg {
        time: Timestamp(T0 + time),
        workload: "web-1".into(),
        egress: true,
        src_ip: "10.0.0.1".into(),
        dst_ip: "192.0.2.9".into(),
        src_port: port,
        dst_port: 443,
        protocol: 6,
        verdict: Verdict::Allow,
        policy: None,
        packets,
        bytes: packets * 100,
    };
    // Two connections, the first reported twice.
    let edges = edges_from_legs(&[leg(40000, 0, 3), leg(40000, 5, 9), leg(40001, 9, 1)], &ws);
    assert_eq!(edges.len(), 1);
    let e = &edges[0];
    assert_eq!(e.src, wl(&ws, "web-1"));
    assert_eq!(e.dst, addr("192.0.2.9"));
    assert_eq!((e.connections, e.packets, e.bytes), (2, 10, 1000));
    assert_eq!(
        (e.first_seen, e.last_seen),
        (Timestamp(T0), Timestamp(T0 + 9))
    );
}

#[test]
fn states_follow_the_newest_path() {
    let ws = shop();
    let mut edges = shop_edges(&ws);
    edges[3].first_seen = Timestamp(T0 + 3_000_000_000);
    let rec = run(&ws, &edges);
    let hour = Duration::from_secs(3600);
    let at = |s: i64| policy_states(&rec, Timestamp(T0 + s * 1_000_000), hour);
    // db's newest path (the resolver) appeared at T0 + 3000 s.
    assert_eq!(at(3100)[0], ("recommended.db".into(), State::Learning));
    assert_eq!(at(3000 + 1800)[0].1, State::Stabilizing);
    assert_eq!(at(3000 + 3600)[0].1, State::Stable);
    assert_eq!(at(3600)[2], ("recommended.web".into(), State::Stable));
}
