//! TLS for Quiver's processes: what a server presents ([`ServerTls`]) and
//! what a client trusts ([`ClientTls`]).
//!
//! A scheduler started with `--tls-cert` and `--tls-key` serves its one port
//! (gRPC, Flight, REST, UI) over TLS only; clients then name it
//! `https://host:port`. Executors given the same options serve their task
//! and Flight ports over TLS only, and the scheduler, told so with
//! `--executor-tls`, dials them (tasks, result fetches) with TLS, as they
//! dial each other (shuffle reads). Clients trust the certificates the
//! system trusts, or only the CA in the PEM file `QUIVER_CA_FILE` names (a
//! private CA, or a self-signed certificate).
//!
//! Ballista dials with the endpoints Quiver may shape, not with its own TLS
//! settings: [`ClientTls::endpoint_override`] adds them to the endpoints of
//! `https` addresses. Ballista writes the addresses of a scheduler (as an
//! executor dials it) and of executors (as the scheduler and other
//! executors dial them) as `http://` whatever they serve, so for those the
//! override also turns `http` into `https`.
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
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

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
    /// endpoints, and to `http` ones too when `upgrade_http` (the addresses
    /// Ballista writes as `http://` whatever the other side serves).
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

/// Why a server's certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no certificate.
    #[error(
        "cannot use {path} as a TLS certificate: {message} (give a PEM file: the certificate, then any intermediates)"
    )]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key file is unreadable or holds no private key.
    #[error("cannot use {path} as a TLS key: {message} (give the certificate's private key in PEM)")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key does not belong to the certificate, or is of a kind rustls
    /// does not take.
    #[error("the TLS key {key} does not fit the certificate {cert}: {message}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls says.
        message: String,
    },
}

/// A server's certificate chain and key, checked and ready to serve: by the
/// scheduler's listener ([`Self::rustls_config`]) and by tonic servers
/// ([`Self::tonic_config`]: an executor's ports).
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    /// The chain and key as read, for tonic (which takes PEM).
    cert_pem: Arc<Vec<u8>>,
    key_pem: Arc<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls(****)")
    }
}

impl ServerTls {
    /// The certificate chain in the PEM file `cert` and its key in `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| std::fs::read(path).map_err(|e| e.to_string());
        let cert_pem = read(cert).map_err(|message| TlsError::Cert {
            path: cert.to_owned(),
            message,
        })?;
        let key_pem = read(key).map_err(|message| TlsError::Key {
            path: key.to_owned(),
            message,
        })?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Cert {
                path: cert.to_owned(),
                message: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Cert {
                path: cert.to_owned(),
                message: "no certificate in it".into(),
            });
        }
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
            path: key.to_owned(),
            message: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, private))
            .map_err(|e| TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
                message: e.to_string(),
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            cert_pem: Arc::new(cert_pem),
            key_pem: Arc::new(key_pem),
        })
    }

    /// rustls' settings, for a listener that does its own handshakes.
    pub fn rustls_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// tonic's settings, for `Server::tls_config`.
    pub fn tonic_config(&self) -> ServerTlsConfig {
        // tonic's servers take rustls' process-wide provider, which rustls
        // cannot choose by itself when the build links two (ring, and
        // aws-lc-rs through other crates): Quiver's is ring. A provider
        // already installed stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        ServerTlsConfig::new().identity(Identity::from_pem(self.cert_pem.as_slice(), self.key_pem.as_slice()))
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
