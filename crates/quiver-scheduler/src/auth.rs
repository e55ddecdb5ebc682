//! Access control: one shared token guards the REST API, the UI and job submission.
//!
//! With a token configured (`QUIVER_TOKEN`, or `--token-file`), every request
//! except the health probes must carry it, as `Authorization: Bearer <token>`
//! (the CLI, the Airflow provider, Ballista clients via gRPC metadata) or as
//! the `quiver_token` cookie the UI's login form sets. gRPC calls that submit,
//! follow or cancel queries need it too. The calls executors make (register,
//! heartbeat, task status, poll, stop) carry no token; with a cluster secret
//! configured they must carry its proof instead
//! ([`quiver_core::cluster_secret`]). Arrow Flight passes this layer:
//! [`crate::flight`] checks the token on every Flight SQL call itself, since
//! result fetches share its gRPC service; those fetches (Ballista's, which
//! carry no metadata) must carry a proof of the token in their user agent.
//!
//! The token is never logged or shown, and never compared as itself: the
//! scheduler keeps its SHA-256 digest and compares digests in constant time,
//! so neither the token's bytes nor its length leak through timing. The UI's
//! cookie holds a value derived from the token, not the token: it opens the
//! UI and REST (for the UI's own calls) for [`SESSION_MAX_AGE`], and cannot be
//! turned back into the token a CLI or DAG uses.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use quiver_core::api::ErrorBody;
use quiver_core::cluster_secret::ClusterSecret;
use quiver_core::proof::{Proof, ProofKind};
use quiver_core::secret::Digest;

/// Name of the cookie the UI login sets.
pub const COOKIE: &str = "quiver_token";

/// How long a UI sign-in lasts.
pub const SESSION_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// What the UI cookie's value is derived with, so it differs from the token.
const SESSION_LABEL: &[u8] = b"quiver-ui-session\0";

/// The configured token, kept only as digests, and the cluster secret
/// executors prove they hold.
#[derive(Clone, Default)]
pub struct Auth {
    /// SHA-256 of the token.
    token: Option<Digest>,
    /// The UI cookie's value (derived from the token) and its SHA-256.
    session: Option<(String, Digest)>,
    /// What executor calls must carry.
    cluster: Option<ClusterSecret>,
    /// What result fetches through the Flight proxy must carry: a proof of
    /// the token ([`quiver_core::proof`]).
    fetch: Option<Proof>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("enabled", &self.token.is_some()).finish()
    }
}

/// How a request presents its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// `Authorization: Bearer <token>`: the token itself.
    Bearer(String),
    /// The UI's cookie: the session value the login set.
    Cookie(String),
}

impl Auth {
    /// Access control with `token` (`None`: everything is open).
    pub fn new(token: Option<String>) -> Self {
        let token = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Self::default();
        };
        quiver_core::secret::register(&token);
        let session = Digest::of(&[SESSION_LABEL, token.as_bytes()]).hex();
        quiver_core::secret::register(&session);
        let session_digest = Digest::of(&[session.as_bytes()]);
        Self {
            token: Some(Digest::of(&[token.as_bytes()])),
            session: Some((session, session_digest)),
            fetch: Some(Proof::derive(ProofKind::ResultFetch, &token)),
            cluster: None,
        }
    }

    /// The same access control, with executor calls requiring `secret`.
    pub fn with_cluster_secret(self, secret: Option<ClusterSecret>) -> Self {
        Self {
            cluster: secret,
            ..self
        }
    }

    /// The cluster secret executors must prove they hold, if any.
    pub fn cluster_secret(&self) -> Option<&ClusterSecret> {
        self.cluster.as_ref()
    }

    /// True when an executor call with these headers may proceed: there is
    /// no cluster secret, or the call proves it holds it.
    fn admits_executor(&self, headers: &HeaderMap) -> bool {
        match &self.cluster {
            None => true,
            Some(secret) => headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ua| secret.accepts_user_agent(ua)),
        }
    }

    /// True when a result fetch through the Flight proxy with this user
    /// agent may proceed: no token is required, or it carries the token's
    /// proof (Quiver's clients send it when given the token).
    pub fn admits_fetch(&self, user_agent: Option<&str>) -> bool {
        match &self.fetch {
            None => true,
            Some(proof) => user_agent.is_some_and(|ua| proof.accepts_user_agent(ua)),
        }
    }

    /// True when a token is required.
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// True when `candidate` is the token (or no token is required).
    pub fn accepts(&self, candidate: Option<&str>) -> bool {
        match (&self.token, candidate) {
            (None, _) => true,
            (Some(t), Some(c)) => t.matches(&Digest::of(&[c.as_bytes()])),
            (Some(_), None) => false,
        }
    }

    /// True when `presented` opens this scheduler: the token as a bearer, or
    /// the UI's session value as the cookie.
    pub fn accepts_presented(&self, presented: Option<&Presented>) -> bool {
        match (&self.token, &self.session, presented) {
            (None, _, _) => true,
            (Some(_), _, Some(Presented::Bearer(t))) => self.accepts(Some(t)),
            (Some(_), Some((_, s)), Some(Presented::Cookie(c))) => s.matches(&Digest::of(&[c.as_bytes()])),
            _ => false,
        }
    }

    /// The `Set-Cookie` value a successful UI login sends.
    pub fn login_cookie(&self) -> Option<String> {
        let (value, _) = self.session.as_ref()?;
        Some(format!(
            "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_MAX_AGE.as_secs()
        ))
    }

    /// The `Set-Cookie` value that signs the UI out.
    pub fn logout_cookie() -> String {
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }

    /// The credential a request presents: bearer header, then cookie.
    pub fn presented(headers: &HeaderMap) -> Option<Presented> {
        if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
            && let Some(t) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))
        {
            return Some(Presented::Bearer(t.trim().to_owned()));
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| Presented::Cookie(v.to_owned()))
    }
}

/// gRPC methods executors call: they carry no token, but the cluster
/// secret's proof when the cluster has one.
const EXECUTOR_METHODS: &[&str] = &[
    "/ballista.protobuf.SchedulerGrpc/PollWork",
    "/ballista.protobuf.SchedulerGrpc/RegisterExecutor",
    "/ballista.protobuf.SchedulerGrpc/HeartBeatFromExecutor",
    "/ballista.protobuf.SchedulerGrpc/UpdateTaskStatus",
    "/ballista.protobuf.SchedulerGrpc/ExecutorStopped",
];

fn is_open(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/ui/login" | "/ui/logout" | "/favicon.ico"
    ) || path.starts_with("/ui/static/")
        || path.starts_with("/arrow.flight.protocol.FlightService/")
}

/// A gRPC refusal: HTTP 200 with `grpc-status` 16, UNAUTHENTICATED.
fn grpc_unauthenticated(message: &str) -> Response {
    grpc_refusal(tonic::Code::Unauthenticated, message)
}

/// A gRPC refusal with `code`, answered before the call reaches its service.
pub(crate) fn grpc_refusal(code: tonic::Code, message: &str) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("grpc-status", (code as i32).to_string())
        .header("grpc-message", url_escape(message))
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::UNAUTHORIZED.into_response())
}

/// Middleware: refuses executor calls without the cluster secret's proof,
/// and everything else but probes without the token.
pub async fn require_token(State(auth): State<Auth>, request: Request<Body>, next: Next) -> Response {
    let path = request.uri().path();
    if EXECUTOR_METHODS.contains(&path) {
        if auth.admits_executor(request.headers()) {
            return next.run(request).await;
        }
        tracing::warn!(method = %path, "executor call refused: it does not prove it holds the cluster secret");
        return grpc_unauthenticated(
            "this cluster requires its cluster secret from executors: set QUIVER_CLUSTER_SECRET \
             (or --cluster-secret-file) on this executor to the scheduler's",
        );
    }
    if !auth.enabled() || is_open(path) {
        return next.run(request).await;
    }
    if auth.accepts_presented(Auth::presented(request.headers()).as_ref()) {
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
        return grpc_unauthenticated("missing or wrong Quiver access token");
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
        assert_eq!(Auth::presented(&h), Some(Presented::Bearer("abc".into())));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; quiver_token=xyz"));
        assert_eq!(Auth::presented(&h), Some(Presented::Cookie("xyz".into())));
    }

    #[test]
    fn the_ui_cookie_is_not_the_token_and_opens_only_as_a_cookie() {
        let auth = Auth::new(Some("s3cret-token".into()));
        let cookie = auth.login_cookie().unwrap();
        assert!(
            !cookie.contains("s3cret-token") && cookie.contains("Max-Age=43200"),
            "{cookie}"
        );
        let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
        assert!(auth.accepts_presented(Some(&Presented::Cookie(value.clone()))));
        assert!(!auth.accepts_presented(Some(&Presented::Bearer(value))));
        assert!(!auth.accepts_presented(Some(&Presented::Cookie("s3cret-token".into()))));
        assert!(auth.accepts_presented(Some(&Presented::Bearer("s3cret-token".into()))));
        assert!(Auth::logout_cookie().contains("Max-Age=0"));
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
        assert!(!is_open("/ballista.protobuf.SchedulerGrpc/ExecuteQuery"));
        assert!(!is_open("/api/v1/jobs"));
    }
}
