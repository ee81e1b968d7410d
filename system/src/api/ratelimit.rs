//! Rate limits per user and route bucket, with Discord's headers.
//!
//! Each route belongs to a bucket ([`Route`]); a user's requests to a bucket are counted per
//! major parameter (the channel or guild in the path) in fixed windows: the first request
//! opens a window of the bucket's period, at most its limit pass in it, the rest get 429
//! until it ends. A global window per user caps all of the user's requests together.
//!
//! Every limited answer carries `X-RateLimit-Limit`, `-Remaining`, `-Reset` (Unix seconds,
//! from the node's clock), `-Reset-After` (seconds) and `-Bucket` (an opaque id of the
//! bucket); a 429 adds `Retry-After`, `X-RateLimit-Scope: user`, `X-RateLimit-Global` when the
//! global limit was hit, and the body `{"message", "retry_after", "global", "code"}`.
//! Windows are timed with `tokio::time` (simulated in the simulator), never the wall clock.
//!
//! Not modelled: Cloudflare's ban on too many invalid requests, shared-scope buckets, limits
//! per IP (only authenticated users are limited). Counts are per API node: a user spreading
//! requests over several nodes gets each node's allowance.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::json;
use tokio::time::Instant;

use super::error::ApiError;

/// A route bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// `POST /channels/{id}/messages`.
    MessageCreate,
    /// `GET /channels/{id}/messages`.
    MessageRead,
    /// `PATCH /channels/{id}/messages/{id}`.
    MessageEdit,
    /// `DELETE /channels/{id}/messages/{id}`.
    MessageDelete,
    /// `POST /guilds`, `POST /guilds/{id}/channels`, `PUT /guilds/{id}/members/{id}`.
    GuildWrite,
    /// `GET /guilds/{id}`, its channels and its members; `GET /users/@me`.
    GuildRead,
}

impl Route {
    /// The bucket's name, hashed into `X-RateLimit-Bucket`.
    fn name(self) -> &'static str {
        match self {
            Route::MessageCreate => "channels/messages/create",
            Route::MessageRead => "channels/messages/read",
            Route::MessageEdit => "channels/messages/edit",
            Route::MessageDelete => "channels/messages/delete",
            Route::GuildWrite => "guilds/write",
            Route::GuildRead => "guilds/read",
        }
    }

    /// The opaque bucket id clients group routes by.
    pub fn bucket_id(self) -> String {
        format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(self.name().as_bytes())
        )
    }
}

/// At most `limit` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests per window.
    pub limit: u32,
    /// The window's length.
    pub period: Duration,
}

impl Limit {
    const fn per_second(limit: u32, seconds: u64) -> Self {
        Self {
            limit,
            period: Duration::from_secs(seconds),
        }
    }
}

/// The limits of every bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// All of a user's requests together (Discord: 50 per second).
    pub global: Limit,
    /// Sends per channel (Discord: 5 per 5 s).
    pub message_create: Limit,
    /// History reads per channel.
    pub message_read: Limit,
    /// Edits per channel.
    pub message_edit: Limit,
    /// Deletes per channel.
    pub message_delete: Limit,
    /// Guild, channel and member creation per guild.
    pub guild_write: Limit,
    /// Guild, channel and member reads per guild.
    pub guild_read: Limit,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            global: Limit::per_second(50, 1),
            message_create: Limit::per_second(5, 5),
            message_read: Limit::per_second(50, 5),
            message_edit: Limit::per_second(5, 5),
            message_delete: Limit::per_second(5, 1),
            guild_write: Limit::per_second(10, 10),
            guild_read: Limit::per_second(50, 5),
        }
    }
}

impl RateLimits {
    /// No limit a client could reach: for workloads that replay recorded traffic at a
    /// speed-up, whose bursts Discord's limits would only stretch out.
    pub fn unlimited() -> Self {
        let open = Limit::per_second(u32::MAX, 1);
        Self {
            global: open,
            message_create: open,
            message_read: open,
            message_edit: open,
            message_delete: open,
            guild_write: open,
            guild_read: open,
        }
    }

    fn of(&self, route: Route) -> Limit {
        match route {
            Route::MessageCreate => self.message_create,
            Route::MessageRead => self.message_read,
            Route::MessageEdit => self.message_edit,
            Route::MessageDelete => self.message_delete,
            Route::GuildWrite => self.guild_write,
            Route::GuildRead => self.guild_read,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    used: u32,
}

/// Which window: (user, bucket or `None` for global, major parameter).
type WindowKey = (u64, Option<Route>, String);

/// Windows kept before ended ones are dropped.
const WINDOWS_KEPT: usize = 10_000;

/// What a request that passed may still do in its bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    /// The bucket.
    pub route: Route,
    /// Its limit.
    pub limit: u32,
    /// Requests left in the window.
    pub remaining: u32,
    /// Until the window ends.
    pub reset_after: Duration,
    /// The node's clock, Unix ms, when it was counted.
    pub now_unix_ms: i64,
}

impl Quota {
    /// Discord's rate limit headers.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let reset_after = self.reset_after.as_secs_f64();
        let reset = self.now_unix_ms as f64 / 1000.0 + reset_after;
        let pairs = [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", format!("{reset:.3}")),
            ("x-ratelimit-reset-after", format!("{reset_after:.3}")),
            ("x-ratelimit-bucket", self.route.bucket_id()),
        ];
        pairs
            .into_iter()
            .filter_map(|(name, value)| {
                let value = HeaderValue::from_str(&value).ok()?;
                Some((HeaderName::from_static(name), value))
            })
            .collect()
    }

    /// Adds the headers to `headers`.
    pub fn write(&self, headers: &mut HeaderMap) {
        for (name, value) in self.headers() {
            headers.insert(name, value);
        }
    }
}

/// One API node's windows.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    windows: Mutex<BTreeMap<WindowKey, Window>>,
}

impl RateLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            windows: Mutex::default(),
        }
    }

    /// Counts a request of `user_id` to `route` about `major`: its quota, or the 429.
    pub fn check(
        &self,
        user_id: u64,
        route: Route,
        major: &str,
        now: Instant,
        now_unix_ms: i64,
    ) -> Result<Quota, ApiError> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > WINDOWS_KEPT {
            let longest = self.limits.longest_period();
            windows.retain(|_, w| now.duration_since(w.opened) < longest);
        }

        // 1. The global window, then the bucket's: both must have room.
        let global = self.limits.global;
        let global_key = (user_id, None, String::new());
        let global_window = open(&mut windows, global_key.clone(), global, now);
        let bucket = self.limits.of(route);
        let key = (user_id, Some(route), major.to_string());
        let window = open(&mut windows, key.clone(), bucket, now);
        let quota = |window: Window, limit: Limit| Quota {
            route,
            limit: limit.limit,
            remaining: limit.limit.saturating_sub(window.used),
            reset_after: (window.opened + limit.period).saturating_duration_since(now),
            now_unix_ms,
        };
        if global_window.used >= global.limit {
            return Err(too_many(
                &quota(window, bucket),
                &quota(global_window, global),
                true,
            ));
        }
        if window.used >= bucket.limit {
            let bucket_quota = quota(window, bucket);
            return Err(too_many(&bucket_quota, &bucket_quota, false));
        }

        // 2. Count it in both.
        for (key, window) in [(global_key, global_window), (key, window)] {
            windows.insert(
                key,
                Window {
                    used: window.used + 1,
                    ..window
                },
            );
        }
        Ok(quota(
            Window {
                used: window.used + 1,
                ..window
            },
            bucket,
        ))
    }
}

impl RateLimits {
    fn longest_period(&self) -> Duration {
        [
            self.global,
            self.message_create,
            self.message_read,
            self.message_edit,
            self.message_delete,
            self.guild_write,
            self.guild_read,
        ]
        .iter()
        .map(|l| l.period)
        .max()
        .unwrap_or_default()
    }
}

/// The window of `key` at `now`: the open one, or a fresh one if it ended or never opened.
fn open(
    windows: &mut BTreeMap<WindowKey, Window>,
    key: WindowKey,
    limit: Limit,
    now: Instant,
) -> Window {
    match windows.get(&key) {
        Some(window) if now.duration_since(window.opened) < limit.period => *window,
        _ => Window {
            opened: now,
            used: 0,
        },
    }
}

/// The 429: the bucket's headers, and the wait of whichever limit was hit.
fn too_many(bucket: &Quota, hit: &Quota, global: bool) -> ApiError {
    let retry_after = hit.reset_after.as_secs_f64();
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        0,
        "You are being rate limited.",
    );
    error.headers = bucket.headers();
    let retry_whole = retry_after.ceil().max(1.0).to_string();
    let extra = [
        ("retry-after", retry_whole),
        ("x-ratelimit-scope", "user".to_string()),
    ];
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(&value) {
            error.headers.push((HeaderName::from_static(name), value));
        }
    }
    if global {
        error.headers.push((
            HeaderName::from_static("x-ratelimit-global"),
            HeaderValue::from_static("true"),
        ));
    }
    error.rate_limited = Some(json!({"retry_after": round_ms(retry_after), "global": global}));
    error
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter {
        RateLimiter::new(RateLimits {
            global: Limit::per_second(4, 1),
            message_create: Limit::per_second(2, 5),
            ..RateLimits::default()
        })
    }

    #[tokio::test]
    async fn a_bucket_counts_down_then_refuses_until_its_window_ends() {
        let limiter = limiter();
        let t0 = Instant::now();
        let first = limiter.check(1, Route::MessageCreate, "9", t0, 0).unwrap();
        assert_eq!((first.limit, first.remaining), (2, 1));
        assert_eq!(first.reset_after, Duration::from_secs(5));
        let t1 = t0 + Duration::from_millis(1500);
        let second = limiter.check(1, Route::MessageCreate, "9", t1, 0).unwrap();
        assert_eq!(second.remaining, 0);
        assert_eq!(second.reset_after, Duration::from_millis(3500));

        let t2 = t0 + Duration::from_millis(2000);
        let refused = limiter
            .check(1, Route::MessageCreate, "9", t2, 0)
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.body()["retry_after"], 3.0);
        assert_eq!(refused.body()["global"], false);

        // Another channel, another user: their own windows. After the window: room again.
        assert!(limiter.check(1, Route::MessageCreate, "8", t2, 0).is_ok());
        assert!(limiter.check(2, Route::MessageCreate, "9", t2, 0).is_ok());
        let t3 = t0 + Duration::from_secs(5);
        assert_eq!(
            limiter
                .check(1, Route::MessageCreate, "9", t3, 0)
                .unwrap()
                .remaining,
            1
        );
    }

    #[tokio::test]
    async fn the_global_limit_caps_every_bucket_together() {
        let limiter = limiter();
        let t0 = Instant::now();
        for channel in ["1", "2", "3", "4"] {
            assert!(limiter.check(7, Route::MessageRead, channel, t0, 0).is_ok());
        }
        let t1 = t0 + Duration::from_millis(250);
        let refused = limiter
            .check(7, Route::MessageRead, "5", t1, 0)
            .unwrap_err();
        assert_eq!(refused.body()["global"], true);
        assert_eq!(refused.body()["retry_after"], 0.75);
        let global = refused
            .headers
            .iter()
            .find(|(n, _)| n == "x-ratelimit-global");
        assert!(global.is_some());
    }

    #[test]
    fn headers_carry_reset_as_unix_seconds() {
        let quota = Quota {
            route: Route::MessageCreate,
            limit: 5,
            remaining: 4,
            reset_after: Duration::from_millis(4_250),
            now_unix_ms: 1_700_000_000_500,
        };
        let headers: BTreeMap<String, String> = quota
            .headers()
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(headers["x-ratelimit-reset"], "1700000004.750");
        assert_eq!(headers["x-ratelimit-reset-after"], "4.250");
        assert_eq!(headers["x-ratelimit-remaining"], "4");
        assert_eq!(headers["x-ratelimit-bucket"].len(), 16);
    }
}
