//! The chat data model shared by the roles, and its Discord-shaped JSON views.
//!
//! A [`StoredMessage`] is what the `messages` table holds; [`MessageView`] is the Discord v10
//! message object that REST answers and gateway dispatches carry (snowflakes as strings).
//! An edited message carries the time of its last edit; a deleted one is a tombstone in the
//! store and never reaches a view.
//! Not modelled yet: attachments, embeds, mentions, reactions, replies.

use serde::{Deserialize, Serialize};

use crate::ids;

/// A message as stored: the row of the `messages` table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The channel (partition key, with the bucket).
    pub channel_id: u64,
    /// The message's snowflake (clustering key, newest first).
    pub message_id: u64,
    /// The guild the channel belongs to.
    pub guild_id: u64,
    /// The author's user id.
    pub author_id: u64,
    /// The text.
    pub content: String,
    /// The client's nonce, if it sent one.
    pub nonce: Option<String>,
    /// Unix ms of the last edit, if it was edited. An edit is a later write of the row, so
    /// last-write-wins keeps the newest content; rows stored before edits existed read as
    /// never edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_ms: Option<i64>,
}

/// The author as Discord's user object shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// The user's snowflake, as a string.
    pub id: String,
    /// The user's name.
    pub username: String,
}

/// A Discord v10 message object (the fields this system fills).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    /// The message's snowflake, as a string.
    pub id: String,
    /// The channel's snowflake, as a string.
    pub channel_id: String,
    /// The guild's snowflake, as a string.
    pub guild_id: String,
    /// Who wrote it.
    pub author: UserView,
    /// The text.
    pub content: String,
    /// ISO 8601 creation time, from the id's timestamp bits.
    pub timestamp: String,
    /// ISO 8601 time of the last edit, `null` if never edited.
    pub edited_timestamp: Option<String>,
    /// The client's nonce, echoed back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Discord's message type; 0 is a default message.
    #[serde(rename = "type")]
    pub kind: u8,
    /// Whether it is pinned; never yet.
    pub pinned: bool,
    /// Whether it is text-to-speech; never.
    pub tts: bool,
}

/// ISO 8601 with milliseconds, UTC, for a Unix time in ms.
pub fn iso8601_ms(unix_ms: i64) -> String {
    let since = std::time::Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    let time = std::time::UNIX_EPOCH + since;
    humantime::format_rfc3339_millis(time).to_string()
}

impl MessageView {
    /// The view of `message`, written by `username`.
    pub fn of(message: &StoredMessage, username: &str) -> Self {
        Self {
            id: message.message_id.to_string(),
            channel_id: message.channel_id.to_string(),
            guild_id: message.guild_id.to_string(),
            author: UserView {
                id: message.author_id.to_string(),
                username: username.to_string(),
            },
            content: message.content.clone(),
            timestamp: iso8601_ms(ids::timestamp_ms(message.message_id)),
            edited_timestamp: message.edited_ms.map(iso8601_ms),
            nonce: message.nonce.clone(),
            kind: 0,
            pinned: false,
            tts: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_uses_string_snowflakes_and_the_id_timestamp() {
        let message = StoredMessage {
            channel_id: 7,
            message_id: 175_928_847_299_117_063,
            guild_id: 3,
            author_id: 11,
            content: "hi".into(),
            nonce: None,
            edited_ms: None,
        };
        let json = serde_json::to_value(MessageView::of(&message, "ann")).unwrap();
        assert_eq!(json["id"], "175928847299117063");
        assert_eq!(json["timestamp"], "2016-04-30T11:18:25.796Z");
        assert_eq!(json["type"], 0);
        assert_eq!(json["author"]["username"], "ann");
        assert!(json.get("nonce").is_none());
        assert_eq!(json["edited_timestamp"], serde_json::Value::Null);

        let edited = StoredMessage {
            edited_ms: Some(1_462_015_105_796 + 60_000),
            ..message
        };
        let json = serde_json::to_value(MessageView::of(&edited, "ann")).unwrap();
        assert_eq!(json["edited_timestamp"], "2016-04-30T11:19:25.796Z");
    }

    #[test]
    fn rows_stored_before_edits_existed_still_read() {
        let old = r#"{"channel_id":7,"message_id":9,"guild_id":3,"author_id":11,
            "content":"hi","nonce":null}"#;
        let message: StoredMessage = serde_json::from_str(old).unwrap();
        assert_eq!(message.edited_ms, None);
    }
}
