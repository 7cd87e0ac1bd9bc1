//! Messages as routed through the broker: one shared allocation per publish, plus the small
//! per-subscriber part of each delivery.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use vane_proto::{ByteString, Publish, PublishProperties, QoS, TopicFilter};

/// A string in an allocation of its own (see [`Message::detached`]).
pub fn detach(s: &str) -> ByteString {
    ByteString::from(s)
}

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

    /// A copy in allocations of its own. Decoded messages share the connection's read buffer
    /// (zero copy); one kept for long (a retained message, a will) would keep that whole
    /// buffer alive, so long-lived copies are detached.
    pub fn detached(&self) -> Message {
        let mut properties = self.properties.clone();
        properties.response_topic = properties.response_topic.as_deref().map(detach);
        properties.correlation_data = properties
            .correlation_data
            .as_deref()
            .map(Bytes::copy_from_slice);
        properties.content_type = properties.content_type.as_deref().map(detach);
        for p in &mut properties.user_properties {
            p.name = detach(&p.name);
            p.value = detach(&p.value);
        }
        Message {
            topic: detach(&self.topic),
            payload: Bytes::copy_from_slice(&self.payload),
            properties,
            ..self.clone()
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
    /// that another member can take it if this one leaves without acknowledging it. Boxed:
    /// most deliveries have none, and every delivery is moved several times on its way.
    pub shared: Option<Box<TopicFilter>>,
    /// Its record in the store (a sequence number unique in the broker), when it is kept on
    /// disk for a persistent session; completing it deletes the record.
    pub stored: Option<u64>,
}

impl Delivery {
    /// Bytes this delivery holds, for queue accounting.
    pub fn size(&self) -> usize {
        self.message.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vane_proto::UserProperty;

    fn inside(part: &[u8], whole: &Bytes) -> bool {
        let start = whole.as_ptr() as usize;
        let p = part.as_ptr() as usize;
        p >= start && p < start + whole.len()
    }

    #[test]
    fn a_detached_message_keeps_nothing_of_the_read_buffer() {
        // A read buffer holding a topic, a payload and property strings back to back, as a
        // decoded PUBLISH shares it.
        let buffer = Bytes::from_static(b"site/1/temp21.5text/plainreply/1corrkeyvalue");
        let text = |from: usize, to: usize| {
            ByteString::try_from(buffer.slice(from..to)).expect("ascii is UTF-8")
        };
        let message = Message {
            topic: text(0, 11),
            payload: buffer.slice(11..15),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: PublishProperties {
                content_type: Some(text(15, 25)),
                response_topic: Some(text(25, 32)),
                correlation_data: Some(buffer.slice(32..36)),
                user_properties: vec![UserProperty {
                    name: text(36, 39),
                    value: text(39, 44),
                }],
                ..Default::default()
            },
            origin: 7,
            received: Instant::now(),
        };
        assert!(inside(message.payload.as_ref(), &buffer));
        let detached = message.detached();
        assert_eq!(detached, message, "same content");
        let p = &detached.properties;
        let parts: [&[u8]; 7] = [
            detached.topic.as_bytes(),
            &detached.payload,
            p.content_type.as_deref().unwrap_or_default().as_bytes(),
            p.response_topic.as_deref().unwrap_or_default().as_bytes(),
            p.correlation_data.as_deref().unwrap_or_default(),
            p.user_properties[0].name.as_bytes(),
            p.user_properties[0].value.as_bytes(),
        ];
        for part in parts {
            assert!(!part.is_empty());
            assert!(
                !inside(part, &buffer),
                "{part:?} still points into the read buffer"
            );
        }
    }
}
