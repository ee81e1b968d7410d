//! Messages: create, history, edit and delete, as Discord v10 serves them.
//!
//! - `POST /channels/{c}/messages`: `content` (1–2000 characters, not only whitespace),
//!   `nonce` (a string or an integer, up to 25 characters) and `enforce_nonce`. With
//!   `enforce_nonce`, a send by the same author with the same nonce in the channel within the
//!   guild's window answers the first message and makes none (see [`crate::guild::nonce`]).
//!   An `X-Causal-After: <message id>` header (not Discord's) names the newest message the
//!   sender has seen anywhere; the new message's id is then greater, whatever the guild node's
//!   clock says. An id over [`CAUSAL_AHEAD_MAX_MS`] ahead of this node's clock is refused.
//! - `GET /channels/{c}/messages`: at most one of `before`, `after`, `around`, and `limit`
//!   1–100 (default 50); newest first. `after` gives the `limit` messages right after the id,
//!   `around` `limit / 2` newer ones and the rest at or before it, the message included.
//! - `PATCH /channels/{c}/messages/{m}`: `content`, by the author only (403 / 50005); answers
//!   the message with `edited_timestamp` set.
//! - `DELETE /channels/{c}/messages/{m}`: by the author only (403 / 50013); 204.
//! - A create with `message_reference: {message_id, channel_id?, guild_id?,
//!   fail_if_not_exists?}` is a reply (type 19) to a message of the same channel; a
//!   reference to a message the channel does not hold is refused with 50035 naming
//!   `message_reference` (REPLIES_UNKNOWN_MESSAGE), or sent as a plain message if
//!   `fail_if_not_exists` is false; one naming another channel or guild likewise.
//! - `PUT` / `DELETE /channels/{c}/messages/{m}/reactions/{emoji}/@me`: the caller's
//!   reaction with a unicode emoji (URL-encoded) or `name:id`; 204 whether or not it
//!   changed anything; 10014 for an emoji that is neither; 10008 for an unknown message.
//!
//! A body must be JSON (50109 with serde's line and column otherwise) and may hold only the
//! fields above (50035 naming the unknown one). `tts` is refused; `allowed_mentions` is
//! accepted and ignored, as mentions are not modelled.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{parse_snowflake, Api, ApiError, CONTENT_CHARS_MAX, NONCE_CHARS_MAX};
use crate::directory::User;
use crate::guild::{GuildRequest, GuildResponse};
use crate::model::MessageView;
use crate::ring::client::{HistoryAnchor, HistoryPage};

/// The request header naming the newest message id the sender has seen.
pub const CAUSAL_AFTER_HEADER: &str = "x-causal-after";

/// How far ahead of this node's clock an `X-Causal-After` id may be: further than any clock
/// step the system tolerates, and near enough that one client cannot push a guild's ids far
/// into the future.
pub const CAUSAL_AHEAD_MAX_MS: i64 = 3_600_000;

/// The `X-Causal-After` header's id, if given; an error names the header and what is wrong.
fn causal_after(headers: &HeaderMap, now_ms: i64) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(CAUSAL_AFTER_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    let id = parse_snowflake("X-Causal-After", text)?;
    let ahead_ms = crate::ids::timestamp_ms(id) - now_ms;
    if ahead_ms > CAUSAL_AHEAD_MAX_MS {
        let problem = format!(
            "message id {id} is {ahead_ms} ms ahead of this node's clock \
             (at most {CAUSAL_AHEAD_MAX_MS})"
        );
        return Err(ApiError::invalid_form(
            "X-Causal-After",
            "BASE_TYPE_BAD_VALUE",
            problem,
        ));
    }
    Ok(Some(id))
}

/// The body of a create-message request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateMessage {
    content: String,
    nonce: Option<serde_json::Value>,
    #[serde(default)]
    enforce_nonce: bool,
    #[serde(default)]
    tts: bool,
    #[serde(default, rename = "allowed_mentions")]
    _allowed_mentions: Option<serde_json::Value>,
    #[serde(default)]
    message_reference: Option<MessageReference>,
}

/// A create's `message_reference`: the message a reply answers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageReference {
    message_id: serde_json::Value,
    #[serde(default)]
    channel_id: Option<serde_json::Value>,
    #[serde(default)]
    guild_id: Option<serde_json::Value>,
    #[serde(default = "yes")]
    fail_if_not_exists: bool,
    /// 0 (a reply) is the only reference type served.
    #[serde(default, rename = "type")]
    kind: u8,
}

fn yes() -> bool {
    true
}

/// A snowflake given as a JSON string or integer, at `field`.
fn snowflake_value(field: &str, value: &serde_json::Value) -> Result<u64, ApiError> {
    match value {
        serde_json::Value::String(text) => parse_snowflake(field, text),
        serde_json::Value::Number(number) => number
            .as_u64()
            .ok_or_else(|| ApiError::not_snowflake(field, &number.to_string())),
        other => Err(ApiError::not_snowflake(field, &other.to_string())),
    }
}

/// The refusal of a reply whose reference does not name a message of its channel.
fn unknown_reference() -> ApiError {
    ApiError::invalid_form(
        "message_reference",
        "REPLIES_UNKNOWN_MESSAGE",
        "Unknown message",
    )
}

/// The message a reply answers, checked against the path's channel and guild: `Ok(None)`
/// for a reference that `fail_if_not_exists: false` turns into a plain send.
fn reference_of(
    reference: &MessageReference,
    channel_id: u64,
    guild_id: u64,
) -> Result<Option<u64>, ApiError> {
    if reference.kind != 0 {
        let problem = "Only replies (type 0) are served.";
        return Err(ApiError::invalid_form(
            "message_reference.type",
            "BASE_TYPE_CHOICES",
            problem,
        ));
    }
    let message_id = snowflake_value("message_reference.message_id", &reference.message_id)?;
    let named = |field: &str, value: &Option<serde_json::Value>, expected: u64| match value {
        None | Some(serde_json::Value::Null) => Ok(true),
        Some(value) => Ok(snowflake_value(field, value)? == expected),
    };
    let here = named(
        "message_reference.channel_id",
        &reference.channel_id,
        channel_id,
    )? && named("message_reference.guild_id", &reference.guild_id, guild_id)?;
    match (here, reference.fail_if_not_exists) {
        (true, _) => Ok(Some(message_id)),
        (false, true) => Err(unknown_reference()),
        (false, false) => Ok(None),
    }
}

/// The body of an edit-message request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditMessage {
    content: String,
    #[serde(default, rename = "allowed_mentions")]
    _allowed_mentions: Option<serde_json::Value>,
}

/// A JSON body as `T`: 50109 if it is not JSON (with serde's line and column), 50035 naming
/// the field if it does not fit `T`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        let message = format!("The request body contains invalid JSON: {e}");
        ApiError::new(StatusCode::BAD_REQUEST, 50109, message)
    })?;
    serde_json::from_value(value).map_err(|e| {
        let text = e.to_string();
        let field = text
            .split('`')
            .nth(1)
            .filter(|_| text.contains("field"))
            .unwrap_or("_root");
        ApiError::invalid_form(field, "BASE_TYPE_INVALID", text.clone())
    })
}

/// Content rules of create and edit: not blank, at most 2000 characters.
fn check_content(content: &str) -> Result<(), ApiError> {
    if content.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            50006,
            "Cannot send an empty message",
        ));
    }
    let chars = content.chars().count();
    if chars > CONTENT_CHARS_MAX {
        let problem = format!("Must be {CONTENT_CHARS_MAX} or fewer in length (got {chars}).");
        return Err(ApiError::invalid_form(
            "content",
            "BASE_TYPE_MAX_LENGTH",
            problem,
        ));
    }
    Ok(())
}

fn parse_create(body: &[u8]) -> Result<CreateMessage, ApiError> {
    let create: CreateMessage = parse_json(body)?;
    check_content(&create.content)?;
    if create.tts {
        return Err(ApiError::invalid_form(
            "tts",
            "BASE_TYPE_CHOICES",
            "Text-to-speech is not supported.",
        ));
    }
    Ok(create)
}

fn nonce_string(nonce: Option<serde_json::Value>) -> Result<Option<String>, ApiError> {
    let nonce = match nonce {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(_) => {
            return Err(ApiError::invalid_form(
                "nonce",
                "BASE_TYPE_INVALID",
                "Must be a string or an integer.",
            ))
        }
    };
    if nonce.chars().count() > NONCE_CHARS_MAX {
        let problem = format!("Must be {NONCE_CHARS_MAX} or fewer in length.");
        return Err(ApiError::invalid_form(
            "nonce",
            "BASE_TYPE_MAX_LENGTH",
            problem,
        ));
    }
    Ok(Some(nonce))
}

/// The body as JSON bytes: 413 past the size limit, 415 if it is declared as something else.
pub fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
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

/// `POST /channels/{c}/messages`.
pub(super) async fn create(
    State(api): State<Arc<Api>>,
    Extension(user): Extension<User>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MessageView>, ApiError> {
    // 1. Where, and what.
    let channel_id = parse_snowflake("channel_id", &channel_id)?;
    let guild_id = api.authorize_channel(&user, channel_id).await?;
    let body = json_body(&headers, body)?;
    let create = parse_create(&body)?;
    let nonce = nonce_string(create.nonce)?;
    let after = causal_after(&headers, api.config.clock.now_ms())?;
    let reference = match &create.message_reference {
        Some(reference) => reference_of(reference, channel_id, guild_id)?,
        None => None,
    };
    let may_drop_reference = create
        .message_reference
        .as_ref()
        .is_some_and(|r| !r.fail_if_not_exists);

    // 2. The guild orders, stores and fans out (or answers the first send of a nonce).
    let mut request = GuildRequest::CreateMessage {
        channel_id,
        author_id: user.id,
        content: create.content,
        nonce,
        enforce_nonce: create.enforce_nonce,
        referenced_message_id: reference,
        after,
    };
    let mut answer = api.call_guild(guild_id, &request).await?;
    if matches!(answer, GuildResponse::UnknownReference) && may_drop_reference {
        if let GuildRequest::CreateMessage {
            referenced_message_id,
            ..
        } = &mut request
        {
            *referenced_message_id = None;
        }
        answer = api.call_guild(guild_id, &request).await?;
    }
    match answer {
        GuildResponse::Created(message) => {
            crate::metrics::registry().rest_messages_acknowledged.inc();
            Ok(Json(MessageView::of(&message, &user.username)))
        }
        GuildResponse::UnknownReference => Err(unknown_reference()),
        other => Err(unexpected(&other)),
    }
}

/// A reaction's emoji from the path (already percent-decoded): a unicode emoji, or
/// `name:id` for a custom one; 10014 otherwise.
fn parse_emoji(text: &str) -> Result<String, ApiError> {
    let unknown = || ApiError::new(StatusCode::BAD_REQUEST, 10014, "Unknown Emoji");
    if text.is_empty() || text.len() > EMOJI_BYTES_MAX {
        return Err(unknown());
    }
    if let Some((name, id)) = text.rsplit_once(':') {
        let custom = !name.is_empty()
            && name.chars().all(|c| c.is_alphanumeric() || c == '_')
            && id.parse::<u64>().is_ok();
        return if custom {
            Ok(text.to_string())
        } else {
            Err(unknown())
        };
    }
    // A unicode emoji: no letters, digits, spaces or punctuation of ASCII.
    if text
        .chars()
        .any(|c| c.is_ascii() || c.is_whitespace() || c.is_control())
    {
        return Err(unknown());
    }
    Ok(text.to_string())
}

/// The longest emoji accepted, in bytes (a family with skin tones is about 40).
const EMOJI_BYTES_MAX: usize = 100;

/// `PUT /channels/{c}/messages/{m}/reactions/{emoji}/@me`.
pub(super) async fn react(
    State(api): State<Arc<Api>>,
    Extension(user): Extension<User>,
    Path((channel_id, message_id, emoji)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    reaction(&api, &user, (channel_id, message_id, emoji), true).await
}

/// `DELETE /channels/{c}/messages/{m}/reactions/{emoji}/@me`.
pub(super) async fn unreact(
    State(api): State<Arc<Api>>,
    Extension(user): Extension<User>,
    Path((channel_id, message_id, emoji)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    reaction(&api, &user, (channel_id, message_id, emoji), false).await
}

async fn reaction(
    api: &Api,
    user: &User,
    (channel_id, message_id, emoji): (String, String, String),
    add: bool,
) -> Result<Response, ApiError> {
    let channel_id = parse_snowflake("channel_id", &channel_id)?;
    let message_id = parse_snowflake("message_id", &message_id)?;
    let emoji = parse_emoji(&emoji)?;
    let guild_id = api.authorize_channel(user, channel_id).await?;
    let request = if add {
        GuildRequest::AddReaction {
            channel_id,
            message_id,
            user_id: user.id,
            emoji,
        }
    } else {
        GuildRequest::RemoveReaction {
            channel_id,
            message_id,
            user_id: user.id,
            emoji,
        }
    };
    match api.call_guild(guild_id, &request).await? {
        GuildResponse::Reacted => Ok(StatusCode::NO_CONTENT.into_response()),
        other => Err(unexpected(&other)),
    }
}

/// `PATCH /channels/{c}/messages/{m}`.
pub(super) async fn edit(
    State(api): State<Arc<Api>>,
    Extension(user): Extension<User>,
    Path((channel_id, message_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MessageView>, ApiError> {
    let channel_id = parse_snowflake("channel_id", &channel_id)?;
    let message_id = parse_snowflake("message_id", &message_id)?;
    let guild_id = api.authorize_channel(&user, channel_id).await?;
    let body = json_body(&headers, body)?;
    let edit: EditMessage = parse_json(&body)?;
    check_content(&edit.content)?;

    let request = GuildRequest::EditMessage {
        channel_id,
        message_id,
        actor_id: user.id,
        content: edit.content,
    };
    match api.call_guild(guild_id, &request).await? {
        GuildResponse::Updated(message) => Ok(Json(MessageView::of(&message, &user.username))),
        GuildResponse::NotAuthor => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            50005,
            "Cannot edit a message authored by another user",
        )),
        other => Err(unexpected(&other)),
    }
}

/// `DELETE /channels/{c}/messages/{m}`.
pub(super) async fn delete(
    State(api): State<Arc<Api>>,
    Extension(user): Extension<User>,
    Path((channel_id, message_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let channel_id = parse_snowflake("channel_id", &channel_id)?;
    let message_id = parse_snowflake("message_id", &message_id)?;
    let guild_id = api.authorize_channel(&user, channel_id).await?;

    let request = GuildRequest::DeleteMessage {
        channel_id,
        message_id,
        actor_id: user.id,
    };
    match api.call_guild(guild_id, &request).await? {
        GuildResponse::Deleted => Ok(StatusCode::NO_CONTENT.into_response()),
        GuildResponse::NotAuthor => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            50013,
            "Missing Permissions",
        )),
        other => Err(unexpected(&other)),
    }
}

/// A guild answer that does not fit the request: a bug between the roles.
pub(super) fn unexpected(answer: &GuildResponse) -> ApiError {
    tracing::error!(?answer, "guild_answer_unexpected");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        0,
        "the guild service gave an unexpected answer",
    )
}

/// The query of a history request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryParams {
    before: Option<String>,
    after: Option<String>,
    around: Option<String>,
    limit: Option<String>,
}

/// `limit`: 1–100, default 50.
fn parse_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = limit else {
        return Ok(50);
    };
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        let problem = format!("Value \"{text}\" is not int.");
        return Err(ApiError::invalid_form(
            "limit",
            "NUMBER_TYPE_COERCE",
            problem,
        ));
    }
    let too_big = || {
        let problem = "int value should be less than or equal to 100.";
        ApiError::invalid_form("limit", "NUMBER_TYPE_MAX", problem)
    };
    if text.starts_with('-') || text.parse::<u64>().is_ok_and(|n| n == 0) {
        let problem = "int value should be greater than or equal to 1.";
        return Err(ApiError::invalid_form("limit", "NUMBER_TYPE_MIN", problem));
    }
    let limit: usize = text.parse().map_err(|_| too_big())?;
    if limit > 100 {
        return Err(too_big());
    }
    Ok(limit)
}

fn parse_history(params: &HistoryParams) -> Result<(HistoryAnchor, usize), ApiError> {
    let limit = parse_limit(params.limit.as_deref())?;
    let anchors = [
        ("before", &params.before),
        ("after", &params.after),
        ("around", &params.around),
    ];
    let given: Vec<(&str, &String)> = anchors
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| (*name, v)))
        .collect();
    let anchor = match given.as_slice() {
        [] => HistoryAnchor::Latest,
        [("before", text)] => HistoryAnchor::Before(parse_snowflake("before", text)?),
        [("after", text)] => HistoryAnchor::After(parse_snowflake("after", text)?),
        [(field, text)] => HistoryAnchor::Around(parse_snowflake(field, text)?),
        [_, (second, _), ..] => {
            let problem = "before, after and around are mutually exclusive.";
            return Err(ApiError::invalid_form(second, "BASE_TYPE_INVALID", problem));
        }
    };
    Ok((anchor, limit))
}

/// `GET /channels/{c}/messages`.
pub(super) async fn history(
    State(api): State<Arc<Api>>,
    Extension(user): Extension<User>,
    Path(channel_id): Path<String>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<Vec<MessageView>>, ApiError> {
    let channel_id = parse_snowflake("channel_id", &channel_id)?;
    let Query(params) =
        params.map_err(|e| ApiError::invalid_form("_query", "BASE_TYPE_INVALID", e.body_text()))?;
    let (anchor, limit) = parse_history(&params)?;
    api.authorize_channel(&user, channel_id).await?;

    let page = HistoryPage {
        channel_id,
        anchor,
        limit,
    };
    let messages = api.read_history(page).await?;
    let directory = api.directory().read();
    let views = messages
        .iter()
        .map(|m| MessageView::seen_by(m, directory.username(m.author_id), Some(user.id)));
    Ok(Json(views.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detail(error: &ApiError, field: &str) -> String {
        error.body()["errors"][field]["_errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn create_body_errors_name_the_field() {
        let err = parse_create(br#"{"content": ""}"#).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (50006, "Cannot send an empty message")
        );
        let err = parse_create(br#"{"content": "hi", "colour": 1}"#).unwrap_err();
        assert_eq!(err.code, 50035);
        assert!(
            detail(&err, "colour").contains("unknown field"),
            "{:?}",
            err.body()
        );
        let long = format!(r#"{{"content": "{}"}}"#, "x".repeat(2001));
        let err = parse_create(long.as_bytes()).unwrap_err();
        assert!(
            detail(&err, "content").contains("2000 or fewer"),
            "{:?}",
            err.body()
        );
        assert_eq!(parse_create(br#"{"content": "hi"}"#).unwrap().content, "hi");
        let err = parse_create(br#"{"content": "   "}"#).unwrap_err();
        assert_eq!((err.status, err.code), (StatusCode::BAD_REQUEST, 50006));
        let err = parse_create(b"{").unwrap_err();
        assert_eq!((err.status, err.code), (StatusCode::BAD_REQUEST, 50109));
        assert_eq!(err.message.matches("line 1").count(), 1, "{}", err.message);
        let err = parse_create(br#"{"content": 5}"#).unwrap_err();
        assert_eq!(err.code, 50035);
    }

    #[test]
    fn emoji_are_unicode_or_name_and_id() {
        assert_eq!(parse_emoji("🔥").unwrap(), "🔥");
        assert_eq!(parse_emoji("❤️").unwrap(), "❤️");
        assert_eq!(
            parse_emoji("blob_1:41771983429993937").unwrap(),
            "blob_1:41771983429993937"
        );
        for bad in ["", "x", "fire", "🔥 ", "blob:", ":1", "blob:x1", "a b:1"] {
            let error = parse_emoji(bad).unwrap_err();
            assert_eq!(
                (error.status, error.code),
                (StatusCode::BAD_REQUEST, 10014),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_reference_names_a_message_of_this_channel_and_guild() {
        let reference =
            |json: serde_json::Value| -> MessageReference { serde_json::from_value(json).unwrap() };
        assert_eq!(
            reference_of(&reference(json!({"message_id": "9"})), 7, 3).unwrap(),
            Some(9)
        );
        let full = json!({"message_id": 9, "channel_id": "7", "guild_id": "3", "type": 0});
        assert_eq!(reference_of(&reference(full), 7, 3).unwrap(), Some(9));
        let elsewhere = json!({"message_id": "9", "channel_id": "8"});
        let error = reference_of(&reference(elsewhere.clone()), 7, 3).unwrap_err();
        assert_eq!(detail(&error, "message_reference"), "Unknown message");
        let mut lenient = elsewhere;
        lenient["fail_if_not_exists"] = json!(false);
        assert_eq!(reference_of(&reference(lenient), 7, 3).unwrap(), None);
        let error = reference_of(&reference(json!({"message_id": "x9"})), 7, 3).unwrap_err();
        assert_eq!(
            detail(&error, "message_reference.message_id"),
            "Value \"x9\" is not snowflake."
        );
        let error =
            parse_create(br#"{"content": "hi", "message_reference": {"id": "9"}}"#).unwrap_err();
        assert_eq!(error.code, 50035);
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
        assert!(nonce_string(Some(json!("x".repeat(25)))).is_ok());
        let err = nonce_string(Some(json!("x".repeat(26)))).unwrap_err();
        assert!(detail(&err, "nonce").contains("25 or fewer"));
        assert!(nonce_string(Some(json!([1]))).is_err());
        assert!(nonce_string(Some(json!(1.5))).is_err());
    }

    #[test]
    fn history_limit_is_bounded() {
        let params = |limit: &str| HistoryParams {
            limit: Some(limit.into()),
            ..HistoryParams::default()
        };
        assert_eq!(parse_history(&params("100")).unwrap().1, 100);
        assert_eq!(
            parse_history(&HistoryParams::default()).unwrap(),
            (HistoryAnchor::Latest, 50)
        );
        let problem = |limit: &str| {
            let error = parse_history(&params(limit)).unwrap_err();
            assert_eq!((error.status, error.code), (StatusCode::BAD_REQUEST, 50035));
            let body = error.body();
            body["errors"]["limit"]["_errors"][0]["code"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(problem("0"), "NUMBER_TYPE_MIN");
        assert_eq!(problem("-1"), "NUMBER_TYPE_MIN");
        assert_eq!(problem("101"), "NUMBER_TYPE_MAX");
        assert_eq!(problem("99999999999999999999"), "NUMBER_TYPE_MAX");
        assert_eq!(problem("ten"), "NUMBER_TYPE_COERCE");
    }

    #[test]
    fn history_anchors_are_snowflakes_and_exclusive() {
        let at = |before: Option<&str>, after: Option<&str>, around: Option<&str>| {
            parse_history(&HistoryParams {
                before: before.map(Into::into),
                after: after.map(Into::into),
                around: around.map(Into::into),
                limit: None,
            })
        };
        assert_eq!(
            at(Some("5"), None, None).unwrap().0,
            HistoryAnchor::Before(5)
        );
        assert_eq!(
            at(None, Some("6"), None).unwrap().0,
            HistoryAnchor::After(6)
        );
        assert_eq!(
            at(None, None, Some("7")).unwrap().0,
            HistoryAnchor::Around(7)
        );
        let err = at(None, Some("x1"), None).unwrap_err();
        assert_eq!(detail(&err, "after"), "Value \"x1\" is not snowflake.");
        let err = at(Some("1"), Some("2"), None).unwrap_err();
        assert!(detail(&err, "after").contains("mutually exclusive"));
    }
}
