//! The chat data model shared by the roles, and its Discord-shaped JSON views.
//!
//! A [`StoredMessage`] is what the `messages` table holds; [`MessageView`] is the Discord v10
//! message object that REST answers and gateway dispatches carry (snowflakes as strings).
//! An edited message carries the time of its last edit; a deleted one is a tombstone in the
//! store and never reaches a view.
//!
//! Replies and reactions live in the message's row, so they share its ordering and
//! durability: a reply (type 19) keeps the id of the message it answers, in the same channel,
//! and shows it as `message_reference`; reactions are kept per emoji as the sorted ids of the
//! users who reacted, and shown as `reactions: [{count, me, emoji}]`, where `me` depends on
//! who reads. Rows stored before either existed read as neither.
//! Not modelled: `referenced_message` (the answered message inlined), burst reactions,
//! custom emoji images, attachments, embeds and mentions.

use serde::{Deserialize, Serialize};

use crate::ids;

/// A message as stored: the row of the `messages` table. `Default` gives the optional parts
/// unset (no nonce, edit, reply or reaction), for literals that name only the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// For a reply: the message it answers, in the same channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referenced_message_id: Option<u64>,
    /// Reactions, one entry per emoji in the order they were first added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<StoredReaction>,
}

/// The users who reacted to a message with one emoji.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StoredReaction {
    /// A unicode emoji, or `name:id` for a custom one.
    pub emoji: String,
    /// Who reacted, sorted, each once.
    pub user_ids: Vec<u64>,
}

impl StoredMessage {
    /// Adds `user_id`'s reaction with `emoji`; false if it was already there.
    pub fn add_reaction(&mut self, emoji: &str, user_id: u64) -> bool {
        let index = match self.reactions.iter().position(|r| r.emoji == emoji) {
            Some(index) => index,
            None => {
                self.reactions.push(StoredReaction {
                    emoji: emoji.to_string(),
                    user_ids: Vec::new(),
                });
                self.reactions.len() - 1
            }
        };
        let users = &mut self.reactions[index].user_ids;
        match users.binary_search(&user_id) {
            Ok(_) => false,
            Err(at) => {
                users.insert(at, user_id);
                true
            }
        }
    }

    /// Removes `user_id`'s reaction with `emoji`; false if there was none. An emoji nobody
    /// reacts with any more is dropped.
    pub fn remove_reaction(&mut self, emoji: &str, user_id: u64) -> bool {
        let Some(index) = self.reactions.iter().position(|r| r.emoji == emoji) else {
            return false;
        };
        let users = &mut self.reactions[index].user_ids;
        let Ok(at) = users.binary_search(&user_id) else {
            return false;
        };
        users.remove(at);
        if users.is_empty() {
            self.reactions.remove(index);
        }
        true
    }
}

/// An emoji as Discord's objects show it: `id` null for a unicode emoji.
pub fn emoji_json(emoji: &str) -> serde_json::Value {
    match emoji.rsplit_once(':') {
        Some((name, id)) if !name.is_empty() && id.parse::<u64>().is_ok() => {
            serde_json::json!({"id": id, "name": name})
        }
        _ => serde_json::json!({"id": null, "name": emoji}),
    }
}

/// `message_reference` of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageReferenceView {
    /// 0: a reply (Discord's DEFAULT reference type).
    #[serde(rename = "type")]
    pub kind: u8,
    /// The answered message, as a string.
    pub message_id: String,
    /// Its channel, as a string.
    pub channel_id: String,
    /// Its guild, as a string.
    pub guild_id: String,
}

/// One emoji's reactions as a reader sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionView {
    /// How many users reacted.
    pub count: usize,
    /// Whether the reader is one of them.
    pub me: bool,
    /// The emoji: `{id, name}`.
    pub emoji: serde_json::Value,
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
    /// For a reply: the message it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_reference: Option<MessageReferenceView>,
    /// Reactions, absent when there are none (as Discord omits them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionView>,
}

/// Discord's message type of a reply.
pub const MESSAGE_TYPE_REPLY: u8 = 19;

/// ISO 8601 with milliseconds, UTC, for a Unix time in ms.
pub fn iso8601_ms(unix_ms: i64) -> String {
    let since = std::time::Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    let time = std::time::UNIX_EPOCH + since;
    humantime::format_rfc3339_millis(time).to_string()
}

impl MessageView {
    /// The view of `message`, written by `username`, as a dispatch carries it (`me` false).
    pub fn of(message: &StoredMessage, username: &str) -> Self {
        Self::seen_by(message, username, None)
    }

    /// The view of `message`, written by `username`, as `reader` sees it over REST.
    pub fn seen_by(message: &StoredMessage, username: &str, reader: Option<u64>) -> Self {
        let message_reference = message
            .referenced_message_id
            .map(|id| MessageReferenceView {
                kind: 0,
                message_id: id.to_string(),
                channel_id: message.channel_id.to_string(),
                guild_id: message.guild_id.to_string(),
            });
        let reactions = message
            .reactions
            .iter()
            .map(|r| ReactionView {
                count: r.user_ids.len(),
                me: reader.is_some_and(|reader| r.user_ids.binary_search(&reader).is_ok()),
                emoji: emoji_json(&r.emoji),
            })
            .collect();
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
            kind: if message_reference.is_some() {
                MESSAGE_TYPE_REPLY
            } else {
                0
            },
            pinned: false,
            tts: false,
            message_reference,
            reactions,
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
            ..Default::default()
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
    fn a_reply_shows_its_reference_and_reactions_show_count_me_and_emoji() {
        let mut reply = StoredMessage {
            channel_id: 7,
            message_id: 175_928_847_299_117_063,
            guild_id: 3,
            author_id: 11,
            content: "yes".into(),
            nonce: None,
            edited_ms: None,
            referenced_message_id: Some(175_928_847_299_117_000),
            reactions: Vec::new(),
        };
        assert!(reply.add_reaction("\u{1f525}", 12));
        assert!(reply.add_reaction("\u{1f525}", 4));
        assert!(
            !reply.add_reaction("\u{1f525}", 4),
            "a second add changes nothing"
        );
        assert!(reply.add_reaction("blob:41771983429993937", 4));
        assert_eq!(reply.reactions[0].user_ids, vec![4, 12]);

        let json = serde_json::to_value(MessageView::seen_by(&reply, "ann", Some(12))).unwrap();
        assert_eq!(json["type"], 19);
        assert_eq!(
            json["message_reference"],
            serde_json::json!({"type": 0, "message_id": "175928847299117000",
                "channel_id": "7", "guild_id": "3"})
        );
        assert_eq!(
            json["reactions"],
            serde_json::json!([
                {"count": 2, "me": true, "emoji": {"id": null, "name": "\u{1f525}"}},
                {"count": 1, "me": false, "emoji": {"id": "41771983429993937", "name": "blob"}},
            ])
        );

        assert!(reply.remove_reaction("blob:41771983429993937", 4));
        assert!(!reply.remove_reaction("blob:41771983429993937", 4));
        assert_eq!(reply.reactions.len(), 1, "an emoji nobody uses is dropped");
        let plain = StoredMessage {
            referenced_message_id: None,
            reactions: Vec::new(),
            ..reply
        };
        let json = serde_json::to_value(MessageView::of(&plain, "ann")).unwrap();
        assert_eq!(json["type"], 0);
        assert!(json.get("message_reference").is_none());
        assert!(json.get("reactions").is_none());
        let stored = serde_json::to_string(&plain).unwrap();
        assert!(
            !stored.contains("reactions") && !stored.contains("referenced"),
            "{stored}"
        );
    }

    #[test]
    fn rows_stored_before_edits_existed_still_read() {
        let old = r#"{"channel_id":7,"message_id":9,"guild_id":3,"author_id":11,
            "content":"hi","nonce":null}"#;
        let message: StoredMessage = serde_json::from_str(old).unwrap();
        assert_eq!(message.edited_ms, None);
    }
}
