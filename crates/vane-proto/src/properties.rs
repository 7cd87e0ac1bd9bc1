//! MQTT 5.0 properties: one struct per packet kind, one reader that refuses duplicates and
//! properties a packet may not carry, and one visitor that both sizes and writes them.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::error::{DecodeError, EncodeError};
use crate::primitives::{
    check_field_len, field_len, read_binary, read_string, read_u16, read_u32, read_u8, read_varint,
    varint_len, write_binary, write_varint,
};
use crate::qos::QoS;

mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// A user property: a name and value pair, kept in the order received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserProperty {
    /// The property name.
    pub name: ByteString,
    /// The property value.
    pub value: ByteString,
}

/// A decoded property value, typed by the property identifier.
enum Value {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(ByteString),
    Bin(Bytes),
    Pair(ByteString, ByteString),
}

/// Reads the property block of one packet, refusing unknown ids and duplicates.
struct PropertyReader {
    buf: Bytes,
    seen: u64,
    repeatable_subscription_id: bool,
}

impl PropertyReader {
    fn new(buf: &mut Bytes, repeatable_subscription_id: bool) -> Result<Self, DecodeError> {
        let len = read_varint(buf)? as usize;
        if buf.remaining() < len {
            return Err(DecodeError::Truncated);
        }
        Ok(PropertyReader {
            buf: buf.split_to(len),
            seen: 0,
            repeatable_subscription_id,
        })
    }

    fn next(&mut self) -> Result<Option<(u8, Value)>, DecodeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        // The identifier is a variable byte integer; every defined one fits in one byte.
        let raw_id = read_varint(&mut self.buf)?;
        let pid = u8::try_from(raw_id).map_err(|_| DecodeError::InvalidProperty)?;
        if pid >= 64 {
            return Err(DecodeError::InvalidProperty);
        }
        let repeatable = pid == id::USER_PROPERTY
            || (pid == id::SUBSCRIPTION_IDENTIFIER && self.repeatable_subscription_id);
        if !repeatable {
            if self.seen & (1 << pid) != 0 {
                return Err(DecodeError::DuplicateProperty);
            }
            self.seen |= 1 << pid;
        }
        let buf = &mut self.buf;
        let value = match pid {
            id::PAYLOAD_FORMAT_INDICATOR
            | id::REQUEST_PROBLEM_INFORMATION
            | id::REQUEST_RESPONSE_INFORMATION
            | id::MAXIMUM_QOS
            | id::RETAIN_AVAILABLE
            | id::WILDCARD_SUBSCRIPTION_AVAILABLE
            | id::SUBSCRIPTION_IDENTIFIER_AVAILABLE
            | id::SHARED_SUBSCRIPTION_AVAILABLE => Value::Byte(read_u8(buf)?),
            id::SERVER_KEEP_ALIVE
            | id::RECEIVE_MAXIMUM
            | id::TOPIC_ALIAS_MAXIMUM
            | id::TOPIC_ALIAS => Value::U16(read_u16(buf)?),
            id::MESSAGE_EXPIRY_INTERVAL
            | id::SESSION_EXPIRY_INTERVAL
            | id::WILL_DELAY_INTERVAL
            | id::MAXIMUM_PACKET_SIZE => Value::U32(read_u32(buf)?),
            id::SUBSCRIPTION_IDENTIFIER => Value::VarInt(read_varint(buf)?),
            id::CONTENT_TYPE
            | id::RESPONSE_TOPIC
            | id::ASSIGNED_CLIENT_IDENTIFIER
            | id::AUTHENTICATION_METHOD
            | id::RESPONSE_INFORMATION
            | id::SERVER_REFERENCE
            | id::REASON_STRING => Value::Str(read_string(buf)?),
            id::CORRELATION_DATA | id::AUTHENTICATION_DATA => Value::Bin(read_binary(buf)?),
            id::USER_PROPERTY => {
                let name = read_string(buf)?;
                Value::Pair(name, read_string(buf)?)
            }
            _ => return Err(DecodeError::InvalidProperty),
        };
        Ok(Some((pid, value)))
    }
}

fn flag(value: u8) -> Result<bool, DecodeError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidPropertyValue),
    }
}

fn non_zero_u16(value: u16) -> Result<u16, DecodeError> {
    if value == 0 {
        Err(DecodeError::InvalidPropertyValue)
    } else {
        Ok(value)
    }
}

fn non_zero_u32(value: u32) -> Result<u32, DecodeError> {
    if value == 0 {
        Err(DecodeError::InvalidPropertyValue)
    } else {
        Ok(value)
    }
}

/// Receives each property of a struct in turn: used once to size and once to write.
pub(crate) trait Sink {
    fn byte(&mut self, pid: u8, value: u8);
    fn u16(&mut self, pid: u8, value: u16);
    fn u32(&mut self, pid: u8, value: u32);
    fn varint(&mut self, pid: u8, value: u32);
    fn binary(&mut self, pid: u8, value: &[u8]);
    fn pair(&mut self, name: &str, value: &str);

    fn opt_byte(&mut self, pid: u8, value: Option<u8>) {
        if let Some(v) = value {
            self.byte(pid, v);
        }
    }
    fn opt_flag(&mut self, pid: u8, value: Option<bool>) {
        self.opt_byte(pid, value.map(u8::from));
    }
    fn opt_u16(&mut self, pid: u8, value: Option<u16>) {
        if let Some(v) = value {
            self.u16(pid, v);
        }
    }
    fn opt_u32(&mut self, pid: u8, value: Option<u32>) {
        if let Some(v) = value {
            self.u32(pid, v);
        }
    }
    fn opt_str(&mut self, pid: u8, value: &Option<ByteString>) {
        if let Some(v) = value {
            self.binary(pid, v.as_bytes());
        }
    }
    fn opt_bin(&mut self, pid: u8, value: &Option<Bytes>) {
        if let Some(v) = value {
            self.binary(pid, v);
        }
    }
    fn users(&mut self, props: &[UserProperty]) {
        for p in props {
            self.pair(&p.name, &p.value);
        }
    }
}

struct SizeSink {
    len: usize,
    too_long: bool,
}

impl Sink for SizeSink {
    fn byte(&mut self, _: u8, _: u8) {
        self.len += 2;
    }
    fn u16(&mut self, _: u8, _: u16) {
        self.len += 3;
    }
    fn u32(&mut self, _: u8, _: u32) {
        self.len += 5;
    }
    fn varint(&mut self, _: u8, value: u32) {
        self.len += 1 + varint_len(value);
    }
    fn binary(&mut self, _: u8, value: &[u8]) {
        self.too_long |= check_field_len(value.len()).is_err();
        self.len += 1 + field_len(value);
    }
    fn pair(&mut self, name: &str, value: &str) {
        self.too_long |=
            check_field_len(name.len()).is_err() || check_field_len(value.len()).is_err();
        self.len += 1 + field_len(name.as_bytes()) + field_len(value.as_bytes());
    }
}

struct WriteSink<'a>(&'a mut BytesMut);

impl Sink for WriteSink<'_> {
    fn byte(&mut self, pid: u8, value: u8) {
        self.0.put_u8(pid);
        self.0.put_u8(value);
    }
    fn u16(&mut self, pid: u8, value: u16) {
        self.0.put_u8(pid);
        self.0.put_u16(value);
    }
    fn u32(&mut self, pid: u8, value: u32) {
        self.0.put_u8(pid);
        self.0.put_u32(value);
    }
    fn varint(&mut self, pid: u8, value: u32) {
        self.0.put_u8(pid);
        write_varint(self.0, value);
    }
    fn binary(&mut self, pid: u8, value: &[u8]) {
        self.0.put_u8(pid);
        write_binary(self.0, value);
    }
    fn pair(&mut self, name: &str, value: &str) {
        self.0.put_u8(id::USER_PROPERTY);
        write_binary(self.0, name.as_bytes());
        write_binary(self.0, value.as_bytes());
    }
}

/// A property set that can be written to the wire.
pub(crate) trait EncodeProperties {
    fn visit(&self, sink: &mut impl Sink);

    /// Length of the property block, including its own length prefix.
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        let mut size = SizeSink {
            len: 0,
            too_long: false,
        };
        self.visit(&mut size);
        if size.too_long {
            return Err(EncodeError::FieldTooLong);
        }
        let len = u32::try_from(size.len).map_err(|_| EncodeError::PacketTooLarge)?;
        Ok(varint_len(len) + size.len)
    }

    /// Writes the length prefix and the properties; `encoded_len` has validated them.
    fn write(&self, buf: &mut BytesMut) {
        let mut size = SizeSink {
            len: 0,
            too_long: false,
        };
        self.visit(&mut size);
        write_varint(buf, size.len as u32);
        self.visit(&mut WriteSink(buf));
    }
}

/// Properties of CONNECT (MQTT 5.0 section 3.1.2.11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// Session Expiry Interval in seconds; absent means 0.
    pub session_expiry_interval: Option<u32>,
    /// Receive Maximum: QoS 1/2 publishes the client accepts at once.
    pub receive_maximum: Option<u16>,
    /// Maximum Packet Size the client accepts.
    pub maximum_packet_size: Option<u32>,
    /// Topic Alias Maximum the client accepts.
    pub topic_alias_maximum: Option<u16>,
    /// Request Response Information.
    pub request_response_information: Option<bool>,
    /// Request Problem Information.
    pub request_problem_information: Option<bool>,
    /// User properties.
    pub user_properties: Vec<UserProperty>,
    /// Authentication Method.
    pub authentication_method: Option<ByteString>,
    /// Authentication Data.
    pub authentication_data: Option<Bytes>,
}

impl ConnectProperties {
    pub(crate) fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        let mut reader = PropertyReader::new(buf, false)?;
        while let Some((pid, value)) = reader.next()? {
            match (pid, value) {
                (id::SESSION_EXPIRY_INTERVAL, Value::U32(v)) => p.session_expiry_interval = Some(v),
                (id::RECEIVE_MAXIMUM, Value::U16(v)) => p.receive_maximum = Some(non_zero_u16(v)?),
                (id::MAXIMUM_PACKET_SIZE, Value::U32(v)) => {
                    p.maximum_packet_size = Some(non_zero_u32(v)?)
                }
                (id::TOPIC_ALIAS_MAXIMUM, Value::U16(v)) => p.topic_alias_maximum = Some(v),
                (id::REQUEST_RESPONSE_INFORMATION, Value::Byte(v)) => {
                    p.request_response_information = Some(flag(v)?)
                }
                (id::REQUEST_PROBLEM_INFORMATION, Value::Byte(v)) => {
                    p.request_problem_information = Some(flag(v)?)
                }
                (id::USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                (id::AUTHENTICATION_METHOD, Value::Str(v)) => p.authentication_method = Some(v),
                (id::AUTHENTICATION_DATA, Value::Bin(v)) => p.authentication_data = Some(v),
                _ => return Err(DecodeError::InvalidProperty),
            }
        }
        // [MQTT-3.1.2-?] Authentication Data without a method is a protocol error.
        if p.authentication_data.is_some() && p.authentication_method.is_none() {
            return Err(DecodeError::InvalidPropertyValue);
        }
        Ok(p)
    }
}

impl EncodeProperties for ConnectProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.opt_u32(id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        s.opt_u16(id::RECEIVE_MAXIMUM, self.receive_maximum);
        s.opt_u32(id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        s.opt_u16(id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        s.opt_flag(
            id::REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        s.opt_flag(
            id::REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        s.users(&self.user_properties);
        s.opt_str(id::AUTHENTICATION_METHOD, &self.authentication_method);
        s.opt_bin(id::AUTHENTICATION_DATA, &self.authentication_data);
    }
}

/// Properties of the will message in CONNECT (MQTT 5.0 section 3.1.3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// Will Delay Interval in seconds.
    pub will_delay_interval: Option<u32>,
    /// Payload Format Indicator: true when the payload is UTF-8.
    pub payload_format_indicator: Option<bool>,
    /// Message Expiry Interval in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content Type.
    pub content_type: Option<ByteString>,
    /// Response Topic.
    pub response_topic: Option<ByteString>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User properties.
    pub user_properties: Vec<UserProperty>,
}

impl WillProperties {
    pub(crate) fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        let mut reader = PropertyReader::new(buf, false)?;
        while let Some((pid, value)) = reader.next()? {
            match (pid, value) {
                (id::WILL_DELAY_INTERVAL, Value::U32(v)) => p.will_delay_interval = Some(v),
                (id::PAYLOAD_FORMAT_INDICATOR, Value::Byte(v)) => {
                    p.payload_format_indicator = Some(flag(v)?)
                }
                (id::MESSAGE_EXPIRY_INTERVAL, Value::U32(v)) => p.message_expiry_interval = Some(v),
                (id::CONTENT_TYPE, Value::Str(v)) => p.content_type = Some(v),
                (id::RESPONSE_TOPIC, Value::Str(v)) => p.response_topic = Some(v),
                (id::CORRELATION_DATA, Value::Bin(v)) => p.correlation_data = Some(v),
                (id::USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                _ => return Err(DecodeError::InvalidProperty),
            }
        }
        Ok(p)
    }
}

impl EncodeProperties for WillProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.opt_u32(id::WILL_DELAY_INTERVAL, self.will_delay_interval);
        s.opt_flag(id::PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        s.opt_u32(id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        s.opt_str(id::CONTENT_TYPE, &self.content_type);
        s.opt_str(id::RESPONSE_TOPIC, &self.response_topic);
        s.opt_bin(id::CORRELATION_DATA, &self.correlation_data);
        s.users(&self.user_properties);
    }
}

/// Properties of CONNACK (MQTT 5.0 section 3.2.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// Session Expiry Interval the server uses, when it differs from the client's.
    pub session_expiry_interval: Option<u32>,
    /// Receive Maximum of the server.
    pub receive_maximum: Option<u16>,
    /// Maximum QoS the server supports, when below 2.
    pub maximum_qos: Option<QoS>,
    /// Retain Available.
    pub retain_available: Option<bool>,
    /// Maximum Packet Size the server accepts.
    pub maximum_packet_size: Option<u32>,
    /// Assigned Client Identifier.
    pub assigned_client_identifier: Option<ByteString>,
    /// Topic Alias Maximum the server accepts.
    pub topic_alias_maximum: Option<u16>,
    /// Reason String.
    pub reason_string: Option<ByteString>,
    /// User properties.
    pub user_properties: Vec<UserProperty>,
    /// Wildcard Subscription Available.
    pub wildcard_subscription_available: Option<bool>,
    /// Subscription Identifiers Available.
    pub subscription_identifiers_available: Option<bool>,
    /// Shared Subscription Available.
    pub shared_subscription_available: Option<bool>,
    /// Server Keep Alive, overriding the client's.
    pub server_keep_alive: Option<u16>,
    /// Response Information.
    pub response_information: Option<ByteString>,
    /// Server Reference.
    pub server_reference: Option<ByteString>,
    /// Authentication Method.
    pub authentication_method: Option<ByteString>,
    /// Authentication Data.
    pub authentication_data: Option<Bytes>,
}

impl ConnAckProperties {
    pub(crate) fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        let mut reader = PropertyReader::new(buf, false)?;
        while let Some((pid, value)) = reader.next()? {
            match (pid, value) {
                (id::SESSION_EXPIRY_INTERVAL, Value::U32(v)) => p.session_expiry_interval = Some(v),
                (id::RECEIVE_MAXIMUM, Value::U16(v)) => p.receive_maximum = Some(non_zero_u16(v)?),
                (id::MAXIMUM_QOS, Value::Byte(v)) => {
                    p.maximum_qos = Some(match v {
                        0 => QoS::AtMostOnce,
                        1 => QoS::AtLeastOnce,
                        _ => return Err(DecodeError::InvalidPropertyValue),
                    })
                }
                (id::RETAIN_AVAILABLE, Value::Byte(v)) => p.retain_available = Some(flag(v)?),
                (id::MAXIMUM_PACKET_SIZE, Value::U32(v)) => {
                    p.maximum_packet_size = Some(non_zero_u32(v)?)
                }
                (id::ASSIGNED_CLIENT_IDENTIFIER, Value::Str(v)) => {
                    p.assigned_client_identifier = Some(v)
                }
                (id::TOPIC_ALIAS_MAXIMUM, Value::U16(v)) => p.topic_alias_maximum = Some(v),
                (id::REASON_STRING, Value::Str(v)) => p.reason_string = Some(v),
                (id::USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                (id::WILDCARD_SUBSCRIPTION_AVAILABLE, Value::Byte(v)) => {
                    p.wildcard_subscription_available = Some(flag(v)?)
                }
                (id::SUBSCRIPTION_IDENTIFIER_AVAILABLE, Value::Byte(v)) => {
                    p.subscription_identifiers_available = Some(flag(v)?)
                }
                (id::SHARED_SUBSCRIPTION_AVAILABLE, Value::Byte(v)) => {
                    p.shared_subscription_available = Some(flag(v)?)
                }
                (id::SERVER_KEEP_ALIVE, Value::U16(v)) => p.server_keep_alive = Some(v),
                (id::RESPONSE_INFORMATION, Value::Str(v)) => p.response_information = Some(v),
                (id::SERVER_REFERENCE, Value::Str(v)) => p.server_reference = Some(v),
                (id::AUTHENTICATION_METHOD, Value::Str(v)) => p.authentication_method = Some(v),
                (id::AUTHENTICATION_DATA, Value::Bin(v)) => p.authentication_data = Some(v),
                _ => return Err(DecodeError::InvalidProperty),
            }
        }
        Ok(p)
    }
}

impl EncodeProperties for ConnAckProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.opt_u32(id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        s.opt_u16(id::RECEIVE_MAXIMUM, self.receive_maximum);
        s.opt_byte(id::MAXIMUM_QOS, self.maximum_qos.map(QoS::as_u8));
        s.opt_flag(id::RETAIN_AVAILABLE, self.retain_available);
        s.opt_u32(id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        s.opt_str(
            id::ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        );
        s.opt_u16(id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        s.opt_str(id::REASON_STRING, &self.reason_string);
        s.users(&self.user_properties);
        s.opt_flag(
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        s.opt_flag(
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        s.opt_flag(
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        s.opt_u16(id::SERVER_KEEP_ALIVE, self.server_keep_alive);
        s.opt_str(id::RESPONSE_INFORMATION, &self.response_information);
        s.opt_str(id::SERVER_REFERENCE, &self.server_reference);
        s.opt_str(id::AUTHENTICATION_METHOD, &self.authentication_method);
        s.opt_bin(id::AUTHENTICATION_DATA, &self.authentication_data);
    }
}

/// Properties of PUBLISH (MQTT 5.0 section 3.3.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Payload Format Indicator: true when the payload is UTF-8.
    pub payload_format_indicator: Option<bool>,
    /// Message Expiry Interval in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Topic Alias.
    pub topic_alias: Option<u16>,
    /// Response Topic.
    pub response_topic: Option<ByteString>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Subscription Identifiers of the matching subscriptions (server to client only).
    pub subscription_identifiers: Vec<u32>,
    /// Content Type.
    pub content_type: Option<ByteString>,
}

impl PublishProperties {
    /// True when no property is set, the common case for MQTT 3.x traffic.
    pub fn is_empty(&self) -> bool {
        self.payload_format_indicator.is_none()
            && self.message_expiry_interval.is_none()
            && self.topic_alias.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_properties.is_empty()
            && self.subscription_identifiers.is_empty()
            && self.content_type.is_none()
    }

    pub(crate) fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        let mut reader = PropertyReader::new(buf, true)?;
        while let Some((pid, value)) = reader.next()? {
            match (pid, value) {
                (id::PAYLOAD_FORMAT_INDICATOR, Value::Byte(v)) => {
                    p.payload_format_indicator = Some(flag(v)?)
                }
                (id::MESSAGE_EXPIRY_INTERVAL, Value::U32(v)) => p.message_expiry_interval = Some(v),
                (id::TOPIC_ALIAS, Value::U16(v)) => p.topic_alias = Some(v),
                (id::RESPONSE_TOPIC, Value::Str(v)) => p.response_topic = Some(v),
                (id::CORRELATION_DATA, Value::Bin(v)) => p.correlation_data = Some(v),
                (id::USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                (id::SUBSCRIPTION_IDENTIFIER, Value::VarInt(v)) => {
                    p.subscription_identifiers.push(non_zero_u32(v)?)
                }
                (id::CONTENT_TYPE, Value::Str(v)) => p.content_type = Some(v),
                _ => return Err(DecodeError::InvalidProperty),
            }
        }
        Ok(p)
    }
}

impl EncodeProperties for PublishProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.opt_flag(id::PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        s.opt_u32(id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        s.opt_u16(id::TOPIC_ALIAS, self.topic_alias);
        s.opt_str(id::RESPONSE_TOPIC, &self.response_topic);
        s.opt_bin(id::CORRELATION_DATA, &self.correlation_data);
        s.users(&self.user_properties);
        for &sid in &self.subscription_identifiers {
            s.varint(id::SUBSCRIPTION_IDENTIFIER, sid);
        }
        s.opt_str(id::CONTENT_TYPE, &self.content_type);
    }
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckProperties {
    /// Reason String.
    pub reason_string: Option<ByteString>,
    /// User properties.
    pub user_properties: Vec<UserProperty>,
}

impl AckProperties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }

    pub(crate) fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        let mut reader = PropertyReader::new(buf, false)?;
        while let Some((pid, value)) = reader.next()? {
            match (pid, value) {
                (id::REASON_STRING, Value::Str(v)) => p.reason_string = Some(v),
                (id::USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                _ => return Err(DecodeError::InvalidProperty),
            }
        }
        Ok(p)
    }
}

impl EncodeProperties for AckProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.opt_str(id::REASON_STRING, &self.reason_string);
        s.users(&self.user_properties);
    }
}

/// Properties of SUBSCRIBE (MQTT 5.0 section 3.8.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// Subscription Identifier, 1 to 268,435,455.
    pub subscription_identifier: Option<u32>,
    /// User properties.
    pub user_properties: Vec<UserProperty>,
}

impl SubscribeProperties {
    pub(crate) fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        let mut reader = PropertyReader::new(buf, false)?;
        while let Some((pid, value)) = reader.next()? {
            match (pid, value) {
                (id::SUBSCRIPTION_IDENTIFIER, Value::VarInt(v)) => {
                    p.subscription_identifier = Some(non_zero_u32(v)?)
                }
                (id::USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                _ => return Err(DecodeError::InvalidProperty),
            }
        }
        Ok(p)
    }
}

impl EncodeProperties for SubscribeProperties {
    fn visit(&self, s: &mut impl Sink) {
        if let Some(sid) = self.subscription_identifier {
            s.varint(id::SUBSCRIPTION_IDENTIFIER, sid);
        }
        s.users(&self.user_properties);
    }
}

/// The property block of UNSUBSCRIBE: user properties only.
pub(crate) struct UserProperties<'a>(pub &'a [UserProperty]);

impl EncodeProperties for UserProperties<'_> {
    fn visit(&self, s: &mut impl Sink) {
        s.users(self.0);
    }
}

pub(crate) fn decode_user_properties(buf: &mut Bytes) -> Result<Vec<UserProperty>, DecodeError> {
    let mut out = Vec::new();
    let mut reader = PropertyReader::new(buf, false)?;
    while let Some((pid, value)) = reader.next()? {
        match (pid, value) {
            (id::USER_PROPERTY, Value::Pair(name, value)) => out.push(UserProperty { name, value }),
            _ => return Err(DecodeError::InvalidProperty),
        }
    }
    Ok(out)
}

/// Properties of DISCONNECT (MQTT 5.0 section 3.14.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    /// Session Expiry Interval (client to server only).
    pub session_expiry_interval: Option<u32>,
    /// Reason String.
    pub reason_string: Option<ByteString>,
    /// User properties.
    pub user_properties: Vec<UserProperty>,
    /// Server Reference.
    pub server_reference: Option<ByteString>,
}

impl DisconnectProperties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self.session_expiry_interval.is_none()
            && self.reason_string.is_none()
            && self.user_properties.is_empty()
            && self.server_reference.is_none()
    }

    pub(crate) fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        let mut reader = PropertyReader::new(buf, false)?;
        while let Some((pid, value)) = reader.next()? {
            match (pid, value) {
                (id::SESSION_EXPIRY_INTERVAL, Value::U32(v)) => p.session_expiry_interval = Some(v),
                (id::REASON_STRING, Value::Str(v)) => p.reason_string = Some(v),
                (id::USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                (id::SERVER_REFERENCE, Value::Str(v)) => p.server_reference = Some(v),
                _ => return Err(DecodeError::InvalidProperty),
            }
        }
        Ok(p)
    }
}

impl EncodeProperties for DisconnectProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.opt_u32(id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        s.opt_str(id::REASON_STRING, &self.reason_string);
        s.users(&self.user_properties);
        s.opt_str(id::SERVER_REFERENCE, &self.server_reference);
    }
}

/// Properties of AUTH (MQTT 5.0 section 3.15.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthProperties {
    /// Authentication Method.
    pub authentication_method: Option<ByteString>,
    /// Authentication Data.
    pub authentication_data: Option<Bytes>,
    /// Reason String.
    pub reason_string: Option<ByteString>,
    /// User properties.
    pub user_properties: Vec<UserProperty>,
}

impl AuthProperties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self.authentication_method.is_none()
            && self.authentication_data.is_none()
            && self.reason_string.is_none()
            && self.user_properties.is_empty()
    }

    pub(crate) fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        let mut reader = PropertyReader::new(buf, false)?;
        while let Some((pid, value)) = reader.next()? {
            match (pid, value) {
                (id::AUTHENTICATION_METHOD, Value::Str(v)) => p.authentication_method = Some(v),
                (id::AUTHENTICATION_DATA, Value::Bin(v)) => p.authentication_data = Some(v),
                (id::REASON_STRING, Value::Str(v)) => p.reason_string = Some(v),
                (id::USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                _ => return Err(DecodeError::InvalidProperty),
            }
        }
        Ok(p)
    }
}

impl EncodeProperties for AuthProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.opt_str(id::AUTHENTICATION_METHOD, &self.authentication_method);
        s.opt_bin(id::AUTHENTICATION_DATA, &self.authentication_data);
        s.opt_str(id::REASON_STRING, &self.reason_string);
        s.users(&self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_property_is_a_protocol_error() {
        // Session Expiry Interval twice: "It is a Protocol Error to include ... more than once".
        let mut buf = Bytes::from_static(&[10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]);
        assert_eq!(
            ConnectProperties::decode(&mut buf),
            Err(DecodeError::DuplicateProperty)
        );
    }

    #[test]
    fn user_properties_may_repeat_and_keep_order() {
        let p = PublishProperties {
            user_properties: vec![
                UserProperty {
                    name: "a".into(),
                    value: "1".into(),
                },
                UserProperty {
                    name: "a".into(),
                    value: "2".into(),
                },
            ],
            subscription_identifiers: vec![1, 300],
            ..Default::default()
        };
        let mut buf = BytesMut::new();
        p.write(&mut buf);
        assert_eq!(buf.len(), p.encoded_len().unwrap_or(0));
        let decoded = PublishProperties::decode(&mut buf.freeze());
        assert_eq!(decoded, Ok(p));
    }

    #[test]
    fn property_not_allowed_in_packet_is_refused() {
        // Topic Alias (0x23) in CONNECT.
        let mut buf = Bytes::from_static(&[3, 0x23, 0, 1]);
        assert_eq!(
            ConnectProperties::decode(&mut buf),
            Err(DecodeError::InvalidProperty)
        );
    }

    #[test]
    fn receive_maximum_zero_is_refused() {
        let mut buf = Bytes::from_static(&[3, 0x21, 0, 0]);
        assert_eq!(
            ConnectProperties::decode(&mut buf),
            Err(DecodeError::InvalidPropertyValue)
        );
    }

    #[test]
    fn subscription_identifier_zero_is_refused() {
        let mut buf = Bytes::from_static(&[2, 0x0B, 0]);
        assert_eq!(
            SubscribeProperties::decode(&mut buf),
            Err(DecodeError::InvalidPropertyValue)
        );
    }
}
