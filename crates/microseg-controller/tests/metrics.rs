//! The controller's Prometheus metrics (docs/METRICS.md): behind the token, accepted by
//! `promtool check metrics`, and telling the nodes' states and revision lag as simulated
//! agents sync and acknowledge over the AgentLink service.

mod common;

use common::*;
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::{AckRequest, DesiredState, SyncRequest};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Streaming;

fn metrics(ctl: &Ctl) -> String {
    let reply = raw(ctl, &request(ctl, "GET", "/metrics", None, b""));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        reply
            .head
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        reply.head
    );
    String::from_utf8(reply.body).unwrap()
}

/// The value of the sample written exactly `series` (name and labels), if any.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup.sh installs prometheus)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the output:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node's sync stream (kept open: the node counts as connected while it is).
async fn sync(url: &str, token: &str, node: &str) -> (Link, Streaming<DesiredState>) {
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let mut client = AgentLinkClient::with_interceptor(channel, Auth(bearer));
    let stream = client
        .sync(SyncRequest {
            node: node.into(),
            revision: 0,
            accepts_parts: true,
        })
        .await
        .unwrap()
        .into_inner();
    (client, stream)
}

#[derive(Clone)]
struct Auth(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

type Link = AgentLinkClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

async fn ack(link: &mut Link, node: &str, revision: u64, error: &str) {
    link.ack(AckRequest {
        node: node.into(),
        revision,
        error: error.into(),
    })
    .await
    .unwrap();
}

#[test]
fn metrics_tell_node_states_and_lag_and_need_the_token() {
    let state = TempDir::new("metrics");
    let ctl = Ctl::start(&state.0, None);
    let c = ctl.client();
    let (url, token) = (ctl.url(), ctl.agent_token());

    let unauthorized = raw(
        &ctl,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(unauthorized.status, 401);

    let empty = metrics(&ctl);
    promtool_accepts(&empty);
    assert_eq!(value(&empty, "microseg_controller_revision"), Some(0.0));
    for s in ["in_sync", "lagging", "error", "disconnected"] {
        let series = format!("microseg_nodes{{state=\"{s}\"}}");
        assert_eq!(value(&empty, &series), Some(0.0), "{series}:\n{empty}");
    }

    assert_eq!(call(&c, "POST", "/v1/apply", &policy("p1", 80)).status, 200);
    assert_eq!(call(&c, "POST", "/v1/apply", &policy("p2", 81)).status, 200);
    assert_eq!(revision(&c), 2);

    let text = ctl.rt.block_on(async {
        let (mut a, _sa) = sync(&url, &token, "node-a").await;
        ack(&mut a, "node-a", 2, "").await;
        let (mut b, _sb) = sync(&url, &token, "node-b").await;
        ack(&mut b, "node-b", 1, "").await;
        let (mut e, _se) = sync(&url, &token, "node-e").await;
        ack(&mut e, "node-e", 2, "map full").await;
        let (mut d, sd) = sync(&url, &token, "node-d").await;
        ack(&mut d, "node-d", 2, "").await;
        drop((d, sd));
        // The closed stream is noticed by the server shortly after.
        let mut text = String::new();
        for _ in 0..100 {
            text = metrics(&ctl);
            if value(&text, r#"microseg_nodes{state="disconnected"}"#) == Some(1.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        text
    });
    promtool_accepts(&text);
    let expect = [
        ("microseg_controller_revision", 2.0),
        (r#"microseg_nodes{state="in_sync"}"#, 1.0),
        (r#"microseg_nodes{state="lagging"}"#, 1.0),
        (r#"microseg_nodes{state="error"}"#, 1.0),
        (r#"microseg_nodes{state="disconnected"}"#, 1.0),
        (r#"microseg_node_revision_lag{node="node-a"}"#, 0.0),
        (r#"microseg_node_revision_lag{node="node-b"}"#, 1.0),
        (r#"microseg_node_revision_lag{node="node-e"}"#, 2.0),
        (r#"microseg_node_revision{node="node-b"}"#, 1.0),
        (r#"microseg_node_update_failed{node="node-e"}"#, 1.0),
        (r#"microseg_node_update_failed{node="node-a"}"#, 0.0),
        (r#"microseg_node_connected{node="node-d"}"#, 0.0),
        (r#"microseg_node_connected{node="node-a"}"#, 1.0),
        ("microseg_flow_store_up", 1.0),
        ("microseg_flow_ingest_dropped_total", 0.0),
    ];
    for (series, want) in expect {
        assert_eq!(value(&text, series), Some(want), "{series}:\n{text}");
    }
    for family in [
        "microseg_controller_revision gauge",
        "microseg_nodes gauge",
        "microseg_node_revision_lag gauge",
        "microseg_flow_ingest_received_total counter",
        "microseg_flow_ingest_queued gauge",
    ] {
        assert!(text.contains(&format!("# TYPE {family}\n")), "{family}");
    }
}
