//! The workload's population: the directory of users and guilds a scenario asks for, and one
//! [`UserClient`] per user with its scripted sends (trace messages, an @everyone burst).
//!
//! Heavy-tailed directories: the first guild holds `big_guild_share` of the users; every user
//! joins, besides, a Poisson number of other guilds (so that the mean is `guilds_per_user`),
//! each drawn with Zipf weights `1 / (rank + 10)^size_exponent` (the offset keeps the second
//! guild smaller than the big one); a guild left empty gets one random member. The layout
//! comes from a fixed seed, so a scenario names one directory, whatever the run's seed.
//!
//! Not modelled: guilds joined or left during a run, roles and permissions beyond membership.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use chat_faults::rng::SplitMix64;
use chat_system::directory::{Directory, DirectoryShape};

use crate::client::{ScriptAction, ScriptStep, UserClient};
use crate::recorder::Recorder;
use crate::scenario::{DirectoryKind, Scenario};
use crate::trace::Trace;

/// The seed every directory layout is drawn from.
const DIRECTORY_SEED: u64 = 0x5eed_d1c7;
/// Added to a guild's popularity rank before the Zipf power.
const ZIPF_RANK_OFFSET: f64 = 10.0;
/// Trace messages start this long after the run, once sessions are up.
const TRACE_START_MS: u64 = 2_000;

/// Poisson-distributed count with mean `mean` (Knuth's method; means here are small).
fn poisson(rng: &mut SplitMix64, mean: f64) -> u64 {
    let limit = (-mean.max(0.0)).exp();
    let mut product = rng.unit();
    let mut count = 0;
    while product > limit && count < 1_000 {
        product *= rng.unit();
        count += 1;
    }
    count
}

/// The directory `scenario` asks for, its ids minted at `created_unix_ms`; a trace scenario
/// needs its loaded `trace`.
pub fn directory(scenario: &Scenario, created_unix_ms: i64, trace: Option<&Trace>) -> Directory {
    let plan = &scenario.directory;
    match (plan.shape, trace) {
        (DirectoryKind::Trace, Some(trace)) => trace_directory(trace, created_unix_ms),
        (DirectoryKind::Trace, None) => {
            panic!("a trace scenario runs only with its trace loaded")
        }
        (DirectoryKind::RoundRobin, _) => Directory::generate(&DirectoryShape {
            user_count: plan.users,
            guild_count: plan.guilds,
            channels_per_guild: plan.channels_per_guild,
            created_unix_ms,
        }),
        (DirectoryKind::HeavyTailed, _) => heavy_tailed(scenario, created_unix_ms),
    }
}

fn heavy_tailed(scenario: &Scenario, created_unix_ms: i64) -> Directory {
    let plan = &scenario.directory;
    let mut directory = Directory::generate(&DirectoryShape {
        user_count: plan.users,
        guild_count: plan.guilds,
        channels_per_guild: plan.channels_per_guild,
        created_unix_ms,
    });
    let mut rng = SplitMix64::new(DIRECTORY_SEED);
    let guild_ids: Vec<u64> = directory.guilds.keys().copied().collect();
    let user_ids: Vec<u64> = directory.users.keys().copied().collect();
    let mut members: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); guild_ids.len()];

    // 1. The big guild: the first big_guild_share of the users in a shuffled order.
    let mut shuffled = user_ids.clone();
    for i in (1..shuffled.len()).rev() {
        let j = rng.range(0, i as u64) as usize;
        shuffled.swap(i, j);
    }
    let big_count = (plan.big_guild_share * user_ids.len() as f64).round() as usize;
    members[0].extend(shuffled.iter().take(big_count));

    // 2. Other guilds by Zipf weight, a Poisson number per user.
    let weights: Vec<f64> = (1..guild_ids.len())
        .map(|rank| 1.0 / (rank as f64 + ZIPF_RANK_OFFSET).powf(plan.size_exponent))
        .collect();
    let total: f64 = weights.iter().sum();
    let extra_mean = (plan.guilds_per_user - plan.big_guild_share).max(0.0);
    for &user in &user_ids {
        let in_big = members[0].contains(&user);
        let wanted = (poisson(&mut rng, extra_mean) as usize)
            .max(usize::from(!in_big))
            .min(weights.len());
        let mut joined = 0;
        let mut attempts = 0;
        while joined < wanted && attempts < 100 * wanted {
            attempts += 1;
            let mut pick = rng.unit() * total;
            let mut index = weights.len() - 1;
            for (i, weight) in weights.iter().enumerate() {
                if pick < *weight {
                    index = i;
                    break;
                }
                pick -= weight;
            }
            if members[index + 1].insert(user) {
                joined += 1;
            }
        }
    }

    // 3. No guild without members.
    for guild in members.iter_mut().filter(|m| m.is_empty()) {
        guild.insert(user_ids[rng.range(0, user_ids.len() as u64 - 1) as usize]);
    }
    for (guild_id, set) in guild_ids.iter().zip(members) {
        if let Some(guild) = directory.guilds.get_mut(guild_id) {
            guild.members = set;
        }
    }
    directory
}

fn trace_directory(trace: &Trace, created_unix_ms: i64) -> Directory {
    let channels_max = (0..trace.guilds.len())
        .map(|g| trace.channels.iter().filter(|c| c.guild == g).count())
        .max()
        .unwrap_or(1);
    let mut directory = Directory::generate(&DirectoryShape {
        user_count: trace.authors.len(),
        guild_count: trace.guilds.len(),
        channels_per_guild: channels_max,
        created_unix_ms,
    });
    let user_ids: Vec<u64> = directory.users.keys().copied().collect();
    let guild_ids: Vec<u64> = directory.guilds.keys().copied().collect();

    // Each guild keeps as many channels as it exported, named after them, and its members
    // are the authors who wrote in it.
    let mut members: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
    for message in &trace.messages {
        let guild = trace.channels[message.channel].guild;
        members
            .entry(guild)
            .or_default()
            .insert(user_ids[message.author]);
    }
    for (index, guild_id) in guild_ids.iter().enumerate() {
        let Some(guild) = directory.guilds.get_mut(guild_id) else {
            continue;
        };
        let names: Vec<&str> = trace
            .channels
            .iter()
            .filter(|c| c.guild == index)
            .map(|c| c.name.as_str())
            .collect();
        guild.channels.truncate(names.len());
        for (channel, name) in guild.channels.iter_mut().zip(names) {
            channel.name = name.to_string();
        }
        guild.members = members.remove(&index).unwrap_or_default();
    }
    directory
}

/// The directory channel each trace channel maps to.
fn trace_channel_ids(trace: &Trace, directory: &Directory) -> Vec<u64> {
    let guilds: Vec<&chat_system::directory::Guild> = directory.guilds.values().collect();
    let mut seen_in_guild: BTreeMap<usize, usize> = BTreeMap::new();
    trace
        .channels
        .iter()
        .map(|channel| {
            let position = seen_in_guild.entry(channel.guild).or_insert(0);
            let id = guilds[channel.guild].channels[*position].id;
            *position += 1;
            id
        })
        .collect()
}

/// The speed-up a trace replays at: the scenario's, or (0) the one that fits it between the
/// start and the end of the workload.
pub fn trace_speedup(scenario: &Scenario, trace: &Trace) -> f64 {
    let asked = scenario.trace.as_ref().map_or(0.0, |t| t.speedup);
    if asked > 0.0 {
        return asked;
    }
    let window_ms = scenario
        .workload_end_ms
        .saturating_sub(TRACE_START_MS + 1_000);
    (trace.span_ms() as f64 / window_ms.max(1) as f64).max(1.0)
}

/// A reaction is made this long after its message (then 5 ms apart per reactor).
const REACTION_DELAY_MS: u64 = 250;

/// Each user's scripted steps: trace messages, replies, edits and reactions, and
/// @everyone replies, in time order.
fn scripts(
    scenario: &Scenario,
    directory: &Directory,
    trace: Option<&Trace>,
) -> BTreeMap<u64, Vec<ScriptStep>> {
    let mut scripts: BTreeMap<u64, Vec<ScriptStep>> = BTreeMap::new();

    // 1. Trace messages at their time over the speed-up; later ones do not fit the run.
    if let (Some(trace), DirectoryKind::Trace) = (trace, scenario.directory.shape) {
        trace_steps(scenario, directory, trace, &mut scripts);
    }

    // 2. The @everyone burst: a share of the big guild replies in its first channel.
    if let Some(everyone) = &scenario.everyone {
        let mut rng = SplitMix64::new(DIRECTORY_SEED ^ everyone.at_ms);
        if let Some(big) = directory.guilds.values().next() {
            let channel_id = big.channels.first().map_or(0, |c| c.id);
            for &member in &big.members {
                if rng.unit() < everyone.sender_share {
                    let at_ms = everyone.at_ms + rng.range(0, everyone.duration_ms);
                    scripts.entry(member).or_default().push(ScriptStep {
                        at_ms,
                        channel_id,
                        action: ScriptAction::Send {
                            length: 20,
                            trace_index: None,
                            reply_to: None,
                        },
                    });
                }
            }
        }
    }
    for script in scripts.values_mut() {
        script.sort_by_key(|s| s.at_ms);
    }
    scripts
}

/// A trace's steps: each message sent by its author at its time over the speed-up (a reply
/// with its target, if that was replayed in the same channel), each edit by the author at
/// its edit time (no later than the end of the workload), and each reaction by one of the
/// guild's users just after its message: the users the export lists when they are authors
/// of the guild, then the guild's members in turn (a count above the member count makes
/// some users react twice, which changes nothing but is still a request).
fn trace_steps(
    scenario: &Scenario,
    directory: &Directory,
    trace: &Trace,
    scripts: &mut BTreeMap<u64, Vec<ScriptStep>>,
) {
    let user_ids: Vec<u64> = directory.users.keys().copied().collect();
    let speedup = trace_speedup(scenario, trace);
    let channel_ids = trace_channel_ids(trace, directory);
    let targets = trace.reply_targets();
    let first_ms = trace.messages.first().map_or(0, |m| m.unix_ms);
    let at =
        |unix_ms: u64| TRACE_START_MS + (unix_ms.saturating_sub(first_ms) as f64 / speedup) as u64;
    let last_ms = scenario.workload_end_ms.saturating_sub(1);
    let author_index: BTreeMap<u64, usize> = trace
        .authors
        .iter()
        .enumerate()
        .map(|(i, &a)| (a, i))
        .collect();

    for (index, message) in trace.messages.iter().enumerate() {
        // 1. The message, or the reply.
        let at_ms = at(message.unix_ms);
        if at_ms >= scenario.workload_end_ms {
            break;
        }
        let channel_id = channel_ids[message.channel];
        let author = user_ids[message.author];
        let mut push = |user: u64, at_ms: u64, action: ScriptAction| {
            let step = ScriptStep {
                at_ms,
                channel_id,
                action,
            };
            scripts.entry(user).or_default().push(step);
        };
        let send = ScriptAction::Send {
            length: message.length,
            trace_index: Some(index),
            reply_to: targets[index],
        };
        push(author, at_ms, send);

        // 2. Its edit, by its author.
        if let Some(edited_ms) = message.edited_unix_ms {
            let edit_at = at(edited_ms).clamp(at_ms + 1, last_ms.max(at_ms + 1));
            let edit = ScriptAction::Edit {
                trace_index: index,
                length: message.length,
            };
            push(author, edit_at, edit);
        }

        // 3. Its reactions, by the guild's users.
        let guild = trace.channels[message.channel].guild;
        let members: Vec<u64> = directory
            .guilds
            .values()
            .nth(guild)
            .map(|g| g.members.iter().copied().collect())
            .unwrap_or_default();
        let mut spread = 0u64;
        for reaction in &message.reactions {
            let listed = reaction
                .user_ids
                .iter()
                .filter_map(|id| author_index.get(id).map(|&i| user_ids[i]))
                .filter(|user| members.contains(user));
            let others = members.iter().copied().cycle();
            let reactors = listed.chain(others).take(reaction.count);
            for user in reactors {
                let react_at = (at_ms + REACTION_DELAY_MS + 5 * spread).min(last_ms.max(at_ms));
                spread += 1;
                let react = ScriptAction::React {
                    trace_index: index,
                    emoji: reaction.emoji.clone(),
                };
                push(user, react_at, react);
            }
        }
    }
}

/// Where the clients reach the cluster, and what they share.
pub struct ClientEnv {
    /// The REST API nodes; users take them in turn, so a guild's members send through
    /// several of them at once.
    pub api: Vec<SocketAddr>,
    /// The gateway.
    pub gateway: SocketAddr,
    /// The run's recorder.
    pub recorder: Recorder,
    /// The start of the run.
    pub start: Instant,
}

/// One client per user of `directory`, with its channels and script.
pub fn clients(
    scenario: &Scenario,
    directory: &Directory,
    trace: Option<&Trace>,
    env: &ClientEnv,
) -> Vec<UserClient> {
    let mut scripts = scripts(scenario, directory, trace);
    let replayed = crate::client::ReplayIds::default();
    directory
        .users
        .values()
        .enumerate()
        .map(|(index, user)| UserClient {
            user: user.clone(),
            channel_ids: directory
                .guilds_of(user.id)
                .iter()
                .flat_map(|g| g.channels.iter().map(|c| c.id))
                .collect(),
            api: env.api[index % env.api.len().max(1)],
            gateway: env.gateway,
            scenario: scenario.clone(),
            script: Arc::new(scripts.remove(&user.id).unwrap_or_default()),
            replayed: replayed.clone(),
            recorder: env.recorder.clone(),
            start: env.start,
            online: Arc::new(AtomicBool::new(true)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_has_one_big_guild_and_a_heavy_tail() {
        let scenario = Scenario::by_name("small").unwrap();
        let directory = directory(&scenario, 1_700_000_000_000, None);
        assert_eq!(directory.users.len(), 1000);
        assert_eq!(directory.guilds.len(), 200);
        let sizes: Vec<usize> = directory.guilds.values().map(|g| g.members.len()).collect();

        // The big guild holds 30% of users, and is the biggest.
        assert_eq!(sizes[0], 300);
        assert!(sizes[1..].iter().all(|s| (1..300).contains(s)), "{sizes:?}");

        // About 5 guilds per user.
        let memberships: usize = sizes.iter().sum();
        let per_user = memberships as f64 / 1000.0;
        assert!((4.6..=5.4).contains(&per_user), "{per_user}");

        // Heavy-tailed: the 10 biggest of the rest hold far more than the 10 smallest.
        let mut rest = sizes[1..].to_vec();
        rest.sort_unstable();
        let small: usize = rest[..10].iter().sum();
        let big: usize = rest[rest.len() - 10..].iter().sum();
        assert!(big > 5 * small, "{rest:?}");
        assert!(directory.guilds.values().all(|g| g.channels.len() == 3));
    }

    #[test]
    fn peak_scripts_replies_from_about_half_the_big_guild() {
        let scenario = Scenario::by_name("peak").unwrap();
        let directory = directory(&scenario, 1_700_000_000_000, None);
        let scripts = scripts(&scenario, &directory, None);
        let replies: usize = scripts.values().map(Vec::len).sum();
        assert!((120..=180).contains(&replies), "{replies}");
        let big = directory.guilds.values().next().unwrap();
        for (user, script) in &scripts {
            assert!(big.members.contains(user));
            for send in script {
                assert!((30_000..=35_000).contains(&send.at_ms), "{send:?}");
                assert_eq!(send.channel_id, big.channels[0].id);
            }
        }
    }
}
