//! Damage: flipped records, rolled-back journals, random corruption of the database files;
//! `check` and `repair`. Nothing here may panic, in any thread.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use vane_core::{Delivery, Message};
use vane_proto::{ByteString, ProtocolVersion, PublishProperties, QoS};
use vane_store::{
    check, repair, Durability, Op, Recovered, SessionRecord, Store, StoreError, StoreOptions,
    CLEAN_SHUTDOWN_FILE,
};

static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// Counts panics in every thread (fjall's workers included).
fn count_panics() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

fn options(dir: &Path) -> StoreOptions {
    StoreOptions {
        dir: dir.to_path_buf(),
        durability: Durability::Sync,
        queues_on_disk: false,
    }
}

fn bs(s: &str) -> ByteString {
    ByteString::from(s)
}

fn msg(topic: &str, payload: &[u8]) -> Message {
    Message {
        topic: bs(topic),
        payload: Bytes::copy_from_slice(payload),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: PublishProperties {
            user_properties: vec![vane_proto::UserProperty {
                name: bs("n"),
                value: bs(topic),
            }],
            ..Default::default()
        },
        origin: 0,
        received: Instant::now(),
    }
}

fn session(id: &str) -> SessionRecord {
    SessionRecord {
        client_id: bs(id),
        version: ProtocolVersion::V3_1_1,
        expiry: 60,
        subscriptions: Vec::new(),
        will: None,
        disconnected_at: None,
        owner: None,
    }
}

fn payload(seq: u64) -> Vec<u8> {
    format!("payload-{seq}-{}", "x".repeat((seq % 50) as usize)).into_bytes()
}

/// Writes 20 sessions x 50 deliveries and 300 retained messages in many commits.
fn fill(store: &Store) {
    let mut last = 0;
    for c in 0..20u64 {
        let client = format!("client-{c:02}");
        let mut ops = vec![Op::PutSession(Arc::new(session(&client)))];
        for _ in 0..50 {
            let seq = store.next_seq();
            ops.push(Op::PutDelivery {
                client_id: bs(&client),
                seq,
                delivery: Delivery {
                    message: Arc::new(msg("q/t", &payload(seq))),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    subscription_ids: vec![1],
                    shared: None,
                    stored: None,
                },
            });
        }
        last = store.submit(ops);
        for r in 0..15u64 {
            let topic = format!("r/{c}/{r}");
            let p = topic.clone().into_bytes();
            last = store.submit(vec![Op::PutRetained(Arc::new(msg(&topic, &p)))]);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.is_durable(last) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every recovered record is one that was written, byte for byte.
fn only_written_data(recovered: &Recovered) {
    for s in &recovered.sessions {
        assert!(s.record.client_id.starts_with("client-"));
        for d in &s.queue {
            let seq = d.delivery.stored.expect("stored");
            assert_eq!(d.delivery.message.payload.as_ref(), payload(seq).as_slice());
            assert_eq!(d.delivery.message.topic, "q/t");
        }
    }
    for m in &recovered.retained {
        assert_eq!(m.payload.as_ref(), m.topic.as_bytes());
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if entry.file_name() != "lock" {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The value stored under `key` in `keyspace`, rewritten by `change` (through fjall, so that
/// only our checksum can notice).
fn rewrite(
    dir: &Path,
    keyspace: &str,
    pick: impl Fn(&[u8]) -> bool,
    change: impl Fn(&mut Vec<u8>),
) {
    let db = fjall::Database::builder(dir).open().expect("fjall");
    let ks = db
        .keyspace(keyspace, fjall::KeyspaceCreateOptions::default)
        .expect("keyspace");
    let (key, value) = ks
        .iter()
        .map(|g| g.into_inner().expect("read"))
        .find(|(k, _)| pick(k))
        .expect("a record to damage");
    let mut value = value.to_vec();
    change(&mut value);
    ks.insert(key, value).expect("insert");
    db.persist(fjall::PersistMode::SyncAll).expect("persist");
}

#[test]
fn a_record_with_a_flipped_byte_is_set_aside_and_the_rest_recovers() {
    count_panics();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("s");
    let (store, _) = Store::open(options(&dir)).expect("open");
    fill(&store);
    store.close().expect("close");
    drop(store);
    rewrite(
        &dir,
        "queue",
        |_| true,
        |v| {
            let last = v.len() - 1;
            v[last] ^= 0x40;
        },
    );
    rewrite(&dir, "retained", |k| k == b"r/3/3", |v| v[0] = 9);

    let report = check(&dir).expect("check");
    assert_eq!(report.damaged.len(), 2, "{report:?}");
    assert_eq!(report.damaged[0].keyspace, "queue");
    assert_eq!(report.damaged[0].why, "checksum mismatch");
    assert_eq!(report.damaged[1].keyspace, "retained");
    assert_eq!(report.damaged[1].key_hex, "722f332f33");
    assert_eq!(report.queued, 999);
    assert_eq!(report.retained, 299);
    assert_eq!(
        check(&dir).expect("check again"),
        report,
        "check changes nothing"
    );

    let (store, recovered) = Store::open(options(&dir)).expect("open");
    assert_eq!(recovered.set_aside, 2);
    assert_eq!(store.stats().set_aside, 2);
    assert_eq!(recovered.sessions.len(), 20);
    assert_eq!(
        recovered
            .sessions
            .iter()
            .map(|s| s.queue.len())
            .sum::<usize>(),
        999
    );
    assert_eq!(recovered.retained.len(), 299);
    only_written_data(&recovered);
    store.close().expect("close");
    let report = check(&dir).expect("check");
    assert!(report.damaged.is_empty());
    assert_eq!(report.quarantined, 2, "kept for inspection");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

#[test]
fn repair_sets_damaged_records_aside() {
    count_panics();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("s");
    let (store, _) = Store::open(options(&dir)).expect("open");
    fill(&store);
    store.close().expect("close");
    drop(store);
    rewrite(&dir, "sessions", |k| k == b"client-05", |v| v.truncate(3));
    let report = repair(&dir).expect("repair");
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].keyspace, "sessions");
    assert!(report.moved_to.is_none());
    assert_eq!(
        report.orphans_removed, 50,
        "the session's queue had no session"
    );
    let (store, recovered) = Store::open(options(&dir)).expect("open");
    assert_eq!(recovered.set_aside, 0, "repair already set it aside");
    assert_eq!(recovered.orphans_removed, 0);
    assert_eq!(recovered.sessions.len(), 19);
    store.close().expect("close");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

#[test]
fn repair_moves_an_unreadable_database_aside() {
    count_panics();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("s");
    let (store, _) = Store::open(options(&dir)).expect("open");
    fill(&store);
    store.close().expect("close");
    drop(store);
    std::fs::write(dir.join("version"), b"garbage").expect("write");
    assert!(Store::open(options(&dir)).is_err());
    assert!(check(&dir).is_err());
    let report = repair(&dir).expect("repair");
    let moved = report.moved_to.expect("moved aside");
    assert!(moved.to_string_lossy().contains("s.damaged-"));
    assert!(moved.join("version").is_file(), "nothing deleted");
    assert!(!dir.exists());
    let (store, recovered) = Store::open(options(&dir)).expect("a fresh store starts");
    assert!(recovered.sessions.is_empty());
    store.close().expect("close");
}

#[test]
fn a_journal_rolled_back_below_the_clean_shutdown_is_refused() {
    count_panics();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("s");
    let (store, _) = Store::open(options(&dir)).expect("open");
    fill(&store);
    let commits = store.stats().commits;
    store.close().expect("close");
    drop(store);
    let sidecar = dir.join(CLEAN_SHUTDOWN_FILE);
    let text = std::fs::read_to_string(&sidecar).expect("clean-shutdown marker written");
    assert!(text.ends_with(&format!("commit {commits}\n")), "{text}");

    // A clean reopen removes the marker: the store is running again.
    let (store, _) = Store::open(options(&dir)).expect("open");
    assert!(!sidecar.exists());
    store.close().expect("close");
    drop(store);

    // What a journal cut at a damaged batch marker looks like: fewer commits than closed at.
    std::fs::write(
        &sidecar,
        format!("vane-store clean-shutdown\ncommit {}\n", commits + 5),
    )
    .expect("write");
    match Store::open(options(&dir)) {
        Err(e @ StoreError::RolledBack { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("vane store repair") && text.contains("journal was cut"),
                "{text}"
            );
        }
        other => panic!("expected RolledBack, got {:?}", other.map(|_| ())),
    }
    let report = check(&dir).expect("check");
    assert!(report.rolled_back);
    assert_eq!(report.clean_shutdown, Some(commits + 5));
    let report = repair(&dir).expect("repair");
    assert_eq!(report.accepted_rollback, Some((commits + 5, commits)));
    let (store, recovered) = Store::open(options(&dir)).expect("open after repair");
    assert_eq!(recovered.sessions.len(), 20);
    store.close().expect("close");

    std::fs::write(&sidecar, b"nonsense").expect("write");
    assert!(matches!(
        Store::open(options(&dir)),
        Err(StoreError::Damaged { .. })
    ));
}

#[test]
fn random_damage_to_the_database_files_never_panics() {
    count_panics();
    let tmp = tempfile::tempdir().expect("tempdir");
    // Two bases: cleanly closed (data in table files) and copied while running (data in the
    // journal, as after a crash).
    let closed = tmp.path().join("closed");
    let (store, _) = Store::open(options(&closed)).expect("open");
    fill(&store);
    store.close().expect("close");
    drop(store);
    let running = tmp.path().join("running");
    let live = tmp.path().join("live");
    let (store, _) = Store::open(options(&live)).expect("open");
    fill(&store);
    copy_dir(&live, &running);
    store.close().expect("close");
    drop(store);

    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut outcomes: HashMap<&'static str, u32> = HashMap::new();
    for case in 0..30 {
        let base = if case % 2 == 0 { &closed } else { &running };
        let dir = tmp.path().join(format!("case-{case}"));
        copy_dir(base, &dir);
        let targets = files(&dir);
        let target = &targets[rng.random_range(0..targets.len())];
        let mut bytes = std::fs::read(target).expect("read");
        let how = match rng.random_range(0..3) {
            0 => {
                let at = rng.random_range(0..=bytes.len());
                bytes.truncate(at);
                "truncated"
            }
            1 if !bytes.is_empty() => {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
                "flipped"
            }
            _ => {
                bytes.clear();
                "emptied"
            }
        };
        std::fs::write(target, &bytes).expect("write");
        let opened = std::panic::catch_unwind(AssertUnwindSafe(|| Store::open(options(&dir))));
        let opened =
            opened.unwrap_or_else(|_| panic!("case {case}: open panicked after {how} {target:?}"));
        let outcome = match opened {
            Ok((store, recovered)) => {
                only_written_data(&recovered);
                store.close().expect("close");
                "opened"
            }
            Err(_) => "refused",
        };
        *outcomes.entry(outcome).or_default() += 1;
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _ = check(&dir);
            let _ = repair(&dir);
        }))
        .unwrap_or_else(|_| panic!("case {case}: check/repair panicked"));
    }
    eprintln!("random damage outcomes: {outcomes:?}");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a thread panicked");
}
