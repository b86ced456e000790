//! Registry errors and their one mapping to the wire: the OCI Distribution error format
//! `{"errors":[{"code","message","detail"}]}` with the status code the spec gives each code.
//! (The Kubernetes side of the API server uses `Status` objects instead; `/v2/` clients
//! such as docker, oras and oci-client only understand this format.)

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What went wrong in a registry request.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(String),
    #[error("blob upload unknown to registry: {0}")]
    BlobUploadUnknown(String),
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    #[error("requested range not satisfiable: {message}")]
    RangeInvalid { message: String, size: u64 },
    #[error("provided digest did not match uploaded content: {0}")]
    DigestInvalid(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest references unknown blob {0}")]
    ManifestBlobUnknown(String),
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    #[error("invalid tag: {0}")]
    TagInvalid(String),
    #[error("the operation is unsupported: {0}")]
    Unsupported(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("request body too large: {0}")]
    TooLarge(String),
    #[error("registry storage: {context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("reading the request body: {0}")]
    Body(String),
}

impl RegistryError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RegistryError {
        let context = context.into();
        move |source| RegistryError::Io { context, source }
    }

    /// The HTTP status and the spec's error code.
    pub fn code(&self) -> (StatusCode, &'static str) {
        use RegistryError::*;
        match self {
            BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            BlobUploadUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            BlobUploadInvalid(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            RangeInvalid { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
            DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            TagInvalid(_) => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
            Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
            Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            Body(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.code();
        if status.is_server_error() {
            tracing::warn!(error = %self, "registry request failed");
        }
        let body = json!({"errors": [{"code": code, "message": self.to_string(), "detail": null}]});
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            RegistryError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Basic realm="skiff""#));
            }
            RegistryError::RangeInvalid { size, .. } => {
                if let Ok(value) = HeaderValue::from_str(&super::path::upload_range(*size)) {
                    headers.insert(header::RANGE, value);
                }
            }
            _ => {}
        }
        response
    }
}
