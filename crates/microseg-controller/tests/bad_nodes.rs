//! Bad nodes are bounded and visible (docs/CONTROLLER.md "Bad nodes"): a report over the
//! per-node limit is refused whole and the node's workloads stay, invalid workloads are
//! counted, a node that never acks shows as behind while another keeps in sync; each in
//! `GET /v1/nodes` and `/metrics`. A real controller on SQLite over real gRPC.

mod common;

use common::*;
use microseg_proto::v1::{
    AckRequest, DesiredState, DiscoveredWorkload, SyncRequest, WorkloadReport,
};
use serde_json::Value;
use std::time::Duration;
use tonic::{Code, Status, Streaming};

fn workloads(node: &str, n: usize, net: u8) -> Vec<DiscoveredWorkload> {
    (0..n)
        .map(|i| DiscoveredWorkload {
            name: format!("{node}-w{i}"),
            interface: format!("veth{i}"),
            ips: vec![format!("10.{net}.{}.{}", i / 250, 1 + i % 250)],
            labels: [("app".to_string(), "web".to_string())].into(),
        })
        .collect()
}

async fn report(l: &mut AgentLink, node: &str, w: Vec<DiscoveredWorkload>) -> Result<(), Status> {
    l.report_workloads(WorkloadReport {
        node: node.into(),
        workloads: w,
    })
    .await
    .map(|_| ())
}

fn node(c: &microseg_controller::client::Client, name: &str) -> Value {
    let nodes = get(c, "/v1/nodes").body;
    nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("node {name} in {nodes}"))
}

fn metrics(ctl: &Ctl) -> String {
    let reply = raw(ctl, &request(ctl, "GET", "/metrics", None, b""));
    assert_eq!(reply.status, 200);
    String::from_utf8(reply.body).unwrap()
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

fn stored_of(c: &microseg_controller::client::Client, prefix: &str) -> usize {
    get(c, "/v1/workloads").body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["metadata"]["name"].as_str().unwrap().starts_with(prefix))
        .count()
}

#[test]
fn a_report_over_the_limit_is_refused_whole_and_the_previous_workloads_stay() {
    let state = TempDir::new("bad-nodes-limit");
    let mut opts = microseg_controller::Options::new(&state.0);
    opts.listen = "127.0.0.1:0".into();
    opts.max_workloads_per_node = 50;
    let ctl = Ctl::start_with(opts);
    let c = ctl.client();
    let e = ctl.rt.block_on(async {
        let mut l = agent_link(&ctl).await;
        report(&mut l, "big", workloads("big", 50, 1))
            .await
            .unwrap();
        report(&mut l, "big", workloads("big", 51, 1))
            .await
            .unwrap_err()
    });
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("51 workloads")
            && e.message().contains("more than the 50")
            && e.message().contains("--max-workloads-per-node"),
        "{}",
        e.message()
    );
    assert_eq!(stored_of(&c, "big-w"), 50, "the last good report stands");

    let n = node(&c, "big");
    let r = &n["reports"];
    assert_eq!(r["received"], 2, "{n}");
    assert_eq!(r["refused"], 1, "{n}");
    assert_eq!(r["lastRefused"], true, "{n}");
    assert_eq!(r["lastRefusal"]["reason"], "over_limit", "{n}");
    assert!(r["lastRefusal"]["message"]
        .as_str()
        .unwrap()
        .contains("more than the 50"));
    let text = metrics(&ctl);
    let refused = r#"microseg_controller_node_reports_refused_total{reason="over_limit"}"#;
    assert_eq!(value(&text, refused), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "microseg_controller_nodes_report_refused"),
        Some(1.0)
    );

    // A good report again: taken, the node no longer counts as refusing.
    ctl.rt.block_on(async {
        let mut l = agent_link(&ctl).await;
        report(&mut l, "big", workloads("big", 10, 1))
            .await
            .unwrap();
    });
    assert_eq!(stored_of(&c, "big-w"), 10);
    assert_eq!(node(&c, "big")["reports"]["lastRefused"], false);
    let text = metrics(&ctl);
    assert_eq!(
        value(&text, "microseg_controller_nodes_report_refused"),
        Some(0.0)
    );
    assert_eq!(value(&text, refused), Some(1.0), "a counter: {text}");
}

#[test]
fn invalid_and_conflicting_workloads_are_counted_and_shown() {
    let state = TempDir::new("bad-nodes-garbage");
    let ctl = Ctl::start(&state.0, None);
    let c = ctl.client();
    ctl.rt.block_on(async {
        let mut l = agent_link(&ctl).await;
        report(&mut l, "good", workloads("good", 3, 2))
            .await
            .unwrap();
        let mut garbage = workloads("garbage", 3, 3);
        garbage[0].name = "../../etc/passwd\n".into();
        garbage[1].ips = vec!["999.1.2.3".into()];
        // good's first address.
        let mut thief = workloads("thief", 1, 2);
        thief[0].name = "thief".into();
        garbage.extend(thief);
        report(&mut l, "garbage", garbage.clone()).await.unwrap();
        // The same again changes nothing (it is answered without a write) and counts.
        let rev = revision(&c);
        report(&mut l, "garbage", garbage).await.unwrap();
        assert_eq!(revision(&c), rev);
    });
    assert_eq!(stored_of(&c, "garbage-w"), 1, "the valid one is kept");
    let n = node(&c, "garbage");
    let r = &n["reports"];
    assert_eq!(r["refused"], 2, "{n}");
    assert_eq!(r["workloadsSkipped"], 6, "{n}");
    assert_eq!(r["lastRefused"], true, "{n}");
    assert_eq!(r["lastRefusal"]["reason"], "invalid", "{n}");
    let message = r["lastRefusal"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("3 workload(s) skipped") && message.contains("etc/passwd\\n"),
        "{message}"
    );
    assert_eq!(node(&c, "good")["reports"]["lastRefused"], false);

    let text = metrics(&ctl);
    for (series, want) in [
        (
            r#"microseg_controller_node_reports_refused_total{reason="invalid"}"#,
            2.0,
        ),
        (
            r#"microseg_controller_node_reports_refused_total{reason="over_limit"}"#,
            0.0,
        ),
        (
            r#"microseg_controller_reported_workloads_skipped_total{reason="invalid"}"#,
            4.0,
        ),
        (
            r#"microseg_controller_reported_workloads_skipped_total{reason="conflict"}"#,
            2.0,
        ),
        ("microseg_controller_nodes_report_refused", 1.0),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series}:\n{text}");
    }
}

async fn next(s: &mut Streaming<DesiredState>) -> DesiredState {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("a message within 5 s")
        .expect("stream ok")
        .expect("stream open")
}

/// Reads parts until the last of a revision; its revision.
async fn revision_of(s: &mut Streaming<DesiredState>) -> u64 {
    loop {
        let d = next(s).await;
        if !d.more {
            return d.revision;
        }
    }
}

#[test]
fn a_node_that_never_acks_is_behind_while_another_keeps_in_sync() {
    let state = TempDir::new("bad-nodes-no-ack");
    let mut opts = microseg_controller::Options::new(&state.0);
    opts.listen = "127.0.0.1:0".into();
    opts.node_behind_after = Duration::from_millis(500);
    let ctl = Ctl::start_with(opts);
    let c = ctl.client();
    let (text, silent, good) = ctl.rt.block_on(async {
        let (mut a, mut b) = (agent_link(&ctl).await, agent_link(&ctl).await);
        let sync = |node: &str| SyncRequest {
            node: node.into(),
            revision: 0,
            accepts_parts: true,
        };
        let mut sa = a.sync(sync("good")).await.unwrap().into_inner();
        let mut sb = b.sync(sync("silent")).await.unwrap().into_inner();
        revision_of(&mut sb).await;
        let mut last = revision_of(&mut sa).await;
        for port in [80, 81] {
            assert_eq!(
                call(&c, "POST", "/v1/apply", &policy(&format!("p{port}"), port)).status,
                200
            );
            while last < revision(&c) {
                last = revision_of(&mut sa).await;
            }
            a.ack(AckRequest {
                node: "good".into(),
                revision: last,
                error: String::new(),
            })
            .await
            .unwrap();
        }
        // Bounded: 10 s at most for "silent" to count as behind.
        for _ in 0..100 {
            let text = metrics(&ctl);
            if value(&text, "microseg_controller_nodes_behind") == Some(1.0) {
                return (text, node(&c, "silent"), node(&c, "good"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("silent never counted as behind: {}", metrics(&ctl));
    });
    assert_eq!(silent["behind"], true, "{silent}");
    assert_eq!(silent["lag"], 2, "{silent}");
    assert!(silent["behindSince"].is_string(), "{silent}");
    assert_eq!(good["behind"], false, "{good}");
    assert_eq!(good["inSync"], true, "{good}");
    assert!(good["behindSince"].is_null(), "{good}");
    assert_eq!(
        value(&text, r#"microseg_node_revision_lag{node="silent"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(&text, r#"microseg_node_revision_lag{node="good"}"#),
        Some(0.0)
    );
}
