//! `vane pub`: publish one message, each line of stdin, or the whole of stdin, in the style of
//! mosquitto_pub. QoS 1 and 2 exchanges complete (PUBACK / PUBCOMP) before the next message and
//! before the clean DISCONNECT.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use vane_proto::{Packet, PubRel, Publish, PublishProperties, QoS};

use crate::client::{parse_qos, qos, user_properties, Conn, ConnectArgs};

/// Options of `vane pub`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct PubArgs {
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// Topic to publish to.
    #[arg(short = 't', long)]
    pub topic: String,
    /// QoS of the messages.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = parse_qos)]
    pub qos: u8,
    /// Retain the messages.
    #[arg(short = 'r', long)]
    pub retain: bool,
    /// The message payload.
    #[arg(short = 'm', long, group = "source")]
    pub message: Option<String>,
    /// Send each line of stdin as a message (without its newline).
    #[arg(short = 'l', long = "stdin-line", group = "source")]
    pub stdin_line: bool,
    /// Send the whole of stdin as one message.
    #[arg(short = 's', long = "stdin-file", group = "source")]
    pub stdin_file: bool,
    /// Send an empty (null) message.
    #[arg(short = 'n', long = "null-message", group = "source")]
    pub null_message: bool,
    /// MQTT 5.0 user property NAME VALUE; may be repeated.
    #[arg(long = "user-property", num_args = 2, value_names = ["NAME", "VALUE"])]
    pub user_property: Vec<String>,
    /// MQTT 5.0 message expiry interval in seconds.
    #[arg(long = "message-expiry", value_name = "SECS")]
    pub message_expiry: Option<u32>,
    /// MQTT 5.0 response topic.
    #[arg(long = "response-topic")]
    pub response_topic: Option<String>,
    /// MQTT 5.0 correlation data.
    #[arg(long = "correlation-data")]
    pub correlation_data: Option<String>,
    /// MQTT 5.0 content type.
    #[arg(long = "content-type")]
    pub content_type: Option<String>,
}

/// Runs `vane pub`.
pub fn run(args: PubArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(publish(args))
}

fn properties(args: &PubArgs) -> anyhow::Result<PublishProperties> {
    let props = PublishProperties {
        message_expiry_interval: args.message_expiry,
        response_topic: args.response_topic.as_deref().map(Into::into),
        correlation_data: args
            .correlation_data
            .as_ref()
            .map(|c| Bytes::copy_from_slice(c.as_bytes())),
        user_properties: user_properties(&args.user_property),
        content_type: args.content_type.as_deref().map(Into::into),
        ..PublishProperties::default()
    };
    if !props.is_empty() && !args.conn.version.protocol().is_v5() {
        bail!("message properties need -V mqttv5");
    }
    Ok(props)
}

async fn publish(args: PubArgs) -> anyhow::Result<()> {
    if args.topic.contains(['+', '#']) || args.topic.is_empty() {
        bail!("invalid topic {:?}: wildcards are not allowed", args.topic);
    }
    let props = properties(&args)?;
    let mut template = Publish::new(args.topic.as_str(), Bytes::new());
    template.qos = qos(args.qos);
    template.retain = args.retain;
    template.properties = props;

    if !(args.message.is_some() || args.stdin_line || args.stdin_file || args.null_message) {
        bail!("nothing to publish: give one of -m, -l, -s or -n");
    }
    // Read a whole-stdin payload before connecting, so a slow producer cannot time the
    // connection out.
    let whole = if args.stdin_file {
        let mut buf = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut buf)
            .await
            .context("reading stdin")?;
        Some(Bytes::from(buf))
    } else {
        None
    };

    let mut conn = Conn::connect(&args.conn, "vane-pub").await?;
    if args.stdin_line {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let keepalive = conn.keepalive();
        loop {
            let line = match keepalive {
                Some(period) => match tokio::time::timeout(period, lines.next_line()).await {
                    Ok(line) => line,
                    Err(_) => {
                        ping(&mut conn).await?;
                        continue;
                    }
                },
                None => lines.next_line().await,
            };
            let Some(line) = line.context("reading stdin")? else {
                break;
            };
            let line = line.strip_suffix('\r').unwrap_or(&line);
            send(
                &mut conn,
                &template,
                Bytes::copy_from_slice(line.as_bytes()),
            )
            .await?;
        }
    } else {
        let payload = match (&args.message, whole) {
            (Some(m), _) => Bytes::copy_from_slice(m.as_bytes()),
            (None, Some(all)) => all,
            (None, None) => Bytes::new(),
        };
        send(&mut conn, &template, payload).await?;
    }
    conn.disconnect().await
}

/// Sends PINGREQ and waits for PINGRESP.
async fn ping(conn: &mut Conn) -> anyhow::Result<()> {
    conn.send(&Packet::PingReq).await?;
    loop {
        if let Packet::PingResp = conn.next_packet().await? {
            return Ok(());
        }
    }
}

/// Publishes one message and completes its QoS exchange.
async fn send(conn: &mut Conn, template: &Publish, payload: Bytes) -> anyhow::Result<()> {
    let mut publish = template.clone();
    publish.payload = payload;
    let qos = publish.qos;
    let id = (qos != QoS::AtMostOnce).then(|| conn.next_packet_id());
    publish.packet_id = id;
    conn.send(&Packet::Publish(publish)).await?;
    let Some(id) = id else {
        return Ok(());
    };
    let wait = async {
        loop {
            match conn.next_packet().await? {
                Packet::PubAck(ack) if ack.packet_id == id && qos == QoS::AtLeastOnce => {
                    if ack.reason.is_error() {
                        bail!(
                            "publish refused: {:?} (0x{:02X})",
                            ack.reason,
                            ack.reason.as_u8()
                        );
                    }
                    return Ok(());
                }
                Packet::PubRec(rec) if rec.packet_id == id && qos == QoS::ExactlyOnce => {
                    if rec.reason.is_error() {
                        bail!(
                            "publish refused: {:?} (0x{:02X})",
                            rec.reason,
                            rec.reason.as_u8()
                        );
                    }
                    conn.send(&Packet::PubRel(PubRel::new(id))).await?;
                }
                Packet::PubComp(comp) if comp.packet_id == id && qos == QoS::ExactlyOnce => {
                    if comp.reason.is_error() {
                        bail!(
                            "publish not completed: {:?} (0x{:02X})",
                            comp.reason,
                            comp.reason.as_u8()
                        );
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .context("no acknowledgement from the broker within 30 s")?
}
