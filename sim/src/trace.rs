//! Reading DiscordChatExporter JSON exports as a workload: who wrote what, where, and when.
//!
//! One export file holds one channel (`guild`, `channel`, `messages`); a folder holds several,
//! read in file-name order. A message's time comes from its snowflake id (42 bits of ms
//! since 2015-01-01, kept exactly by the sanitizer), so no date parsing is needed; the
//! author is `author.id`, the size `content`'s length in characters. Every error names the
//! file and the JSON path of the value at fault (`messages[3].author.id`).
//!
//! Not modelled: replies, edits, reactions, attachments and threads (a reply is sent as a
//! plain message at its time); messages of types other than `Default` and `Reply` are left
//! out.

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
            self.messages.push(TraceMessage {
                unix_ms: (id >> 22) + DISCORD_EPOCH_MS,
                channel,
                author,
                length: message.content.chars().count(),
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
            }]
        );
        assert_eq!(trace.authors, vec![7]);
        assert_eq!(trace.skipped, 1);
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
