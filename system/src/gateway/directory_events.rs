//! How a gateway follows directory changes its guilds dispatch.
//!
//! GUILD_CREATE, CHANNEL_CREATE and GUILD_MEMBER_ADD come through the same ordered fan-out as
//! messages. Before such an event is delivered, the gateway applies it to its own directory
//! copy and subscribes the live sessions of the users it concerns to the guild: the members
//! of a new guild (its owner), who get the guild's GUILD_CREATE as they start to follow it, or
//! the new member, who gets a GUILD_CREATE of the whole guild first; GUILD_MEMBER_ADD and
//! CHANNEL_CREATE then reach every session of the guild as usual.
//!
//! Not modelled: a gateway does not read the directory log, so a gateway that restarts knows
//! only the directory it was started with plus what it is dispatched afterwards.

use serde_json::Value;

use super::hub::{Hub, HubBounds};
use super::GatewayEvent;
use crate::directory::{Channel, DirectoryChange, Guild, SharedDirectory};

fn snowflake(value: &Value) -> Option<u64> {
    value.as_str()?.parse().ok()
}

/// The change an event describes, if it is a directory event this gateway understands.
pub(super) fn change_of(event: &GatewayEvent) -> Option<DirectoryChange> {
    let data = &event.data;
    match event.name.as_str() {
        "GUILD_CREATE" => {
            let channels = data["channels"].as_array()?;
            let channels = channels
                .iter()
                .map(|c| {
                    Some(Channel {
                        id: snowflake(&c["id"])?,
                        name: c["name"].as_str()?.to_string(),
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            let members = data["members"].as_array()?;
            let members = members
                .iter()
                .map(|m| snowflake(&m["user"]["id"]))
                .collect::<Option<_>>()?;
            let guild = Guild {
                id: snowflake(&data["id"])?,
                name: data["name"].as_str()?.to_string(),
                channels,
                members,
                owner_id: snowflake(&data["owner_id"]).unwrap_or(0),
            };
            Some(DirectoryChange::GuildCreated { guild })
        }
        "CHANNEL_CREATE" => Some(DirectoryChange::ChannelCreated {
            guild_id: snowflake(&data["guild_id"])?,
            channel: Channel {
                id: snowflake(&data["id"])?,
                name: data["name"].as_str()?.to_string(),
            },
        }),
        "GUILD_MEMBER_ADD" => Some(DirectoryChange::MemberAdded {
            guild_id: snowflake(&data["guild_id"])?,
            user_id: snowflake(&data["user"]["id"])?,
        }),
        _ => None,
    }
}

/// Applies a directory event to the gateway's copy and subscribes the sessions it concerns;
/// whether the event still goes to the guild's sessions. A new guild's GUILD_CREATE reaches
/// its members as they start to follow it, so it is not sent again.
pub(super) fn apply(
    directory: &SharedDirectory,
    hub: &mut Hub,
    event: &GatewayEvent,
    bounds: HubBounds,
) -> bool {
    let Some(change) = change_of(event) else {
        if matches!(
            event.name.as_str(),
            "GUILD_CREATE" | "CHANNEL_CREATE" | "GUILD_MEMBER_ADD"
        ) {
            tracing::warn!(name = %event.name, "directory_event_unreadable");
        }
        return true;
    };
    directory.write().apply(&change);

    match &change {
        DirectoryChange::GuildCreated { guild } => {
            for &user_id in &guild.members {
                hub.follow(user_id, guild.id, &event.data, bounds);
            }
            false
        }
        DirectoryChange::MemberAdded { guild_id, user_id } => {
            // The new member gets the whole guild first, then the event with everyone else.
            let guild = directory.read().guild_json(*guild_id);
            if let Some(guild) = guild {
                hub.follow(*user_id, *guild_id, &guild, bounds);
            }
            true
        }
        DirectoryChange::ChannelCreated { .. } => true,
    }
}
