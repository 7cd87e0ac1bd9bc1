//! Codec micro-benchmarks: PUBLISH decode and encode (QoS 0/1, 64 B/1 KiB, MQTT 3.1.1/5.0),
//! decoding a read buffer of many packets back to back (packets/s), and CONNECT decode.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use vane_proto::{
    Connect, ConnectProperties, Decoder, LastWill, Packet, PacketId, ProtocolVersion, Publish,
    PublishProperties, QoS, UserProperty, WillProperties, DEFAULT_MAX_PACKET_SIZE,
};

const TOPIC: &str = "site/17/line/4/sensor-0042/temp";
/// Packets in the back-to-back buffer of the stream benchmarks.
const STREAM_PACKETS: usize = 1_000;

fn version_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V5 => "v5",
        _ => "v311",
    }
}

fn publish(v: ProtocolVersion, qos: QoS, payload_len: usize) -> Publish {
    let mut p = Publish::new(TOPIC, Bytes::from(vec![0xA5; payload_len]));
    p.qos = qos;
    if qos != QoS::AtMostOnce {
        p.packet_id = PacketId::new(4711);
    }
    if v.is_v5() {
        // A couple of properties, as a typical 5.0 publisher would send.
        p.properties = PublishProperties {
            message_expiry_interval: Some(3_600),
            content_type: Some("application/json".into()),
            user_properties: vec![UserProperty {
                name: "trace-id".into(),
                value: "4bf92f3577b34da6".into(),
            }],
            ..PublishProperties::default()
        };
    }
    p
}

fn encoded(packet: &Packet, v: ProtocolVersion) -> Bytes {
    packet.to_bytes(v).expect("encodable packet")
}

/// Every PUBLISH case: (label, version, qos, payload length).
fn publish_cases() -> Vec<(String, ProtocolVersion, QoS, usize)> {
    let mut cases = Vec::new();
    for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for (size_name, len) in [("64B", 64), ("1KiB", 1024)] {
                let label = format!("{}/qos{}/{}", version_name(v), qos.as_u8(), size_name);
                cases.push((label, v, qos, len));
            }
        }
    }
    cases
}

/// One PUBLISH taken out of a read buffer by the connection's [`Decoder`], as the broker does.
/// Refilling the buffer is setup and not timed.
fn decode_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_publish");
    for (label, v, qos, len) in publish_cases() {
        let frame = encoded(&Packet::Publish(publish(v, qos, len)), v);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::from_parameter(&label), |b| {
            let mut decoder = Decoder::with_version(v, DEFAULT_MAX_PACKET_SIZE);
            b.iter_batched_ref(
                || BytesMut::from(&frame[..]),
                |buf| {
                    decoder
                        .decode(buf)
                        .expect("valid packet")
                        .expect("whole packet")
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// One PUBLISH encoded into a reused write buffer through [`vane_proto::PublishRef`], the path
/// a session takes for every delivery.
fn encode_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_publish");
    for (label, v, qos, len) in publish_cases() {
        let p = publish(v, qos, len);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::from_parameter(&label), |b| {
            let mut buf = BytesMut::with_capacity(4096);
            b.iter(|| {
                buf.clear();
                black_box(&p)
                    .as_ref()
                    .encode(v, &mut buf)
                    .expect("encodable packet");
                black_box(buf.len())
            });
        });
    }
    group.finish();
}

/// A read buffer holding [`STREAM_PACKETS`] PUBLISH packets back to back, decoded until empty;
/// throughput is in packets.
fn decode_stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_stream");
    group.throughput(Throughput::Elements(STREAM_PACKETS as u64));
    for (label, v, qos, len) in publish_cases() {
        let frame = encoded(&Packet::Publish(publish(v, qos, len)), v);
        let mut stream = BytesMut::with_capacity(frame.len() * STREAM_PACKETS);
        for _ in 0..STREAM_PACKETS {
            stream.extend_from_slice(&frame);
        }
        let stream = stream.freeze();
        group.bench_function(BenchmarkId::from_parameter(&label), |b| {
            let mut decoder = Decoder::with_version(v, DEFAULT_MAX_PACKET_SIZE);
            b.iter_batched_ref(
                || BytesMut::from(&stream[..]),
                |buf| {
                    let mut n = 0;
                    while let Some(packet) = decoder.decode(buf).expect("valid packet") {
                        black_box(&packet);
                        n += 1;
                    }
                    assert_eq!(n, STREAM_PACKETS);
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn connect(v: ProtocolVersion) -> Connect {
    let mut c = Connect::new(v, "sensor-gateway-0042");
    c.keep_alive = 30;
    c.username = Some("gateway".into());
    c.password = Some(Bytes::from_static(b"correct horse battery staple"));
    c.will = Some(LastWill {
        topic: "site/17/gateway-0042/status".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties::default(),
    });
    if v.is_v5() {
        c.properties = ConnectProperties {
            session_expiry_interval: Some(3_600),
            receive_maximum: Some(64),
            topic_alias_maximum: Some(16),
            user_properties: vec![UserProperty {
                name: "region".into(),
                value: "eu-west".into(),
            }],
            ..ConnectProperties::default()
        };
    }
    c
}

/// CONNECT (client id, credentials, will; 5.0 with properties) by a fresh [`Decoder`], which
/// learns the protocol version from it.
fn decode_connect(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_connect");
    group.throughput(Throughput::Elements(1));
    for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let frame = encoded(&Packet::Connect(Box::new(connect(v))), v);
        group.bench_function(BenchmarkId::from_parameter(version_name(v)), |b| {
            b.iter_batched_ref(
                || BytesMut::from(&frame[..]),
                |buf| {
                    let mut decoder = Decoder::new(DEFAULT_MAX_PACKET_SIZE);
                    let packet = decoder.decode(buf).expect("valid packet");
                    assert_eq!(decoder.version(), Some(v));
                    packet
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: these are nanosecond-scale routines, and 2 s gives thousands of samples'
    // worth of iterations; the whole file runs in about a minute and a half.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = decode_publish, encode_publish, decode_stream, decode_connect
}
criterion_main!(benches);
