//! Who exists: users with their tokens, guilds with their channels and members.
//!
//! Every role gets the same directory at start and treats it as read-only. Ids are snowflakes
//! minted at the directory's creation time, so every channel is older than its messages, as
//! the history read across buckets relies on.
//!
//! Each role holds its own [`SharedDirectory`]: one copy per node, shared by that node's tasks
//! and changed in place when guilds, channels or members are created. Two nodes never share a
//! copy (in the simulator each host gets its own), so a change reaches another node only over
//! the network.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

use crate::ids;

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
pub struct SharedDirectory(Arc<RwLock<Directory>>);

impl SharedDirectory {
    /// A node's copy of `directory`.
    pub fn new(directory: Directory) -> Self {
        Self(Arc::new(RwLock::new(directory)))
    }

    /// Reads the directory; a panic of another holder does not poison it for the rest.
    pub fn read(&self) -> RwLockReadGuard<'_, Directory> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the directory.
    pub fn write(&self) -> RwLockWriteGuard<'_, Directory> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the whole directory as it is now.
    pub fn snapshot(&self) -> Directory {
        self.read().clone()
    }
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
}
