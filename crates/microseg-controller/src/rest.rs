//! The REST API (JSON): its routes and handlers (the token check in front of them and of
//! gRPC: `auth.rs`).

use crate::api_types::{
    ApplyFilesRequest, ApplyResponse, DeleteOneResponse, DeleteRequest, DeleteResponse, EdgeList,
    FlowPage, FlowStatus, LabelRequest, LabelResponse, List, NodeStatus, Stored,
};
use crate::apply::{off_workers, Applied, Outcome, ResourceRef, Scope, SourceFile};
use crate::core::Core;
use crate::error::Error;
use crate::recommendations::RecommendParams;
use crate::resources::{POLICY, WORKLOAD};
use crate::rest_flows::{EdgeParams, FlowParams};
use crate::rest_input::{body_text, json_body, json_errors, name, params, Name, Params};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Json, Router};
use microseg_policy::Resource;
use std::sync::Arc;

/// The OpenAPI 3 description of this API, served as is at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

type Api = State<Arc<Core>>;
type Res<T> = Result<Json<T>, Error>;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ApplyParams {
    /// The name error messages give the request body (FILE in FILE:LINE:COL).
    file: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DryRun {
    #[serde(default)]
    dry_run: bool,
}

/// The query of an endpoint that takes no parameter: any is refused, naming it
/// (docs/CONTROLLER.md: an unknown query parameter gets 400 rather than being ignored).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

fn applied(o: Outcome<Applied>, dry_run: bool) -> Res<ApplyResponse> {
    Ok(Json(ApplyResponse {
        applied: o.items,
        dry_run,
        revision: o.revision,
    }))
}

/// One body, one file: `/v1/apply` and the per-kind POST and PUT.
async fn apply_body(
    c: &Core,
    q: Params<ApplyParams>,
    req: Request,
    scope: Scope,
) -> Res<ApplyResponse> {
    let q = params(q)?;
    let content = body_text(req).await?;
    let name = q.file.unwrap_or_else(|| "request".into());
    let files = vec![SourceFile { name, content }];
    applied(c.apply(files, scope, q.dry_run).await?, q.dry_run)
}

async fn apply_any(State(c): Api, q: Params<ApplyParams>, req: Request) -> Res<ApplyResponse> {
    apply_body(&c, q, req, Scope::default()).await
}

async fn apply_files(State(c): Api, q: Params<DryRun>, req: Request) -> Res<ApplyResponse> {
    let q = params(q)?;
    let f: ApplyFilesRequest =
        json_body(req, r#"{"files": [{"name": FILE, "content": TEXT}, ...]}"#).await?;
    applied(
        c.apply(f.files, Scope::default(), q.dry_run).await?,
        q.dry_run,
    )
}

async fn delete_many(State(c): Api, q: Params<DryRun>, req: Request) -> Res<DeleteResponse> {
    let q = params(q)?;
    let r: DeleteRequest =
        json_body(req, r#"{"resources": [{"kind": KIND, "name": NAME}, ...]}"#).await?;
    let o = c.delete(r.resources, q.dry_run).await?;
    Ok(Json(DeleteResponse {
        deleted: o.items,
        dry_run: q.dry_run,
        revision: o.revision,
    }))
}

/// Every document of a kind, decorated and serialized off the async workers: there may be
/// tens of thousands.
async fn list(c: Arc<Core>, kind: &'static str) -> Result<Response, Error> {
    off_workers(move |rt| {
        let (revision, items) = rt.block_on(c.list(kind))?;
        Ok(Json(List { items, revision }).into_response())
    })
    .await
}

async fn get_one(c: Arc<Core>, kind: &'static str, n: Name) -> Res<Stored<Resource>> {
    let name = name(n)?;
    off_workers(move |rt| rt.block_on(c.get(kind, &name)).map(Json)).await
}

fn scope(kind: &'static str, name: Option<String>) -> Scope {
    Scope {
        kind: Some(kind),
        name,
    }
}

async fn delete(c: &Core, kind: &str, n: Name, q: Params<DryRun>) -> Res<DeleteOneResponse> {
    let (name, q) = (name(n)?, params(q)?);
    let deleted = ResourceRef {
        kind: kind.to_string(),
        name,
    };
    let o = c.delete(vec![deleted.clone()], q.dry_run).await?;
    Ok(Json(DeleteOneResponse {
        deleted,
        dry_run: q.dry_run,
        revision: o.revision,
    }))
}

async fn list_policies(State(c): Api, q: Params<NoParams>) -> Result<Response, Error> {
    params(q)?;
    list(c, POLICY).await
}
async fn apply_policies(State(c): Api, q: Params<ApplyParams>, req: Request) -> Res<ApplyResponse> {
    apply_body(&c, q, req, scope(POLICY, None)).await
}
async fn get_policy(State(c): Api, n: Name, q: Params<NoParams>) -> Res<Stored<Resource>> {
    params(q)?;
    get_one(c, POLICY, n).await
}
async fn put_policy(
    State(c): Api,
    n: Name,
    q: Params<ApplyParams>,
    req: Request,
) -> Res<ApplyResponse> {
    apply_body(&c, q, req, scope(POLICY, Some(name(n)?))).await
}
async fn delete_policy(State(c): Api, n: Name, q: Params<DryRun>) -> Res<DeleteOneResponse> {
    delete(&c, POLICY, n, q).await
}

async fn promote_policy(State(c): Api, n: Name, q: Params<DryRun>) -> Res<ApplyResponse> {
    let (name, q) = (name(n)?, params(q)?);
    applied(c.promote(name, q.dry_run).await?, q.dry_run)
}

async fn recommendations(
    State(c): Api,
    q: Params<RecommendParams>,
) -> Res<crate::recommendations::Recommendations> {
    crate::recommendations::recommendations(&c, params(q)?)
        .await
        .map(Json)
}

async fn list_workloads(State(c): Api, q: Params<NoParams>) -> Result<Response, Error> {
    params(q)?;
    list(c, WORKLOAD).await
}
async fn apply_workloads(
    State(c): Api,
    q: Params<ApplyParams>,
    req: Request,
) -> Res<ApplyResponse> {
    apply_body(&c, q, req, scope(WORKLOAD, None)).await
}
async fn get_workload(State(c): Api, n: Name, q: Params<NoParams>) -> Res<Stored<Resource>> {
    params(q)?;
    get_one(c, WORKLOAD, n).await
}
async fn put_workload(
    State(c): Api,
    n: Name,
    q: Params<ApplyParams>,
    req: Request,
) -> Res<ApplyResponse> {
    apply_body(&c, q, req, scope(WORKLOAD, Some(name(n)?))).await
}
async fn delete_workload(State(c): Api, n: Name, q: Params<DryRun>) -> Res<DeleteOneResponse> {
    delete(&c, WORKLOAD, n, q).await
}

async fn label_workload(
    State(c): Api,
    n: Name,
    q: Params<NoParams>,
    req: Request,
) -> Res<LabelResponse> {
    let name = name(n)?;
    params(q)?;
    let l: LabelRequest = json_body(req, r#"{"labels": {KEY: VALUE or null}}"#).await?;
    let (revision, labels) = c.label(&name, l.labels).await?;
    Ok(Json(LabelResponse {
        labels,
        name,
        revision,
    }))
}

async fn nodes(State(c): Api, q: Params<NoParams>) -> Res<List<NodeStatus>> {
    params(q)?;
    let (revision, items) = c.nodes().await?;
    Ok(Json(List { items, revision }))
}

async fn flows(State(c): Api, q: Params<FlowParams>) -> Res<FlowPage> {
    crate::rest_flows::flows(&c, params(q)?).await.map(Json)
}

async fn flow_edges(State(c): Api, q: Params<EdgeParams>) -> Res<EdgeList> {
    crate::rest_flows::edges(&c, params(q)?).await.map(Json)
}

async fn flow_status(State(c): Api, q: Params<NoParams>) -> Res<FlowStatus> {
    params(q)?;
    Ok(Json(c.flows.status()))
}

async fn metrics(c: Api, q: Params<NoParams>) -> Result<Response, Error> {
    params(q)?;
    crate::metrics::metrics(c).await
}

async fn openapi(q: Params<NoParams>) -> Result<Response, Error> {
    params(q)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response())
}

async fn not_found(req: Request) -> Error {
    Error::NotFound(format!(
        "no such endpoint: {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// The API's routes, each recorded as it is added, so that the OpenAPI document can be
/// checked against them (`openapi_check.rs`).
struct Routes {
    router: Router<Arc<Core>>,
    endpoints: Vec<(Method, &'static str)>,
}

impl Routes {
    fn at<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, Arc<Core>>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a method the router takes");
        self.router = self.router.route(path, on(filter, handler));
        self.endpoints.push((method, path));
        self
    }
}

fn routes() -> Routes {
    use Method as M;
    let (policy, workload) = ("/v1/policies/{name}", "/v1/workloads/{name}");
    Routes {
        router: Router::new(),
        endpoints: Vec::new(),
    }
    .at(M::POST, "/v1/apply", apply_any)
    .at(M::POST, "/v1/apply/files", apply_files)
    .at(M::POST, "/v1/delete", delete_many)
    .at(M::GET, "/v1/policies", list_policies)
    .at(M::POST, "/v1/policies", apply_policies)
    .at(M::GET, policy, get_policy)
    .at(M::PUT, policy, put_policy)
    .at(M::DELETE, policy, delete_policy)
    .at(M::POST, "/v1/policies/{name}/promote", promote_policy)
    .at(M::GET, "/v1/recommendations", recommendations)
    .at(M::GET, "/v1/workloads", list_workloads)
    .at(M::POST, "/v1/workloads", apply_workloads)
    .at(M::GET, workload, get_workload)
    .at(M::PUT, workload, put_workload)
    .at(M::DELETE, workload, delete_workload)
    .at(M::PUT, "/v1/workloads/{name}/labels", label_workload)
    .at(M::GET, "/v1/nodes", nodes)
    .at(M::GET, "/v1/flows", flows)
    .at(M::GET, "/v1/flows/edges", flow_edges)
    .at(M::GET, "/v1/flows/status", flow_status)
    .at(M::GET, "/v1/openapi.json", openapi)
    .at(M::GET, "/metrics", metrics)
}

/// Every method and path the API answers.
#[cfg(test)]
pub(crate) fn endpoints() -> Vec<(Method, &'static str)> {
    routes().endpoints
}

pub fn api_router(core: Arc<Core>) -> Router {
    routes()
        .router
        .fallback(not_found)
        .layer(middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(crate::rest_input::MAX_BODY_BYTES))
        .with_state(core)
}
