//! API errors: one type, mapped to gRPC status codes and HTTP problem JSON.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keel_raft_store::Rejection;
use serde::{Deserialize, Serialize};

/// Everything a caller of the API can be told went wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a value is out of range; nothing changed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with current state; nothing changed.
    #[error("{0}")]
    Conflict(String),
    /// No leader or quorum right now; safe to retry.
    #[error("{0}")]
    Unavailable(String),
    /// A fault on our side.
    #[error("{0}")]
    Internal(String),
    /// The path exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The body is not in a format the call accepts.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No credentials, or credentials that are not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials whose role may not make this call.
    #[error("{0}")]
    PermissionDenied(String),
    /// The account's call rate is over its limit; retry after this many seconds.
    #[error("{0}")]
    TooManyRequests(String, u64),
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::NotFound { .. } => ApiError::NotFound(r.to_string()),
            Rejection::Conflict { .. } => ApiError::Conflict(r.to_string()),
            Rejection::StaleFence { .. } => ApiError::Conflict(r.to_string()),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI-ish identifier of the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short title.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What was wrong and what to do.
    pub detail: String,
    /// Whether retrying the same request may succeed.
    pub retryable: bool,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, tonic::Code) {
        match self {
            ApiError::InvalidArgument(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-argument",
                tonic::Code::InvalidArgument,
            ),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", tonic::Code::NotFound),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", tonic::Code::FailedPrecondition),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", tonic::Code::Unavailable),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", tonic::Code::Internal),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                tonic::Code::Unimplemented,
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                tonic::Code::InvalidArgument,
            ),
            ApiError::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                tonic::Code::Unauthenticated,
            ),
            ApiError::PermissionDenied(_) => (
                StatusCode::FORBIDDEN,
                "permission-denied",
                tonic::Code::PermissionDenied,
            ),
            ApiError::TooManyRequests(..) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                tonic::Code::ResourceExhausted,
            ),
        }
    }

    /// The problem document for this error.
    pub fn problem(&self) -> Problem {
        let (status, kind, _) = self.parts();
        Problem {
            kind: format!("urn:keel:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("error").to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            retryable: matches!(self, ApiError::Unavailable(_) | ApiError::TooManyRequests(..)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(problem)).into_response();
        if let ApiError::TooManyRequests(_, seconds) = self {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let (_, _, code) = e.parts();
        let mut status = tonic::Status::new(code, e.to_string());
        if let ApiError::TooManyRequests(_, seconds) = e {
            status.metadata_mut().insert("retry-after", seconds.into());
        }
        status
    }
}
