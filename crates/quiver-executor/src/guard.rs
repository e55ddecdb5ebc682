//! Who may talk to an executor, and what its own calls prove.
//!
//! With a cluster secret ([`quiver_core::cluster_secret`]):
//!
//! * every call the executor makes carries the secret's proof: to the
//!   scheduler (register, heartbeats, task status) and to other executors
//!   (shuffle reads, through the sessions' endpoint override);
//! * its Arrow Flight service, which serves the shuffle files and results it
//!   holds, answers only calls that carry the proof: other executors' shuffle
//!   reads and the scheduler's result proxy. Anything else that reaches the
//!   port gets `UNAUTHENTICATED` and no data.
//!
//! The executor's gRPC port, where the scheduler pushes tasks, is served by
//! Ballista with no hook for a check; instead, the execution engine runs
//! only tasks that carry the scheduler's task proof ([`crate::engine`]).
//! Its other calls (stop, cancel, remove a job's data) stay open to whoever
//! reaches the port: keep it on the cluster's network.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::error::BallistaError;
use ballista_core::extension::SessionConfigExt;
use ballista_core::utils::create_grpc_server;
use ballista_executor::ArrowFlightServerProvider;
use ballista_executor::flight_service::BallistaFlightService;
use quiver_core::cluster_secret::ClusterSecret;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

/// `inner`'s sessions, whose Flight clients (shuffle reads from other
/// executors) carry `secret`'s proof.
pub fn proving_config_producer(
    inner: ballista_core::ConfigProducer,
    secret: &ClusterSecret,
) -> ballista_core::ConfigProducer {
    let endpoint = secret.endpoint_override();
    Arc::new(move || inner().with_ballista_override_create_grpc_client_endpoint(Arc::clone(&endpoint)))
}

/// The executor's Flight server, answering only calls with `secret`'s proof.
pub fn flight_server(secret: ClusterSecret, max_message_size: usize) -> Arc<ArrowFlightServerProvider> {
    Arc::new(move |work_dir, address, mut shutdown, grpc_config| {
        let secret = secret.clone();
        tokio::spawn(async move {
            let check = move |request: Request<()>| {
                let proven = request
                    .metadata()
                    .get("user-agent")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ua| secret.accepts_user_agent(ua));
                if proven {
                    Ok(request)
                } else {
                    tracing::warn!("Flight call refused: it does not prove it holds the cluster secret");
                    Err(Status::unauthenticated(
                        "this executor serves only its cluster's scheduler and executors (the cluster secret's proof is missing)",
                    ))
                }
            };
            let flight = FlightServiceServer::new(BallistaFlightService::new(work_dir))
                .max_decoding_message_size(max_message_size)
                .max_encoding_message_size(max_message_size);
            tracing::info!(%address, "Arrow Flight server listening (cluster secret required)");
            create_grpc_server(&grpc_config)
                .add_service(InterceptedService::new(flight, check))
                .serve_with_shutdown(address, shutdown.recv())
                .await
                .map_err(BallistaError::TonicError)
        })
    })
}
