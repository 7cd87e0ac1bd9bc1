//! The memory budget against the real binary: as its resident memory nears a small budget the
//! broker degrades in order (publishes paused; then QoS 1/2 publishes refused with 0x97, or
//! for MQTT 3.x the connection closed, and new connections refused with 0x89 / return code
//! 3), says so in its log, and recovers once the memory is given back.

use std::time::{Duration, Instant};

use test_support::process::{write_file, ServeOptions, TempDir, VaneProcess};
use test_support::vane_proto::{
    ConnAckReason, Connect, LastWill, Packet, PubAckReason, PubRecReason, QoS,
};
use test_support::*;

const VANE: &str = env!("CARGO_BIN_EXE_vane");
const BUDGET_MIB: usize = 96;
const HOG: &str = "ov/hog";

fn payload(mib: usize) -> Vec<u8> {
    vec![0xA5; mib << 20]
}

/// A v5 CONNECT whose will (QoS 1, 60 KiB: a will payload has a 16-bit length) goes to the
/// hog when the connection drops.
fn with_big_will(client_id: &str) -> Connect {
    let mut c = connect_v5(client_id);
    c.will = Some(LastWill {
        topic: HOG.to_owned().into(),
        payload: vec![0x5A; 60 << 10].into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    c
}

/// Whether a QoS 1 publish from `c` is acknowledged within `wait`: `Some(reason)` if it is.
async fn publish_acked(c: &mut TestClient, id: u16, body: &[u8], wait: Duration) -> Option<u8> {
    c.send(publish(HOG, 1, id, body)).await;
    match c.next_event(wait).await {
        Received::Packet(Packet::PubAck(a)) => Some(a.reason.as_u8()),
        Received::Timeout => None,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// A v5 CONNECT with a QoS 0 will to the QoS 0 subscriber.
fn with_qos0_will(client_id: &str) -> Connect {
    with_will(connect_v5(client_id), "ov/q0", "q0", 0, false)
}

async fn connack(addr: std::net::SocketAddr, connect: Connect) -> (TestClient, ConnAckReason) {
    let (c, ack) = TestClient::connect_with_ack(addr, connect).await;
    (c, ack.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_memory_budget_the_broker_degrades_in_order_and_recovers() {
    let dir = TempDir::new("vane-overload");
    let mut options = ServeOptions::new(VANE, dir.path(), "memory");
    let config = dir.path().join("vane.toml");
    // Queues large enough to take the broker over its budget, no backpressure and no
    // slow-consumer policy, so only the budget acts.
    write_file(
        &config,
        &format!(
            "[mqtt]\nmax_packet_size = \"8MiB\"\n\n[queue]\nmax_messages = 100000\nmax_bytes = \"1GiB\"\nbackpressure_timeout = \"0s\"\n\n[slow_consumer]\ntimeout = \"0s\"\n\n[overload]\nmemory_budget = \"{BUDGET_MIB}MiB\"\nsample_interval = \"20ms\"\n"
        ),
    );
    options.config = Some(config);
    let broker = VaneProcess::start(options, Duration::from_secs(20));
    let addr = broker.addr();

    // The hog subscribes at QoS 1 and never reads: what is published to it stays in memory.
    let mut hog = TestClient::connect(addr, connect_v311("hog")).await;
    hog.send(subscribe(1, HOG, 1)).await;
    hog.expect(suback(1, &[1])).await;
    let mut v5 = TestClient::connect(addr, connect_v5("publisher-v5")).await;
    let mut v3 = TestClient::connect(addr, connect_v311("publisher-v3")).await;
    // A QoS 0 subscriber, and a QoS 0 will that reaches it while memory is fine.
    let mut q0 = TestClient::connect(addr, connect_v311("q0-sub")).await;
    q0.send(subscribe(1, "ov/q0", 0)).await;
    q0.expect(suback(1, &[0])).await;
    drop(TestClient::connect(addr, with_qos0_will("q0-will-before")).await);
    assert_eq!(q0.recv_publish().await.payload.as_ref(), b"q0");

    // Level 1: 1 MiB messages until one is not acknowledged: reading of publishes paused.
    let body = payload(1);
    let mut id = 1;
    loop {
        assert!(
            id < 200,
            "the broker never paused the publisher; log:\n{}",
            broker.log()
        );
        match publish_acked(&mut v5, id, &body, Duration::from_secs(1)).await {
            Some(0) => {
                id += 1;
                // Two samples per message: the level climbs one step at a time.
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            // Not acknowledged within a second: held back, if the broker says it sheds
            // (otherwise only slow: wait for the acknowledgement).
            None if broker.log().contains("level=shedding") => break,
            None => match v5.recv().await {
                Some(Packet::PubAck(a)) if a.reason == PubAckReason::Success => id += 1,
                other => panic!("publish {id}: expected PUBACK, got {other:?}"),
            },
            Some(reason) => panic!("publish {id}: reason {reason:#x} before publishes paused"),
        }
    }
    let paused_id = id;

    // Level 1 drops QoS 0 deliveries.
    drop(TestClient::connect(addr, with_qos0_will("q0-will-shedding")).await);
    q0.expect_nothing(Duration::from_millis(500)).await;

    // Level 2: wills (published when their connections drop, unaffected by the pause) add to
    // the hog's queue until a new connection is refused with 0x89 [MQTT 5.0 3.2.2.2].
    let mut n = 0;
    loop {
        n += 1;
        assert!(
            n < 2000,
            "new connections were never refused; log:\n{}",
            broker.log()
        );
        let (c, reason) = connack(addr, with_big_will(&format!("will-{n}"))).await;
        if reason == ConnAckReason::ServerBusy {
            break;
        }
        assert_eq!(reason, ConnAckReason::Success);
        drop(c);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // MQTT 3.1.1 has no "busy": return code 3, server unavailable [MQTT-3.2.2-5].
    let (_, reason) = connack(addr, connect_v311("late-v3")).await;
    assert_eq!(
        reason.v3_return_code(),
        3,
        "3.x clients are refused with return code 3"
    );

    // The held-back publish is refused with 0x97 now, and so are new QoS 1 and 2 publishes.
    match v5.recv().await {
        Some(Packet::PubAck(a)) => {
            assert_eq!(a.packet_id.get(), paused_id);
            assert_eq!(a.reason, PubAckReason::QuotaExceeded);
        }
        other => panic!("expected PUBACK 0x97 for the held-back publish, got {other:?}"),
    }
    let refused = publish_acked(&mut v5, 1000, b"small", Duration::from_secs(2)).await;
    assert_eq!(refused, Some(PubAckReason::QuotaExceeded.as_u8()));
    v5.send(publish(HOG, 2, 1001, b"small")).await;
    match v5.recv().await {
        Some(Packet::PubRec(r)) => assert_eq!(r.reason, PubRecReason::QuotaExceeded),
        other => panic!("expected PUBREC 0x97, got {other:?}"),
    }
    // An MQTT 3.x publisher cannot be told: its connection is closed, the message unacknowledged.
    v3.send(publish(HOG, 1, 1, b"small")).await;
    let closed = v3.next_event(Duration::from_secs(2)).await;
    assert!(matches!(closed, Received::Closed), "got {closed:?}");

    // The hog goes: its queue is freed, memory falls below the recovery mark and new
    // connections and publishes are accepted again.
    drop(hog);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut fresh = loop {
        let (c, reason) = connack(addr, connect_v5("after")).await;
        if reason == ConnAckReason::Success {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "still refusing connections 15 s after the memory was freed; log:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    fresh.send(subscribe(1, "ov/after", 1)).await;
    fresh.expect(suback(1, &[1])).await;
    let acked = publish_acked(&mut v5, 1002, b"again", Duration::from_secs(2)).await;
    assert_eq!(acked, Some(0x10), "accepted again (no subscribers: 0x10)");

    let log = broker.log();
    let transitions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("memory overload"))
        .collect();
    assert!(
        transitions
            .iter()
            .any(|l| l.contains("degrading") && l.contains("shedding"))
            && transitions
                .iter()
                .any(|l| l.contains("degrading") && l.contains("refusing"))
            && transitions.iter().any(|l| {
                l.contains("easing") && l.contains("level=normal") && l.contains("dropped_qos0=1")
            }),
        "each transition is logged; log:\n{log}"
    );
}

/// A broker whose budget (1 MiB) is below any process's resident memory: it refuses from
/// its first sample.
async fn over_budget_broker(tls: Option<test_support::vane_config::TlsConfig>) -> TestBroker {
    let broker = TestBroker::start(move |c| {
        c.listeners[0].tls = tls;
        c.overload.memory_budget = Some(test_support::vane_config::ByteSize(1 << 20));
        c.overload.sample_interval = Duration::from_millis(10);
    })
    .await;
    // The first sample is taken as the server starts; leave it time to run.
    tokio::time::sleep(Duration::from_millis(200)).await;
    broker
}

#[tokio::test]
async fn over_the_budget_new_connections_are_refused_before_anything_is_spent_on_them() {
    // Plain listener: CONNACK 0x89 Server busy [MQTT 5.0 3.2.2.2]; 3.x return code 3.
    let plain = over_budget_broker(None).await;
    let (_, reason) = connack(plain.addr(), connect_v5("refused-v5")).await;
    assert_eq!(reason, ConnAckReason::ServerBusy);
    let (_, reason) = connack(plain.addr(), connect_v311("refused-v3")).await;
    assert_eq!(reason.v3_return_code(), 3);

    // TLS listener: closed before the handshake (a normal one waits for the ClientHello).
    let dir = TempDir::new("vane-overload-tls");
    let ca = test_support::certs::ca("vane test CA");
    let server = test_support::certs::server_cert(&ca);
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    write_file(&cert, &server.cert.pem());
    write_file(&key, &server.key.serialize_pem());
    let tls = over_budget_broker(Some(test_support::vane_config::TlsConfig {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        ..Default::default()
    }))
    .await;
    let mut stream = tokio::net::TcpStream::connect(tls.addr())
        .await
        .expect("TCP connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut stream, &mut byte),
    )
    .await
    .expect("the broker closes the connection at once instead of waiting for a handshake");
    assert!(matches!(read, Ok(0) | Err(_)), "closed, got {read:?}");
}
