//! What the REST API takes and how it refuses: request bodies (content type, size,
//! encoding) and query strings are checked here, and every error leaves as the JSON
//! shape `{"error": ..., "details": [...]}`, its text with control characters escaped.

use crate::api_types::ErrorBody;
use crate::apply::compute;
use crate::error::{printable, Error};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

/// The largest request body: the largest resource, so that any body taken fits the agent
/// link's messages too.
pub const MAX_BODY_BYTES: usize = microseg_proto::MAX_RESOURCE_BYTES;

/// The media types a body may be sent as (any body may also come without one).
pub const BODY_TYPES: [&str; 6] = [
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "application/json",
    "text/plain",
];

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, details) = match &self {
            Error::BadInput { details, .. } => (StatusCode::BAD_REQUEST, details.clone()),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, Vec::new()),
            Error::Conflict(_) => (StatusCode::CONFLICT, Vec::new()),
            Error::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, Vec::new()),
            Error::Http {
                status, details, ..
            } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                details.clone(),
            ),
        };
        let message = self.to_string();
        if status.is_server_error() {
            tracing::error!(%status, "{}", printable(&message));
        }
        let details: Vec<String> = details.iter().map(|d| printable(d).into_owned()).collect();
        (
            status,
            Json(ErrorBody {
                details,
                error: printable(&message).into_owned(),
            }),
        )
            .into_response()
    }
}

/// Refuses a body declared as anything but YAML, JSON or plain text in UTF-8.
fn check_content_type(h: &HeaderMap) -> Result<(), Error> {
    let Some(value) = h.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or_default();
    let mut parts = text.split(';');
    let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let utf8 = parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            let v = v.trim().trim_matches('"');
            v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("us-ascii")
        }
        _ => true,
    });
    if utf8 && BODY_TYPES.contains(&media.as_str()) {
        return Ok(());
    }
    let hint = if media == "application/x-www-form-urlencoded" {
        " (curl sends that with -d and --data-binary: add -H 'Content-Type: application/yaml')"
    } else {
        ""
    };
    Err(Error::http(
        415,
        format!(
            "unsupported Content-Type {text:?}{hint}: the body is YAML or JSON in UTF-8, sent as {}, or without a Content-Type",
            BODY_TYPES.join(", ")
        ),
    ))
}

/// The request's body as text: its content type checked first, then its size and UTF-8.
pub async fn body_text(req: Request) -> Result<String, Error> {
    check_content_type(req.headers())?;
    let too_large = || {
        Error::http(
            413,
            format!(
                "the request body is larger than {} MiB",
                MAX_BODY_BYTES >> 20
            ),
        )
    };
    // A declared length over the limit is refused before anything is read.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = Bytes::from_request(req, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            Error::http(e.status().as_u16(), e.body_text())
        }
    })?;
    compute(move || String::from_utf8(bytes.into()))
        .await?
        .map_err(|e| {
            Error::bad(format!(
                "the request body is not UTF-8 (an invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
        })
}

/// A JSON body of the shape `shape` describes.
pub async fn json_body<T>(req: Request, shape: &str) -> Result<T, Error>
where
    T: DeserializeOwned + Send + 'static,
{
    let text = body_text(req).await?;
    compute(move || serde_json::from_str(&text))
        .await?
        .map_err(|e| Error::bad(format!("the body must be {shape}: {e}")))
}

pub type Params<T> = Result<Query<T>, QueryRejection>;

/// The query string's parameters, or 400 naming the one that is unknown or invalid.
pub fn params<T>(q: Params<T>) -> Result<T, Error> {
    q.map(|Query(t)| t).map_err(|e| Error::bad(e.body_text()))
}

pub type Name = Result<Path<String>, PathRejection>;

pub fn name(p: Name) -> Result<String, Error> {
    p.map(|Path(n)| n).map_err(|e| Error::bad(e.body_text()))
}

/// Rewrites an error the framework answered rather than a handler (a method not allowed
/// on a path, say) into the JSON error shape.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let res = next.run(req).await;
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        // The router adds the Allow header after this layer.
        format!("method {method} is not allowed on {path}; the Allow header lists those that are")
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = ErrorBody {
        details: Vec::new(),
        error: printable(&message).into_owned(),
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_json_and_text_bodies_are_taken_in_utf8_only() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            check_content_type(&h)
        };
        for ok in [
            "application/yaml",
            "Application/JSON; charset=UTF-8",
            "text/plain;charset=\"us-ascii\"",
            "text/x-yaml",
        ] {
            assert!(with(ok).is_ok(), "{ok}");
        }
        assert!(check_content_type(&HeaderMap::new()).is_ok());
        for bad in [
            "image/png",
            "application/x-www-form-urlencoded",
            "text/yaml; charset=latin1",
            "multipart/form-data; boundary=x",
        ] {
            let Err(Error::Http { status, .. }) = with(bad) else {
                panic!("{bad} refused")
            };
            assert_eq!(status, 415, "{bad}");
        }
    }
}
