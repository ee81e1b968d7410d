//! Latency and loss per link, for simulated TCP connections: madsim has one latency range and
//! one loss rate for its whole network, so link and node faults are modelled here.
//!
//! A fault table, one per simulation, holds rules: each covers a set of directed links (every
//! link, every link of some nodes, or listed `(from, to)` pairs, by IP) and adds a delay, a
//! jitter and a loss rate. Where several rules cover a link, delays and jitters add up and
//! losses combine as independent drops. The table lives in a thread-local: madsim runs a
//! simulation on one thread, so simulations on parallel threads never share one;
//! [`reset`] empties it, which a harness does at the start and end of every run.
//!
//! The receiving end applies the faults ([`DelayedReads`], inside
//! [`crate::net::FlushIfDirty`]). Bytes from the peer are taken off the socket as madsim
//! delivers them, each piece stamped with when it may be read: on arrival plus the link's
//! delay and a uniform draw of its jitter. With the loss rate a piece is lost instead, and TCP
//! resends it after a retransmission timeout of [`RTO_INITIAL`], doubling on each loss in a
//! row up to [`RTO_MAX`]; a resent piece may be lost again (the rule in force at that moment
//! decides), and once it gets through it pays the link's delay. Pieces are read in order, so
//! a lost piece holds up everything behind it, as TCP's in-order delivery does. Delaying at
//! the receiver keeps the sender free: a real link's latency does not stop the sender from
//! sending more meanwhile, which delaying each flush would.
//!
//! Randomness comes from madsim's seeded generator, and only while a rule covers the link, so
//! a run without link faults draws exactly what it drew before and the same seed gives the
//! same run. Under the real runtime none of this is compiled.
//!
//! Not modelled: connection set-up (a connect is neither delayed nor lost), bandwidth, the
//! congestion window, duplicated or reordered segments, and a stall that resets the
//! connection (TCP gives up only after minutes; our protocols time out first).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use madsim::rand::Rng;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The first retransmission timeout after a loss (Linux's minimum RTO).
pub const RTO_INITIAL: Duration = Duration::from_millis(200);
/// The longest retransmission timeout a run of losses backs off to.
pub const RTO_MAX: Duration = Duration::from_millis(3_200);

/// What a rule does to the bytes crossing its links.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkFault {
    /// Added one-way delay.
    pub delay: Duration,
    /// Added random delay on top, uniform in `0..=jitter`.
    pub jitter: Duration,
    /// The chance that a piece is lost (and resent), in `0..=1`.
    pub loss_rate: f64,
}

impl LinkFault {
    /// Two rules on one link: delays and jitters add, losses are independent drops.
    fn and(self, other: LinkFault) -> LinkFault {
        LinkFault {
            delay: self.delay + other.delay,
            jitter: self.jitter + other.jitter,
            loss_rate: 1.0 - (1.0 - self.loss_rate) * (1.0 - other.loss_rate),
        }
    }
}

/// Which directed links a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkScope {
    /// Every link.
    Every,
    /// Every link from or to one of these nodes.
    Nodes(BTreeSet<IpAddr>),
    /// These links, `(from, to)`.
    Links(BTreeSet<(IpAddr, IpAddr)>),
}

impl LinkScope {
    fn covers(&self, from: IpAddr, to: IpAddr) -> bool {
        match self {
            LinkScope::Every => true,
            LinkScope::Nodes(nodes) => nodes.contains(&from) || nodes.contains(&to),
            LinkScope::Links(links) => links.contains(&(from, to)),
        }
    }
}

std::thread_local! {
    /// The rules of the simulation running on this thread, by the id the harness gave them.
    static RULES: RefCell<BTreeMap<u64, (LinkScope, LinkFault)>> =
        const { RefCell::new(BTreeMap::new()) };
}

/// Puts rule `id` in force (replacing an earlier rule of that id).
pub fn set(id: u64, scope: LinkScope, fault: LinkFault) {
    RULES.with(|rules| rules.borrow_mut().insert(id, (scope, fault)));
}

/// Lifts rule `id`; whether it was in force.
pub fn clear(id: u64) -> bool {
    RULES.with(|rules| rules.borrow_mut().remove(&id).is_some())
}

/// Lifts every rule: a fresh run's table.
pub fn reset() {
    RULES.with(|rules| rules.borrow_mut().clear());
}

/// What the rules in force do to the link `from` -> `to`; `None` if none covers it.
pub fn lookup(from: IpAddr, to: IpAddr) -> Option<LinkFault> {
    RULES.with(|rules| {
        rules
            .borrow()
            .values()
            .filter(|(scope, _)| scope.covers(from, to))
            .map(|(_, fault)| *fault)
            .reduce(LinkFault::and)
    })
}

/// One piece taken off the socket and not yet read.
#[derive(Debug)]
enum Piece {
    /// Bytes, of which `read` have been handed out.
    Bytes { data: Vec<u8>, read: usize },
    /// The peer closed the connection.
    Eof,
    /// The socket failed.
    Failed(io::Error),
}

#[derive(Debug)]
struct Held {
    piece: Piece,
    /// When it may be read, or, if `lost`, when it is resent.
    ready_at: Instant,
    /// Lost and waiting for its retransmission.
    lost: bool,
    /// The retransmission timeout it waited last.
    rto: Duration,
}

/// The bytes to read from a socket that may cross faulty links: held back until their link's
/// delay and losses let them through.
pub struct DelayedReads {
    from: IpAddr,
    to: IpAddr,
    held: VecDeque<Held>,
    timer: Option<Pin<Box<Sleep>>>,
    /// The socket ended (EOF or an error is held, or was handed out).
    ended: bool,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for DelayedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayedReads")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("held", &self.held.len())
            .finish()
    }
}

/// The most bytes taken off the socket as one piece.
const PIECE_BYTES_MAX: usize = 16 * 1024;

impl DelayedReads {
    /// Reads that cross the link from the peer at `from` to this end at `to`.
    pub fn new(from: IpAddr, to: IpAddr) -> Self {
        Self {
            from,
            to,
            held: VecDeque::new(),
            timer: None,
            ended: false,
            scratch: Vec::new(),
        }
    }

    /// Reads from `inner` into `buf` as the link's faults allow.
    pub fn poll_read<S: AsyncRead>(
        &mut self,
        mut inner: Pin<&mut S>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // 1. Nothing held back: a healthy link (or an ended socket) reads straight through.
        if self.held.is_empty() && (self.ended || lookup(self.from, self.to).is_none()) {
            return inner.poll_read(cx, buf);
        }

        // 2. Take off the socket whatever has arrived, each piece stamped.
        while !self.ended {
            self.scratch.resize(PIECE_BYTES_MAX, 0);
            let mut piece_buf = ReadBuf::new(&mut self.scratch);
            let piece = match inner.as_mut().poll_read(cx, &mut piece_buf) {
                Poll::Pending => break,
                Poll::Ready(Ok(())) if piece_buf.filled().is_empty() => Piece::Eof,
                Poll::Ready(Ok(())) => Piece::Bytes {
                    data: piece_buf.filled().to_vec(),
                    read: 0,
                },
                Poll::Ready(Err(error)) => Piece::Failed(error),
            };
            self.ended = !matches!(piece, Piece::Bytes { .. });
            let held = self.arrived(piece);
            self.held.push_back(held);
        }

        // 3. Hand out the oldest piece once its time has come.
        self.poll_front(cx, buf)
    }

    /// Stamps a piece that just arrived.
    fn arrived(&self, piece: Piece) -> Held {
        let now = Instant::now();
        let mut held = Held {
            piece,
            ready_at: now,
            lost: false,
            rto: Duration::ZERO,
        };
        if let Some(fault) = lookup(self.from, self.to) {
            transmit(&mut held, fault, now, RTO_INITIAL);
        }
        held
    }

    fn poll_front(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let Some(front) = self.held.front_mut() else {
                // Everything held was read; the socket's waker is registered.
                return Poll::Pending;
            };
            let now = Instant::now();

            // a. Not yet: wait for its time (the socket's waker stays registered too).
            if front.ready_at > now {
                let deadline = front.ready_at;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => continue,
                }
            }

            // b. A lost piece is resent now, under the rules in force now.
            if front.lost {
                match lookup(self.from, self.to) {
                    Some(fault) => {
                        let rto = (front.rto * 2).min(RTO_MAX);
                        transmit(front, fault, now, rto);
                    }
                    None => front.lost = false,
                }
                continue;
            }

            // c. Its time has come.
            return Poll::Ready(self.take_front(buf));
        }
    }

    /// Hands out the front piece: as many bytes as fit, the end of the stream, or the error.
    fn take_front(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        let Some(front) = self.held.front_mut() else {
            return Ok(());
        };
        match &mut front.piece {
            Piece::Bytes { data, read } => {
                let n = buf.remaining().min(data.len() - *read);
                buf.put_slice(&data[*read..*read + n]);
                *read += n;
                if *read == data.len() {
                    self.held.pop_front();
                }
                Ok(())
            }
            // The end stays held, so every later read sees it too.
            Piece::Eof => Ok(()),
            Piece::Failed(_) => match self.held.pop_front().map(|h| h.piece) {
                Some(Piece::Failed(error)) => Err(error),
                _ => Ok(()),
            },
        }
    }
}

/// Sends `held` across a link with `fault` at `now`: lost with the loss rate (resent after
/// `rto`), else readable after the delay and a draw of the jitter.
fn transmit(held: &mut Held, fault: LinkFault, now: Instant, rto: Duration) {
    let mut rng = madsim::rand::thread_rng();
    let lost = fault.loss_rate > 0.0 && rng.gen_bool(fault.loss_rate.clamp(0.0, 1.0));
    if lost {
        held.lost = true;
        held.rto = rto;
        held.ready_at = now + rto;
        return;
    }
    let jitter_us = u64::try_from(fault.jitter.as_micros()).unwrap_or(u64::MAX);
    let jitter = match jitter_us {
        0 => Duration::ZERO,
        max => Duration::from_micros(rng.gen_range(0..=max)),
    };
    held.lost = false;
    held.ready_at = now + fault.delay + jitter;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn rules_on_one_link_add_up_and_others_stay_healthy() {
        reset();
        let slow = LinkFault {
            delay: Duration::from_millis(40),
            jitter: Duration::from_millis(5),
            loss_rate: 0.5,
        };
        set(1, LinkScope::Nodes(BTreeSet::from([ip(2)])), slow);
        let one_way = LinkFault {
            delay: Duration::from_millis(10),
            loss_rate: 0.5,
            ..LinkFault::default()
        };
        set(
            2,
            LinkScope::Links(BTreeSet::from([(ip(1), ip(2))])),
            one_way,
        );

        let both = lookup(ip(1), ip(2)).unwrap();
        assert_eq!(both.delay, Duration::from_millis(50));
        assert_eq!(both.jitter, Duration::from_millis(5));
        assert!((both.loss_rate - 0.75).abs() < 1e-12);
        assert_eq!(lookup(ip(2), ip(1)), Some(slow));
        assert_eq!(lookup(ip(1), ip(3)), None);

        assert!(clear(1));
        assert_eq!(lookup(ip(2), ip(3)), None);
        reset();
        assert_eq!(lookup(ip(1), ip(2)), None);
    }
}
