//! Test helpers for Vane: [`TestBroker`], a real broker bound to `127.0.0.1:0` inside the
//! test's tokio runtime, and [`TestClient`], a raw MQTT client over a `TcpStream` that sends
//! exactly the bytes a test asks for and reports exactly what the broker sends back.
//!
//! Packets are encoded and decoded with `vane_proto`; hostile input goes out through
//! [`TestClient::send_raw`]. Every wait is bounded (2 s by default), so a broker that hangs
//! fails the test instead of hanging it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vane_config::{Config, ListenerConfig};
use vane_proto::{
    ConnAck, ConnAckReason, Connect, DecodeError, Decoder, Disconnect, DisconnectReason, LastWill,
    Packet, PacketId, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS, SubAck,
    SubAckReason, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, DEFAULT_MAX_PACKET_SIZE,
};
use vane_server::Server;

pub mod certs;
pub mod enhanced_auth;
pub mod process;

pub use vane_config;
pub use vane_proto;

/// How long [`TestClient`] waits for a packet or a close unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// The broker
// ---------------------------------------------------------------------------------------------

/// A broker serving on a free loopback port, in a task of the current tokio runtime. Dropping
/// it asks the server to shut down.
pub struct TestBroker {
    addr: SocketAddr,
    addrs: Vec<SocketAddr>,
    reload: vane_server::ReloadHandle,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestBroker {
    /// Starts a broker with the default configuration, changed by `configure`. The listener is
    /// set to `127.0.0.1:0` before `configure` runs; the configuration must validate.
    pub async fn start(configure: impl FnOnce(&mut Config)) -> TestBroker {
        let mut config = Config {
            listeners: vec![ListenerConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..Default::default()
            }],
            ..Config::default()
        };
        // Tests that want a store configure one (in a directory of their own).
        config.store.durability = vane_config::Durability::Memory;
        configure(&mut config);
        if let Err(e) = config.validate() {
            panic!("test broker configuration is invalid: {e}");
        }
        let server = Server::bind(config)
            .await
            .expect("test broker binds 127.0.0.1:0");
        let addrs = server.local_addrs();
        let addr = *addrs.first().expect("test broker has a listener");
        let reload = server.reload_handle();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestBroker {
            addr,
            addrs,
            reload,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Starts a broker with the default configuration.
    pub async fn start_default() -> TestBroker {
        TestBroker::start(|_| {}).await
    }

    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The addresses of every listener, in the configuration's order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Reloads the ACL and the password file, as SIGHUP does for `vane serve`.
    pub fn reload(&self) -> Result<(), vane_server::ReloadError> {
        self.reload.reload()
    }

    /// Shuts the broker down and waits for `Server::run` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("Server::run returns within 5 s of shutdown")
                .expect("server task did not panic");
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The raw client
// ---------------------------------------------------------------------------------------------

/// What the next read from the broker brought.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // short-lived, matched by value in tests
pub enum Received {
    /// A whole packet.
    Packet(Packet),
    /// The broker closed the connection (end of stream, or reset).
    Closed,
    /// Nothing arrived in time.
    Timeout,
    /// The broker sent bytes that do not decode as a packet.
    Malformed(DecodeError),
    /// Another I/O error.
    Error(std::io::Error),
}

/// A byte stream a [`TestClient`] can speak MQTT over: TCP, or TLS over TCP.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for S {}

/// A raw MQTT client: no keep-alive, no retries, no automatic acknowledgements.
pub struct TestClient {
    stream: Box<dyn ClientStream>,
    version: ProtocolVersion,
    decoder: Decoder,
    read_buf: BytesMut,
    eof: bool,
    timeout: Duration,
}

impl TestClient {
    /// Opens a TCP connection and sends nothing. `version` decodes what the broker sends.
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> TestClient {
        let stream = tokio::time::timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("TCP connect within 2 s")
            .expect("TCP connect to the test broker");
        let _ = stream.set_nodelay(true);
        TestClient::over(stream, version)
    }

    /// A client over an already open stream (a TLS stream, say), which has sent nothing yet.
    /// `version` decodes what the broker sends.
    pub fn over(stream: impl ClientStream + 'static, version: ProtocolVersion) -> TestClient {
        TestClient {
            stream: Box::new(stream),
            version,
            decoder: Decoder::with_version(version, DEFAULT_MAX_PACKET_SIZE),
            read_buf: BytesMut::with_capacity(4096),
            eof: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Connects, sends `connect` and returns the client with the broker's CONNACK, whatever
    /// its reason code.
    pub async fn connect_with_ack(addr: SocketAddr, connect: Connect) -> (TestClient, ConnAck) {
        let mut client = TestClient::open(addr, connect.protocol).await;
        client.send(Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => (client, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Like [`TestClient::connect_with_ack`], but a refused or failed TCP connection, a close
    /// before CONNACK or a wait longer than `timeout` is an error instead of a panic: for
    /// clients that reconnect while a broker restarts.
    pub async fn try_connect(
        addr: SocketAddr,
        connect: Connect,
        timeout: Duration,
    ) -> std::io::Result<(TestClient, ConnAck)> {
        use std::io::{Error, ErrorKind};
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::new(ErrorKind::TimedOut, "TCP connect timed out"))??;
        let _ = stream.set_nodelay(true);
        let version = connect.protocol;
        let mut client = TestClient::over(stream, version);
        client
            .try_send_raw(&encode(version, &Packet::Connect(Box::new(connect))))
            .await?;
        match client.next_event(timeout).await {
            Received::Packet(Packet::ConnAck(ack)) => Ok((client, ack)),
            Received::Packet(p) => Err(Error::other(format!("expected CONNACK, got {p:?}"))),
            Received::Closed => Err(Error::new(
                ErrorKind::ConnectionReset,
                "closed before CONNACK",
            )),
            Received::Timeout => Err(Error::new(ErrorKind::TimedOut, "no CONNACK in time")),
            Received::Malformed(e) => Err(Error::other(format!("malformed CONNACK: {e}"))),
            Received::Error(e) => Err(e),
        }
    }

    /// Encodes and sends a packet, reporting a write error instead of panicking.
    pub async fn try_send(&mut self, packet: &Packet) -> std::io::Result<()> {
        let bytes = encode(self.version, packet);
        self.try_send_raw(&bytes).await
    }

    /// Connects with `connect` and checks the broker accepted it.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> TestClient {
        let (client, ack) = TestClient::connect_with_ack(addr, connect).await;
        assert_eq!(
            ack.reason,
            ConnAckReason::Success,
            "CONNECT refused: {ack:?}"
        );
        client
    }

    /// The protocol version packets are encoded and decoded with.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Changes the default wait of [`TestClient::recv`] and [`TestClient::expect_closed`].
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Encodes and sends a packet.
    pub async fn send(&mut self, packet: Packet) {
        let bytes = encode(self.version, &packet);
        self.send_raw(&bytes).await;
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes).await.expect("write to the broker");
    }

    /// Sends bytes as they are, reporting a write error (the broker may have closed already).
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Waits up to `timeout` for the next packet or the close.
    pub async fn next_event(&mut self, timeout: Duration) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(packet)) => return Received::Packet(packet),
                Ok(None) => {}
                Err(e) => return Received::Malformed(e),
            }
            if self.eof {
                return Received::Closed;
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.read_buf)).await
            {
                Err(_) => return Received::Timeout,
                Ok(Ok(0)) => {
                    self.eof = true;
                    if !self.read_buf.is_empty() {
                        panic!(
                            "broker closed the connection in the middle of a packet: {:02x?}",
                            &self.read_buf[..]
                        );
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) if is_reset(&e) => {
                    self.eof = true;
                    self.read_buf.clear();
                }
                Ok(Err(e)) => return Received::Error(e),
            }
        }
    }

    /// The next packet, or `None` when the broker closed the connection. Panics when nothing
    /// arrives within the timeout.
    pub async fn recv(&mut self) -> Option<Packet> {
        match self.next_event(self.timeout).await {
            Received::Packet(p) => Some(p),
            Received::Closed => None,
            Received::Timeout => panic!("no packet from the broker within {:?}", self.timeout),
            Received::Malformed(e) => panic!("broker sent a malformed packet: {e}"),
            Received::Error(e) => panic!("read error: {e}"),
        }
    }

    /// Receives the next packet and checks it equals `expected`.
    pub async fn expect(&mut self, expected: Packet) {
        let got = self.recv().await;
        assert_eq!(
            got.as_ref(),
            Some(&expected),
            "expected {expected:?}, got {got:?}"
        );
    }

    /// Receives the next packet, which must be a PUBLISH.
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Checks the broker closes the connection within the timeout, sending nothing first but,
    /// to an MQTT 5.0 client, a DISCONNECT, which is returned.
    pub async fn expect_closed(&mut self) -> Option<Disconnect> {
        let mut disconnect = None;
        loop {
            match self.next_event(self.timeout).await {
                Received::Closed => return disconnect,
                Received::Packet(Packet::Disconnect(d))
                    if self.version.is_v5() && disconnect.is_none() =>
                {
                    disconnect = Some(d);
                }
                Received::Packet(p) => panic!("expected the connection to close, got {p:?}"),
                Received::Timeout => panic!("connection still open after {:?}", self.timeout),
                Received::Malformed(e) => panic!("broker sent a malformed packet: {e}"),
                Received::Error(e) => panic!("read error: {e}"),
            }
        }
    }

    /// Checks the broker closes the connection and, for MQTT 5.0, says why with `reason`.
    pub async fn expect_closed_with(&mut self, reason: DisconnectReason) {
        let d = self.expect_closed().await;
        if self.version.is_v5() {
            assert_eq!(
                d.map(|d| d.reason),
                Some(reason),
                "DISCONNECT reason before the close"
            );
        }
    }

    /// Checks nothing arrives, and the connection stays open, for `duration`.
    pub async fn expect_nothing(&mut self, duration: Duration) {
        match self.next_event(duration).await {
            Received::Timeout => {}
            Received::Packet(p) => panic!("expected nothing for {duration:?}, got {p:?}"),
            Received::Closed => {
                panic!("expected nothing for {duration:?}, but the connection closed")
            }
            Received::Malformed(e) => panic!("broker sent a malformed packet: {e}"),
            Received::Error(e) => panic!("read error: {e}"),
        }
    }

    /// Sends DISCONNECT and waits for the broker to close the connection.
    pub async fn disconnect(mut self) {
        self.send(disconnect()).await;
        let _ = self.expect_closed().await;
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe)
}

// ---------------------------------------------------------------------------------------------
// Packet builders
// ---------------------------------------------------------------------------------------------

/// Encodes a packet for `version`.
pub fn encode(version: ProtocolVersion, packet: &Packet) -> Bytes {
    packet.to_bytes(version).expect("packet encodes")
}

/// A packet identifier; panics on 0, which has none.
pub fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("packet id is not 0")
}

/// A QoS from its wire value.
pub fn qos(level: u8) -> QoS {
    QoS::from_u8(level).expect("QoS is 0, 1 or 2")
}

/// A client id unique within this test process, starting with `prefix`.
pub fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// MQTT 3.1 CONNECT (`MQIsdp`, level 3), clean session, keep alive 60 s.
pub fn connect_v31(client_id: &str) -> Connect {
    Connect::new(ProtocolVersion::V3_1, client_id)
}

/// MQTT 3.1.1 CONNECT, clean session, keep alive 60 s.
pub fn connect_v311(client_id: &str) -> Connect {
    Connect::new(ProtocolVersion::V3_1_1, client_id)
}

/// MQTT 3.1.1 CONNECT with Clean Session 0.
pub fn connect_v311_persistent(client_id: &str) -> Connect {
    Connect {
        clean_start: false,
        ..connect_v311(client_id)
    }
}

/// MQTT 5.0 CONNECT, clean start, session expiry 0, keep alive 60 s.
pub fn connect_v5(client_id: &str) -> Connect {
    Connect::new(ProtocolVersion::V5, client_id)
}

/// MQTT 5.0 CONNECT with Clean Start 0 and a session that outlives the connection.
pub fn connect_v5_persistent(client_id: &str) -> Connect {
    let mut c = Connect {
        clean_start: false,
        ..connect_v5(client_id)
    };
    c.properties.session_expiry_interval = Some(u32::MAX);
    c
}

/// Adds a will message to a CONNECT.
pub fn with_will(
    mut connect: Connect,
    topic: &str,
    payload: &str,
    will_qos: u8,
    retain: bool,
) -> Connect {
    connect.will = Some(LastWill {
        topic: topic.to_owned().into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: qos(will_qos),
        retain,
        properties: Default::default(),
    });
    connect
}

/// Sets the keep alive of a CONNECT.
pub fn with_keep_alive(mut connect: Connect, seconds: u16) -> Connect {
    connect.keep_alive = seconds;
    connect
}

/// PUBLISH; `packet_id` is ignored at QoS 0.
pub fn publish(topic: &str, qos_level: u8, packet_id: u16, payload: impl AsRef<[u8]>) -> Packet {
    Packet::Publish(publish_packet(topic, qos_level, packet_id, payload, false))
}

/// PUBLISH with RETAIN set.
pub fn publish_retained(
    topic: &str,
    qos_level: u8,
    packet_id: u16,
    payload: impl AsRef<[u8]>,
) -> Packet {
    Packet::Publish(publish_packet(topic, qos_level, packet_id, payload, true))
}

/// The PUBLISH struct, for tests that change a field (DUP, properties).
pub fn publish_packet(
    topic: &str,
    qos_level: u8,
    packet_id: u16,
    payload: impl AsRef<[u8]>,
    retain: bool,
) -> Publish {
    let q = qos(qos_level);
    let mut p = Publish::new(topic.to_owned(), Bytes::copy_from_slice(payload.as_ref()));
    p.qos = q;
    p.retain = retain;
    p.packet_id = (q != QoS::AtMostOnce).then(|| pid(packet_id));
    p
}

/// SUBSCRIBE to one filter.
pub fn subscribe(packet_id: u16, filter: &str, qos_level: u8) -> Packet {
    subscribe_many(packet_id, &[(filter, qos_level)])
}

/// SUBSCRIBE to several filters.
pub fn subscribe_many(packet_id: u16, filters: &[(&str, u8)]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(packet_id),
        properties: Default::default(),
        filters: filters
            .iter()
            .map(|(f, q)| ((*f).to_owned().into(), SubscriptionOptions::qos(qos(*q))))
            .collect(),
    })
}

/// SUBACK with return codes as on the wire (0, 1, 2, 0x80, or MQTT 5.0 reason codes).
pub fn suback(packet_id: u16, codes: &[u8]) -> Packet {
    Packet::SubAck(SubAck {
        packet_id: pid(packet_id),
        properties: Default::default(),
        reasons: codes
            .iter()
            .map(|&c| SubAckReason::from_u8(c).expect("valid SUBACK code"))
            .collect(),
    })
}

/// UNSUBSCRIBE from one filter.
pub fn unsubscribe(packet_id: u16, filter: &str) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(packet_id),
        user_properties: Vec::new(),
        filters: vec![filter.to_owned().into()],
    })
}

/// UNSUBACK as an MQTT 3.x client decodes it (no reason codes).
pub fn unsuback(packet_id: u16) -> Packet {
    Packet::UnsubAck(UnsubAck {
        packet_id: pid(packet_id),
        properties: Default::default(),
        reasons: Vec::new(),
    })
}

/// PUBACK.
pub fn puback(packet_id: u16) -> Packet {
    Packet::PubAck(PubAck::new(pid(packet_id)))
}

/// PUBREC.
pub fn pubrec(packet_id: u16) -> Packet {
    Packet::PubRec(PubRec::new(pid(packet_id)))
}

/// PUBREL.
pub fn pubrel(packet_id: u16) -> Packet {
    Packet::PubRel(PubRel::new(pid(packet_id)))
}

/// PUBCOMP.
pub fn pubcomp(packet_id: u16) -> Packet {
    Packet::PubComp(PubComp::new(pid(packet_id)))
}

/// A normal DISCONNECT.
pub fn disconnect() -> Packet {
    Packet::Disconnect(Disconnect::new(DisconnectReason::NormalDisconnection))
}

/// PINGREQ.
pub fn pingreq() -> Packet {
    Packet::PingReq
}

/// Checks the broker still serves a well-behaved client: a fresh MQTT 3.1.1 client subscribes
/// at QoS 1, publishes to itself at QoS 1, and gets both the PUBACK and the message.
pub async fn assert_broker_healthy(addr: SocketAddr) {
    let id = unique_id("healthy");
    let topic = format!("health/{id}");
    let mut c = TestClient::connect(addr, connect_v311(&id)).await;
    c.send(subscribe(1, &topic, 1)).await;
    c.expect(suback(1, &[1])).await;
    c.send(publish(&topic, 1, 2, "ping")).await;
    let mut got_puback = false;
    let mut got_message = None;
    while !got_puback || got_message.is_none() {
        match c.recv().await {
            Some(Packet::PubAck(a)) if a.packet_id == pid(2) && !got_puback => got_puback = true,
            Some(Packet::Publish(p)) if got_message.is_none() => {
                assert_eq!(
                    (p.topic.as_ref(), &p.payload[..], p.qos),
                    (topic.as_str(), &b"ping"[..], QoS::AtLeastOnce)
                );
                got_message = p.packet_id;
            }
            other => panic!("health check: unexpected {other:?}"),
        }
    }
    if let Some(id) = got_message {
        c.send(Packet::PubAck(PubAck::new(id))).await;
    }
    c.disconnect().await;
}
