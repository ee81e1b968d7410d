//! The API role: Discord v10 REST under `/api/v10`.
//!
//! Served: `GET /gateway`, `POST /channels/{id}/messages` (create, through the guild role that
//! orders the channel's guild) and `GET /channels/{id}/messages` (history, newest first, with
//! `before` and `limit` 1–100). Every call needs `Authorization: Bot <token>` or
//! `Bearer <token>`, and a user reads and sends only in channels of their guilds. Errors are
//! Discord-shaped JSON bodies `{"message", "code"}` with Discord's codes.
//!
//! TODO(api-surface): `after` / `around`, edit, delete, nonce dedup, guild / channel / member
//! creation, rate limits and their headers; the data service in front of the store.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::data::DataClient;
use crate::directory::{SharedDirectory, User};
use crate::guild::{GuildRequest, GuildResponse, GuildRouter};
use crate::model::MessageView;
use crate::ring::client::HistoryQuery;
use crate::ring::StoreError;
use crate::rpc::RpcError;

/// The longest message content Discord accepts, in characters.
pub const CONTENT_CHARS_MAX: usize = 2000;
/// The longest nonce Discord accepts, in characters.
pub const NONCE_CHARS_MAX: usize = 25;
const GUILD_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The API role's configuration.
#[derive(Clone)]
pub struct ApiConfig {
    /// Who exists.
    pub directory: SharedDirectory,
    /// The data service, for history reads (routed by channel).
    pub data: DataClient,
    /// The guild nodes, for creates (routed by guild).
    pub guilds: GuildRouter,
    /// What `GET /gateway` answers.
    pub gateway_url: String,
}

struct Api {
    config: ApiConfig,
}

/// A Discord-shaped error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid_form(field: &str, problem: impl std::fmt::Display) -> Self {
        let message = format!("Invalid Form Body: {field}: {problem}");
        Self::new(StatusCode::BAD_REQUEST, 50035, message)
    }

    fn store(error: &StoreError) -> Self {
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"message": self.message, "code": self.code})),
        )
            .into_response()
    }
}

/// The router of the API role (exposed so tests can serve it on any listener).
pub fn router(config: ApiConfig) -> Router {
    let api = Arc::new(Api { config });
    Router::new()
        .route("/api/v10/gateway", get(gateway))
        .route(
            "/api/v10/channels/{channel_id}/messages",
            get(history).post(create_message),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, 0, "404: Not Found") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, 0, "405: Method Not Allowed")
        })
        .with_state(api)
}

/// Runs the API role on `listener`.
pub async fn run(listener: TcpListener, config: ApiConfig) {
    crate::net::serve_http(listener, router(config)).await;
}

async fn gateway(State(api): State<Arc<Api>>) -> Json<serde_json::Value> {
    Json(json!({"url": api.config.gateway_url}))
}

impl Api {
    fn authenticate(&self, headers: &HeaderMap) -> Result<User, ApiError> {
        let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
        let value = headers.get("authorization").ok_or_else(unauthorized)?;
        let value = value.to_str().map_err(|_| unauthorized())?;
        let token = value
            .strip_prefix("Bot ")
            .or_else(|| value.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        self.config
            .directory
            .read()
            .user_by_token(token)
            .cloned()
            .ok_or_else(unauthorized)
    }

    /// The channel's guild, if `user` may use the channel.
    fn authorize(&self, user: &User, channel_id: &str) -> Result<(u64, u64), ApiError> {
        let unknown = || ApiError::new(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
        let channel_id: u64 = channel_id.parse().map_err(|_| unknown())?;
        let directory = self.config.directory.read();
        let guild = directory.guild_of_channel(channel_id).ok_or_else(unknown)?;
        if !guild.members.contains(&user.id) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                50001,
                "Missing Access",
            ));
        }
        Ok((channel_id, guild.id))
    }
}

/// The body of a create-message request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateMessage {
    content: String,
    nonce: Option<serde_json::Value>,
    #[serde(default)]
    tts: bool,
}

fn parse_create(body: &[u8]) -> Result<CreateMessage, ApiError> {
    // serde_json's message already names the line and column.
    let create: CreateMessage =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid_form("body", e))?;
    let chars = create.content.chars().count();
    if create.content.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            50006,
            "Cannot send an empty message",
        ));
    }
    if chars > CONTENT_CHARS_MAX {
        let problem = format!("must be {CONTENT_CHARS_MAX} or fewer in length, got {chars}");
        return Err(ApiError::invalid_form("content", problem));
    }
    if create.tts {
        return Err(ApiError::invalid_form(
            "tts",
            "text-to-speech is not supported",
        ));
    }
    Ok(create)
}

fn nonce_string(nonce: Option<serde_json::Value>) -> Result<Option<String>, ApiError> {
    let nonce = match nonce {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(ApiError::invalid_form(
                "nonce",
                "must be a string or an integer",
            ))
        }
    };
    if nonce.chars().count() > NONCE_CHARS_MAX {
        let problem = format!("must be {NONCE_CHARS_MAX} or fewer in length");
        return Err(ApiError::invalid_form("nonce", problem));
    }
    Ok(Some(nonce))
}

/// The body as JSON bytes: 413 past the size limit, 415 if it is declared as something else.
fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, 40005, "Request entity too large")
        } else {
            ApiError::new(status, 0, rejection.body_text())
        }
    })?;
    let declared = headers.get("content-type").and_then(|v| v.to_str().ok());
    if declared.is_some_and(|v| !v.trim_start().starts_with("application/json")) {
        let message = "Content-Type must be application/json";
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            0,
            message,
        ));
    }
    Ok(body)
}

async fn create_message(
    State(api): State<Arc<Api>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<MessageView>, ApiError> {
    // 1. Who, where, and what.
    let user = api.authenticate(&headers)?;
    let (channel_id, guild_id) = api.authorize(&user, &channel_id)?;
    let body = json_body(&headers, body)?;
    let create = parse_create(&body)?;
    let nonce = nonce_string(create.nonce)?;

    // 2. The guild orders, stores and fans out.
    let request = GuildRequest::CreateMessage {
        channel_id,
        author_id: user.id,
        content: create.content,
        nonce,
    };
    let answer = api
        .config
        .guilds
        .call(guild_id, &request, GUILD_CALL_TIMEOUT);
    match answer.await {
        Ok(GuildResponse::Created(message)) => Ok(Json(MessageView::of(&message, &user.username))),
        Ok(GuildResponse::UnknownChannel) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            10003,
            "Unknown Channel",
        )),
        Ok(GuildResponse::Failed(error)) => Err(ApiError::store(&error)),
        Ok(other) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            0,
            format!("guild service answered a create with {other:?}"),
        )),
        Err(RpcError::Unreachable { reason, .. }) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            0,
            format!("guild service unreachable: {reason}"),
        )),
        Err(RpcError::Unknown { reason, .. }) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            0,
            format!("guild service did not answer: {reason}"),
        )),
    }
}

/// The query of a history request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    before: Option<String>,
    limit: Option<String>,
}

fn parse_history(params: &HistoryParams) -> Result<(Option<u64>, usize), ApiError> {
    let before = match &params.before {
        None => None,
        Some(text) => {
            let id = text
                .parse()
                .map_err(|_| ApiError::invalid_form("before", "not a snowflake"))?;
            Some(id)
        }
    };
    let limit = match &params.limit {
        None => 50,
        Some(text) => {
            let range = || ApiError::invalid_form("limit", "must be between 1 and 100");
            let digits = text.strip_prefix('-').unwrap_or(text);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::invalid_form("limit", "not an integer"));
            }
            let limit: usize = text.parse().map_err(|_| range())?;
            if !(1..=100).contains(&limit) {
                return Err(range());
            }
            limit
        }
    };
    Ok((before, limit))
}

async fn history(
    State(api): State<Arc<Api>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<MessageView>>, ApiError> {
    let user = api.authenticate(&headers)?;
    let (channel_id, _guild_id) = api.authorize(&user, &channel_id)?;
    let Query(params) = params.map_err(|e| ApiError::invalid_form("query", e.body_text()))?;
    let (before, limit) = parse_history(&params)?;

    let query = HistoryQuery {
        channel_id,
        before,
        limit,
    };
    let messages = api
        .config
        .data
        .history(query)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let directory = api.config.directory.read();
    let views = messages
        .iter()
        .map(|m| MessageView::of(m, directory.username(m.author_id)));
    Ok(Json(views.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_errors_name_the_field() {
        let err = parse_create(br#"{"content": ""}"#).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (50006, "Cannot send an empty message")
        );
        let err = parse_create(br#"{"content": "hi", "colour": 1}"#).unwrap_err();
        assert!(err.message.contains("colour"), "{}", err.message);
        let long = format!(r#"{{"content": "{}"}}"#, "x".repeat(2001));
        let err = parse_create(long.as_bytes()).unwrap_err();
        assert!(err.message.contains("2000 or fewer"), "{}", err.message);
        assert_eq!(parse_create(br#"{"content": "hi"}"#).unwrap().content, "hi");
        let err = parse_create(br#"{"content": "   "}"#).unwrap_err();
        assert_eq!((err.status, err.code), (StatusCode::BAD_REQUEST, 50006));
        let err = parse_create(b"{").unwrap_err();
        assert_eq!(err.message.matches("line 1").count(), 1, "{}", err.message);
    }

    #[test]
    fn nonce_accepts_strings_and_integers_up_to_25() {
        assert_eq!(
            nonce_string(Some(json!("abc"))).unwrap(),
            Some("abc".to_string())
        );
        assert_eq!(
            nonce_string(Some(json!(42))).unwrap(),
            Some("42".to_string())
        );
        assert!(nonce_string(Some(json!("x".repeat(26)))).is_err());
        assert!(nonce_string(Some(json!([1]))).is_err());
    }

    #[test]
    fn history_limit_is_bounded() {
        let params = |limit: &str| HistoryParams {
            before: None,
            limit: Some(limit.into()),
        };
        assert_eq!(parse_history(&params("100")).unwrap().1, 100);
        assert!(parse_history(&params("0")).is_err());
        assert!(parse_history(&params("101")).is_err());
        let message = |limit: &str| parse_history(&params(limit)).unwrap_err().message;
        assert!(message("ten").contains("not an integer"));
        assert!(message("-1").contains("between 1 and 100"));
        assert!(message("99999999999999999999").contains("between 1 and 100"));
    }
}
