//! `vane sub`: subscribe and print messages, in the style of mosquitto_sub. QoS 1 and 2
//! messages are acknowledged (PUBACK, PUBREC then PUBCOMP); `-C` and `-W` end the session with
//! a clean DISCONNECT.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio::time::Instant;
use vane_proto::{
    Packet, PubAck, PubComp, PubRec, Publish, QoS, Subscribe, SubscribeProperties,
    SubscriptionOptions,
};

use crate::client::{parse_qos, qos, user_properties, Conn, ConnectArgs};

/// Options of `vane sub`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct SubArgs {
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// Topic filter to subscribe to; may be repeated.
    #[arg(short = 't', long = "topic", required = true)]
    pub topics: Vec<String>,
    /// Requested QoS of the subscriptions.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = parse_qos)]
    pub qos: u8,
    /// Exit after receiving this many messages.
    #[arg(short = 'C', long = "count")]
    pub count: Option<u64>,
    /// Exit after this many seconds (with an error if -C is not yet reached).
    #[arg(short = 'W', long = "timeout", value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Print "topic payload" instead of the payload alone.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Do not print retained messages (those sent because of the subscription).
    #[arg(short = 'R', long = "no-retained")]
    pub no_retained: bool,
    /// Print MQTT 5.0 message properties, one indented line each, after each message.
    #[arg(long = "print-properties")]
    pub print_properties: bool,
    /// MQTT 5.0 user property NAME VALUE sent with SUBSCRIBE; may be repeated.
    #[arg(long = "user-property", num_args = 2, value_names = ["NAME", "VALUE"])]
    pub user_property: Vec<String>,
}

/// Runs `vane sub`.
pub fn run(args: SubArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(subscribe(args))
}

async fn subscribe(args: SubArgs) -> anyhow::Result<()> {
    if !args.user_property.is_empty() && !args.conn.version.protocol().is_v5() {
        bail!("user properties need -V mqttv5");
    }
    let deadline = args
        .timeout
        .map(|secs| Instant::now() + Duration::from_secs(secs));
    let mut conn = Conn::connect(&args.conn, "vane-sub").await?;
    let mut out = std::io::stdout();

    let packet_id = conn.next_packet_id();
    let subscribe = Subscribe {
        packet_id,
        properties: SubscribeProperties {
            subscription_identifier: None,
            user_properties: user_properties(&args.user_property),
        },
        filters: args
            .topics
            .iter()
            .map(|t| (t.as_str().into(), SubscriptionOptions::qos(qos(args.qos))))
            .collect(),
    };
    conn.send(&Packet::Subscribe(subscribe)).await?;

    let mut received = 0u64;
    let mut subscribed = false;
    // QoS 2 messages received and PUBREC'd, awaiting PUBREL.
    let mut pending: HashSet<u16> = HashSet::new();
    let keepalive = conn.keepalive();
    let mut last_sent = Instant::now();
    // Once -C is reached, QoS 2 exchanges in flight get this long to complete.
    let mut draining_until: Option<Instant> = None;
    loop {
        if let Some(until) = draining_until {
            if pending.is_empty() || Instant::now() >= until {
                break;
            }
        }
        let mut wake = keepalive.map(|k| last_sent + k);
        if let Some(d) = deadline {
            wake = Some(wake.map_or(d, |w| w.min(d)));
        }
        if let Some(d) = draining_until {
            wake = Some(wake.map_or(d, |w| w.min(d)));
        }
        let packet = match wake {
            Some(at) => match tokio::time::timeout_at(at, conn.next_packet()).await {
                Ok(p) => p?,
                Err(_) => {
                    if draining_until.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        let _ = conn.disconnect().await;
                        bail!(
                            "timed out after {} s ({received} message(s) received)",
                            args.timeout.unwrap_or(0)
                        );
                    }
                    conn.send(&Packet::PingReq).await?;
                    last_sent = Instant::now();
                    continue;
                }
            },
            None => conn.next_packet().await?,
        };
        match packet {
            Packet::SubAck(ack) if ack.packet_id == packet_id => {
                for (topic, reason) in args.topics.iter().zip(&ack.reasons) {
                    if reason.is_error() {
                        let _ = conn.disconnect().await;
                        bail!(
                            "subscription to {topic} refused: {:?} (0x{:02X})",
                            reason,
                            reason.as_u8()
                        );
                    }
                }
                subscribed = true;
            }
            Packet::Publish(publish) => {
                match (publish.qos, publish.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => {
                        conn.send(&Packet::PubAck(PubAck::new(id))).await?;
                    }
                    (QoS::ExactlyOnce, Some(id)) => {
                        conn.send(&Packet::PubRec(PubRec::new(id))).await?;
                        if !pending.insert(id.get()) {
                            // A redelivery of a message already printed.
                            last_sent = Instant::now();
                            continue;
                        }
                    }
                    _ => {}
                }
                last_sent = Instant::now();
                if draining_until.is_some() {
                    continue;
                }
                // Before the SUBACK, a retained message can only be one sent for this
                // subscription; after it, the retain flag says so too.
                if args.no_retained && (publish.retain || !subscribed) {
                    continue;
                }
                print_message(&mut out, &publish, &args)?;
                received += 1;
                if args.count.is_some_and(|c| received >= c) {
                    draining_until = Some(Instant::now() + Duration::from_secs(5));
                }
            }
            Packet::PubRel(rel) => {
                pending.remove(&rel.packet_id.get());
                conn.send(&Packet::PubComp(PubComp::new(rel.packet_id)))
                    .await?;
                last_sent = Instant::now();
            }
            _ => {}
        }
    }
    conn.disconnect().await
}

fn print_message(out: &mut impl Write, publish: &Publish, args: &SubArgs) -> anyhow::Result<()> {
    if args.verbose {
        write!(out, "{} ", publish.topic)?;
    }
    out.write_all(&publish.payload)?;
    out.write_all(b"\n")?;
    if args.print_properties {
        let p = &publish.properties;
        if let Some(v) = p.payload_format_indicator {
            writeln!(out, "  payload-format-indicator: {}", u8::from(v))?;
        }
        if let Some(v) = p.message_expiry_interval {
            writeln!(out, "  message-expiry-interval: {v}")?;
        }
        if let Some(v) = &p.content_type {
            writeln!(out, "  content-type: {v}")?;
        }
        if let Some(v) = &p.response_topic {
            writeln!(out, "  response-topic: {v}")?;
        }
        if let Some(v) = &p.correlation_data {
            writeln!(out, "  correlation-data: {}", String::from_utf8_lossy(v))?;
        }
        for id in &p.subscription_identifiers {
            writeln!(out, "  subscription-identifier: {id}")?;
        }
        for up in &p.user_properties {
            writeln!(out, "  user-property: {} {}", up.name, up.value)?;
        }
    }
    out.flush().context("writing stdout")?;
    Ok(())
}
