//! The web UI (in progress).
use axum::Router;
use crate::api::AppState;
/// UI routes.
pub fn routes() -> Router<AppState> { Router::new() }
