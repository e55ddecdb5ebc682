//! What the scheduler checks and fixes in an executor's registration
//! before Ballista reads it.
//!
//! * **The task port.** A guarded executor (cluster secret or certificate)
//!   declares the port it serves for the scheduler's task calls in the user
//!   agent of its registration and heartbeats
//!   ([`quiver_core::task_port`]); the registration Ballista wrote names
//!   Ballista's own server on the executor's loopback instead. The declared
//!   port is written into the registration, so Ballista dials the port
//!   Quiver guards.
//! * **TLS.** An executor whose TLS does not match the scheduler's
//!   `--executor-tls` is refused with the option to change: it would
//!   otherwise register and then fail every task it is sent.
//! * **Completeness.** A registration without the executor's specification
//!   or system description would panic Ballista's handler; it is refused.

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

/// Middleware: checks registrations and heartbeats and names the declared
/// task port in them; `executor_tls` is whether the scheduler dials
/// executors with TLS.
pub async fn check_registration(State(executor_tls): State<bool>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
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
    let is_register = path == REGISTER;
    let (mut parts, body) = request.into_parts();
    // The rewritten message may be longer or shorter.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let bytes = match axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => return grpc_refusal(tonic::Code::InvalidArgument, &format!("cannot read the call: {e}")),
    };
    let port = declared.map(|declared| declared.port);
    let rewritten = if is_register {
        rewrite::<RegisterExecutorParams>(&bytes, |params| params.metadata.as_mut(), port)
    } else {
        rewrite::<HeartBeatParams>(&bytes, |params| params.metadata.as_mut(), port)
    };
    match rewritten {
        Ok(body) => next.run(Request::from_parts(parts, Body::from(body))).await,
        Err(message) => {
            tracing::warn!(method = %path, "executor call refused: {message}");
            grpc_refusal(tonic::Code::InvalidArgument, &message)
        }
    }
}

/// The gRPC frame `frame` (one uncompressed message) with the registration
/// `registration` finds in it checked for completeness and naming `port`,
/// when given, as its task port.
fn rewrite<M: Message + Default>(
    frame: &[u8],
    registration: impl FnOnce(&mut M) -> Option<&mut ExecutorRegistration>,
    port: Option<u16>,
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
    let registration = registration(&mut decoded)
        .ok_or("an executor call without its registration: executors send one with every registration and heartbeat")?;
    if registration.specification.is_none() || registration.os_info.is_none() {
        return Err(format!(
            "the registration of executor {:?} lacks its specification or system description",
            registration.id
        ));
    }
    if let Some(port) = port {
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

    fn registration() -> ExecutorRegistration {
        ExecutorRegistration {
            id: "exec-1".into(),
            port: 50051,
            grpc_port: 41234,
            specification: Some(Default::default()),
            os_info: Some(Default::default()),
            ..Default::default()
        }
    }

    #[test]
    fn a_registration_names_the_declared_port_and_keeps_the_rest() {
        let params = RegisterExecutorParams {
            metadata: Some(registration()),
        };
        let out = rewrite::<RegisterExecutorParams>(&frame(&params), |p| p.metadata.as_mut(), Some(50052)).unwrap();
        let decoded = RegisterExecutorParams::decode(&out[5..]).unwrap();
        let metadata = decoded.metadata.unwrap();
        assert_eq!(
            (metadata.id.as_str(), metadata.port, metadata.grpc_port),
            ("exec-1", 50051, 50052)
        );
        // An undeclared port stays as Ballista wrote it.
        let beat = HeartBeatParams {
            executor_id: "exec-1".into(),
            metadata: Some(registration()),
            ..Default::default()
        };
        let out = rewrite::<HeartBeatParams>(&frame(&beat), |p| p.metadata.as_mut(), None).unwrap();
        assert_eq!(HeartBeatParams::decode(&out[5..]).unwrap(), beat);
    }

    #[test]
    fn malformed_and_incomplete_registrations_are_errors() {
        let parse = |frame: &[u8]| rewrite::<RegisterExecutorParams>(frame, |p| p.metadata.as_mut(), Some(1));
        assert!(parse(&[]).is_err());
        assert!(parse(&[1, 0, 0, 0, 0]).is_err());
        assert!(parse(&[0, 0, 0, 0, 9, 1]).is_err());
        assert!(parse(&[0, 0, 0]).is_err());
        // No registration at all, and one without its specification (which
        // would panic Ballista's handler).
        assert!(parse(&frame(&RegisterExecutorParams { metadata: None })).is_err());
        let bare = RegisterExecutorParams {
            metadata: Some(ExecutorRegistration {
                specification: None,
                ..registration()
            }),
        };
        let refused = parse(&frame(&bare)).unwrap_err();
        assert!(refused.contains("specification"), "{refused}");
    }
}
