//! A minimal raw MQTT 3.1.1 client over TCP for the load generators: CONNECT, SUBSCRIBE and
//! packet encoding through `vane_proto`; the scenarios drive the socket themselves.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use vane_proto::{
    Connect, Decoder, Packet, PacketId, ProtocolVersion, PubAck, PubComp, PubRec, Publish,
    PublishProperties, PublishRef, QoS, Subscribe, SubscribeProperties, SubscriptionOptions,
};

/// Protocol version of every load-generator connection.
pub(crate) const VERSION: ProtocolVersion = ProtocolVersion::V3_1_1;
/// Largest packet the load generators accept from the broker.
const MAX_PACKET: usize = 16 * 1024 * 1024;

/// A connected MQTT session: the socket, undecoded input and the decoder.
pub(crate) struct Client {
    pub(crate) stream: TcpStream,
    pub(crate) read_buf: BytesMut,
    pub(crate) decoder: Decoder,
}

impl Client {
    /// Opens a TCP connection to `addr`, sends CONNECT (clean session, keep alive disabled) and
    /// waits for a successful CONNACK.
    pub(crate) async fn connect(
        addr: SocketAddr,
        client_id: &str,
        read_capacity: usize,
    ) -> anyhow::Result<Client> {
        Client::connect_from(addr, None, client_id, read_capacity, 0).await
    }

    /// Like [`Client::connect`], from the local address `source` (any port) when given, and
    /// with the keep alive `keep_alive` (seconds; 0 disables it).
    pub(crate) async fn connect_from(
        addr: SocketAddr,
        source: Option<IpAddr>,
        client_id: &str,
        read_capacity: usize,
        keep_alive: u16,
    ) -> anyhow::Result<Client> {
        let stream = match source {
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
        let mut client = Client {
            stream,
            read_buf: BytesMut::with_capacity(read_capacity),
            decoder: Decoder::with_version(VERSION, MAX_PACKET),
        };
        let mut connect = Connect::new(VERSION, client_id);
        // The load never pauses long enough to need PINGREQ; a disabled keep alive keeps an idle
        // QoS 0 subscriber from being timed out on long runs.
        connect.keep_alive = keep_alive;
        client.send(&Packet::Connect(Box::new(connect))).await?;
        match client.next_packet().await? {
            Packet::ConnAck(ack) if !ack.reason.is_error() => Ok(client),
            Packet::ConnAck(ack) => bail!("{client_id}: connection refused: {:?}", ack.reason),
            other => bail!(
                "{client_id}: expected CONNACK, got {:?}",
                other.packet_type()
            ),
        }
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
                // Retained messages under the filter may arrive before the SUBACK: skip them.
                _ => {}
            }
        }
    }

    /// Encodes and writes one packet.
    pub(crate) async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let mut buf = BytesMut::new();
        packet.encode(VERSION, &mut buf)?;
        self.stream.write_all(&buf).await?;
        Ok(())
    }

    /// The subscriber's loop until `stop` completes: reads as much as there is, decodes every
    /// packet, acknowledges publishes and hands each to `on_publish`, which says whether it
    /// counts; the count goes to `received` after each read.
    pub(crate) async fn receive(
        &mut self,
        stop: impl Future<Output = ()>,
        received: &AtomicU64,
        mut on_publish: impl FnMut(&Publish) -> bool,
    ) -> anyhow::Result<()> {
        let Client {
            stream,
            read_buf,
            decoder,
        } = self;
        let (mut reader, mut writer) = stream.split();
        let mut out = BytesMut::with_capacity(16 * 1024);
        let read_min = (read_buf.capacity() / 4).max(4096);
        let read_grow = read_buf.capacity().max(16 * 1024);
        tokio::pin!(stop);
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
                    let mut n = 0;
                    while let Some(packet) = decoder.decode(read_buf)? {
                        match packet {
                            Packet::Publish(publish) => {
                                if on_publish(&publish) {
                                    n += 1;
                                }
                                match (publish.qos, publish.packet_id) {
                                    (QoS::AtLeastOnce, Some(id)) => encode_packet(&mut out, &Packet::PubAck(PubAck::new(id))),
                                    (QoS::ExactlyOnce, Some(id)) => encode_packet(&mut out, &Packet::PubRec(PubRec::new(id))),
                                    _ => {}
                                }
                            }
                            Packet::PubRel(rel) => encode_packet(&mut out, &Packet::PubComp(PubComp::new(rel.packet_id))),
                            // A SUBACK when the subscription was sent without waiting for it.
                            Packet::PingResp | Packet::SubAck(_) => {}
                            other => bail!("unexpected {:?} from the broker", other.packet_type()),
                        }
                    }
                    received.fetch_add(n, Relaxed);
                }
                written = writer.write(&out), if !out.is_empty() => {
                    let n = written?;
                    out.advance(n);
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

/// Appends one PUBLISH of `payload` to `topic` with no properties.
pub(crate) fn encode_publish(
    buf: &mut BytesMut,
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
    let _ = publish.encode(VERSION, buf);
}

/// Appends one packet (an acknowledgement) to `buf`.
pub(crate) fn encode_packet(buf: &mut BytesMut, packet: &Packet) {
    // Acknowledgements without properties always encode.
    let _ = packet.encode(VERSION, buf);
}
