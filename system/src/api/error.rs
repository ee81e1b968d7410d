//! Discord-shaped error answers.
//!
//! Every error is a JSON body `{"message", "code"}` with Discord's code and status; a form
//! error (code 50035) adds Discord's `errors` tree naming the field, its error code and what
//! was wrong with it, e.g. `{"errors": {"limit": {"_errors": [{"code": "NUMBER_TYPE_MAX",
//! "message": "..."}]}}}`. Not modelled: nested field paths (every field here is top level).

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::ring::StoreError;
use crate::rpc::RpcError;

/// A Discord-shaped error response.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: u32,
    pub(super) message: String,
    pub(super) errors: Option<Value>,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    /// A 429's `retry_after` and `global`, merged into the body.
    pub(super) rate_limited: Option<Value>,
}

impl ApiError {
    /// An error with `status`, Discord `code` and `message`.
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            errors: None,
            headers: Vec::new(),
            rate_limited: None,
        }
    }

    /// 400 / 50035: `field` failed the check Discord calls `kind`, because of `problem`.
    pub fn invalid_form(field: &str, kind: &str, problem: impl std::fmt::Display) -> Self {
        let mut error = Self::new(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
        let detail = json!({"_errors": [{"code": kind, "message": problem.to_string()}]});
        error.errors = Some(json!({ field: detail }));
        error
    }

    /// 400 / 50035 for a value of `field` that is not a snowflake.
    pub fn not_snowflake(field: &str, text: &str) -> Self {
        let problem = format!("Value \"{text}\" is not snowflake.");
        Self::invalid_form(field, "NUMBER_TYPE_COERCE", problem)
    }

    /// 401: no or an unknown token.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized")
    }

    /// 403 / 50001: not a member of the guild.
    pub fn missing_access() -> Self {
        Self::new(StatusCode::FORBIDDEN, 50001, "Missing Access")
    }

    /// 404 / 10003.
    pub fn unknown_channel() -> Self {
        Self::new(StatusCode::NOT_FOUND, 10003, "Unknown Channel")
    }

    /// 404 / 10004.
    pub fn unknown_guild() -> Self {
        Self::new(StatusCode::NOT_FOUND, 10004, "Unknown Guild")
    }

    /// 404 / 10008.
    pub fn unknown_message() -> Self {
        Self::new(StatusCode::NOT_FOUND, 10008, "Unknown Message")
    }

    /// 404 / 10013.
    pub fn unknown_user() -> Self {
        Self::new(StatusCode::NOT_FOUND, 10013, "Unknown User")
    }

    /// 503 or 504 for a store that failed or did not answer in time.
    pub fn store(error: &StoreError) -> Self {
        match error {
            StoreError::Timeout { .. } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                0,
                format!("storage timed out: {error}"),
            ),
            _ => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                0,
                format!("storage failed: {error}"),
            ),
        }
    }

    /// 503 or 504 for a guild service that could not be reached or did not answer.
    pub fn guild_rpc(error: &RpcError) -> Self {
        match error {
            RpcError::Unreachable { reason, .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                0,
                format!("guild service unreachable: {reason}"),
            ),
            RpcError::Unknown { reason, .. } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                0,
                format!("guild service did not answer: {reason}"),
            ),
        }
    }

    /// The body as JSON.
    pub fn body(&self) -> Value {
        let mut body = json!({"message": self.message, "code": self.code});
        if let Some(errors) = &self.errors {
            body["errors"] = errors.clone();
        }
        if let Some(Value::Object(fields)) = &self.rate_limited {
            for (name, value) in fields {
                body[name] = value.clone();
            }
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
