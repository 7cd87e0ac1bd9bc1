//! The hostile-input suite: hand-encoded malformed, out-of-order and oversized packets sent to a
//! real `vane serve` process, each case asserting the exact answer the spec names (the v5
//! DISCONNECT or CONNACK reason code, the v3 return code, or a close without a word) and each
//! followed by a QoS 1 round trip between two well-behaved clients on the same broker and a check
//! that the process is still running: a hostile client must never panic, hang or harm others.
//!
//! The broker runs with small limits so the limit cases are cheap to hit (see [`CONFIG`]).
//! Clause numbers are MQTT 5.0's for v5 cases and MQTT 3.1.1's for v3 cases.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use test_support::process::{ServeOptions, TempDir, VaneProcess};
use test_support::vane_proto::{Packet, ProtocolVersion, PubAck, QoS};
use test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VANE: &str = env!("CARGO_BIN_EXE_vane");

/// The suite's broker limits: a 4 KiB maximum packet size, 1 s to send CONNECT, a Receive
/// Maximum of 2 QoS 2 messages, 4 topic aliases and client ids of at most 64 bytes.
const CONFIG: &str = r#"
[mqtt]
max_packet_size = "4KiB"
connect_timeout = "1s"
receive_maximum = 2
topic_alias_maximum = 4
max_client_id_len = 64
"#;

/// Longest a case may take before it counts as a hang.
const CASE_DEADLINE: Duration = Duration::from_secs(15);

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

// ---------------------------------------------------------------------------------------------
// Hand encoding
// ---------------------------------------------------------------------------------------------

/// A variable byte integer in its shortest form.
fn var_int(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

/// A packet: first byte, remaining length, body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(var_int(body.len()));
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
fn s(data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

/// A v5 property block: its length, then the properties.
fn props(p: &[u8]) -> Vec<u8> {
    let mut out = var_int(p.len());
    out.extend_from_slice(p);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// An MQTT 3.1.1 CONNECT: `flags`, keep alive 60, then `payload` (client id first).
fn connect311(flags: u8, payload: &[u8]) -> Vec<u8> {
    frame(0x10, &cat(&[&s(b"MQTT"), &[4, flags, 0, 60], payload]))
}

/// An MQTT 5.0 CONNECT: `flags`, keep alive 60, `properties`, then `payload`.
fn connect5(flags: u8, properties: &[u8], payload: &[u8]) -> Vec<u8> {
    frame(
        0x10,
        &cat(&[&s(b"MQTT"), &[5, flags, 0, 60], &props(properties), payload]),
    )
}

/// A client id field that no other case uses.
fn id(prefix: &str) -> Vec<u8> {
    s(unique_id(prefix).as_bytes())
}

/// An MQTT 3.1.1 PUBLISH with `first` byte, `topic`, optional packet id and payload.
fn publish311(first: u8, topic: &[u8], packet_id: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let pid = packet_id
        .map(|p| p.to_be_bytes().to_vec())
        .unwrap_or_default();
    frame(first, &cat(&[&s(topic), &pid, payload]))
}

/// An MQTT 5.0 PUBLISH with `first` byte, `topic`, optional packet id, properties and payload.
fn publish5(
    first: u8,
    topic: &[u8],
    packet_id: Option<u16>,
    properties: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let pid = packet_id
        .map(|p| p.to_be_bytes().to_vec())
        .unwrap_or_default();
    frame(first, &cat(&[&s(topic), &pid, &props(properties), payload]))
}

/// An MQTT 3.1.1 SUBSCRIBE (packet id 1) of `filters`, each followed by its options byte.
fn subscribe311(filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut body = vec![0, 1];
    for (filter, options) in filters {
        body.extend(s(filter));
        body.push(*options);
    }
    frame(0x82, &body)
}

/// An MQTT 5.0 SUBSCRIBE (packet id 1) with `properties` and `filters`.
fn subscribe5(properties: &[u8], filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut body = vec![0, 1];
    body.extend(props(properties));
    for (filter, options) in filters {
        body.extend(s(filter));
        body.push(*options);
    }
    frame(0x82, &body)
}

// ---------------------------------------------------------------------------------------------
// Table-driven cases
// ---------------------------------------------------------------------------------------------

/// Where a case's bytes go.
#[derive(Clone, Copy)]
enum Start {
    /// On a fresh connection, as its first bytes.
    Fresh(ProtocolVersion),
    /// After a successful CONNECT of this version.
    Connected(ProtocolVersion),
}

/// What the broker must do.
#[derive(Clone)]
enum Expect {
    /// Close the connection without sending anything (v3 violations, bad CONNECTs).
    Closed,
    /// Send an MQTT 5.0 DISCONNECT with this reason code, then close.
    Disconnect(u8),
    /// Send CONNACK with this code (the v5 reason code, or the v3 return code), then close.
    ConnAckThenClose(u8),
    /// Answer with exactly these bytes and keep the connection open (a PINGREQ still works).
    Reply(Vec<u8>),
    /// Say nothing and keep the connection open (a PINGREQ gets PINGRESP and nothing else).
    Ignored,
}

type CaseFn = fn(SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send>>;

enum Run {
    Raw {
        start: Start,
        bytes: Vec<u8>,
        expect: Expect,
    },
    Custom(CaseFn),
}

struct Case {
    /// The normative statement or limit the case checks, and what it sends.
    name: String,
    run: Run,
}

fn raw(name: &str, start: Start, bytes: Vec<u8>, expect: Expect) -> Case {
    Case {
        name: name.to_owned(),
        run: Run::Raw {
            start,
            bytes,
            expect,
        },
    }
}

fn custom(name: &str, f: CaseFn) -> Case {
    Case {
        name: name.to_owned(),
        run: Run::Custom(f),
    }
}

async fn run_raw(addr: SocketAddr, start: Start, bytes: Vec<u8>, expect: Expect) {
    let (version, connected) = match start {
        Start::Fresh(v) => (v, false),
        Start::Connected(v) => (v, true),
    };
    let mut c = if connected {
        let connect = match version {
            ProtocolVersion::V5 => connect_v5(&unique_id("hostile")),
            ProtocolVersion::V3_1 => connect_v31(&unique_id("hostile")),
            _ => connect_v311(&unique_id("hostile")),
        };
        TestClient::connect(addr, connect).await
    } else {
        TestClient::open(addr, version).await
    };
    // The broker may close before it has read everything: a failed write is no failure here,
    // what it answers is.
    let _ = c.try_send_raw(&bytes).await;
    match expect {
        Expect::Closed => assert_eq!(c.expect_closed().await, None, "closed without a word"),
        Expect::Disconnect(code) => {
            let d = c.expect_closed().await;
            assert_eq!(
                d.map(|d| d.reason.as_u8()),
                Some(code),
                "DISCONNECT reason code before the close"
            );
        }
        Expect::ConnAckThenClose(code) => {
            match c.recv().await {
                Some(Packet::ConnAck(ack)) => {
                    let got = if version.is_v5() {
                        ack.reason.as_u8()
                    } else {
                        ack.reason.v3_return_code()
                    };
                    assert_eq!(got, code, "CONNACK code: {ack:?}");
                }
                other => panic!("expected CONNACK {code:#04x}, got {other:?}"),
            }
            assert_eq!(c.expect_closed().await, None, "closed after the CONNACK");
        }
        Expect::Reply(expected) => {
            let got = c.recv().await.expect("an answer, not a close");
            assert_eq!(
                &encode(version, &got)[..],
                &expected[..],
                "answer bytes ({got:?})"
            );
            still_serves(&mut c).await;
        }
        Expect::Ignored => still_serves(&mut c).await,
    }
}

/// The connection is open and answers PINGREQ with PINGRESP, with nothing before it.
async fn still_serves(c: &mut TestClient) {
    c.send(pingreq()).await;
    c.expect(Packet::PingResp).await;
}

// ---------------------------------------------------------------------------------------------
// Custom cases
// ---------------------------------------------------------------------------------------------

/// [MQTT-3.3.4-7] / 3.3.4: more unacknowledged QoS 2 PUBLISHes than the broker's Receive
/// Maximum (2 here) gets DISCONNECT 0x93.
fn receive_maximum_exceeded(addr: SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut c = TestClient::connect(addr, connect_v5(&unique_id("recvmax"))).await;
        for packet_id in 1..=3u16 {
            c.send_raw(&publish5(0x34, b"hostile/q2", Some(packet_id), &[], b"x"))
                .await;
        }
        for packet_id in 1..=2u16 {
            match c.recv().await {
                Some(Packet::PubRec(r)) => assert_eq!(r.packet_id, pid(packet_id)),
                other => panic!("expected PUBREC {packet_id}, got {other:?}"),
            }
        }
        let d = c.expect_closed().await;
        assert_eq!(d.map(|d| d.reason.as_u8()), Some(0x93));
    })
}

/// Limit mqtt.connect_timeout (slowloris guard): a connection that sends nothing is closed
/// without a word once the timeout (1 s here) passes.
fn silent_connection_is_closed(addr: SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut c = TestClient::open(addr, V311).await;
        c.set_timeout(Duration::from_secs(5));
        assert_eq!(c.expect_closed().await, None);
    })
}

/// Limit mqtt.connect_timeout: a CONNECT sent a few bytes and then left unfinished does not
/// hold the connection open past the timeout.
fn half_connect_is_closed(addr: SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut c = TestClient::open(addr, V311).await;
        c.set_timeout(Duration::from_secs(5));
        c.send_raw(&[0x10, 0x40, 0x00, 0x04, b'M']).await;
        assert_eq!(c.expect_closed().await, None);
    })
}

/// Limit mqtt.max_packet_size: a PUBLISH whose remaining length claims 256 MB is refused from
/// its fixed header (DISCONNECT 0x95 Packet too large), while the client is still trickling
/// its body one byte at a time; the broker neither waits for nor buffers the rest.
fn huge_length_then_trickle(addr: SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut c = TestClient::connect(addr, connect_v5(&unique_id("trickle"))).await;
        c.send_raw(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await;
        let mut disconnect = None;
        for _ in 0..100 {
            if c.try_send_raw(&[0x41]).await.is_err() {
                break;
            }
            match c.next_event(Duration::from_millis(20)).await {
                Received::Timeout => {}
                Received::Packet(Packet::Disconnect(d)) => disconnect = Some(d.reason.as_u8()),
                Received::Closed => break,
                Received::Packet(p) => panic!("unexpected {p:?}"),
                Received::Malformed(e) => panic!("malformed answer: {e}"),
                Received::Error(e) => panic!("read error: {e}"),
            }
        }
        assert_eq!(disconnect, Some(0x95), "DISCONNECT Packet too large");
        assert_eq!(c.expect_closed().await, None, "then the close");
    })
}

/// [MQTT-2.1.4] a packet cut short by the end of the stream: the client half-closes after half
/// a PUBLISH; the broker closes its side too (an MQTT 3.1.1 client gets no packet).
fn truncated_then_eof(addr: SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let connect = encode(
            V311,
            &Packet::Connect(Box::new(connect_v311(&unique_id("eof")))),
        );
        stream.write_all(&connect).await.expect("write CONNECT");
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).await.expect("CONNACK");
        assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
        stream
            .write_all(&[0x30, 0x10, 0x00, 0x03, b'a'])
            .await
            .expect("write half a PUBLISH");
        stream.shutdown().await.expect("half-close");
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("closed within 5 s")
            .expect("read to the end");
        assert_eq!(rest, Vec::<u8>::new(), "nothing but the close");
    })
}

/// Garbage: 64 KiB of pseudo-random bytes instead of a CONNECT. Whatever
/// the first bytes decode to, it is not a CONNECT [MQTT-3.1.0-1], so the broker closes without
/// a word.
fn garbage_instead_of_connect(addr: SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut c = TestClient::open(addr, V311).await;
        let mut x: u32 = 0x1234_5678;
        let garbage: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Never 0x10: not even by chance a CONNECT header.
                (x as u8) & 0xEF
            })
            .collect();
        let _ = c.try_send_raw(&garbage).await;
        assert_eq!(c.expect_closed().await, None);
    })
}

/// [MQTT-3.1.2-4] with [MQTT-4.13]: after a session's client is closed for a protocol error,
/// its QoS 1 state is intact for a well-behaved reconnect: a message that arrived before the
/// error is delivered once the same client id reconnects (not harmed by its own bad packet).
fn error_does_not_lose_queued_messages(
    addr: SocketAddr,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let client_id = unique_id("keeps");
        let topic = format!("hostile/keeps/{client_id}");
        let mut c = TestClient::connect(addr, connect_v5_persistent(&client_id)).await;
        c.send(subscribe(1, &topic, 1)).await;
        c.expect(suback(1, &[1])).await;
        // QoS 3 PUBLISH: malformed [MQTT-3.3.1-4].
        c.send_raw(&publish5(0x36, b"a", Some(1), &[], b"")).await;
        let d = c.expect_closed().await;
        assert_eq!(d.map(|d| d.reason.as_u8()), Some(0x81));
        let mut p = TestClient::connect(addr, connect_v311(&unique_id("keeps-pub"))).await;
        p.send(publish(&topic, 1, 1, "kept")).await;
        p.expect(puback(1)).await;
        let (mut again, ack) =
            TestClient::connect_with_ack(addr, connect_v5_persistent(&client_id)).await;
        assert!(ack.session_present);
        let m = again.recv_publish().await;
        assert_eq!(&m.payload[..], b"kept");
        again
            .send(Packet::PubAck(PubAck::new(m.packet_id.expect("QoS 1"))))
            .await;
        again.disconnect().await;
        p.disconnect().await;
    })
}

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

fn cases() -> Vec<Case> {
    use Expect::*;
    use Start::*;
    let v5_connect =
        |flags: u8, properties: &[u8], payload: &[u8]| connect5(flags, properties, payload);
    vec![
        // ---- Before and during CONNECT ----
        raw(
            "[MQTT-3.1.0-1] the first packet is a SUBSCRIBE, not CONNECT",
            Fresh(V311),
            subscribe311(&[(b"a", 0)]),
            Closed,
        ),
        raw(
            "[MQTT-3.1.0-1] the first packet is a PUBLISH, not CONNECT (v5 client)",
            Fresh(V5),
            publish5(0x30, b"a", None, &[], b"x"),
            Closed,
        ),
        raw(
            "[MQTT-3.1.2-1] protocol name MQTX",
            Fresh(V311),
            frame(0x10, &cat(&[&s(b"MQTX"), &[4, 0x02, 0, 60], &id("name")])),
            Closed,
        ),
        raw(
            "[MQTT-3.1.2-2] protocol level 6: CONNACK 0x01 in the 3.1.1 layout",
            Fresh(V311),
            frame(0x10, &cat(&[&s(b"MQTT"), &[6, 0x02, 0, 60], &id("level")])),
            ConnAckThenClose(0x01),
        ),
        raw(
            "[MQTT-3.1.2-3] reserved CONNECT flag set",
            Fresh(V311),
            connect311(0x03, &id("reserved")),
            Closed,
        ),
        raw(
            "[MQTT-3.1.2-3] reserved CONNECT flag set (v5)",
            Fresh(V5),
            v5_connect(0x03, &[], &id("reserved5")),
            Closed,
        ),
        raw(
            "[MQTT-3.1.2-13] will QoS 1 without the will flag",
            Fresh(V311),
            connect311(0x0A, &id("willqos")),
            Closed,
        ),
        raw(
            "[MQTT-3.1.2-15] will retain without the will flag (v5)",
            Fresh(V5),
            v5_connect(0x22, &[], &id("willretain")),
            Closed,
        ),
        raw(
            "[MQTT-3.1.2-14] will QoS 3",
            Fresh(V311),
            connect311(0x1E, &cat(&[&id("willqos3"), &s(b"w"), &s(b"x")])),
            Closed,
        ),
        raw(
            "[MQTT-3.1.2-22] password flag without user name flag",
            Fresh(V311),
            connect311(0x42, &cat(&[&id("pw"), &s(b"secret")])),
            Closed,
        ),
        raw(
            "[MQTT-3.1.3-11] will topic with a wildcard",
            Fresh(V311),
            connect311(0x06, &cat(&[&id("willtopic"), &s(b"w/#"), &s(b"x")])),
            Closed,
        ),
        raw(
            "[MQTT-1.5.3-1] client id that is not UTF-8 (0xC3 0x28)",
            Fresh(V311),
            connect311(0x02, &s(&[b'c', 0xC3, 0x28])),
            Closed,
        ),
        raw(
            "[MQTT-1.5.4-1] client id holding a UTF-16 surrogate (ED A0 80)",
            Fresh(V5),
            v5_connect(0x02, &[], &s(&[b'c', 0xED, 0xA0, 0x80])),
            Closed,
        ),
        raw(
            "[MQTT-1.5.4-2] client id holding U+0000",
            Fresh(V5),
            v5_connect(0x02, &[], &s(b"c\0d")),
            Closed,
        ),
        raw(
            "[MQTT-3.1.3-8] empty client id with clean session 0: CONNACK 0x02",
            Fresh(V311),
            connect311(0x00, &s(b"")),
            ConnAckThenClose(0x02),
        ),
        raw(
            "limit mqtt.max_client_id_len (64): 65-byte client id, CONNACK 0x02 (3.1.1)",
            Fresh(V311),
            connect311(0x02, &s(&[b'k'; 65])),
            ConnAckThenClose(0x02),
        ),
        raw(
            "limit mqtt.max_client_id_len (64): 65-byte client id, CONNACK 0x85 (v5)",
            Fresh(V5),
            v5_connect(0x02, &[], &s(&[b'k'; 65])),
            ConnAckThenClose(0x85),
        ),
        raw(
            "3.1.2.11.3 Receive Maximum 0 in CONNECT is a Protocol Error",
            Fresh(V5),
            v5_connect(0x02, &[0x21, 0x00, 0x00], &id("rm0")),
            Closed,
        ),
        raw(
            "3.1.2.11.4 Maximum Packet Size 0 in CONNECT is a Protocol Error",
            Fresh(V5),
            v5_connect(0x02, &[0x27, 0, 0, 0, 0], &id("mps0")),
            Closed,
        ),
        raw(
            "2.2.2.2 unknown property identifier 0x7F in CONNECT: Malformed",
            Fresh(V5),
            v5_connect(0x02, &[0x7F, 0x00], &id("unknownprop")),
            Closed,
        ),
        raw(
            "3.1.2.11.2 Session Expiry Interval twice in CONNECT is a Protocol Error",
            Fresh(V5),
            v5_connect(0x02, &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2], &id("dupprop")),
            Closed,
        ),
        raw(
            "2.2.2.2 Topic Alias (a PUBLISH property) in CONNECT: Malformed",
            Fresh(V5),
            v5_connect(0x02, &[0x23, 0x00, 0x01], &id("aliasprop")),
            Closed,
        ),
        raw(
            "3.1.2.11.7 Request Problem Information 2 is a Protocol Error",
            Fresh(V5),
            v5_connect(0x02, &[0x17, 0x02], &id("rpi2")),
            Closed,
        ),
        raw(
            "3.1.2.11.10 Authentication Data without an Authentication Method: Protocol Error",
            Fresh(V5),
            v5_connect(0x02, &cat(&[&[0x16], &s(b"data")]), &id("authdata")),
            Closed,
        ),
        raw(
            "3.1.3.2 Subscription Identifier in the will properties: Malformed",
            Fresh(V5),
            v5_connect(
                0x06,
                &[],
                &cat(&[&id("willprop"), &props(&[0x0B, 0x01]), &s(b"w"), &s(b"x")]),
            ),
            Closed,
        ),
        raw(
            "[MQTT-1.5.4-1] will topic that is not UTF-8 (v5)",
            Fresh(V5),
            v5_connect(
                0x06,
                &[],
                &cat(&[&id("willutf8"), &props(&[]), &s(&[0xC0, 0xAF]), &s(b"x")]),
            ),
            Closed,
        ),
        raw(
            "[MQTT-1.5.3-1] user name that is not UTF-8 (3.1.1)",
            Fresh(V311),
            connect311(0x82, &cat(&[&id("user"), &s(&[b'u', 0xF8, 0x88])])),
            Closed,
        ),
        raw(
            "[MQTT-1.5.5] property length running past the packet: Malformed",
            Fresh(V5),
            frame(
                0x10,
                &cat(&[&s(b"MQTT"), &[5, 0x02, 0, 60, 0x40, 0x11, 0x00]]),
            ),
            Closed,
        ),
        raw(
            "[MQTT-1.5.5] remaining length of 5 bytes in CONNECT",
            Fresh(V311),
            vec![0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00],
            Closed,
        ),
        raw(
            "limit mqtt.max_packet_size (4 KiB): CONNECT claiming 256 MB",
            Fresh(V5),
            vec![0x10, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x04],
            Closed,
        ),
        custom(
            "limit mqtt.connect_timeout (1 s): nothing sent after the TCP connect",
            silent_connection_is_closed,
        ),
        custom(
            "limit mqtt.connect_timeout (1 s): a CONNECT left unfinished",
            half_connect_is_closed,
        ),
        custom(
            "[MQTT-3.1.0-1] 64 KiB of garbage instead of CONNECT",
            garbage_instead_of_connect,
        ),
        // ---- After CONNECT: ordering and packets a client may not send ----
        raw(
            "[MQTT-3.1.0-2] second CONNECT: DISCONNECT 0x82",
            Connected(V5),
            v5_connect(0x02, &[], &id("second")),
            Disconnect(0x82),
        ),
        raw(
            "[MQTT-3.1.0-2] second CONNECT (3.1.1): closed",
            Connected(V311),
            connect311(0x02, &id("second311")),
            Closed,
        ),
        raw(
            "2.1.2 CONNACK flows server to client only: from a client, DISCONNECT 0x82",
            Connected(V5),
            vec![0x20, 0x03, 0x00, 0x00, 0x00],
            Disconnect(0x82),
        ),
        raw(
            "2.1.2 SUBACK flows server to client only: from a client, DISCONNECT 0x82",
            Connected(V5),
            vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x00],
            Disconnect(0x82),
        ),
        raw(
            "2.2.1 PINGRESP flows server to client only: from a 3.1.1 client, closed",
            Connected(V311),
            vec![0xD0, 0x00],
            Closed,
        ),
        raw(
            "[MQTT-2.2.1] reserved packet type 0: DISCONNECT 0x81",
            Connected(V5),
            vec![0x00, 0x00],
            Disconnect(0x81),
        ),
        raw(
            "[MQTT-2.2.1] packet type 15 (AUTH) in 3.1.1 is reserved: closed",
            Connected(V311),
            vec![0xF0, 0x00],
            Closed,
        ),
        raw(
            "4.12 AUTH on a connection whose CONNECT had no Authentication Method: 0x82",
            Connected(V5),
            frame(
                0xF0,
                &cat(&[&[0x19], &props(&cat(&[&[0x15], &s(b"SCRAM-SHA-1")]))]),
            ),
            Disconnect(0x82),
        ),
        // ---- Fixed header flags [MQTT-2.2.2-2] ----
        raw(
            "[MQTT-3.6.1-1] PUBREL with flags 0000 (3.1.1): closed",
            Connected(V311),
            vec![0x60, 0x02, 0x00, 0x01],
            Closed,
        ),
        raw(
            "[MQTT-3.8.1-1] SUBSCRIBE with flags 0000: DISCONNECT 0x81",
            Connected(V5),
            frame(0x80, &cat(&[&[0, 1, 0], &s(b"a"), &[0]])),
            Disconnect(0x81),
        ),
        raw(
            "[MQTT-3.10.1-1] UNSUBSCRIBE with flags 0000 (3.1.1): closed",
            Connected(V311),
            frame(0xA0, &cat(&[&[0, 1], &s(b"a")])),
            Closed,
        ),
        raw(
            "[MQTT-2.2.2-2] PINGREQ with flags 0001: DISCONNECT 0x81",
            Connected(V5),
            vec![0xC1, 0x00],
            Disconnect(0x81),
        ),
        raw(
            "[MQTT-2.2.2-2] PUBACK with flags 0010 (3.1.1): closed",
            Connected(V311),
            vec![0x42, 0x02, 0x00, 0x01],
            Closed,
        ),
        raw(
            "[MQTT-2.2.2-2] DISCONNECT with flags 0001: DISCONNECT 0x81",
            Connected(V5),
            vec![0xE1, 0x00],
            Disconnect(0x81),
        ),
        // ---- PUBLISH ----
        raw(
            "[MQTT-3.3.1-4] PUBLISH QoS 3: DISCONNECT 0x81",
            Connected(V5),
            publish5(0x36, b"a", Some(1), &[], b"x"),
            Disconnect(0x81),
        ),
        raw(
            "[MQTT-3.3.1-2] QoS 0 PUBLISH with DUP (3.1.1): closed",
            Connected(V311),
            publish311(0x38, b"a", None, b"x"),
            Closed,
        ),
        raw(
            "[MQTT-2.3.1-1] QoS 1 PUBLISH with packet id 0: DISCONNECT 0x81",
            Connected(V5),
            publish5(0x32, b"a", Some(0), &[], b"x"),
            Disconnect(0x81),
        ),
        raw(
            "[MQTT-3.3.2-2] PUBLISH topic with '+': DISCONNECT 0x90",
            Connected(V5),
            publish5(0x30, b"a/+/b", None, &[], b"x"),
            Disconnect(0x90),
        ),
        raw(
            "[MQTT-3.3.2-2] PUBLISH topic with '#' (3.1.1): closed",
            Connected(V311),
            publish311(0x32, b"a/#", Some(1), b"x"),
            Closed,
        ),
        raw(
            "[MQTT-3.3.2-1] 3.3.2.1 empty topic without a Topic Alias: DISCONNECT 0x82",
            Connected(V5),
            publish5(0x30, b"", None, &[], b"x"),
            Disconnect(0x82),
        ),
        raw(
            "[MQTT-4.7.3-1] empty topic (3.1.1): closed",
            Connected(V311),
            publish311(0x30, b"", None, b"x"),
            Closed,
        ),
        raw(
            "[MQTT-1.5.3-1] PUBLISH topic not UTF-8 (0xFF): DISCONNECT 0x81",
            Connected(V5),
            publish5(0x30, &[b'a', 0xFF], None, &[], b"x"),
            Disconnect(0x81),
        ),
        raw(
            "[MQTT-1.5.3-1] PUBLISH topic holding a surrogate (ED B0 80, 3.1.1): closed",
            Connected(V311),
            publish311(0x30, &[b'a', 0xED, 0xB0, 0x80], None, b"x"),
            Closed,
        ),
        raw(
            "[MQTT-1.5.3-2] PUBLISH topic holding U+0000: DISCONNECT 0x81",
            Connected(V5),
            publish5(0x30, b"a\0b", None, &[], b"x"),
            Disconnect(0x81),
        ),
        raw(
            "[MQTT-3.3.2-8] Topic Alias 0: DISCONNECT 0x94",
            Connected(V5),
            publish5(0x30, b"a", None, &[0x23, 0x00, 0x00], b"x"),
            Disconnect(0x94),
        ),
        raw(
            "[MQTT-3.3.2-9] limit mqtt.topic_alias_maximum (4): Topic Alias 5, DISCONNECT 0x94",
            Connected(V5),
            publish5(0x30, b"a", None, &[0x23, 0x00, 0x05], b"x"),
            Disconnect(0x94),
        ),
        raw(
            "3.3.2.3.4 empty topic with a Topic Alias never set: DISCONNECT 0x82",
            Connected(V5),
            publish5(0x30, b"", None, &[0x23, 0x00, 0x02], b"x"),
            Disconnect(0x82),
        ),
        raw(
            "[MQTT-3.3.4-6] PUBLISH from a client with a Subscription Identifier: 0x82",
            Connected(V5),
            publish5(0x30, b"a", None, &[0x0B, 0x01], b"x"),
            Disconnect(0x82),
        ),
        raw(
            "3.3.2.3.2 Payload Format Indicator twice is a Protocol Error: 0x82",
            Connected(V5),
            publish5(0x30, b"a", None, &[0x01, 0x00, 0x01, 0x00], b"x"),
            Disconnect(0x82),
        ),
        raw(
            "3.3.2.3.2 Payload Format Indicator 2 is a Protocol Error: 0x82",
            Connected(V5),
            publish5(0x30, b"a", None, &[0x01, 0x02], b"x"),
            Disconnect(0x82),
        ),
        raw(
            "[MQTT-3.3.2-14] Response Topic with a wildcard: DISCONNECT 0x82",
            Connected(V5),
            publish5(0x30, b"a", None, &cat(&[&[0x08], &s(b"r/#")]), b"x"),
            Disconnect(0x82),
        ),
        raw(
            "2.2.2.2 Session Expiry Interval (a CONNECT property) in PUBLISH: 0x81",
            Connected(V5),
            publish5(0x30, b"a", None, &[0x11, 0, 0, 0, 1], b"x"),
            Disconnect(0x81),
        ),
        raw(
            "limit mqtt.max_packet_size (4 KiB): 5000-byte PUBLISH, DISCONNECT 0x95",
            Connected(V5),
            publish5(0x30, b"big", None, &[], &[0u8; 5000]),
            Disconnect(0x95),
        ),
        raw(
            "limit mqtt.max_packet_size (4 KiB): 5000-byte PUBLISH (3.1.1): closed",
            Connected(V311),
            publish311(0x30, b"big", None, &[0u8; 5000]),
            Closed,
        ),
        custom(
            "limit mqtt.max_packet_size: 256 MB remaining length, then a trickle: 0x95",
            huge_length_then_trickle,
        ),
        raw(
            "[MQTT-1.5.5] remaining length of 5 bytes after CONNECT: DISCONNECT 0x81",
            Connected(V5),
            vec![0x30, 0x80, 0x80, 0x80, 0x80, 0x01],
            Disconnect(0x81),
        ),
        raw(
            "[MQTT-1.5.5-1] non-minimal remaining length (PINGREQ 0x80 0x00): 0x81",
            Connected(V5),
            vec![0xC0, 0x80, 0x00],
            Disconnect(0x81),
        ),
        raw(
            "2.1.4 PINGREQ with a body byte (remaining length 1): DISCONNECT 0x81",
            Connected(V5),
            vec![0xC0, 0x01, 0x00],
            Disconnect(0x81),
        ),
        custom(
            "[MQTT-2.1.4] half a PUBLISH then end of stream",
            truncated_then_eof,
        ),
        custom(
            "[MQTT-3.3.4-7] limit mqtt.receive_maximum (2): third QoS 2 PUBLISH, 0x93",
            receive_maximum_exceeded,
        ),
        custom(
            "4.13 a protocol error does not lose the session's queued QoS 1 message",
            error_does_not_lose_queued_messages,
        ),
        // ---- Acknowledgements out of order ----
        raw(
            "4.3.3 PUBREL for an unknown packet id: PUBCOMP 0x92, connection stays",
            Connected(V5),
            vec![0x62, 0x02, 0x00, 0x07],
            Reply(vec![0x70, 0x03, 0x00, 0x07, 0x92]),
        ),
        raw(
            "4.3.3 PUBREL for an unknown packet id (3.1.1): PUBCOMP, connection stays",
            Connected(V311),
            vec![0x62, 0x02, 0x00, 0x07],
            Reply(vec![0x70, 0x02, 0x00, 0x07]),
        ),
        raw(
            "4.3.2 PUBACK for a packet id never sent: ignored, connection stays",
            Connected(V5),
            vec![0x40, 0x02, 0x00, 0x09],
            Ignored,
        ),
        raw(
            "4.3.3 PUBCOMP for a packet id never sent: ignored, connection stays",
            Connected(V311),
            vec![0x70, 0x02, 0x00, 0x09],
            Ignored,
        ),
        raw(
            "3.4.2.1 PUBACK reason code 0x01 is not a PUBACK reason: DISCONNECT 0x81",
            Connected(V5),
            vec![0x40, 0x03, 0x00, 0x09, 0x01],
            Disconnect(0x81),
        ),
        raw(
            "3.14.2.1 DISCONNECT reason code 0x03 is not defined: DISCONNECT 0x81",
            Connected(V5),
            vec![0xE0, 0x01, 0x03],
            Disconnect(0x81),
        ),
        // ---- SUBSCRIBE and UNSUBSCRIBE ----
        raw(
            "[MQTT-3.8.3-2] SUBSCRIBE with no topic filter is a Protocol Error: 0x82",
            Connected(V5),
            subscribe5(&[], &[]),
            Disconnect(0x82),
        ),
        raw(
            "[MQTT-3.8.3-3] SUBSCRIBE with no topic filter (3.1.1): closed",
            Connected(V311),
            subscribe311(&[]),
            Closed,
        ),
        raw(
            "[MQTT-3.8.3-5] reserved subscription option bits: DISCONNECT 0x81",
            Connected(V5),
            subscribe5(&[], &[(b"a", 0x40)]),
            Disconnect(0x81),
        ),
        raw(
            "[MQTT-3-8.3-4] SUBSCRIBE requested QoS 3 (3.1.1): closed",
            Connected(V311),
            subscribe311(&[(b"a", 0x03)]),
            Closed,
        ),
        raw(
            "3.8.3.1 Maximum QoS 3 in SUBSCRIBE is a Protocol Error: 0x82",
            Connected(V5),
            subscribe5(&[], &[(b"a", 0x03)]),
            Disconnect(0x82),
        ),
        raw(
            "3.8.3.1 Retain Handling 3 is a Protocol Error: 0x82",
            Connected(V5),
            subscribe5(&[], &[(b"a", 0x30)]),
            Disconnect(0x82),
        ),
        raw(
            "3.8.2.1.2 Subscription Identifier 0 is a Protocol Error: 0x82",
            Connected(V5),
            subscribe5(&[0x0B, 0x00], &[(b"a", 0)]),
            Disconnect(0x82),
        ),
        raw(
            "[MQTT-3.8.3-4] No Local on a shared subscription: 0x82",
            Connected(V5),
            subscribe5(&[], &[(b"$share/g/a", 0x04)]),
            Disconnect(0x82),
        ),
        raw(
            "[MQTT-2.3.1-1] SUBSCRIBE without a packet identifier: DISCONNECT 0x81",
            Connected(V5),
            vec![0x82, 0x01, 0x00],
            Disconnect(0x81),
        ),
        raw(
            "[MQTT-4.7.1-1] topic filter a/#/b (3.1.1): SUBACK 0x80, connection stays",
            Connected(V311),
            subscribe311(&[(b"a/#/b", 0)]),
            Reply(vec![0x90, 0x03, 0x00, 0x01, 0x80]),
        ),
        raw(
            "[MQTT-3.10.3-2] UNSUBSCRIBE with no topic filter is a Protocol Error: 0x82",
            Connected(V5),
            frame(0xA2, &[0x00, 0x01, 0x00]),
            Disconnect(0x82),
        ),
        raw(
            "2.2.2.2 Subscription Identifier (not allowed in UNSUBSCRIBE): DISCONNECT 0x81",
            Connected(V5),
            frame(
                0xA2,
                &cat(&[&[0x00, 0x01], &props(&[0x0B, 0x01]), &s(b"a")]),
            ),
            Disconnect(0x81),
        ),
        raw(
            "[MQTT-1.5.5] PUBACK property length past the packet end: DISCONNECT 0x81",
            Connected(V5),
            vec![0x40, 0x04, 0x00, 0x09, 0x00, 0x05],
            Disconnect(0x81),
        ),
        raw(
            "[MQTT-3.10.3-2] UNSUBSCRIBE with no topic filter (3.1.1): closed",
            Connected(V311),
            frame(0xA2, &[0x00, 0x01]),
            Closed,
        ),
    ]
}

/// Two well-behaved clients on the broker: a v5 subscriber at QoS 1 and a 3.1.1 publisher. The
/// publisher's QoS 1 message gets its PUBACK and reaches the subscriber at QoS 1.
async fn healthy_round_trip(addr: SocketAddr) {
    let topic = format!("hostile/health/{}", unique_id("t"));
    let mut sub = TestClient::connect(addr, connect_v5(&unique_id("health-sub"))).await;
    sub.send(subscribe(1, &topic, 1)).await;
    sub.expect(suback(1, &[1])).await;
    let mut publisher = TestClient::connect(addr, connect_v311(&unique_id("health-pub"))).await;
    publisher.send(publish(&topic, 1, 1, "still here")).await;
    publisher.expect(puback(1)).await;
    let m = sub.recv_publish().await;
    assert_eq!(
        (m.topic.as_ref(), &m.payload[..], m.qos),
        (topic.as_str(), &b"still here"[..], QoS::AtLeastOnce)
    );
    sub.send(Packet::PubAck(PubAck::new(m.packet_id.expect("QoS 1"))))
        .await;
    publisher.disconnect().await;
    sub.disconnect().await;
}

/// Runs `future` as its own task so a failed assertion is reported, not fatal to the suite,
/// and so a hang is caught by the deadline.
async fn attempt(future: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    match tokio::time::timeout(CASE_DEADLINE, tokio::spawn(future)).await {
        Err(_) => Err(format!("hung for more than {CASE_DEADLINE:?}")),
        Ok(Err(e)) if e.is_panic() => {
            let panic = e.into_panic();
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".to_owned());
            Err(message)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(())) => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_suite() {
    let dir = TempDir::new("hostile");
    let config = dir.path().join("vane.toml");
    test_support::process::write_file(&config, CONFIG);
    let mut options = ServeOptions::new(VANE, dir.path(), "memory");
    options.config = Some(config);
    let mut broker =
        tokio::task::block_in_place(|| VaneProcess::start(options, Duration::from_secs(20)));
    let addr = broker.addr();

    // A client connected through the whole suite: no case may disconnect or disturb it.
    let observer_topic = format!("hostile/observer/{}", unique_id("o"));
    let mut observer = TestClient::connect(addr, connect_v5(&unique_id("observer"))).await;
    observer.send(subscribe(1, &observer_topic, 1)).await;
    observer.expect(suback(1, &[1])).await;

    let cases = cases();
    assert!(cases.len() >= 40, "the suite has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let outcome = match case.run {
            Run::Raw {
                start,
                bytes,
                expect,
            } => attempt(run_raw(addr, start, bytes, expect)).await,
            Run::Custom(f) => attempt(f(addr)).await,
        };
        if let Err(e) = outcome {
            failures.push(format!("{}: {e}", case.name));
        }
        if let Some(status) = broker.wait_exit(Duration::ZERO) {
            panic!(
                "the broker exited ({status}) after case {:?}; failures so far: {failures:#?}\nlog:\n{}",
                case.name,
                broker.log()
            );
        }
        if let Err(e) = attempt(healthy_round_trip(addr)).await {
            failures.push(format!("{}: healthy round trip afterwards: {e}", case.name));
        }
    }
    let mut publisher = TestClient::connect(addr, connect_v311(&unique_id("last-pub"))).await;
    publisher.send(publish(&observer_topic, 1, 1, "end")).await;
    publisher.expect(puback(1)).await;
    let m = observer.recv_publish().await;
    assert_eq!(
        &m.payload[..],
        b"end",
        "the observer got only the last message"
    );
    assert!(
        !broker.log().contains("panicked"),
        "a panic in the broker log:\n{}",
        broker.log()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
