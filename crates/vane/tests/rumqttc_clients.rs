//! The core behaviours again, driven by a third-party client (`rumqttc`, MQTT 3.1.1 and 5.0)
//! against a real broker on 127.0.0.1:0. Clause numbers are MQTT 3.1.1's unless marked (5.0).
//!
//! Each client's event loop runs in its own task and forwards incoming packets to a channel;
//! the task stops at the first connection error, so rumqttc never reconnects on its own.

mod rumqttc_events;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, LastWill, MqttOptions, Packet, QoS, SubscribeReasonCode,
};
use test_support::{unique_id, TestBroker};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(3);
const QUIET: Duration = Duration::from_millis(300);

/// A client and the packets its event loop receives.
struct Conn<C, P> {
    client: C,
    incoming: mpsc::UnboundedReceiver<Result<P, String>>,
    task: JoinHandle<()>,
}

impl<C, P: Debug> Conn<C, P> {
    /// Waits for the first incoming packet `pick` accepts, skipping the others.
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&P) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Err(_) => panic!("no {what} within {WAIT:?}"),
                Ok(None) => panic!("event loop ended while waiting for {what}"),
                Ok(Some(Err(e))) => panic!("connection error while waiting for {what}: {e}"),
                Ok(Some(Ok(p))) => {
                    if let Some(t) = pick(&p) {
                        return t;
                    }
                }
            }
        }
    }

    /// Checks no incoming packet that `interesting` accepts arrives for `duration`.
    async fn expect_none(&mut self, duration: Duration, mut interesting: impl FnMut(&P) -> bool) {
        let deadline = Instant::now() + duration;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Err(_) => return,
                Ok(None) => panic!("event loop ended"),
                Ok(Some(Err(e))) => panic!("connection error: {e}"),
                Ok(Some(Ok(p))) => assert!(!interesting(&p), "unexpected {p:?}"),
            }
        }
    }

    /// Waits for the connection to end; returns the error the event loop reported.
    async fn wait_closed(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Err(_) => panic!("connection still open after {WAIT:?}"),
                Ok(None) => return "event loop ended".into(),
                Ok(Some(Err(e))) => return e,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Drops the event loop, and with it the socket, without DISCONNECT.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn options(addr: SocketAddr, client_id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Starts an MQTT 3.1.1 client and waits for its CONNACK; returns Session Present.
async fn start(opts: MqttOptions) -> (Conn<AsyncClient, Packet>, bool) {
    let (client, eventloop) = AsyncClient::new(opts, 64);
    let (incoming, task) = rumqttc_events::spawn(eventloop);
    let mut conn = Conn {
        client,
        incoming,
        task,
    };
    let session_present = conn
        .wait_for("CONNACK", |p| match p {
            Packet::ConnAck(ack) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                Some(ack.session_present)
            }
            _ => None,
        })
        .await;
    (conn, session_present)
}

async fn connect(addr: SocketAddr, prefix: &str) -> Conn<AsyncClient, Packet> {
    start(options(addr, &unique_id(prefix))).await.0
}

impl Conn<AsyncClient, Packet> {
    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("subscribe request");
        let codes = self
            .wait_for("SUBACK", |p| match p {
                Packet::SubAck(s) => Some(s.return_codes.clone()),
                _ => None,
            })
            .await;
        // [MQTT-3.8.4-5] the granted QoS.
        assert_eq!(codes, [SubscribeReasonCode::Success(qos)]);
    }

    /// Publishes and waits until the QoS flow is complete (PUBACK or PUBCOMP).
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.client
            .publish(topic, qos, retain, payload.as_bytes().to_vec())
            .await
            .expect("publish request");
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_for("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
                    .await
            }
            QoS::ExactlyOnce => {
                self.wait_for("PUBCOMP", |p| matches!(p, Packet::PubComp(_)).then_some(()))
                    .await
            }
        }
    }

    async fn next_publish(&mut self) -> rumqttc::Publish {
        self.wait_for("PUBLISH", |p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    async fn expect_no_publish(&mut self) {
        self.expect_none(QUIET, |p| matches!(p, Packet::Publish(_)))
            .await;
    }

    async fn disconnect(mut self) {
        self.client.disconnect().await.expect("disconnect request");
        self.wait_closed().await;
    }
}

async fn round_trip(qos: QoS) {
    // [MQTT-4.3.1-1] / [MQTT-4.3.2-1] / [MQTT-4.3.3-1] the message is delivered at the QoS
    // it was published and subscribed with, through the whole acknowledgement flow.
    let broker = TestBroker::start_default().await;
    let mut sub = connect(broker.addr(), "rc-sub").await;
    sub.subscribe("rc/t", qos).await;
    let mut publisher = connect(broker.addr(), "rc-pub").await;
    publisher.publish("rc/t", qos, false, "hello").await;
    let p = sub.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.retain),
        ("rc/t", &b"hello"[..], qos, false)
    );
    sub.expect_no_publish().await;
}

#[tokio::test]
async fn publish_subscribe_at_qos0() {
    round_trip(QoS::AtMostOnce).await;
}

#[tokio::test]
async fn publish_subscribe_at_qos1() {
    round_trip(QoS::AtLeastOnce).await;
}

#[tokio::test]
async fn publish_subscribe_at_qos2() {
    round_trip(QoS::ExactlyOnce).await;
}

#[tokio::test]
async fn retained_message_reaches_a_late_subscriber() {
    // [MQTT-3.3.1-5] a retained message is stored; [MQTT-3.3.1-6] sent to a new subscription,
    // [MQTT-3.3.1-8] with RETAIN 1.
    let broker = TestBroker::start_default().await;
    let mut publisher = connect(broker.addr(), "rc-pub").await;
    publisher
        .publish("rc/retained", QoS::AtLeastOnce, true, "kept")
        .await;
    let mut late = connect(broker.addr(), "rc-late").await;
    late.subscribe("rc/#", QoS::AtLeastOnce).await;
    let p = late.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain),
        ("rc/retained", &b"kept"[..], true)
    );
}

#[tokio::test]
async fn will_is_published_when_the_client_drops_without_disconnect() {
    // [MQTT-3.1.2-8] the will is published when the connection closes without DISCONNECT;
    // [MQTT-3.1.2-10] not after a DISCONNECT.
    let broker = TestBroker::start_default().await;
    let mut watcher = connect(broker.addr(), "rc-watcher").await;
    watcher.subscribe("rc/will/#", QoS::AtLeastOnce).await;

    let mut o = options(broker.addr(), "rc-polite");
    o.set_last_will(LastWill::new(
        "rc/will/polite",
        "bye",
        QoS::AtLeastOnce,
        false,
    ));
    let (polite, _) = start(o).await;
    polite.disconnect().await;
    watcher.expect_no_publish().await;

    let mut o = options(broker.addr(), "rc-dropped");
    o.set_last_will(LastWill::new(
        "rc/will/dropped",
        "bye",
        QoS::AtLeastOnce,
        false,
    ));
    let (dropped, _) = start(o).await;
    dropped.kill().await;
    let p = watcher.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos),
        ("rc/will/dropped", &b"bye"[..], QoS::AtLeastOnce)
    );
}

#[tokio::test]
async fn persistent_session_receives_the_qos1_messages_it_missed() {
    // [MQTT-3.1.2-4] Clean Session 0 resumes the session, [MQTT-3.2.2-2] with Session Present
    // 1; [MQTT-3.1.2-5] QoS 1 messages published while it was offline are delivered, in order.
    let broker = TestBroker::start_default().await;
    let mut o = options(broker.addr(), "rc-persistent");
    o.set_clean_session(false);
    let (mut sub, present) = start(o.clone()).await;
    assert!(!present, "[MQTT-3.2.2-3] no session existed yet");
    sub.subscribe("rc/missed", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = connect(broker.addr(), "rc-pub").await;
    for m in ["m1", "m2", "m3"] {
        publisher
            .publish("rc/missed", QoS::AtLeastOnce, false, m)
            .await;
    }
    let (mut sub, present) = start(o).await;
    assert!(present);
    for m in ["m1", "m2", "m3"] {
        let p = sub.next_publish().await;
        assert_eq!((&p.payload[..], p.qos), (m.as_bytes(), QoS::AtLeastOnce));
    }
    sub.expect_no_publish().await;
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    // [MQTT-3.1.4-2] the broker disconnects the existing client with the same client id; the
    // new connection is served.
    let broker = TestBroker::start_default().await;
    let (mut first, _) = start(options(broker.addr(), "rc-twin")).await;
    let (mut second, _) = start(options(broker.addr(), "rc-twin")).await;
    first.wait_closed().await;
    second.subscribe("rc/twin", QoS::AtLeastOnce).await;
    let mut publisher = connect(broker.addr(), "rc-pub").await;
    publisher
        .publish("rc/twin", QoS::AtLeastOnce, false, "to the second")
        .await;
    assert_eq!(&second.next_publish().await.payload[..], b"to the second");
}

// ---------------------------------------------------------------------------------------------
// MQTT 5.0 with rumqttc::v5
// ---------------------------------------------------------------------------------------------

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{
        ConnectReturnCode, Packet, PubAckReason, SubscribeReasonCode,
    };
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    async fn start(addr: SocketAddr, client_id: &str) -> Conn<AsyncClient, Packet> {
        let mut o = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let (tx, incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            break;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        break;
                    }
                }
            }
        });
        let mut conn = Conn {
            client,
            incoming,
            task,
        };
        let ack = conn
            .wait_for("CONNACK", |p| match p {
                Packet::ConnAck(ack) => Some(ack.clone()),
                _ => None,
            })
            .await;
        assert_eq!(ack.code, ConnectReturnCode::Success);
        assert!(!ack.session_present);
        conn
    }

    async fn puback_reason(c: &mut Conn<AsyncClient, Packet>) -> PubAckReason {
        c.wait_for("PUBACK", |p| match p {
            Packet::PubAck(a) => Some(a.reason),
            _ => None,
        })
        .await
    }

    #[tokio::test]
    async fn connect_subscribe_publish_and_no_matching_subscribers() {
        // (5.0) section 3.4.2.1: PUBACK 0x10 No matching subscribers when nobody received the
        // message, 0x00 Success when someone did; [MQTT-3.9.3-1] SUBACK grants the QoS.
        let broker = TestBroker::start_default().await;
        let mut publisher = start(broker.addr(), "rc5-pub").await;
        publisher
            .client
            .publish("rc5/t", QoS::AtLeastOnce, false, "nobody")
            .await
            .expect("publish request");
        assert_eq!(
            puback_reason(&mut publisher).await,
            PubAckReason::NoMatchingSubscribers
        );

        let mut sub = start(broker.addr(), "rc5-sub").await;
        sub.client
            .subscribe("rc5/#", QoS::AtLeastOnce)
            .await
            .expect("subscribe request");
        let codes = sub
            .wait_for("SUBACK", |p| match p {
                Packet::SubAck(s) => Some(s.return_codes.clone()),
                _ => None,
            })
            .await;
        assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);

        publisher
            .client
            .publish("rc5/t", QoS::AtLeastOnce, false, "somebody")
            .await
            .expect("publish request");
        assert_eq!(puback_reason(&mut publisher).await, PubAckReason::Success);
        let p = sub
            .wait_for("PUBLISH", |p| match p {
                Packet::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .await;
        assert_eq!(
            (&p.topic[..], &p.payload[..], p.qos),
            (&b"rc5/t"[..], &b"somebody"[..], QoS::AtLeastOnce)
        );
    }
}
