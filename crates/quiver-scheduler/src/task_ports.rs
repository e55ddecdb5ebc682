//! Where the scheduler pushes an executor's tasks: the task port the
//! executor declares ([`quiver_core::task_port`]), not the loopback port
//! Ballista's registration names.
//!
//! A guarded executor (cluster secret or certificate) declares its task port
//! in the user agent of its registration and heartbeats. This middleware
//! writes that port into the registration before Ballista reads it, so
//! Ballista dials the port Quiver guards. It also refuses an executor whose
//! TLS does not match the scheduler's `--executor-tls`, which would
//! otherwise register and then fail every task it is sent.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ballista_core::serde::protobuf::{ExecutorRegistration, HeartBeatParams, RegisterExecutorParams};
use prost::Message;
use quiver_core::task_port::TaskPort;

use crate::auth::grpc_refusal;

const REGISTER: &str = "/ballista.protobuf.SchedulerGrpc/RegisterExecutor";
const HEARTBEAT: &str = "/ballista.protobuf.SchedulerGrpc/HeartBeatFromExecutor";

/// Largest registration or heartbeat read (they are a few hundred bytes).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Middleware: rewrites registrations and heartbeats to name the declared
/// task port; `executor_tls` is whether the scheduler dials executors with TLS.
pub async fn declared_task_port(State(executor_tls): State<bool>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path != REGISTER && path != HEARTBEAT {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TaskPort::declared);
    let declared_tls = declared.is_some_and(|port| port.tls);
    if declared_tls != executor_tls {
        let message = if executor_tls {
            "this scheduler dials executors with TLS (--executor-tls), and this executor serves none: \
             start it with --tls-cert and --tls-key, or the scheduler without --executor-tls"
        } else {
            "this executor serves TLS (--tls-cert) and the scheduler dials executors without it: \
             start the scheduler with --executor-tls (and --ca-file), or the executor without --tls-cert"
        };
        tracing::warn!(method = %path, "executor refused: {message}");
        return grpc_refusal(tonic::Code::FailedPrecondition, message);
    }
    let Some(declared) = declared else {
        return next.run(request).await;
    };
    let is_register = path == REGISTER;
    let (mut parts, body) = request.into_parts();
    // The rewritten message may be longer or shorter.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let bytes = match axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => return grpc_refusal(tonic::Code::InvalidArgument, &format!("cannot read the call: {e}")),
    };
    let rewritten = if is_register {
        rewrite::<RegisterExecutorParams>(&bytes, |params| params.metadata.as_mut(), declared.port)
    } else {
        rewrite::<HeartBeatParams>(&bytes, |params| params.metadata.as_mut(), declared.port)
    };
    match rewritten {
        Ok(body) => next.run(Request::from_parts(parts, Body::from(body))).await,
        Err(message) => grpc_refusal(tonic::Code::InvalidArgument, &message),
    }
}

/// The gRPC frame `frame` (one uncompressed message) with the registration
/// `registration` finds in it naming `port` as its task port.
fn rewrite<M: Message + Default>(
    frame: &[u8],
    registration: impl FnOnce(&mut M) -> Option<&mut ExecutorRegistration>,
    port: u16,
) -> Result<Bytes, String> {
    let (flag, rest) = frame.split_first().ok_or("an empty call")?;
    if *flag != 0 {
        return Err("a compressed registration: executors send them uncompressed".into());
    }
    let (len, message) = rest.split_at_checked(4).ok_or("a truncated call")?;
    let len = u32::from_be_bytes(len.try_into().map_err(|_| "a truncated call")?) as usize;
    if message.len() != len {
        return Err("a call of more or less than one message".into());
    }
    let mut decoded = M::decode(message).map_err(|e| format!("cannot decode the call: {e}"))?;
    if let Some(registration) = registration(&mut decoded) {
        registration.grpc_port = u32::from(port);
    }
    let encoded = decoded.encode_to_vec();
    let mut out = Vec::with_capacity(5 + encoded.len());
    out.push(0);
    out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    out.extend_from_slice(&encoded);
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &impl Message) -> Vec<u8> {
        let encoded = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        out.extend_from_slice(&encoded);
        out
    }

    #[test]
    fn a_registration_names_the_declared_port_and_keeps_the_rest() {
        let params = RegisterExecutorParams {
            metadata: Some(ExecutorRegistration {
                id: "exec-1".into(),
                port: 50051,
                grpc_port: 41234,
                ..Default::default()
            }),
        };
        let out = rewrite::<RegisterExecutorParams>(&frame(&params), |p| p.metadata.as_mut(), 50052).unwrap();
        let decoded = RegisterExecutorParams::decode(&out[5..]).unwrap();
        let metadata = decoded.metadata.unwrap();
        assert_eq!(
            (metadata.id.as_str(), metadata.port, metadata.grpc_port),
            ("exec-1", 50051, 50052)
        );
        // A heartbeat without a registration passes unchanged.
        let beat = HeartBeatParams {
            executor_id: "exec-1".into(),
            ..Default::default()
        };
        let out = rewrite::<HeartBeatParams>(&frame(&beat), |p| p.metadata.as_mut(), 50052).unwrap();
        assert_eq!(HeartBeatParams::decode(&out[5..]).unwrap(), beat);
    }

    #[test]
    fn malformed_calls_are_errors() {
        let parse = |frame: &[u8]| rewrite::<RegisterExecutorParams>(frame, |p| p.metadata.as_mut(), 1);
        assert!(parse(&[]).is_err());
        assert!(parse(&[1, 0, 0, 0, 0]).is_err());
        assert!(parse(&[0, 0, 0, 0, 9, 1]).is_err());
        assert!(parse(&[0, 0, 0]).is_err());
    }
}
