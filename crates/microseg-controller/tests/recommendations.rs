//! The recommendation lifecycle through the controller (docs/RECOMMEND.md "Lifecycle"):
//! flows uploaded over the agent link, `GET /v1/recommendations` proposing policies with
//! their preview and diff, applied in audit, each applied recommendation learning while
//! new edges appear and stable after the quiet period (`--recommend-quiet 2s`), then
//! `POST /v1/policies/{name}/promote` making it enforcing in a new revision; 404, 409
//! and bad parameters.

mod common;

use common::*;
use microseg_controller::Options;
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::{Flow, FlowBatch};
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

const WEB: &str = "10.7.0.1";
const DB: &str = "10.7.0.2";
const QUIET: Duration = Duration::from_secs(2);

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// web -> db on `port`, reported now at both ends, allowed (or audited).
fn connection(sport: u32, port: u32, verdict: &str) -> Vec<Flow> {
    let at = now_us();
    ["egress", "ingress"]
        .into_iter()
        .map(|direction| Flow {
            time_us: at,
            start_us: at - 100_000,
            end_us: Some(at),
            workload: if direction == "egress" { "web" } else { "db" }.into(),
            direction: direction.into(),
            src_ip: WEB.into(),
            dst_ip: DB.into(),
            src_port: sport,
            dst_port: port,
            protocol: 6,
            verdict: verdict.into(),
            packets: 4,
            bytes: 400,
            ..Flow::default()
        })
        .collect()
}

/// Uploads `flows` with the agent token, as an agent does, and waits until stored.
fn upload(ctl: &Ctl, flows: Vec<Flow>) {
    let (url, token) = (ctl.url(), ctl.agent_token());
    let before = get(&ctl.client(), "/v1/flows/status").body["stored"]
        .as_u64()
        .unwrap();
    let n = flows.len() as u64;
    let accepted = ctl.rt.block_on(async {
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
            .expect("upload")
            .into_inner()
            .accepted
    });
    assert_eq!(accepted, n);
    stored(&ctl.client(), before + n);
}

fn recommendations(ctl: &Ctl, query: &str) -> Value {
    let r = get(&ctl.client(), &format!("/v1/recommendations{query}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn applied_state(ctl: &Ctl, name: &str) -> Value {
    let v = recommendations(ctl, "?since=1h");
    v["applied"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not among the applied recommendations: {v}"))
}

/// Polls the applied recommendation's state until it is `want` (bounded by `limit`).
fn wait_state(ctl: &Ctl, name: &str, want: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let a = applied_state(ctl, name);
        if a["state"] == want {
            return a;
        }
        assert!(Instant::now() < deadline, "{name} never {want}: {a}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(test: &str) -> (TempDir, Ctl) {
    let dir = TempDir::new(test);
    let mut opts = Options::new(&dir.0);
    opts.listen = "127.0.0.1:0".into();
    opts.recommend_quiet = QUIET;
    let ctl = Ctl::start_with(opts);
    let c = ctl.client();
    for (name, ip) in [("web", WEB), ("db", DB)] {
        let r = call(&c, "POST", "/v1/apply", &workload(name, ip));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    (dir, ctl)
}

#[test]
fn recommend_apply_in_audit_learn_stabilize_and_promote() {
    let (_dir, ctl) = start("rec-lifecycle");
    let c = ctl.client();

    // Nothing observed yet: nothing proposed, and why.
    let v = recommendations(&ctl, "");
    assert_eq!(v["proposed"], Value::Array(vec![]), "{v}");
    assert!(
        v["notes"][0]
            .as_str()
            .unwrap()
            .contains("the window holds no flows"),
        "{v}"
    );
    assert_eq!(
        (v["since"].as_str(), v["quiet_seconds"].as_f64()),
        (Some("24h"), Some(2.0))
    );

    upload(&ctl, connection(40001, 5432, "allow"));
    let v = recommendations(&ctl, "?since=1h&group_by=app");
    let names: Vec<&str> = v["proposed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["recommended.db", "recommended.web"], "{v}");
    let db = &v["proposed"][0];
    assert_eq!(db["policy"]["spec"]["mode"], "audit", "{db}");
    assert_eq!(db["diff"]["status"], "new", "{db}");
    assert_eq!(db["diff"]["added"][0]["direction"], "ingress", "{db}");
    assert_eq!(db["preview"]["would_deny_connections"], 0, "{db}");
    // One connection, a leg at each end (docs/FLOWS.md).
    assert_eq!(db["preview"]["allowed_connections"], 2, "{db}");
    assert!(db["yaml"].as_str().unwrap().contains("mode: audit"), "{db}");
    assert_eq!(
        v["applied"],
        Value::Array(vec![]),
        "nothing applied yet: {v}"
    );

    // Applied in audit, as proposed: both recommendations, learning, nothing to change.
    let yaml: Vec<&str> = v["proposed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["yaml"].as_str().unwrap())
        .collect();
    let r = call(&c, "POST", "/v1/apply", &yaml.join("---\n"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = recommendations(&ctl, "?since=1h");
    assert_eq!(v["proposed"][0]["diff"]["status"], "unchanged", "{v}");
    assert_eq!(v["proposed"][0]["diff"]["applied_mode"], "audit", "{v}");
    let a = &v["applied"];
    assert_eq!(a.as_array().unwrap().len(), 2, "{v}");
    assert_eq!(a[0]["name"], "recommended.db");
    assert_eq!(a[0]["mode"], "audit");
    assert_eq!(a[0]["proposed"], true);

    // A new path: learning; the diff shows what the proposal now adds.
    upload(&ctl, connection(40002, 6379, "audit"));
    let a = wait_state(&ctl, "recommended.db", "learning", Duration::from_secs(1));
    assert!(a["last_new_edge"].is_string(), "{a}");
    let v = recommendations(&ctl, "?since=1h");
    let diff = &v["proposed"][0]["diff"];
    assert_eq!(diff["status"], "changed", "{v}");
    assert!(diff["added"].to_string().contains("6379"), "{diff}");
    // Then quiet: stabilizing after half the quiet period, stable after all of it.
    wait_state(&ctl, "recommended.db", "stabilizing", QUIET * 2);
    wait_state(&ctl, "recommended.db", "stable", QUIET * 2);

    // Promote: a dry run changes nothing; then mode enforce in a new revision.
    let rev = revision(&c);
    let path = "/v1/policies/recommended.db/promote";
    let r = c
        .call("POST", &format!("{path}?dryRun=true"), None)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["dryRun"].as_bool(), r.body["revision"].as_u64()),
        (Some(true), Some(rev))
    );
    assert_eq!(
        get(&c, "/v1/policies/recommended.db").body["spec"]["mode"],
        "audit"
    );
    let r = c.call("POST", path, None).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["revision"].as_u64(), Some(rev + 1), "{}", r.body);
    assert_eq!(r.body["applied"][0]["action"], "configured", "{}", r.body);
    let p = get(&c, "/v1/policies/recommended.db").body;
    assert_eq!(p["spec"]["mode"], "enforce", "{p}");
    assert_eq!(annotation_revision(&p), rev + 1);
    // The rest of the policy is as it was.
    let web = get(&c, "/v1/policies/recommended.web").body;
    assert_eq!(web["spec"]["mode"], "audit", "{web}");
    assert_eq!(
        p["spec"]["ingress"][0]["from"][0]["selector"]["matchLabels"]["app"],
        "web"
    );
    assert_eq!(applied_state(&ctl, "recommended.db")["mode"], "enforce");

    // Already enforcing: 409, nothing changed; unknown: 404; no token: 401.
    let r = c.call("POST", path, None).unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.error_text().contains("not audit"), "{}", r.body);
    assert_eq!(revision(&c), rev + 1);
    let r = c
        .call("POST", "/v1/policies/nothing/promote", None)
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    let r = ctl
        .anonymous()
        .call("POST", "/v1/policies/recommended.web/promote", None);
    assert_eq!(r.unwrap().status, 401);
    assert_eq!(
        get(&c, "/v1/policies/recommended.web").body["spec"]["mode"],
        "audit"
    );
}

#[test]
fn bad_parameters_are_refused_naming_them() {
    let (_dir, ctl) = start("rec-bad");
    upload(&ctl, connection(40001, 5432, "allow"));
    let c = ctl.client();
    for (query, reason) in [
        (
            "?group_by=tier",
            "--group-by tier: no workload has this label",
        ),
        ("?since=yesterday", "since"),
        ("?window=1h", "window"),
    ] {
        let r = get(&c, &format!("/v1/recommendations{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert!(r.error_text().contains(reason), "{query}: {}", r.body);
    }
    // A promote takes no other parameter either.
    let r = c
        .call("POST", "/v1/policies/x/promote?force=1", None)
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
}
