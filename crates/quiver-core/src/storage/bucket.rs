//! Buckets: creating them, which object stores cannot do.
//!
//! `quiver fs mb` (the stack's `init` service) creates the lake's buckets
//! with one signed `PUT /<bucket>` (path style), as `mc mb` or
//! `aws s3 mb` do, signed by object_store's own SigV4 signer.

use std::time::Duration;

use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{HttpRequest, HttpRequestBody};

use super::S3Settings;
use crate::secret;

/// What became of a bucket that was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketCreated {
    /// It was made now.
    Created,
    /// It was there already, and these credentials own it.
    AlreadyOwned,
}

/// Why a bucket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// Creating a bucket needs an endpoint and credentials.
    #[error("cannot create bucket '{bucket}': {reason}")]
    Config {
        /// The bucket.
        bucket: String,
        /// What is missing.
        reason: String,
    },
    /// The server could not be reached.
    #[error("cannot create bucket '{bucket}': cannot reach {endpoint}: {message}")]
    Unreachable {
        /// The bucket.
        bucket: String,
        /// The endpoint.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The server refused.
    #[error("cannot create bucket '{bucket}' at {endpoint}: the server answered {status}: {message}")]
    Refused {
        /// The bucket.
        bucket: String,
        /// The endpoint.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The server's error code and message.
        message: String,
    },
}

/// SHA-256 of an empty body, as SigV4 wants it spelled for a body-less request.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Creates `bucket` on the endpoint `settings` name; a bucket that already
/// exists and belongs to these credentials is not an error.
pub async fn create_bucket(settings: &S3Settings, bucket: &str) -> Result<BucketCreated, BucketError> {
    let config = |reason: &str| BucketError::Config {
        bucket: bucket.to_owned(),
        reason: reason.to_owned(),
    };
    if bucket.is_empty() || bucket.contains('/') {
        return Err(config("a bucket name is one path segment, e.g. s3://lake"));
    }
    let endpoint = settings
        .endpoint
        .clone()
        .unwrap_or_else(|| settings.endpoint_for_display());
    let (Some(key_id), Some(secret_key)) = (&settings.access_key_id, &settings.secret_access_key) else {
        return Err(config(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or s3.access_key_id / s3.secret_access_key)",
        ));
    };
    let region = settings.region.clone().unwrap_or_else(|| "us-east-1".into());
    let url = format!("{}/{bucket}", endpoint.trim_end_matches('/'));
    let credential = AwsCredential {
        key_id: key_id.clone(),
        secret_key: secret_key.clone(),
        token: settings.session_token.clone(),
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| config(&e.to_string()))?;
    let signed = |method: http::Method| -> Result<reqwest::RequestBuilder, BucketError> {
        let mut request = HttpRequest::new(HttpRequestBody::empty());
        *request.method_mut() = method.clone();
        *request.uri_mut() = url
            .parse()
            .map_err(|e| config(&format!("'{url}' is not a valid URL: {e}")))?;
        AwsAuthorizer::new(&credential, "s3", &region).authorize(&mut request, Some(&hex_to_bytes(EMPTY_SHA256)));
        let mut outgoing = client.request(method, &url);
        for (name, value) in request.headers() {
            outgoing = outgoing.header(name, value);
        }
        Ok(outgoing)
    };
    let unreachable = |e: reqwest::Error| BucketError::Unreachable {
        bucket: bucket.to_owned(),
        endpoint: endpoint.clone(),
        message: crate::messages::root_cause(&e),
    };

    let response = signed(http::Method::PUT)?.send().await.map_err(unreachable)?;
    let status = response.status();
    if status.is_success() {
        return Ok(BucketCreated::Created);
    }
    let body = response.text().await.unwrap_or_default();
    let owned = body.contains("BucketAlreadyOwnedByYou")
        // Servers that do not tell owners apart (s3s-fs) say it exists: it is
        // ours if these credentials can open it.
        || body.contains("BucketAlreadyExists")
            && signed(http::Method::HEAD)?
                .send()
                .await
                .map_err(unreachable)?
                .status()
                .is_success();
    if owned {
        return Ok(BucketCreated::AlreadyOwned);
    }
    Err(BucketError::Refused {
        bucket: bucket.to_owned(),
        endpoint,
        status: status.as_u16(),
        message: secret::redact(&s3_error(&body)).into_owned(),
    })
}

/// `Code: Message` of an S3 error document, or the body when it is not one.
fn s3_error(body: &str) -> String {
    let element = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&close)? + start;
        Some(body[start..end].to_owned())
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => body.trim().chars().take(300).collect(),
    }
}

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_documents_are_read() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>no</Message></Error>";
        assert_eq!(s3_error(body), "AccessDenied: no");
        assert_eq!(s3_error("plain text"), "plain text");
    }

    #[test]
    fn the_empty_digest_is_32_bytes() {
        assert_eq!(hex_to_bytes(EMPTY_SHA256).len(), 32);
    }

    #[tokio::test]
    async fn bucket_names_and_credentials_are_checked_first() {
        let mut s = S3Settings::default();
        let err = create_bucket(&s, "a/b").await.unwrap_err();
        assert!(err.to_string().contains("one path segment"), "{err}");
        s.endpoint = Some("http://127.0.0.1:1".into());
        let err = create_bucket(&s, "lake").await.unwrap_err();
        assert!(err.to_string().contains("no S3 credentials"), "{err}");
    }
}
