//! MQTT over TLS: certificates made at test time (a CA, a server certificate for localhost and
//! 127.0.0.1, client certificates), a broker with a TLS listener, and rustls clients that
//! speak raw MQTT over the encrypted stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use test_support::certs::{ca, client_cert, server_cert, Issued};
use test_support::vane_config::{Config, TlsConfig};
use test_support::vane_proto::{ConnAckReason, Packet, ProtocolVersion, PubAck};
use test_support::*;
use tls_client::client_config;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod tls_client;

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// The PEM files a TLS listener is configured with, in a directory of the test's own.
struct Files {
    dir: tempfile::TempDir,
    ca: Issued,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = ca("vane test CA");
        let server = server_cert(&ca);
        std::fs::write(dir.path().join("server.pem"), server.cert.pem()).expect("write");
        std::fs::write(dir.path().join("server.key"), server.key.serialize_pem()).expect("write");
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).expect("write");
        Files { dir, ca }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Server certificate and key, no client certificates.
    fn tls(&self) -> TlsConfig {
        TlsConfig {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            ..TlsConfig::default()
        }
    }

    /// Client certificates required, verified against the test CA.
    fn mtls(&self) -> TlsConfig {
        TlsConfig {
            client_ca: self.path("ca.pem"),
            require_client_cert: true,
            ..self.tls()
        }
    }
}

async fn tls_broker(tls: TlsConfig, configure: impl FnOnce(&mut Config)) -> TestBroker {
    TestBroker::start(move |c| {
        c.listeners[0].tls = Some(tls);
        configure(c);
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

fn default_client(ca: &Issued) -> ClientConfig {
    client_config(ca, rustls::DEFAULT_VERSIONS, None)
}

/// Opens TCP, runs the TLS handshake for `localhost`, sends CONNECT and returns the client
/// with its CONNACK. Any failure (handshake refused, closed before CONNACK, no CONNACK in
/// time) is an error: with TLS 1.3 a refused client certificate shows only after the client's
/// side of the handshake has finished.
async fn try_connect_tls(
    addr: SocketAddr,
    config: ClientConfig,
    client_id: &str,
) -> Result<TestClient, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").expect("server name");
    let stream = tokio::time::timeout(DEFAULT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake failed: {e}"))?;
    let mut client = TestClient::over(stream, ProtocolVersion::V3_1_1);
    client
        .try_send(&Packet::Connect(Box::new(connect_v311(client_id))))
        .await
        .map_err(|e| format!("sending CONNECT: {e}"))?;
    match client.next_event(DEFAULT_TIMEOUT).await {
        Received::Packet(Packet::ConnAck(ack)) if ack.reason == ConnAckReason::Success => {
            Ok(client)
        }
        other => Err(format!("no successful CONNACK: {other:?}")),
    }
}

async fn connect_tls(addr: SocketAddr, config: ClientConfig, prefix: &str) -> TestClient {
    try_connect_tls(addr, config, &unique_id(prefix))
        .await
        .expect("TLS client connects")
}

/// SUBSCRIBE, PUBLISH QoS 1 from another client, delivery and PUBACK, all over TLS.
async fn pub_sub_round_trip(addr: SocketAddr, sub: ClientConfig, publ: ClientConfig) {
    let mut subscriber = connect_tls(addr, sub, "tls-sub").await;
    subscriber.send(subscribe(1, "tls/#", 1)).await;
    match subscriber.recv().await {
        Some(Packet::SubAck(_)) => {}
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut publisher = connect_tls(addr, publ, "tls-pub").await;
    publisher.send(publish("tls/a", 1, 7, b"secret")).await;
    publisher.expect(Packet::PubAck(PubAck::new(pid(7)))).await;
    let p = subscriber.recv_publish().await;
    assert_eq!(&p.topic[..], "tls/a");
    assert_eq!(&p.payload[..], b"secret");
    publisher.disconnect().await;
    subscriber.disconnect().await;
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connect_subscribe_publish_over_tls() {
    let files = Files::new();
    let broker = tls_broker(files.tls(), |_| {}).await;
    pub_sub_round_trip(
        broker.addr(),
        default_client(&files.ca),
        default_client(&files.ca),
    )
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_both_served() {
    let files = Files::new();
    let broker = tls_broker(files.tls(), |_| {}).await;
    pub_sub_round_trip(
        broker.addr(),
        client_config(&files.ca, &[&rustls::version::TLS12], None),
        client_config(&files.ca, &[&rustls::version::TLS13], None),
    )
    .await;
    broker.stop().await;
}

/// Many packets in one write: the broker's TLS stream then holds decrypted bytes beyond its
/// first read while the socket has nothing more to signal. Every packet must still be read
/// at once, without the client sending anything else.
#[tokio::test]
async fn packets_already_decrypted_are_read_without_more_input() {
    let files = Files::new();
    let broker = tls_broker(files.tls(), |_| {}).await;
    let mut subscriber = connect_tls(broker.addr(), default_client(&files.ca), "burst-sub").await;
    subscriber.send(subscribe(1, "burst/#", 0)).await;
    match subscriber.recv().await {
        Some(Packet::SubAck(_)) => {}
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut publisher = connect_tls(broker.addr(), default_client(&files.ca), "burst-pub").await;
    let payload = vec![b'x'; 1000];
    let mut burst = Vec::new();
    for i in 0..40 {
        burst.extend_from_slice(&encode(
            ProtocolVersion::V3_1_1,
            &publish(&format!("burst/{i}"), 0, 0, &payload),
        ));
    }
    burst.extend_from_slice(&encode(
        ProtocolVersion::V3_1_1,
        &publish("burst/last", 1, 9, b"end"),
    ));
    publisher.send_raw(&burst).await;
    publisher.expect(Packet::PubAck(PubAck::new(pid(9)))).await;
    for i in 0..40 {
        let p = subscriber.recv_publish().await;
        assert_eq!(&p.topic[..], format!("burst/{i}"));
    }
    assert_eq!(&subscriber.recv_publish().await.payload[..], b"end");
    broker.stop().await;
}

#[tokio::test]
async fn client_trusting_another_ca_fails_the_handshake() {
    let files = Files::new();
    let broker = tls_broker(files.tls(), |_| {}).await;
    let stranger = ca("some other CA");
    let err = try_connect_tls(broker.addr(), default_client(&stranger), "wrong-ca")
        .await
        .err()
        .expect("a client that does not trust the server's CA cannot connect");
    assert!(err.contains("handshake failed"), "{err}");
    // The broker still serves a client that trusts it.
    connect_tls(broker.addr(), default_client(&files.ca), "after")
        .await
        .disconnect()
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate() {
    let files = Files::new();
    let broker = tls_broker(files.mtls(), |_| {}).await;
    for versions in [
        &[&rustls::version::TLS12][..],
        &[&rustls::version::TLS13][..],
    ] {
        let refused = try_connect_tls(
            broker.addr(),
            client_config(&files.ca, versions, None),
            "no-cert",
        )
        .await;
        assert!(refused.is_err(), "a client without a certificate got in");
    }
    broker.stop().await;
}

#[tokio::test]
async fn mtls_refuses_a_certificate_from_another_ca() {
    let files = Files::new();
    let broker = tls_broker(files.mtls(), |_| {}).await;
    let stranger = ca("some other CA");
    let foreign = client_cert(&stranger, "mallory");
    let refused = try_connect_tls(
        broker.addr(),
        client_config(&files.ca, rustls::DEFAULT_VERSIONS, Some(&foreign)),
        "foreign-cert",
    )
    .await;
    assert!(refused.is_err(), "a certificate from another CA got in");
    broker.stop().await;
}

#[tokio::test]
async fn mtls_accepts_a_certificate_signed_by_the_ca() {
    let files = Files::new();
    let broker = tls_broker(files.mtls(), |_| {}).await;
    let alice = client_cert(&files.ca, "alice");
    let bob = client_cert(&files.ca, "bob");
    pub_sub_round_trip(
        broker.addr(),
        client_config(&files.ca, &[&rustls::version::TLS13], Some(&alice)),
        client_config(&files.ca, &[&rustls::version::TLS12], Some(&bob)),
    )
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn plain_mqtt_on_a_tls_port_gets_no_connack_and_others_are_served() {
    let files = Files::new();
    let broker = tls_broker(files.tls(), |_| {}).await;
    let mut plain = TestClient::open(broker.addr(), ProtocolVersion::V3_1_1).await;
    let _ = plain
        .try_send(&Packet::Connect(Box::new(connect_v311("plain"))))
        .await;
    // The broker answers with a TLS alert (not MQTT: it fails to decode) at most, never a
    // CONNACK, and closes.
    match plain.next_event(DEFAULT_TIMEOUT).await {
        Received::Packet(Packet::ConnAck(ack)) => panic!("plain client got {ack:?}"),
        Received::Timeout => panic!("the broker kept a plain connection open"),
        Received::Packet(_) | Received::Malformed(_) | Received::Closed | Received::Error(_) => {}
    }
    connect_tls(broker.addr(), default_client(&files.ca), "after-plain")
        .await
        .disconnect()
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn a_handshake_that_never_finishes_is_dropped_at_the_connect_timeout() {
    let files = Files::new();
    let broker = tls_broker(files.tls(), |c| {
        c.mqtt.connect_timeout = Duration::from_millis(500);
    })
    .await;
    // A TLS record header promising a ClientHello that never comes.
    let mut stalled = TestClient::open(broker.addr(), ProtocolVersion::V3_1_1).await;
    stalled.send_raw(&[0x16, 0x03, 0x01, 0x02, 0x00]).await;
    let started = std::time::Instant::now();
    match stalled.next_event(Duration::from_secs(3)).await {
        Received::Closed | Received::Error(_) | Received::Malformed(_) => {}
        other => panic!("expected the broker to close, got {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed too early: {:?}",
        started.elapsed()
    );
    connect_tls(broker.addr(), default_client(&files.ca), "after-stall")
        .await
        .disconnect()
        .await;
    broker.stop().await;
}

/// The handshake and CONNECT share one deadline: a client that spends most of the connect
/// timeout before its ClientHello has only the rest of it to send CONNECT.
#[tokio::test]
async fn handshake_and_connect_share_the_connect_timeout() {
    let files = Files::new();
    let broker = tls_broker(files.tls(), |c| {
        c.mqtt.connect_timeout = Duration::from_millis(2000);
    })
    .await;
    let started = std::time::Instant::now();
    let tcp = TcpStream::connect(broker.addr())
        .await
        .expect("TCP connect");
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let connector = TlsConnector::from(Arc::new(default_client(&files.ca)));
    let name = ServerName::try_from("localhost").expect("server name");
    let stream = connector
        .connect(name, tcp)
        .await
        .expect("a handshake within the timeout succeeds");
    let mut client = TestClient::over(stream, ProtocolVersion::V3_1_1);
    // No CONNECT: the broker must close at the 2 s deadline, not 2 s after the handshake.
    match client.next_event(Duration::from_secs(4)).await {
        Received::Closed | Received::Error(_) => {}
        other => panic!("expected the broker to close, got {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_millis(2900),
        "closed after {elapsed:?}, expected about 2 s"
    );
    broker.stop().await;
}

fn bind_error(tls: TlsConfig) -> String {
    let config = Config {
        listeners: vec![test_support::vane_config::ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: Some(tls),
            ..Default::default()
        }],
        store: test_support::vane_config::StoreConfig {
            durability: test_support::vane_config::Durability::Memory,
            ..Default::default()
        },
        ..Default::default()
    };
    config
        .validate()
        .expect("the configuration itself is valid");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(vane_server::Server::bind(config)) {
        Ok(_) => panic!("a TLS listener with unusable files started"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unusable_tls_files_stop_the_broker_naming_the_file() {
    let files = Files::new();
    let missing = files.path("missing.pem");
    let err = bind_error(TlsConfig {
        cert: missing.clone(),
        ..files.tls()
    });
    assert!(
        err.contains("listeners[0].tls.cert") && err.contains(&missing),
        "{err}"
    );

    let garbage = files.path("garbage.key");
    std::fs::write(&garbage, "not a key\n").expect("write");
    let err = bind_error(TlsConfig {
        key: garbage.clone(),
        ..files.tls()
    });
    assert!(
        err.contains("listeners[0].tls.key")
            && err.contains(&garbage)
            && err.contains("no PRIVATE KEY"),
        "{err}"
    );

    let err = bind_error(TlsConfig {
        client_ca: files.path("server.key"),
        require_client_cert: true,
        ..files.tls()
    });
    assert!(err.contains("listeners[0].tls.client_ca"), "{err}");
}
