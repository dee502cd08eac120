//! The REST API fuzzed from the OpenAPI document it serves: scripts/schemathesis.sh runs
//! schemathesis (installed on demand) against a controller of this test's own, holding a
//! few resources and flows so that the operations on one resource reach it. Every
//! request must be answered without a server error, with a status, content type, headers
//! and body the document gives; scripts/schemathesis.toml lists the checks.

mod common;

use common::*;
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::{Flow, FlowBatch};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

/// The whole run's bound: schemathesis takes about a minute on two cores.
const RUN_LIMIT: Duration = Duration::from_secs(240);

fn audit_policy(name: &str) -> String {
    format!(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  mode: audit\n  egress:\n    - action: allow\n      to: [{{selector: {{matchLabels: {{app: db}}}}}}]\n      ports: [{{protocol: TCP, port: 5432}}]\n"
    )
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
    let (url, token, n) = (ctl.url(), ctl.agent_token(), flows.len() as u64);
    ctl.rt.block_on(async {
        let ch = Channel::from_shared(url).unwrap().connect().await.unwrap();
        let mut link = AgentLinkClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
            let t = format!("Bearer {token}").parse().unwrap();
            r.metadata_mut().insert("authorization", t);
            Ok(r)
        });
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
        .env("ST_REPORT_DIR", dir.join("report"))
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
    seed_flows(&ctl);

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
