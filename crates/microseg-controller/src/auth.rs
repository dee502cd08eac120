//! The front door of REST and gRPC: the bearer token decides what a request may reach.
//! The controller token opens the REST API (and gRPC); the agent token and node tokens
//! open the agent link (gRPC) only, a node token speaking for its node alone.
//! `application/grpc` requests go to the AgentLink service, the rest to the REST API.
//! The web UI's static assets under `/ui/` need no token (they hold no data); the API
//! calls the UI makes do (docs/UI.md).

use crate::core::Core;
use crate::error::Error;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::Arc;
use tower::ServiceExt;

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The token of `Authorization: Bearer TOKEN`; the scheme's case does not matter
/// (RFC 7235), so `bearer` is as good.
fn bearer_token(h: &HeaderMap) -> Option<&str> {
    let (scheme, token) = h
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim_start()
        .split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Equal in time for equal lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who a request's token says is calling; on gRPC calls it travels in the request's
/// extensions, since a node token speaks for its node only.
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

impl Front {
    /// The caller the request's token names; None without a token or with a wrong one.
    fn bearer(&self, h: &HeaderMap) -> Option<Bearer> {
        let presented = bearer_token(h)?;
        if same(presented.as_bytes(), self.token.as_bytes()) {
            return Some(Bearer::Controller);
        }
        if same(presented.as_bytes(), self.agent_token.as_bytes()) {
            return Some(Bearer::Agent);
        }
        crate::node_token::token_node(&self.agent_token, presented)
            .map(|n| Bearer::Node(n.to_string()))
    }
}

fn unauthenticated(grpc: bool) -> Response {
    if grpc {
        return tonic::Status::unauthenticated("missing or wrong bearer token")
            .into_http::<axum::body::Body>();
    }
    let mut r = Error::http(401, "missing or wrong bearer token").into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn agent_on_rest() -> Response {
    Error::http(
        403,
        "the agent token and node tokens open the agent link only; the REST API takes the controller token",
    )
    .into_response()
}

async fn front(State(f): State<Front>, mut req: Request, next: Next) -> Response {
    let grpc = is_grpc(req.headers());
    match (f.bearer(req.headers()), grpc) {
        (None, _) => unauthenticated(grpc),
        (Some(Bearer::Controller), false) => next.run(req).await,
        (Some(_), false) => agent_on_rest(),
        (Some(bearer), true) => {
            req.extensions_mut().insert(bearer);
            match f.grpc.oneshot(req).await {
                Ok(r) => r,
                Err(e) => match e {},
            }
        }
    }
}

/// REST and gRPC on one router, behind the token check; the UI's assets beside it.
pub fn app(core: Arc<Core>, token: String, agent_token: String) -> Router {
    let grpc = tonic::service::Routes::new(crate::grpc::server(core.clone())).into_axum_router();
    let f = Front {
        token: Arc::new(token),
        agent_token: Arc::new(agent_token),
        grpc,
    };
    let api = crate::rest::api_router(core).layer(middleware::from_fn_with_state(f, front));
    crate::ui::router().merge(api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_names_the_caller() {
        let f = Front {
            token: Arc::new("admin".into()),
            agent_token: Arc::new("agents".into()),
            grpc: Router::new(),
        };
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            f.bearer(&h)
        };
        let node = crate::node_token::node_token("agents", "node-a");
        assert_eq!(with("Bearer admin"), Some(Bearer::Controller));
        assert_eq!(with("bEaReR agents"), Some(Bearer::Agent));
        assert_eq!(
            with(&format!("Bearer {node}")),
            Some(Bearer::Node("node-a".into()))
        );
        assert_eq!(with("Bearer admin2"), None);
        assert_eq!(with("Basic admin"), None);
        assert_eq!(f.bearer(&HeaderMap::new()), None);
    }
}
