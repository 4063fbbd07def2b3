//! Every API error is JSON `{"error": "..."}` with the status that says what went wrong.

use axum::{
    body::Bytes,
    extract::rejection::{BytesRejection, JsonRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};

use crate::{dispatch::DispatchError, store::StoreError};

/// The body of every error answer, as the OpenAPI document names it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub error: String,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// `Retry-After` (seconds), for a 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 429: `peer` must wait `wait` before it presents a token again.
    pub fn throttled(wait: std::time::Duration) -> ApiError {
        let secs = super::throttle::retry_after_secs(wait);
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("too many wrong tokens from this address; try again in {secs} s"),
            retry_after: Some(secs),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let status = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        let message = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                "expected a JSON body with `Content-Type: application/json`".to_string()
            }
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
                "request body is larger than the limit (server.max_body_bytes)".to_string()
            }
            _ => r.body_text(),
        };
        ApiError::new(status, message)
    }
}

/// The request body, with a JSON 413 when it is over `server.max_body_bytes`.
pub fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is larger than the limit (server.max_body_bytes)",
        ),
        status => ApiError::new(status, r.body_text()),
    })
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad_request(r.body_text())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        // Text PostgreSQL cannot hold (a NUL in a JSON string, SQLSTATE 22021; a character
        // the encoding lacks, 22P05): the request's fault, nothing to retry or page about.
        if let StoreError::Database(sqlx::Error::Database(db)) = &e {
            if matches!(db.code().as_deref(), Some("22021" | "22P05")) {
                tracing::debug!(error = %e, "request text the state store cannot hold");
                return ApiError::bad_request(
                    "the request holds a character the state store cannot keep (NUL)",
                );
            }
        }
        tracing::error!(error = %e, "state store error while answering a request");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> ApiError {
        match e {
            DispatchError::UnknownPlaybook(_) => ApiError::not_found(e.to_string()),
            DispatchError::QueueFull(_)
            | DispatchError::ShuttingDown
            | DispatchError::NotRecorded(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            DispatchError::Store(s) => s.into(),
        }
    }
}
