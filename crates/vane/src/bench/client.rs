//! A minimal raw MQTT 3.1.1 / 5.0 client over TCP for the load generators: CONNECT, SUBSCRIBE
//! and packet encoding through `vane_proto`; the scenarios drive the socket themselves. A
//! [`Dialer`] says where and how every connection of a run is made.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, Instant};
use vane_proto::{
    Connect, Decoder, Packet, PacketId, ProtocolVersion, PubAck, PubComp, PubRec, Publish,
    PublishProperties, PublishRef, QoS, Subscribe, SubscribeProperties, SubscriptionOptions,
};

/// Largest packet the load generators accept from the broker.
const MAX_PACKET: usize = 16 * 1024 * 1024;
/// Keep alive asked for unless said otherwise: the longest there is, so that no run lasts long
/// enough to need PINGREQ (an idle QoS 0 subscriber sends nothing), while brokers that refuse
/// 0 (rumqttd) accept it.
pub(crate) const KEEP_ALIVE: u16 = u16::MAX;

/// How every connection of a run is made: the broker's address, the protocol version, and the
/// local addresses the connections come from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialer {
    pub(crate) addr: SocketAddr,
    pub(crate) version: ProtocolVersion,
    /// Connection i comes from 127.0.0.(2 + i % sources); 0 lets the system choose.
    sources: u8,
    /// Keep alive asked for in CONNECT, seconds; 0 disables it.
    keep_alive: u16,
    /// Whether sessions outlive their connections: Clean Session 0 (MQTT 3.1.1), or Clean
    /// Start 0 with a Session Expiry Interval that never ends (MQTT 5.0).
    persistent: bool,
}

impl Dialer {
    /// Connections to `addr` speaking `version`, spread over `sources` local addresses
    /// (127.0.0.2 onwards) when the broker is on an IPv4 loopback address: each source address
    /// has its own ephemeral port range, so tens of thousands of connections fit.
    pub(crate) fn new(addr: SocketAddr, version: ProtocolVersion, sources: u8) -> Dialer {
        let loopback = matches!(addr.ip(), IpAddr::V4(ip) if ip.is_loopback());
        Dialer {
            addr,
            version,
            sources: if loopback { sources } else { 0 },
            keep_alive: KEEP_ALIVE,
            persistent: false,
        }
    }

    /// The same, with sessions that outlive their connections when `persistent`: Clean
    /// Session 0 (MQTT 3.1.1), or Clean Start 0 and Session Expiry Interval 0xFFFFFFFF, never
    /// (MQTT 5.0). A connection with the client id of an earlier one resumes its session.
    pub(crate) fn with_persistent(self, persistent: bool) -> Dialer {
        Dialer { persistent, ..self }
    }

    /// The same, asking for a keep alive of `secs` seconds (0 disables it).
    pub(crate) fn with_keep_alive(self, secs: u16) -> Dialer {
        Dialer {
            keep_alive: secs,
            ..self
        }
    }

    /// The local address of connection `i`, when the system does not choose it.
    pub(crate) fn source(&self, i: usize) -> Option<IpAddr> {
        (self.sources > 0).then(|| {
            let host = 2 + (i % usize::from(self.sources)) as u8;
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
        })
    }

    /// Opens connection `i`: TCP from [`Dialer::source`], CONNECT (clean session unless
    /// [`Dialer::with_persistent`]) and a successful CONNACK.
    pub(crate) async fn connect(
        &self,
        i: usize,
        client_id: &str,
        read_capacity: usize,
    ) -> anyhow::Result<Client> {
        let addr = self.addr;
        let stream = match self.source(i) {
            None => TcpStream::connect(addr).await,
            Some(ip) => {
                let socket = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .with_context(|| format!("binding to {ip}"))?;
                socket.connect(addr).await
            }
        }
        .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let version = self.version;
        let mut client = Client {
            stream,
            read_buf: BytesMut::with_capacity(read_capacity),
            decoder: Decoder::with_version(version, MAX_PACKET),
            version,
            keep_alive: self.keep_alive,
            receive_maximum: u16::MAX,
            maximum_qos: QoS::ExactlyOnce,
            session_present: false,
        };
        let mut connect = Connect::new(version, client_id);
        connect.keep_alive = self.keep_alive;
        connect.clean_start = !self.persistent;
        if version.is_v5() {
            connect.properties.maximum_packet_size = Some(MAX_PACKET as u32);
            if self.persistent {
                connect.properties.session_expiry_interval = Some(u32::MAX);
            }
        }
        client.send(&Packet::Connect(Box::new(connect))).await?;
        match client.next_packet().await? {
            Packet::ConnAck(ack) if !ack.reason.is_error() => {
                let props = &ack.properties;
                client.receive_maximum = props.receive_maximum.unwrap_or(u16::MAX).max(1);
                client.keep_alive = props.server_keep_alive.unwrap_or(client.keep_alive);
                client.maximum_qos = props.maximum_qos.unwrap_or(QoS::ExactlyOnce);
                client.session_present = ack.session_present;
                Ok(client)
            }
            Packet::ConnAck(ack) => bail!("{client_id}: connection refused: {:?}", ack.reason),
            other => bail!(
                "{client_id}: expected CONNACK, got {:?}",
                other.packet_type()
            ),
        }
    }
}

/// A connected MQTT session: the socket, undecoded input and the decoder.
pub(crate) struct Client {
    pub(crate) stream: TcpStream,
    pub(crate) read_buf: BytesMut,
    pub(crate) decoder: Decoder,
    pub(crate) version: ProtocolVersion,
    /// Keep alive in force, seconds (the broker's Server Keep Alive, if it sent one); 0: none.
    pub(crate) keep_alive: u16,
    /// The broker's Receive Maximum (MQTT 5.0): QoS 1 and 2 publishes it takes unacknowledged.
    pub(crate) receive_maximum: u16,
    /// The highest QoS the broker accepts publishes at (MQTT 5.0).
    pub(crate) maximum_qos: QoS,
    /// The CONNACK's Session Present flag: the broker resumed a session of this client id.
    pub(crate) session_present: bool,
}

impl Client {
    /// Fails when the broker does not accept publishes at `qos` (MQTT 5.0 Maximum QoS).
    pub(crate) fn check_qos(&self, qos: QoS) -> anyhow::Result<()> {
        if qos > self.maximum_qos {
            bail!(
                "the broker accepts publishes at QoS {} at most",
                self.maximum_qos.as_u8()
            );
        }
        Ok(())
    }

    /// Sends SUBSCRIBE for one filter, packet id 1, without waiting for the SUBACK.
    pub(crate) async fn send_subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let subscribe = Subscribe {
            packet_id: PacketId::new(1).context("packet id")?,
            properties: SubscribeProperties::default(),
            filters: vec![(filter.into(), SubscriptionOptions::qos(qos))],
        };
        self.send(&Packet::Subscribe(subscribe)).await
    }

    /// Subscribes to one filter and returns the QoS granted.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<QoS> {
        let packet_id = PacketId::new(1).context("packet id")?;
        self.send_subscribe(filter, qos).await?;
        loop {
            match self.next_packet().await? {
                Packet::SubAck(ack) if ack.packet_id == packet_id => {
                    return match ack.reasons.first() {
                        Some(r) if !r.is_error() => QoS::from_u8(r.as_u8()).context("granted QoS"),
                        Some(r) => bail!("subscription to {filter} refused: {r:?}"),
                        None => bail!("SUBACK without a return code"),
                    };
                }
                Packet::SubAck(_) => bail!("SUBACK for an unknown packet id"),
                // Retained (or, for a resumed session, queued) messages may arrive before the
                // SUBACK: skip them, acknowledging those at QoS 1 and 2 so that they do not
                // hold the broker's in-flight window.
                Packet::Publish(publish) => match (publish.qos, publish.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => {
                        self.send(&Packet::PubAck(PubAck::new(id))).await?
                    }
                    (QoS::ExactlyOnce, Some(id)) => {
                        self.send(&Packet::PubRec(PubRec::new(id))).await?
                    }
                    _ => {}
                },
                Packet::PubRel(rel) => {
                    self.send(&Packet::PubComp(PubComp::new(rel.packet_id)))
                        .await?;
                }
                _ => {}
            }
        }
    }

    /// Encodes and writes one packet.
    pub(crate) async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let mut buf = BytesMut::new();
        packet.encode(self.version, &mut buf)?;
        self.stream.write_all(&buf).await?;
        Ok(())
    }

    /// Half the keep alive: how often an otherwise silent client sends PINGREQ.
    pub(crate) fn ping_interval(&self) -> Option<Duration> {
        (self.keep_alive > 0).then(|| Duration::from_secs(u64::from(self.keep_alive)) / 2)
    }

    /// The subscriber's loop until `stop` completes: reads as much as there is, decodes every
    /// packet, acknowledges publishes and hands each to `on_publish`, which says whether it
    /// counts; the count goes to `received` after each read. PINGREQ goes out every
    /// [`Client::ping_interval`].
    pub(crate) async fn receive(
        &mut self,
        stop: impl Future<Output = ()>,
        received: &AtomicU64,
        mut on_publish: impl FnMut(&Publish) -> bool,
    ) -> anyhow::Result<()> {
        let ping_every = self.ping_interval();
        let Client {
            stream,
            read_buf,
            decoder,
            version,
            ..
        } = self;
        let version = *version;
        let ping = sleep(ping_every.unwrap_or(Duration::MAX));
        let (mut reader, mut writer) = stream.split();
        let mut out = BytesMut::with_capacity(16 * 1024);
        let read_min = (read_buf.capacity() / 4).max(4096);
        let read_grow = read_buf.capacity().max(16 * 1024);
        tokio::pin!(stop, ping);
        // Packets already read (with the CONNACK or SUBACK) come first: a resumed session's
        // queued messages may be there.
        let n = decode_incoming(decoder, read_buf, &mut out, version, &mut on_publish)?;
        received.fetch_add(n, Relaxed);
        loop {
            if read_buf.capacity() - read_buf.len() < read_min {
                read_buf.reserve(read_grow);
            }
            tokio::select! {
                biased;
                _ = &mut stop => return Ok(()),
                read = reader.read_buf(read_buf) => {
                    if read? == 0 {
                        bail!("the broker closed the connection");
                    }
                    let n = decode_incoming(decoder, read_buf, &mut out, version, &mut on_publish)?;
                    received.fetch_add(n, Relaxed);
                }
                written = writer.write(&out), if !out.is_empty() => {
                    let n = written?;
                    out.advance(n);
                }
                () = &mut ping, if ping_every.is_some() => {
                    encode_packet(&mut out, version, &Packet::PingReq);
                    if let Some(every) = ping_every {
                        ping.as_mut().reset(Instant::now() + every);
                    }
                }
            }
        }
    }

    /// Reads until one whole packet is buffered and returns it.
    pub(crate) async fn next_packet(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(packet) = self.decoder.decode(&mut self.read_buf)? {
                return Ok(packet);
            }
            if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                bail!("the broker closed the connection");
            }
        }
    }
}

/// Decodes every whole packet in `read_buf`: hands each publish to `on_publish` and appends
/// the acknowledgements due to `out`. Returns how many publishes `on_publish` counted.
fn decode_incoming(
    decoder: &mut Decoder,
    read_buf: &mut BytesMut,
    out: &mut BytesMut,
    version: ProtocolVersion,
    on_publish: &mut impl FnMut(&Publish) -> bool,
) -> anyhow::Result<u64> {
    let mut n = 0;
    while let Some(packet) = decoder.decode(read_buf)? {
        match packet {
            Packet::Publish(publish) => {
                if on_publish(&publish) {
                    n += 1;
                }
                match (publish.qos, publish.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => {
                        encode_packet(out, version, &Packet::PubAck(PubAck::new(id)));
                    }
                    (QoS::ExactlyOnce, Some(id)) => {
                        encode_packet(out, version, &Packet::PubRec(PubRec::new(id)));
                    }
                    _ => {}
                }
            }
            Packet::PubRel(rel) => {
                encode_packet(out, version, &Packet::PubComp(PubComp::new(rel.packet_id)));
            }
            // A SUBACK when the subscription was sent without waiting for it.
            Packet::PingResp | Packet::SubAck(_) => {}
            other => bail!("unexpected {:?} from the broker", other.packet_type()),
        }
    }
    Ok(n)
}

/// Appends one PUBLISH of `payload` to `topic` with no properties.
pub(crate) fn encode_publish(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    topic: &str,
    qos: QoS,
    retain: bool,
    packet_id: Option<PacketId>,
    payload: &[u8],
) {
    let props = PublishProperties::default();
    let publish = PublishRef {
        dup: false,
        qos,
        retain,
        topic,
        packet_id,
        properties: &props,
        topic_alias: None,
        subscription_identifiers: &[],
        message_expiry_interval: None,
        payload,
    };
    // Encoding fails only on a topic longer than 64 KiB or a packet id that does not match the
    // QoS, both excluded by construction.
    let _ = publish.encode(version, buf);
}

/// Appends one packet (an acknowledgement) to `buf`.
pub(crate) fn encode_packet(buf: &mut BytesMut, version: ProtocolVersion, packet: &Packet) {
    // Acknowledgements without properties always encode.
    let _ = packet.encode(version, buf);
}
