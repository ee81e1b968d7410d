//! The API role: Discord v10 REST under `/api/v10`.
//!
//! Served: `GET /gateway` and `/gateway/bot`; `GET /users/@me`; messages
//! ([`messages`]: create with `nonce` / `enforce_nonce`, history with `before` / `after` /
//! `around` / `limit`, edit, delete); guilds, channels and members ([`guilds`]). Every call
//! but `/gateway` needs `Authorization: Bot <token>` or `Bearer <token>` (401 otherwise), a
//! user reads and writes only in guilds they are a member of (403 / 50001), and every call is
//! rate limited per user and route bucket with Discord's headers ([`ratelimit`]). Errors are
//! Discord-shaped JSON bodies with Discord's codes ([`error`]); a bad snowflake anywhere, in the
//! path or the query, is a 400 / 50035 naming the field.
//!
//! Writes go to the guild node that orders the guild, by the placement ring
//! ([`Api::call_guild`]); history reads go to the data-service node of the channel, which
//! coalesces identical reads ([`Api::read_history`]). A new guild's id is minted here, so
//! the ring can place it before it exists. This node's directory copy answers who may do what; a
//! request that misses in it (an unknown guild or channel, or a denied membership) first
//! catches the copy up from the directory log, then answers 404 or 403 only if it still
//! misses ([`crate::directory`]). A change this node asked the guild for is applied to the
//! copy as soon as the guild answers. Guild reads (the guild, its channels, its members) read
//! the log first, so they show changes made through any node.
//!
//! Not modelled: roles and permission overwrites (membership is the only permission), DMs,
//! attachments, embeds, the per-IP invalid-request limit.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Extension, Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::data::DataClient;
use crate::directory::{self, SharedDirectory, User};
use crate::env::clock::NodeClock;
use crate::guild::{GuildRequest, GuildResponse, GuildRouter};
use crate::ids::SnowflakeGenerator;
use crate::model::StoredMessage;
use crate::store::{HistoryPage, SharedStore};

pub mod error;
pub mod guilds;
pub mod messages;
pub mod ratelimit;

pub use error::ApiError;
pub use messages::{CAUSAL_AFTER_HEADER, CAUSAL_AHEAD_MAX_MS};
use ratelimit::{RateLimiter, RateLimits, Route};

/// The longest message content Discord accepts, in characters.
pub const CONTENT_CHARS_MAX: usize = 2000;
/// The longest nonce Discord accepts, in characters.
pub const NONCE_CHARS_MAX: usize = 25;
const GUILD_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The API role's configuration.
#[derive(Clone)]
pub struct ApiConfig {
    /// This node's copy of who exists.
    pub directory: SharedDirectory,
    /// The message store, for the directory log.
    pub store: SharedStore,
    /// The data service, for history reads (routed by channel).
    pub data: DataClient,
    /// The guild nodes, for everything a guild orders (routed by guild).
    pub guilds: GuildRouter,
    /// What `GET /gateway` answers.
    pub gateway_url: String,
    /// This node's clock (the `X-RateLimit-Reset` times).
    pub clock: NodeClock,
    /// The rate limits.
    pub rate_limits: RateLimits,
    /// This API node's place among the API nodes: its snowflakes (new guilds' ids) use it
    /// as their worker id, with process id 1 (guild nodes use process id 0).
    pub index: usize,
}

/// The API node's shared state.
pub struct Api {
    config: ApiConfig,
    limiter: RateLimiter,
    /// Mints new guilds' ids, which decide the guild node that orders them.
    ids: tokio::sync::Mutex<SnowflakeGenerator>,
}

/// The router of the API role (exposed so tests can serve it on any listener).
pub fn router(config: ApiConfig) -> Router {
    let worker_id = u8::try_from(config.index % 32).unwrap_or(0);
    let api = Arc::new(Api {
        limiter: RateLimiter::new(config.rate_limits),
        ids: tokio::sync::Mutex::new(SnowflakeGenerator::new(config.clock.clone(), worker_id, 1)),
        config,
    });
    let limited = Router::new()
        .route("/api/v10/users/@me", get(current_user))
        .route(
            "/api/v10/channels/{channel_id}/messages",
            get(messages::history).post(messages::create),
        )
        .route(
            "/api/v10/channels/{channel_id}/messages/{message_id}",
            patch(messages::edit).delete(messages::delete),
        )
        .route(
            "/api/v10/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
            put(messages::react).delete(messages::unreact),
        )
        .route("/api/v10/guilds", post(guilds::create_guild))
        .route("/api/v10/guilds/{guild_id}", get(guilds::get_guild))
        .route(
            "/api/v10/guilds/{guild_id}/channels",
            get(guilds::channels).post(guilds::create_channel),
        )
        .route("/api/v10/guilds/{guild_id}/members", get(guilds::members))
        .route(
            "/api/v10/guilds/{guild_id}/members/{user_id}",
            put(guilds::add_member),
        )
        .route_layer(middleware::from_fn_with_state(api.clone(), gate));
    Router::new()
        .route("/api/v10/gateway", get(gateway))
        .route("/api/v10/gateway/bot", get(gateway_bot))
        .merge(limited)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, 0, "404: Not Found") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, 0, "405: Method Not Allowed")
        })
        .with_state(api)
}

/// Runs the API role on `listener`; catches the directory copy up from the log once the
/// store answers.
pub async fn run(listener: TcpListener, config: ApiConfig) {
    tokio::spawn(catch_up_at_start(
        config.directory.clone(),
        config.store.clone(),
    ));
    crate::net::serve_http(listener, router(config)).await;
}

/// [`run`], counting every HTTP request the node serves into `load`, by method.
pub async fn run_counted(listener: TcpListener, config: ApiConfig, load: crate::load::NodeLoad) {
    tokio::spawn(catch_up_at_start(
        config.directory.clone(),
        config.store.clone(),
    ));
    let router = router(config).layer(middleware::from_fn_with_state(load, count_request));
    crate::net::serve_http(listener, router).await;
}

async fn count_request(
    State(load): State<crate::load::NodeLoad>,
    request: Request,
    next: Next,
) -> Response {
    let kind = match *request.method() {
        Method::GET => "get",
        Method::POST => "post",
        Method::PATCH => "patch",
        Method::PUT => "put",
        Method::DELETE => "delete",
        _ => "other",
    };
    load.served(kind);
    next.run(request).await
}

/// Tries a few times to read the directory log; a node that cannot still catches up on its
/// first miss.
async fn catch_up_at_start(directory: SharedDirectory, store: SharedStore) {
    for attempt in 1..=10u32 {
        match directory::catch_up(&directory, &*store).await {
            Ok(changed) => {
                tracing::info!(changed, "api_directory_caught_up");
                return;
            }
            Err(error) => {
                tracing::debug!(attempt, %error, "api_directory_catch_up_failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn gateway(State(api): State<Arc<Api>>) -> Json<serde_json::Value> {
    Json(json!({"url": api.config.gateway_url}))
}

async fn gateway_bot(State(api): State<Arc<Api>>) -> Json<serde_json::Value> {
    Json(json!({
        "url": api.config.gateway_url,
        "shards": 1,
        "session_start_limit": {
            "total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1
        },
    }))
}

async fn current_user(Extension(user): Extension<User>) -> Json<serde_json::Value> {
    Json(json!({
        "id": user.id.to_string(),
        "username": user.username,
        "discriminator": "0",
        "global_name": null,
        "avatar": null,
        "bot": false,
    }))
}

/// The route bucket of a matched path and method, and the path segment of its major
/// parameter (`/api/v10/channels/{id}` → the channel id).
fn route_of(method: &Method, matched: &str) -> Route {
    let messages = matched.starts_with("/api/v10/channels/");
    // A reaction counts against the edit bucket of its message.
    let one_message = matched.ends_with("{message_id}") || matched.ends_with("/@me");
    match (messages, one_message, method.as_str()) {
        (true, false, "POST") => Route::MessageCreate,
        (true, false, _) => Route::MessageRead,
        (true, true, "DELETE") => Route::MessageDelete,
        (true, true, _) => Route::MessageEdit,
        (false, _, "GET") => Route::GuildRead,
        (false, _, _) => Route::GuildWrite,
    }
}

/// Every limited route: authenticate, count against the rate limits, then serve, with the
/// rate limit headers on the answer.
async fn gate(State(api): State<Arc<Api>>, mut request: Request, next: Next) -> Response {
    // 1. Who.
    let user = match api.authenticate(request.headers()) {
        Ok(user) => user,
        Err(error) => return error.into_response(),
    };

    // 2. How much they may still do here.
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let route = route_of(request.method(), &matched);
    let major = request.uri().path().split('/').nth(4).unwrap_or_default();
    let now = tokio::time::Instant::now();
    let checked = api
        .limiter
        .check(user.id, route, major, now, api.config.clock.now_ms());
    let quota = match checked {
        Ok(quota) => quota,
        Err(error) => {
            tracing::debug!(user = user.id, ?route, "rate_limited");
            return error.into_response();
        }
    };

    // 3. Serve.
    request.extensions_mut().insert(user);
    let mut response = next.run(request).await;
    quota.write(response.headers_mut());
    response
}

impl Api {
    fn authenticate(&self, headers: &HeaderMap) -> Result<User, ApiError> {
        let value = headers
            .get("authorization")
            .ok_or_else(ApiError::unauthorized)?;
        let value = value.to_str().map_err(|_| ApiError::unauthorized())?;
        let token = value
            .strip_prefix("Bot ")
            .or_else(|| value.strip_prefix("Bearer "))
            .ok_or_else(ApiError::unauthorized)?;
        self.config
            .directory
            .read()
            .user_by_token(token)
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }

    /// Runs `check` against the directory copy; if it misses (404 or 403), catches the copy
    /// up from the log and runs it again.
    async fn with_catch_up<T>(
        &self,
        check: impl Fn(&directory::Directory) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let started = self.config.directory.catch_ups_started();
        let first = check(&self.config.directory.read());
        match first {
            Err(error) if matches!(error.status.as_u16(), 403 | 404) => {
                let caught_up =
                    directory::catch_up_after(&self.config.directory, &*self.config.store, started)
                        .await;
                if let Err(store_error) = caught_up {
                    tracing::warn!(%store_error, "api_directory_catch_up_failed");
                }
                check(&self.config.directory.read())
            }
            other => other,
        }
    }

    /// Reads the directory log before answering a guild read, so a guild's channels and
    /// members are as fresh as the log (a read that begins after this call's start is shared).
    /// A store that fails leaves the copy as it is.
    pub async fn catch_up_now(&self) {
        let started = self.config.directory.catch_ups_started();
        let directory = &self.config.directory;
        if let Err(error) = directory::catch_up_after(directory, &*self.config.store, started).await
        {
            tracing::warn!(%error, "api_directory_catch_up_failed");
        }
    }

    /// The guild of `channel_id` if `user` is one of its members: 404 / 10003 for an unknown
    /// channel, 403 / 50001 for a non-member.
    pub async fn authorize_channel(&self, user: &User, channel_id: u64) -> Result<u64, ApiError> {
        self.with_catch_up(|directory| {
            let guild = directory
                .guild_of_channel(channel_id)
                .ok_or_else(ApiError::unknown_channel)?;
            if !guild.members.contains(&user.id) {
                return Err(ApiError::missing_access());
            }
            Ok(guild.id)
        })
        .await
    }

    /// That `guild_id` exists and `user` is a member: 404 / 10004 or 403 / 50001.
    pub async fn authorize_guild(&self, user: &User, guild_id: u64) -> Result<(), ApiError> {
        self.with_catch_up(|directory| {
            let guild = directory
                .guilds
                .get(&guild_id)
                .ok_or_else(ApiError::unknown_guild)?;
            if !guild.members.contains(&user.id) {
                return Err(ApiError::missing_access());
            }
            Ok(())
        })
        .await
    }

    /// A new guild's id.
    pub async fn mint_guild_id(&self) -> u64 {
        self.ids.lock().await.next_id()
    }

    /// Sends `request` to the node that orders `guild_id`. The one place the API calls a
    /// guild.
    pub async fn call_guild(
        &self,
        guild_id: u64,
        request: &GuildRequest,
    ) -> Result<GuildResponse, ApiError> {
        let answer = self
            .config
            .guilds
            .call(guild_id, request, GUILD_CALL_TIMEOUT)
            .await;
        let answer = answer.map_err(|e| ApiError::guild_rpc(&e))?;
        match answer {
            GuildResponse::Failed(error) => Err(ApiError::store(&error)),
            GuildResponse::UnknownChannel => Err(ApiError::unknown_channel()),
            GuildResponse::UnknownMessage => Err(ApiError::unknown_message()),
            GuildResponse::UnknownGuild => Err(ApiError::unknown_guild()),
            GuildResponse::UnknownUser => Err(ApiError::unknown_user()),
            GuildResponse::NotMember => Err(ApiError::missing_access()),
            GuildResponse::Changed(record) => {
                self.config.directory.apply(&record);
                Ok(GuildResponse::Changed(record))
            }
            other => Ok(other),
        }
    }

    /// Reads a page of history. The one place the API reads messages.
    pub async fn read_history(&self, page: HistoryPage) -> Result<Vec<StoredMessage>, ApiError> {
        self.config
            .data
            .page(page)
            .await
            .map_err(|e| ApiError::store(&e))
    }

    /// This node's directory copy.
    pub fn directory(&self) -> &SharedDirectory {
        &self.config.directory
    }
}

/// A snowflake from its decimal text: 400 / 50035 naming `field` otherwise.
pub fn parse_snowflake(field: &str, text: &str) -> Result<u64, ApiError> {
    let digits = !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u64>() {
        Ok(id) if digits => Ok(id),
        _ => Err(ApiError::not_snowflake(field, text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snowflakes_are_decimal_u64_and_errors_name_the_field() {
        assert_eq!(
            parse_snowflake("before", "175928847299117063").unwrap(),
            175928847299117063
        );
        for bad in ["", "abc", "-1", "+1", "1.5", "18446744073709551616", " 1"] {
            let error = parse_snowflake("before", bad).unwrap_err();
            let body = error.body();
            assert_eq!(
                (error.status, body["code"].clone()),
                (StatusCode::BAD_REQUEST, json!(50035))
            );
            let detail = &body["errors"]["before"]["_errors"][0];
            assert_eq!(detail["code"], "NUMBER_TYPE_COERCE", "{bad}");
            assert_eq!(
                detail["message"],
                format!("Value \"{bad}\" is not snowflake.")
            );
        }
    }

    #[test]
    fn routes_fall_in_their_buckets() {
        let at = |m: Method, p: &str| route_of(&m, p);
        let messages = "/api/v10/channels/{channel_id}/messages";
        let one = "/api/v10/channels/{channel_id}/messages/{message_id}";
        assert_eq!(at(Method::POST, messages), Route::MessageCreate);
        assert_eq!(at(Method::GET, messages), Route::MessageRead);
        assert_eq!(at(Method::PATCH, one), Route::MessageEdit);
        assert_eq!(at(Method::DELETE, one), Route::MessageDelete);
        assert_eq!(
            at(Method::GET, "/api/v10/guilds/{guild_id}"),
            Route::GuildRead
        );
        assert_eq!(
            at(Method::PUT, "/api/v10/guilds/{guild_id}/members/{user_id}"),
            Route::GuildWrite
        );
    }
}
