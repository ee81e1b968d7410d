//! The session registry: every session of this gateway, live or waiting to be resumed, the
//! guilds each one follows, and the dispatches each has been sent.
//!
//! A session outlives its connection. Every dispatch gets the session's next `s` here, under
//! one lock, and goes both into the session's bounded replay buffer and, when a connection is
//! attached, into that connection's bounded queue. So a resume replays exactly what follows
//! the client's `seq`, in order and with the original `s`, and live dispatches continue after
//! it without a gap or a repeat. A queue that passes its bound detaches its connection (a slow
//! consumer, closed with 4000) instead of growing; the buffer keeps what it missed.
//!
//! Guarantees: per session, `s` rises by exactly one; a guild's events reach every session
//! of the guild in the guild's order; an event repeated by a guild (same epoch, an old
//! sequence number) is dropped; a guild that restarts (a new epoch) invalidates its sessions,
//! which may have missed what the old process had queued. Not modelled: events that belong to
//! no guild (direct messages), presence.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::protocol::intents;
use super::GatewayEvent;

/// One dispatch as a session sends it: `s`, `t`, and `d` as JSON text (shared between
/// sessions that see the same data).
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub s: u64,
    pub name: Arc<str>,
    pub d: Arc<str>,
}

impl Frame {
    /// The payload `{op: 0, t, s, d}` as text.
    pub fn text(&self) -> String {
        let name = serde_json::to_string(&*self.name).unwrap_or_else(|_| "null".to_string());
        format!(r#"{{"op":0,"t":{name},"s":{},"d":{}}}"#, self.s, self.d)
    }
}

/// Why the hub took a connection off its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// Its queue passed the bound: close resumably (4000).
    Overflow,
    /// Its guild restarted: op 9 `d: false`, the session is gone.
    Invalidated,
    /// The gateway drains: op 7, close resumably.
    Reconnect,
    /// A resume of the same session took over.
    Replaced,
}

/// What the hub hands a connection it attaches to a session.
pub(crate) struct Attached {
    pub session_id: String,
    pub conn: u64,
    pub queue: mpsc::Receiver<Frame>,
    pub kick: oneshot::Receiver<Kick>,
}

struct Link {
    conn: u64,
    queue: mpsc::Sender<Frame>,
    kick: oneshot::Sender<Kick>,
}

/// What a session is and what it has been sent.
struct Session {
    user_id: u64,
    token: String,
    intents: u64,
    shard: Option<(u64, u64)>,
    guilds: BTreeSet<u64>,
    seq: u64,
    replay: VecDeque<Frame>,
    link: Option<Link>,
    detached_at: Option<Instant>,
}

/// The hub's bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HubBounds {
    pub queue_max: usize,
    pub replay_max: usize,
}

impl Session {
    /// Gives `name`/`d` the next `s`; buffers it and queues it to the live connection. A
    /// full queue detaches the connection (it is told why) and keeps the session.
    fn push(&mut self, name: &Arc<str>, d: &Arc<str>, bounds: HubBounds) {
        self.seq += 1;
        let frame = Frame {
            s: self.seq,
            name: name.clone(),
            d: d.clone(),
        };
        if self.replay.len() == bounds.replay_max {
            self.replay.pop_front();
        }
        self.replay.push_back(frame.clone());
        let Some(link) = &self.link else {
            return;
        };
        if link.queue.try_send(frame).is_ok() {
            crate::metrics::registry().deliveries.inc();
        } else {
            self.detach(Kick::Overflow);
        }
    }

    fn detach(&mut self, why: Kick) {
        if let Some(link) = self.link.take() {
            let _ = link.kick.send(why);
            self.detached_at = Some(Instant::now());
        }
    }

    fn attach(
        &mut self,
        conn: u64,
        queue_max: usize,
    ) -> (mpsc::Receiver<Frame>, oneshot::Receiver<Kick>) {
        let (queue, queue_rx) = mpsc::channel(queue_max);
        let (kick, kick_rx) = oneshot::channel();
        self.link = Some(Link { conn, queue, kick });
        self.detached_at = None;
        (queue_rx, kick_rx)
    }
}

/// A new session: who it is and what it opens with.
pub(crate) struct NewSession {
    pub user_id: u64,
    pub token: String,
    pub intents: u64,
    /// `[shard_id, shard_count]`, if it identified with one.
    pub shard: Option<(u64, u64)>,
    /// The guilds it follows (already cut to its shard).
    pub guilds: BTreeSet<u64>,
    /// READY's `d` without `session_id` (filled in here).
    pub ready: Value,
    /// GUILD_CREATE's `d` per guild, in order.
    pub guild_creates: Vec<Value>,
}

/// Why a resume was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResumeRefused {
    /// Unknown, expired, another token's, or past the buffer: op 9 `d: false`.
    Invalid,
    /// `seq` is past what the session sent: 4007.
    InvalidSeq,
}

/// The dispatches to replay, then the attached connection (whose queue starts with RESUMED).
pub(crate) struct Resumed {
    pub replay: Vec<Frame>,
    pub attached: Attached,
}

/// The registry.
#[derive(Default)]
pub(crate) struct Hub {
    sessions: BTreeMap<String, Session>,
    /// Per guild: the sessions that follow it.
    by_guild: BTreeMap<u64, BTreeSet<String>>,
    /// Per user: their sessions.
    by_user: BTreeMap<u64, BTreeSet<String>>,
    /// Per guild: the last (epoch, sequence number) taken.
    last_guild_seq: BTreeMap<u64, (u64, u64)>,
    next_session: u64,
    next_conn: u64,
    /// Set by a drain: no new sessions.
    pub draining: bool,
}

const GUILD_CREATE: &str = "GUILD_CREATE";

/// A hub that goes away (its gateway stopped) takes its sessions out of the gauge.
impl Drop for Hub {
    fn drop(&mut self) {
        let held = i64::try_from(self.sessions.len()).unwrap_or(i64::MAX);
        crate::metrics::registry().sessions.dec_by(held);
    }
}

impl Hub {
    /// The number of sessions, live or waiting for a resume.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The number of sessions with a live connection.
    pub fn live_count(&self) -> usize {
        self.sessions.values().filter(|s| s.link.is_some()).count()
    }

    /// Registers a session issued by gateway `node_index` at `issued_ms` on its clock, and
    /// queues READY (s = 1) and its GUILD_CREATEs.
    pub fn open(
        &mut self,
        new: NewSession,
        node_index: u64,
        issued_ms: i64,
        bounds: HubBounds,
    ) -> Attached {
        // 1. The session, attached to this connection.
        self.next_session += 1;
        self.next_conn += 1;
        let session_id = session_id(node_index, issued_ms, self.next_session);
        let conn = self.next_conn;
        let mut session = Session {
            user_id: new.user_id,
            token: new.token,
            intents: new.intents,
            shard: new.shard,
            guilds: new.guilds,
            seq: 0,
            replay: VecDeque::new(),
            link: None,
            detached_at: None,
        };
        // The opening burst may be longer than the live bound; it must fit whole.
        let opening = new.guild_creates.len() + 1;
        let (queue, kick) = session.attach(conn, bounds.queue_max.max(opening));

        // 2. READY and the guilds, before any guild event can be pushed.
        let mut ready = new.ready;
        ready["session_id"] = Value::String(session_id.clone());
        session.push(&Arc::from("READY"), &Arc::from(ready.to_string()), bounds);
        if session.intents & intents::GUILDS != 0 {
            for d in new.guild_creates {
                session.push(&Arc::from(GUILD_CREATE), &Arc::from(d.to_string()), bounds);
            }
        }

        // 3. Follow the guilds.
        for &guild_id in &session.guilds {
            let followers = self.by_guild.entry(guild_id).or_default();
            followers.insert(session_id.clone());
        }
        let user_sessions = self.by_user.entry(session.user_id).or_default();
        user_sessions.insert(session_id.clone());
        self.sessions.insert(session_id.clone(), session);
        crate::metrics::registry().sessions.inc();
        Attached {
            session_id,
            conn,
            queue,
            kick,
        }
    }

    /// Makes every session of `user_id` whose shard takes `guild_id` follow it (a member who
    /// joined while connected), sending GUILD_CREATE with `guild_create` to those with the
    /// GUILDS intent; how many sessions now follow it.
    pub fn follow(
        &mut self,
        user_id: u64,
        guild_id: u64,
        guild_create: &Value,
        bounds: HubBounds,
    ) -> usize {
        let Some(ids) = self.by_user.get(&user_id) else {
            return 0;
        };
        let d: Arc<str> = Arc::from(guild_create.to_string());
        let name: Arc<str> = Arc::from(GUILD_CREATE);
        let mut followed = 0;
        for id in ids {
            let Some(session) = self.sessions.get_mut(id) else {
                continue;
            };
            let in_shard = session
                .shard
                .is_none_or(|(shard, count)| super::protocol::shard_of(guild_id, count) == shard);
            if !in_shard || !session.guilds.insert(guild_id) {
                continue;
            }
            self.by_guild
                .entry(guild_id)
                .or_default()
                .insert(id.clone());
            if session.intents & intents::GUILDS != 0 {
                session.push(&name, &d, bounds);
            }
            followed += 1;
        }
        followed
    }

    /// Resumes `session_id` from `seq` on a new connection, if the session and its buffer
    /// allow it.
    pub fn resume(
        &mut self,
        token: &str,
        session_id: &str,
        seq: u64,
        bounds: HubBounds,
    ) -> Result<Resumed, ResumeRefused> {
        // 1. The session must exist and be this token's.
        let Some(session) = self.sessions.get_mut(session_id) else {
            return Err(ResumeRefused::Invalid);
        };
        if session.token != token {
            return Err(ResumeRefused::Invalid);
        }

        // 2. `seq` must be one it sent, and everything after it still buffered.
        if seq > session.seq {
            self.remove(session_id, Kick::Replaced);
            return Err(ResumeRefused::InvalidSeq);
        }
        let oldest = session.replay.front().map_or(session.seq + 1, |f| f.s);
        if seq + 1 < oldest {
            self.remove(session_id, Kick::Replaced);
            return Err(ResumeRefused::Invalid);
        }

        // 3. Take over from any older connection; RESUMED opens the new queue.
        session.detach(Kick::Replaced);
        let replay: Vec<Frame> = session
            .replay
            .iter()
            .filter(|f| f.s > seq)
            .cloned()
            .collect();
        self.next_conn += 1;
        let conn = self.next_conn;
        let (queue, kick) = session.attach(conn, bounds.queue_max);
        session.push(&Arc::from("RESUMED"), &Arc::from("{}"), bounds);
        Ok(Resumed {
            replay,
            attached: Attached {
                session_id: session_id.to_string(),
                conn,
                queue,
                kick,
            },
        })
    }

    /// The connection `conn` of `session_id` ended: keep the session for a resume, or drop it.
    pub fn detach(&mut self, session_id: &str, conn: u64, keep: bool) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        if session.link.as_ref().is_some_and(|l| l.conn == conn) {
            session.link = None;
            session.detached_at = Some(Instant::now());
            if !keep {
                self.remove(session_id, Kick::Replaced);
            }
        }
    }

    /// Drops sessions detached for longer than `window`; how many.
    pub fn expire(&mut self, now: Instant, window: std::time::Duration) -> usize {
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.detached_at.is_some_and(|at| now >= at + window))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove(id, Kick::Replaced);
        }
        expired.len()
    }

    /// Detaches every live connection with op 7 and refuses new sessions; how many.
    pub fn drain(&mut self) -> usize {
        self.draining = true;
        let mut count = 0;
        for session in self.sessions.values_mut() {
            if session.link.is_some() {
                session.detach(Kick::Reconnect);
                count += 1;
            }
        }
        count
    }

    /// Invalidates every session that follows `guild_id` (op 9): they may have missed events.
    fn invalidate_guild(&mut self, guild_id: u64, why: &'static str) {
        let followers: Vec<String> = self
            .by_guild
            .get(&guild_id)
            .map(|f| f.iter().cloned().collect())
            .unwrap_or_default();
        tracing::info!(
            guild_id,
            sessions = followers.len(),
            reason = why,
            "guild_sessions_invalidated"
        );
        for id in &followers {
            self.remove(id, Kick::Invalidated);
        }
    }

    fn remove(&mut self, session_id: &str, why: Kick) {
        let Some(mut session) = self.sessions.remove(session_id) else {
            return;
        };
        crate::metrics::registry().sessions.dec();
        session.detach(why);
        for guild_id in &session.guilds {
            if let Some(followers) = self.by_guild.get_mut(guild_id) {
                followers.remove(session_id);
            }
        }
        if let Some(ids) = self.by_user.get_mut(&session.user_id) {
            ids.remove(session_id);
        }
    }

    /// Takes a batch of guild events, in order.
    #[cfg(test)]
    pub fn dispatch(&mut self, events: Vec<GatewayEvent>, bounds: HubBounds) {
        self.dispatch_with(events, bounds, |_, _| true);
    }

    /// [`Hub::dispatch`], calling `before_delivery` with each new event before its guild's
    /// sessions get it (a directory event changes who follows the guild); the event goes to
    /// the guild's sessions only if it answers true.
    ///
    /// Returns the guilds whose events came from a process older than the newest this hub
    /// follows, each with that newest epoch. Such an event cannot be delivered in order, so
    /// the guild's sessions are invalidated (they resync from history) rather than left with
    /// a silent gap, and the sender is told to retire the old process.
    pub fn dispatch_with(
        &mut self,
        events: Vec<GatewayEvent>,
        bounds: HubBounds,
        mut before_delivery: impl FnMut(&mut Hub, &GatewayEvent) -> bool,
    ) -> Vec<(u64, u64)> {
        let mut stale: Vec<(u64, u64)> = Vec::new();
        for event in events {
            // 1. A resent event repeats one taken; a restarted guild starts a new epoch; an
            //    event of an older epoch than the newest comes from a deposed process.
            let position = (event.guild_epoch, event.guild_seq);
            let last = self
                .last_guild_seq
                .get(&event.guild_id)
                .copied()
                .unwrap_or((0, 0));
            if event.guild_epoch < last.0 {
                if !stale.iter().any(|&(guild, _)| guild == event.guild_id) {
                    self.invalidate_guild(event.guild_id, "guild_stale_epoch_sessions_invalidated");
                    stale.push((event.guild_id, last.0));
                }
                continue;
            }
            if position <= last {
                continue;
            }
            self.last_guild_seq.insert(event.guild_id, position);
            if !before_delivery(self, &event) {
                continue;
            }
            let followers: Vec<String> = self
                .by_guild
                .get(&event.guild_id)
                .map(|f| f.iter().cloned().collect())
                .unwrap_or_default();

            // 2. After a restart the old process may have lost queued events: every session
            //    of the guild is invalidated rather than left with a gap.
            if last.0 != 0 && event.guild_epoch > last.0 {
                self.invalidate_guild(event.guild_id, "guild_restarted_sessions_invalidated");
                continue;
            }

            // 3. One `d` for sessions that may read the content, one for those that may not.
            let required = intents::required_for(&event.name);
            let name: Arc<str> = Arc::from(event.name.as_str());
            let full: Arc<str> = Arc::from(event.data.to_string());
            let author = author_of(&event.data);
            let mut blanked: Option<Arc<str>> = None;
            for id in &followers {
                let Some(session) = self.sessions.get_mut(id) else {
                    continue;
                };
                if session.intents & required != required {
                    continue;
                }
                let sees_content = session.intents & intents::MESSAGE_CONTENT != 0
                    || author.is_none_or(|a| a == session.user_id);
                let d = if sees_content {
                    &full
                } else {
                    blanked.get_or_insert_with(|| Arc::from(without_content(&event.data)))
                };
                session.push(&name, &d.clone(), bounds);
            }
        }
        stale
    }
}

/// The author of a message event, if it carries content.
fn author_of(data: &Value) -> Option<u64> {
    data.get("content")?;
    data.get("author")?.get("id")?.as_str()?.parse().ok()
}

/// `data` with the fields MESSAGE_CONTENT guards emptied, as Discord sends them without it.
fn without_content(data: &Value) -> String {
    let mut data = data.clone();
    if let Some(object) = data.as_object_mut() {
        object.insert("content".into(), Value::String(String::new()));
        for field in ["embeds", "attachments", "components"] {
            if object.contains_key(field) {
                object.insert(field.into(), Value::Array(Vec::new()));
            }
        }
    }
    data.to_string()
}

/// A session id: 32 hex digits, derived without randomness. The first 16 are a scramble of
/// the gateway node's session counter, the next 4 the node's index, the last 12 the ms (since
/// the Unix epoch, on the gateway's clock) it was issued at. The counter starts again when
/// the gateway restarts; the time keeps a new incarnation's ids apart from the old one's, as
/// long as the clock does not step back onto a millisecond the old one used.
fn session_id(node_index: u64, issued_ms: i64, counter: u64) -> String {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let issued = u64::try_from(issued_ms).unwrap_or(0) & SESSION_TIME_MASK;
    format!(
        "{:016x}{:04x}{issued:012x}",
        mix(counter ^ (node_index << 48)),
        node_index & 0xffff,
    )
}

/// The 48 bits of a session id that hold its issue time.
const SESSION_TIME_MASK: u64 = (1 << 48) - 1;

/// When a session id of this gateway was issued, in ms since the Unix epoch on the clock of
/// the gateway that issued it; `None` for an id not of this form.
pub fn session_issued_ms(session_id: &str) -> Option<i64> {
    if session_id.len() != 32 || !session_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let issued = u64::from_str_radix(session_id.get(20..)?, 16).ok()?;
    i64::try_from(issued).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOUNDS: HubBounds = HubBounds {
        queue_max: 8,
        replay_max: 4,
    };
    const ALL: u64 = intents::GUILDS | intents::GUILD_MESSAGES | intents::MESSAGE_CONTENT;

    fn event(epoch: u64, seq: u64) -> GatewayEvent {
        GatewayEvent {
            guild_id: 1,
            guild_epoch: epoch,
            guild_seq: seq,
            name: "MESSAGE_CREATE".into(),
            data: json!({"id": seq.to_string(), "content": "hi", "author": {"id": "2"}}),
        }
    }

    fn open(hub: &mut Hub, user_id: u64, intents: u64) -> Attached {
        let new = NewSession {
            user_id,
            token: format!("token-{user_id}"),
            intents,
            shard: None,
            guilds: BTreeSet::from([1]),
            ready: json!({}),
            guild_creates: vec![json!({"id": "1"})],
        };
        hub.open(new, 0, ISSUED_MS, BOUNDS)
    }

    const ISSUED_MS: i64 = 1_700_000_000_000;

    #[test]
    fn a_session_id_carries_its_issue_time_so_a_restarted_gateway_issues_new_ones() {
        let mut before = Hub::default();
        let first = open(&mut before, 1, ALL).session_id;
        assert_eq!(first.len(), 32);
        assert_eq!(session_issued_ms(&first), Some(ISSUED_MS));
        assert_eq!(&first[16..20], "0000", "gateway node 0");

        // A restarted gateway counts from 1 again, a second later on its clock.
        let mut after = Hub::default();
        let new = NewSession {
            user_id: 1,
            token: "token-1".into(),
            intents: ALL,
            shard: None,
            guilds: BTreeSet::from([1]),
            ready: json!({}),
            guild_creates: Vec::new(),
        };
        let second = after.open(new, 0, ISSUED_MS + 1_000, BOUNDS).session_id;
        assert_eq!(session_issued_ms(&second), Some(ISSUED_MS + 1_000));
        assert_eq!(first[..16], second[..16], "the same counter");
        assert_ne!(first, second);
        assert_eq!(session_issued_ms("not-an-id"), None);
    }

    fn drain(attached: &mut Attached) -> Vec<(u64, String)> {
        let mut got = Vec::new();
        while let Ok(frame) = attached.queue.try_recv() {
            got.push((frame.s, frame.name.to_string()));
        }
        got
    }

    #[test]
    fn a_resent_batch_is_dropped_and_a_restarted_guild_invalidates_its_sessions() {
        let mut hub = Hub::default();
        let mut session = open(&mut hub, 7, ALL);

        // Epoch 5 sends 1, 2; resends 2; then the guild restarts (epoch 9) and counts from 1.
        hub.dispatch(vec![event(5, 1), event(5, 2)], BOUNDS);
        hub.dispatch(vec![event(5, 2)], BOUNDS);
        hub.dispatch(vec![event(9, 1)], BOUNDS);
        let got = drain(&mut session);
        let creates = ["READY", "GUILD_CREATE", "MESSAGE_CREATE", "MESSAGE_CREATE"];
        let expected: Vec<(u64, String)> =
            (1..).zip(creates.iter().map(|n| n.to_string())).collect();
        assert_eq!(got, expected);
        assert_eq!(session.kick.try_recv(), Ok(Kick::Invalidated));
        assert_eq!(hub.session_count(), 0, "the session is gone");
    }

    #[test]
    fn an_event_of_a_deposed_process_invalidates_the_guild_and_names_the_newest_epoch() {
        let mut hub = Hub::default();
        hub.dispatch(vec![event(9, 1)], BOUNDS);
        let mut session = open(&mut hub, 7, ALL);

        // A process of epoch 5 kept serving after epoch 9 took over: its event cannot be
        // delivered in order, so the session is invalidated and the sender told epoch 9.
        let stale = hub.dispatch_with(vec![event(5, 3), event(5, 4)], BOUNDS, |_, _| true);
        assert_eq!(stale, vec![(1, 9)]);
        let got = drain(&mut session);
        assert_eq!(got.len(), 2, "READY and GUILD_CREATE only: {got:?}");
        assert_eq!(session.kick.try_recv(), Ok(Kick::Invalidated));
        assert_eq!(hub.session_count(), 0, "the session is gone");

        // The newest process goes on as before.
        let stale = hub.dispatch_with(vec![event(9, 2)], BOUNDS, |_, _| true);
        assert!(stale.is_empty());
    }

    #[test]
    fn a_resume_replays_after_seq_then_resumed_and_past_the_buffer_is_invalid() {
        let mut hub = Hub::default();
        let session = open(&mut hub, 7, ALL);
        let id = session.session_id.clone();
        hub.detach(&id, session.conn, true);

        // s 3..=6 while away; the buffer keeps the last 4 (s 3..=6).
        hub.dispatch((1..=4).map(|n| event(1, n)).collect(), BOUNDS);
        let resumed = hub.resume("token-7", &id, 4, BOUNDS);
        let Ok(mut resumed) = resumed else {
            panic!("resumable");
        };
        let replayed: Vec<u64> = resumed.replay.iter().map(|f| f.s).collect();
        assert_eq!(replayed, vec![5, 6]);
        assert_eq!(
            drain(&mut resumed.attached),
            vec![(7, "RESUMED".to_string())]
        );

        // Another token, a seq never sent, a seq before the buffer.
        let attached = resumed.attached;
        assert_eq!(
            hub.resume("token-8", &id, 6, BOUNDS).err(),
            Some(ResumeRefused::Invalid)
        );
        hub.detach(&id, attached.conn, true);
        assert_eq!(
            hub.resume("token-7", &id, 1, BOUNDS).err(),
            Some(ResumeRefused::Invalid)
        );
        assert_eq!(hub.session_count(), 0);
        let other = open(&mut hub, 7, ALL);
        let refused = hub.resume("token-7", &other.session_id, 9, BOUNDS).err();
        assert_eq!(refused, Some(ResumeRefused::InvalidSeq));
    }

    #[test]
    fn an_overflowing_queue_detaches_its_connection_and_keeps_the_session() {
        let mut hub = Hub::default();
        let mut session = open(&mut hub, 7, ALL);
        hub.dispatch((1..=7).map(|n| event(1, n)).collect(), BOUNDS);
        assert_eq!(session.kick.try_recv(), Ok(Kick::Overflow));
        assert_eq!((hub.session_count(), hub.live_count()), (1, 0));
        // READY, GUILD_CREATE and 6 events filled the 8 slots; s 9 went only to the buffer.
        assert_eq!(drain(&mut session).last().map(|f| f.0), Some(8));
        let resumed = hub.resume("token-7", &session.session_id, 8, BOUNDS);
        let replayed: Vec<u64> = resumed
            .map(|r| r.replay.iter().map(|f| f.s).collect())
            .unwrap_or_default();
        assert_eq!(replayed, vec![9]);
    }

    #[test]
    fn intents_choose_the_events_and_message_content_guards_others_content() {
        let mut hub = Hub::default();
        let mut reader = open(&mut hub, 7, intents::GUILD_MESSAGES);
        let mut author = open(&mut hub, 2, intents::GUILD_MESSAGES);
        let mut guilds_only = open(&mut hub, 9, intents::GUILDS);
        hub.dispatch(vec![event(1, 1)], BOUNDS);
        let d = |attached: &mut Attached| {
            let mut last = None;
            while let Ok(frame) = attached.queue.try_recv() {
                last = Some(frame);
            }
            last.map(|f| (f.name.to_string(), f.d.to_string()))
        };
        let blank = r#"{"author":{"id":"2"},"content":"","id":"1"}"#;
        let full = r#"{"author":{"id":"2"},"content":"hi","id":"1"}"#;
        assert_eq!(
            d(&mut reader),
            Some(("MESSAGE_CREATE".into(), blank.into()))
        );
        assert_eq!(d(&mut author), Some(("MESSAGE_CREATE".into(), full.into())));
        assert_eq!(
            d(&mut guilds_only).map(|f| f.0),
            Some("GUILD_CREATE".into())
        );
    }

    #[test]
    fn reactions_reach_only_sessions_with_the_guild_message_reactions_intent() {
        let mut hub = Hub::default();
        let reactions = intents::GUILD_MESSAGES | intents::GUILD_MESSAGE_REACTIONS;
        let mut with = open(&mut hub, 7, reactions);
        let mut without = open(&mut hub, 8, intents::GUILD_MESSAGES);
        let data = json!({"user_id": "8", "channel_id": "5", "message_id": "1", "guild_id": "1",
            "emoji": {"id": null, "name": "🔥"}, "burst": false, "type": 0,
            "message_author_id": "2"});
        let add = GatewayEvent {
            name: "MESSAGE_REACTION_ADD".into(),
            data: data.clone(),
            ..event(1, 2)
        };
        let remove = GatewayEvent {
            name: "MESSAGE_REACTION_REMOVE".into(),
            data,
            ..event(1, 3)
        };
        hub.dispatch(vec![event(1, 1), add, remove], BOUNDS);
        let mut frames = Vec::new();
        while let Ok(frame) = with.queue.try_recv() {
            frames.push((frame.s, frame.name.to_string(), frame.d.to_string()));
        }
        let names: Vec<(u64, &str)> = frames.iter().map(|f| (f.0, f.1.as_str())).collect();
        assert_eq!(
            names,
            [
                (1, "READY"),
                (2, "MESSAGE_CREATE"),
                (3, "MESSAGE_REACTION_ADD"),
                (4, "MESSAGE_REACTION_REMOVE")
            ]
        );
        // The payload passes as the guild made it: no content to blank.
        let added: serde_json::Value = serde_json::from_str(&frames[2].2).unwrap();
        assert_eq!(added["emoji"]["name"], "🔥");
        assert_eq!(added["message_author_id"], "2");
        let got = drain(&mut without);
        assert_eq!(
            got.last(),
            Some(&(2, "MESSAGE_CREATE".to_string())),
            "{got:?}"
        );
    }

    #[test]
    fn a_member_who_joins_is_followed_by_the_sessions_whose_shard_takes_the_guild() {
        let mut hub = Hub::default();
        let mut unsharded = open(&mut hub, 7, ALL);
        let mut other_shard = hub.open(
            NewSession {
                user_id: 7,
                token: "token-7".into(),
                intents: ALL,
                shard: Some((1, 2)),
                guilds: BTreeSet::new(),
                ready: json!({}),
                guild_creates: Vec::new(),
            },
            0,
            ISSUED_MS,
            BOUNDS,
        );
        // Guild 4 << 22 is on shard 0 of 2: only the unsharded session takes it.
        let guild_id = 4 << 22;
        let followed = hub.follow(7, guild_id, &json!({"id": guild_id.to_string()}), BOUNDS);
        assert_eq!(followed, 1);
        assert_eq!(
            drain(&mut unsharded).last(),
            Some(&(3, "GUILD_CREATE".to_string()))
        );
        assert_eq!(drain(&mut other_shard), vec![(1, "READY".to_string())]);
        let mut event = event(1, 1);
        event.guild_id = guild_id;
        hub.dispatch(vec![event], BOUNDS);
        assert_eq!(
            drain(&mut unsharded),
            vec![(4, "MESSAGE_CREATE".to_string())]
        );
        assert!(drain(&mut other_shard).is_empty());
    }
}
