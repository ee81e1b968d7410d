//! Reading DiscordChatExporter JSON exports as a workload: who wrote what, where, and when.
//!
//! One export file holds one channel (`guild`, `channel`, `messages`); a folder holds several,
//! read in file-name order. A message's time comes from its snowflake id (42 bits of ms
//! since 2015-01-01, kept exactly by the sanitizer), so no date parsing is needed; the
//! author is `author.id`, the size `content`'s length in characters. Every error names the
//! file and the JSON path of the value at fault (`messages[3].author.id`).
//!
//! Replies, edits and reactions are read too: a message's `reference.messageId` (a reply
//! when it names a replayed message of the same channel), its `timestampEdited` (RFC 3339,
//! any offset), and per emoji its `reactions[].count` with the `users` who reacted when the
//! export lists them. A custom emoji is `name:id`, its name's characters other than letters,
//! digits and `_` made `_` (Discord's rule for emoji names).
//!
//! Not modelled: attachments and threads; messages of types other than `Default` and
//! `Reply` are left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Discord's epoch, 2015-01-01, in Unix ms.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// One message of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceMessage {
    /// Unix ms, from the id.
    pub unix_ms: u64,
    /// Index into [`Trace::channels`].
    pub channel: usize,
    /// Index into [`Trace::authors`].
    pub author: usize,
    /// Content length in characters.
    pub length: usize,
    /// Its id in the export.
    pub id: u64,
    /// The id of the message it answers (`reference.messageId`), if any.
    pub reference_id: Option<u64>,
    /// Unix ms of its last edit, if it was edited.
    pub edited_unix_ms: Option<u64>,
    /// Its reactions.
    pub reactions: Vec<TraceReaction>,
}

/// One emoji's reactions on a trace message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceReaction {
    /// A unicode emoji, or `name:id`.
    pub emoji: String,
    /// How many users reacted.
    pub count: usize,
    /// Who reacted, if the export lists them (ids in the export).
    pub user_ids: Vec<u64>,
}

/// One exported channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceChannel {
    /// The guild it belongs to (index into [`Trace::guilds`]).
    pub guild: usize,
    /// Its id in the export.
    pub id: u64,
    /// Its name.
    pub name: String,
}

/// A whole trace: guilds, channels, authors and messages in time order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// Guild ids in the export, in order of first appearance.
    pub guilds: Vec<u64>,
    /// Channels, in file order.
    pub channels: Vec<TraceChannel>,
    /// Author ids, in order of first message.
    pub authors: Vec<u64>,
    /// Messages, oldest first.
    pub messages: Vec<TraceMessage>,
    /// Messages of other types left out.
    pub skipped: usize,
}

impl Trace {
    /// For each message, the index of the message it replies to: one of the trace's, in the
    /// same channel.
    pub fn reply_targets(&self) -> Vec<Option<usize>> {
        let index: BTreeMap<u64, usize> = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id, i))
            .collect();
        self.messages
            .iter()
            .map(|m| {
                let target = *index.get(&m.reference_id?)?;
                (self.messages[target].channel == m.channel).then_some(target)
            })
            .collect()
    }

    /// Replies (to a message of the trace, in its channel), edits, and reactions (the sum of
    /// every emoji's count), as a replay issues them.
    pub fn interaction_counts(&self) -> (usize, usize, usize) {
        let replies = self.reply_targets().iter().flatten().count();
        let edits = self
            .messages
            .iter()
            .filter(|m| m.edited_unix_ms.is_some())
            .count();
        let reactions = self
            .messages
            .iter()
            .flat_map(|m| &m.reactions)
            .map(|r| r.count)
            .sum();
        (replies, edits, reactions)
    }
}

#[derive(Deserialize)]
struct ExportFile {
    guild: Named,
    channel: Named,
    messages: Vec<ExportMessage>,
}

#[derive(Deserialize)]
struct Named {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct ExportMessage {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    content: String,
    author: Author,
    #[serde(default, rename = "timestampEdited")]
    timestamp_edited: Option<String>,
    #[serde(default)]
    reference: Option<Reference>,
    #[serde(default)]
    reactions: Vec<ExportReaction>,
}

#[derive(Deserialize)]
struct Reference {
    #[serde(default, rename = "messageId")]
    message_id: Option<String>,
}

#[derive(Deserialize)]
struct ExportReaction {
    emoji: ExportEmoji,
    count: usize,
    #[serde(default)]
    users: Vec<Author>,
}

#[derive(Deserialize)]
struct ExportEmoji {
    #[serde(default)]
    id: Option<String>,
    name: String,
}

/// An export's emoji as the API takes it: the unicode emoji, or `name:id` for a custom one.
fn emoji_of(emoji: &ExportEmoji, path: &str) -> Result<String, String> {
    match emoji.id.as_deref() {
        None | Some("") => Ok(emoji.name.clone()),
        Some(id) => {
            let id = snowflake(id, &format!("{path}.id"))?;
            let name: String = emoji
                .name
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            Ok(format!("{name}:{id}"))
        }
    }
}

/// Unix ms of an RFC 3339 time with any offset, as DiscordChatExporter writes them.
fn unix_ms(text: &str, path: &str) -> Result<u64, String> {
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{path}: {text:?} is not an RFC 3339 time: {e}"))?;
    u64::try_from(time.timestamp_millis()).map_err(|_| format!("{path}: {text:?} is before 1970"))
}

#[derive(Deserialize)]
struct Author {
    id: String,
}

fn snowflake(text: &str, path: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .map_err(|_| format!("{path}: {text:?} is not a snowflake id"))
}

impl Trace {
    /// Reads one export file or every `.json` file of a folder.
    pub fn load(path: &Path) -> Result<Trace, String> {
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{}: cannot list it: {e}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(format!("{}: holds no .json export", path.display()));
            }
            files
        } else {
            vec![path.to_path_buf()]
        };
        let mut trace = Trace::default();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("{}: cannot read it: {e}", file.display()))?;
            trace
                .add(&text)
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        if trace.messages.is_empty() {
            return Err(format!("{}: has no messages to replay", path.display()));
        }
        trace.messages.sort_by_key(|m| (m.unix_ms, m.channel));
        Ok(trace)
    }

    /// Adds one export file's text.
    pub fn add(&mut self, text: &str) -> Result<(), String> {
        // 1. The shape, with the JSON path of any value at fault.
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let file: ExportFile =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
                let inner = e.inner().to_string();
                format!("at {}: {inner}", e.path())
            })?;

        // 2. Ids, and the guild and channel they name.
        let guild_id = snowflake(&file.guild.id, "guild.id")?;
        let guild = match self.guilds.iter().position(|&g| g == guild_id) {
            Some(index) => index,
            None => {
                self.guilds.push(guild_id);
                self.guilds.len() - 1
            }
        };
        let channel_id = snowflake(&file.channel.id, "channel.id")?;
        if self.channels.iter().any(|c| c.id == channel_id) {
            return Err(format!("channel.id: channel {channel_id} was already read"));
        }
        self.channels.push(TraceChannel {
            guild,
            id: channel_id,
            name: format!("{}/{}", file.guild.name, file.channel.name),
        });
        let channel = self.channels.len() - 1;

        // 3. The messages.
        let mut authors: BTreeMap<u64, usize> = self
            .authors
            .iter()
            .enumerate()
            .map(|(i, &a)| (a, i))
            .collect();
        for (index, message) in file.messages.iter().enumerate() {
            if message.kind != "Default" && message.kind != "Reply" {
                self.skipped += 1;
                continue;
            }
            let id = snowflake(&message.id, &format!("messages[{index}].id"))?;
            let author_id = snowflake(&message.author.id, &format!("messages[{index}].author.id"))?;
            let author = *authors.entry(author_id).or_insert_with(|| {
                self.authors.push(author_id);
                self.authors.len() - 1
            });
            let at = |field: &str| format!("messages[{index}].{field}");
            let reference_id = match message
                .reference
                .as_ref()
                .and_then(|r| r.message_id.as_ref())
            {
                Some(text) => Some(snowflake(text, &at("reference.messageId"))?),
                None => None,
            };
            let edited_unix_ms = match &message.timestamp_edited {
                Some(text) => Some(unix_ms(text, &at("timestampEdited"))?),
                None => None,
            };
            let mut reactions = Vec::new();
            for (r, reaction) in message.reactions.iter().enumerate() {
                let path = at(&format!("reactions[{r}]"));
                let mut user_ids = Vec::new();
                for (u, user) in reaction.users.iter().enumerate() {
                    user_ids.push(snowflake(&user.id, &format!("{path}.users[{u}].id"))?);
                }
                reactions.push(TraceReaction {
                    emoji: emoji_of(&reaction.emoji, &format!("{path}.emoji"))?,
                    count: reaction.count,
                    user_ids,
                });
            }
            self.messages.push(TraceMessage {
                unix_ms: (id >> 22) + DISCORD_EPOCH_MS,
                channel,
                author,
                length: message.content.chars().count(),
                id,
                reference_id,
                edited_unix_ms,
                reactions,
            });
        }
        Ok(())
    }

    /// The time from the first message to the last, in ms.
    pub fn span_ms(&self) -> u64 {
        match (self.messages.first(), self.messages.last()) {
            (Some(first), Some(last)) => last.unix_ms - first.unix_ms,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(messages: &str) -> String {
        format!(
            r#"{{"guild": {{"id": "1", "name": "g"}}, "channel": {{"id": "2", "name": "c",
            "type": "GuildTextChat"}}, "messages": [{messages}]}}"#
        )
    }

    #[test]
    fn a_message_time_comes_from_its_id() {
        // 4194304000 >> 22 = 1000 ms after Discord's epoch.
        let text = export(
            r#"{"id": "4194304000", "type": "Default", "content": "héllo",
               "author": {"id": "7"}},
               {"id": "4194304001", "type": "GuildMemberJoin", "content": "",
               "author": {"id": "8"}}"#,
        );
        let mut trace = Trace::default();
        trace.add(&text).unwrap();
        assert_eq!(
            trace.messages,
            vec![TraceMessage {
                unix_ms: DISCORD_EPOCH_MS + 1000,
                channel: 0,
                author: 0,
                length: 5,
                id: 4194304000,
                reference_id: None,
                edited_unix_ms: None,
                reactions: Vec::new(),
            }]
        );
        assert_eq!(trace.authors, vec![7]);
        assert_eq!(trace.skipped, 1);
    }

    #[test]
    fn replies_edits_and_reactions_are_read_with_their_targets_times_and_emoji() {
        let text = export(
            r#"{"id": "4194304000", "type": "Default", "content": "q", "author": {"id": "7"},
                "timestampEdited": "2015-01-01T02:00:01.500+02:00",
                "reactions": [
                  {"emoji": {"id": "", "name": "🔥"}, "count": 2,
                   "users": [{"id": "8"}, {"id": "9"}]},
                  {"emoji": {"id": "41771983429993937", "name": "emoji-001"}, "count": 1}]},
               {"id": "8388608000", "type": "Reply", "content": "a", "author": {"id": "8"},
                "timestampEdited": null, "reference": {"messageId": "4194304000"}},
               {"id": "12582912000", "type": "Reply", "content": "b", "author": {"id": "8"},
                "reference": {"messageId": "99"}}"#,
        );
        let mut trace = Trace::default();
        trace.add(&text).unwrap();
        let first = &trace.messages[0];
        // 02:00:01.500 at +02:00 is 00:00:01.500 UTC, 1.5 s after Discord's epoch.
        assert_eq!(first.edited_unix_ms, Some(DISCORD_EPOCH_MS + 1_500));
        assert_eq!(
            first.reactions,
            vec![
                TraceReaction {
                    emoji: "🔥".into(),
                    count: 2,
                    user_ids: vec![8, 9]
                },
                TraceReaction {
                    emoji: "emoji_001:41771983429993937".into(),
                    count: 1,
                    user_ids: Vec::new()
                },
            ]
        );
        assert_eq!(trace.messages[1].reference_id, Some(4194304000));
        // The third answers a message the trace does not hold: a plain send.
        assert_eq!(trace.reply_targets(), vec![None, Some(0), None]);
        assert_eq!(trace.interaction_counts(), (1, 1, 3));

        let bad = export(
            r#"{"id": "1", "type": "Default", "content": "x", "author": {"id": "7"},
                "timestampEdited": "yesterday"}"#,
        );
        let error = Trace::default().add(&bad).unwrap_err();
        assert!(
            error.starts_with("messages[0].timestampEdited: \"yesterday\" is not an RFC 3339"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_value_is_named_by_its_json_path() {
        let text = export(r#"{"id": "1", "type": "Default", "content": "x", "author": {}}"#);
        let error = Trace::default().add(&text).unwrap_err();
        assert!(
            error.starts_with("at messages[0].author: missing field `id`"),
            "{error}"
        );

        let text =
            export(r#"{"id": "1", "type": "Default", "content": "x", "author": {"id": "abc"}}"#);
        let error = Trace::default().add(&text).unwrap_err();
        assert_eq!(
            error,
            "messages[0].author.id: \"abc\" is not a snowflake id"
        );
    }
}
