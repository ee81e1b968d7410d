//! Who exists: users with their tokens, guilds with their channels and members.
//!
//! Every node starts from the same generated directory. Ids are snowflakes minted at the
//! directory's creation time, so every channel is older than its messages, as the history
//! read across buckets relies on.
//!
//! Each node holds its own [`SharedDirectory`]: one copy per node, shared by that node's tasks.
//! Two nodes never share a copy (in the simulator each host gets its own), so a change reaches
//! another node only over the network. Guilds, channels and memberships change by
//! [`DirectoryChange`]s, each ordered by its guild's process, which gives it a snowflake
//! ([`ChangeRecord`]), writes it at QUORUM to the directory log (a reserved partition of the
//! ring, [`crate::ring::client::DIRECTORY_LOG_CHANNEL`]), applies it to its own copy and
//! dispatches it to the gateways. The API node that asked for it applies the answer to its
//! copy; any other node catches up ([`catch_up`]) by reading the log: at start, and when a
//! request misses (an unknown guild or channel, or a denied membership) before it answers
//! 404 or 403. Applying a change is idempotent, so reading one twice is harmless.
//!
//! Guaranteed: a change acknowledged to its caller is in the log, and a node that misses on
//! it reads it before refusing. Not modelled: users are fixed at generation (no sign-up);
//! nothing is ever removed (no leaving a guild, deleting a channel or a guild); a change
//! written by a guild node with a clock more than [`CATCH_UP_MARGIN_MS`] behind a reader's
//! last catch-up can be skipped by that reader until it is restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ids;
use crate::ring::StoreError;
use crate::store::MessageStore;

/// How far back of its last catch-up a node reads the log again, for changes whose ids were
/// minted before that catch-up but written after it.
pub const CATCH_UP_MARGIN_MS: i64 = 10_000;

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's snowflake.
    pub id: u64,
    /// The user's name.
    pub username: String,
    /// The secret the user authenticates with (REST `Authorization` and gateway Identify).
    pub token: String,
}

/// A text channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// The channel's snowflake.
    pub id: u64,
    /// The channel's name.
    pub name: String,
}

/// A guild: channels plus members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guild {
    /// The guild's snowflake.
    pub id: u64,
    /// The guild's name.
    pub name: String,
    /// Its text channels.
    pub channels: Vec<Channel>,
    /// Member user ids.
    pub members: BTreeSet<u64>,
    /// The user who created it (0 for a generated guild).
    #[serde(default)]
    pub owner_id: u64,
}

/// The whole directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    /// Users by id.
    pub users: BTreeMap<u64, User>,
    /// Guilds by id.
    pub guilds: BTreeMap<u64, Guild>,
}

/// One node's copy of the directory, shared by its tasks. Guards are plain locks: copy what is
/// needed out of them and never hold one across an `.await`.
#[derive(Debug, Clone, Default)]
pub struct SharedDirectory {
    directory: Arc<RwLock<Directory>>,
    /// The newest change id this copy has read from the log (0 before the first catch-up).
    log_read_through: Arc<AtomicU64>,
    /// Serializes catch-ups, so concurrent misses cost one log read.
    catching_up: Arc<tokio::sync::Mutex<()>>,
    /// Catch-ups begun so far.
    catch_ups_started: Arc<AtomicU64>,
    /// The number (counted from 1 as they begin) of the last catch-up that succeeded.
    catch_up_succeeded: Arc<AtomicU64>,
}

impl SharedDirectory {
    /// A node's copy of `directory`.
    pub fn new(directory: Directory) -> Self {
        Self {
            directory: Arc::new(RwLock::new(directory)),
            ..Self::default()
        }
    }

    /// Reads the directory; a panic of another holder does not poison it for the rest.
    pub fn read(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the directory.
    pub fn write(&self) -> RwLockWriteGuard<'_, Directory> {
        self.directory.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the whole directory as it is now.
    pub fn snapshot(&self) -> Directory {
        self.read().clone()
    }

    /// Applies `record` to this copy; whether it changed anything.
    pub fn apply(&self, record: &ChangeRecord) -> bool {
        self.write().apply(&record.change)
    }

    /// How many catch-ups have begun so far: read it when a request misses, and pass it to
    /// [`catch_up_after`].
    pub fn catch_ups_started(&self) -> u64 {
        self.catch_ups_started.load(Ordering::SeqCst)
    }
}

/// One change of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectoryChange {
    /// A guild was created, with its first channel and its owner as the only member.
    GuildCreated {
        /// The guild.
        guild: Guild,
    },
    /// A text channel was added to a guild.
    ChannelCreated {
        /// The guild.
        guild_id: u64,
        /// The channel.
        channel: Channel,
    },
    /// A user joined a guild.
    MemberAdded {
        /// The guild.
        guild_id: u64,
        /// The new member.
        user_id: u64,
    },
}

/// A change with the snowflake its guild's process ordered it at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// The change's snowflake (its place in the log).
    pub id: u64,
    /// Who asked for it.
    pub actor_id: u64,
    /// The change.
    pub change: DirectoryChange,
}

impl ChangeRecord {
    /// The guild it changes.
    pub fn guild_id(&self) -> u64 {
        match &self.change {
            DirectoryChange::GuildCreated { guild } => guild.id,
            DirectoryChange::ChannelCreated { guild_id, .. }
            | DirectoryChange::MemberAdded { guild_id, .. } => *guild_id,
        }
    }
}

/// Reads the directory log from a little before the last catch-up and applies what is new;
/// returns how many changes changed the copy.
pub async fn catch_up(
    directory: &SharedDirectory,
    store: &dyn MessageStore,
) -> Result<usize, StoreError> {
    catch_up_after(directory, store, u64::MAX).await
}

/// [`catch_up`] for a request that missed when `started_at_miss` catch-ups had begun: one
/// begun after the miss has already read what the miss needs, so concurrent misses share a
/// read. `u64::MAX` always reads.
pub async fn catch_up_after(
    directory: &SharedDirectory,
    store: &dyn MessageStore,
    started_at_miss: u64,
) -> Result<usize, StoreError> {
    let _serial = directory.catching_up.lock().await;
    let succeeded = directory.catch_up_succeeded.load(Ordering::SeqCst);
    if started_at_miss != u64::MAX && succeeded > started_at_miss {
        return Ok(0);
    }
    let number = directory.catch_ups_started.fetch_add(1, Ordering::SeqCst) + 1;
    let through = directory.log_read_through.load(Ordering::SeqCst);
    let margin_ids = ids::from_timestamp_ms(ids::DISCORD_EPOCH_MS + CATCH_UP_MARGIN_MS);
    let records = store
        .directory_changes_after(through.saturating_sub(margin_ids))
        .await?;
    let mut changed = 0;
    for record in &records {
        if directory.apply(record) {
            changed += 1;
        }
    }
    if let Some(newest) = records.last() {
        directory
            .log_read_through
            .fetch_max(newest.id, Ordering::SeqCst);
    }
    directory.catch_up_succeeded.store(number, Ordering::SeqCst);
    tracing::debug!(read = records.len(), changed, "directory_caught_up");
    Ok(changed)
}
/// How [`Directory::generate`] lays out a directory.
#[derive(Debug, Clone)]
pub struct DirectoryShape {
    /// Number of users.
    pub user_count: usize,
    /// Number of guilds.
    pub guild_count: usize,
    /// Text channels per guild.
    pub channels_per_guild: usize,
    /// Unix ms at which the ids are minted.
    pub created_unix_ms: i64,
}

impl Directory {
    /// A directory of `shape`: user `i` (from 0) is `user-{i+1}` with token `token-{i+1}`, a
    /// member of guild `i % guild_count`; the first user of all is a member of every guild.
    pub fn generate(shape: &DirectoryShape) -> Self {
        assert!(
            shape.guild_count > 0,
            "a directory needs at least one guild"
        );
        let base = ids::from_timestamp_ms(shape.created_unix_ms);
        let mut next = base;
        let mut mint = || {
            next += 1;
            next
        };
        let mut directory = Directory::default();

        // 1. Guilds and their channels.
        let mut guild_ids = Vec::new();
        for g in 0..shape.guild_count {
            let id = mint();
            let channels = (0..shape.channels_per_guild)
                .map(|c| Channel {
                    id: mint(),
                    name: format!("channel-{}", c + 1),
                })
                .collect();
            let guild = Guild {
                id,
                name: format!("guild-{}", g + 1),
                channels,
                members: BTreeSet::new(),
                owner_id: 0,
            };
            guild_ids.push(id);
            directory.guilds.insert(id, guild);
        }

        // 2. Users and their memberships.
        for u in 0..shape.user_count {
            let id = mint();
            let user = User {
                id,
                username: format!("user-{}", u + 1),
                token: format!("token-{}", u + 1),
            };
            directory.users.insert(id, user);
            let home = guild_ids[u % guild_ids.len()];
            for (&guild_id, guild) in directory.guilds.iter_mut() {
                if guild_id == home || u == 0 {
                    guild.members.insert(id);
                }
            }
        }
        directory
    }

    /// Applies `change`; whether it changed anything (applying one twice changes nothing).
    pub fn apply(&mut self, change: &DirectoryChange) -> bool {
        match change {
            DirectoryChange::GuildCreated { guild } => {
                if self.guilds.contains_key(&guild.id) {
                    return false;
                }
                self.guilds.insert(guild.id, guild.clone());
                true
            }
            DirectoryChange::ChannelCreated { guild_id, channel } => {
                let Some(guild) = self.guilds.get_mut(guild_id) else {
                    return false;
                };
                if guild.channels.iter().any(|c| c.id == channel.id) {
                    return false;
                }
                guild.channels.push(channel.clone());
                guild.channels.sort_by_key(|c| c.id);
                true
            }
            DirectoryChange::MemberAdded { guild_id, user_id } => self
                .guilds
                .get_mut(guild_id)
                .is_some_and(|guild| guild.members.insert(*user_id)),
        }
    }

    /// The Discord guild object of `guild_id` (with its channels and members), if it exists.
    pub fn guild_json(&self, guild_id: u64) -> Option<Value> {
        let guild = self.guilds.get(&guild_id)?;
        let channels: Vec<Value> = guild
            .channels
            .iter()
            .map(|c| channel_json(guild.id, c))
            .collect();
        let members: Vec<Value> = guild
            .members
            .iter()
            .map(|&user_id| self.member_json(user_id))
            .collect();
        Some(json!({
            "id": guild.id.to_string(),
            "name": guild.name,
            "owner_id": guild.owner_id.to_string(),
            "channels": channels,
            "members": members,
            "member_count": guild.members.len(),
        }))
    }

    /// The Discord guild member object of `user_id`.
    pub fn member_json(&self, user_id: u64) -> Value {
        json!({
            "user": {"id": user_id.to_string(), "username": self.username(user_id)},
            "roles": [],
            "deaf": false,
            "mute": false,
        })
    }

    /// The user a token belongs to.
    pub fn user_by_token(&self, token: &str) -> Option<&User> {
        self.users.values().find(|user| user.token == token)
    }

    /// The guild that holds channel `channel_id`.
    pub fn guild_of_channel(&self, channel_id: u64) -> Option<&Guild> {
        self.guilds
            .values()
            .find(|g| g.channels.iter().any(|c| c.id == channel_id))
    }

    /// The guilds `user_id` is a member of, in id order.
    pub fn guilds_of(&self, user_id: u64) -> Vec<&Guild> {
        self.guilds
            .values()
            .filter(|g| g.members.contains(&user_id))
            .collect()
    }

    /// The username of `user_id`, or a placeholder for an unknown id.
    pub fn username(&self, user_id: u64) -> &str {
        self.users
            .get(&user_id)
            .map_or("unknown-user", |u| u.username.as_str())
    }
}

/// The Discord channel object of `channel` (a guild text channel, type 0).
pub fn channel_json(guild_id: u64, channel: &Channel) -> Value {
    json!({
        "id": channel.id.to_string(),
        "guild_id": guild_id.to_string(),
        "name": channel.name,
        "type": 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_lays_out_members_round_robin() {
        let shape = DirectoryShape {
            user_count: 5,
            guild_count: 2,
            channels_per_guild: 2,
            created_unix_ms: 1_700_000_000_000,
        };
        let dir = Directory::generate(&shape);
        assert_eq!(dir.users.len(), 5);
        let sizes: Vec<usize> = dir.guilds.values().map(|g| g.members.len()).collect();
        // Users 1, 3, 5 in guild 1; users 2, 4 in guild 2, plus user 1 everywhere.
        assert_eq!(sizes, vec![3, 3]);

        let user = dir.user_by_token("token-2").unwrap();
        assert_eq!(user.username, "user-2");
        assert_eq!(dir.guilds_of(user.id).len(), 1);
        let channel = dir.guilds.values().nth(1).unwrap().channels[0].id;
        assert_eq!(dir.guild_of_channel(channel).unwrap().name, "guild-2");
        assert!(dir.guild_of_channel(1).is_none());
    }

    #[test]
    fn changes_apply_once() {
        let mut dir = Directory::default();
        let guild = Guild {
            id: 10,
            name: "g".into(),
            channels: vec![Channel {
                id: 11,
                name: "general".into(),
            }],
            members: BTreeSet::from([1]),
            owner_id: 1,
        };
        let created = DirectoryChange::GuildCreated { guild };
        assert!(dir.apply(&created));
        assert!(
            !dir.apply(&created),
            "a second read of the log changes nothing"
        );

        let channel = DirectoryChange::ChannelCreated {
            guild_id: 10,
            channel: Channel {
                id: 12,
                name: "two".into(),
            },
        };
        assert!(dir.apply(&channel));
        assert!(!dir.apply(&channel));
        let member = DirectoryChange::MemberAdded {
            guild_id: 10,
            user_id: 2,
        };
        assert!(dir.apply(&member));
        assert!(!dir.apply(&member));
        let elsewhere = DirectoryChange::MemberAdded {
            guild_id: 99,
            user_id: 2,
        };
        assert!(!dir.apply(&elsewhere), "an unknown guild is left alone");

        assert_eq!(dir.guild_of_channel(12).map(|g| g.id), Some(10));
        assert_eq!(dir.guilds_of(2).len(), 1);
        let json = dir.guild_json(10).unwrap();
        assert_eq!(json["channels"][1]["id"], "12");
        assert_eq!(json["members"][1]["user"]["id"], "2");
        assert_eq!(json["owner_id"], "1");
    }
}
