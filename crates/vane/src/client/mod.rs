//! The connection shared by `vane pub` and `vane sub`: options in the style of mosquitto_pub /
//! mosquitto_sub, CONNECT with will and credentials, TLS, packet I/O, keep alive and
//! DISCONNECT.

mod tls;

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use vane_proto::{
    ConnAckReason, Connect, Decoder, Disconnect, DisconnectReason, LastWill, Packet, PacketId,
    ProtocolVersion, QoS, UserProperty, WillProperties,
};

pub use tls::TlsArgs;

/// Largest packet accepted from the broker.
const MAX_PACKET: usize = 256 * 1024 * 1024;

/// Protocol version names, as mosquitto spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VersionArg {
    /// MQTT 3.1.
    Mqttv31,
    /// MQTT 3.1.1.
    Mqttv311,
    /// MQTT 5.0.
    Mqttv5,
}

impl VersionArg {
    pub fn protocol(self) -> ProtocolVersion {
        match self {
            VersionArg::Mqttv31 => ProtocolVersion::V3_1,
            VersionArg::Mqttv311 => ProtocolVersion::V3_1_1,
            VersionArg::Mqttv5 => ProtocolVersion::V5,
        }
    }
}

/// Connection options common to `vane pub` and `vane sub`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Broker host name or address.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(short = 'p', long, default_value_t = 1883)]
    pub port: u16,
    /// Client identifier (default: vane-pub-<pid> / vane-sub-<pid>).
    #[arg(short = 'i', long = "id")]
    pub id: Option<String>,
    /// Disable clean session / clean start: resume or keep a persistent session (needs -i).
    #[arg(short = 'c', long = "disable-clean-session")]
    pub no_clean: bool,
    /// Keep alive in seconds (0 disables it).
    #[arg(short = 'k', long = "keepalive", default_value_t = 60)]
    pub keepalive: u16,
    /// MQTT protocol version.
    #[arg(
        short = 'V',
        long = "protocol-version",
        value_enum,
        default_value = "mqttv311"
    )]
    pub version: VersionArg,
    /// Username.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long)]
    pub password: Option<String>,
    /// Session expiry interval in seconds sent with -V mqttv5 (default with -c: never expires).
    #[arg(short = 'x', long = "session-expiry")]
    pub session_expiry: Option<u32>,
    /// Topic of the last will.
    #[arg(long)]
    pub will_topic: Option<String>,
    /// Payload of the last will.
    #[arg(long, requires = "will_topic")]
    pub will_payload: Option<String>,
    /// QoS of the last will.
    #[arg(long, default_value_t = 0, value_parser = parse_qos, requires = "will_topic")]
    pub will_qos: u8,
    /// Retain the last will.
    #[arg(long, requires = "will_topic")]
    pub will_retain: bool,
    /// Speak MQTT over WebSocket, upgrading on this HTTP path (e.g. /mqtt): ws://, or wss://
    /// with --cafile. The subprotocol offered is mqtt (mqttv3.1 with -V mqttv31).
    #[arg(long, value_name = "PATH")]
    pub ws_path: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// Parses a QoS of 0, 1 or 2.
pub fn parse_qos(s: &str) -> Result<u8, String> {
    match s {
        "0" | "1" | "2" => Ok(s.parse().unwrap_or(0)),
        _ => Err(format!("QoS must be 0, 1 or 2, not {s}")),
    }
}

/// QoS from a value checked by [`parse_qos`].
pub fn qos(value: u8) -> QoS {
    QoS::from_u8(value).unwrap_or(QoS::AtMostOnce)
}

/// Builds user properties from the flat NAME VALUE list clap collects.
pub fn user_properties(flat: &[String]) -> Vec<UserProperty> {
    flat.chunks(2)
        .map(|pair| UserProperty {
            name: pair[0].as_str().into(),
            value: pair.get(1).map(String::as_str).unwrap_or("").into(),
        })
        .collect()
}

/// A human-readable CONNACK refusal, with its code as sent on the wire.
fn refusal(reason: ConnAckReason, version: ProtocolVersion) -> String {
    let code = if version.is_v5() {
        reason.as_u8()
    } else {
        reason.v3_return_code()
    };
    let text = match reason {
        ConnAckReason::UnsupportedProtocolVersion => "unsupported protocol version",
        ConnAckReason::ClientIdentifierNotValid => "client identifier not valid",
        ConnAckReason::BadUserNameOrPassword => "bad user name or password",
        ConnAckReason::NotAuthorized => "not authorized",
        ConnAckReason::ServerUnavailable => "server unavailable",
        ConnAckReason::ServerBusy => "server busy",
        ConnAckReason::Banned => "banned",
        ConnAckReason::BadAuthenticationMethod => "bad authentication method",
        ConnAckReason::QuotaExceeded => "quota exceeded",
        _ => "refused",
    };
    format!("connection refused: {text} (0x{code:02X})")
}

/// Upgrades a connected stream to a WebSocket on `path`, offering the MQTT subprotocol of
/// `version`, and returns it as a byte stream.
async fn ws_upgrade<S>(
    stream: S,
    scheme: &str,
    args: &ConnectArgs,
    path: &str,
    version: ProtocolVersion,
) -> anyhow::Result<vane_server::websocket::WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let url = format!("{scheme}://{}:{}{path}", args.host, args.port);
    let mut request = url
        .as_str()
        .into_client_request()
        .with_context(|| format!("{url} is not a valid WebSocket URL"))?;
    let subprotocol = match version {
        ProtocolVersion::V3_1 => "mqttv3.1",
        _ => "mqtt",
    };
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(subprotocol),
    );
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .with_context(|| format!("no WebSocket upgrade at {url} within 30 s"))?
    .with_context(|| format!("WebSocket upgrade at {url} failed"))?;
    Ok(vane_server::websocket::WsStream::new(ws))
}

/// A byte stream to the broker: plain TCP or TLS, either of them under WebSocket.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connected MQTT client.
pub struct Conn {
    stream: Box<dyn Stream>,
    read_buf: BytesMut,
    decoder: Decoder,
    pub version: ProtocolVersion,
    keepalive: u16,
    next_id: u16,
}

impl Conn {
    /// Connects, sends CONNECT and waits for a successful CONNACK.
    pub async fn connect(args: &ConnectArgs, default_id_prefix: &str) -> anyhow::Result<Conn> {
        let version = args.version.protocol();
        let client_id = args
            .id
            .clone()
            .unwrap_or_else(|| format!("{default_id_prefix}-{}", std::process::id()));
        if args.no_clean && args.id.is_none() {
            bail!("-c (disable clean session) needs a client id (-i)");
        }
        // Read the TLS files before connecting, so a bad file is reported as such.
        let tls = tls::Tls::new(&args.tls, &args.host)?;
        let addr = format!("{}:{}", args.host, args.port);
        let tcp = TcpStream::connect(&addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match (&tls, &args.ws_path) {
            (None, None) => Box::new(tcp),
            (None, Some(path)) => Box::new(ws_upgrade(tcp, "ws", args, path, version).await?),
            (Some(tls), ws_path) => {
                let handshake = tokio::time::timeout(Duration::from_secs(30), tls.handshake(tcp))
                    .await
                    .with_context(|| format!("no TLS handshake with {addr} within 30 s"))?
                    .with_context(|| format!("cannot connect to {addr}"))?;
                match ws_path {
                    None => Box::new(handshake),
                    Some(path) => {
                        Box::new(ws_upgrade(handshake, "wss", args, path, version).await?)
                    }
                }
            }
        };
        let mut conn = Conn {
            stream,
            read_buf: BytesMut::with_capacity(8 * 1024),
            decoder: Decoder::with_version(version, MAX_PACKET),
            version,
            keepalive: args.keepalive,
            next_id: 0,
        };
        let mut connect = Connect::new(version, client_id);
        connect.clean_start = !args.no_clean;
        connect.keep_alive = args.keepalive;
        connect.username = args.username.as_deref().map(Into::into);
        connect.password = args
            .password
            .as_ref()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()));
        if version.is_v5() {
            connect.properties.session_expiry_interval = match (args.session_expiry, args.no_clean)
            {
                (Some(secs), _) => Some(secs),
                (None, true) => Some(u32::MAX),
                (None, false) => None,
            };
        }
        if let Some(topic) = &args.will_topic {
            connect.will = Some(LastWill {
                topic: topic.as_str().into(),
                payload: Bytes::copy_from_slice(
                    args.will_payload.as_deref().unwrap_or("").as_bytes(),
                ),
                qos: qos(args.will_qos),
                retain: args.will_retain,
                properties: WillProperties::default(),
            });
        }
        let exchange = async {
            conn.send(&Packet::Connect(Box::new(connect))).await?;
            tokio::time::timeout(Duration::from_secs(30), conn.next_packet())
                .await
                .context("no CONNACK within 30 s")?
        };
        let packet = match exchange.await {
            // With TLS 1.3 the client's side of the handshake ends before the server has
            // checked the client certificate: a refusal shows only now, as an alert or a close.
            Err(e) if tls::certificate_required(&e) && !args.tls.has_client_cert() => {
                return Err(e.context(
                    "the broker requires a client certificate: give one with --cert and --key",
                ));
            }
            Err(e) if args.tls.enabled() && !args.tls.has_client_cert() => {
                return Err(e.context(
                    "no CONNACK over TLS; if the broker's listener requires a client \
                     certificate, give one with --cert and --key",
                ));
            }
            Err(e) if args.tls.enabled() => {
                return Err(e.context(
                    "no CONNACK over TLS; the broker may have refused the client certificate",
                ));
            }
            other => other?,
        };
        match packet {
            Packet::ConnAck(ack) if !ack.reason.is_error() => Ok(conn),
            Packet::ConnAck(ack) => {
                let mut msg = refusal(ack.reason, version);
                if let Some(reason) = &ack.properties.reason_string {
                    msg.push_str(&format!(": {reason}"));
                }
                bail!(msg)
            }
            other => bail!("expected CONNACK, got {:?}", other.packet_type()),
        }
    }

    /// The keep alive period, if enabled.
    pub fn keepalive(&self) -> Option<Duration> {
        (self.keepalive > 0).then(|| Duration::from_secs(u64::from(self.keepalive)))
    }

    /// The next packet identifier.
    pub fn next_packet_id(&mut self) -> PacketId {
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        PacketId::new(self.next_id).expect("non-zero packet id")
    }

    /// Encodes and writes one packet.
    pub async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let mut buf = BytesMut::new();
        packet
            .encode(self.version, &mut buf)
            .context("encoding a packet")?;
        self.stream
            .write_all(&buf)
            .await
            .context("writing to the broker")?;
        self.stream.flush().await.context("writing to the broker")?;
        Ok(())
    }

    /// Reads until one whole packet is buffered and returns it. A DISCONNECT from the broker is
    /// an error carrying its reason. Cancel safe: partial input stays buffered.
    pub async fn next_packet(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(packet) = self
                .decoder
                .decode(&mut self.read_buf)
                .context("malformed packet from the broker")?
            {
                if let Packet::Disconnect(d) = &packet {
                    let mut msg = format!(
                        "the broker disconnected: {:?} (0x{:02X})",
                        d.reason,
                        d.reason.as_u8()
                    );
                    if let Some(reason) = &d.properties.reason_string {
                        msg.push_str(&format!(": {reason}"));
                    }
                    bail!(msg);
                }
                return Ok(packet);
            }
            if self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .context("reading from the broker")?
                == 0
            {
                bail!("the broker closed the connection");
            }
        }
    }

    /// Sends DISCONNECT (normal) and closes the socket.
    pub async fn disconnect(mut self) -> anyhow::Result<()> {
        self.send(&Packet::Disconnect(Disconnect::new(
            DisconnectReason::NormalDisconnection,
        )))
        .await?;
        let _ = self.stream.shutdown().await;
        Ok(())
    }
}
