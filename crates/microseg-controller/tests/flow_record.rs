//! The flow record through the controller: flows uploaded over the agent link (the
//! generated gRPC client) from two nodes, stored with both ends' names and labels, served
//! by `GET /v1/flows` (each filter, the cursor), `/v1/flows/edges` and `/flows/status`,
//! across a restart; a PostgreSQL flow store that is down; ClickHouse end to end.

mod common;

use common::*;
use microseg_controller::Options;
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::{Flow, FlowBatch};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// As the store writes it (exact to the microsecond, unlike a float of seconds).
fn rfc3339(us: i64) -> String {
    microseg_flowstore::Timestamp(us).to_string()
}

/// Uploads one batch per (node, flows, dropped_total) up one stream with the
/// controller's token; returns how many records the controller queued.
fn upload(ctl: &Ctl, batches: Vec<(&str, Vec<Flow>, u64)>) -> u64 {
    let (url, token) = (ctl.url(), ctl.token());
    let batches: Vec<FlowBatch> = batches
        .into_iter()
        .map(|(node, flows, dropped_total)| FlowBatch {
            node: node.into(),
            flows,
            dropped_total,
            ..FlowBatch::default()
        })
        .collect();
    ctl.rt.block_on(async {
        let ch = Channel::from_shared(url).unwrap().connect().await.unwrap();
        let mut link = AgentLinkClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
            let t = format!("Bearer {token}").parse().unwrap();
            r.metadata_mut().insert("authorization", t);
            Ok(r)
        });
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            link.upload_flows(tokio_stream::iter(batches)),
        )
        .await
        .expect("answered within 10 s")
        .expect("upload");
        r.into_inner().accepted
    })
}

#[allow(clippy::too_many_arguments)]
fn flow(
    at_us: i64,
    workload: &str,
    direction: &str,
    (src, sport): (&str, u32),
    (dst, dport): (&str, u32),
    protocol: u32,
    verdict: &str,
    policy: &str,
) -> Flow {
    Flow {
        time_us: at_us,
        start_us: at_us - 1_000_000,
        end_us: None,
        workload: workload.into(),
        direction: direction.into(),
        src_ip: src.into(),
        dst_ip: dst.into(),
        src_port: sport,
        dst_port: dport,
        protocol,
        verdict: verdict.into(),
        policy: Some(policy.into()),
        rule: Some(0),
        audit_verdict: None,
        audit_policy: None,
        packets: 3,
        bytes: 180,
    }
}

const WEB: &str = "10.1.0.1";
const DB: &str = "10.1.0.2";
const OUTSIDE: &str = "192.0.2.9";

/// Four flows from two nodes, 10 s apart, the oldest 50 s ago: web to db seen at each
/// end, web to an outside address denied, db to web logged.
fn four_flows(base: i64) -> Vec<(&'static str, Vec<Flow>, u64)> {
    let s = |n: i64| base - n * 1_000_000;
    vec![
        (
            "node-a",
            vec![
                flow(
                    s(50),
                    "web",
                    "egress",
                    (WEB, 40001),
                    (DB, 5432),
                    6,
                    "allow",
                    "db-access",
                ),
                flow(
                    s(30),
                    "web",
                    "egress",
                    (WEB, 40002),
                    (OUTSIDE, 53),
                    17,
                    "deny",
                    "default-deny",
                ),
            ],
            0,
        ),
        (
            "node-b",
            vec![
                flow(
                    s(40),
                    "db",
                    "ingress",
                    (WEB, 40001),
                    (DB, 5432),
                    6,
                    "allow",
                    "db-access",
                ),
                flow(
                    s(20),
                    "db",
                    "egress",
                    (DB, 40003),
                    (WEB, 8080),
                    6,
                    "log",
                    "audit-web",
                ),
            ],
            7,
        ),
    ]
}

fn items(c: &microseg_controller::client::Client, query: &str) -> Vec<Value> {
    let r = get(c, &format!("/v1/flows{query}"));
    assert_eq!(r.status, 200, "{query}: {:?}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

/// The flows' destination ports, oldest first: which flows a query returned.
fn ports(c: &microseg_controller::client::Client, query: &str) -> Vec<u64> {
    items(c, query)
        .iter()
        .map(|f| f["dst_port"].as_u64().unwrap())
        .collect()
}

#[test]
fn uploaded_flows_are_stored_named_filtered_and_kept_across_a_restart() {
    let dir = TempDir::new("flow-record");
    let mut ctl = Ctl::start(&dir.0, None);
    let c = ctl.client();
    let apply = format!("{}---\n{}", workload("web", WEB), workload("db", DB));
    assert_eq!(call(&c, "POST", "/v1/apply", &apply).status, 200);
    let base = now_us();
    assert_eq!(upload(&ctl, four_flows(base)), 4);
    let status = stored(&c, 4);
    assert_eq!(status["agent_dropped"], json!({"node-a": 0, "node-b": 7}));
    assert_eq!(
        (status["backend"].as_str(), status["ok"].as_bool()),
        (Some("sqlite"), Some(true))
    );

    // Oldest first, each with its node and both ends named from the workloads.
    let all = items(&c, "");
    assert_eq!(all.len(), 4);
    let first = &all[0];
    assert_eq!(first["node"], "node-a");
    assert_eq!(
        (
            first["src_workload"].as_str(),
            first["dst_workload"].as_str()
        ),
        (Some("web"), Some("db"))
    );
    assert_eq!(first["src_labels"], json!({"app": "web"}));
    assert_eq!(first["dst_labels"], json!({"app": "db"}));
    assert_eq!(first["protocol"], "TCP");
    assert_eq!(first["time"], rfc3339(base - 50_000_000));
    let outside = &all[2];
    assert_eq!(outside["dst_ip"], OUTSIDE);
    assert_eq!(
        (&outside["dst_workload"], &outside["dst_labels"]),
        (&Value::Null, &json!({}))
    );
    assert_eq!(outside["src_workload"], "web");

    // Each filter narrows (ports: 5432 from each end, 53 denied, 8080 logged).
    let mid = rfc3339(base - 35_000_000);
    for (query, want) in [
        (format!("?since={mid}"), vec![53, 8080]),
        (format!("?until={mid}"), vec![5432, 5432]),
        // An age: 45 s before `base`, however long the test took to get here.
        (
            format!("?since={}s", 46 + (now_us() - base) / 1_000_000),
            vec![5432, 53, 8080],
        ),
        ("?verdict=deny".into(), vec![53]),
        ("?direction=ingress".into(), vec![5432]),
        ("?workload=db".into(), vec![5432, 5432, 8080]),
        ("?from=app=db".into(), vec![8080]),
        ("?to=app=db".into(), vec![5432, 5432]),
        ("?to=!app".into(), vec![53]),
        ("?port=53".into(), vec![53]),
        ("?protocol=udp".into(), vec![53]),
        ("?policy=audit-web".into(), vec![8080]),
        ("?node=node-b".into(), vec![5432, 8080]),
        ("?limit=1".into(), vec![8080]),
        ("?node=node-a&verdict=allow".into(), vec![5432]),
    ] {
        assert_eq!(ports(&c, &query), want, "{query}");
    }

    // Following: what was stored after a page's cursor, and nothing before it.
    let cursor = get(&c, "/v1/flows").body["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ports(&c, &format!("?after={cursor}")).is_empty());
    let late = flow(
        base - 60_000_000,
        "web",
        "egress",
        (WEB, 40009),
        (DB, 6379),
        6,
        "allow",
        "db-access",
    );
    assert_eq!(upload(&ctl, vec![("node-a", vec![late], 0)]), 1);
    stored(&c, 5);
    assert_eq!(
        ports(&c, &format!("?after={cursor}")),
        vec![6379],
        "stored late, still followed"
    );
    assert_eq!(
        ports(&c, &format!("?after={cursor}&port=5432")),
        Vec::<u64>::new()
    );

    // Edges: web to db over 5432 counts both legs once each.
    let r = get(&c, "/v1/flows/edges?since=2m");
    assert_eq!(r.status, 200, "{:?}", r.body);
    let edges = r.body["items"].as_array().unwrap();
    assert_eq!(edges.len(), 4, "{edges:?}");
    let web_db = edges
        .iter()
        .find(|e| e["dst_port"] == 5432)
        .unwrap_or_else(|| panic!("{edges:?}"));
    assert_eq!(
        web_db["src"],
        json!({"workload": "web", "labels": {"app": "web"}})
    );
    assert_eq!(web_db["dst"]["workload"], "db");
    assert_eq!(
        (web_db["connections"].as_u64(), web_db["packets"].as_u64()),
        (Some(2), Some(6))
    );
    let out = edges.iter().find(|e| e["dst_port"] == 53).unwrap();
    assert_eq!(out["dst"], json!({"ip": OUTSIDE}));
    assert_eq!(
        get(&c, &format!("/v1/flows/edges?since={mid}")).body["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A bad parameter: 400 naming it.
    for (query, field) in [
        ("?port=99999", "port"),
        ("?limit=0", "limit"),
        ("?colour=red", "colour"),
        ("?after=x", "after"),
    ] {
        let r = get(&c, &format!("/v1/flows{query}"));
        assert_eq!(r.status, 400, "{query}");
        assert!(
            r.error_text().starts_with(field) || r.error_text().contains(&format!("`{field}`")),
            "{query}: {}",
            r.error_text()
        );
    }
    assert_eq!(get(&c, "/v1/flows/edges?until=yesterday").status, 400);
    // The token, as for every call.
    assert_eq!(ctl.anonymous().get("/v1/flows").unwrap().status, 401);
    assert_eq!(ctl.anonymous().get("/v1/flows/status").unwrap().status, 401);

    // Restarted on the same state dir: the record is still there.
    ctl.restart();
    let c = ctl.client();
    assert_eq!(ports(&c, ""), vec![6379, 5432, 5432, 53, 8080]);
}

#[test]
fn a_flow_store_that_is_down_does_not_stop_the_controller() {
    let pg = Postgres::start();
    let url = pg.database("flows");
    drop(pg); // Stopped: nothing listens at the URL any more.
    let dir = TempDir::new("flow-down");
    let mut opts = Options::new(&dir.0);
    opts.listen = "127.0.0.1:0".into();
    opts.flow_db = Some(url);
    opts.flow_queue = 3;
    let ctl = Ctl::start_with(opts);
    let c = ctl.client();
    assert_eq!(
        call(&c, "POST", "/v1/apply", &policy("p1", 5432)).status,
        200
    );
    assert_eq!(get(&c, "/v1/nodes").status, 200);
    let flows: Vec<Flow> = (0..5)
        .map(|i| {
            flow(
                now_us(),
                "web",
                "egress",
                (WEB, 40000 + i),
                (DB, 5432),
                6,
                "allow",
                "p1",
            )
        })
        .collect();
    assert_eq!(
        upload(&ctl, vec![("node-a", flows, 11)]),
        3,
        "three queued, two over the bound"
    );
    for path in ["/v1/flows", "/v1/flows/edges"] {
        let r = get(&c, path);
        assert_eq!(r.status, 503, "{path}: {:?}", r.body);
        assert!(
            r.error_text().contains("postgres"),
            "{path}: {}",
            r.error_text()
        );
    }
    let s = get(&c, "/v1/flows/status").body;
    assert_eq!(
        (
            s["received"].as_u64(),
            s["queued"].as_u64(),
            s["dropped"].as_u64(),
            s["stored"].as_u64()
        ),
        (Some(5), Some(3), Some(2), Some(0)),
        "{s}"
    );
    assert_eq!(
        (s["backend"].as_str(), s["ok"].as_bool()),
        (Some("postgres"), Some(false)),
        "{s}"
    );
    assert!(s["error"].as_str().is_some_and(|e| !e.is_empty()), "{s}");
    assert_eq!(s["agent_dropped"], json!({"node-a": 11}));
    // Still answered while the store is down.
    let more = vec![flow(
        now_us(),
        "web",
        "egress",
        (WEB, 1),
        (DB, 5432),
        6,
        "allow",
        "p1",
    )];
    assert_eq!(upload(&ctl, vec![("node-a", more, 12)]), 0);
    assert_eq!(get(&c, "/v1/flows/status").body["dropped"], 3);
}

#[test]
fn a_full_queue_holds_the_upload_until_the_store_takes_it_instead_of_dropping() {
    let dir = TempDir::new("flow-backpressure");
    let mut opts = Options::new(&dir.0);
    opts.listen = "127.0.0.1:0".into();
    opts.flow_queue = 50;
    let ctl = Ctl::start_with(opts);
    let c = ctl.client();
    microseg_testsupport::eventually(Duration::from_secs(10), || {
        get(&c, "/v1/flows/status").body["ok"] == true
    })
    .expect("the store open");
    // 2,000 records in four batches, forty times the queue: each waits for room.
    let batch = |from: u32| -> Vec<Flow> {
        (from..from + 500)
            .map(|i| {
                flow(
                    now_us(),
                    "web",
                    "egress",
                    (WEB, 10_000 + i),
                    (DB, 5432),
                    6,
                    "allow",
                    "p1",
                )
            })
            .collect()
    };
    let batches = (0..4).map(|b| ("node-a", batch(b * 500), 0)).collect();
    assert_eq!(
        upload(&ctl, batches),
        2_000,
        "every record queued in the end"
    );
    let s = get(&c, "/v1/flows/status").body;
    assert_eq!(s["dropped"], 0, "{s}");
    assert_eq!(items(&c, "?limit=5000").len(), 2_000);
}

#[test]
fn a_malformed_flow_store_or_retention_is_refused_at_start() {
    let dir = TempDir::new("flow-bad");
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (db, retention, says) in [
        (Some("clickhouse://no-port/flows"), 1, "--flow-db"),
        (Some("mysql://db/flows"), 1, "--flow-db"),
        (None, 0, "--flow-retention"),
    ] {
        let mut opts = Options::new(&dir.0);
        opts.listen = "127.0.0.1:0".into();
        opts.flow_db = db.map(str::to_string);
        opts.flow_retention = Duration::from_secs(retention);
        let Err(e) = rt.block_on(microseg_controller::start(&opts)) else {
            panic!("{db:?} started")
        };
        assert!(
            matches!(e, microseg_controller::ControllerError::BadInput(_)),
            "{e:?}"
        );
        assert!(e.to_string().starts_with(says), "{e}");
    }
}

#[test]
fn flows_are_stored_in_clickhouse_end_to_end() {
    let ch = microseg_testsupport::ClickHouse::start();
    let dir = TempDir::new("flow-ch");
    let mut opts = Options::new(&dir.0);
    opts.listen = "127.0.0.1:0".into();
    opts.flow_db = Some(ch.url("flows"));
    let ctl = Ctl::start_with(opts);
    let c = ctl.client();
    let apply = format!("{}---\n{}", workload("web", WEB), workload("db", DB));
    assert_eq!(call(&c, "POST", "/v1/apply", &apply).status, 200);
    assert_eq!(upload(&ctl, four_flows(now_us())), 4);
    assert_eq!(stored(&c, 4)["backend"], "clickhouse");
    let all = items(&c, "");
    assert_eq!(all.len(), 4);
    assert_eq!(
        (
            all[0]["src_workload"].as_str(),
            all[0]["dst_labels"].clone()
        ),
        (Some("web"), json!({"app": "db"}))
    );
    assert_eq!(ports(&c, "?verdict=deny"), vec![53]);
    assert_eq!(ports(&c, "?node=node-b&to=app=web"), vec![8080]);
    let edges = get(&c, "/v1/flows/edges").body;
    assert_eq!(edges["items"].as_array().unwrap().len(), 3, "{edges}");
}
