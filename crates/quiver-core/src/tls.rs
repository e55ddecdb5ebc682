//! What a client of a scheduler that serves TLS trusts.
//!
//! A scheduler started with `--tls-cert` and `--tls-key` serves its one port
//! (gRPC, Flight, REST, UI) over TLS only; clients then name it
//! `https://host:port`. They trust the certificates the system trusts, or
//! only the CA in the PEM file `QUIVER_CA_FILE` names (a private CA, or the
//! scheduler's self-signed certificate).
//!
//! Ballista dials the scheduler with the endpoints Quiver may shape, not
//! with its own TLS settings: [`ClientTls::endpoint_override`] adds them to
//! the endpoints of `https` addresses. An executor's scheduler connections
//! (registration, heartbeats, task status: the only ones its process-level
//! override shapes) are written `http://` by Ballista whatever the scheduler
//! serves, so for them the override also turns `http` into `https`.
//!
//! ```
//! use quiver_core::tls::ClientTls;
//! let tls = ClientTls::system_roots();
//! let executor = tls.endpoint_override(true);
//! let endpoint = tonic::transport::Endpoint::from_static("http://sched:50050");
//! assert_eq!(executor(endpoint).unwrap().uri().scheme_str(), Some("https"));
//! let client = tls.endpoint_override(false);
//! let endpoint = tonic::transport::Endpoint::from_static("http://exec-1:50051");
//! assert_eq!(client(endpoint).unwrap().uri().scheme_str(), Some("http"));
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ballista_core::extension::EndpointOverrideFn;
use ballista_core::utils::{GrpcClientConfig, create_grpc_client_endpoint};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::config::ConfigError;

/// The environment variable naming the PEM file of the CA clients trust.
pub const CA_FILE_ENV: &str = "QUIVER_CA_FILE";

/// The certificates a client trusts when its scheduler serves TLS.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// The CA's certificates in PEM; `None`: the system's roots.
    ca_pem: Option<Arc<Vec<u8>>>,
    /// Where they came from, for messages.
    ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("ca_file", &self.ca_file).finish()
    }
}

impl ClientTls {
    /// Trusts what the system trusts.
    pub fn system_roots() -> Self {
        Self::default()
    }

    /// Trusts only the CA certificates in the PEM file `path`.
    pub fn with_ca_file(path: &Path) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError::InvalidValue {
            key: CA_FILE_ENV.into(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read CA file {}: {e}", path.display())))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(bad(format!(
                "{} holds no PEM certificate: give the CA's certificate (or the scheduler's self-signed one)",
                path.display()
            )));
        }
        Ok(Self {
            ca_pem: Some(Arc::new(pem)),
            ca_file: Some(path.to_owned()),
        })
    }

    /// The CA of `QUIVER_CA_FILE` when it is set, else the system's roots.
    pub fn from_env() -> Result<Self, ConfigError> {
        match std::env::var_os(CA_FILE_ENV).filter(|v| !v.is_empty()) {
            Some(path) => Self::with_ca_file(Path::new(&path)),
            None => Ok(Self::system_roots()),
        }
    }

    /// The CA certificates in PEM, when a CA file was given.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref().map(Vec::as_slice)
    }

    /// tonic's TLS settings for these roots.
    pub fn tonic_config(&self) -> ClientTlsConfig {
        match &self.ca_pem {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem.as_slice())),
            None => ClientTlsConfig::new().with_native_roots(),
        }
    }

    /// An endpoint override that speaks TLS with these roots to `https`
    /// endpoints, and to `http` ones too when `upgrade_http` (an executor's
    /// scheduler connections, which Ballista writes as `http://`).
    pub fn endpoint_override(&self, upgrade_http: bool) -> EndpointOverrideFn {
        let config = self.tonic_config();
        Arc::new(move |endpoint: Endpoint| {
            let uri = endpoint.uri();
            let endpoint = match (upgrade_http, uri.scheme_str(), uri.authority()) {
                (true, Some("http"), Some(authority)) => {
                    // Rebuilt with Ballista's client defaults: an endpoint's
                    // address cannot be changed in place.
                    let defaults = GrpcClientConfig::default();
                    create_grpc_client_endpoint(format!("https://{authority}"), Some(&defaults))?
                }
                _ => endpoint,
            };
            if endpoint.uri().scheme_str() == Some("https") {
                Ok(endpoint.tls_config(config.clone())?)
            } else {
                Ok(endpoint)
            }
        })
    }
}

/// `first`, then `second`: an endpoint override that does what each given
/// one does (`None` when neither is).
pub fn chain(first: Option<EndpointOverrideFn>, second: Option<EndpointOverrideFn>) -> Option<EndpointOverrideFn> {
    match (first, second) {
        (Some(first), Some(second)) => Some(Arc::new(move |endpoint| second(first(endpoint)?))),
        (first, second) => first.or(second),
    }
}
