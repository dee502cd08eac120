//! `microseg policy promote` and the STATE column of `policy list` against a real
//! controller (`--recommend-quiet 2s`) holding flows uploaded over the agent link
//! (docs/RECOMMEND.md "Lifecycle"; no root needed).

mod ctl;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ctl::{json, revision, Controller};
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::{Flow, FlowBatch};
use microseg_testsupport::eventually;

const WORKLOADS: &str = "\
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: web-1, labels: {app: web}}
spec: {ips: [10.93.0.11]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: db-1, labels: {app: db}}
spec: {ips: [10.93.0.21]}
";

/// web-1 -> db-1 TCP 5432, reported now at both ends.
fn connection() -> Vec<Flow> {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    [("web-1", "egress"), ("db-1", "ingress")]
        .into_iter()
        .map(|(workload, direction)| Flow {
            time_us: at,
            start_us: at - 100_000,
            end_us: Some(at),
            workload: workload.into(),
            direction: direction.into(),
            src_ip: "10.93.0.11".into(),
            dst_ip: "10.93.0.21".into(),
            src_port: 40001,
            dst_port: 5432,
            protocol: 6,
            verdict: "allow".into(),
            packets: 4,
            bytes: 400,
            ..Default::default()
        })
        .collect()
}

/// Uploads the flows over the agent link with the agent token, as an agent does.
fn upload(c: &Controller, flows: Vec<Flow>) {
    let token = std::fs::read_to_string(c.dir.join("state/agent.token")).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = flows.len() as u64;
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
        let batch = FlowBatch {
            node: "node-a".into(),
            flows,
            ..Default::default()
        };
        let r = link
            .upload_flows(tokio_stream::iter(vec![batch]))
            .await
            .unwrap();
        assert_eq!(r.into_inner().accepted, n);
    });
    eventually(Duration::from_secs(10), || {
        let (_, out, _) = c.cli(&["flows", "-o", "json"]);
        (out.lines().count() as u64 >= n).then_some(()).ok_or(out)
    })
    .unwrap_or_else(|e| panic!("the records were not stored: {e}\n{}", c.log()));
}

/// The table's STATE cell of policy `name`.
fn state_cell(c: &Controller, name: &str) -> String {
    let (code, out, err) = c.cli(&["policy", "list"]);
    assert_eq!(code, 0, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    let col = header
        .iter()
        .position(|h| *h == "STATE")
        .expect("a STATE column");
    let row = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not listed:\n{out}"));
    row.split_whitespace().nth(col).unwrap().to_string()
}

#[test]
fn promote_an_audit_recommendation_and_see_its_state() {
    let c = Controller::start_with("promote", |_| vec!["--recommend-quiet".into(), "2s".into()]);
    let f = c.file("workloads.yaml", WORKLOADS);
    let (code, out, err) = c.cli(&["policy", "apply", "-f", &f]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = c.cli(&[
        "policy",
        "apply",
        "-f",
        &c.file("plain.yaml", &ctl::policy("plain", 80)),
    ]);
    assert_eq!(code, 0, "{out}{err}");

    // Recommend from the flows, apply in audit.
    upload(&c, connection());
    let (code, yaml, err) = c.cli(&["recommend", "--since", "1h"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = c.cli(&["policy", "apply", "-f", &c.file("rec.yaml", &yaml)]);
    assert_eq!(code, 0, "{out}{err}");

    // STATE: a recommendation's lifecycle, `-` for any other policy; state in JSON.
    let state = state_cell(&c, "recommended.db");
    assert!(state == "learning" || state == "stabilizing", "{state}");
    assert_eq!(state_cell(&c, "plain"), "-");
    let deadline = Instant::now() + Duration::from_secs(10);
    while state_cell(&c, "recommended.db") != "stable" {
        assert!(Instant::now() < deadline, "never stable");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out, _) = c.cli(&["policy", "list", "-o", "json"]);
    assert_eq!(code, 0);
    let v = json(&out);
    let state_of = |name: &str| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == name)
            .map(|i| i["state"].clone())
            .unwrap()
    };
    assert_eq!(state_of("recommended.db"), "stable", "{v}");
    assert!(state_of("plain").is_null(), "{v}");

    // A dry run changes nothing; the promotion makes it enforce in one new revision.
    let rev = revision(&c);
    let (code, out, err) = c.cli(&["policy", "promote", "recommended.db", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("policy/recommended.db would be promoted to enforce (dry run)"),
        "{out}"
    );
    assert_eq!(revision(&c), rev);
    let (code, out, err) = c.cli(&["policy", "promote", "recommended.db"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!(
            "policy/recommended.db promoted to enforce\nrevision {}\n",
            rev + 1
        )
    );
    let (_, out, _) = c.cli(&["policy", "get", "recommended.db", "-o", "json"]);
    assert_eq!(json(&out)["spec"]["mode"], "enforce", "{out}");
    let (_, out, _) = c.cli(&["policy", "get", "recommended.db"]);
    assert!(
        out.contains(" enforce ") && out.contains(" stable "),
        "{out}"
    );

    // Already enforcing, or unknown: exit 2 with the controller's reason.
    let (code, _, err) = c.cli(&["policy", "promote", "recommended.db"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is in mode enforce, not audit"), "{err}");
    let (code, _, err) = c.cli(&["policy", "promote", "nothing"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not found"), "{err}");
    let (code, _, err) = c.cli(&["policy", "promote", "plain"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(revision(&c), rev + 1);
}
