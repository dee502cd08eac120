//! The AgentLink gRPC service with the generated client: full state then deltas, acks in
//! /v1/nodes, discovered workloads and their labels, flows; two controllers on one
//! PostgreSQL.

mod common;

use common::*;
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::{
    AckRequest, DesiredState, DiscoveredWorkload, FlowBatch, SyncRequest, WorkloadReport,
};
use serde_json::Value;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

type Auth = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send>;
type Link = AgentLinkClient<InterceptedService<Channel, Auth>>;

async fn link(url: &str, token: Option<String>) -> Link {
    let ch = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let f: Auth = Box::new(move |mut r: Request<()>| {
        if let Some(t) = &token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Ok(r)
    });
    AgentLinkClient::with_interceptor(ch, f)
}

/// A node's first sync: it enforces no revision yet.
fn first_sync(node: &str) -> SyncRequest {
    SyncRequest {
        node: node.into(),
        revision: 0,
        accepts_parts: true,
    }
}

async fn next(s: &mut Streaming<DesiredState>) -> DesiredState {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("a message within 5 s")
        .expect("stream ok")
        .expect("stream open")
}

fn doc(d: &DesiredState, kind: &str, name: &str) -> Option<Value> {
    d.upserts
        .iter()
        .find(|r| r.kind == kind && r.name == name)
        .map(|r| serde_json::from_str(&r.json).unwrap())
}

fn discovered(name: &str, iface: &str, ip: &str, node: &str) -> DiscoveredWorkload {
    DiscoveredWorkload {
        name: name.into(),
        interface: iface.into(),
        ips: vec![ip.into()],
        labels: [
            ("netns".to_string(), name.to_string()),
            ("node".to_string(), node.to_string()),
        ]
        .into(),
    }
}

fn node<'a>(nodes: &'a Value, name: &str) -> &'a Value {
    nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("node {name} in {nodes}"))
}

#[test]
fn sync_streams_full_state_then_deltas_and_acks_show_in_nodes() {
    let state = TempDir::new("grpc");
    let ctl = Ctl::start(&state.0, None);
    let c = ctl.client();
    let (url, token) = (ctl.url(), ctl.token());
    assert_eq!(
        call(&c, "POST", "/v1/apply", &policy("p1", 5432)).status,
        200
    );
    ctl.rt.block_on(async {
        // Without the token: UNAUTHENTICATED, and the node is not registered.
        let mut anon = link(&url, None).await;
        let e = anon.sync(first_sync("node-a")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let e = anon
            .ack(AckRequest {
                node: "node-a".into(),
                revision: 1,
                error: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);

        let mut a = link(&url, Some(token.clone())).await;
        let mut sa = a.sync(first_sync("node-a")).await.unwrap().into_inner();
        let full = next(&mut sa).await;
        assert!(full.full);
        assert_eq!(full.revision, 1);
        let p1 = doc(&full, "Policy", "p1").expect("p1 in the full state");
        assert_eq!(p1["spec"]["ingress"][0]["ports"][0]["port"], 5432);
        assert!(
            p1["metadata"].get("annotations").is_none(),
            "the agent gets the pure document"
        );

        // A policy applied through the API arrives as a delta.
        let r = call(&c, "POST", "/v1/apply", &policy("p2", 80));
        assert_eq!(r.body["revision"], 2);
        let d = next(&mut sa).await;
        assert!(!d.full);
        assert_eq!(d.revision, 2);
        assert_eq!(d.upserts.len(), 1);
        assert!(doc(&d, "Policy", "p2").is_some());
        assert!(c.call("DELETE", "/v1/policies/p1", None).unwrap().ok());
        let d = next(&mut sa).await;
        assert_eq!((d.revision, d.upserts.len()), (3, 0));
        assert_eq!(
            (d.deletes[0].kind.as_str(), d.deletes[0].name.as_str()),
            ("Policy", "p1")
        );

        a.ack(AckRequest {
            node: "node-a".into(),
            revision: 3,
            error: String::new(),
        })
        .await
        .unwrap();
        let nodes = get(&c, "/v1/nodes").body;
        let n = node(&nodes, "node-a");
        assert_eq!(
            (n["revision"].as_u64(), n["lag"].as_u64()),
            (Some(3), Some(0)),
            "{n}"
        );
        assert_eq!(n["controllerRevision"], 3);
        assert_eq!(n["connected"], true);
        assert!(n["lastSeen"].as_str().unwrap().ends_with('Z'));

        // Discovered workloads: node-a's "web" keeps its interface for node-a and is a
        // peer (no interface) for node-b; node-b's own "web" becomes "web.node-b".
        a.report_workloads(WorkloadReport {
            node: "node-a".into(),
            workloads: vec![discovered("web", "veth-web", "10.1.0.2", "node-a")],
        })
        .await
        .unwrap();
        let d = next(&mut sa).await;
        assert_eq!(d.revision, 4);
        let web = doc(&d, "Workload", "web").expect("web");
        assert_eq!(web["spec"]["interface"], "veth-web");
        assert_eq!(web["metadata"]["labels"]["node"], "node-a");

        let mut b = link(&url, Some(token.clone())).await;
        let mut sb = b.sync(first_sync("node-b")).await.unwrap().into_inner();
        let full_b = next(&mut sb).await;
        let web_peer = doc(&full_b, "Workload", "web").expect("web for node-b");
        assert!(web_peer["spec"].get("interface").is_none(), "{web_peer}");
        assert_eq!(web_peer["spec"]["ips"][0], "10.1.0.2");

        b.report_workloads(WorkloadReport {
            node: "node-b".into(),
            workloads: vec![discovered("web", "veth-web", "10.2.0.2", "node-b")],
        })
        .await
        .unwrap();
        let d = next(&mut sb).await;
        assert!(doc(&d, "Workload", "web.node-b").is_some(), "{d:?}");
        let d = next(&mut sa).await;
        let peer = doc(&d, "Workload", "web.node-b").unwrap();
        assert!(peer["spec"].get("interface").is_none());

        // Labels set through the API win over the report and survive the next report.
        let r = call(
            &c,
            "PUT",
            "/v1/workloads/web.node-b/labels",
            r#"{"labels": {"env": "prod", "netns": null}}"#,
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        b.report_workloads(WorkloadReport {
            node: "node-b".into(),
            workloads: vec![discovered("web", "veth-web", "10.2.0.3", "node-b")],
        })
        .await
        .unwrap();
        let w = get(&c, "/v1/workloads/web.node-b").body;
        assert_eq!(
            w["metadata"]["labels"],
            serde_json::json!({"env": "prod", "node": "node-b"})
        );
        assert_eq!(w["spec"]["ips"][0], "10.2.0.3");
        assert_eq!(w["metadata"]["annotations"]["microseg.io/node"], "node-b");
        // A reported address that another workload owns is skipped (the set stays valid).
        b.report_workloads(WorkloadReport {
            node: "node-b".into(),
            workloads: vec![
                discovered("web", "veth-web", "10.2.0.3", "node-b"),
                discovered("thief", "veth-thief", "10.1.0.2", "node-b"),
            ],
        })
        .await
        .unwrap();
        assert_eq!(get(&c, "/v1/workloads/thief").status, 404);
        assert_eq!(get(&c, "/v1/workloads/web.node-b").status, 200);
        // A discovered workload cannot be deleted or shadowed through the API.
        assert_eq!(
            c.call("DELETE", "/v1/workloads/web", None).unwrap().status,
            409
        );
        assert_eq!(
            call(&c, "POST", "/v1/apply", &workload("web", "10.3.0.1")).status,
            409
        );

        // A failed revision: the error shows, the enforced revision stays, lag grows.
        let rev = revision(&c);
        b.ack(AckRequest {
            node: "node-b".into(),
            revision: rev,
            error: "map full".into(),
        })
        .await
        .unwrap();
        let nodes = get(&c, "/v1/nodes").body;
        let n = node(&nodes, "node-b");
        assert!(n["error"].as_str().unwrap().contains("map full"), "{n}");
        assert_eq!(n["revision"], 0);
        assert_eq!(n["lag"].as_u64(), Some(rev));

        // A namespace gone: its workload is deleted everywhere.
        a.report_workloads(WorkloadReport {
            node: "node-a".into(),
            workloads: vec![],
        })
        .await
        .unwrap();
        let mut deleted = false;
        for _ in 0..4 {
            let d = next(&mut sb).await;
            if d.deletes.iter().any(|r| r.name == "web") {
                deleted = true;
                break;
            }
        }
        assert!(deleted);
        assert_eq!(get(&c, "/v1/workloads/web").status, 404);

        // Flows as older agents upload them (JSON), batched up a client stream.
        let batches = vec![
            FlowBatch {
                node: "node-a".into(),
                flows_json: vec![
                    legacy_flow("web", "allow", 80),
                    legacy_flow("web", "deny", 22),
                    "not json".into(),
                ],
                ..FlowBatch::default()
            },
            FlowBatch {
                node: "node-b".into(),
                flows_json: vec![legacy_flow("db", "deny", 5432)],
                ..FlowBatch::default()
            },
        ];
        let r = a.upload_flows(tokio_stream::iter(batches)).await.unwrap();
        assert_eq!(r.into_inner().accepted, 3);
    });
    let status = stored(&c, 3);
    assert_eq!(
        (status["received"].as_u64(), status["rejected"].as_u64()),
        (Some(4), Some(1))
    );
    let f = get(&c, "/v1/flows?verdict=deny");
    let items = f.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["node"], "node-a");
    let f = get(&c, "/v1/flows?workload=web&node=node-a");
    assert_eq!(f.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(get(&c, "/v1/flows?since=bogus").status, 400);
}

#[test]
fn two_controllers_on_one_postgres_see_each_others_changes() {
    let pg = Postgres::start();
    let url = pg.database("shared");
    let (sa, sb) = (TempDir::new("pga"), TempDir::new("pgb"));
    let a = Ctl::start(&sa.0, Some(&url));
    let b = Ctl::start(&sb.0, Some(&url));
    let (ca, cb) = (a.client(), b.client());
    let (burl, btoken) = (b.url(), b.token());
    b.rt.block_on(async {
        let mut l = link(&burl, Some(btoken)).await;
        let mut s = l.sync(first_sync("node-b")).await.unwrap().into_inner();
        let full = next(&mut s).await;
        assert_eq!((full.revision, full.upserts.len()), (0, 0));
        // A change through controller A reaches an agent of controller B (NOTIFY, or the
        // poll behind it): the next message after the full state is that change, as a delta.
        let r = tokio::task::spawn_blocking(move || {
            call(&ca, "POST", "/v1/apply", &policy("shared", 443))
        })
        .await
        .unwrap();
        assert_eq!(r.body["revision"], 1);
        let d = next(&mut s).await;
        assert_eq!((d.revision, d.full), (1, false), "{d:?}");
        assert!(doc(&d, "Policy", "shared").is_some(), "{d:?}");
    });
    // B serves what A stored, and its writes raise the same revision.
    assert_eq!(names(&get(&cb, "/v1/policies")), ["shared"]);
    let r = call(&cb, "POST", "/v1/apply", &policy("second", 80));
    assert_eq!(r.body["revision"], 2);
    assert_eq!(
        names(&get(&a.client(), "/v1/policies")),
        ["second", "shared"]
    );
}

#[test]
fn agents_link_with_the_agent_token() {
    let state = TempDir::new("grpc-agent-token");
    let ctl = Ctl::start(&state.0, None);
    let (url, agent_token) = (ctl.url(), ctl.agent_token());
    ctl.rt.block_on(async {
        let mut a = link(&url, Some(agent_token)).await;
        let mut s = a
            .sync(first_sync("node-a"))
            .await
            .expect("the agent token opens the agent link")
            .into_inner();
        next(&mut s).await;
    });
}

#[test]
fn a_node_token_speaks_for_its_node_only() {
    let state = TempDir::new("grpc-node-token");
    let ctl = Ctl::start(&state.0, None);
    let url = ctl.url();
    let token = microseg_controller::node_token::node_token(&ctl.agent_token(), "node-a");
    // A node token opens no REST endpoint either.
    let rest = microseg_controller::client::Client::new(&url, Some(token.clone())).unwrap();
    let r = get(&rest, "/v1/policies");
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(r.error_text().contains("node token"), "{}", r.error_text());
    ctl.rt.block_on(async {
        let mut a = link(&url, Some(token.clone())).await;
        let mut s = a
            .sync(first_sync("node-a"))
            .await
            .expect("its own node")
            .into_inner();
        next(&mut s).await;

        // Every call in another node's name is refused, naming the token's node.
        let e = a.sync(first_sync("node-b")).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(e.message().contains("\"node-a\""), "{}", e.message());
        let e = a
            .ack(AckRequest {
                node: "node-b".into(),
                revision: 0,
                error: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let e = a
            .report_workloads(WorkloadReport {
                node: "node-b".into(),
                workloads: vec![discovered("db", "veth-db", "10.0.0.2", "node-b")],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let batch = |node: &str| FlowBatch {
            node: node.into(),
            flows_json: vec![legacy_flow("web", "allow", 80)],
            ..FlowBatch::default()
        };
        let r = a
            .upload_flows(tokio_stream::iter(vec![batch("node-a")]))
            .await;
        assert_eq!(r.unwrap().into_inner().accepted, 1);
        let e = a
            .upload_flows(tokio_stream::iter(vec![batch("node-b")]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);

        // Another node's name before this MAC, or a MAC under another key: no token at all.
        let mac = token.rsplit_once('.').unwrap().1;
        for forged in [
            format!("node-b.{mac}"),
            microseg_controller::node_token::node_token("not-the-agent-token", "node-b"),
        ] {
            let mut f = link(&url, Some(forged)).await;
            let e = f.sync(first_sync("node-b")).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        }
    });
    assert_eq!(get(&ctl.client(), "/v1/workloads/db").status, 404);
}

#[test]
fn a_workload_report_is_bounded() {
    let state = TempDir::new("grpc-report-bounds");
    let ctl = Ctl::start(&state.0, None);
    let (url, token) = (ctl.url(), ctl.token());
    ctl.rt.block_on(async {
        let mut a = link(&url, Some(token)).await;
        let many = (0..=microseg_controller::DEFAULT_MAX_WORKLOADS_PER_NODE)
            .map(|i| discovered(&format!("w{i}"), "", "10.9.0.1", "node-a"))
            .collect();
        let e = a
            .report_workloads(WorkloadReport {
                node: "node-a".into(),
                workloads: many,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(
            e.message().contains("more than the 2000"),
            "{}",
            e.message()
        );

        // A workload with too many addresses is skipped; the rest of the report stands.
        let mut wide = discovered("wide", "veth-wide", "10.9.0.2", "node-a");
        wide.ips = (0..=microseg_controller::MAX_WORKLOAD_ADDRESSES)
            .map(|i| format!("10.9.1.{i}"))
            .collect();
        a.report_workloads(WorkloadReport {
            node: "node-a".into(),
            workloads: vec![wide, discovered("web", "veth-web", "10.9.0.3", "node-a")],
        })
        .await
        .unwrap();
    });
    let c = ctl.client();
    assert_eq!(get(&c, "/v1/workloads/wide").status, 404);
    assert_eq!(get(&c, "/v1/workloads/web").status, 200);
}

/// A policy of `rules` ingress rules, one port each: about 100 bytes of JSON per rule.
fn wide_policy(name: &str, rules: usize) -> String {
    let mut y = format!(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{app: db}}}}\n  ingress:\n"
    );
    for i in 0..rules {
        y.push_str(&format!(
            "    - action: allow\n      from: [{{selector: {{matchLabels: {{app: web}}}}}}]\n      ports: [{{protocol: TCP, port: {}}}]\n",
            1 + i % 65_000
        ));
    }
    y
}

/// Reads the parts of one revision, checking how they are cut, until the last one.
async fn parts_of_one_revision(s: &mut Streaming<DesiredState>) -> Vec<DesiredState> {
    use microseg_proto::prost::Message;
    use microseg_proto::STATE_CHUNK_BYTES;
    let mut parts = vec![next(s).await];
    while parts.last().unwrap().more {
        parts.push(next(s).await);
    }
    let revision = parts[0].revision;
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.revision, revision, "part {i}");
        assert_eq!(p.full, i == 0 && parts[0].full, "only a first part is full");
        let alone = p.upserts.len() + p.deletes.len() == 1;
        assert!(
            alone || p.encoded_len() <= STATE_CHUNK_BYTES,
            "part {i}: {} bytes in {} resources",
            p.encoded_len(),
            p.upserts.len()
        );
    }
    parts
}

/// The resources of `parts` by name, each of which must come once, with their documents.
fn joined(parts: &[DesiredState]) -> std::collections::BTreeMap<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    for r in parts.iter().flat_map(|p| &p.upserts) {
        let doc: Value = serde_json::from_str(&r.json).unwrap();
        assert!(
            out.insert(r.name.clone(), doc).is_none(),
            "{} twice",
            r.name
        );
    }
    out
}

/// A state several MiB large reaches a client with tonic's default 4 MiB limit, in parts
/// of at most 1 MiB (a larger resource alone), which join to exactly the stored resources;
/// a large delta comes in parts too.
#[test]
fn a_large_state_arrives_in_parts_that_join_to_exactly_its_resources() {
    let state = TempDir::new("grpc-parts");
    let ctl = Ctl::start(&state.0, None);
    let c = ctl.client();
    let mut yaml: Vec<String> = (0..60)
        .map(|i| wide_policy(&format!("wide-{i}"), 800))
        .collect();
    yaml.push(wide_policy("huge", 12_000));
    let r = call(&c, "POST", "/v1/apply", &yaml.join("---\n"));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let first = revision(&c);
    let stored = |name: &str| get(&c, &format!("/v1/policies/{name}")).body;
    let (url, token) = (ctl.url(), ctl.token());
    let (full, delta) = ctl.rt.block_on(async {
        let mut a = link(&url, Some(token)).await;
        let mut s = a.sync(first_sync("node-a")).await.unwrap().into_inner();
        let full = parts_of_one_revision(&mut s).await;
        let more: Vec<String> = (60..90)
            .map(|i| wide_policy(&format!("wide-{i}"), 800))
            .collect();
        let c2 = c.clone();
        let r = tokio::task::spawn_blocking(move || {
            call(&c2, "POST", "/v1/apply", &more.join("---\n"))
        })
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        let delta = parts_of_one_revision(&mut s).await;
        (full, delta)
    });

    let size: usize = full
        .iter()
        .map(microseg_proto::prost::Message::encoded_len)
        .sum();
    assert!(size > 6 << 20, "the state is {size} bytes");
    assert!(full.len() >= 6 && full[0].full, "{} parts", full.len());
    assert_eq!(full[0].revision, first);
    let huge = full
        .iter()
        .find(|p| p.upserts.iter().any(|r| r.name == "huge"))
        .unwrap();
    assert_eq!(
        huge.upserts.len(),
        1,
        "a resource larger than a part goes alone"
    );
    let got = joined(&full);
    let mut names: Vec<String> = (0..60).map(|i| format!("wide-{i}")).collect();
    names.push("huge".into());
    names.sort();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), names);
    for name in ["wide-0", "wide-59", "huge"] {
        assert_eq!(got[name]["spec"], stored(name)["spec"], "{name}");
    }
    assert_eq!(
        got["huge"]["spec"]["ingress"].as_array().unwrap().len(),
        12_000
    );

    assert!(delta.len() >= 3 && !delta[0].full, "{} parts", delta.len());
    assert!(delta[0].revision > first);
    let got = joined(&delta);
    let mut names: Vec<String> = (60..90).map(|i| format!("wide-{i}")).collect();
    names.sort();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), names);
    assert_eq!(got["wide-89"]["spec"], stored("wide-89")["spec"]);
}

#[test]
fn an_agent_that_does_not_join_parts_gets_each_revision_whole() {
    let state = TempDir::new("grpc-whole");
    let ctl = Ctl::start(&state.0, None);
    let c = ctl.client();
    let yaml: Vec<String> = (0..20)
        .map(|i| wide_policy(&format!("wide-{i}"), 800))
        .collect();
    let r = call(&c, "POST", "/v1/apply", &yaml.join("---\n"));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (url, token) = (ctl.url(), ctl.token());
    let first = ctl.rt.block_on(async {
        let mut a = link(&url, Some(token))
            .await
            .max_decoding_message_size(microseg_proto::MAX_MESSAGE_BYTES);
        let old_agent = SyncRequest {
            accepts_parts: false,
            ..first_sync("node-a")
        };
        let mut s = a.sync(old_agent).await.unwrap().into_inner();
        next(&mut s).await
    });
    let size = microseg_proto::prost::Message::encoded_len(&first);
    assert!(size > microseg_proto::STATE_CHUNK_BYTES, "{size} bytes");
    assert!(first.full && !first.more);
    assert_eq!(first.upserts.len(), 20);
}
