//! The store through its public API: round trips, group commit, recovery, damage.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use vane_core::session::{SessionSubscription, Will};
use vane_core::{Delivery, Message};
use vane_proto::{
    ByteString, PacketId, ProtocolVersion, PublishProperties, QoS, RetainHandling,
    SubscriptionOptions, TopicFilter, UserProperty,
};
use vane_store::{
    check, Durability, Op, Recovered, SessionRecord, Store, StoreError, StoreOptions,
};

fn options(dir: &Path) -> StoreOptions {
    StoreOptions {
        dir: dir.to_path_buf(),
        durability: Durability::Sync,
        queues_on_disk: false,
    }
}

fn open(dir: &Path) -> (Store, Recovered) {
    Store::open(options(dir)).expect("open store")
}

fn bs(s: &str) -> ByteString {
    ByteString::from(s)
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

fn full_properties() -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(true),
        message_expiry_interval: Some(3600),
        topic_alias: None,
        response_topic: Some(bs("reply/to")),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![
            UserProperty {
                name: bs("k"),
                value: bs("v"),
            },
            UserProperty {
                name: bs("k"),
                value: bs("second"),
            },
        ],
        subscription_identifiers: Vec::new(),
        content_type: Some(bs("text/plain")),
    }
}

fn message(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Message {
    Message {
        topic: bs(topic),
        payload: Bytes::copy_from_slice(payload),
        qos,
        retain,
        properties: full_properties(),
        origin: 0,
        received: Instant::now(),
    }
}

fn delivery(topic: &str, n: u64) -> Delivery {
    Delivery {
        message: Arc::new(message(topic, &n.to_be_bytes(), QoS::ExactlyOnce, true)),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![7, 268_435_455],
        shared: Some(Box::new(
            TopicFilter::parse(bs("$share/g/a/+")).expect("filter"),
        )),
        stored: None,
    }
}

fn session(id: &str) -> SessionRecord {
    SessionRecord {
        client_id: bs(id),
        version: ProtocolVersion::V5,
        expiry: 86_400,
        subscriptions: vec![
            SessionSubscription {
                filter: TopicFilter::parse(bs("a/+/c")).expect("filter"),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
                subscription_id: Some(42),
            },
            SessionSubscription {
                filter: TopicFilter::parse(bs("$share/grp/x/#")).expect("filter"),
                options: SubscriptionOptions {
                    qos: QoS::AtMostOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::SendIfNew,
                },
                subscription_id: None,
            },
        ],
        will: Some(Will {
            message: message("will/topic", b"gone", QoS::AtLeastOnce, true),
            delay: 30,
        }),
        disconnected_at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
        owner: Some("alice".into()),
    }
}

fn wait(store: &Store, ticket: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.is_durable(ticket) {
        assert!(Instant::now() < deadline, "ticket {ticket} never durable");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn put(store: &Store, ops: Vec<Op>) {
    let t = store.submit(ops);
    wait(store, t);
}

/// Messages compare equal except `received`, which is mapped through the wall clock.
fn same_message(a: &Message, b: &Message) {
    assert_eq!(a.topic, b.topic);
    assert_eq!(a.payload, b.payload);
    assert_eq!(a.qos, b.qos);
    assert_eq!(a.retain, b.retain);
    assert_eq!(a.properties, b.properties);
    let diff = if a.received > b.received {
        a.received - b.received
    } else {
        b.received - a.received
    };
    assert!(
        diff < Duration::from_millis(50),
        "received moved by {diff:?}"
    );
}

fn same_session(a: &SessionRecord, b: &SessionRecord) {
    assert_eq!(a.client_id, b.client_id);
    assert_eq!(a.version, b.version);
    assert_eq!(a.expiry, b.expiry);
    assert_eq!(a.subscriptions, b.subscriptions);
    assert_eq!(a.disconnected_at, b.disconnected_at);
    assert_eq!(a.owner, b.owner);
    match (&a.will, &b.will) {
        (Some(x), Some(y)) => {
            assert_eq!(x.delay, y.delay);
            same_message(&x.message, &y.message);
        }
        (None, None) => {}
        _ => panic!("will differs"),
    }
}

#[test]
fn every_op_round_trips() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let s1 = session("client-1");
    let mut s2 = session("c2");
    s2.will = None;
    s2.disconnected_at = None;
    s2.owner = None;
    s2.version = ProtocolVersion::V3_1_1;
    let d1 = delivery("a/b/c", 1);
    let mut d2 = delivery("a/x/c", 2);
    d2.shared = None;
    d2.subscription_ids.clear();
    Arc::make_mut(&mut d2.message).qos = QoS::AtMostOnce;
    Arc::make_mut(&mut d2.message).properties = PublishProperties::default();
    d2.qos = QoS::AtMostOnce;
    let retained = message("r/1", b"kept", QoS::AtLeastOnce, true);
    let mut gone = message("r/2", b"gone", QoS::AtMostOnce, true);
    gone.properties = PublishProperties::default();
    let (store, recovered) = open(&dir);
    assert!(recovered.sessions.is_empty() && recovered.retained.is_empty());
    let (seq1, seq2, seq3) = (store.next_seq(), store.next_seq(), store.next_seq());
    put(
        &store,
        vec![
            Op::PutSession(Arc::new(s1.clone())),
            Op::PutSession(Arc::new(s2.clone())),
            Op::PutDelivery {
                client_id: bs("client-1"),
                seq: seq2,
                delivery: d2.clone(),
            },
            Op::PutDelivery {
                client_id: bs("client-1"),
                seq: seq1,
                delivery: d1.clone(),
            },
            Op::PutDelivery {
                client_id: bs("client-1"),
                seq: seq3,
                delivery: d1.clone(),
            },
            Op::PutOutflight {
                client_id: bs("client-1"),
                seq: seq1,
                packet_id: pid(9),
                released: true,
            },
            Op::PutOutflight {
                client_id: bs("client-1"),
                seq: seq3,
                packet_id: pid(10),
                released: false,
            },
            Op::PutInboundQos2 {
                client_id: bs("client-1"),
                packet_id: pid(3),
            },
            Op::PutInboundQos2 {
                client_id: bs("client-1"),
                packet_id: pid(4),
            },
            Op::PutRetained(Arc::new(retained.clone())),
            Op::PutRetained(Arc::new(gone.clone())),
        ],
    );
    put(
        &store,
        vec![
            Op::DeleteDelivery {
                client_id: bs("client-1"),
                seq: seq3,
            },
            Op::DeleteInboundQos2 {
                client_id: bs("client-1"),
                packet_id: pid(4),
            },
            Op::DeleteRetained(bs("r/2")),
        ],
    );
    store.close().expect("close");
    drop(store);

    let (store, recovered) = open(&dir);
    assert_eq!(recovered.set_aside, 0);
    assert_eq!(recovered.orphans_removed, 0);
    assert_eq!(recovered.sessions.len(), 2);
    let r2 = &recovered.sessions[0];
    let r1 = &recovered.sessions[1];
    same_session(&r1.record, &s1);
    same_session(&r2.record, &s2);
    assert!(r2.queue.is_empty() && r2.inbound_qos2.is_empty());
    assert_eq!(r1.inbound_qos2, vec![pid(3)]);
    assert_eq!(r1.queue.len(), 2, "seq3 and its outflight state deleted");
    let q0 = &r1.queue[0];
    assert_eq!(q0.delivery.stored, Some(seq1));
    assert_eq!(q0.outflight, Some((pid(9), true)));
    let q1 = &r1.queue[1];
    assert_eq!(q1.delivery.stored, Some(seq2));
    assert_eq!(q1.outflight, None);
    for (got, want) in [(&q0.delivery, &d1), (&q1.delivery, &d2)] {
        assert_eq!(got.qos, want.qos);
        assert_eq!(got.retain, want.retain);
        assert_eq!(got.subscription_ids, want.subscription_ids);
        assert_eq!(got.shared, want.shared);
        same_message(&got.message, &want.message);
    }
    assert_eq!(recovered.retained.len(), 1);
    same_message(&recovered.retained[0], &retained);
    assert!(store.next_seq() > seq2, "next_seq above every stored seq");
    store.close().expect("close");
}

#[test]
fn delete_session_removes_records_put_in_the_same_group() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path());
    let c = bs("gone");
    put(
        &store,
        vec![
            Op::PutSession(Arc::new(session("gone"))),
            Op::PutDelivery {
                client_id: c.clone(),
                seq: 1,
                delivery: delivery("t", 1),
            },
            Op::PutSession(Arc::new(session("gone2"))),
            Op::PutDelivery {
                client_id: bs("gone2"),
                seq: 5,
                delivery: delivery("t", 5),
            },
        ],
    );
    // One submit puts more, another deletes; they may land in one group.
    store.submit(vec![
        Op::PutDelivery {
            client_id: c.clone(),
            seq: 2,
            delivery: delivery("t", 2),
        },
        Op::PutOutflight {
            client_id: c.clone(),
            seq: 2,
            packet_id: pid(1),
            released: false,
        },
        Op::PutInboundQos2 {
            client_id: c.clone(),
            packet_id: pid(2),
        },
        Op::DeleteSession(c.clone()),
    ]);
    let t = store.submit(vec![Op::DeleteSession(bs("gone2"))]);
    wait(&store, t);
    store.close().expect("close");
    let (store, recovered) = open(tmp.path());
    assert!(recovered.sessions.is_empty());
    assert_eq!(recovered.orphans_removed, 0, "nothing left behind");
    store.close().expect("close");
    let report = check(tmp.path()).expect("check");
    assert_eq!((report.queued, report.outflight, report.inbound), (0, 0, 0));
}

#[test]
fn message_expiry_keeps_counting_across_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path());
    let mut m = message("exp", b"x", QoS::AtMostOnce, true);
    m.properties.message_expiry_interval = Some(100);
    m.received = Instant::now()
        .checked_sub(Duration::from_secs(40))
        .expect("uptime above 40 s");
    put(&store, vec![Op::PutRetained(Arc::new(m))]);
    store.close().expect("close");
    let (store, recovered) = open(tmp.path());
    let left = recovered.retained[0]
        .remaining_expiry(Instant::now())
        .expect("has expiry");
    assert!((59..=60).contains(&left), "{left} s left");
    store.close().expect("close");
}

#[test]
fn group_commit_shares_commits_among_concurrent_submitters() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut tickets = Vec::new();
                for i in 0..200u64 {
                    let seq = store.next_seq();
                    tickets.push(store.submit(vec![Op::PutRetained(Arc::new(message(
                        &format!("t/{t}/{i}"),
                        &seq.to_be_bytes(),
                        QoS::AtMostOnce,
                        true,
                    )))]));
                }
                tickets
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().expect("thread"));
    }
    let highest = all.iter().copied().max().expect("tickets");
    wait(&store, highest);
    assert!(all.iter().all(|t| store.is_durable(*t)));
    let stats = store.stats();
    assert_eq!(stats.ops, 1600);
    assert!(
        stats.commits < 1600,
        "{} commits for 1600 submits",
        stats.commits
    );
    assert_eq!(stats.syncs, stats.commits);
    assert_eq!(*store.watch().borrow(), highest);
    store.close().expect("close");
    let (store, recovered) = open(tmp.path());
    assert_eq!(recovered.retained.len(), 1600);
    store.close().expect("close");
}

#[test]
fn batch_mode_syncs_within_the_interval() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(StoreOptions {
        dir: tmp.path().to_path_buf(),
        durability: Durability::Batch {
            interval: Duration::from_millis(20),
        },
        queues_on_disk: false,
    })
    .expect("open");
    let mut last = 0;
    for i in 0..50u32 {
        last = store.submit(vec![Op::PutRetained(Arc::new(message(
            &format!("b/{i}"),
            b"x",
            QoS::AtMostOnce,
            true,
        )))]);
    }
    wait(&store, last);
    std::thread::sleep(Duration::from_millis(100));
    let stats = store.stats();
    assert!(
        stats.syncs >= 1 && stats.syncs <= stats.commits,
        "{stats:?}"
    );
    store.close().expect("close");
    store.close().expect("close is idempotent");
    assert_eq!(store.submit(vec![Op::DeleteRetained(bs("b/1"))]), last);
    let (store, recovered) = open(tmp.path());
    assert_eq!(recovered.retained.len(), 50);
    store.close().expect("close");
}

#[test]
fn next_seq_starts_above_the_stored_ones_and_queues_come_back_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path());
    let mut ops = vec![Op::PutSession(Arc::new(session("q")))];
    for seq in [900u64, 5, 300, 70_000, 1] {
        ops.push(Op::PutDelivery {
            client_id: bs("q"),
            seq,
            delivery: delivery("t", seq),
        });
    }
    put(&store, ops);
    store.close().expect("close");
    let (store, recovered) = open(tmp.path());
    let seqs: Vec<_> = recovered.sessions[0]
        .queue
        .iter()
        .map(|d| d.delivery.stored.expect("stored"))
        .collect();
    assert_eq!(seqs, vec![1, 5, 300, 900, 70_000]);
    assert_eq!(store.next_seq(), 70_001);
    store.close().expect("close");
}

#[test]
fn orphans_are_removed_at_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path());
    put(
        &store,
        vec![
            Op::PutDelivery {
                client_id: bs("nobody"),
                seq: 1,
                delivery: delivery("t", 1),
            },
            Op::PutInboundQos2 {
                client_id: bs("nobody"),
                packet_id: pid(1),
            },
        ],
    );
    store.close().expect("close");
    let (store, recovered) = open(tmp.path());
    assert_eq!(recovered.orphans_removed, 2);
    store.close().expect("close");
    let (store, recovered) = open(tmp.path());
    assert_eq!(recovered.orphans_removed, 0);
    store.close().expect("close");
}

#[test]
fn an_empty_or_missing_dir_is_a_new_store_and_others_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path());
    store.close().expect("close");
    let (store, _) = open(&tmp.path().join("a/b/c"));
    store.close().expect("close");

    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).expect("mkdir");
    std::fs::write(foreign.join("notes.txt"), b"mine").expect("write");
    match Store::open(options(&foreign)) {
        Err(e @ StoreError::Foreign { .. }) => {
            assert!(e.to_string().contains("no Vane store"), "{e}");
        }
        other => panic!("expected Foreign, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        std::fs::read(foreign.join("notes.txt")).expect("untouched"),
        b"mine"
    );

    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    match Store::open(options(&file)) {
        Err(e @ StoreError::NotADirectory { .. }) => assert!(e.to_string().contains("file")),
        other => panic!("expected NotADirectory, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn another_format_version_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path());
    store.close().expect("close");
    {
        let db = fjall::Database::builder(tmp.path()).open().expect("fjall");
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .expect("meta");
        let body = 99u64.to_be_bytes();
        let mut value = vec![1];
        value.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        value.extend_from_slice(&body);
        meta.insert("format", value).expect("insert");
        db.persist(fjall::PersistMode::SyncAll).expect("persist");
    }
    match Store::open(options(tmp.path())) {
        Err(e @ StoreError::FormatVersion { found: 99, .. }) => {
            let text = e.to_string();
            assert!(text.contains("99") && text.contains(&tmp.path().display().to_string()));
        }
        other => panic!("expected FormatVersion, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn queues_can_be_recovered_as_sequence_numbers_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    let mut ops = vec![Op::PutSession(Arc::new(session("c")))];
    for seq in 1..=3 {
        let mut d = delivery("a/b", seq);
        d.shared = None;
        ops.push(Op::PutDelivery {
            client_id: bs("c"),
            seq,
            delivery: d,
        });
    }
    // A shared-subscription delivery and one in flight stay in memory.
    ops.push(Op::PutDelivery {
        client_id: bs("c"),
        seq: 4,
        delivery: delivery("a/b", 4),
    });
    let mut inflight = delivery("a/b", 5);
    inflight.shared = None;
    ops.push(Op::PutDelivery {
        client_id: bs("c"),
        seq: 5,
        delivery: inflight,
    });
    ops.push(Op::PutOutflight {
        client_id: bs("c"),
        seq: 5,
        packet_id: pid(9),
        released: false,
    });
    put(&store, ops);
    store.close().expect("close");
    drop(store);
    let (_, recovered) = Store::open(StoreOptions {
        queues_on_disk: true,
        ..options(dir.path())
    })
    .expect("reopen");
    let s = &recovered.sessions[0];
    let size = delivery("a/b", 1).size() as u32;
    assert_eq!(s.on_disk, vec![(1, size), (2, size), (3, size)]);
    let in_memory: Vec<_> = s.queue.iter().map(|d| d.delivery.stored).collect();
    assert_eq!(in_memory, vec![Some(4), Some(5)]);
}

#[test]
fn queued_deliveries_are_read_back_by_sequence_number() {
    // An offline session's queue lives on disk only; its connection reads it back in batches.
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    let mut ops = vec![Op::PutSession(Arc::new(session("c")))];
    for seq in 1..=5 {
        ops.push(Op::PutDelivery {
            client_id: bs("c"),
            seq,
            delivery: delivery("a/b", seq),
        });
    }
    ops.push(Op::DeleteDelivery {
        client_id: bs("c"),
        seq: 3,
    });
    put(&store, ops);
    let (loaded, unreadable) = store.load_deliveries("c", &[1, 2, 3, 4, 99]).expect("read");
    assert_eq!(unreadable, 0);
    let seqs: Vec<_> = loaded.iter().map(|d| d.stored).collect();
    assert_eq!(
        seqs,
        vec![Some(1), Some(2), Some(4)],
        "3 was deleted, 99 never existed"
    );
    same_message(&loaded[0].message, &delivery("a/b", 1).message);
    assert_eq!(loaded[1].subscription_ids, vec![7, 268_435_455]);
    store.close().expect("close");
    assert!(
        store.load_deliveries("c", &[1]).is_err(),
        "a closed store says so"
    );
}
