//! The web UI, served by the scheduler under `/ui`: what the Spark UI shows.
//!
//! Pages are rendered on the server with `maud` from the same records the
//! REST API returns; the only script (`static/app.js`) refreshes a page while
//! its job runs. Every asset is compiled into the binary: the UI works with
//! no network beyond the scheduler.
//!
//! | page | route |
//! |---|---|
//! | overview: executors, slots, running and queued jobs | `/ui` |
//! | jobs, with filters and paging | `/ui/jobs` |
//! | one job: SQL, statements, stage graph, stages, tasks, plans, result | `/ui/jobs/{id}` |
//! | executors, alive and lost | `/ui/executors` |
//! | login (when a token is required) | `/ui/login` |

mod dag;
mod format;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use quiver_core::api::{ExecutorInfo, JobDetail, JobSummary, Progress, QueryInfo, StageInfo};
use serde::Deserialize;

use quiver_core::script::short_first_line;

use crate::api::{AppState, filter_from};
use crate::auth::Auth;
use crate::jobs::JobError;
use format::{ago, bytes, count, duration, percent, time};

const CSS: &str = include_str!("static/app.css");
const JS: &str = include_str!("static/app.js");
const ICON: &str = include_str!("static/favicon.svg");
/// Jobs per page of the jobs list.
const PAGE: usize = 50;
/// Tasks shown per stage before the table is cut.
const MAX_TASKS: usize = 500;

/// The UI's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(overview_get))
        .route("/ui/jobs", get(jobs_get))
        .route("/ui/jobs/{id}", get(job_get))
        .route("/ui/jobs/{id}/cancel", post(job_cancel_post))
        .route("/ui/executors", get(executors_get))
        .route("/ui/login", get(login_get).post(login_post))
        .route("/ui/logout", get(logout).post(logout))
        .route(
            "/ui/static/app.css",
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/ui/static/app.js",
            get(|| async { asset(JS, "text/javascript; charset=utf-8") }),
        )
        .route("/ui/static/favicon.svg", get(|| async { asset(ICON, "image/svg+xml") }))
        .route("/favicon.ico", get(|| async { asset(ICON, "image/svg+xml") }))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        body,
    )
        .into_response()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Overview,
    Jobs,
    Executors,
    None,
}

/// The frame every page shares. `live` pages refresh themselves.
fn page(title: &str, nav: Nav, live: bool, body: Markup) -> Html<String> {
    let link = |target: Nav, href: &str, label: &str| {
        html! { a href=(href) class=[(nav == target).then_some("active")] { (label) } }
    };
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · Quiver" }
                    link rel="icon" href="/ui/static/favicon.svg" type="image/svg+xml";
                    link rel="stylesheet" href="/ui/static/app.css";
                    script src="/ui/static/app.js" defer {}
                }
                body {
                    header.top {
                        a.brand href="/ui" { "Quiver" }
                        nav {
                            (link(Nav::Overview, "/ui", "Overview"))
                            (link(Nav::Jobs, "/ui/jobs", "Jobs"))
                            (link(Nav::Executors, "/ui/executors", "Executors"))
                            a href="/api/v1/openapi.json" { "API" }
                        }
                        span.version { "v" (env!("CARGO_PKG_VERSION")) }
                    }
                    main #main data-live=(live) { (body) }
                }
            }
        }
        .into_string(),
    )
}

fn state_badge(state: &str) -> Markup {
    html! { span class={"badge state-" (state)} { (state) } }
}

fn progress_bar(p: &Progress) -> Markup {
    let pct = percent(p.tasks_done, p.tasks_total);
    html! {
        div.progress title={(p.tasks_done) " of " (p.tasks_total) " tasks, " (p.stages_done) " of " (p.stages_total) " stages"} {
            div.bar style={"width:" (pct) "%"} {}
            @if p.tasks_running > 0 {
                div.running style={"width:" (percent(p.tasks_running, p.tasks_total)) "%"} {}
            }
            span.label { (p.tasks_done) "/" (p.tasks_total) " tasks" }
        }
    }
}

fn error_box(error: &str) -> Markup {
    html! { div.error-box { strong { "Error" } pre { (error) } } }
}

fn jobs_table(jobs: &[JobSummary]) -> Markup {
    html! {
        table.jobs {
            thead { tr {
                th { "Job" } th { "Name" } th { "Source" } th { "State" } th { "Submitted" }
                th { "Duration" } th.wide { "Progress" } th.num { "Queries" }
            } }
            tbody {
                @for j in jobs {
                    tr {
                        td { a href={"/ui/jobs/" (j.id)} { (j.id) } }
                        td { (j.name) }
                        td { (j.source) }
                        td { (state_badge(j.state.as_str())) }
                        td { (time(Some(j.submitted_at))) }
                        td { (duration(j.duration_ms)) }
                        td { (progress_bar(&j.progress)) }
                        td.num { (j.query_count) }
                    }
                }
                @if jobs.is_empty() {
                    tr { td colspan="8" .empty { "No jobs." } }
                }
            }
        }
    }
}

async fn overview_get(State(app): State<AppState>) -> Html<String> {
    let overview = app.cluster.overview(&app.scheduler, &app.jobs).await;
    let (running, recent) = app.jobs.unfinished_and_recent(10);
    let body = html! {
        h1 { "Cluster" }
        div.cards {
            div.card { div.big { (overview.executors_alive) } div { "executors alive" } }
            div.card class=[(overview.executors_lost > 0).then_some("warn")] { div.big { (overview.executors_lost) } div { "executors lost" } }
            div.card { div.big { (overview.slots_used) " / " (overview.slots_total) } div { "task slots used" } }
            div.card { div.big { (overview.jobs_running) } div { "jobs running" } }
            div.card { div.big { (overview.jobs_queued) } div { "jobs queued" } }
            div.card { div.big { (overview.jobs_total) } div { "jobs in history" } }
        }
        p.muted { "Scheduler up since " (time(Some(overview.started_at))) ", Quiver " (overview.version) "." }
        h2 { "Running and queued jobs" }
        (jobs_table(&running))
        h2 { "Recently finished" }
        (jobs_table(&recent))
        p { a href="/ui/jobs" { "All jobs →" } }
    };
    page("Overview", Nav::Overview, true, body)
}

#[derive(Debug, Deserialize)]
struct JobsQuery {
    state: Option<String>,
    source: Option<String>,
    q: Option<String>,
    offset: Option<usize>,
}

async fn jobs_get(State(app): State<AppState>, Query(q): Query<JobsQuery>) -> Response {
    let filter = match filter_from(
        q.state.as_deref(),
        q.source.as_deref(),
        q.q.as_deref(),
        None,
        None,
        q.offset,
        Some(PAGE),
    ) {
        Ok(f) => f,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                page(
                    "Jobs",
                    Nav::Jobs,
                    false,
                    html! { (error_box("unknown state or source in the filter")) },
                ),
            )
                .into_response();
        }
    };
    let list = app.jobs.list(&filter);
    let any_running = list.jobs.iter().any(|j| !j.state.is_terminal());
    let selected = |current: &Option<String>, value: &str| current.as_deref() == Some(value);
    let link_at = |offset: usize| {
        let mut params = vec![format!("offset={offset}")];
        for (k, v) in [("state", &q.state), ("source", &q.source), ("q", &q.q)] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                params.push(format!("{k}={}", crate::auth::url_escape(v)));
            }
        }
        format!("/ui/jobs?{}", params.join("&"))
    };
    let body = html! {
        h1 { "Jobs" }
        form.filters method="get" action="/ui/jobs" {
            input type="search" name="q" placeholder="name or id" value=[q.q.as_deref()];
            select name="state" {
                option value="" { "any state" }
                @for s in ["queued", "running", "succeeded", "failed", "cancelled"] {
                    option value=(s) selected[selected(&q.state, s)] { (s) }
                }
            }
            select name="source" {
                option value="" { "any source" }
                @for s in ["submit", "rest", "shell", "dataframe", "client"] {
                    option value=(s) selected[selected(&q.source, s)] { (s) }
                }
            }
            button type="submit" { "Filter" }
        }
        p.muted { (list.total) " jobs" @if list.total > 0 { ", showing " (list.offset + 1) "–" (list.offset + list.jobs.len()) } }
        (jobs_table(&list.jobs))
        div.pager {
            @if list.offset > 0 { a href=(link_at(list.offset.saturating_sub(PAGE))) { "← Newer" } }
            @if list.offset + list.jobs.len() < list.total { a href=(link_at(list.offset + PAGE)) { "Older →" } }
        }
    };
    page("Jobs", Nav::Jobs, any_running, body).into_response()
}

fn stage_table(stages: &[StageInfo]) -> Markup {
    html! {
        table.stages {
            thead { tr {
                th { "Stage" } th { "State" } th.wide { "Tasks" } th.num { "Rows in" } th.num { "Rows out" }
                th.num { "Bytes read" } th.num { "Shuffle read" } th.num { "Shuffle write" } th.num { "Spill" } th.num { "CPU time" }
            } }
            tbody {
                @for s in stages {
                    tr {
                        td { a href={"#stage-" (s.id)} { (s.id) } }
                        td { (state_badge(s.state.as_str())) }
                        td { (progress_bar(&s.progress)) }
                        td.num { (count(s.metrics.input_rows)) }
                        td.num { (count(s.metrics.output_rows)) }
                        td.num { (bytes(s.metrics.bytes_read)) }
                        td.num { (bytes(s.metrics.shuffle_read_bytes)) }
                        td.num { (bytes(s.metrics.shuffle_write_bytes)) " (" (count(s.metrics.shuffle_write_rows)) " rows)" }
                        td.num { (bytes(s.metrics.spill_bytes)) }
                        td.num { (duration(Some(s.metrics.compute_ms))) }
                    }
                }
            }
        }
    }
}

fn task_table(stage: &StageInfo) -> Markup {
    html! {
        table.tasks {
            thead { tr {
                th { "Task" } th { "Partitions" } th { "Executor" } th.num { "Attempt" } th { "State" }
                th { "Started" } th.num { "Duration" } th { "Error" }
            } }
            tbody {
                @for t in stage.tasks.iter().take(MAX_TASKS) {
                    tr {
                        td { (t.id) }
                        td { (t.partitions.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")) }
                        td { (t.executor_id.as_deref().unwrap_or("–")) }
                        td.num { (t.attempt) }
                        td { (state_badge(t.state.as_str())) }
                        td { (time(t.started_at)) }
                        td.num { (duration(t.duration_ms)) }
                        td.error-cell { (t.error.as_deref().unwrap_or("")) }
                    }
                }
                @if stage.tasks.is_empty() {
                    tr { td colspan="8" .empty { "No task has started yet." } }
                }
            }
        }
        @if stage.tasks.len() > MAX_TASKS {
            p.muted { "Showing " (MAX_TASKS) " of " (stage.tasks.len()) " tasks; all are in the API: /api/v1/jobs/{id}." }
        }
    }
}

fn query_section(q: &QueryInfo) -> Markup {
    let ran = q.finished_at.zip(q.started_at).map(|(f, s)| f.saturating_sub(s));
    html! {
        section.query id={"query-" (q.id)} {
            h3 {
                "Query " (q.id) " "
                (state_badge(q.state.as_str()))
                @if let Some(n) = q.statement { span.muted { " statement " (n) } }
                span.muted { " · " (duration(ran)) }
            }
            @if let Some(e) = &q.error { (error_box(e)) }
            @if !q.stages.is_empty() {
                div.dag-wrap { (PreEscaped(dag::render(&q.stages))) }
                (stage_table(&q.stages))
            }
            @for s in &q.stages {
                details.stage id={"stage-" (s.id)} {
                    summary {
                        "Stage " (s.id) " " (state_badge(s.state.as_str()))
                        span.muted { " · " (s.partitions) " partitions · " (s.tasks.len()) " tasks"
                            @if !s.inputs.is_empty() { " · reads stage " (s.inputs.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")) } }
                    }
                    @if let Some(e) = &s.error { (error_box(e)) }
                    h4 { "Physical plan with metrics" }
                    pre.plan { (s.plan) }
                    h4 { "Tasks" }
                    (task_table(s))
                }
            }
            @if let Some(plan) = &q.logical_plan {
                details.plan { summary { "Logical plan" } pre.plan { (plan) } }
            }
        }
    }
}

async fn job_get(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let detail: JobDetail = match app.jobs.detail(&id).await {
        Ok(d) => d,
        Err(e @ JobError::NotFound(_)) => {
            return (
                StatusCode::NOT_FOUND,
                page(
                    "Job not found",
                    Nav::Jobs,
                    false,
                    html! { h1 { "Job not found" } (error_box(&e.to_string())) p { a href="/ui/jobs" { "All jobs" } } },
                ),
            )
                .into_response();
        }
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                page("Error", Nav::Jobs, false, error_box(&e.to_string())),
            )
                .into_response();
        }
    };
    let s = &detail.summary;
    let preview = if s.state.is_terminal() && detail.statements.iter().any(|st| st.result_rows.is_some()) {
        app.jobs.preview(&id, None, 20).await.ok()
    } else {
        None
    };
    let body = html! {
        div.title-row {
            h1 { (s.name) " " (state_badge(s.state.as_str())) }
            @if !s.state.is_terminal() {
                form method="post" action={"/ui/jobs/" (s.id) "/cancel"} data-confirm="Cancel this job?" {
                    button.danger type="submit" { "Cancel job" }
                }
            }
        }
        dl.facts {
            dt { "Job" } dd { code { (s.id) } }
            dt { "Source" } dd { (s.source) }
            dt { "Submitted" } dd { (time(Some(s.submitted_at))) }
            dt { "Started" } dd { (time(s.started_at)) }
            dt { "Finished" } dd { (time(s.finished_at)) }
            dt { "Duration" } dd { (duration(s.duration_ms)) }
            dt { "Stages" } dd { (s.progress.stages_done) " of " (s.progress.stages_total) " done" }
            dt { "Rows read" } dd { (count(s.progress.rows_read)) " (" (bytes(s.progress.bytes_read)) ")" }
            dt { "Rows written" } dd { (count(s.progress.rows_written))
                @if s.progress.bytes_written > 0 { " (" (bytes(s.progress.bytes_written)) ")" } }
        }
        (progress_bar(&s.progress))
        @if let Some(e) = &s.error { (error_box(e)) }
        @if !detail.statements.is_empty() {
            h2 { "Statements" }
            table.statements {
                thead { tr { th.num { "#" } th.num { "Line" } th { "State" } th { "Statement" } th { "Outcome" } th.num { "Time" } } }
                tbody {
                    @for st in &detail.statements {
                        tr {
                            td.num { (st.index) }
                            td.num { (st.line) }
                            td { (state_badge(st.state.as_str())) }
                            td { code { (short_first_line(&st.sql, 100)) } }
                            td { @if let Some(e) = &st.error { span.error-cell { (e) } } @else { (st.summary.as_deref().unwrap_or("")) } }
                            td.num { (duration(st.finished_at.zip(st.started_at).map(|(f, b)| f.saturating_sub(b)))) }
                        }
                    }
                }
            }
        }
        @if let Some(p) = &preview {
            h2 { "Result of statement " (p.statement) }
            p.muted { (count(p.total_rows)) " rows" @if p.truncated { " (cut at the scheduler's row or byte limit)" } "; first " (p.rows.len()) " shown. "
                a href={"/api/v1/jobs/" (s.id) "/result?format=csv&statement=" (p.statement)} { "Download CSV" } }
            table.result {
                thead { tr { @for c in &p.columns { th { (c) } } } }
                tbody { @for row in &p.rows { tr { @for c in &p.columns { td { (json_cell(row.get(c))) } } } } }
            }
        }
        @if !detail.outputs.is_empty() {
            h2 { "Written to" }
            ul { @for o in &detail.outputs { li { code { (o) } } } }
        }
        @if let Some(sql) = &detail.sql {
            details.sql open { summary { "SQL" } pre.sql { (sql) } }
        }
        @if !detail.params.is_empty() || !detail.conf.is_empty() {
            details { summary { "Parameters and settings" }
                table { tbody {
                    @for (k, v) in &detail.params { tr { td { "${" (k) "}" } td { code { (v) } } } }
                    @for (k, v) in &detail.conf { tr { td { (k) } td { code { (v) } } } }
                } }
            }
        }
        h2 { "Queries" }
        @if detail.queries.is_empty() { p.muted { "No query has run on the cluster yet." } }
        @for q in &detail.queries { (query_section(q)) }
    };
    page(&format!("{} {}", s.name, s.id), Nav::Jobs, !s.state.is_terminal(), body).into_response()
}

fn json_cell(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "NULL".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

async fn job_cancel_post(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    match app.jobs.cancel(&id).await {
        Ok(_) | Err(JobError::Conflict(_)) => Redirect::to(&format!("/ui/jobs/{id}")).into_response(),
        Err(e) => (
            StatusCode::NOT_FOUND,
            page("Cancel", Nav::Jobs, false, error_box(&e.to_string())),
        )
            .into_response(),
    }
}

fn executor_row(e: &ExecutorInfo) -> Markup {
    html! {
        tr {
            td { code { (e.id) } }
            td { (e.host) ":" (e.port) }
            td { (state_badge(e.state.as_str())) }
            td.num { (e.slots - e.free_slots) " / " (e.slots) }
            td.num { (e.running_tasks) }
            td.num { (e.finished_tasks) }
            td.num { (e.failed_tasks) }
            td.num { (e.memory_used.map(bytes).unwrap_or_else(|| "–".into())) }
            td.num { (e.memory_peak.map(bytes).unwrap_or_else(|| "–".into())) }
            td { (ago(e.last_heartbeat)) }
            td.error-cell { (e.lost_reason.as_deref().unwrap_or("")) }
        }
    }
}

async fn executors_get(State(app): State<AppState>) -> Html<String> {
    let executors = app.cluster.executors(&app.scheduler, &app.jobs).await;
    let body = html! {
        h1 { "Executors" }
        table.executors {
            thead { tr {
                th { "Executor" } th { "Address" } th { "State" } th.num { "Slots used" } th.num { "Running" }
                th.num { "Finished" } th.num { "Failed" } th.num { "Memory" } th.num { "Peak memory" } th { "Last heartbeat" } th { "Note" }
            } }
            tbody {
                @for e in &executors { (executor_row(e)) }
                @if executors.is_empty() { tr { td colspan="11" .empty { "No executor has registered. Start one with: quiver executor --scheduler HOST:PORT" } } }
            }
        }
        p.muted { "Finished and failed counts are since the scheduler started." }
    };
    page("Executors", Nav::Executors, true, body)
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
    failed: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

fn safe_next(next: Option<&str>) -> String {
    // Only paths on this server, never another origin: browsers read `//host`
    // and `/\host` as other hosts, and drop tabs and newlines.
    match next {
        Some(n)
            if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/ui".into(),
    }
}

async fn login_get(Query(q): Query<LoginQuery>) -> Html<String> {
    let body = html! {
        div.login {
            h1 { "Sign in" }
            p { "This scheduler requires its access token (the value of QUIVER_TOKEN on the scheduler)." }
            @if q.failed.is_some() { (error_box("That token is not right.")) }
            form method="post" action="/ui/login" {
                input type="hidden" name="next" value=(safe_next(q.next.as_deref()));
                input type="password" name="token" placeholder="access token" autocomplete="current-password" autofocus;
                button type="submit" { "Sign in" }
            }
        }
    };
    page("Sign in", Nav::None, false, body)
}

async fn login_post(State(app): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let next = safe_next(form.next.as_deref());
    if !app.auth.enabled() {
        return Redirect::to(&next).into_response();
    }
    if !app.auth.accepts(Some(form.token.trim())) {
        return Redirect::to(&format!("/ui/login?failed=1&next={}", crate::auth::url_escape(&next))).into_response();
    }
    let mut response = Redirect::to(&next).into_response();
    if let Some(v) = app.auth.login_cookie().and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// Signs the UI out: the cookie is cleared, the login page comes back.
async fn logout() -> Response {
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&Auth::logout_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// Headers every UI page carries: no framing by other sites, scripts and
/// styles only from this server (the progress bars' widths are the only
/// inline styles), no content-type guessing, no referrer to other sites.
pub async fn security_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_core::api::JobState;

    #[test]
    fn login_redirects_stay_on_this_server() {
        assert_eq!(safe_next(Some("/ui/jobs")), "/ui/jobs");
        assert_eq!(safe_next(Some("//evil.example/")), "/ui");
        assert_eq!(safe_next(Some("/\\evil.example/")), "/ui");
        assert_eq!(safe_next(Some("/\t/evil.example/")), "/ui");
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui");
        assert_eq!(safe_next(None), "/ui");
    }

    #[test]
    fn job_state_badges_use_state_classes() {
        let html = state_badge(JobState::Failed.as_str()).into_string();
        assert!(html.contains("state-failed"), "{html}");
    }
}
