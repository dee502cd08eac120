//! The REST API at its edges: content types, flow filters, the bearer scheme, errors the
//! framework answers (405, 413, invalid UTF-8, bad queries and paths) as JSON, and
//! control characters from requests escaped in answers and logs.

mod common;

use common::*;
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::WorkloadReport;
use serde_json::json;
use std::sync::{Mutex, Once};

fn state(what: &str) -> (TempDir, Ctl) {
    let dir = TempDir::new(what);
    let ctl = Ctl::start(&dir.0, None);
    (dir, ctl)
}

/// The JSON error shape: an `error` string and a `details` list.
fn error_of(r: &RawReply) -> (String, Vec<String>) {
    let v = r.json();
    let error = v["error"].as_str().expect("an error string").to_string();
    let details = v["details"]
        .as_array()
        .expect("a details list")
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    (error, details)
}

#[test]
fn bodies_other_than_yaml_or_json_are_refused_with_415() {
    let (_dir, ctl) = state("content-type");
    let c = ctl.client();
    let body = policy("p1", 80);
    for ct in ["image/png", "application/x-www-form-urlencoded"] {
        let r = raw(
            &ctl,
            &request(&ctl, "POST", "/v1/apply", Some(ct), body.as_bytes()),
        );
        assert_eq!(r.status, 415, "{ct}");
        let (error, _) = error_of(&r);
        assert!(
            error.contains(ct) && error.contains("application/yaml"),
            "{error}"
        );
    }
    let files = json!({"files": [{"name": "a.yaml", "content": body}]}).to_string();
    let r = raw(
        &ctl,
        &request(
            &ctl,
            "POST",
            "/v1/apply/files",
            Some("image/png"),
            files.as_bytes(),
        ),
    );
    assert_eq!(r.status, 415);
    assert_eq!(revision(&c), 0, "nothing applied");
    // Plain text, and no Content-Type at all (curl -T), are taken.
    let r = raw(
        &ctl,
        &request(
            &ctl,
            "POST",
            "/v1/apply",
            Some("text/plain"),
            body.as_bytes(),
        ),
    );
    assert_eq!(r.status, 200, "{:?}", r.json());
    let r = raw(
        &ctl,
        &request(&ctl, "POST", "/v1/apply", None, policy("p2", 80).as_bytes()),
    );
    assert_eq!(r.status, 200, "{:?}", r.json());
    let r = raw(
        &ctl,
        &request(&ctl, "POST", "/v1/apply/files", None, files.as_bytes()),
    );
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["applied"][0]["action"], "unchanged");
    assert_eq!(revision(&c), 2);
}

#[test]
fn every_flow_filter_is_checked() {
    let (_dir, ctl) = state("flow-filters");
    let c = ctl.client();
    for (query, names) in [
        (
            "verdict=bogus",
            &["verdict", "bogus", "allow, deny, log, audit"][..],
        ),
        ("direction=sideways", &["direction", "ingress or egress"]),
        ("protocol=tcpx", &["protocol", "tcpx"]),
        ("since=soon", &["since", "soon"]),
        ("limit=-1", &["limit", "-1"]),
        ("verdic=deny", &["verdic"]),
        ("port=http", &["port", "http"]),
        ("from=app=we%20b", &["from", "we b"]),
        (
            "until=2000-01-01T00:00:00Z&since=1h",
            &["until", "before since"],
        ),
        ("after=-3", &["after", "-3"]),
    ] {
        let r = get(&c, &format!("/v1/flows?{query}"));
        assert_eq!(r.status, 400, "{query}: {:?}", r.body);
        let text = r.error_text();
        for n in names {
            assert!(text.contains(n), "{query}: {text}");
        }
    }
    let r = get(
        &c,
        "/v1/flows?verdict=deny&direction=ingress&protocol=6&since=5m&limit=10",
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["items"], json!([]));
    assert!(r.body["cursor"].is_string(), "{:?}", r.body);
    let r = get(&c, "/v1/flows/edges?since=tomorrow");
    assert_eq!(r.status, 400);
    assert!(r.error_text().contains("since"), "{}", r.error_text());
}

#[test]
fn the_bearer_scheme_is_case_insensitive_on_rest_and_grpc() {
    let (_dir, ctl) = state("bearer");
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let req = format!(
            "GET /v1/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {scheme} {}\r\n\r\n",
            ctl.token()
        );
        let r = raw(&ctl, req.as_bytes());
        assert_eq!(r.status, 200, "{scheme}: {:?}", r.json());
    }
    let req = format!(
        "GET /v1/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {}\r\n\r\n",
        ctl.token()
    );
    assert_eq!(raw(&ctl, req.as_bytes()).status, 401, "another scheme");

    let url = ctl.url();
    let token = ctl.token();
    let report = |scheme: &'static str, token: String| {
        let url = url.clone();
        async move {
            let mut link = AgentLinkClient::connect(url).await.unwrap();
            let mut req = tonic::Request::new(WorkloadReport {
                node: "n1".into(),
                workloads: Vec::new(),
            });
            req.metadata_mut().insert(
                "authorization",
                format!("{scheme} {token}").parse().unwrap(),
            );
            link.report_workloads(req).await.map(|_| ())
        }
    };
    ctl.rt
        .block_on(report("bearer", token.clone()))
        .expect("a lower-case scheme opens the agent link");
    let e = ctl
        .rt
        .block_on(report("bearer", "wrong".into()))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}

#[test]
fn errors_the_framework_answers_are_json_too() {
    let (_dir, ctl) = state("json-errors");
    // 405, with the methods the path takes.
    for method in ["GET", "DELETE"] {
        let r = raw(&ctl, &request(&ctl, method, "/v1/apply", None, b""));
        assert_eq!(r.status, 405, "{method}");
        assert!(r.head.contains("\r\nallow: post"), "{}", r.head);
        let (error, _) = error_of(&r);
        assert!(
            error.contains(method) && error.contains("/v1/apply"),
            "{error}"
        );
    }
    // 404 for a path that is none of the API's.
    let r = raw(&ctl, &request(&ctl, "GET", "/v2/nothing", None, b""));
    assert_eq!(r.status, 404);
    assert!(error_of(&r).0.contains("/v2/nothing"));
    // 413: a body over the limit is refused before it is read.
    let mut req = format!(
        "POST /v1/apply HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\n\r\n",
        ctl.token(),
        (64 << 20) + 1
    )
    .into_bytes();
    req.extend_from_slice(&[b'#'; 4096]);
    let r = raw(&ctl, &req);
    assert_eq!(r.status, 413);
    assert!(error_of(&r).0.contains("64 MiB"), "{:?}", error_of(&r));
    // A body that is not UTF-8.
    let mut body = policy("p1", 80).into_bytes();
    body.extend_from_slice(b"# \xff\xfe\n");
    let r = raw(
        &ctl,
        &request(&ctl, "POST", "/v1/apply", Some("application/yaml"), &body),
    );
    assert_eq!(r.status, 400);
    assert!(error_of(&r).0.contains("UTF-8"), "{:?}", error_of(&r));
    // Query strings and paths the extractors refuse.
    for (method, path, what) in [
        ("POST", "/v1/apply?dryRun=maybe", "dryRun"),
        ("GET", "/v1/flows?limit=1&limit=2", "limit"),
        ("GET", "/v1/policies/%FF", "UTF-8"),
    ] {
        let r = raw(&ctl, &request(&ctl, method, path, None, b""));
        assert_eq!(r.status, 400, "{path}");
        let (error, _) = error_of(&r);
        assert!(error.contains(what), "{path}: {error}");
    }
    assert_eq!(revision(&ctl.client()), 0);
}

/// Log lines, kept for the test that looks for its own in them.
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Receives each formatted log line whole, newline included.
struct Keep;

impl std::io::Write for Keep {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(line);
        LOGGED
            .lock()
            .unwrap()
            .push(text.trim_end_matches('\n').to_string());
        Ok(line.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn control_characters_from_a_request_come_back_escaped() {
    static LOGGER: Once = Once::new();
    LOGGER.call_once(|| {
        let lines = tracing_subscriber::fmt().with_writer(|| Keep).finish();
        tracing::subscriber::set_global_default(lines).unwrap();
    });
    let (_dir, ctl) = state("escapes");
    let c = ctl.client();
    let file = "\u{1b}[31mevil\n\u{202e}.yaml";
    let escaped = "\\x1b[31mevil\\n\\u{202e}.yaml";
    let body = json!({"apiVersion": "microseg.io/v1", "kind": "Policy",
        "metadata": {"name": "a\u{1b}]0;owned\u{7}b"}, "spec": {"selector": {}}})
    .to_string();
    let path = format!(
        "/v1/apply?file={}",
        microseg_controller::client::encode(file)
    );
    let r = raw(
        &ctl,
        &request(
            &ctl,
            "POST",
            &path,
            Some("application/json"),
            body.as_bytes(),
        ),
    );
    assert_eq!(r.status, 400);
    let (error, details) = error_of(&r);
    let all = format!("{error}\n{}", details.join("\n"));
    assert!(
        details[0].starts_with(&format!("{escaped}:1:")),
        "{details:?}"
    );
    assert!(all.contains("a\\x1b]0;owned\\x07b"), "{all}");
    assert!(
        !all.chars().any(|ch| ch.is_control() && ch != '\n'),
        "{all:?}"
    );
    // The same in several files, and in a delete's 404.
    let files = json!({"files": [{"name": file, "content": body}]});
    let r = c
        .call(
            "POST",
            "/v1/apply/files",
            Some(("application/json", files.to_string().as_bytes())),
        )
        .unwrap();
    assert!(r.error_text().contains(escaped), "{}", r.error_text());
    let refs = json!({"resources": [{"kind": "Policy", "name": file}]});
    let r = c
        .call(
            "POST",
            "/v1/delete",
            Some(("application/json", refs.to_string().as_bytes())),
        )
        .unwrap();
    assert_eq!(r.status, 404);
    assert!(r.error_text().contains(escaped), "{}", r.error_text());
    // And in the controller's log.
    let logged = LOGGED.lock().unwrap().clone();
    let mine: Vec<&String> = logged.iter().filter(|l| l.contains("evil")).collect();
    assert!(mine.iter().any(|l| l.contains(escaped)), "logged: {mine:?}");
    assert!(
        mine.iter()
            .all(|l| !l.contains('\u{1b}') && !l.contains('\n')),
        "{mine:?}"
    );
}
