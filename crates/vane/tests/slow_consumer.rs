//! The slow-consumer policy against the real binary: one subscriber that never reads while
//! 100,000 messages flow to it and to ten healthy subscribers. The healthy ones receive
//! everything, in order; the stuck one loses its QoS 0 deliveries, then is disconnected and
//! the log says so; the broker's resident memory stays under the configured budget.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use test_support::process::{write_file, ServeOptions, TempDir, VaneProcess};
use test_support::vane_proto::{Decoder, DisconnectReason, Packet, ProtocolVersion};
use test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const VANE: &str = env!("CARGO_BIN_EXE_vane");
const MESSAGES: u32 = 100_000;
const HEALTHY: usize = 10;
const TOPIC: &str = "slow/t";
/// Publishes in flight from the publisher at once.
const WINDOW: u32 = 500;
/// The broker's configured memory budget, the bound its RSS must stay under.
const BUDGET_MIB: u64 = 64;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

/// A raw MQTT 3.1.1 connection that batches its writes: the test clients must keep up with
/// the broker on a busy machine.
struct Raw {
    stream: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr, client_id: &str) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let mut raw = Raw {
            stream,
            decoder: Decoder::with_version(V311, 1 << 20),
            buf: BytesMut::with_capacity(64 * 1024),
        };
        raw.send(&[Packet::Connect(Box::new(connect_v311(client_id)))])
            .await;
        match raw.next().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason.as_u8(), 0, "{ack:?}"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        raw
    }

    async fn subscribe_qos1(&mut self) {
        self.send(&[subscribe(1, TOPIC, 1)]).await;
        match self.next().await {
            Some(Packet::SubAck(_)) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn send(&mut self, packets: &[Packet]) {
        let mut out = BytesMut::new();
        for p in packets {
            p.encode(V311, &mut out).expect("encode");
        }
        self.stream.write_all(&out).await.expect("write");
    }

    /// The next packet; `None` at the end of the stream.
    async fn next(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self.decoder.decode(&mut self.buf).expect("valid packet") {
                return Some(p);
            }
            let n =
                tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("the broker sends within 20 s")
                    .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Every packet already read and decodable, without waiting.
    fn drain_decoded(&mut self, into: &mut Vec<Packet>) {
        while let Some(p) = self.decoder.decode(&mut self.buf).expect("valid packet") {
            into.push(p);
        }
    }

    async fn read_more(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
            .await
            .expect("the broker sends within 20 s")
            .unwrap_or(0)
            > 0
    }
}

/// A subscriber that reads and acknowledges everything; returns how many messages arrived in
/// order (it stops at the first one out of order).
async fn healthy(mut c: Raw) -> u32 {
    let mut next = 0u32;
    let mut packets = Vec::new();
    while next < MESSAGES {
        if !c.read_more().await {
            break;
        }
        c.drain_decoded(&mut packets);
        let mut acks = Vec::with_capacity(packets.len());
        for p in packets.drain(..) {
            let Packet::Publish(p) = p else { continue };
            let seq = u32::from_be_bytes(p.payload[..4].try_into().expect("4 bytes"));
            if seq != next {
                return next;
            }
            next += 1;
            if let Some(id) = p.packet_id {
                acks.push(puback(id.get()));
            }
        }
        c.send(&acks).await;
    }
    next
}

/// Publishes `MESSAGES` QoS 1 messages, at most `WINDOW` unacknowledged.
async fn publish_all(mut c: Raw) {
    let payload_tail = [0x55u8; 60];
    let (mut sent, mut acked) = (0u32, 0u32);
    let mut packets = Vec::new();
    while acked < MESSAGES {
        let mut batch = Vec::new();
        while sent < MESSAGES && sent - acked < WINDOW {
            let mut payload = sent.to_be_bytes().to_vec();
            payload.extend_from_slice(&payload_tail);
            let id = u16::try_from(sent % 65_535 + 1).expect("fits");
            batch.push(publish(TOPIC, 1, id, payload));
            sent += 1;
        }
        if !batch.is_empty() {
            c.send(&batch).await;
        }
        assert!(c.read_more().await, "the broker closed the publisher");
        c.drain_decoded(&mut packets);
        acked += packets
            .drain(..)
            .filter(|p| matches!(p, Packet::PubAck(_)))
            .count() as u32;
    }
}

/// A `/proc/<pid>/status` field in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a number of kB");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_is_cut_off_while_healthy_ones_get_everything() {
    let dir = TempDir::new("vane-slow-consumer");
    let mut options = ServeOptions::new(VANE, dir.path(), "memory");
    let config = dir.path().join("vane.toml");
    // The slow-consumer policy acts after 2 s of taking nothing (a healthy client on a busy
    // machine takes something well within that) and disconnects 1 s later; the budget is the
    // bound the broker's memory is checked against.
    write_file(
        &config,
        &format!(
            "[queue]\nbackpressure_timeout = \"1s\"\n\n[slow_consumer]\ntimeout = \"2s\"\ndisconnect_after = \"1s\"\n\n[overload]\nmemory_budget = \"{BUDGET_MIB}MiB\"\n"
        ),
    );
    options.config = Some(config);
    let broker = VaneProcess::start(options, Duration::from_secs(20));
    let pid = broker.pid().expect("running");
    let addr = broker.addr();

    // Subscribes at QoS 1, then never reads again: its socket buffers fill, then its queue.
    let mut stuck = Raw::connect(addr, "stuck-subscriber").await;
    stuck.subscribe_qos1().await;
    let mut subscribers = Vec::new();
    for i in 0..HEALTHY {
        let mut c = Raw::connect(addr, &format!("healthy-{i}")).await;
        c.subscribe_qos1().await;
        subscribers.push(tokio::spawn(healthy(c)));
    }
    let publisher = Raw::connect(addr, "publisher").await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(120), publish_all(publisher))
        .await
        .expect("every publish is acknowledged within 2 minutes");
    for (i, s) in subscribers.into_iter().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(60), s)
            .await
            .expect("healthy subscriber finishes")
            .expect("healthy subscriber task");
        assert_eq!(
            got, MESSAGES,
            "healthy-{i} received every message, in order"
        );
    }
    let elapsed = started.elapsed();
    let hwm = status_bytes(pid, "VmHWM:");
    let rss = status_bytes(pid, "VmRSS:");
    eprintln!(
        "{MESSAGES} messages to {HEALTHY} healthy subscribers in {elapsed:?}; broker VmHWM {} KiB, VmRSS {} KiB, budget {} KiB",
        hwm / 1024,
        rss / 1024,
        BUDGET_MIB * 1024
    );
    assert!(
        hwm < BUDGET_MIB << 20,
        "the broker's peak RSS {hwm} stayed under the {BUDGET_MIB} MiB budget"
    );

    // The stuck subscriber's connection was closed: what the kernel buffered for it, then
    // the end of the stream.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut sink = vec![0u8; 1 << 16];
        loop {
            match stuck.stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stuck subscriber was disconnected");
    let log = broker.log();
    let flagged = log.lines().any(|l| {
        l.contains("slow consumer: the client took none") && l.contains("stuck-subscriber")
    });
    let disconnected = log
        .lines()
        .any(|l| l.contains("slow consumer disconnected") && l.contains("stuck-subscriber"));
    assert!(
        flagged && disconnected,
        "the log names the slow consumer; log:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("slow consumer") && l.contains("healthy-")),
        "no healthy subscriber is treated as slow; log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_qos0_subscriber_loses_its_qos0_messages_then_its_connection() {
    let dir = TempDir::new("vane-slow-consumer-qos0");
    let mut options = ServeOptions::new(VANE, dir.path(), "memory");
    let config = dir.path().join("vane.toml");
    write_file(
        &config,
        "[slow_consumer]\ntimeout = \"500ms\"\ndisconnect_after = \"1s\"\n",
    );
    options.config = Some(config);
    let broker = VaneProcess::start(options, Duration::from_secs(20));
    let addr = broker.addr();

    let mut stuck = Raw::connect(addr, "stuck-qos0").await;
    stuck.send(&[subscribe(1, TOPIC, 0)]).await;
    match stuck.next().await {
        Some(Packet::SubAck(_)) => {}
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // QoS 0 messages of 1 KiB, in batches, until the broker has disconnected the stuck one:
    // its socket buffers fill, then its output, and it takes nothing more.
    let mut publisher = Raw::connect(addr, "qos0-publisher").await;
    let body = vec![0x33u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(30);
    let disconnected = |log: &str| {
        log.lines()
            .find(|l| l.contains("slow consumer disconnected") && l.contains("stuck-qos0"))
            .map(str::to_owned)
    };
    let line = loop {
        let batch: Vec<Packet> = (0..200).map(|_| publish(TOPIC, 0, 0, &body)).collect();
        publisher.send(&batch).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Some(line) = disconnected(&broker.log()) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "the stuck subscriber was not disconnected; log:\n{}",
            broker.log()
        );
    };
    // QoS 0 messages published while it was a slow consumer were dropped and counted.
    let dropped: u64 = line
        .split("dropped_qos0=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("dropped_qos0 in {line}"));
    assert!(dropped > 0, "QoS 0 drops counted: {line}");
}

#[tokio::test]
async fn a_client_that_acknowledges_nothing_is_disconnected_with_0x97_and_its_will_published() {
    let broker = TestBroker::start(|c| {
        c.mqtt.max_inflight = 4;
        c.slow_consumer.timeout = Duration::from_millis(300);
        c.slow_consumer.disconnect_after = Duration::from_millis(300);
    })
    .await;
    let mut watcher = TestClient::connect(broker.addr(), connect_v311("will-watcher")).await;
    watcher.send(subscribe(1, "sc/will", 0)).await;
    watcher.expect(suback(1, &[0])).await;
    let connect = with_will(connect_v5("never-acks"), "sc/will", "gone", 0, false);
    let mut sub = TestClient::connect(broker.addr(), connect).await;
    sub.send(subscribe(1, "sc/ack", 1)).await;
    sub.expect(suback(1, &[1])).await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v311("sc-pub")).await;
    for id in 1..=20 {
        publisher.send(publish("sc/ack", 1, id, "m")).await;
    }
    // It reads its in-flight window and acknowledges none: 16 wait for it, none is taken.
    for _ in 0..4 {
        sub.recv_publish().await;
    }
    sub.set_timeout(Duration::from_secs(3));
    // An administratively set limit was exceeded: 0x97 Quota exceeded (MQTT 5.0 3.14.2.1).
    sub.expect_closed_with(DisconnectReason::QuotaExceeded)
        .await;
    // Not a normal disconnect: the will is published [MQTT-3.1.2-8].
    assert_eq!(watcher.recv_publish().await.payload.as_ref(), b"gone");
}
