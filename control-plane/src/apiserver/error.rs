//! API errors and their one mapping to the wire: a Kubernetes `Status` object with the HTTP
//! code and `reason` clients branch on (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`,
//! `Gone`, ...). Every handler returns [`ApiError`]; nothing else writes error bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use skiff_api::validation::FieldCause;

use crate::storage::StoreError;

/// What went wrong, with enough context to write a useful `Status.message`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    /// `resource` is the plural, optionally `plural.group`.
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{}", skiff_api::validation::invalid_message(kind, name, causes))]
    Invalid { kind: String, name: String, causes: Vec<FieldCause> },
    #[error("{0}")]
    Gone(String),
    #[error("the method is not allowed for the requested resource")]
    MethodNotAllowed,
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml"
    )]
    UnsupportedMediaType,
    #[error("the server rejected our request because the request entity is too large (limit {limit} bytes)")]
    TooLarge { limit: usize },
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    Internal(String),
    #[error("the server is shutting down")]
    Unavailable,
}

impl ApiError {
    /// The HTTP status code and the Kubernetes `reason`.
    pub fn code_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::NotFound { .. } | ApiError::NoRoute => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            ApiError::Gone(_) => (StatusCode::GONE, "Expired"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ApiError::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType"),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            ApiError::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "NotAcceptable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
        }
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let (code, reason) = self.code_reason();
        let mut details = serde_json::Map::new();
        // `resource`/`kind` may be qualified (`deployments.apps`, `Deployment.apps`); details
        // carry the group separately, as Kubernetes does.
        let mut name_and_kind = |name: &str, qualified: &str| {
            let (kind, group) = qualified.split_once('.').unwrap_or((qualified, ""));
            details.insert("name".into(), json!(name));
            details.insert("kind".into(), json!(kind));
            if !group.is_empty() {
                details.insert("group".into(), json!(group));
            }
        };
        match self {
            ApiError::NotFound { resource, name } | ApiError::AlreadyExists { resource, name } => {
                name_and_kind(name, resource);
            }
            ApiError::Invalid { kind, name, causes } => {
                name_and_kind(name, kind);
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason.as_str(), "message": c.message, "field": c.field}))
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
            }
            _ => {}
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        });
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }

    /// A store error for one object of `resource` (plural[.group]) named `name`.
    pub fn from_store(err: StoreError, resource: &str, name: &str) -> ApiError {
        match err {
            StoreError::NotFound(_) => ApiError::NotFound { resource: resource.into(), name: name.into() },
            StoreError::AlreadyExists(_) => ApiError::AlreadyExists { resource: resource.into(), name: name.into() },
            StoreError::Conflict { .. } => ApiError::Conflict(format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            )),
            StoreError::Compacted { requested, compacted } => {
                ApiError::Gone(format!("too old resource version: {requested} ({compacted})"))
            }
            StoreError::FutureRevision { requested, current } => {
                ApiError::Gone(format!("Too large resource version: {requested}, current: {current}"))
            }
            StoreError::Closed => ApiError::Unavailable,
            StoreError::Backend(msg) => ApiError::Internal(msg),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::from_store(err, "", "")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, _) = self.code_reason();
        let body = self.to_status();
        let mut resp = (code, axum::Json(body)).into_response();
        if code == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
