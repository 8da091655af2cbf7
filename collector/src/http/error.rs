//! `ApiError`: every API failure becomes `{"error": "..."}` with a proper status code.
//! Internal details are logged, not sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::search::SearchError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// An answer with a status and a message meant for the caller.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            extra: serde_json::Map::new(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 500, logging the details and sending a generic message.
    pub fn internal(context: &str, err: &dyn std::error::Error) -> Self {
        tracing::error!(error = %err, context, "Request failed.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{context} failed; see the collector's log"),
        )
    }

    /// Adds a field to the JSON body.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.extra;
        body.insert("error".into(), json!(self.message));
        (self.status, Json(serde_json::Value::Object(body))).into_response()
    }
}

impl From<SearchError> for ApiError {
    fn from(err: SearchError) -> Self {
        match &err {
            SearchError::Parse(p) => {
                ApiError::bad_request(format!("bad query: expected {}", p.expected))
                    .with("position", p.position)
                    .with("column", p.column)
            }
            SearchError::Compile(_) | SearchError::TimeRange(_) | SearchError::BadRequest(_) => {
                ApiError::bad_request(err.to_string())
            }
            SearchError::Index(e) => ApiError::internal("search", e),
            #[allow(unreachable_patterns)]
            _ => ApiError::internal("search", &err),
        }
    }
}
