//! The REST API fuzzed from the OpenAPI document it serves: scripts/schemathesis.sh runs
//! schemathesis (installed on demand) against a controller of this test's own, holding a
//! few resources and flows so that the operations on one resource reach it. Every
//! request must be answered without a server error, with a status, content type, headers
//! and body the document gives; scripts/schemathesis.toml lists the checks.

mod common;

use common::*;
use microseg_controller::client::Client;
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::{
    AckRequest, DiscoveredWorkload, Flow, FlowBatch, SyncRequest, WorkloadReport,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

type Auth = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send>;
type Link = AgentLinkClient<InterceptedService<Channel, Auth>>;

/// The whole run's bound: schemathesis takes about a minute on two cores.
const RUN_LIMIT: Duration = Duration::from_secs(240);

fn audit_policy(name: &str) -> String {
    format!(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  mode: audit\n  egress:\n    - action: allow\n      to: [{{selector: {{matchLabels: {{app: db}}}}}}]\n      ports: [{{protocol: TCP, port: 5432}}]\n"
    )
}

/// The agent link with the agent token, as node-a's agent holds it.
async fn agent_link(ctl: &Ctl) -> Link {
    let token = ctl.agent_token();
    let ch = Channel::from_shared(ctl.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let auth: Auth = Box::new(move |mut r: Request<()>| {
        let t = format!("Bearer {token}").parse().unwrap();
        r.metadata_mut().insert("authorization", t);
        Ok(r)
    });
    AgentLinkClient::with_interceptor(ch, auth)
}

/// node-a's agent: its Sync stream open for the whole run (a connected node that acked
/// its revision, for `GET /v1/nodes`) and a workload it discovered, `found` (a PUT or
/// DELETE of it gets 409; its labels take an overlay).
fn seed_agent(ctl: &Ctl) {
    ctl.rt.block_on(async {
        let mut link = agent_link(ctl).await;
        let sync = SyncRequest {
            node: "node-a".into(),
            revision: 0,
            accepts_parts: true,
        };
        let mut stream = link.sync(sync).await.expect("sync").into_inner();
        let full = stream.message().await.expect("stream").expect("full state");
        let ack = AckRequest {
            node: "node-a".into(),
            revision: full.revision,
            error: String::new(),
        };
        link.ack(ack).await.expect("ack");
        let found = DiscoveredWorkload {
            name: "found".into(),
            interface: "veth-found".into(),
            ips: vec!["10.8.0.3".into()],
            labels: [("app".to_string(), "found".to_string())].into(),
        };
        let report = WorkloadReport {
            node: "node-a".into(),
            workloads: vec![found],
        };
        link.report_workloads(report).await.expect("report");
        // Takes what the controller sends until it stops.
        tokio::spawn(async move { while let Ok(Some(_)) = stream.message().await {} });
    });
}

/// web -> db connections, allowed on 5432 and denied on 22, as agents report them.
fn seed_flows(ctl: &Ctl) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let flows: Vec<Flow> = [(5432, "allow"), (22, "deny")]
        .into_iter()
        .flat_map(|(port, verdict)| {
            ["egress", "ingress"]
                .into_iter()
                .map(move |direction| Flow {
                    time_us: now,
                    start_us: now - 100_000,
                    end_us: Some(now),
                    workload: if direction == "egress" { "web" } else { "db" }.into(),
                    direction: direction.into(),
                    src_ip: "10.8.0.1".into(),
                    dst_ip: "10.8.0.2".into(),
                    src_port: 40000,
                    dst_port: port,
                    protocol: 6,
                    verdict: verdict.into(),
                    packets: 4,
                    bytes: 400,
                    ..Flow::default()
                })
        })
        .collect();
    let n = flows.len() as u64;
    ctl.rt.block_on(async {
        let mut link = agent_link(ctl).await;
        let batch = FlowBatch {
            node: "node-a".into(),
            flows,
            ..FlowBatch::default()
        };
        link.upload_flows(tokio_stream::iter(vec![batch]))
            .await
            .expect("upload flows");
    });
    stored(&ctl.client(), n);
}

/// Runs scripts/schemathesis.sh against `ctl`: (success, its report).
fn schemathesis(ctl: &Ctl, dir: &Path) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/schemathesis.sh");
    let log = dir.join("schemathesis.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("bash")
        .arg(script)
        .arg(ctl.url())
        .arg(ctl.token())
        // Reports in the test's dir unless the caller wants them kept elsewhere.
        .env(
            "ST_REPORT_DIR",
            std::env::var_os("ST_REPORT_DIR").unwrap_or_else(|| dir.join("report").into()),
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("run scripts/schemathesis.sh");
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(s) => (s.success(), report),
        None => (false, format!("{report}\n(stopped after {RUN_LIMIT:?})")),
    }
}

#[test]
fn every_request_from_the_openapi_document_is_answered_as_documented() {
    let dir = TempDir::new("rest-fuzz");
    let ctl = Ctl::start(&dir.0, None);
    let c = ctl.client();
    for body in [
        workload("web", "10.8.0.1"),
        workload("db", "10.8.0.2"),
        policy("db", 5432),
        audit_policy("audit-web"),
    ] {
        let r = call(&c, "POST", "/v1/apply", &body);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    seed_agent(&ctl);
    seed_flows(&ctl);
    let nodes = get(&c, "/v1/nodes").body;
    assert_eq!(nodes["items"][0]["connected"], true, "{nodes}");
    assert_eq!(get(&c, "/v1/workloads/found").status, 200);

    let started = Instant::now();
    let (ok, report) = schemathesis(&ctl, &dir.0);
    eprintln!("{report}\nschemathesis took {:?}", started.elapsed());
    assert!(ok, "schemathesis found failures (report above)");
    // The run reached every operation the document has but the document's own (loaded
    // from it, schemathesis leaves it out).
    let doc: serde_json::Value = serde_json::from_str(microseg_controller::OPENAPI).unwrap();
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .count()
        })
        .sum::<usize>()
        - 1;
    assert!(
        report.contains(&format!("Tested: {operations}\n")),
        "not all {operations} operations tested"
    );
}

/// Whether an error answer's message or one of its details says `what`.
fn says(error: &serde_json::Value, what: &str) -> bool {
    let details = error["details"].as_array().into_iter().flatten();
    std::iter::once(&error["error"])
        .chain(details)
        .any(|m| m.as_str().is_some_and(|m| m.contains(what)))
}

/// What openapi.json says of the input the fuzzer generates, held by the server: where
/// the document takes a number, a boolean or null, the server does, and where it asks for
/// a non-empty value, an empty one is refused naming the problem.
#[test]
fn the_input_the_document_describes_is_what_the_server_takes() {
    let dir = TempDir::new("rest-fuzz-input");
    let ctl = Ctl::start(&dir.0, None);
    let c = ctl.client();
    let json = |method: &str, path: &str, body: &str| {
        c.call(method, path, Some(("application/json", body.as_bytes())))
            .expect("request")
    };
    let head = r#""apiVersion": "microseg.io/v1""#;
    let taken = [
        // YAML scalars are read as their text: a number or a boolean is a name or a value.
        format!(
            r#"{{{head}, "kind": "Workload", "metadata": {{"name": 5, "labels": {{"v": 1.5, "on": true, "x": null}}}}}}"#
        ),
        format!(
            r#"{{{head}, "kind": "Workload", "metadata": {{"name": "w", "labels": null, "annotations": null}}, "spec": null}}"#
        ),
        format!(
            r#"{{{head}, "kind": "Workload", "metadata": {{"name": "v"}}, "spec": {{"interface": null, "ips": null}}}}"#
        ),
        format!(
            r#"{{{head}, "kind": "Policy", "metadata": {{"name": "p"}}, "spec": {{"selector": null, "mode": "AUDIT", "ingress": null}}}}"#
        ),
        format!(
            r#"{{{head}, "kind": "Policy", "metadata": {{"name": "q"}}, "spec": {{"selector": {{"matchLabels": null, "matchExpressions": [{{"key": "k", "operator": "Exists", "values": null}}]}}, "egress": [{{"action": "Deny", "to": null, "ports": [{{}}], "sourcePorts": null}}]}}}}"#
        ),
    ];
    for body in &taken {
        let r = json("POST", "/v1/apply?dryRun=true", body);
        assert_eq!(r.status, 200, "{body}: {}", r.body);
    }
    let refused = [
        (
            format!(
                r#"{{{head}, "kind": "Policy", "metadata": {{"name": "p"}}, "spec": {{"selector": {{}}, "mode": null}}}}"#
            ),
            "mode must be a string",
        ),
        (
            format!(
                r#"{{{head}, "kind": "Policy", "metadata": {{"name": "p"}}, "spec": {{"selector": {{}}, "priority": null}}}}"#
            ),
            "priority must be an integer",
        ),
        (
            format!(
                r#"{{{head}, "kind": "Policy", "metadata": {{"name": "p"}}, "spec": {{"selector": {{}}, "ingress": [{{"action": "allow", "sourcePorts": [{{}}]}}]}}}}"#
            ),
            "missing field \"port\"",
        ),
        (
            format!(
                r#"{{{head}, "kind": "Policy", "metadata": {{"name": "p"}}, "spec": {{"selector": {{}}, "ingress": [{{"action": "allow", "from": [{{}}]}}]}}}}"#
            ),
            "exactly one of",
        ),
        (
            format!(r#"{{{head}, "kind": "Workload", "metadata": {{"name": null}}}}"#),
            "name must be a string",
        ),
    ];
    for (body, why) in &refused {
        let r = json("POST", "/v1/apply?dryRun=true", body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(says(&r.body, why), "{why}: {}", r.body);
    }
    // Empty where the document asks for at least one character, item or label.
    for (method, path, body, why) in [
        ("POST", "/v1/apply?file=", "{}", "the name is empty"),
        ("GET", "/v1/flows?since=", "", "since"),
        ("GET", "/v1/flows/edges?until=", "", "until"),
        ("GET", "/v1/recommendations?since=", "", "since"),
        ("POST", "/v1/apply/files", r#"{"files": []}"#, "no files"),
        (
            "POST",
            "/v1/apply/files",
            r#"{"files": [{"name": "", "content": "x"}]}"#,
            "the name is empty",
        ),
        ("POST", "/v1/delete", r#"{"resources": []}"#, "no resources"),
        (
            "PUT",
            "/v1/workloads/w/labels",
            r#"{"labels": {}}"#,
            "no labels",
        ),
    ] {
        let r = json(method, path, body);
        assert_eq!(r.status, 400, "{method} {path} {body}: {}", r.body);
        assert!(
            r.body["error"].is_string() && r.body["details"].is_array(),
            "{}",
            r.body
        );
        assert!(says(&r.body, why), "{why}: {}", r.body);
    }
    // A dry run creates nothing: what a link from it names is not found.
    let body = format!(
        r#"{{{head}, "kind": "Policy", "metadata": {{"name": "dry"}}, "spec": {{"selector": {{}}}}}}"#
    );
    let r = json("PUT", "/v1/policies/dry?dryRun=true", &body);
    assert_eq!(
        (r.status, &r.body["applied"][0]["action"]),
        (200, &"created".into())
    );
    assert_eq!(get(&c, "/v1/policies/dry").status, 404);
}

/// Every operation of the document answers the agent token 403 with the Error shape, and
/// documents that 403 (schemathesis sends only the controller token, so it would not
/// see an undocumented one).
#[test]
fn every_operation_documents_the_403_it_answers_the_agent_token() {
    let dir = TempDir::new("rest-fuzz-403");
    let ctl = Ctl::start(&dir.0, None);
    let agent = Client::new(&ctl.url(), Some(ctl.agent_token())).unwrap();
    let doc: serde_json::Value = serde_json::from_str(microseg_controller::OPENAPI).unwrap();
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let uri = path.replace("{name}", "web");
            let r = agent
                .call(
                    &method.to_uppercase(),
                    &uri,
                    Some(("application/json", b"{}")),
                )
                .expect("request");
            assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
            assert!(says(&r.body, "agent link only"), "{}", r.body);
            assert!(
                op["responses"].get("403").is_some(),
                "{method} {path} does not document its 403"
            );
            seen += 1;
        }
    }
    assert!(seen > 20, "{seen} operations");
}

/// Every operation refuses a query parameter it does not know with a documented 400
/// naming it (docs/CONTROLLER.md); before, the GETs without parameters ignored one. A
/// name in the path that is not UTF-8 is a documented 400 too.
#[test]
fn every_operation_refuses_an_unknown_query_parameter_as_documented() {
    let dir = TempDir::new("rest-fuzz-query");
    let ctl = Ctl::start(&dir.0, None);
    let c = ctl.client();
    let doc: serde_json::Value = serde_json::from_str(microseg_controller::OPENAPI).unwrap();
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let uri = format!("{}?cachebust=1", path.replace("{name}", "web"));
            let r = c
                .call(
                    &method.to_uppercase(),
                    &uri,
                    Some(("application/json", b"{}")),
                )
                .expect("request");
            assert_eq!(r.status, 400, "{method} {uri}: {}", r.body);
            assert!(says(&r.body, "cachebust"), "{method} {uri}: {}", r.body);
            assert!(
                op["responses"].get("400").is_some(),
                "{method} {path} does not document its 400"
            );
            if path.contains("{name}") {
                let uri = path.replace("{name}", "%FF");
                let r = c
                    .call(
                        &method.to_uppercase(),
                        &uri,
                        Some(("application/json", b"{}")),
                    )
                    .expect("request");
                assert_eq!(r.status, 400, "{method} {uri}: {}", r.body);
                assert!(says(&r.body, "UTF-8"), "{method} {uri}: {}", r.body);
            }
            seen += 1;
        }
    }
    assert!(seen > 20, "{seen} operations");
}
