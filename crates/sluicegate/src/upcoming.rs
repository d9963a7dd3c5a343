//! [`Upcoming`]: the messages a lane hands its handler next, for handlers that work ahead.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::AcqRel, Ordering::Acquire};
use std::sync::Arc;

use futures::future::Either;
use tokio_util::sync::CancellationToken;

use crate::Message;

tokio::task_local! {
    static UPCOMING: Upcoming;
}

/// The messages the lane of the running handler call hands the handler next, in order, each
/// once the one before it has settled: the rest of the partition's fetched messages in
/// partition order, the rest of the key's waiting messages in key order. Nothing is upcoming
/// in the unordered mode or for batch handlers. Given to handler calls only when the consumer
/// is built with [`ConsumerBuilder::upcoming`](crate::ConsumerBuilder::upcoming).
///
/// A handler that works ahead (the Python binding hands a run of messages to Python in one go,
/// so that a partition's messages do not each cost a round trip) still answers each message
/// in its own call; work done ahead for a message counts only when that call comes. What comes
/// is a forecast: a failure (retried, dead-lettered, or stopping the partition) changes it.
/// Once the lane lets them go (the partition was revoked or moved by a seek, or the consumer
/// is stopping) it hands over only those the handler [`claim`](Self::claim)ed before: claim
/// each message before starting work on it ahead, so that work started is answered and
/// committed, not done twice.
///
/// Work ahead counts against `max_in_flight`: the handler may claim the next message only
/// while its call of the message before is running or has claimed it (the lane then keeps
/// that call's in-flight permit for it), and not while the circuit breaker holds a call back.
///
/// The calls of one run (the messages the lane took as forecast, and the retries of each) see
/// the same [`run`](Self::run); the last of them sees no more [`messages`](Self::messages).
#[derive(Clone, Debug)]
pub struct Upcoming {
    run: Arc<[Message]>,
    from: usize,
    released: CancellationToken,
    claims: Arc<Claims>,
}

impl Upcoming {
    /// What comes after the handler call running on this task; `None` outside a call, for a
    /// message that is not part of a run (nothing was known to follow it when the lane took
    /// it), or when the consumer does not tell
    /// ([`ConsumerBuilder::upcoming`](crate::ConsumerBuilder::upcoming)).
    pub fn current() -> Option<Upcoming> {
        UPCOMING.try_with(Clone::clone).ok()
    }

    /// The run the call belongs to: the same for each call of it, another for another lane's
    /// run or once the lane takes a message that was not forecast (after a failure, a seek, a
    /// rebalance). No two runs have the same id while an `Upcoming` of each is kept.
    pub fn run(&self) -> RunId {
        RunId(Arc::as_ptr(&self.claims) as usize)
    }

    /// How many of [`messages`](Self::messages) were [`claim`](Self::claim)ed.
    pub fn claimed(&self) -> usize {
        let until = Claims::until(self.claims.0.load(Acquire));
        (until as usize).saturating_sub(self.from)
    }

    /// The messages, in the order the handler will be called with them.
    pub fn messages(&self) -> &[Message] {
        &self.run[self.from..]
    }

    /// Whether the lane has let them go: of them, it hands the handler only those claimed.
    pub fn released(&self) -> bool {
        self.released.is_cancelled()
    }

    /// Claims the first `n` of [`messages`](Self::messages) for work ahead: the lane hands each
    /// of them to the handler even once it lets the rest go. `false` (nothing more is claimed)
    /// once it has let them go, or while the lane holds no in-flight permit for work ahead:
    /// start no more work ahead.
    pub fn claim(&self, n: usize) -> bool {
        let until = self.from + n.min(self.run.len() - self.from);
        !self.released() && self.claims.claim(until as u64)
    }
}

/// Identifies a lane's run of messages ([`Upcoming::run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RunId(usize);

/// How far into a run a handler has claimed messages, whether it may claim more now, and
/// closed once the lane lets the run go.
#[derive(Debug, Default)]
struct Claims(AtomicU64);

impl Claims {
    const CLOSED: u64 = 1 << 63;
    /// Set while the lane holds an in-flight permit the handler may work ahead under.
    const OPEN: u64 = 1 << 62;

    /// The index before which messages were claimed.
    fn until(v: u64) -> u64 {
        v & !(Self::CLOSED | Self::OPEN)
    }

    /// Claims the run's messages before index `until`, if open and not closed.
    fn claim(&self, until: u64) -> bool {
        self.0
            .fetch_update(AcqRel, Acquire, |v| {
                (v & (Self::CLOSED | Self::OPEN) == Self::OPEN)
                    .then_some(Self::OPEN | Self::until(v).max(until))
            })
            .is_ok()
    }

    fn open(&self) {
        self.0.fetch_or(Self::OPEN, AcqRel);
    }

    fn shut(&self) {
        self.0.fetch_and(!Self::OPEN, AcqRel);
    }

    /// Whether the message at `index` was claimed; if not, shuts the claims.
    fn claimed_or_shut(&self, index: u64) -> bool {
        self.0
            .fetch_update(AcqRel, Acquire, |v| {
                (index >= Self::until(v)).then_some(v & !Self::OPEN)
            })
            .is_err()
    }

    /// Closes the claims: the index before which messages were claimed.
    fn close(&self) -> u64 {
        Self::until(self.0.fetch_or(Self::CLOSED, AcqRel))
    }
}

/// The handler of the running call is being called: its call's in-flight permit now covers
/// work ahead (see [`Upcoming`]).
pub(crate) fn calling() {
    let _ = UPCOMING.try_with(|u| u.claims.open());
}

/// The running call waits before its handler is called (the circuit breaker holds it back):
/// no work ahead meanwhile.
pub(crate) fn holding_back() {
    let _ = UPCOMING.try_with(|u| u.claims.shut());
}

/// A lane's view of the messages that follow the one it takes, shared by the calls of one run
/// (so that telling each call costs a reference count, not a copy).
#[derive(Debug, Default)]
pub(crate) struct Ahead {
    run: Option<Arc<[Message]>>,
    /// The index in `run` of the message the lane should take next.
    next: usize,
    /// The index in `run` of the message taken last, if it is one of them.
    current: Option<usize>,
    claims: Arc<Claims>,
}

impl Ahead {
    /// The lane took `message`, followed (as far as the lane knows) by `following`, and gives
    /// up the run once `released`: what is upcoming after it, if anything.
    pub fn after(
        &mut self,
        message: &Message,
        following: impl FnOnce() -> Vec<Message>,
        released: &CancellationToken,
    ) -> Option<Upcoming> {
        let expected = self
            .run
            .as_ref()
            .and_then(|run| run.get(self.next))
            .is_some_and(|m| m.offset() == message.offset());
        if expected {
            self.current = Some(self.next);
            self.next += 1;
        } else {
            let following = following();
            self.run = (!following.is_empty()).then(|| following.into());
            self.next = 0;
            self.current = None;
            self.claims = Arc::default();
        }
        let run = self.run.clone()?;
        if self.next == run.len() {
            // Used up: the lane's next message starts a new run.
            self.run = None;
        }
        Some(Upcoming {
            run,
            from: self.next,
            released: released.clone(),
            claims: self.claims.clone(),
        })
    }

    /// Whether the handler claimed the message taken last; asked once the lane lets its run go,
    /// which closes the run's claims.
    pub fn claimed(&self) -> bool {
        self.current
            .is_some_and(|i| (i as u64) < self.claims.close())
    }

    /// Asked as a call ends: whether the handler claimed the next message, working on it
    /// under the call's in-flight permit, which the lane then keeps for it. If not, the
    /// handler may claim nothing more until the lane's next call of it is running.
    pub fn next_claimed(&self) -> bool {
        self.run.is_some() && self.claims.claimed_or_shut(self.next as u64)
    }
}

/// Runs `call` telling it `upcoming` (through [`Upcoming::current`]), if any.
pub(crate) fn telling<F: Future>(
    upcoming: Option<Upcoming>,
    call: F,
) -> impl Future<Output = F::Output> {
    match upcoming {
        Some(u) => Either::Left(UPCOMING.scope(u, call)),
        None => Either::Right(call),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(offsets: std::ops::Range<i64>) -> Vec<Message> {
        offsets
            .map(|o| Message::new("t", 0, o, None, None))
            .collect()
    }

    fn offsets(u: &Option<Upcoming>) -> Vec<i64> {
        u.as_ref().map_or(vec![], |u| {
            u.messages().iter().map(Message::offset).collect()
        })
    }

    #[test]
    fn each_call_of_a_run_is_told_what_follows_it_with_one_copy_per_run() {
        let token = CancellationToken::new();
        let all = messages(0..4);
        let mut ahead = Ahead::default();
        let mut copies = 0;
        let mut told = Vec::new();
        for (i, m) in all.iter().enumerate() {
            let rest = || {
                copies += 1;
                all[i + 1..].to_vec()
            };
            told.push(offsets(&ahead.after(m, rest, &token)));
        }
        assert_eq!(told, [vec![1, 2, 3], vec![2, 3], vec![3], vec![]]);
        assert_eq!(copies, 1);
    }

    #[test]
    fn the_calls_of_a_run_share_its_id_and_claims_and_the_next_run_has_its_own() {
        let token = CancellationToken::new();
        let all = messages(0..3);
        let mut ahead = Ahead::default();
        let told: Vec<Upcoming> = all
            .iter()
            .map(|m| {
                ahead
                    .after(m, || all[1..].to_vec(), &token)
                    .expect("in a run")
            })
            .collect();
        assert!(told.iter().all(|u| u.run() == told[0].run()));
        assert!(told[2].messages().is_empty(), "the last call of the run");
        told[0].claims.open();
        assert!(told[0].claim(1));
        assert_eq!((told[0].claimed(), told[1].claimed()), (1, 0));
        // Used up: the same offsets again are another run.
        let again = ahead.after(&all[0], || all[1..].to_vec(), &token).unwrap();
        assert_ne!(again.run(), told[0].run());
        assert_eq!(again.claimed(), 0);
    }

    #[test]
    fn a_message_out_of_the_forecast_starts_a_new_run() {
        let token = CancellationToken::new();
        let mut ahead = Ahead::default();
        let first = messages(0..3);
        assert_eq!(
            offsets(&ahead.after(&first[0], || first[1..].to_vec(), &token)),
            [1, 2]
        );
        // The same message taken again (a chunk given back), then another key's run.
        assert_eq!(
            offsets(&ahead.after(&first[0], || first[1..].to_vec(), &token)),
            [1, 2]
        );
        let other = messages(10..12);
        assert_eq!(
            offsets(&ahead.after(&other[0], || other[1..].to_vec(), &token)),
            [11]
        );
        assert_eq!(offsets(&ahead.after(&other[1], Vec::new, &token)), [0; 0]);
        let lone = messages(20..21);
        assert!(ahead.after(&lone[0], Vec::new, &token).is_none());
    }

    #[tokio::test]
    async fn a_call_sees_its_upcoming_messages_and_whether_they_were_released() {
        let token = CancellationToken::new();
        let all = messages(0..3);
        let upcoming = Ahead::default().after(&all[0], || all[1..].to_vec(), &token);
        assert!(Upcoming::current().is_none());
        let seen = telling(upcoming, async {
            let u = Upcoming::current().expect("told");
            let before = u.released();
            token.cancel();
            (offsets(&Some(u.clone())), before, u.released())
        })
        .await;
        assert_eq!(seen, (vec![1, 2], false, true));
        assert!(telling(None, async { Upcoming::current() }).await.is_none());
    }

    #[test]
    fn once_released_the_lane_hands_over_only_what_was_claimed_before() {
        let token = CancellationToken::new();
        let all = messages(0..5);
        let mut ahead = Ahead::default();
        let upcoming = ahead.after(&all[0], || all[1..].to_vec(), &token).unwrap();
        // The handler starts offsets 1 and 2 ahead, then the partition is let go.
        upcoming.claims.open();
        assert!(upcoming.claim(1) && upcoming.claim(2));
        token.cancel();
        assert!(!upcoming.claim(3), "no claim once released");
        let mut handed = Vec::new();
        for m in &all[1..] {
            ahead.after(m, Vec::new, &token);
            if ahead.claimed() {
                handed.push(m.offset());
            }
        }
        assert_eq!(handed, [1, 2]);
        // A claim racing with the lane's close: refused once closed, even before the release.
        let token = CancellationToken::new();
        let mut ahead = Ahead::default();
        let upcoming = ahead.after(&all[0], || all[1..].to_vec(), &token).unwrap();
        upcoming.claims.open();
        ahead.after(&all[1], Vec::new, &token);
        assert!(!ahead.claimed());
        assert!(!upcoming.claim(4));
        // The head of a run is the call itself: never "claimed".
        assert!(!Ahead::default().claimed());
    }
    #[tokio::test]
    async fn the_handler_works_ahead_only_under_its_calls_permit() {
        let token = CancellationToken::new();
        let all = messages(0..4);
        let mut ahead = Ahead::default();
        let upcoming = ahead.after(&all[0], || all[1..].to_vec(), &token).unwrap();
        assert!(!upcoming.claim(1), "not before the handler is called");
        telling(Some(upcoming.clone()), async { calling() }).await;
        assert!(upcoming.claim(1));
        // Claimed: the lane keeps the permit for offset 1, and the handler goes on.
        assert!(ahead.next_claimed());
        ahead.after(&all[1], Vec::new, &token);
        assert!(upcoming.claim(2));
        // The breaker holds the call of offset 2 back: no more work ahead meanwhile.
        ahead.after(&all[2], Vec::new, &token);
        telling(Some(upcoming.clone()), async { holding_back() }).await;
        assert!(!upcoming.claim(3));
        telling(Some(upcoming.clone()), async { calling() }).await;
        // Answered without the next claimed: the lane lets the permit go, claims wait for
        // its next call.
        assert!(!ahead.next_claimed());
        assert!(!upcoming.claim(3));
        assert_eq!(upcoming.claimed(), 2);
    }
}
