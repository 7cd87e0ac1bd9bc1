//! `listeners[].proxy_protocol`: a listener behind a load balancer that sends HAProxy's PROXY
//! protocol header. The address in the header is the client's for admission (bans, rate per
//! source), and a connection without a valid header is closed before anything else.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2;
use test_support::vane_config::Config;
use test_support::vane_proto::{ConnAckReason, Packet, ProtocolVersion};
use test_support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn proxied_broker(configure: impl FnOnce(&mut Config)) -> TestBroker {
    TestBroker::start(|c| {
        c.listeners[0].proxy_protocol = true;
        configure(c);
    })
    .await
}

/// Connects as the balancer would: `header` first, then the client's CONNECT.
async fn connect_through(
    addr: SocketAddr,
    header: &[u8],
    client_id: &str,
) -> (TestClient, Option<Packet>) {
    let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
    stream.write_all(header).await.expect("write the header");
    let mut client = TestClient::over(stream, ProtocolVersion::V5);
    let _ = client
        .try_send(&Packet::Connect(Box::new(connect_v5(client_id))))
        .await;
    let answer = client.recv().await;
    (client, answer)
}

fn v1(source: &str) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 40000 1883\r\n").into_bytes()
}

fn v2(command: v2::Command, source: SocketAddr) -> Vec<u8> {
    let server: SocketAddr = "127.0.0.1:1883".parse().expect("addr");
    v2::Builder::with_addresses(
        v2::Version::Two | command,
        v2::Protocol::Stream,
        (source, server),
    )
    .build()
    .expect("a v2 header")
}

fn accepted(answer: &Option<Packet>) -> bool {
    matches!(answer, Some(Packet::ConnAck(a)) if a.reason == ConnAckReason::Success)
}

#[tokio::test]
async fn version_1_and_2_headers_are_read_and_the_session_works() {
    let broker = proxied_broker(|_| {}).await;
    let addr = broker.addr();
    let source: SocketAddr = "198.51.100.20:5000".parse().expect("addr");
    for header in [
        v1("203.0.113.5"),
        v2(v2::Command::Proxy, source),
        // LOCAL: the balancer's own connection (a health check): its own address counts.
        v2(v2::Command::Local, source),
        b"PROXY UNKNOWN\r\n".to_vec(),
    ] {
        let (mut client, answer) = connect_through(addr, &header, &unique_id("px")).await;
        assert!(accepted(&answer), "{header:?}: {answer:?}");
        // The bytes after the header are the client's, untouched: a full round trip.
        client.send(subscribe(1, "px/t", 1)).await;
        client.expect(suback(1, &[1])).await;
        client.send(publish("px/t", 1, 2, b"hi")).await;
        let mut got = (false, false);
        while got != (true, true) {
            match client.recv().await {
                Some(Packet::PubAck(_)) => got.0 = true,
                Some(Packet::Publish(p)) => {
                    assert_eq!(&p.payload[..], b"hi");
                    client.send(puback(p.packet_id.expect("QoS 1").get())).await;
                    got.1 = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_connection_without_a_valid_header_is_closed_without_connack() {
    let broker = proxied_broker(|_| {}).await;
    let addr = broker.addr();
    // A client that bypassed the balancer: its CONNECT is not a PROXY header.
    let (client, answer) = {
        let mut client = TestClient::open(addr, ProtocolVersion::V5).await;
        let _ = client
            .try_send(&Packet::Connect(Box::new(connect_v5(&unique_id("direct")))))
            .await;
        let answer = client.recv().await;
        (client, answer)
    };
    assert_eq!(answer, None, "closed, nothing answered");
    drop(client);
    // A broken header, and a silent connection (closed at the connect timeout).
    let (_c, answer) =
        connect_through(addr, b"PROXY TCP4 300.1.1.1 127.0.0.1 1 2\r\n", "bad").await;
    assert_eq!(answer, None);
    // The listener still serves proper connections.
    let (_c, answer) = connect_through(addr, &v1("203.0.113.6"), &unique_id("ok")).await;
    assert!(accepted(&answer), "{answer:?}");
    broker.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_connect_timeout() {
    let broker = proxied_broker(|c| c.mqtt.connect_timeout = Duration::from_millis(500)).await;
    let mut client = TestClient::open(broker.addr(), ProtocolVersion::V5).await;
    client.set_timeout(Duration::from_secs(5));
    assert_eq!(client.expect_closed().await, None);
    broker.stop().await;
}

#[tokio::test]
async fn bans_and_the_rate_per_source_apply_to_the_address_in_the_header() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bans = dir.path().join("bans");
    std::fs::write(&bans, "address 203.0.113.0/24\n").expect("write the ban file");
    let bans = bans.display().to_string();
    let broker = proxied_broker(move |c| {
        c.limits.ban_file = bans;
        c.limits.connection_rate_per_source = 1;
        c.limits.connection_burst_per_source = 1;
    })
    .await;
    let addr = broker.addr();
    // The balancer's own address (127.0.0.1) is neither banned nor limited: every client
    // comes through it, so the header's address is what counts.
    let (_banned, answer) = connect_through(addr, &v1("203.0.113.9"), "banned").await;
    assert_eq!(answer, None, "a banned address is closed");
    let (_a, answer) = connect_through(addr, &v1("198.51.100.1"), &unique_id("a")).await;
    assert!(accepted(&answer), "{answer:?}");
    let (_b, answer) = connect_through(addr, &v1("198.51.100.2"), &unique_id("b")).await;
    assert!(
        accepted(&answer),
        "another source has its own rate: {answer:?}"
    );
    let (_again, answer) = connect_through(addr, &v1("198.51.100.1"), &unique_id("c")).await;
    assert_eq!(
        answer, None,
        "the same source again within the second: over its rate"
    );
    broker.stop().await;
}
