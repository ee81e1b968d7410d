//! How a gateway follows directory changes its guilds dispatch.
//!
//! GUILD_CREATE, CHANNEL_CREATE and GUILD_MEMBER_ADD come through the same ordered fan-out as
//! messages. Before such an event is delivered, the gateway applies it to its own directory
//! copy and subscribes the live sessions of the users it concerns to the guild: the members
//! of a new guild (its owner), or the new member, who also gets a GUILD_CREATE of the whole
//! guild first. The event itself then reaches every session of the guild as usual.
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

/// Applies a directory event to the gateway's copy and subscribes the sessions it concerns.
pub(super) fn apply(
    directory: &SharedDirectory,
    hub: &mut Hub,
    event: &GatewayEvent,
    bounds: HubBounds,
) {
    let Some(change) = change_of(event) else {
        if matches!(
            event.name.as_str(),
            "GUILD_CREATE" | "CHANNEL_CREATE" | "GUILD_MEMBER_ADD"
        ) {
            tracing::warn!(name = %event.name, "directory_event_unreadable");
        }
        return;
    };
    directory.write().apply(&change);

    let (guild_id, joining): (u64, Vec<u64>) = match &change {
        DirectoryChange::GuildCreated { guild } => {
            (guild.id, guild.members.iter().copied().collect())
        }
        DirectoryChange::MemberAdded { guild_id, user_id } => (*guild_id, vec![*user_id]),
        DirectoryChange::ChannelCreated { .. } => return,
    };
    let welcome = matches!(change, DirectoryChange::MemberAdded { .. })
        .then(|| directory.read().guild_json(guild_id))
        .flatten();
    for user_id in joining {
        if let Some(welcome) = &welcome {
            hub.push_to_user(user_id, "GUILD_CREATE", welcome, bounds);
        }
        hub.follow(user_id, guild_id, |_| true);
    }
}
