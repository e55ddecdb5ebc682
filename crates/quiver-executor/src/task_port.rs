//! The executor's task port: where the scheduler pushes tasks, stops the
//! executor, cancels tasks and drops a job's shuffle data.
//!
//! Ballista serves those calls with no hook for a check or for TLS, so an
//! executor with a cluster secret or a certificate runs Ballista's server
//! on a loopback port and serves the port it was given with
//! [`TaskPortService`]: each call must carry the cluster secret's proof
//! ([`crate::guard::proof_check`]: only the scheduler holds it), arrives
//! over TLS when the executor has a certificate, and is then passed on to
//! Ballista's server unchanged. The executor declares the port to the
//! scheduler ([`quiver_core::task_port`]), which dials it instead of
//! Ballista's.

use std::net::SocketAddr;

use ballista_core::serde::protobuf::executor_grpc_client::ExecutorGrpcClient;
use ballista_core::serde::protobuf::executor_grpc_server::{ExecutorGrpc, ExecutorGrpcServer};
use ballista_core::serde::protobuf::{
    CancelTasksParams, CancelTasksResult, LaunchMultiTaskParams, LaunchMultiTaskResult, LaunchTaskParams,
    LaunchTaskResult, RemoveJobDataParams, RemoveJobDataResult, StopExecutorParams, StopExecutorResult,
};
use ballista_core::utils::{GrpcServerConfig, create_grpc_server_incoming};
use quiver_core::cluster_secret::ClusterSecret;
use quiver_core::tls::ServerTls;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::ExecutorError;
use crate::guard::{grpc_server, proof_check};

/// Passes the task calls it receives on to Ballista's server.
#[derive(Clone)]
pub struct TaskPortService {
    ballista: ExecutorGrpcClient<Channel>,
}

impl TaskPortService {
    /// A service passing calls to Ballista's server on `127.0.0.1:ballista_port`
    /// (connected at the first call), with messages up to `max_message_size`.
    pub fn new(ballista_port: u16, max_message_size: usize) -> Result<Self, ExecutorError> {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{ballista_port}"))
            .map_err(|e| ExecutorError::Runtime(format!("task port: {e}")))?
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            ballista: ExecutorGrpcClient::new(channel)
                .max_decoding_message_size(max_message_size)
                .max_encoding_message_size(max_message_size),
        })
    }
}

#[tonic::async_trait]
impl ExecutorGrpc for TaskPortService {
    async fn launch_task(&self, request: Request<LaunchTaskParams>) -> Result<Response<LaunchTaskResult>, Status> {
        self.ballista.clone().launch_task(request.into_inner()).await
    }

    async fn launch_multi_task(
        &self,
        request: Request<LaunchMultiTaskParams>,
    ) -> Result<Response<LaunchMultiTaskResult>, Status> {
        self.ballista.clone().launch_multi_task(request.into_inner()).await
    }

    async fn stop_executor(
        &self,
        request: Request<StopExecutorParams>,
    ) -> Result<Response<StopExecutorResult>, Status> {
        self.ballista.clone().stop_executor(request.into_inner()).await
    }

    async fn cancel_tasks(&self, request: Request<CancelTasksParams>) -> Result<Response<CancelTasksResult>, Status> {
        self.ballista.clone().cancel_tasks(request.into_inner()).await
    }

    async fn remove_job_data(
        &self,
        request: Request<RemoveJobDataParams>,
    ) -> Result<Response<RemoveJobDataResult>, Status> {
        self.ballista.clone().remove_job_data(request.into_inner()).await
    }
}

/// Binds the task port on `address` now (so the scheduler can dial it as
/// soon as the executor registers) and serves it in the background: calls
/// with `secret`'s proof (any call when `None`), over TLS when `tls` is
/// given, passed on to Ballista's server on `ballista_port`.
pub fn serve(
    address: SocketAddr,
    ballista_port: u16,
    secret: Option<ClusterSecret>,
    tls: Option<&ServerTls>,
    max_message_size: usize,
) -> Result<(), ExecutorError> {
    let config = GrpcServerConfig::default();
    let incoming = create_grpc_server_incoming(address, &config).map_err(|e| ExecutorError::Bind {
        addr: address.to_string(),
        message: e.to_string(),
    })?;
    let service = ExecutorGrpcServer::new(TaskPortService::new(ballista_port, max_message_size)?)
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size);
    let mut server = grpc_server(&config, tls)
        .map_err(|e| ExecutorError::Runtime(format!("cannot serve TLS on the task port: {e}")))?;
    let guarded = secret.is_some();
    tracing::info!(%address, ballista_port, tls = tls.is_some(), cluster_secret = guarded, "task port listening");
    let check = proof_check(secret, "task");
    tokio::spawn(async move {
        let served = server
            .add_service(InterceptedService::new(service, check))
            .serve_with_incoming(incoming)
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the task port stopped; the scheduler can no longer reach this executor");
        }
    });
    Ok(())
}
