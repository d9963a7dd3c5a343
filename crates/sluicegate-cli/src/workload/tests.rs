//! Unit tests of the shared workload modules (see the module's documentation for why here).

mod ledger {
    use crate::workload::ledger::*;

    #[test]
    fn offset_set_tells_new_from_seen() {
        let mut s = OffsetSet::default();
        assert!(s.insert(0));
        assert!(s.insert(130));
        assert!(!s.insert(130));
        assert!(!s.insert(0));
        assert!(s.insert(129));
        assert!(s.contains(129) && !s.contains(128) && !s.contains(10_000) && !s.contains(-1));
    }

    #[test]
    fn redelivery_is_a_duplicate_not_an_order_violation() {
        let mut l = PartitionLedger::default();
        for o in [0, 1, 2, 3, 1, 2, 3, 4] {
            l.record(OrderCheck::Partition, o, None);
        }
        assert_eq!((l.processed, l.distinct, l.order_violations), (8, 5, 0));
        assert_eq!(l.duplicates(), 3);
        assert!(l.finished(4) && !l.finished(5));
    }

    #[test]
    fn a_skipped_back_first_delivery_is_a_violation_in_partition_mode() {
        let mut l = PartitionLedger::default();
        let finishes: Vec<Finish> = [0, 2, 1, 3, 1]
            .into_iter()
            .map(|o| l.record(OrderCheck::Partition, o, None))
            .collect();
        assert_eq!(l.order_violations, 1);
        use Finish::*;
        assert_eq!(finishes, [First, First, OutOfOrder, First, Repeat]);
    }

    #[test]
    fn key_mode_checks_order_per_key_only() {
        let mut l = PartitionLedger::default();
        // Keys a and b interleave out of partition order, each in its own order: fine.
        for (o, k) in [(1, "b"), (0, "a"), (2, "a"), (3, "b")] {
            l.record(OrderCheck::Key, o, Some(k.as_bytes()));
        }
        assert_eq!(l.order_violations, 0);
        let mut m = PartitionLedger::default();
        for (o, k) in [(0, "a"), (2, "a"), (1, "a")] {
            m.record(OrderCheck::Key, o, Some(k.as_bytes()));
        }
        assert_eq!(m.order_violations, 1);
    }

    #[test]
    fn key_mode_ranks_by_what_the_writer_numbered_when_given() {
        let mut l = PartitionLedger::default();
        // Offsets in order, but the key's sequence numbers say the writer's order was not kept.
        l.record_ranked(OrderCheck::Key, 0, Some((b"a", 1)));
        l.record_ranked(OrderCheck::Key, 1, Some((b"a", 0)));
        // Without a rank a record is left out of the key check.
        l.record_ranked(OrderCheck::Key, 2, None);
        assert_eq!((l.distinct, l.order_violations), (3, 1));
    }

    #[test]
    fn unordered_mode_checks_nothing() {
        let mut l = PartitionLedger::default();
        for o in [3, 2, 1, 0] {
            l.record(OrderCheck::None, o, None);
        }
        assert_eq!((l.distinct, l.order_violations), (4, 0));
    }

    #[test]
    fn totals_add_counts() {
        let mut a = PartitionLedger::default();
        let mut b = PartitionLedger::default();
        a.record(OrderCheck::Partition, 0, None);
        b.record(OrderCheck::Partition, 0, None);
        b.record(OrderCheck::Partition, 0, None);
        let t = Totals::of([&a, &b]);
        assert_eq!((t.processed, t.distinct, t.duplicates()), (3, 2, 1));
    }

    #[test]
    fn order_checks_follow_the_runtime_orderings() {
        assert_eq!(OrderCheck::from(sluicegate::Ordering::Key), OrderCheck::Key);
        assert_eq!(
            OrderCheck::from(sluicegate::Ordering::Unordered).name(),
            "none"
        );
    }
}

mod records {
    use std::time::Duration;

    use crate::workload::records::*;

    #[test]
    fn events_round_trip_through_json() {
        for seq in 0..50 {
            let e = event(seq, 1_000, 1_700_000_000_000);
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
        }
    }

    #[test]
    fn events_are_deterministic_and_keyed_by_user() {
        assert_eq!(event(7, 10, 1), event(7, 10, 1));
        let user = match event(7, 10, 1) {
            Event::Order { user_id, .. } | Event::Click { user_id, .. } => user_id,
        };
        assert_eq!(user, user_key(7, 10));
    }

    #[test]
    fn keys_stay_within_the_requested_count() {
        let distinct: std::collections::BTreeSet<_> =
            (0..10_000).map(|s| user_key(s, 37)).collect();
        assert_eq!(distinct.len(), 37);
    }

    #[test]
    fn events_carry_their_sequence_number() {
        assert_eq!(event(12_345, 10, 0).seq(), Some(12_345));
    }

    #[test]
    fn poison_is_deterministic_and_close_to_the_rate() {
        assert!((0..10_000).all(|s| !is_poison(s, 0.0)));
        let poison: Vec<u64> = (0..100_000).filter(|&s| is_poison(s, 0.01)).collect();
        assert!(
            (800..1_200).contains(&poison.len()),
            "{} of 100000",
            poison.len()
        );
        assert!(poison.iter().all(|&s| is_poison(s, 0.01)));
        // A higher rate poisons a superset.
        assert!(poison.iter().all(|&s| is_poison(s, 0.05)));
    }

    #[test]
    fn mix_of_orders_and_clicks() {
        let orders = (0..4_000)
            .filter(|&s| matches!(event(s, 10, 0), Event::Order { .. }))
            .count();
        assert!((800..1_200).contains(&orders), "{orders} orders in 4000");
    }

    #[test]
    fn bench_payloads_have_the_requested_size_and_are_json() {
        for size in [32, 100, 1_000] {
            let p = bench_payload(123_456, size);
            assert_eq!(p.len(), size);
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            assert_eq!(v["id"], 123_456);
        }
        // Too small for the envelope: still valid JSON, just longer.
        let p = bench_payload(1, 4);
        assert!(serde_json::from_slice::<serde_json::Value>(&p).is_ok());
    }

    #[test]
    fn bench_keys_spread_over_the_requested_count() {
        let keys: std::collections::BTreeSet<_> = (0..10_000).map(|i| bench_key(i, 7)).collect();
        assert_eq!(keys.len(), 7);
        assert_eq!(bench_key(5, 0), "key-0000");
    }

    #[test]
    fn records_of_a_stream_are_due_at_its_rate() {
        assert_eq!(due(0, 1_000), Duration::ZERO);
        assert_eq!(due(1_500, 1_000), Duration::from_millis(1_500));
        assert_eq!(due(15, 300), Duration::from_millis(50));
    }
}

mod mem {
    use crate::workload::mem::*;

    #[test]
    fn peak_is_at_least_current_on_linux() {
        assert!((kib_to_mb(1000) - 1.024).abs() < 1e-9);
        if cfg!(target_os = "linux") {
            assert!(peak_rss_mb().unwrap() >= rss_mb().unwrap() * 0.5);
        }
    }
}
