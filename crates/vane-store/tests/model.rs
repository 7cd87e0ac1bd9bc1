//! The store against a model: random sequences of operations, submitted in random groups, with
//! closes and reopens in between; after every reopen the store recovers exactly what the model
//! holds (sessions, queues in order with their in-flight state, inbound QoS 2 ids, retained).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use vane_core::session::SessionSubscription;
use vane_core::{Delivery, Message};
use vane_proto::{
    ByteString, PacketId, ProtocolVersion, PublishProperties, QoS, SubscriptionOptions, TopicFilter,
};
use vane_store::{Durability, Op, SessionRecord, Store, StoreOptions};

const CLIENTS: [&str; 3] = ["a", "b/with/slashes", "ç"];
const TOPICS: [&str; 3] = ["t/1", "t/2", "other"];

#[derive(Debug, Clone)]
enum Step {
    PutSession {
        client: usize,
        expiry: u32,
    },
    DeleteSession {
        client: usize,
    },
    PutDelivery {
        client: usize,
        payload: u8,
        qos: u8,
    },
    DeleteOldest {
        client: usize,
    },
    MarkOldest {
        client: usize,
        packet_id: u16,
        released: bool,
    },
    PutInbound {
        client: usize,
        packet_id: u16,
    },
    DeleteInbound {
        client: usize,
        packet_id: u16,
    },
    Retain {
        topic: usize,
        payload: u8,
    },
    Unretain {
        topic: usize,
    },
    /// Submit what was gathered as one group.
    Submit,
    /// Close and reopen the store, then compare.
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    let client = 0..CLIENTS.len();
    prop_oneof![
        (client.clone(), 1u32..1000)
            .prop_map(|(client, expiry)| Step::PutSession { client, expiry }),
        client
            .clone()
            .prop_map(|client| Step::DeleteSession { client }),
        (client.clone(), any::<u8>(), 1u8..=2).prop_map(|(client, payload, qos)| {
            Step::PutDelivery {
                client,
                payload,
                qos,
            }
        }),
        (client.clone(), any::<u8>(), 1u8..=2).prop_map(|(client, payload, qos)| {
            Step::PutDelivery {
                client,
                payload,
                qos,
            }
        }),
        client
            .clone()
            .prop_map(|client| Step::DeleteOldest { client }),
        (client.clone(), 1u16..20, any::<bool>()).prop_map(|(client, packet_id, released)| {
            Step::MarkOldest {
                client,
                packet_id,
                released,
            }
        }),
        (client.clone(), 1u16..8)
            .prop_map(|(client, packet_id)| Step::PutInbound { client, packet_id }),
        (client, 1u16..8).prop_map(|(client, packet_id)| Step::DeleteInbound { client, packet_id }),
        (0..TOPICS.len(), any::<u8>()).prop_map(|(topic, payload)| Step::Retain { topic, payload }),
        (0..TOPICS.len()).prop_map(|topic| Step::Unretain { topic }),
        Just(Step::Submit),
        Just(Step::Submit),
        Just(Step::Reopen),
    ]
}

/// A queued delivery as the model keeps it: payload byte, QoS, (packet id, released).
type Queued = (u8, u8, Option<(u16, bool)>);

/// What the store should hold.
#[derive(Debug, Default)]
struct Model {
    /// client -> expiry
    sessions: BTreeMap<usize, u32>,
    /// client -> seq -> (payload, qos, outflight)
    queues: BTreeMap<usize, BTreeMap<u64, Queued>>,
    inbound: BTreeMap<usize, BTreeSet<u16>>,
    retained: BTreeMap<usize, u8>,
}

fn message(topic: &str, payload: u8, qos: QoS) -> Message {
    Message {
        topic: ByteString::from(topic),
        payload: Bytes::from(vec![payload; 3]),
        qos,
        retain: false,
        properties: PublishProperties::default(),
        origin: 0,
        received: Instant::now(),
    }
}

fn record(client: usize, expiry: u32) -> SessionRecord {
    SessionRecord {
        client_id: ByteString::from(CLIENTS[client]),
        version: ProtocolVersion::V3_1_1,
        expiry,
        subscriptions: vec![SessionSubscription {
            filter: TopicFilter::parse(ByteString::from("t/#")).expect("filter"),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
            subscription_id: None,
        }],
        will: None,
        disconnected_at: None,
        owner: None,
    }
}

fn open(dir: &std::path::Path) -> (Store, vane_store::Recovered) {
    Store::open(StoreOptions {
        dir: dir.to_path_buf(),
        durability: Durability::Sync,
        queues_on_disk: false,
    })
    .expect("open")
}

fn wait(store: &Store, ticket: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.is_durable(ticket) {
        assert!(Instant::now() < deadline, "ticket {ticket} never durable");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("non-zero")
}

fn compare(model: &Model, recovered: &vane_store::Recovered) {
    let sessions: BTreeMap<String, &vane_store::RecoveredSession> = recovered
        .sessions
        .iter()
        .map(|s| (s.record.client_id.to_string(), s))
        .collect();
    assert_eq!(sessions.len(), model.sessions.len(), "sessions");
    for (&client, &expiry) in &model.sessions {
        let s = sessions[CLIENTS[client]];
        assert_eq!(s.record.expiry, expiry);
        let want: Vec<_> = model
            .queues
            .get(&client)
            .map(|q| q.iter().collect())
            .unwrap_or_default();
        let got: Vec<_> = s.queue.iter().collect();
        assert_eq!(got.len(), want.len(), "queue of {}", CLIENTS[client]);
        for (g, (seq, (payload, qos, outflight))) in got.iter().zip(want) {
            assert_eq!(g.delivery.stored, Some(*seq));
            assert_eq!(g.delivery.message.payload[..], [*payload; 3][..]);
            assert_eq!(g.delivery.qos as u8, *qos);
            assert_eq!(g.outflight, outflight.map(|(id, r)| (pid(id), r)));
        }
        let inbound: BTreeSet<u16> = s.inbound_qos2.iter().map(|p| p.get()).collect();
        assert_eq!(
            inbound,
            model.inbound.get(&client).cloned().unwrap_or_default()
        );
    }
    let retained: BTreeMap<String, u8> = recovered
        .retained
        .iter()
        .map(|m| (m.topic.to_string(), m.payload[0]))
        .collect();
    let want: BTreeMap<String, u8> = model
        .retained
        .iter()
        .map(|(&t, &p)| (TOPICS[t].to_string(), p))
        .collect();
    assert_eq!(retained, want, "retained");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_store_recovers_what_the_model_holds(steps in prop::collection::vec(step(), 1..80)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = open(dir.path());
        let mut model = Model::default();
        let mut group = Vec::new();
        let mut next_seq = 1u64;
        for step in steps {
            match step {
                Step::PutSession { client, expiry } => {
                    model.sessions.insert(client, expiry);
                    group.push(Op::PutSession(Arc::new(record(client, expiry))));
                }
                Step::DeleteSession { client } => {
                    model.sessions.remove(&client);
                    model.queues.remove(&client);
                    model.inbound.remove(&client);
                    group.push(Op::DeleteSession(ByteString::from(CLIENTS[client])));
                }
                // Records of clients without a session are orphans, removed at open: the
                // broker never writes them, so neither does the model.
                Step::PutDelivery { client, payload, qos } if model.sessions.contains_key(&client) => {
                    let seq = next_seq.max(store.next_seq());
                    next_seq = seq + 1;
                    let qos = QoS::from_u8(qos).expect("1 or 2");
                    model.queues.entry(client).or_default().insert(seq, (payload, qos as u8, None));
                    group.push(Op::PutDelivery {
                        client_id: ByteString::from(CLIENTS[client]),
                        seq,
                        delivery: Delivery {
                            message: Arc::new(message("t/1", payload, qos)),
                            qos,
                            retain: false,
                            subscription_ids: Vec::new(),
                            shared: None,
                            stored: Some(seq),
                        },
                    });
                }
                Step::DeleteOldest { client } => {
                    let oldest = model.queues.get_mut(&client).and_then(|q| q.pop_first());
                    if let Some((seq, _)) = oldest {
                        group.push(Op::DeleteDelivery { client_id: ByteString::from(CLIENTS[client]), seq });
                    }
                }
                Step::MarkOldest { client, packet_id, released } => {
                    let oldest = model.queues.get_mut(&client).and_then(|q| q.iter_mut().next());
                    if let Some((&seq, entry)) = oldest {
                        entry.2 = Some((packet_id, released));
                        group.push(Op::PutOutflight {
                            client_id: ByteString::from(CLIENTS[client]),
                            seq,
                            packet_id: pid(packet_id),
                            released,
                        });
                    }
                }
                Step::PutInbound { client, packet_id } if model.sessions.contains_key(&client) => {
                    model.inbound.entry(client).or_default().insert(packet_id);
                    group.push(Op::PutInboundQos2 { client_id: ByteString::from(CLIENTS[client]), packet_id: pid(packet_id) });
                }
                Step::DeleteInbound { client, packet_id } => {
                    if let Some(ids) = model.inbound.get_mut(&client) {
                        ids.remove(&packet_id);
                    }
                    group.push(Op::DeleteInboundQos2 { client_id: ByteString::from(CLIENTS[client]), packet_id: pid(packet_id) });
                }
                Step::Retain { topic, payload } => {
                    model.retained.insert(topic, payload);
                    let mut m = message(TOPICS[topic], payload, QoS::AtLeastOnce);
                    m.retain = true;
                    group.push(Op::PutRetained(Arc::new(m)));
                }
                Step::Unretain { topic } => {
                    model.retained.remove(&topic);
                    group.push(Op::DeleteRetained(ByteString::from(TOPICS[topic])));
                }
                Step::Submit => {
                    let t = store.submit(std::mem::take(&mut group));
                    wait(&store, t);
                }
                Step::PutDelivery { .. } | Step::PutInbound { .. } => {}
                Step::Reopen => {
                    let t = store.submit(std::mem::take(&mut group));
                    wait(&store, t);
                    store.close().expect("close");
                    drop(store);
                    let (reopened, recovered) = open(dir.path());
                    compare(&model, &recovered);
                    prop_assert_eq!(recovered.set_aside, 0);
                    store = reopened;
                }
            }
        }
        let t = store.submit(std::mem::take(&mut group));
        wait(&store, t);
        store.close().expect("close");
        drop(store);
        let (_, recovered) = open(dir.path());
        compare(&model, &recovered);
    }
}
