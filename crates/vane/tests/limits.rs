//! Limits against hostile clients, each hit over real sockets with its documented result:
//! connection caps, per-source connection rate and banned addresses close the socket at
//! accept (before any TLS handshake); banned and flapping client ids get CONNACK 0x8A (MQTT
//! 3.x: return code 5); subscription and topic limits answer in SUBACK, PUBACK and CONNACK;
//! the publish budget pauses reading or ends the connection with DISCONNECT 0x96.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use test_support::certs::{ca, server_cert};
use test_support::vane_config::{ByteSize, Config, RateExceeded, TlsConfig};
use test_support::vane_proto::{ConnAckReason, DisconnectReason, Packet, PubAck, PubAckReason};
use test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a socket receives after it sends `bytes`: everything up to the close, or `None` if it
/// stays open for 2 s without closing.
async fn bytes_until_close(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
    // The broker may have closed already: a failed write is part of what is observed.
    let _ = stream.write_all(bytes).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(DEFAULT_TIMEOUT, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A CONNECT's bytes.
fn connect_bytes(connect: test_support::vane_proto::Connect) -> Vec<u8> {
    let version = connect.protocol;
    encode(version, &Packet::Connect(Box::new(connect))).to_vec()
}

/// Asserts that a CONNECT on a new socket gets no answer at all: closed at accept.
async fn closed_at_accept(addr: SocketAddr) {
    let got = bytes_until_close(addr, &connect_bytes(connect_v311(&unique_id("refused")))).await;
    assert_eq!(got, Some(Vec::new()), "closed at accept, without a CONNACK");
}

/// Connects until `addr` accepts again (a closed client's place is given back when its task
/// ends), bounded by 2 s.
async fn connect_when_room(addr: SocketAddr) -> TestClient {
    let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
    loop {
        let connect = connect_v311(&unique_id("room"));
        if let Ok((c, ack)) = TestClient::try_connect(addr, connect, DEFAULT_TIMEOUT).await {
            assert_eq!(ack.reason, ConnAckReason::Success);
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room after a client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Admission at accept
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connections_beyond_limits_max_connections_are_closed_at_accept() {
    // limits.max_connections: one more connection is closed at once, with no CONNACK (its
    // MQTT version is not known yet); a place comes back when a client leaves.
    let broker = TestBroker::start(|c| c.limits.max_connections = 2).await;
    let a = TestClient::connect(broker.addr(), connect_v311(&unique_id("a"))).await;
    let _b = TestClient::connect(broker.addr(), connect_v5(&unique_id("b"))).await;
    closed_at_accept(broker.addr()).await;
    a.disconnect().await;
    let _c = connect_when_room(broker.addr()).await;
    closed_at_accept(broker.addr()).await;
}

#[tokio::test]
async fn connections_beyond_a_listeners_max_connections_are_closed_at_accept() {
    // listeners[].max_connections caps one listener; the others are not affected.
    let broker = TestBroker::start(|c| {
        c.listeners[0].max_connections = 1;
        c.listeners.push(vane_config::ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 2], 0)),
            ..Default::default()
        });
    })
    .await;
    let _a = TestClient::connect(broker.addr(), connect_v311(&unique_id("a"))).await;
    closed_at_accept(broker.addr()).await;
}

#[tokio::test]
async fn connections_beyond_the_rate_per_source_are_closed_at_accept() {
    // limits.connection_rate_per_source with limits.connection_burst_per_source: the burst is
    // served, then one new connection per second; more are closed at accept.
    let broker = TestBroker::start(|c| {
        c.limits.connection_rate_per_source = 1;
        c.limits.connection_burst_per_source = 3;
    })
    .await;
    // Thirteen connections opened back to back: the burst of three and whatever refilled
    // meanwhile are served (they wait for CONNECT), the rest are closed at once.
    let mut streams = Vec::new();
    for _ in 0..13 {
        streams.push(
            TcpStream::connect(broker.addr())
                .await
                .expect("TCP connect"),
        );
    }
    let waits = streams.into_iter().map(|mut s| {
        tokio::spawn(async move {
            let mut buf = [0u8; 16];
            // Closed (end of stream or reset, nothing read) or still open after 2 s.
            matches!(
                tokio::time::timeout(DEFAULT_TIMEOUT, s.read(&mut buf)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
        })
    });
    let mut closed = 0;
    for w in waits.collect::<Vec<_>>() {
        if w.await.expect("reader task") {
            closed += 1;
        }
    }
    assert!(closed > 0, "no connection refused beyond the burst");
    assert!(
        closed <= 10,
        "the burst of three is served, {closed} closed"
    );
}

/// A client configuration trusting `ca`.
fn tls_client(ca: &test_support::certs::Issued) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.cert.der().clone())
        .expect("CA is a valid root");
    ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The bytes of a TLS ClientHello for `localhost`.
fn client_hello(config: ClientConfig) -> Vec<u8> {
    let name = ServerName::try_from("localhost").expect("server name");
    let mut conn = ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("ClientHello");
    assert!(!hello.is_empty());
    hello
}

#[tokio::test]
async fn a_refused_tls_client_gets_no_server_hello() {
    // Admission happens before the TLS handshake: a connection over limits.max_connections
    // is closed without a byte of handshake, so a storm costs no handshake CPU.
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca("vane limits CA");
    let server = server_cert(&ca);
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    std::fs::write(&cert, server.cert.pem()).expect("write");
    std::fs::write(&key, server.key.serialize_pem()).expect("write");
    let tls = TlsConfig {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        ..TlsConfig::default()
    };
    let broker = TestBroker::start(move |c| {
        c.listeners[0].tls = Some(tls);
        c.limits.max_connections = 1;
    })
    .await;
    // While a place is free, the same ClientHello gets a ServerHello (a TLS handshake record).
    let mut first = TcpStream::connect(broker.addr()).await.expect("connect");
    first
        .write_all(&client_hello(tls_client(&ca)))
        .await
        .expect("write ClientHello");
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(DEFAULT_TIMEOUT, first.read(&mut buf))
        .await
        .expect("ServerHello in time")
        .expect("read");
    assert_eq!((n, buf[0]), (1, 0x16), "a TLS handshake record");
    // `first` holds the only place: the next ClientHello is answered by the close alone.
    let got = bytes_until_close(broker.addr(), &client_hello(tls_client(&ca))).await;
    assert_eq!(got, Some(Vec::new()), "no handshake bytes before the close");
}

// ---------------------------------------------------------------------------------------------
// Ban list
// ---------------------------------------------------------------------------------------------

fn ban_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("bans");
    std::fs::write(&path, text).expect("write ban file");
    path.display().to_string()
}

#[tokio::test]
async fn a_banned_address_is_closed_at_accept() {
    // limits.ban_file `address`: closed at accept, before any CONNACK.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = ban_file(&dir, "address 127.0.0.0/8\n");
    let broker = TestBroker::start(move |c| c.limits.ban_file = file).await;
    closed_at_accept(broker.addr()).await;
}

#[tokio::test]
async fn an_expired_address_ban_is_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = ban_file(&dir, "address 127.0.0.1 until 2000-01-01T00:00:00Z\n");
    let broker = TestBroker::start(move |c| c.limits.ban_file = file).await;
    TestClient::connect(broker.addr(), connect_v311(&unique_id("ok")))
        .await
        .disconnect()
        .await;
}

#[tokio::test]
async fn banned_client_ids_and_user_names_get_0x8a_and_return_code_5() {
    // limits.ban_file `client` and `user`: MQTT 5.0 CONNACK 0x8A Banned; MQTT 3.1.1 return
    // code 5 (Not authorized) [MQTT-3.2.2-5 the connection is closed after it].
    let dir = tempfile::tempdir().expect("temp dir");
    let file = ban_file(
        &dir,
        "# test bans\nclient evil\nuser mallory\nclient old until 2000-01-01T00:00:00Z\n",
    );
    let broker = TestBroker::start(move |c| c.limits.ban_file = file).await;
    let (mut c, ack) = TestClient::connect_with_ack(broker.addr(), connect_v5("evil")).await;
    assert_eq!(ack.reason, ConnAckReason::Banned);
    assert_eq!(ack.reason.as_u8(), 0x8A);
    c.expect_closed().await;

    let got = bytes_until_close(broker.addr(), &connect_bytes(connect_v311("evil"))).await;
    assert_eq!(got, Some(vec![0x20, 0x02, 0x00, 0x05]), "return code 5");

    let mut connect = connect_v5(&unique_id("someone"));
    connect.username = Some("mallory".into());
    let (_, ack) = TestClient::connect_with_ack(broker.addr(), connect).await;
    assert_eq!(ack.reason, ConnAckReason::Banned);

    // An expired entry bans no one.
    TestClient::connect(broker.addr(), connect_v5("old"))
        .await
        .disconnect()
        .await;
}

#[tokio::test]
async fn an_unparseable_ban_file_stops_the_broker_naming_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.listeners[0].bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.store.durability = vane_config::Durability::Memory;
    config.limits.ban_file = ban_file(&dir, "client a\naddress 10.0.0.0/40\n");
    let err = match vane_server::Server::bind(config).await {
        Ok(_) => panic!("a broken ban file must stop the broker"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("limits.ban_file: "), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

/// A server on a free loopback port with the ban file at `path`, bound but not yet running:
/// the test takes the handle it reloads with first.
async fn server_with_ban_file(path: &str) -> vane_server::Server {
    let mut config = Config::default();
    config.listeners[0].bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.store.durability = vane_config::Durability::Memory;
    config.limits.ban_file = path.to_owned();
    vane_server::Server::bind(config).await.expect("binds")
}

#[tokio::test]
async fn reloading_the_ban_file_disconnects_banned_clients_and_bans_new_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = ban_file(&dir, "");
    let server = server_with_ban_file(&path).await;
    let addr = server.local_addrs()[0];
    let bans = server.ban_list();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    let mut by_id = TestClient::connect(addr, connect_v5("later-banned")).await;
    let mut connect = connect_v311(&unique_id("by-user"));
    connect.username = Some("later-banned-user".into());
    let mut by_user = TestClient::connect(addr, connect).await;
    let mut other = TestClient::connect(addr, connect_v5(&unique_id("not-banned"))).await;
    std::fs::write(&path, "client later-banned\nuser later-banned-user\n").expect("write");
    assert_eq!(bans.reload(), Ok(2));
    // Connected clients the new list bans are disconnected: MQTT 5.0 DISCONNECT 0x98
    // Administrative action (DISCONNECT has no 0x8A); MQTT 3.x: the close.
    by_id
        .expect_closed_with(DisconnectReason::AdministrativeAction)
        .await;
    assert!(by_user.expect_closed().await.is_none());
    other.send(pingreq()).await;
    other.expect(Packet::PingResp).await;
    // New connections get CONNACK 0x8A.
    let (_, ack) = TestClient::connect_with_ack(addr, connect_v5("later-banned")).await;
    assert_eq!(ack.reason, ConnAckReason::Banned);
    let _ = tx.send(());
    let _ = task.await;
}

#[tokio::test]
async fn the_sighup_reload_rereads_the_ban_file_with_the_acl_and_passwords() {
    // `vane serve` calls ReloadHandle::reload on SIGHUP: the ban list is one of its steps, and
    // a broken ban file keeps the list in force.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = ban_file(&dir, "");
    let server = server_with_ban_file(&path).await;
    let addr = server.local_addrs()[0];
    let reload = server.reload_handle();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    let mut banned = TestClient::connect(addr, connect_v5("banned-on-hup")).await;
    // Connected through every reload below; banned by the last one only.
    let mut late = TestClient::connect(addr, connect_v5("banned-later")).await;
    std::fs::write(&path, "client banned-on-hup\n").expect("write");
    reload.reload().expect("reload");
    banned
        .expect_closed_with(DisconnectReason::AdministrativeAction)
        .await;
    let (_, ack) = TestClient::connect_with_ack(addr, connect_v5("banned-on-hup")).await;
    assert_eq!(ack.reason, ConnAckReason::Banned);
    // A ban file that no longer parses: the reload fails naming it, the old list stays.
    std::fs::write(&path, "client banned-on-hup\nnonsense here\n").expect("write");
    let err = reload
        .reload()
        .expect_err("a broken ban file fails the reload");
    assert!(err.to_string().contains("line 2"), "{err}");
    let (_, ack) = TestClient::connect_with_ack(addr, connect_v5("banned-on-hup")).await;
    assert_eq!(ack.reason, ConnAckReason::Banned);
    // A connection keeps watching after the reloads it survived.
    late.send(pingreq()).await;
    late.expect(Packet::PingResp).await;
    std::fs::write(&path, "client banned-on-hup\nclient banned-later\n").expect("write");
    reload.reload().expect("reload");
    late.expect_closed_with(DisconnectReason::AdministrativeAction)
        .await;
    let _ = tx.send(());
    let _ = task.await;
}

// ---------------------------------------------------------------------------------------------
// Flapping
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_flapping_client_id_is_banned_with_0x8a() {
    // limits.flapping: more than max_connects CONNECTs of one client id within the window
    // ban it for `ban`: CONNACK 0x8A, MQTT 3.x return code 5.
    let broker = TestBroker::start(|c| {
        c.limits.flapping.enabled = true;
        c.limits.flapping.max_connects = 3;
    })
    .await;
    let id = unique_id("flap");
    for _ in 0..3 {
        TestClient::connect(broker.addr(), connect_v5(&id))
            .await
            .disconnect()
            .await;
    }
    let (_, ack) = TestClient::connect_with_ack(broker.addr(), connect_v5(&id)).await;
    assert_eq!(ack.reason, ConnAckReason::Banned);
    let got = bytes_until_close(broker.addr(), &connect_bytes(connect_v311(&id))).await;
    assert_eq!(
        got,
        Some(vec![0x20, 0x02, 0x00, 0x05]),
        "still banned, code 5"
    );
    // Other client ids are not affected.
    TestClient::connect(broker.addr(), connect_v5(&unique_id("steady")))
        .await
        .disconnect()
        .await;
}

// ---------------------------------------------------------------------------------------------
// Subscriptions and topics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn subscriptions_beyond_max_subscriptions_per_client_get_0x97_and_0x80() {
    // limits.max_subscriptions_per_client: MQTT 5.0 SUBACK 0x97, MQTT 3.1.1 0x80; replacing
    // a subscription does not count.
    let broker = TestBroker::start(|c| c.limits.max_subscriptions_per_client = 2).await;
    let mut c = TestClient::connect(broker.addr(), connect_v5(&unique_id("subs"))).await;
    c.send(subscribe_many(1, &[("a", 0), ("b", 0), ("c", 0)]))
        .await;
    c.expect(suback(1, &[0x00, 0x00, 0x97])).await;
    c.send(subscribe(2, "a", 1)).await;
    c.expect(suback(2, &[0x01])).await;

    let mut c = TestClient::connect(broker.addr(), connect_v311(&unique_id("subs"))).await;
    c.send(subscribe_many(1, &[("a", 0), ("b", 0), ("c", 0)]))
        .await;
    c.expect(suback(1, &[0x00, 0x00, 0x80])).await;
}

#[tokio::test]
async fn topics_beyond_the_length_and_level_limits_are_refused() {
    // limits.max_topic_length and limits.max_topic_levels: SUBSCRIBE 0x8F (MQTT 3.1.1 0x80);
    // MQTT 5.0 PUBLISH QoS 1 PUBACK 0x90 and the connection goes on; MQTT 3.1.1 PUBLISH ends
    // the connection.
    let broker = TestBroker::start(|c| {
        c.limits.max_topic_length = 20;
        c.limits.max_topic_levels = 3;
    })
    .await;
    let mut c = TestClient::connect(broker.addr(), connect_v5(&unique_id("topics"))).await;
    c.send(subscribe_many(
        1,
        &[("a/b/c/d", 0), ("a/b/c", 0), ("x".repeat(21).as_str(), 0)],
    ))
    .await;
    c.expect(suback(1, &[0x8F, 0x00, 0x8F])).await;
    c.send(publish("a/b/c/d", 1, 7, "deep")).await;
    c.expect(Packet::PubAck(PubAck::with_reason(
        pid(7),
        PubAckReason::TopicNameInvalid,
    )))
    .await;
    c.send(publish("a/b/c", 1, 8, "fine")).await;
    // The acknowledgement and the delivery to the client's own subscription, in either order.
    let (mut acked, mut delivered) = (false, false);
    for _ in 0..2 {
        match c.recv().await {
            Some(Packet::Publish(p)) => delivered = &p.topic[..] == "a/b/c",
            Some(Packet::PubAck(a)) => acked = a.reason == PubAckReason::Success,
            other => panic!("expected PUBACK and PUBLISH, got {other:?}"),
        }
    }
    assert!(acked && delivered, "a topic within the limits goes through");
    c.send(subscribe(2, "a/b/c/#", 0)).await;
    c.expect(suback(2, &[0x8F])).await;

    let mut c = TestClient::connect(broker.addr(), connect_v311(&unique_id("topics"))).await;
    c.send(subscribe(1, "a/b/c/d", 0)).await;
    c.expect(suback(1, &[0x80])).await;
    c.send(publish("a/b/c/d", 0, 0, "deep")).await;
    assert!(c.expect_closed().await.is_none());
}

#[tokio::test]
async fn a_will_topic_beyond_the_limits_is_refused_at_connect() {
    // The topic limits hold for the will topic: MQTT 5.0 CONNACK 0x90, MQTT 3.1.1 code 3.
    let broker = TestBroker::start(|c| c.limits.max_topic_levels = 2).await;
    let connect = with_will(connect_v5(&unique_id("will")), "a/b/c", "bye", 0, false);
    let (_, ack) = TestClient::connect_with_ack(broker.addr(), connect).await;
    assert_eq!(ack.reason, ConnAckReason::TopicNameInvalid);
    let connect = with_will(connect_v311(&unique_id("will")), "a/b/c", "bye", 0, false);
    let got = bytes_until_close(broker.addr(), &connect_bytes(connect)).await;
    assert_eq!(got, Some(vec![0x20, 0x02, 0x00, 0x03]));
}

// ---------------------------------------------------------------------------------------------
// Publish rate and bandwidth
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn publishing_over_the_bandwidth_pauses_reading_until_the_budget_refills() {
    // limits.publish_bandwidth with rate_exceeded = "pause": a 400-byte PUBLISH against 100
    // bytes per second is served, then the broker reads nothing more for about 3 s; what
    // the client sent meanwhile is handled afterwards, nothing is lost.
    let broker = TestBroker::start(|c| c.limits.publish_bandwidth = ByteSize(100)).await;
    let mut c = TestClient::connect(broker.addr(), connect_v5(&unique_id("bw"))).await;
    c.send(publish("bw", 1, 1, "x".repeat(400))).await;
    c.expect(Packet::PubAck(PubAck::with_reason(
        pid(1),
        PubAckReason::NoMatchingSubscribers,
    )))
    .await;
    c.send(publish("bw", 1, 2, "y")).await;
    c.expect_nothing(Duration::from_secs(1)).await;
    c.set_timeout(Duration::from_secs(10));
    c.expect(Packet::PubAck(PubAck::with_reason(
        pid(2),
        PubAckReason::NoMatchingSubscribers,
    )))
    .await;
}

#[tokio::test]
async fn publishing_over_the_rate_with_disconnect_gets_0x96() {
    // limits.publish_rate with rate_exceeded = "disconnect": MQTT 5.0 DISCONNECT 0x96
    // Message rate too high; MQTT 3.x: the connection is closed.
    let broker = TestBroker::start(|c| {
        c.limits.publish_rate = 1;
        c.limits.rate_exceeded = RateExceeded::Disconnect;
    })
    .await;
    let mut c = TestClient::connect(broker.addr(), connect_v5(&unique_id("rate"))).await;
    c.send(publish("r", 0, 0, "1")).await;
    c.send(publish("r", 0, 0, "2")).await;
    c.expect_closed_with(DisconnectReason::MessageRateTooHigh)
        .await;
    assert_eq!(DisconnectReason::MessageRateTooHigh.as_u8(), 0x96);

    let mut c = TestClient::connect(broker.addr(), connect_v311(&unique_id("rate"))).await;
    c.send(publish("r", 0, 0, "1")).await;
    c.send(publish("r", 0, 0, "2")).await;
    assert!(c.expect_closed().await.is_none());
}
