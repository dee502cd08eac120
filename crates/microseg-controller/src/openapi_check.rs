//! The OpenAPI document (`openapi.json`, written by hand) checked against the router, so
//! that they cannot drift apart: every method and path the router answers is documented,
//! and nothing else is; each operation documents exactly the query parameters its handler
//! takes. Those are read from the handler itself: sent one it does not know, it refuses
//! the request naming the ones it takes.

use crate::core::Core;
use crate::rest::{api_router, endpoints, OPENAPI};
use axum::body::Body;
use axum::http::{header, Request};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tower::ServiceExt;

const PROBE: &str = "zzUnknownProbe";

type Operations = BTreeMap<(String, String), BTreeSet<String>>;

/// The query parameters a parameter list documents (references resolved).
fn query_names(doc: &Value, params: Option<&Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in params.and_then(Value::as_array).into_iter().flatten() {
        let p = match p["$ref"].as_str() {
            Some(r) => doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("{r} resolves")),
            None => p,
        };
        if p["in"] == "query" {
            out.insert(p["name"].as_str().expect("a name").to_string());
        }
    }
    out
}

/// Each documented operation, (METHOD, path), and its query parameters.
fn documented() -> Operations {
    let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    let mut ops = Operations::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let shared = query_names(&doc, item.get("parameters"));
        for (method, op) in item.as_object().expect("a path item") {
            if method == "parameters" {
                continue;
            }
            let mut query = shared.clone();
            query.extend(query_names(&doc, op.get("parameters")));
            ops.insert((method.to_uppercase(), path.clone()), query);
        }
    }
    ops
}

/// The query parameters the handler of `method path` takes, as its refusal of an
/// unknown one names them ("unknown field `x`, expected `a` or `b`").
async fn taken(app: axum::Router, method: &str, path: &str) -> BTreeSet<String> {
    let uri = format!("{}?{PROBE}=1", path.replace("{name}", "probe"));
    let req = Request::builder()
        .method(method)
        .uri(&uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::empty())
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let error = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    if !error.contains(PROBE) {
        return BTreeSet::new();
    }
    error
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|n| *n != PROBE)
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let store = crate::store::sqlite::Sqlite::open(std::path::Path::new(":memory:")).unwrap();
    let (rev, _) = tokio::sync::watch::channel(0);
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let app = api_router(Arc::new(Core::new(
        Arc::new(store),
        Arc::new(rev),
        crate::flow_ingest::FlowIngest::new("sqlite", 10),
        shutdown,
    )));
    let mut routed = Operations::new();
    for (method, path) in endpoints() {
        let query = taken(app.clone(), method.as_str(), path).await;
        routed.insert((method.to_string(), path.to_string()), query);
    }
    let documented = documented();
    let keys = |o: &Operations| o.keys().cloned().collect::<BTreeSet<_>>();
    let (routed_keys, documented_keys) = (keys(&routed), keys(&documented));
    assert_eq!(
        routed_keys.difference(&documented_keys).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routed but not in openapi.json"
    );
    assert_eq!(
        documented_keys.difference(&routed_keys).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "in openapi.json but not routed"
    );
    for (op, query) in &routed {
        assert_eq!(
            &documented[op], query,
            "{} {}: the query parameters documented (left) and taken (right)",
            op.0, op.1
        );
    }
    // The probe itself: the flow filters are found from the handler's refusal.
    let flows = &routed[&("GET".to_string(), "/v1/flows".to_string())];
    assert!(
        flows.contains("since") && flows.contains("limit"),
        "{flows:?}"
    );
}
