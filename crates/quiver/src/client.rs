//! A client of the scheduler's REST API, for the CLI and programs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quiver::client::ClientError> {
//! use quiver::client::ApiClient;
//! use quiver_core::api::SubmitJob;
//! let api = ApiClient::new("localhost:50050", None)?;
//! let job = api.submit(&SubmitJob { sql: "SELECT 1".into(), ..Default::default() }).await?;
//! let detail = api.job(&job.id).await?;
//! println!("{} is {}", detail.summary.id, detail.summary.state);
//! # Ok(()) }
//! ```

use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;
use quiver_core::api::{
    CloseSession, ClusterOverview, ErrorBody, ExecutorInfo, JobDetail, JobList, JobSummary, OpenSession, OpenedSession,
    SubmitJob,
};
use quiver_core::tls::ClientTls;
use serde::de::DeserializeOwned;

/// Environment variable naming the scheduler (`host:port` or `http://host:port`).
pub const SCHEDULER_ENV: &str = "QUIVER_SCHEDULER";
/// Environment variable holding the scheduler's access token.
pub const TOKEN_ENV: &str = "QUIVER_TOKEN";

/// Failures talking to the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The scheduler address is malformed.
    #[error("'{0}' is not a scheduler address: write HOST:PORT or http://HOST:PORT")]
    BadAddress(String),
    /// The scheduler could not be reached.
    #[error("cannot reach the scheduler at {url}: {message} (is it running? check --scheduler / QUIVER_SCHEDULER)")]
    Unreachable {
        /// The scheduler's URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The scheduler wants a token and none or a wrong one was sent.
    #[error("the scheduler at {url} refused the request: {message} (set QUIVER_TOKEN)")]
    Unauthorized {
        /// The scheduler's URL.
        url: String,
        /// The scheduler's message.
        message: String,
    },
    /// The scheduler answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The scheduler's message.
        message: String,
    },
    /// The answer could not be read.
    #[error("unexpected answer from the scheduler: {0}")]
    Decode(String),
    /// The CA to trust for an https:// scheduler cannot be used.
    #[error("{0}")]
    Tls(String),
}

/// Turns `host:port`, `http://host:port`, `quiver://host:port` or `df://host:port`
/// into `http://host:port` (port 50050 when omitted).
pub fn scheduler_url(address: &str) -> Result<String, ClientError> {
    let trimmed = address.trim().trim_end_matches('/');
    let with_scheme = match trimmed.split_once("://") {
        Some(("http" | "https", _)) => trimmed.to_owned(),
        Some(("quiver" | "df" | "grpc", rest)) => format!("http://{rest}"),
        Some(_) => return Err(ClientError::BadAddress(address.into())),
        None => format!("http://{trimmed}"),
    };
    let url = url::Url::parse(&with_scheme).map_err(|_| ClientError::BadAddress(address.into()))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ClientError::BadAddress(address.into()))?;
    if url.path() != "/" && !url.path().is_empty() {
        return Err(ClientError::BadAddress(address.into()));
    }
    let port = url.port().unwrap_or(quiver_scheduler::DEFAULT_PORT);
    Ok(format!("{}://{host}:{port}", url.scheme()))
}

/// The scheduler's REST API.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl ApiClient {
    /// A client for the scheduler at `address`, sending `token` when given.
    pub fn new(address: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = scheduler_url(address)?;
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120));
        if base.starts_with("https://") {
            // The same roots the session's gRPC calls trust.
            let tls = ClientTls::from_env().map_err(|e| ClientError::Tls(e.to_string()))?;
            if let Some(pem) = tls.ca_pem() {
                for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ClientError::Tls(e.to_string()))? {
                    http = http.add_root_certificate(cert);
                }
            }
        }
        let http = http.build().map_err(|e| ClientError::Unreachable {
            url: base.clone(),
            message: e.to_string(),
        })?;
        if let Some(t) = &token {
            quiver_core::secret::register(t);
        }
        Ok(Self { http, base, token })
    }

    /// The scheduler's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The token sent, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: quiver_core::messages::root_cause(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or(text);
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized {
                url: self.base.clone(),
                message,
            });
        }
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }

    async fn json<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ClientError> {
        self.send(request)
            .await?
            .json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Submits a script.
    pub async fn submit(&self, job: &SubmitJob) -> Result<JobSummary, ClientError> {
        self.json(self.request(reqwest::Method::POST, "/api/v1/jobs").json(job))
            .await
    }

    /// One job in full.
    pub async fn job(&self, id: &str) -> Result<JobDetail, ClientError> {
        self.json(self.request(reqwest::Method::GET, &format!("/api/v1/jobs/{id}")))
            .await
    }

    /// A page of jobs; `query` holds the list's filters (`state`, `q`, `limit`, ...).
    pub async fn jobs(&self, query: &[(&str, String)]) -> Result<JobList, ClientError> {
        self.json(self.request(reqwest::Method::GET, "/api/v1/jobs").query(query))
            .await
    }

    /// Cancels a job.
    pub async fn cancel(&self, id: &str) -> Result<JobSummary, ClientError> {
        self.json(self.request(reqwest::Method::POST, &format!("/api/v1/jobs/{id}/cancel")))
            .await
    }

    /// The stored rows of a statement's result.
    pub async fn result(&self, id: &str, statement: usize) -> Result<(SchemaRef, Vec<RecordBatch>), ClientError> {
        let response = self
            .send(
                self.request(reqwest::Method::GET, &format!("/api/v1/jobs/{id}/result"))
                    .query(&[("statement", statement.to_string()), ("format", "arrow".into())]),
            )
            .await?;
        let bytes = response.bytes().await.map_err(|e| ClientError::Decode(e.to_string()))?;
        let reader =
            StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| ClientError::Decode(e.to_string()))?;
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok((schema, batches))
    }

    /// Opens a client session as a job; the answer holds the proof that
    /// opens the job's results.
    pub async fn open_session(&self, request: &OpenSession) -> Result<OpenedSession, ClientError> {
        self.json(self.request(reqwest::Method::POST, "/api/v1/sessions").json(request))
            .await
    }

    /// Tells the scheduler the session is alive.
    pub async fn heartbeat(&self, id: &str) -> Result<(), ClientError> {
        self.send(self.request(reqwest::Method::POST, &format!("/api/v1/sessions/{id}/heartbeat")))
            .await?;
        Ok(())
    }

    /// Ends a session.
    pub async fn close_session(&self, id: &str, error: Option<String>) -> Result<JobSummary, ClientError> {
        self.json(
            self.request(reqwest::Method::POST, &format!("/api/v1/sessions/{id}/close"))
                .json(&CloseSession { error }),
        )
        .await
    }

    /// The cluster at a glance.
    pub async fn cluster(&self) -> Result<ClusterOverview, ClientError> {
        self.json(self.request(reqwest::Method::GET, "/api/v1/cluster")).await
    }

    /// Executors, alive and lost.
    pub async fn executors(&self) -> Result<Vec<ExecutorInfo>, ClientError> {
        self.json(self.request(reqwest::Method::GET, "/api/v1/executors")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses_normalise() {
        assert_eq!(scheduler_url("localhost").unwrap(), "http://localhost:50050");
        assert_eq!(scheduler_url("sched:7077").unwrap(), "http://sched:7077");
        assert_eq!(
            scheduler_url("http://10.0.0.1:50050/").unwrap(),
            "http://10.0.0.1:50050"
        );
        assert_eq!(scheduler_url("df://h:1").unwrap(), "http://h:1");
        assert_eq!(
            scheduler_url("https://q.example.com").unwrap(),
            "https://q.example.com:50050"
        );
        assert!(scheduler_url("ftp://x").is_err());
        assert!(scheduler_url("http://h:1/path").is_err());
        assert!(scheduler_url("").is_err());
    }
}
