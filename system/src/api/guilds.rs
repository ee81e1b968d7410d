//! Guilds, channels and members, as Discord v10 serves them.
//!
//! - `POST /guilds` `{"name"}` (2–100 characters): a guild with one text channel, `general`,
//!   owned by the caller, its only member; 201 with the guild object.
//! - `GET /guilds/{g}`: the guild object with its channels and members (members only).
//! - `POST /guilds/{g}/channels` `{"name", "type"}` (1–100 characters, type 0 only): 201 with
//!   the channel object (any member may).
//! - `GET /guilds/{g}/channels`: the guild's text channels.
//! - `PUT /guilds/{g}/members/{u}`: adds user `u` (any member may add anyone; Discord's
//!   OAuth2 `access_token` is accepted and not checked); 201 with the member object, or 204 if
//!   `u` already was one.
//! - `GET /guilds/{g}/members?limit&after`: members by id, `limit` 1–1000 (default 1).
//!
//! Every change goes to the guild's process, which orders, persists and dispatches it. The
//! reads catch this node's directory copy up from the log first, so they show changes made
//! through any API node.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use super::messages::{json_body, parse_json, unexpected};
use super::{parse_snowflake, Api, ApiError};
use crate::directory::{channel_json, DirectoryChange, User};
use crate::guild::{GuildRequest, GuildResponse};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGuild {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateChannel {
    name: String,
    #[serde(default, rename = "type")]
    kind: u8,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    #[serde(rename = "access_token")]
    _access_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MembersParams {
    limit: Option<String>,
    after: Option<String>,
}

fn check_name(field: &str, name: &str, min: usize) -> Result<(), ApiError> {
    let chars = name.trim().chars().count();
    if !(min..=100).contains(&chars) {
        let problem = format!("Must be between {min} and 100 in length.");
        return Err(ApiError::invalid_form(
            field,
            "BASE_TYPE_BAD_LENGTH",
            problem,
        ));
    }
    Ok(())
}

/// The guild object of `guild_id` from this node's copy.
fn guild_json(api: &Api, guild_id: u64) -> Result<Value, ApiError> {
    api.directory()
        .read()
        .guild_json(guild_id)
        .ok_or_else(ApiError::unknown_guild)
}

/// `POST /guilds`.
pub(super) async fn create_guild(
    State(api): State<Arc<Api>>,
    Extension(user): Extension<User>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body)?;
    let create: CreateGuild = parse_json(&body)?;
    check_name("name", &create.name, 2)?;
    let guild_id = api.mint_guild_id().await;
    let request = GuildRequest::CreateGuild {
        guild_id,
        owner_id: user.id,
        name: create.name.trim().to_string(),
    };
    match api.call_guild(guild_id, &request).await? {
        GuildResponse::Changed(record) => {
            let guild = guild_json(&api, record.guild_id())?;
            Ok((StatusCode::CREATED, Json(guild)).into_response())
        }
        other => Err(unexpected(&other)),
    }
}

/// `GET /guilds/{g}`.
pub(super) async fn get_guild(
    State(api): State<Arc<Api>>,
    Extension(user): Extension<User>,
    Path(guild_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let guild_id = parse_snowflake("guild_id", &guild_id)?;
    api.catch_up_now().await;
    api.authorize_guild(&user, guild_id).await?;
    Ok(Json(guild_json(&api, guild_id)?))
}

/// `POST /guilds/{g}/channels`.
pub(super) async fn create_channel(
    State(api): State<Arc<Api>>,
    Extension(user): Extension<User>,
    Path(guild_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let guild_id = parse_snowflake("guild_id", &guild_id)?;
    api.authorize_guild(&user, guild_id).await?;
    let body = json_body(&headers, body)?;
    let create: CreateChannel = parse_json(&body)?;
    check_name("name", &create.name, 1)?;
    if create.kind != 0 {
        let problem = format!("Value \"{}\" is not a supported channel type.", create.kind);
        return Err(ApiError::invalid_form("type", "BASE_TYPE_CHOICES", problem));
    }

    let request = GuildRequest::CreateChannel {
        guild_id,
        actor_id: user.id,
        name: create.name.trim().to_string(),
    };
    match api.call_guild(guild_id, &request).await? {
        GuildResponse::Changed(record) => match record.change {
            DirectoryChange::ChannelCreated { guild_id, channel } => {
                let channel = channel_json(guild_id, &channel);
                Ok((StatusCode::CREATED, Json(channel)).into_response())
            }
            _ => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                0,
                "the guild service made another change",
            )),
        },
        other => Err(unexpected(&other)),
    }
}

/// `GET /guilds/{g}/channels`.
pub(super) async fn channels(
    State(api): State<Arc<Api>>,
    Extension(user): Extension<User>,
    Path(guild_id): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let guild_id = parse_snowflake("guild_id", &guild_id)?;
    api.catch_up_now().await;
    api.authorize_guild(&user, guild_id).await?;
    let directory = api.directory().read();
    let guild = directory
        .guilds
        .get(&guild_id)
        .ok_or_else(ApiError::unknown_guild)?;
    Ok(Json(
        guild
            .channels
            .iter()
            .map(|c| channel_json(guild_id, c))
            .collect(),
    ))
}

/// `PUT /guilds/{g}/members/{u}`.
pub(super) async fn add_member(
    State(api): State<Arc<Api>>,
    Extension(user): Extension<User>,
    Path((guild_id, user_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let guild_id = parse_snowflake("guild_id", &guild_id)?;
    let user_id = parse_snowflake("user_id", &user_id)?;
    api.authorize_guild(&user, guild_id).await?;
    let body = json_body(&headers, body)?;
    if !body.is_empty() {
        let _: AddMember = parse_json(&body)?;
    }

    let request = GuildRequest::AddMember {
        guild_id,
        actor_id: user.id,
        user_id,
    };
    match api.call_guild(guild_id, &request).await? {
        GuildResponse::Changed(_) => {
            let mut member = api.directory().read().member_json(user_id);
            member["guild_id"] = Value::String(guild_id.to_string());
            Ok((StatusCode::CREATED, Json(member)).into_response())
        }
        GuildResponse::Unchanged => Ok(StatusCode::NO_CONTENT.into_response()),
        other => Err(unexpected(&other)),
    }
}

/// `GET /guilds/{g}/members`.
pub(super) async fn members(
    State(api): State<Arc<Api>>,
    Extension(user): Extension<User>,
    Path(guild_id): Path<String>,
    params: Result<Query<MembersParams>, QueryRejection>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let guild_id = parse_snowflake("guild_id", &guild_id)?;
    let Query(params) =
        params.map_err(|e| ApiError::invalid_form("_query", "BASE_TYPE_INVALID", e.body_text()))?;
    let limit = match params.limit.as_deref() {
        None => 1,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=1000).contains(&limit) => limit,
            _ => {
                let problem = format!("Value \"{text}\" is not an int between 1 and 1000.");
                return Err(ApiError::invalid_form("limit", "NUMBER_TYPE_MAX", problem));
            }
        },
    };
    let after = match params.after.as_deref() {
        None => 0,
        Some(text) => parse_snowflake("after", text)?,
    };
    api.catch_up_now().await;
    api.authorize_guild(&user, guild_id).await?;

    let directory = api.directory().read();
    let guild = directory
        .guilds
        .get(&guild_id)
        .ok_or_else(ApiError::unknown_guild)?;
    let members = guild
        .members
        .range(after.saturating_add(1)..)
        .take(limit)
        .map(|&id| directory.member_json(id))
        .collect();
    Ok(Json(members))
}
