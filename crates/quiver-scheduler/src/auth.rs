//! Access control: one shared token guards the REST API, the UI and job submission.
//!
//! With a token configured (`QUIVER_TOKEN`, or `--token-file`), every request
//! except the health probes must carry it, as `Authorization: Bearer <token>`
//! (the CLI, the Airflow provider, Ballista clients via gRPC metadata) or as
//! the `quiver_token` cookie the UI's login form sets. gRPC calls that submit,
//! follow or cancel queries need it too; the calls executors make (register,
//! heartbeat, task status) and shuffle/result fetches do not, since executors
//! hold no token — keep the cluster's network private. Arrow Flight passes
//! this layer: [`crate::flight`] checks the token on every Flight SQL call
//! itself, since result fetches share its gRPC service.
//!
//! The token is compared in constant time and never logged or shown.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use quiver_core::api::ErrorBody;

/// Name of the cookie the UI login sets.
pub const COOKIE: &str = "quiver_token";

/// The configured token, if any.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("enabled", &self.token.is_some()).finish()
    }
}

impl Auth {
    /// Access control with `token` (`None`: everything is open).
    pub fn new(token: Option<String>) -> Self {
        let token = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        if let Some(t) = &token {
            quiver_core::secret::register(t);
        }
        Self { token }
    }

    /// True when a token is required.
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// True when `candidate` is the token (or no token is required).
    pub fn accepts(&self, candidate: Option<&str>) -> bool {
        match (&self.token, candidate) {
            (None, _) => true,
            (Some(t), Some(c)) => constant_time_eq(t.as_bytes(), c.as_bytes()),
            (Some(_), None) => false,
        }
    }

    /// The token a request presents: bearer header, then cookie.
    pub fn presented(headers: &HeaderMap) -> Option<String> {
        if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
            && let Some(t) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim().to_owned());
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.to_owned())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// gRPC methods executors call; they carry no token.
const EXECUTOR_METHODS: &[&str] = &[
    "/ballista.protobuf.SchedulerGrpc/PollWork",
    "/ballista.protobuf.SchedulerGrpc/RegisterExecutor",
    "/ballista.protobuf.SchedulerGrpc/HeartBeatFromExecutor",
    "/ballista.protobuf.SchedulerGrpc/UpdateTaskStatus",
    "/ballista.protobuf.SchedulerGrpc/ExecutorStopped",
];

fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/ui/login" | "/favicon.ico")
        || path.starts_with("/ui/static/")
        || EXECUTOR_METHODS.contains(&path)
        || path.starts_with("/arrow.flight.protocol.FlightService/")
}

/// Middleware: refuses requests without the token.
pub async fn require_token(State(auth): State<Auth>, request: Request<Body>, next: Next) -> Response {
    if !auth.enabled() || is_open(request.uri().path()) {
        return next.run(request).await;
    }
    if auth.accepts(Auth::presented(request.headers()).as_deref()) {
        return next.run(request).await;
    }
    let path = request.uri().path();
    if path == "/" || path.starts_with("/ui") {
        let back = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let target = format!("/ui/login?next={}", url_escape(back));
        return Redirect::to(&target).into_response();
    }
    let is_grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if is_grpc {
        // gRPC status 16: UNAUTHENTICATED.
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header("grpc-status", "16")
            .header("grpc-message", "missing%20or%20wrong%20Quiver%20access%20token")
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::UNAUTHORIZED.into_response());
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(ErrorBody {
            error: "this scheduler requires an access token: send 'Authorization: Bearer <token>' \
                    (the CLI reads QUIVER_TOKEN)"
                .into(),
        }),
    )
        .into_response()
}

pub(crate) fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_are_read_from_header_or_cookie() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(Auth::presented(&h).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; quiver_token=xyz"));
        assert_eq!(Auth::presented(&h).as_deref(), Some("xyz"));
    }

    #[test]
    fn only_the_token_is_accepted() {
        let auth = Auth::new(Some("s3cret-token".into()));
        assert!(auth.accepts(Some("s3cret-token")));
        assert!(!auth.accepts(Some("s3cret-tokem")));
        assert!(!auth.accepts(None));
        assert!(Auth::new(None).accepts(None));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn probes_and_executor_calls_are_open() {
        assert!(is_open("/healthz"));
        assert!(is_open("/ui/static/app.js"));
        assert!(is_open("/ballista.protobuf.SchedulerGrpc/HeartBeatFromExecutor"));
        assert!(!is_open("/ballista.protobuf.SchedulerGrpc/ExecuteQuery"));
        assert!(!is_open("/api/v1/jobs"));
    }
}
