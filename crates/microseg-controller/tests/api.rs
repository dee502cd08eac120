//! The REST API against real storage: SQLite and a PostgreSQL server started by the test.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// CRUD, revisions, the token, validation; then a restart on the same storage.
fn crud_and_restart(state: &std::path::Path, db: Option<&str>) {
    let mut ctl = Ctl::start(state, db);
    let c = ctl.client();
    let anon = ctl.anonymous();
    assert_eq!(revision(&c), 0);

    // No token, or a wrong one: 401 and nothing changes.
    assert_eq!(get(&anon, "/v1/policies").status, 401);
    assert_eq!(
        call(&anon, "POST", "/v1/policies", &policy("p1", 5432)).status,
        401
    );
    let wrong = microseg_controller::client::Client::new(&ctl.url(), Some("nope".into())).unwrap();
    assert_eq!(
        call(&wrong, "POST", "/v1/apply", &policy("p1", 5432)).status,
        401
    );
    assert_eq!(revision(&c), 0);
    assert!(names(&get(&c, "/v1/policies")).is_empty());

    // Create, re-apply unchanged, replace.
    let r = call(&c, "POST", "/v1/policies", &policy("p1", 5432));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["revision"], 1);
    assert_eq!(r.body["applied"][0]["action"], "created");
    let r = call(&c, "POST", "/v1/policies", &policy("p1", 5432));
    assert_eq!(
        (
            r.body["revision"].as_u64(),
            r.body["applied"][0]["action"].as_str()
        ),
        (Some(1), Some("unchanged"))
    );
    let r = call(&c, "PUT", "/v1/policies/p1", &policy("p1", 6432));
    assert_eq!(
        (r.status, r.body["revision"].as_u64()),
        (200, Some(2)),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["applied"][0]["action"], "configured");
    let p = get(&c, "/v1/policies/p1");
    assert_eq!(p.status, 200);
    assert_eq!(p.body["spec"]["ingress"][0]["ports"][0]["port"], 6432);
    assert_eq!(p.body["spec"]["priority"], 1000, "defaults are filled in");
    assert_eq!(annotation_revision(&p.body), 2);
    // JSON works as well as YAML; a list applies atomically.
    let list = format!(
        "[{}, {}]",
        serde_json::json!({"apiVersion": "microseg.io/v1", "kind": "Workload",
            "metadata": {"name": "db-1", "labels": {"app": "db"}},
            "spec": {"interface": "veth-db1", "ips": ["10.9.0.3", "fd09::3"]}}),
        serde_json::json!({"apiVersion": "microseg.io/v1", "kind": "Policy",
            "metadata": {"name": "p2"}, "spec": {"selector": {}, "egress": []}})
    );
    let r = call(&c, "POST", "/v1/apply", &list);
    assert_eq!(
        (r.status, r.body["revision"].as_u64()),
        (200, Some(3)),
        "{:?}",
        r.body
    );
    assert_eq!(names(&get(&c, "/v1/policies")), ["p1", "p2"]);
    assert_eq!(names(&get(&c, "/v1/workloads")), ["db-1"]);

    // Bad input: 400 with the validator's FILE:LINE:COL messages; nothing stored.
    let bad = "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: bad}\nspec:\n  selector: {}\n  ingress:\n    - action: allow\n      from: [{cidr: 10.0.0.0/33}]\n      ports: [{protocol: TCP, port: 80, endPort: 70}]\n";
    let r = call(
        &c,
        "POST",
        "/v1/policies?file=bad.yaml",
        &format!("{}---\n{bad}", policy("p3", 1)),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    let text = r.error_text();
    assert!(
        text.contains("bad.yaml:18:21") && text.contains("10.0.0.0/33"),
        "{text}"
    );
    assert!(
        text.contains("bad.yaml:19:50") && text.contains("endPort"),
        "{text}"
    );
    // A conflict with what is stored (an address already used) is bad input too.
    let r = call(
        &c,
        "POST",
        "/v1/workloads?file=w.yaml",
        &workload("db-2", "10.9.0.3"),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.error_text().contains("w.yaml:1:1") && r.error_text().contains("db-1"),
        "{}",
        r.error_text()
    );
    // The wrong kind for the endpoint, a name not matching the URL, the reserved name.
    assert_eq!(
        call(&c, "POST", "/v1/policies", &workload("x", "10.9.9.9")).status,
        400
    );
    assert_eq!(
        call(&c, "PUT", "/v1/policies/other", &policy("p1", 1)).status,
        400
    );
    assert_eq!(
        call(&c, "POST", "/v1/policies", &policy("default-deny", 1)).status,
        400
    );
    assert_eq!(call(&c, "POST", "/v1/policies", "").status, 400);
    assert_eq!(revision(&c), 3);
    assert_eq!(names(&get(&c, "/v1/policies")), ["p1", "p2"]);
    assert_eq!(get(&c, "/v1/policies/p3").status, 404);

    // Labels: merge, empty value allowed, null removes; every change a revision.
    let r = call(
        &c,
        "PUT",
        "/v1/workloads/db-1/labels",
        r#"{"labels": {"env": "prod", "tier": ""}}"#,
    );
    assert_eq!(
        (r.status, r.body["revision"].as_u64()),
        (200, Some(4)),
        "{:?}",
        r.body
    );
    let r = call(
        &c,
        "PUT",
        "/v1/workloads/db-1/labels",
        r#"{"labels": {"tier": null}}"#,
    );
    assert_eq!(r.body["revision"], 5);
    let w = get(&c, "/v1/workloads/db-1").body;
    assert_eq!(
        w["metadata"]["labels"],
        serde_json::json!({"app": "db", "env": "prod"})
    );
    assert_eq!(
        call(
            &c,
            "PUT",
            "/v1/workloads/db-1/labels",
            r#"{"labels": {"bad key": "x"}}"#
        )
        .status,
        400
    );
    assert_eq!(
        call(
            &c,
            "PUT",
            "/v1/workloads/nope/labels",
            r#"{"labels": {"a": "b"}}"#
        )
        .status,
        404
    );

    // Delete.
    let r = c.call("DELETE", "/v1/policies/p2", None).unwrap();
    assert_eq!((r.status, r.body["revision"].as_u64()), (200, Some(6)));
    assert_eq!(
        c.call("DELETE", "/v1/policies/p2", None).unwrap().status,
        404
    );
    assert_eq!(get(&c, "/v1/policies/p2").status, 404);

    // A restart on the same storage loses nothing, and keeps the token.
    let before_p = get(&c, "/v1/policies").body;
    let before_w = get(&c, "/v1/workloads").body;
    let token = ctl.token();
    ctl.restart();
    let c = ctl.client();
    assert_eq!(ctl.token(), token);
    assert_eq!(get(&c, "/v1/policies").body, before_p);
    assert_eq!(get(&c, "/v1/workloads").body, before_w);
    assert_eq!(revision(&c), 6);
    let r = call(&c, "POST", "/v1/policies", &policy("p2", 1));
    assert_eq!(
        r.body["revision"], 7,
        "the revision goes on after a restart"
    );
}

#[test]
fn sqlite_crud_revisions_token_validation_and_restart() {
    let state = TempDir::new("sqlite");
    crud_and_restart(&state.0, None);
    assert!(state.0.join("controller.db").exists());
    let token = state.0.join(microseg_controller::TOKEN_FILE);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn postgres_crud_revisions_token_validation_and_restart() {
    let pg = Postgres::start();
    let url = pg.database("crud");
    let state = TempDir::new("pgcrud");
    crud_and_restart(&state.0, Some(&url));
    assert!(!state.0.join("controller.db").exists(), "nothing in SQLite");
}

#[test]
fn openapi_document_is_served_and_lists_every_endpoint() {
    let state = TempDir::new("openapi");
    let ctl = Ctl::start(&state.0, None);
    let r = get(&ctl.client(), "/v1/openapi.json");
    assert_eq!(r.status, 200);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = r.body["paths"].as_object().unwrap();
    for (p, methods) in [
        ("/v1/apply", &["post"][..]),
        ("/v1/apply/files", &["post"]),
        ("/v1/delete", &["post"]),
        ("/v1/policies", &["get", "post"]),
        ("/v1/policies/{name}", &["get", "put", "delete"]),
        ("/v1/policies/{name}/promote", &["post"]),
        ("/v1/recommendations", &["get"]),
        ("/v1/workloads", &["get", "post"]),
        ("/v1/workloads/{name}", &["get", "put", "delete"]),
        ("/v1/workloads/{name}/labels", &["put"]),
        ("/v1/nodes", &["get"]),
        ("/v1/flows", &["get"]),
        ("/v1/flows/edges", &["get"]),
        ("/v1/flows/status", &["get"]),
        ("/v1/openapi.json", &["get"]),
        ("/metrics", &["get"]),
    ] {
        for m in methods {
            assert!(paths[p].get(*m).is_some(), "{m} {p} documented");
        }
    }
    assert_eq!(
        paths.len(),
        16,
        "no undocumented extras: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    // Every body can be refused for its size and type; every change can be a dry run.
    for (p, item) in paths {
        for (m, op) in item.as_object().unwrap() {
            if op.get("requestBody").is_some() {
                for status in ["400", "401", "413", "415"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{m} {p}: {status} documented"
                    );
                }
                let dry_run = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x["$ref"] == "#/components/parameters/DryRun");
                assert!(dry_run || p.ends_with("/labels"), "{m} {p}: dryRun");
            }
        }
    }
    assert_eq!(get(&ctl.anonymous(), "/v1/openapi.json").status, 401);
    let unknown = get(&ctl.client(), "/v1/nothing");
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.get("error").is_some_and(Value::is_string));
}

#[test]
fn the_agent_token_opens_no_rest_endpoint() {
    let state = TempDir::new("agent-token");
    let ctl = Ctl::start(&state.0, None);
    let path = state.0.join(microseg_controller::AGENT_TOKEN_FILE);
    let agent_token = ctl.agent_token();
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), agent_token);
    assert_ne!(agent_token, ctl.token());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // A node holds the agent token: it may not read or change policy over REST.
    let agent = microseg_controller::client::Client::new(&ctl.url(), Some(agent_token)).unwrap();
    let r = call(&agent, "POST", "/v1/apply", &policy("p1", 5432));
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(r.error_text().contains("agent token"), "{}", r.error_text());
    assert_eq!(get(&agent, "/v1/policies").status, 403);
    assert_eq!(get(&ctl.client(), "/v1/policies").status, 200);
}

fn post_json(
    c: &microseg_controller::client::Client,
    path: &str,
    body: &Value,
) -> microseg_controller::client::Reply {
    c.call(
        "POST",
        path,
        Some(("application/json", body.to_string().as_bytes())),
    )
    .expect("request")
}

fn files(list: &[(&str, &str)]) -> Value {
    let files: Vec<Value> = list
        .iter()
        .map(|(name, content)| json!({"name": name, "content": content}))
        .collect();
    json!({ "files": files })
}

fn refs(list: &[(&str, &str)]) -> Value {
    let refs: Vec<Value> = list
        .iter()
        .map(|(kind, name)| json!({"kind": kind, "name": name}))
        .collect();
    json!({ "resources": refs })
}

const DENY_ALL: &str =
    "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: deny-all}\nspec: {selector: {}, ingress: []}\n";

/// Several files are one apply: one transaction, one revision, or nothing stored; dry
/// runs check as much and store nothing; a bulk delete is all or nothing too.
fn transactions(state: &std::path::Path, db: Option<&str>) {
    let ctl = Ctl::start(state, db);
    let c = ctl.client();
    assert_eq!(
        call(&c, "POST", "/v1/apply", &workload("db-1", "10.9.0.3")).status,
        200
    );
    let rev = revision(&c);

    // a.yaml is fine on its own; b.yaml takes db-1's address: neither is stored.
    let taken = files(&[
        ("a.yaml", DENY_ALL),
        ("b.yaml", &workload("db-2", "10.9.0.3")),
    ]);
    let r = post_json(&c, "/v1/apply/files", &taken);
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.error_text().contains("b.yaml:1:1") && r.error_text().contains("db-1"),
        "{}",
        r.error_text()
    );
    assert_eq!(revision(&c), rev);
    assert_eq!(get(&c, "/v1/policies/deny-all").status, 404);
    // Each file's errors under its own name.
    let r = post_json(
        &c,
        "/v1/apply/files",
        &files(&[
            ("x.yaml", "kind: Nope\n"),
            ("y.yaml", &policy("Bad_Name", 80)),
        ]),
    );
    assert_eq!(r.status, 400);
    let text = r.error_text();
    assert!(
        text.contains("\nx.yaml:1:") && text.contains("\ny.yaml:3:"),
        "{text}"
    );

    // A dry run checks against the stored set too, and stores nothing.
    let r = post_json(&c, "/v1/apply/files?dryRun=true", &taken);
    assert_eq!(r.status, 400);
    let good = files(&[
        ("a.yaml", DENY_ALL),
        ("b.yaml", &workload("db-2", "10.9.0.4")),
    ]);
    let r = post_json(&c, "/v1/apply/files?dryRun=true", &good);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (&r.body["revision"], &r.body["dryRun"]),
        (&json!(rev), &json!(true))
    );
    assert_eq!(r.body["applied"][1]["action"], "created");
    assert_eq!(revision(&c), rev);
    assert_eq!(get(&c, "/v1/policies/deny-all").status, 404);

    // The apply itself: both files, one revision.
    let r = post_json(&c, "/v1/apply/files", &good);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({"revision": rev + 1, "dryRun": false, "applied": [
            {"kind": "Policy", "name": "deny-all", "action": "created"},
            {"kind": "Workload", "name": "db-2", "action": "created"}]})
    );
    assert_eq!(revision(&c), rev + 1);

    // Dry runs of the per-kind endpoints and of /v1/apply.
    let r = call(
        &c,
        "PUT",
        "/v1/policies/deny-all?dryRun=true",
        &policy("deny-all", 80),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (
            &r.body["applied"][0]["action"],
            &r.body["dryRun"],
            &r.body["revision"]
        ),
        (&json!("configured"), &json!(true), &json!(rev + 1))
    );
    let stored = get(&c, "/v1/policies/deny-all").body;
    assert_eq!(stored["spec"]["ingress"], json!([]), "unchanged: {stored}");
    let r = call(
        &c,
        "POST",
        "/v1/workloads?dryRun=true&file=w.yaml",
        &workload("db-3", "10.9.0.3"),
    );
    assert_eq!(r.status, 400);
    assert!(r.error_text().contains("w.yaml:1:1"), "{}", r.error_text());
    // A misspelt parameter is refused rather than ignored (it would apply for real).
    let r = call(&c, "POST", "/v1/apply?dryrun=true", &policy("p9", 1));
    assert_eq!(r.status, 400);
    assert!(r.error_text().contains("dryrun"), "{}", r.error_text());
    assert_eq!(revision(&c), rev + 1);

    // Bulk delete: a missing resource is named and nothing goes.
    let both = [("Policy", "deny-all"), ("Workload", "db-2")];
    let r = post_json(&c, "/v1/delete", &refs(&[both[0], ("Workload", "nope")]));
    assert_eq!(r.status, 404);
    assert!(
        r.error_text().contains("Workload \"nope\""),
        "{}",
        r.error_text()
    );
    assert_eq!(get(&c, "/v1/policies/deny-all").status, 200);
    let r = post_json(&c, "/v1/delete", &refs(&[("Nope", "x")]));
    assert_eq!(r.status, 400);
    let r = post_json(&c, "/v1/delete?dryRun=true", &refs(&both));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (&r.body["dryRun"], &r.body["revision"]),
        (&json!(true), &json!(rev + 1))
    );
    assert_eq!(get(&c, "/v1/workloads/db-2").status, 200);
    let r = c
        .call("DELETE", "/v1/workloads/db-2?dryRun=true", None)
        .unwrap();
    assert_eq!((r.status, &r.body["dryRun"]), (200, &json!(true)));
    let r = post_json(&c, "/v1/delete", &refs(&both));
    assert_eq!(
        r.body,
        json!({"revision": rev + 2, "dryRun": false, "deleted": [
            {"kind": "Policy", "name": "deny-all"}, {"kind": "Workload", "name": "db-2"}]})
    );
    assert_eq!(get(&c, "/v1/policies/deny-all").status, 404);
    assert_eq!(get(&c, "/v1/workloads/db-2").status, 404);
    assert_eq!(revision(&c), rev + 2);
}

#[test]
fn sqlite_multi_file_apply_dry_run_and_bulk_delete_are_transactions() {
    let state = TempDir::new("sqlite-tx");
    transactions(&state.0, None);
}

#[test]
fn postgres_multi_file_apply_dry_run_and_bulk_delete_are_transactions() {
    let pg = Postgres::start();
    let url = pg.database("tx");
    let state = TempDir::new("pg-tx");
    transactions(&state.0, Some(&url));
}

/// A large apply is parsed off the async workers: on a controller with one worker,
/// `GET /v1/nodes` is answered while the apply is still being parsed.
#[test]
fn a_large_apply_does_not_hold_up_other_requests() {
    let state = TempDir::new("slow-apply");
    let mut opts = microseg_controller::Options::new(&state.0);
    opts.listen = "127.0.0.1:0".into();
    let ctl = Ctl::start_on_workers(opts, 1);
    // Many policies and an invalid last one: all of it is parsed, then refused.
    const N: usize = 20_000;
    let mut body = String::new();
    for i in 0..N {
        body.push_str("---\n");
        body.push_str(&policy(&format!("p{i}"), 1000 + (i % 1000) as u16));
    }
    body.push_str("---\n");
    body.push_str(&policy("Bad_Name", 80));
    let post = request(
        &ctl,
        "POST",
        "/v1/apply?file=big.yaml",
        Some("application/yaml"),
        body.as_bytes(),
    );
    let addr = ctl.running.as_ref().unwrap().addr;
    let done = Arc::new(AtomicBool::new(false));
    let (sent, body_sent) = std::sync::mpsc::channel();
    let poster = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
            s.write_all(&post).unwrap();
            sent.send(()).unwrap();
            let r = read_reply(&mut s);
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    body_sent
        .recv_timeout(Duration::from_secs(120))
        .expect("the body is sent");
    // The controller reads the rest of the body in moments; parsing it takes far longer.
    std::thread::sleep(Duration::from_millis(300));
    let nodes = get(&ctl.client(), "/v1/nodes");
    let apply_finished_first = done.load(Ordering::SeqCst);
    let r = poster.join().unwrap();
    assert_eq!(nodes.status, 200);
    assert_eq!(r.status, 400);
    let text = r.json()["details"].to_string();
    let line = N * 10 + 4;
    assert!(text.contains(&format!("big.yaml:{line}:")), "{text}");
    assert!(
        !apply_finished_first,
        "GET /v1/nodes waited for the apply to be parsed"
    );
}
