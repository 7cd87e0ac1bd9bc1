//! Start-up time at scale (ignored by default; run with
//! `cargo test --release -p vane-store --test startup -- --ignored --nocapture`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use vane_core::{Delivery, Message};
use vane_proto::{ByteString, ProtocolVersion, PublishProperties, QoS};
use vane_store::{Durability, Op, SessionRecord, Store, StoreOptions};

fn options(dir: &std::path::Path) -> StoreOptions {
    StoreOptions {
        dir: dir.to_path_buf(),
        durability: Durability::Sync,
        queues_on_disk: false,
    }
}

fn message(topic: String, seq: u64) -> Arc<Message> {
    let mut payload = [b'p'; 64];
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    Arc::new(Message {
        topic: ByteString::from(topic),
        payload: Bytes::copy_from_slice(&payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties::default(),
        origin: 0,
        received: Instant::now(),
    })
}

fn submit_all(store: &Store, ops: Vec<Op>) {
    let mut last = 0;
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        last = store.submit(ops.by_ref().take(10_000).collect());
    }
    while !store.is_durable(last) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
#[ignore = "takes a minute; measures start-up"]
fn ten_thousand_sessions_with_a_million_queued_messages_recover_fast() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(options(tmp.path())).expect("open");
    let started = Instant::now();
    let mut ops = Vec::new();
    for s in 0..10_000u32 {
        let client = ByteString::from(format!("client-{s:05}"));
        ops.push(Op::PutSession(Arc::new(SessionRecord {
            client_id: client.clone(),
            version: ProtocolVersion::V5,
            expiry: 3600,
            subscriptions: Vec::new(),
            will: None,
            disconnected_at: None,
            owner: None,
        })));
        for _ in 0..100 {
            let seq = store.next_seq();
            ops.push(Op::PutDelivery {
                client_id: client.clone(),
                seq,
                delivery: Delivery {
                    message: message(format!("site/{s}/sensor/temp"), seq),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    subscription_ids: Vec::new(),
                    shared: None,
                    stored: None,
                },
            });
        }
        if ops.len() >= 100_000 {
            submit_all(&store, std::mem::take(&mut ops));
        }
    }
    submit_all(&store, ops);
    eprintln!("wrote 1,000,000 queued messages in {:?}", started.elapsed());
    let closing = Instant::now();
    store.close().expect("close");
    drop(store);
    eprintln!("close (flush) took {:?}", closing.elapsed());

    let opening = Instant::now();
    let (store, recovered) = Store::open(options(tmp.path())).expect("open");
    let took = opening.elapsed();
    let queued: usize = recovered.sessions.iter().map(|s| s.queue.len()).sum();
    eprintln!(
        "open: {} sessions, {queued} queued messages recovered in {took:?}",
        recovered.sessions.len()
    );
    assert_eq!(recovered.sessions.len(), 10_000);
    assert_eq!(queued, 1_000_000);
    assert!(took.as_secs_f64() < 5.0, "{took:?}");
    store.close().expect("close");
}

#[test]
#[ignore = "takes a minute; measures start-up"]
fn a_million_retained_messages_load_in_seconds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(options(tmp.path())).expect("open");
    let ops: Vec<Op> = (0..1_000_000u64)
        .map(|i| Op::PutRetained(message(format!("site/{}/sensor/{}", i / 100, i % 100), i)))
        .collect();
    submit_all(&store, ops);
    store.close().expect("close");
    drop(store);
    let opening = Instant::now();
    let (store, recovered) = Store::open(options(tmp.path())).expect("open");
    let took = opening.elapsed();
    eprintln!(
        "open: {} retained messages recovered in {took:?}",
        recovered.retained.len()
    );
    assert_eq!(recovered.retained.len(), 1_000_000);
    assert!(took.as_secs_f64() < 5.0, "{took:?}");
    store.close().expect("close");
}
