//! The gateway's wire protocol as Discord documents it: op codes, close codes, intents, and the
//! decoding and validation of what a client sends.
//!
//! Every client payload is `{op, d, s, t}` JSON text of at most 4096 bytes. Decoding either
//! yields a typed command or a [`Close`] whose code is Discord's and whose reason names the
//! field or value that was wrong. Not modelled: ETF encoding, zlib or zstd compression, and the
//! commands this system has no data for (presence, voice state, guild member requests), which
//! are accepted and ignored.

use serde_json::Value;

/// Gateway op codes.
pub mod op {
    /// An event (server to client).
    pub const DISPATCH: u64 = 0;
    /// A heartbeat (either way).
    pub const HEARTBEAT: u64 = 1;
    /// Start a session.
    pub const IDENTIFY: u64 = 2;
    /// Update the client's presence.
    pub const PRESENCE_UPDATE: u64 = 3;
    /// Join, move or leave a voice channel.
    pub const VOICE_STATE_UPDATE: u64 = 4;
    /// Resume a dropped session.
    pub const RESUME: u64 = 6;
    /// The client should reconnect and resume (server to client).
    pub const RECONNECT: u64 = 7;
    /// Ask for a guild's members.
    pub const REQUEST_GUILD_MEMBERS: u64 = 8;
    /// The session is invalid; `d` tells whether it may be resumed (server to client).
    pub const INVALID_SESSION: u64 = 9;
    /// The first payload, with the heartbeat interval (server to client).
    pub const HELLO: u64 = 10;
    /// The answer to a heartbeat (server to client).
    pub const HEARTBEAT_ACK: u64 = 11;
}

/// Close codes, with Discord's meanings.
pub mod close {
    /// Something went wrong; here: the session's send queue overflowed (a slow consumer).
    pub const UNKNOWN_ERROR: u16 = 4000;
    /// An op code the server does not take from clients.
    pub const UNKNOWN_OPCODE: u16 = 4001;
    /// An undecodable payload, or one over 4096 bytes.
    pub const DECODE_ERROR: u16 = 4002;
    /// A payload other than Identify, Resume or Heartbeat before identifying.
    pub const NOT_AUTHENTICATED: u16 = 4003;
    /// The token in Identify is wrong.
    pub const AUTHENTICATION_FAILED: u16 = 4004;
    /// A second Identify or Resume on an identified connection.
    pub const ALREADY_AUTHENTICATED: u16 = 4005;
    /// Resume named a sequence number the session never sent.
    pub const INVALID_SEQ: u16 = 4007;
    /// More client payloads than the rate limit allows.
    pub const RATE_LIMITED: u16 = 4008;
    /// No heartbeat in time.
    pub const SESSION_TIMED_OUT: u16 = 4009;
    /// An invalid `shard` in Identify.
    pub const INVALID_SHARD: u16 = 4010;
    /// The session would hold too many guilds; it must shard.
    pub const SHARDING_REQUIRED: u16 = 4011;
    /// An unknown gateway version in `?v=`.
    pub const INVALID_API_VERSION: u16 = 4012;
    /// An intents value that is not a valid bitfield.
    pub const INVALID_INTENTS: u16 = 4013;
    /// A privileged intent the application is not allowed.
    pub const DISALLOWED_INTENTS: u16 = 4014;
    /// The server is restarting (a drain, after op 7): the session stays resumable.
    pub const SERVICE_RESTART: u16 = 1012;

    /// Whether Discord tells a client to reconnect after the gateway close `code` (its
    /// "Reconnect" column): all but a wrong token, a bad shard, version or intents.
    pub fn reconnect_allowed(code: u16) -> bool {
        matches!(code, 4000..=4003 | 4005 | 4007..=4009 | SERVICE_RESTART)
    }

    /// Whether a session closed with `code` may still be resumed: an identified session
    /// survives every reconnectable code except Invalid seq, which asks for a new session.
    /// Not authenticated has no session to resume.
    pub fn resumable(code: u16) -> bool {
        reconnect_allowed(code) && !matches!(code, NOT_AUTHENTICATED | INVALID_SEQ)
    }
}

/// Gateway intents (bit flags of Identify's `intents`).
pub mod intents {
    /// Guild create, update and delete, channels.
    pub const GUILDS: u64 = 1 << 0;
    /// Member events (privileged).
    pub const GUILD_MEMBERS: u64 = 1 << 1;
    /// Presence updates (privileged).
    pub const GUILD_PRESENCES: u64 = 1 << 8;
    /// Message create, update and delete in guilds.
    pub const GUILD_MESSAGES: u64 = 1 << 9;
    /// Reactions added to and removed from messages in guilds.
    pub const GUILD_MESSAGE_REACTIONS: u64 = 1 << 10;
    /// Message content in events of others' messages (privileged).
    pub const MESSAGE_CONTENT: u64 = 1 << 15;
    /// The intents an application must be allowed before asking for them.
    pub const PRIVILEGED: u64 = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT;
    /// Every bit Discord defines: 0–16, 20, 21, 24 and 25.
    pub const KNOWN: u64 = ((1 << 17) - 1) | (1 << 20) | (1 << 21) | (1 << 24) | (1 << 25);

    /// The intent a session needs to receive the dispatch `name` (0: none).
    pub fn required_for(name: &str) -> u64 {
        match name {
            "GUILD_CREATE" | "GUILD_UPDATE" | "GUILD_DELETE" | "CHANNEL_CREATE"
            | "CHANNEL_UPDATE" | "CHANNEL_DELETE" => GUILDS,
            "MESSAGE_CREATE" | "MESSAGE_UPDATE" | "MESSAGE_DELETE" | "MESSAGE_DELETE_BULK" => {
                GUILD_MESSAGES
            }
            "MESSAGE_REACTION_ADD"
            | "MESSAGE_REACTION_REMOVE"
            | "MESSAGE_REACTION_REMOVE_ALL"
            | "MESSAGE_REACTION_REMOVE_EMOJI" => GUILD_MESSAGE_REACTIONS,
            _ => 0,
        }
    }
}

/// The gateway versions served; a connection without `?v=` gets the newest.
pub const VERSIONS: [u64; 2] = [9, 10];

/// Why a connection ends: a close code and a reason naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The WebSocket close code.
    pub code: u16,
    /// The reason, at most 123 bytes as a close frame allows.
    pub reason: String,
}

impl Close {
    /// A close with `code` and `reason` (cut to 123 bytes on a character boundary).
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > 123 {
            let mut end = 123;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self { code, reason }
    }
}

/// A command a client sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Op 1 with the last `s` the client saw.
    Heartbeat(Option<u64>),
    /// Op 2.
    Identify(Identify),
    /// Op 6.
    Resume(Resume),
    /// Ops 3, 4 and 8, which this system has no data for.
    Ignored(u64),
}

/// Identify's `d`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identify {
    /// The token, without a `Bot ` prefix.
    pub token: String,
    /// The intents bitfield.
    pub intents: u64,
    /// `[shard_id, shard_count]`, if given.
    pub shard: Option<(u64, u64)>,
}

/// Resume's `d`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The token, without a `Bot ` prefix.
    pub token: String,
    /// The session to resume.
    pub session_id: String,
    /// The last `s` the client saw (0 if it saw none).
    pub seq: u64,
}

fn decode_error(reason: impl Into<String>) -> Close {
    Close::new(close::DECODE_ERROR, reason)
}

/// Decodes one client text payload of at most `bytes_max` bytes.
pub fn decode(text: &str, bytes_max: usize) -> Result<Command, Close> {
    // 1. Size, JSON, shape.
    if text.len() > bytes_max {
        let reason = format!("payload of {} bytes is over {bytes_max}", text.len());
        return Err(decode_error(reason));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|error| decode_error(format!("payload is not JSON: {error}")))?;
    let Some(payload) = value.as_object() else {
        return Err(decode_error("payload is not a JSON object"));
    };
    if let Some(field) = payload
        .keys()
        .find(|k| !matches!(k.as_str(), "op" | "d" | "s" | "t"))
    {
        return Err(decode_error(format!("unknown payload field {field:?}")));
    }
    let op = match payload.get("op") {
        None => return Err(decode_error("payload has no op")),
        Some(op) => op
            .as_u64()
            .ok_or_else(|| decode_error(format!("op {op} is not an unsigned integer")))?,
    };
    let d = payload.get("d").unwrap_or(&Value::Null);

    // 2. The command.
    match op {
        op::HEARTBEAT => match d {
            Value::Null => Ok(Command::Heartbeat(None)),
            d => d
                .as_u64()
                .map(|s| Command::Heartbeat(Some(s)))
                .ok_or_else(|| decode_error(format!("heartbeat d {d} is not a sequence number"))),
        },
        op::IDENTIFY => identify(d).map(Command::Identify),
        op::RESUME => resume(d).map(Command::Resume),
        op::PRESENCE_UPDATE | op::VOICE_STATE_UPDATE | op::REQUEST_GUILD_MEMBERS => {
            // TODO(gateway-presence): presence, voice and member requests need data this
            // system does not keep; they are accepted so real client libraries keep working.
            Ok(Command::Ignored(op))
        }
        other => Err(Close::new(
            close::UNKNOWN_OPCODE,
            format!("unknown opcode {other}"),
        )),
    }
}

fn token_of(d: &serde_json::Map<String, Value>, command: &str) -> Result<String, Close> {
    let token = d
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| decode_error(format!("{command} d.token is missing or not a string")))?;
    Ok(token.strip_prefix("Bot ").unwrap_or(token).to_string())
}

const IDENTIFY_FIELDS: [&str; 7] = [
    "token",
    "properties",
    "compress",
    "large_threshold",
    "shard",
    "presence",
    "intents",
];

fn identify(d: &Value) -> Result<Identify, Close> {
    // 1. The fields Discord defines, each of its type.
    let Some(d) = d.as_object() else {
        return Err(decode_error("identify d is not an object"));
    };
    if let Some(field) = d.keys().find(|k| !IDENTIFY_FIELDS.contains(&k.as_str())) {
        return Err(decode_error(format!("unknown identify field d.{field}")));
    }
    let token = token_of(d, "identify")?;
    let Some(properties) = d.get("properties").and_then(Value::as_object) else {
        return Err(decode_error(
            "identify d.properties is missing or not an object",
        ));
    };
    for key in ["os", "browser", "device"] {
        if !properties.get(key).is_some_and(Value::is_string) {
            let reason = format!("identify d.properties.{key} is missing or not a string");
            return Err(decode_error(reason));
        }
    }
    if d.get("compress").is_some_and(|c| !c.is_boolean()) {
        return Err(decode_error("identify d.compress is not a boolean"));
    }
    if let Some(threshold) = d.get("large_threshold") {
        if !threshold.as_u64().is_some_and(|t| (50..=250).contains(&t)) {
            let reason = format!("identify d.large_threshold {threshold} is not within 50-250");
            return Err(decode_error(reason));
        }
    }

    // 2. Intents: required, a bitfield of defined bits.
    let intents = match d.get("intents") {
        None => return Err(decode_error("identify d.intents is missing")),
        Some(value) => value
            .as_u64()
            .filter(|bits| bits & !intents::KNOWN == 0)
            .ok_or_else(|| {
                Close::new(
                    close::INVALID_INTENTS,
                    format!("identify d.intents {value} is not a valid intents bitfield"),
                )
            })?,
    };

    // 3. Shard: `[id, count]` with id < count.
    let shard = match d.get("shard") {
        None | Some(Value::Null) => None,
        Some(value) => Some(shard(value)?),
    };
    Ok(Identify {
        token,
        intents,
        shard,
    })
}

fn shard(value: &Value) -> Result<(u64, u64), Close> {
    let pair = value.as_array().and_then(|items| match items.as_slice() {
        [id, count] => Some((id.as_u64()?, count.as_u64()?)),
        _ => None,
    });
    match pair {
        Some((id, count)) if id < count => Ok((id, count)),
        _ => Err(Close::new(
            close::INVALID_SHARD,
            format!("identify d.shard {value} is not [shard_id, shard_count] with id < count"),
        )),
    }
}

fn resume(d: &Value) -> Result<Resume, Close> {
    let Some(d) = d.as_object() else {
        return Err(decode_error("resume d is not an object"));
    };
    if let Some(field) = d
        .keys()
        .find(|k| !matches!(k.as_str(), "token" | "session_id" | "seq"))
    {
        return Err(decode_error(format!("unknown resume field d.{field}")));
    }
    let token = token_of(d, "resume")?;
    let session_id = d
        .get("session_id")
        .and_then(Value::as_str)
        .ok_or_else(|| decode_error("resume d.session_id is missing or not a string"))?
        .to_string();
    let seq = match d.get("seq") {
        None => return Err(decode_error("resume d.seq is missing")),
        Some(Value::Null) => 0,
        Some(value) => value.as_u64().ok_or_else(|| {
            decode_error(format!("resume d.seq {value} is not a sequence number"))
        })?,
    };
    Ok(Resume {
        token,
        session_id,
        seq,
    })
}

/// The shard a guild's events go to: `(guild_id >> 22) % shard_count`.
pub fn shard_of(guild_id: u64, shard_count: u64) -> u64 {
    (guild_id >> 22) % shard_count.max(1)
}

/// A server payload that is not a dispatch: `{op, d, s: null, t: null}` as text.
pub fn control(op: u64, d: &Value) -> String {
    serde_json::json!({"op": op, "d": d, "s": null, "t": null}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identify_with(d: Value) -> Result<Command, Close> {
        decode(&json!({"op": 2, "d": d}).to_string(), 4096)
    }

    fn props() -> Value {
        json!({"os": "linux", "browser": "t", "device": "t"})
    }

    #[test]
    fn identify_is_validated_field_by_field() {
        let ok = identify_with(json!({
            "token": "Bot abc", "intents": 33281, "properties": props(), "shard": [1, 4],
        }));
        assert_eq!(
            ok,
            Ok(Command::Identify(Identify {
                token: "abc".into(),
                intents: 33281,
                shard: Some((1, 4)),
            }))
        );
        let code = |d: Value| identify_with(d).map_err(|c| c.code).err();
        let base = |field: &str, value: Value| {
            let mut d = json!({"token": "t", "intents": 1, "properties": props()});
            d[field] = value;
            d
        };
        assert_eq!(
            code(json!({"intents": 1, "properties": props()})),
            Some(4002)
        );
        assert_eq!(
            code(json!({"token": "t", "properties": props()})),
            Some(4002)
        );
        assert_eq!(code(json!({"token": "t", "intents": 1})), Some(4002));
        assert_eq!(code(base("properties", json!({"os": "x"}))), Some(4002));
        assert_eq!(code(base("intents", json!(1u64 << 17))), Some(4013));
        assert_eq!(code(base("intents", json!(-1))), Some(4013));
        assert_eq!(code(base("shard", json!([4, 4]))), Some(4010));
        assert_eq!(code(base("shard", json!([0]))), Some(4010));
        assert_eq!(code(base("large_threshold", json!(251))), Some(4002));
        assert_eq!(code(base("extra", json!(1))), Some(4002));
        assert_eq!(code(base("intents", json!(intents::KNOWN))), None);
    }

    #[test]
    fn payloads_are_refused_with_the_documented_codes() {
        let code = |text: &str| decode(text, 4096).map_err(|c| c.code).err();
        assert_eq!(code("{not json"), Some(4002));
        assert_eq!(code("[1]"), Some(4002));
        assert_eq!(code(r#"{"d": null}"#), Some(4002));
        assert_eq!(code(r#"{"op": 1, "x": 1}"#), Some(4002));
        assert_eq!(code(r#"{"op": 5}"#), Some(4001));
        assert_eq!(code(r#"{"op": 11}"#), Some(4001));
        assert_eq!(code(r#"{"op": 1, "d": "x"}"#), Some(4002));
        let big = format!(r#"{{"op": 1, "d": null, "t": "{}"}}"#, "x".repeat(4096));
        assert_eq!(code(&big), Some(4002));
        assert_eq!(
            decode(r#"{"op": 1, "d": 7}"#, 4096),
            Ok(Command::Heartbeat(Some(7)))
        );
        assert_eq!(
            decode(r#"{"op": 3, "d": {}}"#, 4096),
            Ok(Command::Ignored(3))
        );
    }

    #[test]
    fn resume_and_close_code_classes_follow_the_documentation() {
        let resume = json!({"op": 6, "d": {"token": "t", "session_id": "abc", "seq": 5}});
        assert_eq!(
            decode(&resume.to_string(), 4096),
            Ok(Command::Resume(Resume {
                token: "t".into(),
                session_id: "abc".into(),
                seq: 5
            }))
        );
        let reconnect: Vec<u16> = (4000..=4014)
            .filter(|&c| close::reconnect_allowed(c))
            .collect();
        assert_eq!(
            reconnect,
            vec![4000, 4001, 4002, 4003, 4005, 4007, 4008, 4009]
        );
        let resumable: Vec<u16> = (4000..=4014).filter(|&c| close::resumable(c)).collect();
        assert_eq!(resumable, vec![4000, 4001, 4002, 4005, 4008, 4009]);
        assert_eq!(shard_of(175_928_847_299_117_063, 16), 4);
    }
}
