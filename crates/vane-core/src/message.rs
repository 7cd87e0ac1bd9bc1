//! Messages as routed through the broker: one shared allocation per publish, plus the small
//! per-subscriber part of each delivery.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use vane_proto::{ByteString, Publish, PublishProperties, QoS, TopicFilter};

/// An application message, shared by every subscriber it is delivered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name.
    pub topic: ByteString,
    /// Payload, shared without copying.
    pub payload: Bytes,
    /// QoS the publisher sent it with.
    pub qos: QoS,
    /// Retain flag as published.
    pub retain: bool,
    /// Properties to forward (topic alias and subscription identifiers removed).
    pub properties: PublishProperties,
    /// Identifier of the publishing session, for No Local; 0 for broker-made messages.
    pub origin: u64,
    /// When the broker received it, for message expiry.
    pub received: Instant,
}

impl Message {
    /// Builds a message from an inbound PUBLISH whose topic is resolved.
    pub fn from_publish(publish: Publish, origin: u64, now: Instant) -> Message {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers = Vec::new();
        Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            origin,
            received: now,
        }
    }

    /// Bytes this message holds, for queue accounting.
    pub fn size(&self) -> usize {
        self.topic.len() + self.payload.len()
    }

    /// Seconds of lifetime left at `now`; `None` when it never expires, `Some(0)` when expired.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let interval = self.properties.message_expiry_interval?;
        let elapsed = now.saturating_duration_since(self.received).as_secs();
        Some(u32::try_from(u64::from(interval).saturating_sub(elapsed)).unwrap_or(0))
    }

    /// True once the message expiry interval has passed.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.remaining_expiry(now) == Some(0)
    }
}

/// One message on its way to one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// QoS to deliver at: the lower of the published and the granted QoS.
    pub qos: QoS,
    /// Retain flag to send.
    pub retain: bool,
    /// Identifiers of every matching subscription of this subscriber (MQTT 5.0).
    pub subscription_ids: Vec<u32>,
    /// The shared subscription (`$share/<group>/<filter>`) this delivery was picked for, so
    /// that another member can take it if this one leaves without acknowledging it.
    pub shared: Option<TopicFilter>,
}

impl Delivery {
    /// Bytes this delivery holds, for queue accounting.
    pub fn size(&self) -> usize {
        self.message.size()
    }
}
