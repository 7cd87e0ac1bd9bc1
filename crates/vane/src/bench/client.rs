//! A minimal raw MQTT 3.1.1 client over TCP for the load generators: CONNECT, SUBSCRIBE and
//! packet encoding through `vane_proto`; the scenarios drive the socket themselves.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vane_proto::{
    Connect, Decoder, Packet, PacketId, ProtocolVersion, PublishProperties, PublishRef, QoS,
    Subscribe, SubscribeProperties, SubscriptionOptions,
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
        let stream = TcpStream::connect(addr)
            .await
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
        connect.keep_alive = 0;
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

    /// Subscribes to one filter and returns the QoS granted.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<QoS> {
        let packet_id = PacketId::new(1).context("packet id")?;
        let subscribe = Subscribe {
            packet_id,
            properties: SubscribeProperties::default(),
            filters: vec![(filter.into(), SubscriptionOptions::qos(qos))],
        };
        self.send(&Packet::Subscribe(subscribe)).await?;
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

    /// Reads until one whole packet is buffered and returns it.
    async fn next_packet(&mut self) -> anyhow::Result<Packet> {
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
    packet_id: Option<PacketId>,
    payload: &[u8],
) {
    let props = PublishProperties::default();
    let publish = PublishRef {
        dup: false,
        qos,
        retain: false,
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
