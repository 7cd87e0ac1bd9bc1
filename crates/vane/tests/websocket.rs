//! MQTT over WebSocket (MQTT 5.0 section 6; the same rules in 3.1.1 section 6) against a real
//! broker: rumqttc over ws://, raw tokio-tungstenite clients for the framing and handshake
//! rules, wss:// with a test CA and a client certificate, WebSocket and TCP clients on one
//! broker, and the per-listener admission limits on a WebSocket listener.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, MqttOptions, Packet as RPacket, QoS as RQoS, Transport};
use rustls::pki_types::ServerName;
use test_support::certs::{ca, client_cert, server_cert, Issued};
use test_support::vane_config::{CertIdentity, Config, ListenerConfig, TlsConfig, WebSocketConfig};
use test_support::vane_proto::{ConnAckReason, Packet, ProtocolVersion, PubAck};
use test_support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use vane_server::websocket::WsStream;

mod rumqttc_events;
mod tls_client;

const WAIT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A broker whose only listener is ws:// on path /mqtt, changed by `configure`.
async fn ws_broker(configure: impl FnOnce(&mut Config)) -> TestBroker {
    TestBroker::start(|c| {
        c.listeners[0].websocket = Some(WebSocketConfig::default());
        configure(c);
    })
    .await
}

/// Opens a WebSocket on `stream` to `url`, offering `protocols` (none: no header).
async fn upgrade<S>(
    stream: S,
    url: &str,
    protocols: Option<&str>,
) -> Result<
    (
        WebSocketStream<S>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    WsError,
>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url.into_client_request().expect("valid URL");
    if let Some(p) = protocols {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(p).expect("header value"),
        );
    }
    tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("upgrade answered in time")
}

/// A raw WebSocket to the broker's /mqtt, offering `mqtt`.
async fn raw_ws(addr: SocketAddr) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let (ws, response) = upgrade(tcp, &format!("ws://{addr}/mqtt"), Some("mqtt"))
        .await
        .expect("upgrade accepted");
    // [MQTT-6.0.0-5] the server answers with the subprotocol it selected.
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"mqtt"[..])
    );
    ws
}

/// A TestClient speaking MQTT over a WebSocket to `addr`.
async fn ws_client(addr: SocketAddr, version: ProtocolVersion) -> TestClient {
    TestClient::over(WsStream::new(raw_ws(addr).await), version)
}

/// Connects a TestClient over ws:// and checks the CONNACK is a success.
async fn ws_connect(addr: SocketAddr, connect: test_support::vane_proto::Connect) -> TestClient {
    let mut client = ws_client(addr, connect.protocol).await;
    client.send(Packet::Connect(Box::new(connect))).await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason, ConnAckReason::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client
}

/// The next message from a raw WebSocket: `None` once it is closed (close frame, end of
/// stream or reset).
async fn next_message(ws: &mut WebSocketStream<TcpStream>) -> Option<Message> {
    match tokio::time::timeout(WAIT, ws.next()).await {
        Err(_) => panic!("nothing from the broker within {WAIT:?}"),
        Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => None,
        Ok(Some(Ok(m))) => Some(m),
    }
}

/// Reads binary messages until `expected` packets decoded (MQTT 3.1.1).
async fn read_packets(ws: &mut WebSocketStream<TcpStream>, expected: usize) -> Vec<Packet> {
    let mut decoder = test_support::vane_proto::Decoder::with_version(
        ProtocolVersion::V3_1_1,
        test_support::vane_proto::DEFAULT_MAX_PACKET_SIZE,
    );
    let mut buf = bytes::BytesMut::new();
    let mut packets = Vec::new();
    while packets.len() < expected {
        match next_message(ws).await {
            Some(Message::Binary(data)) => buf.extend_from_slice(&data),
            Some(other) => panic!("expected a binary message, got {other:?}"),
            None => panic!("closed after {packets:?}"),
        }
        while let Some(p) = decoder
            .decode(&mut buf)
            .expect("broker sends valid packets")
        {
            packets.push(p);
        }
    }
    packets
}

/// Waits until the broker closes the raw WebSocket, skipping anything it sends first.
async fn expect_ws_closed(ws: &mut WebSocketStream<TcpStream>) {
    while next_message(ws).await.is_some() {}
}

/// Sends raw bytes on a TCP connection and returns what comes back until the broker closes it
/// (bounded by `WAIT`).
async fn bytes_until_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut got)).await;
    match read {
        Err(_) => panic!("connection still open after {WAIT:?}; got {got:?}"),
        Ok(_) => got,
    }
}

/// A valid upgrade request to /mqtt offering `mqtt`, for clients that speak raw TCP.
fn upgrade_request(addr: SocketAddr) -> String {
    format!(
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
}

fn rumqttc_options(addr: SocketAddr, client_id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, format!("ws://{addr}/mqtt"), addr.port());
    o.set_transport(Transport::Ws);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Runs a rumqttc event loop in a task, forwarding incoming packets.
fn rumqttc_start(
    opts: MqttOptions,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<Result<RPacket, String>>,
) {
    let (client, eventloop) = AsyncClient::new(opts, 64);
    let (rx, _task) = rumqttc_events::spawn(eventloop);
    (client, rx)
}

async fn rumqttc_wait<T>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<RPacket, String>>,
    what: &str,
    mut pick: impl FnMut(&RPacket) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
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

// ---------------------------------------------------------------------------------------------
// A real client over ws://
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rumqttc_publishes_and_subscribes_at_qos_0_1_2_over_ws() {
    let broker = ws_broker(|_| {}).await;
    let addr = broker.addr();
    let (sub, mut sub_rx) = rumqttc_start(rumqttc_options(addr, &unique_id("ws-sub")));
    rumqttc_wait(&mut sub_rx, "CONNACK", |p| {
        matches!(p, RPacket::ConnAck(_)).then_some(())
    })
    .await;
    sub.subscribe("ws/+", RQoS::ExactlyOnce)
        .await
        .expect("subscribe");
    rumqttc_wait(&mut sub_rx, "SUBACK", |p| {
        matches!(p, RPacket::SubAck(_)).then_some(())
    })
    .await;
    let (publisher, mut pub_rx) = rumqttc_start(rumqttc_options(addr, &unique_id("ws-pub")));
    rumqttc_wait(&mut pub_rx, "CONNACK", |p| {
        matches!(p, RPacket::ConnAck(_)).then_some(())
    })
    .await;
    for (topic, qos) in [
        ("ws/0", RQoS::AtMostOnce),
        ("ws/1", RQoS::AtLeastOnce),
        ("ws/2", RQoS::ExactlyOnce),
    ] {
        publisher
            .publish(topic, qos, false, format!("payload {topic}"))
            .await
            .expect("publish");
        let (got_topic, got_qos, payload) = rumqttc_wait(&mut sub_rx, "PUBLISH", |p| match p {
            RPacket::Publish(p) => Some((p.topic.clone(), p.qos, p.payload.clone())),
            _ => None,
        })
        .await;
        assert_eq!(got_topic, topic);
        assert_eq!(got_qos, qos);
        assert_eq!(&payload[..], format!("payload {topic}").as_bytes());
    }
    // The publisher's flows complete: PUBACK for QoS 1, PUBCOMP for QoS 2.
    rumqttc_wait(&mut pub_rx, "PUBACK", |p| {
        matches!(p, RPacket::PubAck(_)).then_some(())
    })
    .await;
    rumqttc_wait(&mut pub_rx, "PUBCOMP", |p| {
        matches!(p, RPacket::PubComp(_)).then_some(())
    })
    .await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Framing rules
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_text_frame_closes_the_connection() {
    // [MQTT-6.0.0-1] a data frame that is not binary: the server closes the connection.
    let broker = ws_broker(|_| {}).await;
    let mut ws = raw_ws(broker.addr()).await;
    let connect = encode(
        ProtocolVersion::V3_1_1,
        &Packet::Connect(Box::new(connect_v311(&unique_id("text")))),
    );
    ws.send(Message::binary(connect)).await.expect("send");
    assert!(matches!(
        &read_packets(&mut ws, 1).await[..],
        [Packet::ConnAck(_)]
    ));
    ws.send(Message::text("\u{c0}")).await.expect("send");
    expect_ws_closed(&mut ws).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_packet_may_span_several_frames() {
    // [MQTT-6.0.0-2] the receiver must not assume packets are aligned on frame boundaries:
    // CONNECT, SUBSCRIBE and PUBLISH here arrive a few bytes per message.
    let broker = ws_broker(|_| {}).await;
    let mut ws = raw_ws(broker.addr()).await;
    let v = ProtocolVersion::V3_1_1;
    let mut bytes = encode(
        v,
        &Packet::Connect(Box::new(connect_v311(&unique_id("split")))),
    )
    .to_vec();
    bytes.extend_from_slice(&encode(v, &subscribe(1, "split/t", 1)));
    bytes.extend_from_slice(&encode(v, &publish("split/t", 1, 2, b"across frames")));
    for chunk in bytes.chunks(3) {
        ws.send(Message::binary(chunk.to_vec()))
            .await
            .expect("send");
    }
    let packets = read_packets(&mut ws, 4).await;
    assert!(matches!(packets[0], Packet::ConnAck(_)), "{packets:?}");
    assert!(matches!(packets[1], Packet::SubAck(_)), "{packets:?}");
    // The PUBACK and the delivery to itself, in either order.
    let delivered = packets[2..].iter().find_map(|p| match p {
        Packet::Publish(p) => Some(p.payload.clone()),
        _ => None,
    });
    assert_eq!(delivered.as_deref(), Some(&b"across frames"[..]));
    assert!(
        packets[2..]
            .iter()
            .any(|p| matches!(p, Packet::PubAck(PubAck { packet_id, .. }) if packet_id.get() == 2)),
        "{packets:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_frame_may_hold_several_packets() {
    // [MQTT-6.0.0-3] several packets in one binary message: CONNECT, SUBSCRIBE and PINGREQ.
    let broker = ws_broker(|_| {}).await;
    let mut ws = raw_ws(broker.addr()).await;
    let v = ProtocolVersion::V3_1_1;
    let mut bytes = encode(
        v,
        &Packet::Connect(Box::new(connect_v311(&unique_id("batch")))),
    )
    .to_vec();
    bytes.extend_from_slice(&encode(v, &subscribe(1, "batch/t", 0)));
    bytes.extend_from_slice(&encode(v, &Packet::PingReq));
    ws.send(Message::binary(bytes)).await.expect("send");
    let packets = read_packets(&mut ws, 3).await;
    assert!(matches!(packets[0], Packet::ConnAck(_)), "{packets:?}");
    assert!(matches!(packets[1], Packet::SubAck(_)), "{packets:?}");
    assert!(matches!(packets[2], Packet::PingResp), "{packets:?}");
    broker.stop().await;
}

#[tokio::test]
async fn a_packet_larger_than_65_kib_is_sent_in_several_messages() {
    // [MQTT-6.0.0-2] works both ways: the broker caps its messages at 65 KiB (so tungstenite's
    // write buffer stays small), and a 200 KiB PUBLISH reaches the client in pieces that
    // reassemble to the packet.
    let broker = ws_broker(|_| {}).await;
    let mut ws = raw_ws(broker.addr()).await;
    let v = ProtocolVersion::V3_1_1;
    let mut bytes = encode(
        v,
        &Packet::Connect(Box::new(connect_v311(&unique_id("big-out")))),
    )
    .to_vec();
    bytes.extend_from_slice(&encode(v, &subscribe(1, "big/out", 0)));
    ws.send(Message::binary(bytes)).await.expect("send");
    assert_eq!(read_packets(&mut ws, 2).await.len(), 2);
    let payload = vec![0x5a; 200 * 1024];
    let mut publisher = ws_connect(broker.addr(), connect_v311(&unique_id("big-in"))).await;
    publisher.send(publish("big/out", 0, 0, &payload)).await;
    let mut decoder = test_support::vane_proto::Decoder::with_version(
        v,
        test_support::vane_proto::DEFAULT_MAX_PACKET_SIZE,
    );
    let mut buf = bytes::BytesMut::new();
    let mut messages = 0;
    let delivered = loop {
        match next_message(&mut ws).await {
            Some(Message::Binary(data)) => {
                assert!(data.len() <= 65 * 1024, "a message of {} bytes", data.len());
                messages += 1;
                buf.extend_from_slice(&data);
            }
            other => panic!("expected a binary message, got {other:?}"),
        }
        if let Some(p) = decoder.decode(&mut buf).expect("valid packet") {
            break p;
        }
    };
    match delivered {
        Packet::Publish(p) => assert!(p.payload[..] == payload[..], "payload changed"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    assert!(messages >= 4, "200 KiB in {messages} messages");
    broker.stop().await;
}

#[tokio::test]
async fn the_server_selects_the_mqtt_subprotocol() {
    // [MQTT-6.0.0-4] [MQTT-6.0.0-5] the client offers mqtt (old clients: mqttv3.1); the
    // server answers with the one it selected, mqtt when both are offered.
    let broker = ws_broker(|_| {}).await;
    let addr = broker.addr();
    for (offered, selected) in [
        ("mqtt", "mqtt"),
        ("mqttv3.1", "mqttv3.1"),
        ("mqttv3.1, mqtt", "mqtt"),
        ("chat, mqtt", "mqtt"),
    ] {
        let tcp = TcpStream::connect(addr).await.expect("TCP connect");
        let (mut ws, response) = upgrade(tcp, &format!("ws://{addr}/mqtt"), Some(offered))
            .await
            .unwrap_or_else(|e| panic!("upgrade offering {offered} refused: {e}"));
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(selected),
            "offered {offered}"
        );
        let connect = encode(
            ProtocolVersion::V3_1_1,
            &Packet::Connect(Box::new(connect_v311(&unique_id("proto")))),
        );
        ws.send(Message::binary(connect)).await.expect("send");
        assert!(matches!(
            &read_packets(&mut ws, 1).await[..],
            [Packet::ConnAck(_)]
        ));
    }
    broker.stop().await;
}

#[tokio::test]
async fn an_upgrade_without_the_mqtt_subprotocol_is_refused_with_400() {
    // [MQTT-6.0.0-4] the client must offer mqtt; vane refuses the upgrade otherwise (its
    // documented choice), so such a client never gets a WebSocket.
    let broker = ws_broker(|_| {}).await;
    let addr = broker.addr();
    for offered in [None, Some("chat"), Some("mqtt5")] {
        let tcp = TcpStream::connect(addr).await.expect("TCP connect");
        match upgrade(tcp, &format!("ws://{addr}/mqtt"), offered).await {
            Err(WsError::Http(response)) => {
                assert_eq!(
                    response.status(),
                    StatusCode::BAD_REQUEST,
                    "offered {offered:?}"
                )
            }
            Ok(_) => panic!("upgrade offering {offered:?} accepted"),
            Err(e) => panic!("offering {offered:?}: expected HTTP 400, got {e}"),
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn an_upgrade_to_another_path_is_refused_with_404() {
    let broker = ws_broker(|_| {}).await;
    let addr = broker.addr();
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    match upgrade(tcp, &format!("ws://{addr}/other"), Some("mqtt")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::NOT_FOUND),
        Ok(_) => panic!("upgrade to /other accepted"),
        Err(e) => panic!("expected HTTP 404, got {e}"),
    }
    // A path set in the configuration is the one served.
    let broker =
        ws_broker(|c| c.listeners[0].websocket = Some(WebSocketConfig { path: "/ws".into() }))
            .await;
    let addr = broker.addr();
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    upgrade(tcp, &format!("ws://{addr}/ws"), Some("mqtt"))
        .await
        .expect("upgrade on the configured path");
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    assert!(upgrade(tcp, &format!("ws://{addr}/mqtt"), Some("mqtt"))
        .await
        .is_err());
}

#[tokio::test]
async fn a_message_larger_than_max_packet_size_closes_the_connection() {
    // mqtt.max_packet_size (plus 16 bytes) caps a WebSocket message and frame.
    let broker =
        ws_broker(|c| c.mqtt.max_packet_size = test_support::vane_config::ByteSize(1024)).await;
    let mut ws = raw_ws(broker.addr()).await;
    let connect = encode(
        ProtocolVersion::V3_1_1,
        &Packet::Connect(Box::new(connect_v311(&unique_id("big")))),
    );
    ws.send(Message::binary(connect)).await.expect("send");
    assert!(matches!(
        &read_packets(&mut ws, 1).await[..],
        [Packet::ConnAck(_)]
    ));
    let _ = ws.send(Message::binary(vec![0u8; 4096])).await;
    expect_ws_closed(&mut ws).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_frame_header_announcing_a_huge_payload_closes_the_connection_at_once() {
    // A hostile frame header (1 TiB payload announced, nothing sent) is refused from its
    // header: the broker neither waits for nor allocates the payload.
    let broker = ws_broker(|_| {}).await;
    let addr = broker.addr();
    let mut tcp = TcpStream::connect(addr).await.expect("TCP connect");
    tcp.write_all(upgrade_request(addr).as_bytes())
        .await
        .expect("send");
    // The 101 answer, read up to the blank line.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
            .await
            .expect("answer in time")
            .expect("read");
        assert_eq!(n, 1, "closed during the upgrade: {head:?}");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // FIN + binary, masked, 64-bit length 2^40, then the mask key.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 40).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&frame).await.expect("send");
    let rest = bytes_until_close(&mut tcp).await;
    // At most a close frame came back, no MQTT.
    assert!(rest.is_empty() || rest[0] == 0x88, "{rest:?}");
    broker.stop().await;
}

#[tokio::test]
async fn ping_is_answered_with_pong_and_a_close_frame_ends_the_session_with_its_will() {
    let broker = ws_broker(|_| {}).await;
    let addr = broker.addr();
    let mut watcher = ws_connect(addr, connect_v5(&unique_id("watch"))).await;
    watcher.send(subscribe(1, "will/ws", 0)).await;
    assert!(matches!(watcher.recv().await, Some(Packet::SubAck(_))));

    let mut ws = raw_ws(addr).await;
    let connect = with_will(
        connect_v311(&unique_id("dying")),
        "will/ws",
        "gone",
        0,
        false,
    );
    ws.send(Message::binary(encode(
        ProtocolVersion::V3_1_1,
        &Packet::Connect(Box::new(connect)),
    )))
    .await
    .expect("send");
    assert!(matches!(
        &read_packets(&mut ws, 1).await[..],
        [Packet::ConnAck(_)]
    ));
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .expect("send");
    match next_message(&mut ws).await {
        Some(Message::Pong(data)) => assert_eq!(&data[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    // A close frame without DISCONNECT: the connection ends, the will is published.
    ws.close(None).await.expect("close");
    expect_ws_closed(&mut ws).await;
    let will = watcher.recv_publish().await;
    assert_eq!(&will.payload[..], b"gone");
    broker.stop().await;
}

#[tokio::test]
async fn an_upgrade_that_never_finishes_is_dropped_at_the_connect_timeout() {
    // Slowloris on the HTTP upgrade: the request line and one header, then nothing. The
    // upgrade shares mqtt.connect_timeout with CONNECT.
    let broker = ws_broker(|c| c.mqtt.connect_timeout = Duration::from_millis(500)).await;
    let mut tcp = TcpStream::connect(broker.addr())
        .await
        .expect("TCP connect");
    tcp.write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send");
    assert_eq!(bytes_until_close(&mut tcp).await, b"");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn websocket_and_tcp_clients_exchange_messages() {
    let broker = TestBroker::start(|c| {
        c.listeners.push(ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 2], 0)),
            websocket: Some(WebSocketConfig::default()),
            ..Default::default()
        });
    })
    .await;
    let (tcp_addr, ws_addr) = (broker.addrs()[0], broker.addrs()[1]);
    let mut over_tcp = TestClient::connect(tcp_addr, connect_v5(&unique_id("tcp"))).await;
    let mut over_ws = ws_connect(ws_addr, connect_v5(&unique_id("ws"))).await;
    over_tcp.send(subscribe(1, "mixed/to-tcp", 1)).await;
    assert!(matches!(over_tcp.recv().await, Some(Packet::SubAck(_))));
    over_ws.send(subscribe(1, "mixed/to-ws", 1)).await;
    assert!(matches!(over_ws.recv().await, Some(Packet::SubAck(_))));

    over_ws
        .send(publish("mixed/to-tcp", 1, 7, b"from ws"))
        .await;
    assert!(matches!(over_ws.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(&over_tcp.recv_publish().await.payload[..], b"from ws");

    over_tcp
        .send(publish("mixed/to-ws", 1, 8, b"from tcp"))
        .await;
    assert!(matches!(over_tcp.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(&over_ws.recv_publish().await.payload[..], b"from tcp");
    broker.stop().await;
}

#[tokio::test]
async fn a_websocket_listeners_max_connections_closes_extra_connections_before_the_upgrade() {
    // listeners[].max_connections: the connection over the cap is closed at accept, before
    // any HTTP is read.
    let broker = ws_broker(|c| c.listeners[0].max_connections = 1).await;
    let addr = broker.addr();
    let _first = ws_connect(addr, connect_v311(&unique_id("first"))).await;
    let mut tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let _ = tcp.write_all(upgrade_request(addr).as_bytes()).await;
    assert_eq!(bytes_until_close(&mut tcp).await, b"", "no HTTP answer");
    broker.stop().await;
}

#[tokio::test]
async fn over_the_memory_budget_a_websocket_connection_is_closed_before_the_upgrade() {
    // overload.refuse_at_percent: as on TLS, a WebSocket connection cannot get a CONNACK
    // before its handshake, so it is closed at accept, with no HTTP answer. The budget (1 MiB)
    // is below any process's resident memory: the broker refuses from its first sample.
    let broker = ws_broker(|c| {
        c.overload.memory_budget = Some(test_support::vane_config::ByteSize(1 << 20));
        c.overload.sample_interval = Duration::from_millis(10);
    })
    .await;
    // The first sample is taken as the server starts; leave it time to run.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut tcp = TcpStream::connect(broker.addr())
        .await
        .expect("TCP connect");
    let _ = tcp
        .write_all(upgrade_request(broker.addr()).as_bytes())
        .await;
    assert_eq!(bytes_until_close(&mut tcp).await, b"", "no HTTP answer");
    broker.stop().await;
}

#[tokio::test]
async fn a_websocket_listener_that_refuses_anonymous_clients_refuses_them() {
    // listeners[].allow_anonymous = false applies over WebSocket: CONNACK 0x87 (5.0).
    let broker = ws_broker(|c| c.listeners[0].allow_anonymous = Some(false)).await;
    let mut client = ws_client(broker.addr(), ProtocolVersion::V5).await;
    client
        .send(Packet::Connect(Box::new(connect_v5(&unique_id("anon")))))
        .await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason, ConnAckReason::NotAuthorized),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client.expect_closed().await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// wss://
// ---------------------------------------------------------------------------------------------

/// A CA, the server certificate and the listener's TLS settings, in a directory of their own.
struct Certs {
    _dir: tempfile::TempDir,
    ca: Issued,
    tls: TlsConfig,
}

fn certs(identity: CertIdentity) -> Certs {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca("vane wss CA");
    let server = server_cert(&ca);
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(path("server.pem"), server.cert.pem()).expect("write");
    std::fs::write(path("server.key"), server.key.serialize_pem()).expect("write");
    std::fs::write(path("ca.pem"), ca.cert.pem()).expect("write");
    let tls = TlsConfig {
        cert: path("server.pem"),
        key: path("server.key"),
        client_ca: if identity == CertIdentity::None {
            String::new()
        } else {
            path("ca.pem")
        },
        identity,
        ..TlsConfig::default()
    };
    Certs { _dir: dir, ca, tls }
}

/// A wss:// TestClient: TLS trusting `ca` (with an optional client certificate), then the
/// upgrade, then MQTT.
async fn wss_client(
    addr: SocketAddr,
    ca: &Issued,
    identity: Option<&Issued>,
    version: ProtocolVersion,
) -> TestClient {
    let config = tls_client::client_config(ca, rustls::DEFAULT_VERSIONS, identity);
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let tls = TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let (ws, _) = upgrade(tls, "wss://localhost/mqtt", Some("mqtt"))
        .await
        .expect("upgrade accepted");
    TestClient::over(WsStream::new(ws), version)
}

#[tokio::test]
async fn wss_carries_mqtt_over_tls() {
    let certs = certs(CertIdentity::None);
    let tls = certs.tls.clone();
    let broker = ws_broker(move |c| c.listeners[0].tls = Some(tls)).await;
    let addr = broker.addr();
    let mut client = wss_client(addr, &certs.ca, None, ProtocolVersion::V5).await;
    client
        .send(Packet::Connect(Box::new(connect_v5(&unique_id("wss")))))
        .await;
    assert!(
        matches!(client.recv().await, Some(Packet::ConnAck(a)) if a.reason == ConnAckReason::Success)
    );
    client.send(subscribe(1, "wss/t", 1)).await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    client.send(publish("wss/t", 1, 2, b"secret")).await;
    let mut got_ack = false;
    let mut got_publish = false;
    while !(got_ack && got_publish) {
        match client.recv().await {
            Some(Packet::PubAck(_)) => got_ack = true,
            Some(Packet::Publish(p)) => {
                assert_eq!(&p.payload[..], b"secret");
                got_publish = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn wss_names_the_client_from_its_certificate() {
    // tls.identity = "cn" over wss://: the verified certificate's CN authenticates the client;
    // without a certificate the (non-anonymous) listener refuses it.
    let certs = certs(CertIdentity::Cn);
    let tls = certs.tls.clone();
    let broker = ws_broker(move |c| c.listeners[0].tls = Some(tls)).await;
    let addr = broker.addr();
    let device = client_cert(&certs.ca, "device-ws");
    let mut with_cert = wss_client(addr, &certs.ca, Some(&device), ProtocolVersion::V5).await;
    with_cert
        .send(Packet::Connect(Box::new(connect_v5(&unique_id("cert")))))
        .await;
    assert!(
        matches!(with_cert.recv().await, Some(Packet::ConnAck(a)) if a.reason == ConnAckReason::Success)
    );
    let mut without = wss_client(addr, &certs.ca, None, ProtocolVersion::V5).await;
    without
        .send(Packet::Connect(Box::new(connect_v5(&unique_id("nocert")))))
        .await;
    assert!(
        matches!(without.recv().await, Some(Packet::ConnAck(a)) if a.reason == ConnAckReason::NotAuthorized)
    );
    broker.stop().await;
}
