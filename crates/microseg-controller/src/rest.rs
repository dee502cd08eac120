//! The REST API (JSON) and the front door shared with gRPC: bearer-token check, then
//! `application/grpc` requests go to the AgentLink service and the rest to the API.

use crate::core::{Core, FlowQuery};
use crate::error::Error;
use crate::resources::{POLICY, WORKLOAD};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tower::ServiceExt;

/// The OpenAPI 3 description of this API, served as is at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, details) = match &self {
            Error::BadInput { details, .. } => (StatusCode::BAD_REQUEST, details.clone()),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, Vec::new()),
            Error::Conflict(_) => (StatusCode::CONFLICT, Vec::new()),
            Error::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, Vec::new()),
        };
        if status.is_server_error() {
            log::error!("{self}");
        }
        (
            status,
            Json(json!({"error": self.to_string(), "details": details})),
        )
            .into_response()
    }
}

type Api = State<Arc<Core>>;
type Res = Result<Json<Value>, Error>;

#[derive(serde::Deserialize, Default)]
struct Source {
    /// The name error messages give the request body (FILE in FILE:LINE:COL).
    file: Option<String>,
}

fn source(q: &Source) -> String {
    q.file.clone().unwrap_or_else(|| "request".into())
}

async fn apply_any(State(c): Api, Query(q): Query<Source>, body: String) -> Res {
    apply(&c, &source(&q), &body, None, None).await
}

async fn apply(c: &Core, file: &str, body: &str, only: Option<&str>, name: Option<&str>) -> Res {
    let (revision, applied) = c.apply(file, body, only, name).await?;
    Ok(Json(json!({"revision": revision, "applied": applied})))
}

async fn list(c: &Core, kind: &str) -> Res {
    let (revision, items) = c.list(kind).await?;
    Ok(Json(json!({"revision": revision, "items": items})))
}

async fn delete(c: &Core, kind: &str, name: &str) -> Res {
    let revision = c.delete(kind, name).await?;
    Ok(Json(
        json!({"revision": revision, "deleted": {"kind": kind, "name": name}}),
    ))
}

async fn list_policies(State(c): Api) -> Res {
    list(&c, POLICY).await
}
async fn apply_policies(State(c): Api, Query(q): Query<Source>, body: String) -> Res {
    apply(&c, &source(&q), &body, Some(POLICY), None).await
}
async fn get_policy(State(c): Api, Path(name): Path<String>) -> Res {
    Ok(Json(c.get(POLICY, &name).await?))
}
async fn put_policy(
    State(c): Api,
    Path(name): Path<String>,
    Query(q): Query<Source>,
    body: String,
) -> Res {
    apply(&c, &source(&q), &body, Some(POLICY), Some(&name)).await
}
async fn delete_policy(State(c): Api, Path(name): Path<String>) -> Res {
    delete(&c, POLICY, &name).await
}

async fn list_workloads(State(c): Api) -> Res {
    list(&c, WORKLOAD).await
}
async fn apply_workloads(State(c): Api, Query(q): Query<Source>, body: String) -> Res {
    apply(&c, &source(&q), &body, Some(WORKLOAD), None).await
}
async fn get_workload(State(c): Api, Path(name): Path<String>) -> Res {
    Ok(Json(c.get(WORKLOAD, &name).await?))
}
async fn put_workload(
    State(c): Api,
    Path(name): Path<String>,
    Query(q): Query<Source>,
    body: String,
) -> Res {
    apply(&c, &source(&q), &body, Some(WORKLOAD), Some(&name)).await
}
async fn delete_workload(State(c): Api, Path(name): Path<String>) -> Res {
    delete(&c, WORKLOAD, &name).await
}

async fn label_workload(State(c): Api, Path(name): Path<String>, body: String) -> Res {
    #[derive(serde::Deserialize)]
    struct Labels {
        labels: BTreeMap<String, Option<String>>,
    }
    let l: Labels = serde_json::from_str(&body).map_err(|e| {
        Error::bad(format!(
            "body must be {{\"labels\": {{KEY: VALUE or null}}}}: {e}"
        ))
    })?;
    let (revision, labels) = c.label(&name, l.labels).await?;
    Ok(Json(
        json!({"revision": revision, "name": name, "labels": labels}),
    ))
}

async fn nodes(State(c): Api) -> Res {
    let (revision, items) = c.nodes().await?;
    Ok(Json(json!({"revision": revision, "items": items})))
}

async fn flows(State(c): Api, Query(q): Query<FlowQuery>) -> Res {
    let items = c
        .flows
        .lock()
        .map_err(|_| Error::Store("flow buffer poisoned".into()))?
        .query(&q)?;
    Ok(Json(json!({"items": items})))
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

async fn not_found(req: Request) -> Error {
    Error::NotFound(format!(
        "no such endpoint: {} {}",
        req.method(),
        req.uri().path()
    ))
}

pub fn api_router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/v1/apply", post(apply_any))
        .route("/v1/policies", get(list_policies).post(apply_policies))
        .route(
            "/v1/policies/{name}",
            get(get_policy).put(put_policy).delete(delete_policy),
        )
        .route("/v1/workloads", get(list_workloads).post(apply_workloads))
        .route(
            "/v1/workloads/{name}",
            get(get_workload).put(put_workload).delete(delete_workload),
        )
        .route("/v1/workloads/{name}/labels", put(label_workload))
        .route("/v1/nodes", get(nodes))
        .route("/v1/flows", get(flows))
        .route("/v1/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(core)
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Equal in time for equal lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a gRPC call came with: a node token speaks for its node only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bearer {
    Controller,
    /// The shared agent token: any node.
    Agent,
    Node(String),
}

#[derive(Clone)]
struct Front {
    token: Arc<String>,
    /// Opens the agent link (gRPC) only: a node holding it cannot change policy.
    agent_token: Arc<String>,
    grpc: Router,
}

async fn front(State(f): State<Front>, mut req: Request, next: Next) -> Response {
    let grpc = is_grpc(req.headers());
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().as_bytes());
    let admin = bearer.is_some_and(|t| same(t, f.token.as_bytes()));
    let shared_agent = bearer.is_some_and(|t| same(t, f.agent_token.as_bytes()));
    let node = match bearer.and_then(|t| std::str::from_utf8(t).ok()) {
        Some(t) if !admin && !shared_agent => {
            crate::node_token::token_node(&f.agent_token, t).map(str::to_string)
        }
        _ => None,
    };
    let agent = shared_agent || node.is_some();
    if agent && !grpc {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "the agent token and node tokens open the agent link only; the REST API takes the controller token",
                "details": []
            })),
        )
            .into_response();
    }
    if !admin && !agent {
        if grpc {
            return tonic::Status::unauthenticated("missing or wrong bearer token")
                .into_http::<axum::body::Body>();
        }
        let mut r = (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "missing or wrong bearer token", "details": []})),
        )
            .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    if grpc {
        let bearer = match node {
            Some(n) => Bearer::Node(n),
            None if admin => Bearer::Controller,
            None => Bearer::Agent,
        };
        req.extensions_mut().insert(bearer);
        return match f.grpc.oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
    }
    next.run(req).await
}

/// REST and gRPC on one router, behind the token check.
pub fn app(core: Arc<Core>, token: String, agent_token: String) -> Router {
    let grpc = tonic::service::Routes::new(crate::grpc::server(core.clone())).into_axum_router();
    let f = Front {
        token: Arc::new(token),
        agent_token: Arc::new(agent_token),
        grpc,
    };
    api_router(core).layer(middleware::from_fn_with_state(f, front))
}
