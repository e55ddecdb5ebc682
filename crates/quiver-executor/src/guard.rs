//! Who may talk to an executor, and what its own calls prove.
//!
//! With a cluster secret ([`quiver_core::cluster_secret`]):
//!
//! * every call the executor makes carries the secret's proof: to the
//!   scheduler (register, heartbeats, task status) and to other executors
//!   (shuffle reads, through the sessions' endpoint override);
//! * its Arrow Flight service, which serves the shuffle files and results it
//!   holds, and its task port ([`crate::task_port`]), where the scheduler
//!   pushes tasks, answer only calls that carry the proof: other executors'
//!   shuffle reads, the scheduler's result proxy and the scheduler's task
//!   calls. Anything else that reaches the ports gets `UNAUTHENTICATED`.
//!
//! With a certificate ([`ExecutorTls`]) both ports speak TLS only, and the
//! executor's shuffle reads from other executors use TLS too.
//!
//! Ballista's own task server, behind the task port on a loopback port,
//! has no check; the execution engine also runs only tasks that carry the
//! scheduler's task proof ([`crate::engine`]), whatever port they came in by.

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::error::BallistaError;
use ballista_core::extension::SessionConfigExt;
use ballista_core::utils::{create_grpc_server, create_grpc_server_incoming};
use ballista_executor::ArrowFlightServerProvider;
use ballista_executor::flight_service::BallistaFlightService;
use quiver_core::cluster_secret::ClusterSecret;
use quiver_core::tls::{ClientTls, ServerTls};
use tonic::{Request, Status};

/// TLS on an executor's ports, and what it trusts when it dials other
/// executors (which then serve TLS too).
#[derive(Debug, Clone)]
pub struct ExecutorTls {
    /// The certificate its task and Flight ports present.
    pub server: ServerTls,
    /// What it trusts in the certificates of other executors.
    pub peers: ClientTls,
}

/// `inner`'s sessions, whose Flight clients (shuffle reads from other
/// executors) carry `secret`'s proof and speak TLS when executors serve it.
pub fn peer_config_producer(
    inner: ballista_core::ConfigProducer,
    secret: Option<&ClusterSecret>,
    tls: Option<&ExecutorTls>,
) -> ballista_core::ConfigProducer {
    let tls = tls.map(|tls| tls.peers.endpoint_override(true));
    let proof = secret.map(ClusterSecret::endpoint_override);
    match quiver_core::tls::chain(tls, proof) {
        Some(endpoint) => {
            Arc::new(move || inner().with_ballista_override_create_grpc_client_endpoint(Arc::clone(&endpoint)))
        }
        None => inner,
    }
}

/// The check every call to a guarded port passes: the cluster secret's
/// proof in its user agent, when the executor has a secret. `port` names
/// the port in the log line of a refusal.
pub fn proof_check(
    secret: Option<ClusterSecret>,
    port: &'static str,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let Some(secret) = &secret else {
            return Ok(request);
        };
        let proven = request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ua| secret.accepts_user_agent(ua));
        if proven {
            Ok(request)
        } else {
            tracing::warn!(port, "call refused: it does not prove it holds the cluster secret");
            Err(Status::unauthenticated(
                "this executor serves only its cluster's scheduler and executors (the cluster secret's proof is missing)",
            ))
        }
    }
}

/// A tonic server with Ballista's settings, speaking TLS when `tls` is given.
pub fn grpc_server(
    config: &ballista_core::utils::GrpcServerConfig,
    tls: Option<&ServerTls>,
) -> Result<tonic::transport::Server, BallistaError> {
    let server = create_grpc_server(config);
    match tls {
        Some(tls) => server.tls_config(tls.tonic_config()).map_err(BallistaError::TonicError),
        None => Ok(server),
    }
}

/// The executor's Flight server on `address` (whatever address Ballista
/// proposes: Ballista's own servers stay on loopback), answering only calls
/// with `secret`'s proof when there is one, over TLS when `tls` is given.
pub fn flight_server(
    secret: Option<ClusterSecret>,
    tls: Option<ServerTls>,
    address: SocketAddr,
    max_message_size: usize,
) -> Arc<ArrowFlightServerProvider> {
    Arc::new(move |work_dir, _ballista_address, mut shutdown, grpc_config| {
        let check = proof_check(secret.clone(), "flight");
        let guarded = secret.is_some();
        let tls = tls.clone();
        tokio::spawn(async move {
            let flight = FlightServiceServer::new(BallistaFlightService::new(work_dir))
                .max_decoding_message_size(max_message_size)
                .max_encoding_message_size(max_message_size);
            let incoming = create_grpc_server_incoming(address, &grpc_config)?;
            tracing::info!(%address, tls = tls.is_some(), cluster_secret = guarded, "Arrow Flight server listening");
            grpc_server(&grpc_config, tls.as_ref())?
                .add_service(tonic::service::interceptor::InterceptedService::new(flight, check))
                .serve_with_incoming_shutdown(incoming, shutdown.recv())
                .await
                .map_err(BallistaError::TonicError)
        })
    })
}
