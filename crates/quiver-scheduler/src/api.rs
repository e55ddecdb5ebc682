//! The REST API: submit, follow, cancel and inspect jobs; the cluster; metrics.
//!
//! Every route is under `/api/v1` and described by the OpenAPI document at
//! `/api/v1/openapi.json`. Errors are JSON `{"error": "..."}` with a status
//! that says whose fault it was (400 bad request, 404 unknown job, 409 wrong
//! state, 401 missing token, 500 the scheduler's own trouble).

use std::sync::Arc;

use arrow::ipc::writer::StreamWriter;
use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use quiver_core::api::{
    CloseSession, ClusterOverview, ErrorBody, ExecutorInfo, JobDetail, JobList, JobSource, JobState, JobSummary,
    OpenSession, OpenedSession, ResultPreview, SubmitJob,
};
use quiver_core::output::{OutputFormat, render};
use serde::Deserialize;
use utoipa::OpenApi;

use crate::SchedulerServer;
use crate::cluster::ClusterView;
use crate::jobs::{JobError, JobFilter, JobService};
use crate::metrics::SchedulerMetrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The job service.
    pub jobs: Arc<JobService>,
    /// Executors past and present.
    pub cluster: Arc<ClusterView>,
    /// The distributed scheduler.
    pub scheduler: SchedulerServer,
    /// Prometheus metrics.
    pub metrics: SchedulerMetrics,
    /// Access control.
    pub auth: crate::auth::Auth,
}

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with a status and a message for the caller.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        let status = match &e {
            JobError::BadRequest(_) => StatusCode::BAD_REQUEST,
            JobError::NotFound(_) => StatusCode::NOT_FOUND,
            JobError::Conflict(_) => StatusCode::CONFLICT,
            JobError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            JobError::History(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The largest request body a route reads (axum's default limit).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// A body that is not the JSON a route takes: 400 with what is wrong, or 413
/// when it is larger than [`MAX_BODY_BYTES`].
fn bad_json(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} MiB; keep scripts short and read large inputs from storage",
                MAX_BODY_BYTES / (1024 * 1024)
            ),
        );
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("invalid request body: {}", rejection.body_text()),
    )
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Quiver scheduler API",
        description = "Submit SQL jobs, follow them, cancel them, read their results, and inspect the cluster. \
                       When the scheduler runs with an access token, send it as `Authorization: Bearer <token>`."
    ),
    paths(
        submit_job,
        list_jobs,
        get_job,
        cancel_job,
        get_result,
        open_session,
        session_heartbeat,
        close_session,
        get_cluster,
        list_executors
    ),
    components(schemas(
        SubmitJob,
        JobSummary,
        JobDetail,
        JobList,
        JobState,
        JobSource,
        ResultPreview,
        OpenSession,
        OpenedSession,
        CloseSession,
        ClusterOverview,
        ExecutorInfo,
        ErrorBody
    ))
)]
struct ApiDoc;

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The routes under `/api/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(|| async { Json(openapi()) }))
        .route("/api/v1/jobs", post(submit_job).get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/jobs/{id}/result", get(get_result))
        .route("/api/v1/sessions", post(open_session))
        .route("/api/v1/sessions/{id}/heartbeat", post(session_heartbeat))
        .route("/api/v1/sessions/{id}/close", post(close_session))
        .route("/api/v1/cluster", get(get_cluster))
        .route("/api/v1/executors", get(list_executors))
        .route("/metrics", get(get_metrics))
}

/// Submit a SQL script; the scheduler runs it as a job.
#[utoipa::path(post, path = "/api/v1/jobs", request_body = SubmitJob,
    responses((status = 201, body = JobSummary), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn submit_job(
    State(app): State<AppState>,
    request: Result<Json<SubmitJob>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<JobSummary>)> {
    let Json(request) = request.map_err(bad_json)?;
    let summary = app.jobs.submit_script(request).await?;
    Ok((StatusCode::CREATED, Json(summary)))
}

/// Filters and paging of the jobs list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct ListQuery {
    /// Only jobs in this state.
    state: Option<String>,
    /// Only jobs from this source.
    source: Option<String>,
    /// Only jobs whose name or id contains this.
    q: Option<String>,
    /// Only jobs submitted at or after this time (ms since epoch).
    since: Option<u64>,
    /// Only jobs submitted before this time (ms since epoch).
    until: Option<u64>,
    /// Page offset.
    offset: Option<usize>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<usize>,
}

pub(crate) fn filter_from(
    state: Option<&str>,
    source: Option<&str>,
    q: Option<&str>,
    since: Option<u64>,
    until: Option<u64>,
    offset: Option<usize>,
    limit: Option<usize>,
) -> Result<JobFilter, ApiError> {
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
    Ok(JobFilter {
        state: state
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .transpose()
            .map_err(bad)?,
        source: source
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .transpose()
            .map_err(bad)?,
        search: q.filter(|s| !s.is_empty()).map(str::to_owned),
        since,
        until,
        offset: offset.unwrap_or(0),
        limit: limit.unwrap_or(JobFilter::DEFAULT_LIMIT),
    })
}

/// List jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody)))]
async fn list_jobs(State(app): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult<Json<JobList>> {
    let filter = filter_from(
        q.state.as_deref(),
        q.source.as_deref(),
        q.q.as_deref(),
        q.since,
        q.until,
        q.offset,
        q.limit,
    )?;
    Ok(Json(app.jobs.list(&filter)))
}

/// Everything about a job: statements, queries, stages, tasks.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = JobDetail), (status = 404, body = ErrorBody)))]
async fn get_job(State(app): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<JobDetail>> {
    Ok(Json(app.jobs.detail(&id).await?))
}

/// Cancel a job; its running tasks stop and it ends `cancelled`.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = JobSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_job(State(app): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<JobSummary>> {
    Ok(Json(app.jobs.cancel(&id).await?))
}

/// Which result and how.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct ResultQuery {
    /// Statement number (1-based); the last query of the job when absent.
    statement: Option<usize>,
    /// Rows at most (JSON preview only; default 100).
    limit: Option<usize>,
    /// `json` (a preview), `csv`, or `arrow` (an Arrow IPC stream of all stored rows).
    format: Option<String>,
}

/// A statement's result: a JSON preview, or all stored rows as CSV or Arrow.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/result", params(("id" = String, Path, description = "job id"), ResultQuery),
    responses((status = 200, body = ResultPreview), (status = 404, body = ErrorBody)))]
async fn get_result(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ResultQuery>,
) -> ApiResult<Response> {
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(app.jobs.preview(&id, q.statement, q.limit.unwrap_or(100)).await?).into_response()),
        "csv" => {
            let (_, schema, batches, _) = app.jobs.result(&id, q.statement).await?;
            let text = render(OutputFormat::Csv, &schema, &batches)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response())
        }
        "arrow" => {
            let (index, schema, batches, truncated) = app.jobs.result(&id, q.statement).await?;
            let mut buf = Vec::new();
            {
                let internal =
                    |e: arrow::error::ArrowError| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
                let mut w = StreamWriter::try_new(&mut buf, &schema).map_err(internal)?;
                for b in &batches {
                    w.write(b).map_err(internal)?;
                }
                w.finish().map_err(internal)?;
            }
            Ok((
                [
                    (header::CONTENT_TYPE, "application/vnd.apache.arrow.stream".to_owned()),
                    (header::HeaderName::from_static("x-quiver-statement"), index.to_string()),
                    (
                        header::HeaderName::from_static("x-quiver-truncated"),
                        truncated.to_string(),
                    ),
                ],
                buf,
            )
                .into_response())
        }
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown format '{other}': use json, csv or arrow"),
        )),
    }
}

/// Open a client session (a shell or a DataFrame program) as a job.
#[utoipa::path(post, path = "/api/v1/sessions", request_body = OpenSession,
    responses((status = 201, body = OpenedSession), (status = 400, body = ErrorBody)))]
async fn open_session(
    State(app): State<AppState>,
    request: Result<Json<OpenSession>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<OpenedSession>)> {
    let Json(request) = request.map_err(bad_json)?;
    Ok((StatusCode::CREATED, Json(app.jobs.open_session(request).await?)))
}

/// Tell the scheduler a session is alive (every few seconds).
#[utoipa::path(post, path = "/api/v1/sessions/{id}/heartbeat", params(("id" = String, Path, description = "job id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn session_heartbeat(State(app): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    app.jobs.heartbeat(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// End a session: succeeded, or failed with an error.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/close", params(("id" = String, Path, description = "job id")),
    request_body = CloseSession, responses((status = 200, body = JobSummary), (status = 404, body = ErrorBody)))]
async fn close_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<CloseSession>>,
) -> ApiResult<Json<JobSummary>> {
    let error = body.and_then(|Json(b)| b.error);
    Ok(Json(app.jobs.close_session(&id, error).await?))
}

/// The cluster at a glance.
#[utoipa::path(get, path = "/api/v1/cluster", responses((status = 200, body = ClusterOverview)))]
async fn get_cluster(State(app): State<AppState>) -> Json<ClusterOverview> {
    Json(app.cluster.overview(&app.scheduler, &app.jobs).await)
}

/// Executors, alive and lost.
#[utoipa::path(get, path = "/api/v1/executors", responses((status = 200, body = Vec<ExecutorInfo>)))]
async fn list_executors(State(app): State<AppState>) -> Json<Vec<ExecutorInfo>> {
    Json(app.cluster.executors(&app.scheduler, &app.jobs).await)
}

async fn get_metrics(State(app): State<AppState>) -> impl IntoResponse {
    let overview = app.cluster.overview(&app.scheduler, &app.jobs).await;
    app.metrics.set_cluster(
        overview.executors_alive,
        app.jobs.running_tasks(),
        overview.jobs_running,
        overview.jobs_queued,
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
