//! Taking and giving up partitions: assignment by the group or statically, revocation,
//! seeking, shutdown and abort.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::dispatch::{Buffered, KeyGate, Ordering, Ready};
use crate::kafka::consumer::{ConsumerEvents, KafkaConsumer};
use crate::status::TopicPartition;
use crate::{offset_map, Error, OffsetTracker};

use super::super::event::{LaneQueue, Slot};
use super::super::seek::{self, SeekTo};
use super::commits::CommitMark;
use super::{Assignment, PartitionState};

/// How long an assignment waits to read the committed offset maps.
const OFFSET_MAP_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How partitions came to be owned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// Assigned by the group: a rebalance.
    FromGroup,
    /// Assigned without a group, when the client starts.
    Static,
    /// Taken back after a seek moved it.
    AfterSeek,
}

impl Assignment {
    /// Takes ownership of partitions the group assigned and starts their lanes.
    pub fn assign<C: ConsumerEvents>(
        &mut self,
        consumer: &KafkaConsumer<C>,
        list: &[TopicPartition],
    ) {
        self.take(consumer, list, Taken::FromGroup);
    }

    /// Takes ownership of partitions assigned without a group (a static assignment).
    pub fn assign_static<C: ConsumerEvents>(
        &mut self,
        consumer: &KafkaConsumer<C>,
        list: &[TopicPartition],
    ) {
        self.take(consumer, list, Taken::Static);
    }

    /// Moves an owned partition to `to` and returns the offset it now starts from. Work of the
    /// old position is abandoned (a handler still running finishes, unreported), the new
    /// position is committed, and the partition starts over there with a fresh tracker (and
    /// no offset map: a seek back means to handle those records again).
    pub fn seek<C: ConsumerEvents>(
        &mut self,
        consumer: &KafkaConsumer<C>,
        tp: &TopicPartition,
        to: SeekTo,
    ) -> Result<i64, Error> {
        let i = self
            .slot_of(&tp.topic, tp.partition)
            .ok_or_else(|| Error::NotAssigned(tp.to_string()))?;
        let offset = seek::resolve(consumer, tp, to)?;
        self.release(&[i], false, false);
        // A commit in flight may carry the old position: let it land first.
        let deadline = Instant::now() + self.routing.drain_timeout;
        while self.commit_in_flight.is_some() && self.wait_event(deadline) {}
        if self.commits_enabled {
            let entry = seek::move_to(consumer, tp, offset)?;
            self.status.committed(std::slice::from_ref(&entry));
        } else {
            seek::seek_only(consumer, tp, offset)?;
        }
        self.take(consumer, std::slice::from_ref(tp), Taken::AfterSeek);
        info!(topic = %tp.topic, partition = tp.partition, offset, "partition moved");
        Ok(offset)
    }

    /// Takes ownership of `list`, as `how` says it came.
    fn take<C: ConsumerEvents>(
        &mut self,
        consumer: &KafkaConsumer<C>,
        list: &[TopicPartition],
        how: Taken,
    ) {
        let mut added = Vec::new();
        for e in list {
            if self.slot_of(&e.topic, e.partition).is_some() {
                continue;
            }
            self.generation += 1;
            let index = match self.slots.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.slots.push(None);
                    self.slots.len() - 1
                }
            };
            let slot = Slot {
                index,
                generation: self.generation,
            };
            let topic = self.index.insert(&e.topic, e.partition, index);
            let revoked = CancellationToken::new();
            let (queue, chunks) = async_channel::unbounded();
            let lanes = self.routing.ordering.workers(self.routing.width);
            let work = LaneQueue {
                chunks,
                share: (lanes > 1).then(|| queue.downgrade()),
            };
            for _ in 0..lanes {
                (self.spawn_lane)(slot, work.clone(), revoked.clone(), self.reports.clone());
            }
            let tp = e.clone();
            self.slots[index] = Some(PartitionState {
                tp: tp.clone(),
                topic,
                generation: self.generation,
                offsets: OffsetTracker::new(),
                pending: Ready::default(),
                keys: (self.routing.ordering == Ordering::Key).then(KeyGate::default),
                queue,
                revoked,
                buffered: Buffered::default(),
                over_bounds: false,
                next_fetch: None,
                refetch_on_resume: false,
                retrying: 0,
                stuck: false,
                paused: false,
                commits: CommitMark::default(),
                outputs: Default::default(),
                finished_before: BTreeSet::new(),
                log_start: None,
                log_end: None,
                metrics: self.status.metrics().map(|m| m.topic(&e.topic)),
            });
            added.push(tp);
        }
        // After a seek the old position's offset map no longer applies.
        if how != Taken::AfterSeek
            && self.commits_enabled
            && self.routing.ordering != Ordering::Partition
            && !added.is_empty()
        {
            self.load_offset_maps(consumer, &added);
        }
        // A partition paused before an earlier revoke may come back still paused.
        if let Err(e) = consumer.resume(list) {
            warn!(error = %e, "could not resume newly assigned partitions");
        }
        info!(partitions = ?added, "partitions assigned");
        self.status.assigned(added, how == Taken::FromGroup);
    }

    /// Reads the offset maps committed with the group, so that work finished out of order
    /// before a restart or rebalance is not handled again. Without them (a failed look-up,
    /// another tool's metadata) everything above the committed offset is simply handled again.
    fn load_offset_maps<C: ConsumerEvents>(
        &mut self,
        consumer: &KafkaConsumer<C>,
        added: &[TopicPartition],
    ) {
        let committed = match consumer.committed(added, OFFSET_MAP_LOOKUP_TIMEOUT) {
            Ok(committed) => committed,
            Err(e) => {
                warn!(error = %e, "could not read committed offset maps; finished work may be handled again");
                return;
            }
        };
        for (e, next) in committed
            .into_iter()
            .filter_map(|e| e.next.map(|next| (e, next)))
        {
            let done = offset_map::decode(next, &e.metadata);
            if let Some(i) = self
                .slot_of(&e.tp.topic, e.tp.partition)
                .filter(|_| !done.is_empty())
            {
                debug!(topic = %e.tp.topic, partition = e.tp.partition, finished = done.len(), "offset map loaded");
                self.slots[i]
                    .as_mut()
                    .expect("indexed slots exist")
                    .finished_before
                    .extend(done);
            }
        }
    }

    /// Gives up revoked partitions: stops their lanes, waits (bounded) for work in flight,
    /// commits what finished, and forgets them. When the assignment was lost (the group moved
    /// on without us) nothing is committed: the new owner may already be processing.
    pub fn revoke<C: ConsumerEvents>(
        &mut self,
        consumer: &KafkaConsumer<C>,
        list: &[TopicPartition],
    ) {
        let revoked: Vec<usize> = list
            .iter()
            .filter_map(|e| self.slot_of(&e.topic, e.partition))
            .collect();
        self.release(&revoked, !consumer.assignment_lost(), true);
    }

    /// Gives up every partition: the graceful part of shutdown.
    pub fn release_all<C: ConsumerEvents>(&mut self, consumer: &KafkaConsumer<C>) {
        let all: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].is_some())
            .collect();
        let list: Vec<TopicPartition> = self.slots.iter().flatten().map(|p| p.tp.clone()).collect();
        // Stop fetching while in-flight work drains.
        let _ = consumer.pause(&list);
        self.release(&all, true, false);
    }

    /// Marks the consumer as crashed: from now on partitions are dropped without draining or
    /// committing.
    pub fn abort(&mut self) {
        self.aborted = true;
        for p in self.slots.iter().flatten() {
            p.revoked.cancel();
        }
    }

    /// Gives up the partitions in `which`, committing what finished if `commit`; `rebalance`
    /// says the group revoked them.
    fn release(&mut self, which: &[usize], commit: bool, rebalance: bool) {
        for i in which {
            if let Some(p) = self.slots[*i].as_mut() {
                p.revoked.cancel();
                // Closing the queue lets each lane report its queued messages as abandoned.
                p.queue.close();
                // Messages not yet handed to a lane are dropped here: they will not report.
                let held = p.keys.as_mut().map(|k| k.drain().collect::<Vec<_>>());
                for message in p.pending.drain().chain(held.into_iter().flatten()) {
                    self.backpressure.release(&mut p.buffered, message.size());
                }
            }
        }
        if !self.aborted && commit {
            let deadline = Instant::now() + self.routing.drain_timeout;
            while which.iter().any(|i| {
                self.slots[*i]
                    .as_ref()
                    .is_some_and(|p| p.buffered.messages > 0)
            }) {
                if !self.wait_event(deadline) {
                    warn!(timeout = ?self.routing.drain_timeout,
                          "in-flight work of released partitions did not finish in time; it will be re-delivered");
                    break;
                }
            }
            self.commit_and_wait(which, Instant::now() + self.routing.drain_timeout);
        }
        let mut removed = Vec::new();
        for i in which {
            if let Some(p) = self.slots[*i].take() {
                // Work still buffered is abandoned: it leaves the buffer accounting now.
                self.backpressure.forget(p.buffered);
                self.index.remove(&p.tp.topic, p.tp.partition);
                removed.push(p.tp);
            }
        }
        if !removed.is_empty() {
            info!(partitions = ?removed, committed = commit && !self.aborted, "partitions released");
        }
        self.status.revoked(&removed, rebalance);
    }
}

#[cfg(test)]
mod tests {
    //! Taking and giving up partitions without the poll loop: each test plays the lanes (it
    //! reads their queues and sends their reports) and the committer (it answers its requests)
    //! itself, with a client of the embedded broker.

    use std::collections::{BTreeMap, BTreeSet};
    use std::ops::Range;
    use std::sync::mpsc::{self, Receiver, TryRecvError};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use tokio_util::sync::CancellationToken;

    use crate::commit::CommitEntry;
    use crate::dispatch::{BufferLimits, Ordering};
    use crate::handler::Outcome;
    use crate::kafka::consumer::{ConsumerEvents, KafkaConsumer, StartAt, Statistics};
    use crate::kafka::Record;
    use crate::output::OutputRecord;
    use crate::runtime::committer::CommitRequest;
    use crate::runtime::event::{Event, LaneQueue, Left, Reports, Slot};
    use crate::runtime::seek::SeekTo;
    use crate::runtime::status::{StatusPublisher, StatusWatch};
    use crate::security::OAuthToken;
    use crate::settings::defaults::consumer_client;
    use crate::status::TopicPartition;
    use crate::{ClientError, EmbeddedKafka, Message};

    use super::super::{Assignment, LaneSpawner, PartitionState, Routing};

    const TOPIC: &str = "orders";

    /// How long a test waits for the committer's answer before it fails.
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

    /// Callbacks that do nothing: the tests call the assignment as the runtime's callbacks
    /// would.
    struct Unheard;

    impl ConsumerEvents for Unheard {
        fn assigning(&self, _: &KafkaConsumer<Self>, _: &[TopicPartition]) {}
        fn assigned(&self, _: &KafkaConsumer<Self>, _: &[TopicPartition]) {}
        fn revoking(&self, _: &KafkaConsumer<Self>, _: &[TopicPartition]) {}
        fn statistics(&self, _: &Statistics) {}
        fn error(&self, _: ClientError, _: &str) {}
        fn oauth_token(&self) -> Result<OAuthToken, Box<dyn std::error::Error>> {
            Err("these tests log in without OAUTHBEARER".into())
        }
    }

    /// A record as the poll loop fetches it.
    struct Fetched(Message);

    impl Record for Fetched {
        fn topic_bytes(&self) -> &[u8] {
            self.0.topic().as_bytes()
        }

        fn partition(&self) -> i32 {
            self.0.partition()
        }

        fn offset(&self) -> i64 {
            self.0.offset()
        }

        fn to_message(&self, _topic: Arc<str>) -> Message {
            self.0.clone()
        }
    }

    /// A lane the assignment started, with what it was given.
    #[derive(Clone)]
    struct Lane {
        slot: Slot,
        queue: LaneQueue,
        revoked: CancellationToken,
    }

    impl Lane {
        /// The messages handed to the lane (or to its partition's other lanes) and not yet
        /// taken.
        fn take(&self) -> Vec<Message> {
            let mut taken = Vec::new();
            while let Ok(chunk) = self.queue.chunks.try_recv() {
                taken.extend(chunk);
            }
            taken
        }

        /// Whether the lane was told to stop and its queue closed: its partition is gone.
        fn stopped(&self) -> bool {
            self.revoked.is_cancelled() && self.queue.chunks.is_closed()
        }
    }

    /// The assignment under test and everything it talks to.
    struct Setup {
        assignment: Assignment,
        consumer: KafkaConsumer<Unheard>,
        /// Every lane started, in order.
        lanes: Arc<Mutex<Vec<Lane>>>,
        /// Where the lanes and the committer played by the test report.
        reports: Reports,
        /// The committer's end of the commit requests, until a test answers them.
        commits: Option<Receiver<CommitRequest>>,
        status: StatusWatch,
        /// Last, so that it stops after its client.
        _kafka: EmbeddedKafka,
    }

    impl Setup {
        fn new(routing: Routing) -> Setup {
            let kafka = EmbeddedKafka::start(1).unwrap();
            kafka.create_topic(TOPIC, 2).unwrap();
            let mut client = consumer_client("rebalance-tests");
            client.set("bootstrap.servers", kafka.bootstrap_servers());
            let consumer = KafkaConsumer::new(&client, Unheard).unwrap();
            let lanes: Arc<Mutex<Vec<Lane>>> = Arc::default();
            let started = lanes.clone();
            let spawn_lane: LaneSpawner = Arc::new(move |slot, queue, revoked, _reports| {
                started.lock().unwrap().push(Lane {
                    slot,
                    queue,
                    revoked,
                });
            });
            let (reports, events) = Reports::channel();
            let (publisher, status) = StatusPublisher::new(None);
            let (requests, commits) = mpsc::channel();
            let assignment = Assignment::new(
                routing,
                spawn_lane,
                reports.clone(),
                events,
                publisher,
                requests,
            );
            Setup {
                assignment,
                consumer,
                lanes,
                reports,
                commits: Some(commits),
                status,
                _kafka: kafka,
            }
        }

        fn lanes(&self) -> Vec<Lane> {
            self.lanes.lock().unwrap().clone()
        }

        /// Routes records `offsets` of `tp` to its lanes, as one poll round does.
        fn fetch(&mut self, tp: &TopicPartition, offsets: Range<i64>) {
            for offset in offsets {
                let record = Fetched(Message::new(
                    &tp.topic,
                    tp.partition,
                    offset,
                    None,
                    Some(b"payload".to_vec()),
                ));
                self.assignment.dispatch(&self.consumer, &record);
            }
            self.assignment.flush();
        }

        /// The state of `tp`, while owned.
        fn partition(&self, tp: &TopicPartition) -> Option<&PartitionState> {
            let i = self.assignment.slot_of(&tp.topic, tp.partition)?;
            self.assignment.slots[i].as_ref()
        }

        /// A commit request sent to the committer and not answered, if there is one.
        fn unanswered(&self) -> Result<CommitRequest, TryRecvError> {
            self.commits
                .as_ref()
                .expect("no committer answers")
                .try_recv()
        }

        /// Assigns partition 0, plays the committer and fetches `fetched` of it: the
        /// partition, the committer's requests, its lane and the messages the lane took.
        fn one_taken(
            &mut self,
            fetched: Range<i64>,
        ) -> (TopicPartition, Receiver<CommitRequest>, Lane, Vec<Message>) {
            let p0 = partition(0);
            self.assignment
                .assign(&self.consumer, std::slice::from_ref(&p0));
            let answered = self.commit_everything();
            self.fetch(&p0, fetched);
            let lane = self.lanes()[0].clone();
            let taken = lane.take();
            (p0, answered, lane, taken)
        }

        /// Assigns partitions 0 and 1, plays the committer, fetches `first` of partition 0 and
        /// `second` of partition 1, and finishes every message: what a revocation or a
        /// shutdown then commits.
        fn both_finished(
            &mut self,
            first: Range<i64>,
            second: Range<i64>,
        ) -> (TopicPartition, TopicPartition, Receiver<CommitRequest>) {
            let (p0, p1) = (partition(0), partition(1));
            self.assignment
                .assign(&self.consumer, &[p0.clone(), p1.clone()]);
            let answered = self.commit_everything();
            self.fetch(&p0, first);
            self.fetch(&p1, second);
            for lane in &self.lanes() {
                finished(&self.reports, lane.slot, &lane.take());
            }
            (p0, p1, answered)
        }

        /// Plays the committer from now on: answers every request with success, through the
        /// reports as the real one does, and passes it on to the receiver returned. Ends when
        /// the assignment is dropped.
        fn commit_everything(&mut self) -> Receiver<CommitRequest> {
            let requests = self.commits.take().expect("one committer");
            let reports = self.reports.clone();
            let (seen, answered) = mpsc::channel();
            std::thread::spawn(move || {
                for request in requests {
                    let (id, offsets) = (request.id, request.offsets.clone());
                    let _ = seen.send(request);
                    reports.send(Event::Committed {
                        id,
                        offsets,
                        result: Ok(()),
                        latency: Duration::ZERO,
                    });
                }
            });
            answered
        }
    }

    fn routing(ordering: Ordering, width: usize, drain_timeout: Duration) -> Routing {
        Routing {
            ordering,
            width,
            limits: BufferLimits::default(),
            drain_timeout,
            breaker: None,
            transactional: false,
        }
    }

    fn partition(p: i32) -> TopicPartition {
        TopicPartition::new(TOPIC, p)
    }

    fn offsets(messages: &[Message]) -> Vec<i64> {
        messages.iter().map(Message::offset).collect()
    }

    /// Reports `messages` handled by the lane of `slot`.
    fn finished(reports: &Reports, slot: Slot, messages: &[Message]) {
        let left = messages
            .iter()
            .map(|m| Left {
                message: m.clone(),
                outcome: Some(Outcome::Handled { attempts: 1 }),
            })
            .collect();
        reports.send(Event::Left { slot, left });
    }

    fn entry(tp: &TopicPartition, next: i64) -> CommitEntry {
        CommitEntry {
            topic: tp.topic.clone(),
            partition: tp.partition,
            next,
            metadata: String::new(),
        }
    }

    fn payloads(outputs: &[OutputRecord]) -> Vec<String> {
        outputs.iter().map(OutputRecord::payload_text).collect()
    }

    #[test]
    fn each_assigned_partition_gets_a_slot_of_its_own_and_its_lanes() {
        let mut s = Setup::new(routing(Ordering::Unordered, 3, Duration::from_secs(10)));
        let (p0, p1) = (partition(0), partition(1));
        s.assignment.assign(&s.consumer, &[p0.clone(), p1.clone()]);
        let lanes = s.lanes();
        let slots: Vec<Slot> = lanes.iter().map(|l| l.slot).collect();
        let first = Slot {
            index: 0,
            generation: 1,
        };
        let second = Slot {
            index: 1,
            generation: 2,
        };
        assert_eq!(slots, [first, first, first, second, second, second]);
        assert!(
            lanes.iter().all(|l| l.queue.share.is_some()),
            "lanes serving one partition together pass work on to each other"
        );

        let status = s.status.current();
        assert_eq!(status.assigned, BTreeSet::from([p0, p1.clone()]));
        assert_eq!(status.rebalances, 1);

        s.assignment.assign(&s.consumer, std::slice::from_ref(&p1));
        assert_eq!(s.lanes().len(), 6, "an owned partition is not taken twice");

        s.fetch(&p1, 0..2);
        assert_eq!(offsets(&lanes[3].take()), [0, 1]);
        assert!(
            lanes[0].take().is_empty(),
            "each partition has its own queue"
        );
    }

    #[test]
    fn a_revoked_partition_commits_what_finished_and_is_forgotten() {
        let mut s = Setup::new(routing(Ordering::Partition, 1, Duration::from_secs(10)));
        let (p0, p1, answered) = s.both_finished(0..3, 0..2);
        let lanes = s.lanes();

        s.assignment.revoke(&s.consumer, std::slice::from_ref(&p0));

        let request = answered.recv_timeout(ANSWER_TIMEOUT).unwrap();
        assert_eq!(
            request.offsets,
            [entry(&p0, 3)],
            "the revoked partition's watermark, and only its"
        );
        assert!(answered.try_recv().is_err(), "one final commit");
        assert!(s.partition(&p0).is_none());
        assert!(lanes[0].stopped());
        assert!(s.partition(&p1).is_some());
        assert!(!lanes[1].stopped());
        let status = s.status.current();
        assert_eq!(status.assigned, BTreeSet::from([p1]));
        assert_eq!(status.committed, BTreeMap::from([(p0, 3)]));
        assert_eq!(status.rebalances, 2);
    }

    #[test]
    fn a_revoked_partition_still_handling_is_released_after_the_drain_timeout() {
        let drain_timeout = Duration::from_millis(300);
        let mut s = Setup::new(routing(Ordering::Partition, 1, drain_timeout));
        let (p0, answered, lane, taken) = s.one_taken(0..3);
        // Offset 1 is still being handled: it never finishes.
        finished(&s.reports, lane.slot, &taken[..1]);

        let revoking = Instant::now();
        s.assignment.revoke(&s.consumer, std::slice::from_ref(&p0));

        assert!(
            revoking.elapsed() >= drain_timeout,
            "waited for the work in flight"
        );
        let request = answered.recv_timeout(ANSWER_TIMEOUT).unwrap();
        assert_eq!(
            request.offsets,
            [entry(&p0, 1)],
            "nothing past the unfinished offset"
        );
        assert!(s.partition(&p0).is_none());
        assert!(lane.stopped());
        assert!(s.status.current().assigned.is_empty());
    }

    #[test]
    fn a_late_report_about_a_revoked_partition_is_ignored() {
        let mut s = Setup::new(routing(Ordering::Partition, 1, Duration::from_millis(200)));
        let (p0, answered, old, in_flight) = s.one_taken(0..2);
        finished(&s.reports, old.slot, &in_flight[..1]);
        s.assignment.revoke(&s.consumer, std::slice::from_ref(&p0));
        assert_eq!(
            answered.recv_timeout(ANSWER_TIMEOUT).unwrap().offsets,
            [entry(&p0, 1)]
        );

        // Taken again, into the same slot: offset 1 comes again from the committed offset.
        s.assignment.assign(&s.consumer, std::slice::from_ref(&p0));
        let new = s.lanes()[1].clone();
        assert_eq!(new.slot.index, old.slot.index);
        assert_ne!(new.slot.generation, old.slot.generation);
        s.fetch(&p0, 1..3);
        // The old lane's handler of offset 1 ends only now.
        finished(&s.reports, old.slot, &in_flight[1..]);
        s.assignment.drain_events(&s.consumer);
        let p = s.partition(&p0).unwrap();
        assert_eq!(p.offsets.watermark(), Some(1), "offset 1 is not finished");
        assert_eq!(p.buffered.messages, 2);

        let again = new.take();
        assert_eq!(offsets(&again), [1, 2]);
        finished(&s.reports, new.slot, &again[..1]);
        s.assignment.drain_events(&s.consumer);
        let p = s.partition(&p0).unwrap();
        assert_eq!(p.offsets.watermark(), Some(2));
        assert_eq!(p.buffered.messages, 1);
    }

    #[test]
    fn exactly_once_outputs_of_finished_messages_go_with_the_final_commit() {
        let mut s = Setup::new(Routing {
            transactional: true,
            ..routing(Ordering::Partition, 1, Duration::from_secs(10))
        });
        let (p0, answered, lane, taken) = s.one_taken(0..3);
        s.reports.send(Event::Outputs {
            slot: lane.slot,
            outputs: vec![
                (0, vec![OutputRecord::to("out").payload("a")]),
                (1, vec![OutputRecord::to("out").payload("b")]),
            ],
        });
        finished(&s.reports, lane.slot, &taken);

        s.assignment.revoke(&s.consumer, std::slice::from_ref(&p0));

        let request = answered.recv_timeout(ANSWER_TIMEOUT).unwrap();
        assert_eq!(request.offsets, [entry(&p0, 3)]);
        assert_eq!(payloads(&request.outputs), ["a", "b"]);
        assert!(s.partition(&p0).is_none());
    }

    #[test]
    fn exactly_once_outputs_are_dropped_with_a_partition_released_without_commit() {
        let mut s = Setup::new(Routing {
            transactional: true,
            ..routing(Ordering::Partition, 1, Duration::from_secs(10))
        });
        let p0 = partition(0);
        s.consumer
            .assign(&[(p0.clone(), StartAt::Offset(0))])
            .unwrap();
        s.assignment.assign(&s.consumer, std::slice::from_ref(&p0));
        s.fetch(&p0, 0..2);
        let old = s.lanes()[0].clone();
        let taken = old.take();
        s.reports.send(Event::Outputs {
            slot: old.slot,
            outputs: vec![(0, vec![OutputRecord::to("out").payload("old")])],
        });
        finished(&s.reports, old.slot, &taken[..1]);
        s.assignment.drain_events(&s.consumer);

        // A seek back gives the partition up without committing, and takes it again.
        let to = s
            .assignment
            .seek(&s.consumer, &p0, SeekTo::Offset(0))
            .unwrap();
        assert_eq!(to, 0);
        s.fetch(&p0, 0..1);
        let new = s.lanes()[1].clone();
        s.reports.send(Event::Outputs {
            slot: new.slot,
            outputs: vec![(0, vec![OutputRecord::to("out").payload("new")])],
        });
        finished(&s.reports, new.slot, &new.take());
        s.assignment.drain_events(&s.consumer);

        assert!(s.assignment.request_commit(None).is_some());
        let request = s.unanswered().unwrap();
        assert_eq!(request.offsets, [entry(&p0, 1)]);
        assert_eq!(
            payloads(&request.outputs),
            ["new"],
            "the old position's outputs are never written"
        );
    }

    #[test]
    fn a_seek_takes_the_partition_again_under_a_new_generation() {
        let mut s = Setup::new(routing(Ordering::Partition, 1, Duration::from_secs(10)));
        let p0 = partition(0);
        s.consumer
            .assign(&[(p0.clone(), StartAt::Offset(0))])
            .unwrap();
        s.assignment.assign(&s.consumer, std::slice::from_ref(&p0));
        s.fetch(&p0, 0..3);
        let old = s.lanes()[0].clone();
        finished(&s.reports, old.slot, &old.take());
        s.assignment.drain_events(&s.consumer);

        let to = s
            .assignment
            .seek(&s.consumer, &p0, SeekTo::Offset(1))
            .unwrap();

        assert_eq!(to, 1);
        let lanes = s.lanes();
        assert_eq!(lanes.len(), 2);
        assert!(old.stopped());
        assert_eq!(lanes[1].slot.index, old.slot.index);
        assert!(lanes[1].slot.generation > old.slot.generation);
        assert_eq!(
            s.unanswered().err(),
            Some(TryRecvError::Empty),
            "the old position's work is not committed"
        );
        assert_eq!(
            s.status.current().committed,
            BTreeMap::from([(p0.clone(), 1)]),
            "the new position is"
        );
        // A fresh tracker: records already handled at the old position are taken again.
        assert_eq!(s.partition(&p0).unwrap().offsets.watermark(), None);
        s.fetch(&p0, 1..3);
        assert_eq!(offsets(&lanes[1].take()), [1, 2]);
        assert_eq!(s.status.current().rebalances, 1, "a seek is no rebalance");
    }

    #[test]
    fn abort_drops_every_partition_without_a_commit_request() {
        let drain_timeout = Duration::from_secs(10);
        let mut s = Setup::new(routing(Ordering::Partition, 1, drain_timeout));
        let (p0, p1) = (partition(0), partition(1));
        s.assignment.assign(&s.consumer, &[p0.clone(), p1.clone()]);
        s.fetch(&p0, 0..3);
        s.fetch(&p1, 0..1);
        let lanes = s.lanes();
        let taken = lanes[0].take();
        finished(&s.reports, lanes[0].slot, &taken[..2]);
        finished(&s.reports, lanes[1].slot, &lanes[1].take());
        s.assignment.drain_events(&s.consumer);

        s.assignment.abort();

        assert!(lanes.iter().all(|l| l.revoked.is_cancelled()));
        let revoking = Instant::now();
        s.assignment.revoke(&s.consumer, std::slice::from_ref(&p0));
        assert!(
            revoking.elapsed() < drain_timeout,
            "no wait for offset 2 in flight"
        );
        assert!(s.partition(&p0).is_none());
        assert_eq!(s.assignment.request_commit(None), None);
        s.assignment.release_all(&s.consumer);
        assert!(s.assignment.slots.iter().all(Option::is_none));
        assert_eq!(s.unanswered().err(), Some(TryRecvError::Empty));
        let status = s.status.current();
        assert!(status.assigned.is_empty());
        assert!(status.committed.is_empty());
    }

    #[test]
    fn shutdown_commits_every_partition_and_gives_them_all_up() {
        let mut s = Setup::new(routing(Ordering::Partition, 1, Duration::from_secs(10)));
        let (p0, p1, answered) = s.both_finished(0..2, 0..4);
        let lanes = s.lanes();

        s.assignment.release_all(&s.consumer);

        let request = answered.recv_timeout(ANSWER_TIMEOUT).unwrap();
        assert_eq!(request.offsets, [entry(&p0, 2), entry(&p1, 4)]);
        assert!(lanes.iter().all(Lane::stopped));
        assert!(s.assignment.slots.iter().all(Option::is_none));
        let status = s.status.current();
        assert!(status.assigned.is_empty());
        assert_eq!(status.committed, BTreeMap::from([(p0, 2), (p1, 4)]));
        assert_eq!(status.rebalances, 1, "a shutdown is no rebalance");
    }
}
