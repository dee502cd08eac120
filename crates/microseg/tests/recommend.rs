//! `microseg recommend` against a real controller holding flow records uploaded over the
//! agent link, as agents send them (docs/RECOMMEND.md; no root needed): the YAML passes
//! `microseg policy check`, is the same bytes on every run, `--preview` shows no
//! would-deny on the window (also once the recommendation is applied in audit), and bad
//! input exits 2 with the reason.

mod ctl;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ctl::{run, Controller, BIN};
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::{Flow, FlowBatch};
use microseg_testsupport::eventually;
use serde_json::Value;

const WORKLOADS: &str = "\
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: web-1, labels: {app: web, netns: web-1}}
spec: {ips: [10.92.0.11]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: web-2, labels: {app: web, netns: web-2}}
spec: {ips: [10.92.0.12]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: db-1, labels: {app: db, netns: db-1}}
spec: {ips: [10.92.0.21]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: cache-1, labels: {app: cache, netns: cache-1}}
spec: {ips: [10.92.0.31]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: batch-1, labels: {role: batch, netns: batch-1}}
spec: {ips: [10.92.0.41]}
";
const WEB1: &str = "10.92.0.11";
const WEB2: &str = "10.92.0.12";
const DB: &str = "10.92.0.21";
const CACHE: &str = "10.92.0.31";
const BATCH: &str = "10.92.0.41";
/// No workload's address: the resolver.
const RESOLVER: &str = "192.0.2.53";

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// A closed connection reported `age_s` ago at `workload`; ports name it.
fn flow(
    src_port: u32,
    age_s: i64,
    (workload, direction): (&str, &str),
    (src, dst, dst_port): (&str, &str, u32),
    protocol: u32,
    verdict: &str,
) -> Flow {
    let time_us = now_us() - age_s * 1_000_000;
    Flow {
        time_us,
        start_us: time_us - 1_000_000,
        end_us: Some(time_us),
        workload: workload.into(),
        direction: direction.into(),
        src_ip: src.into(),
        dst_ip: dst.into(),
        src_port,
        dst_port,
        protocol,
        verdict: verdict.into(),
        policy: None,
        packets: 4,
        bytes: 400,
        ..Default::default()
    }
}

/// Uploads the batch over the agent link with the agent token, as an agent does.
fn upload(c: &Controller, batch: FlowBatch) {
    let token = std::fs::read_to_string(c.dir.join("state/agent.token")).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = tonic::transport::Channel::from_shared(c.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut link = AgentLinkClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
            r.metadata_mut()
                .insert("authorization", auth.parse().unwrap());
            Ok(r)
        });
        let n = batch.flows.len() as u64;
        let r = link
            .upload_flows(tokio_stream::iter(vec![batch]))
            .await
            .unwrap();
        assert_eq!(r.into_inner().accepted, n);
    });
}

/// web calls db (TCP 5432) and cache (TCP 6379), db asks the resolver (UDP 53, logged),
/// web pings web, the batch job (no `app` label) reaches db in audit, and web's try of
/// db:22 is denied. Each connection between workloads is reported at both ends.
fn controller_with_traffic(test: &str) -> Controller {
    let c = Controller::start(test);
    let f = c.file("workloads.yaml", WORKLOADS);
    let (code, out, err) = c.cli(&["policy", "apply", "-f", &f]);
    assert_eq!(code, 0, "{out}{err}");
    let mut flows = Vec::new();
    let both =
        |flows: &mut Vec<Flow>, port, age, (a, b): (&str, &str), (src, dst), dport, proto, v| {
            flows.push(flow(port, age, (a, "egress"), (src, dst, dport), proto, v));
            flows.push(flow(port, age, (b, "ingress"), (src, dst, dport), proto, v));
        };
    both(
        &mut flows,
        40001,
        300,
        ("web-1", "db-1"),
        (WEB1, DB),
        5432,
        6,
        "allow",
    );
    both(
        &mut flows,
        40002,
        200,
        ("web-2", "db-1"),
        (WEB2, DB),
        5432,
        6,
        "allow",
    );
    both(
        &mut flows,
        40003,
        100,
        ("web-2", "cache-1"),
        (WEB2, CACHE),
        6379,
        6,
        "allow",
    );
    both(
        &mut flows,
        0,
        50,
        ("web-1", "web-2"),
        (WEB1, WEB2),
        0,
        1,
        "allow",
    );
    both(
        &mut flows,
        40004,
        40,
        ("batch-1", "db-1"),
        (BATCH, DB),
        5432,
        6,
        "audit",
    );
    flows.push(flow(
        40005,
        30,
        ("db-1", "egress"),
        (DB, RESOLVER, 53),
        17,
        "log",
    ));
    flows.push(flow(
        40006,
        20,
        ("db-1", "ingress"),
        (WEB1, DB, 22),
        6,
        "deny",
    ));
    let n = flows.len();
    upload(
        &c,
        FlowBatch {
            node: "node-a".into(),
            flows,
            ..Default::default()
        },
    );
    eventually(Duration::from_secs(10), || {
        let (_, out, _) = c.cli(&["flows", "-o", "json", "--limit", "1000"]);
        (out.lines().count() == n).then_some(()).ok_or(out)
    })
    .unwrap_or_else(|e| panic!("the records were not stored: {e}\n{}", c.log()));
    c
}

fn check(path: &str) -> (i32, String, String) {
    run(Command::new(BIN)
        .args(["policy", "check", "-f", path])
        .output()
        .unwrap())
}

#[test]
fn recommend_from_the_flow_record_checks_previews_clean_and_is_stable() {
    let c = controller_with_traffic("recommend");
    let (code, yaml, err) = c.cli(&["recommend", "--since", "1h"]);
    assert_eq!(code, 0, "{err}");
    println!("--- recommend --since 1h\n{yaml}--- stderr\n{err}");
    // One policy per group, batch-1 in a group of its own named after what it has.
    let names: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.strip_prefix("  name: "))
        .collect();
    assert_eq!(
        names,
        [
            "recommended.cache",
            "recommended.db",
            "recommended.no-app-role-batch",
            "recommended.web"
        ]
    );
    assert!(err.contains("without a grouping label (batch-1)"), "{err}");
    assert!(err.contains("1 denied edges"), "{err}");
    for absent in ["netns", "port: 22}", "endPort", "40001", "enforce"] {
        assert!(!yaml.contains(absent), "{absent} in\n{yaml}");
    }
    for present in [
        "- {cidr: 192.0.2.53/32}",
        "- {protocol: UDP, port: 53}",
        "- {protocol: TCP, port: 6379}",
        "- {protocol: ICMP}",
        "ingress: []",
        "mode: audit",
        "microseg.io/evidence.ingress.0: \"",
    ] {
        assert!(yaml.contains(present), "{present} not in\n{yaml}");
    }
    let file = c.file("recommended.yaml", &yaml);
    let (code, out, err) = check(&file);
    assert_eq!(code, 0, "policy check: {out}{err}\n{yaml}");

    // The same flows, the same bytes.
    let (_, again, _) = c.cli(&["recommend", "--since", "1h"]);
    assert_eq!(again, yaml);

    // The preview replays the window: nothing observed is denied.
    let (code, preview, err) = c.cli(&["recommend", "--since", "1h", "--preview"]);
    assert_eq!(code, 0, "{preview}{err}");
    println!("--- recommend --preview\n{preview}");
    assert_eq!(
        preview.matches(", would deny 0 (0 edges;").count(),
        4,
        "{preview}"
    );
    assert!(
        preview.contains("recommended.db: allows 7 observed connections"),
        "{preview}"
    );
    assert!(
        preview.contains("left out: 1 edges (1 connections)"),
        "{preview}"
    );
    let (code, json, _) = c.cli(&["recommend", "--preview", "-o", "json"]);
    assert_eq!(code, 0);
    let p: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(p["policies"].as_array().unwrap().len(), 4);

    // -o json: a List that reads back as the same policies.
    let (code, json, _) = c.cli(&["recommend", "-o", "json", "--mode", "enforce"]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["spec"]["mode"], "enforce");
    let (code, out, err) = check(&c.file("recommended.json", &json));
    assert_eq!(code, 0, "{out}{err}");

    // Applied in audit, then previewed again against it: still nothing denied.
    let (code, out, err) = c.cli(&["policy", "apply", "-f", &file]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = c.cli(&["recommend", "--preview"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches(", would deny 0 (0 edges;").count(), 4, "{out}");

    // --selector narrows the groups; --group-by takes several keys.
    let (code, out, err) = c.cli(&["recommend", "--selector", "app=db"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("kind: Policy").count(), 1, "{out}");
}

#[test]
fn bad_input_exits_2_with_the_reason() {
    let c = controller_with_traffic("recommend-bad");
    for (args, reason) in [
        (
            vec!["recommend", "--group-by", "tier"],
            "--group-by tier: no workload has this label (keys seen: app, netns, role)",
        ),
        (
            vec!["recommend", "--group-by", "app,netns"],
            "--group-by netns: a per-instance label",
        ),
        (
            vec!["recommend", "--since", "2099-01-01T00:00:00Z"],
            "the window holds no flows",
        ),
        (vec!["recommend", "--since", "yesterday"], "--since:"),
        (
            vec!["recommend", "--selector", "app=nothing"],
            "--selector app=nothing: no workload seen",
        ),
    ] {
        let (code, out, err) = c.cli(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(reason), "{args:?}: {err}");
    }
}
