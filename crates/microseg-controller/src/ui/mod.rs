//! The web UI at `/ui/`, served from assets embedded in the binary (docs/UI.md).
//! The assets are public (they hold no data); every call they make to `/v1/*` carries
//! the token the user gave, so the UI can do no more than that token.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// Name, media type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "pages.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/pages.js"),
    ),
    (
        "recommend.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/recommend.js"),
    ),
    (
        "map.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/map.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

/// Scripts and styles from this origin only, API calls to it only, no framing: a page
/// that holds a token runs nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(name: &str) -> Response {
    let Some((_, mime, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such UI asset").into_response();
    };
    let mut r = (*body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Assets change with the binary; a restarted controller must not serve stale ones.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index() -> Response {
    asset("index.html")
}

async fn named(Path(name): Path<String>) -> Response {
    asset(&name)
}

/// `/ui` (redirected to `/ui/`), `/ui/` and `/ui/NAME`.
pub fn router() -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/{*name}", get(named))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_relative_and_local() {
        for (name, _, body) in ASSETS {
            // The SVG namespace is a name, never fetched.
            let body = body.replace("http://www.w3.org/2000/svg", "");
            for bad in ["http://", "https://", "//cdn", "src=\"/", "href=\"/"] {
                assert!(!body.contains(bad), "{name} contains {bad:?}");
            }
        }
    }
}
