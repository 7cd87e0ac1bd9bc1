//! Watching the broker: the `$SYS/broker/...` topics it publishes every `sys.interval`
//! (values that follow clients and messages, [MQTT-4.7.2-1] for `#`, the ACL, interval 0) and
//! the Prometheus endpoint of `metrics.bind` (parseable text whose counters move, refusals
//! counted by cause, a failed bind stops the start, shutdown stops it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use test_support::process::{free_loopback_addr, TempDir};
use test_support::vane_config::Config;
use test_support::vane_proto::{ByteString, ConnAckReason, Packet, PubAck, PubAckReason};
use test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for a value to come (several `$SYS` rounds at 1 s): a bound on a
/// failure, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(15);

fn fast_sys(c: &mut Config) {
    c.sys.interval = Duration::from_secs(1);
}

/// Reads `$SYS` publishes on `client` until `topic` carries a value `accept` takes; returns
/// it. Other topics are skipped.
async fn wait_sys_value(
    client: &mut TestClient,
    topic: &str,
    mut accept: impl FnMut(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "no acceptable value of {topic}; saw {seen:?}"
        );
        match client.next_event(left).await {
            Received::Packet(Packet::Publish(p)) if &*p.topic == topic => {
                let value = String::from_utf8_lossy(&p.payload).into_owned();
                if accept(&value) {
                    return value;
                }
                seen.push(value);
            }
            Received::Packet(_) => {}
            other => panic!("waiting for {topic}: {other:?}"),
        }
    }
}

async fn sys_subscriber(addr: SocketAddr, filter: &str) -> TestClient {
    let mut c = TestClient::connect(addr, connect_v5(&unique_id("sys"))).await;
    c.send(subscribe(1, filter, 0)).await;
    c.expect(suback(1, &[0])).await;
    c
}

#[tokio::test]
async fn sys_clients_connected_rises_as_clients_connect() {
    let broker = TestBroker::start(fast_sys).await;
    let mut watcher = sys_subscriber(broker.addr(), "$SYS/broker/clients/connected").await;
    // The watcher itself is connected.
    wait_sys_value(&mut watcher, "$SYS/broker/clients/connected", |v| v == "1").await;
    let other = TestClient::connect(broker.addr(), connect_v311(&unique_id("other"))).await;
    wait_sys_value(&mut watcher, "$SYS/broker/clients/connected", |v| v == "2").await;
    other.disconnect().await;
    wait_sys_value(&mut watcher, "$SYS/broker/clients/connected", |v| v == "1").await;
}

#[tokio::test]
async fn sys_messages_received_rises_by_the_number_published() {
    let broker = TestBroker::start(fast_sys).await;
    let mut watcher = sys_subscriber(broker.addr(), "$SYS/broker/messages/received").await;
    let before: u64 = wait_sys_value(&mut watcher, "$SYS/broker/messages/received", |_| true)
        .await
        .parse()
        .expect("a number");
    let mut publisher = TestClient::connect(broker.addr(), connect_v5(&unique_id("pub"))).await;
    for i in 0..4 {
        publisher
            .send(publish("data/x", 0, 0, format!("{i}")))
            .await;
    }
    publisher.send(publish("data/x", 1, 7, "q1")).await;
    publisher
        .expect(Packet::PubAck(PubAck::with_reason(
            pid(7),
            PubAckReason::NoMatchingSubscribers,
        )))
        .await;
    let want = (before + 5).to_string();
    // Exactly five more: a value past it would never equal it and the wait would fail.
    wait_sys_value(&mut watcher, "$SYS/broker/messages/received", |v| v == want).await;
    let mut late = sys_subscriber(broker.addr(), "$SYS/broker/version").await;
    let version = wait_sys_value(&mut late, "$SYS/broker/version", |_| true).await;
    assert!(version.starts_with("vane "), "{version}");
}

#[tokio::test]
async fn sys_topics_are_retained_and_not_matched_by_leading_wildcards() {
    // [MQTT-4.7.2-1] a filter starting with a wildcard does not match a topic starting with $.
    let broker = TestBroker::start(fast_sys).await;
    let mut all = TestClient::connect(broker.addr(), connect_v5(&unique_id("all"))).await;
    all.send(subscribe_many(
        1,
        &[("#", 0), ("+/broker/#", 0), ("+/+/uptime", 0)],
    ))
    .await;
    all.expect(suback(1, &[0, 0, 0])).await;
    // Two rounds seen by a `$SYS/#` subscriber: uptime changes every round, so each one
    // publishes it.
    let mut sys = sys_subscriber(broker.addr(), "$SYS/#").await;
    let first = wait_sys_value(&mut sys, "$SYS/broker/uptime", |_| true).await;
    wait_sys_value(&mut sys, "$SYS/broker/uptime", |v| v != first).await;
    // A client's own message comes through `#`, and no `$SYS` message before it.
    let mut publisher = TestClient::connect(broker.addr(), connect_v5(&unique_id("pub"))).await;
    publisher.send(publish("marker", 0, 0, "m")).await;
    let got = all.recv_publish().await;
    assert_eq!(
        &*got.topic, "marker",
        "`#` and `+` must not match $SYS topics"
    );
    // Retained: a late subscriber gets the value at once from the retained store.
    let mut late = TestClient::connect(broker.addr(), connect_v5(&unique_id("late"))).await;
    late.send(subscribe(1, "$SYS/broker/uptime", 0)).await;
    late.expect(suback(1, &[0])).await;
    let p = late.recv_publish().await;
    assert!(
        p.retain,
        "[MQTT-3.3.1-6] a retained message sent on subscribe has RETAIN set"
    );
}

#[tokio::test]
async fn clients_cannot_publish_to_sys() {
    let broker = TestBroker::start(fast_sys).await;
    let mut c = TestClient::connect(broker.addr(), connect_v5(&unique_id("forger"))).await;
    c.send(publish("$SYS/broker/version", 1, 3, "forged")).await;
    // No ACL configured: still refused, MQTT 5.0 PUBACK 0x87.
    c.expect(Packet::PubAck(PubAck::with_reason(
        pid(3),
        PubAckReason::NotAuthorized,
    )))
    .await;
    let mut sys = sys_subscriber(broker.addr(), "$SYS/broker/version").await;
    let v = wait_sys_value(&mut sys, "$SYS/broker/version", |_| true).await;
    assert_ne!(v, "forged");
}

/// An ACL that lets `admin` read `$SYS` and everyone read `#`.
fn acl_files() -> TempDir {
    let dir = TempDir::new("vane-metrics-acl");
    std::fs::write(
        dir.path().join("acl"),
        "allow user admin subscribe $SYS/#\nallow any subscribe #\nallow any publish marker\n",
    )
    .expect("write the ACL");
    let hash = vane_auth::PasswordHash::new("admin-pw", 1000).expect("hash");
    let line = vane_auth::password::format_line("admin", &hash).expect("line");
    std::fs::write(dir.path().join("passwd"), format!("{line}\n")).expect("write passwords");
    dir
}

#[tokio::test]
async fn with_an_acl_only_a_rule_naming_sys_lets_a_client_read_it() {
    let files = acl_files();
    let (acl, passwd) = (
        files.path().join("acl").display().to_string(),
        files.path().join("passwd").display().to_string(),
    );
    let broker = TestBroker::start(|c| {
        fast_sys(c);
        c.acl.file = acl;
        c.auth.password_file = passwd;
        c.listeners[0].allow_anonymous = Some(true);
    })
    .await;
    // MQTT 5.0: SUBACK 0x87 Not authorized; 3.1.1: 0x80 Failure.
    let mut v5 = TestClient::connect(broker.addr(), connect_v5(&unique_id("anon5"))).await;
    v5.send(subscribe(1, "$SYS/#", 0)).await;
    v5.expect(suback(1, &[0x87])).await;
    let mut v3 = TestClient::connect(broker.addr(), connect_v311(&unique_id("anon3"))).await;
    v3.send(subscribe(1, "$SYS/broker/uptime", 0)).await;
    v3.expect(suback(1, &[0x80])).await;
    // `#` is allowed and still brings no $SYS message: the marker comes first.
    v3.send(subscribe(2, "#", 0)).await;
    v3.expect(suback(2, &[0])).await;
    let mut admin_connect = connect_v5(&unique_id("admin"));
    admin_connect.username = Some(ByteString::from("admin"));
    admin_connect.password = Some(Bytes::from_static(b"admin-pw"));
    let mut admin = TestClient::connect(broker.addr(), admin_connect).await;
    admin.send(subscribe(1, "$SYS/#", 0)).await;
    admin.expect(suback(1, &[0])).await;
    let first = wait_sys_value(&mut admin, "$SYS/broker/uptime", |_| true).await;
    wait_sys_value(&mut admin, "$SYS/broker/uptime", |v| v != first).await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v5(&unique_id("pub"))).await;
    publisher.send(publish("marker", 0, 0, "m")).await;
    assert_eq!(&*v3.recv_publish().await.topic, "marker");
    // The refused subscriptions are counted.
    let topic = "$SYS/broker/subscriptions/refused";
    let mut counted = sys_subscriber_as_admin(broker.addr(), topic).await;
    wait_sys_value(&mut counted, topic, |v| v == "2").await;
    // A wrong password: CONNACK 0x86, counted as an authentication failure.
    let mut wrong = connect_v5(&unique_id("admin"));
    wrong.username = Some(ByteString::from("admin"));
    wrong.password = Some(Bytes::from_static(b"not-the-password"));
    let (_, ack) = TestClient::connect_with_ack(broker.addr(), wrong).await;
    assert_eq!(ack.reason, ConnAckReason::BadUserNameOrPassword);
    let topic = "$SYS/broker/connections/refused/auth_failed";
    let mut counted = sys_subscriber_as_admin(broker.addr(), topic).await;
    wait_sys_value(&mut counted, topic, |v| v == "1").await;
}

async fn sys_subscriber_as_admin(addr: SocketAddr, topic: &str) -> TestClient {
    let mut connect = connect_v5(&unique_id("admin"));
    connect.username = Some(ByteString::from("admin"));
    connect.password = Some(Bytes::from_static(b"admin-pw"));
    let mut c = TestClient::connect(addr, connect).await;
    c.send(subscribe(1, topic, 0)).await;
    c.expect(suback(1, &[0])).await;
    c
}

#[tokio::test]
async fn sys_interval_zero_publishes_nothing() {
    let broker = TestBroker::start(|c| c.sys.interval = Duration::ZERO).await;
    let mut c = TestClient::connect(broker.addr(), connect_v5(&unique_id("sys0"))).await;
    c.send(subscribe_many(1, &[("$SYS/#", 0), ("marker", 0)]))
        .await;
    c.expect(suback(1, &[0, 0])).await;
    // Longer than two rounds at the shortest interval allowed (1 s; the first round comes at
    // start): with $SYS on, something would have arrived by now.
    c.expect_nothing(Duration::from_millis(2500)).await;
    c.send(publish("marker", 0, 0, "m")).await;
    assert_eq!(&*c.recv_publish().await.topic, "marker");
    // Nothing retained either.
    let mut late = TestClient::connect(broker.addr(), connect_v5(&unique_id("late"))).await;
    late.send(subscribe_many(1, &[("$SYS/#", 0), ("marker", 0)]))
        .await;
    late.expect(suback(1, &[0, 0])).await;
    c.send(publish("marker", 0, 0, "m2")).await;
    assert_eq!(&*late.recv_publish().await.topic, "marker");
}

// ---------------------------------------------------------------------------------------------
// Prometheus endpoint
// ---------------------------------------------------------------------------------------------

/// A GET over plain TCP: the status line and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the metrics endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("answered")
        .expect("read");
    let text = String::from_utf8(response).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header and a body");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// Parses the text exposition format: every sample `name{labels} value`, every family
/// announced by `# HELP` and `# TYPE` before its samples.
fn parse_prometheus(body: &str) -> HashMap<String, u64> {
    let mut typed = std::collections::HashSet::new();
    let mut helped = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().expect("name").to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().expect("name");
            let kind = parts.next().expect("type");
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "a counter's name ends in _total: {name}"
                );
            }
            typed.insert(name.to_owned());
        } else if !line.is_empty() {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let name = series.split('{').next().expect("name");
            assert!(name.starts_with("vane_"), "{line}");
            assert!(
                typed.contains(name) && helped.contains(name),
                "{name} has no HELP/TYPE before it"
            );
            let value: u64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            samples.insert(series.to_owned(), value);
        }
    }
    samples
}

async fn scrape(addr: SocketAddr) -> HashMap<String, u64> {
    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains(" 200 "), "{status}");
    parse_prometheus(&body)
}

/// Scrapes until `series` satisfies `accept`.
async fn wait_metric(addr: SocketAddr, series: &str, accept: impl Fn(u64) -> bool) -> u64 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let samples = scrape(addr).await;
        let value = *samples
            .get(series)
            .unwrap_or_else(|| panic!("{series} is exposed"));
        if accept(value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed at {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_endpoint_serves_prometheus_text_whose_counters_move() {
    let metrics = free_loopback_addr();
    let broker = TestBroker::start(|c| {
        c.sys.interval = Duration::ZERO;
        c.metrics.bind = Some(metrics);
    })
    .await;
    let samples = scrape(metrics).await;
    for family in [
        "vane_uptime_seconds",
        "vane_clients_connected",
        "vane_subscriptions",
        "vane_retained_messages",
        "vane_overload_level",
        "vane_received_bytes_total",
        "vane_sent_bytes_total",
    ] {
        assert!(samples.contains_key(family), "{family} missing");
    }
    let received = "vane_messages_received_total{qos=\"0\"}";
    let before = samples[received];
    let mut sub = TestClient::connect(broker.addr(), connect_v5(&unique_id("sub"))).await;
    sub.send(subscribe(1, "data/#", 0)).await;
    sub.expect(suback(1, &[0])).await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v5(&unique_id("pub"))).await;
    for i in 0..3 {
        publisher
            .send(publish("data/x", 0, 0, format!("{i}")))
            .await;
        sub.recv_publish().await;
    }
    wait_metric(metrics, received, |v| v == before + 3).await;
    wait_metric(metrics, "vane_messages_sent_total{qos=\"0\"}", |v| v >= 3).await;
    wait_metric(metrics, "vane_clients_connected", |v| v == 2).await;
    wait_metric(metrics, "vane_subscriptions", |v| v == 1).await;
    wait_metric(metrics, "vane_received_bytes_total", |v| v > 0).await;
    let (status, _) = http_get(metrics, "/other").await;
    assert!(status.contains(" 404 "), "{status}");
}

#[tokio::test]
async fn refusals_are_counted_by_cause() {
    let metrics = free_loopback_addr();
    let broker = TestBroker::start(|c| {
        c.metrics.bind = Some(metrics);
        c.limits.max_connections = 2;
        c.limits.max_topic_levels = 3;
    })
    .await;
    // limits.max_topic_levels: MQTT 5.0 PUBACK 0x90.
    let mut a = TestClient::connect(broker.addr(), connect_v5(&unique_id("a"))).await;
    a.send(publish("a/b/c/d/e", 1, 1, "deep")).await;
    a.expect(Packet::PubAck(PubAck::with_reason(
        pid(1),
        PubAckReason::TopicNameInvalid,
    )))
    .await;
    wait_metric(
        metrics,
        "vane_publishes_refused_total{cause=\"topic_limit\"}",
        |v| v == 1,
    )
    .await;
    // limits.max_connections: the third connection is closed at accept.
    let _b = TestClient::connect(broker.addr(), connect_v5(&unique_id("b"))).await;
    let refused = TestClient::try_connect(
        broker.addr(),
        connect_v311(&unique_id("c")),
        Duration::from_secs(2),
    )
    .await;
    assert!(refused.is_err(), "closed at accept");
    wait_metric(
        metrics,
        "vane_connections_refused_total{cause=\"connection_limit\"}",
        |v| v == 1,
    )
    .await;
    // An invalid client id at CONNECT ([MQTT-3.1.3-8]: 3.1.1 return code 2), counted as "other".
    drop(_b);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut connect = connect_v311("");
        connect.clean_start = false;
        match TestClient::try_connect(broker.addr(), connect, Duration::from_secs(2)).await {
            Ok((_, ack)) => {
                assert_eq!(ack.reason, ConnAckReason::ClientIdentifierNotValid);
                break;
            }
            // Closed at accept: the dropped client's place is not free yet.
            Err(_) => assert!(tokio::time::Instant::now() < deadline, "no room"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_metric(
        metrics,
        "vane_connections_refused_total{cause=\"other\"}",
        |v| v == 1,
    )
    .await;
}

#[tokio::test]
async fn a_metrics_address_that_cannot_be_bound_stops_the_start() {
    // Held for the whole test, so the address stays taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut config = Config {
        listeners: vec![test_support::vane_config::ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Default::default()
        }],
        ..Config::default()
    };
    config.store.durability = test_support::vane_config::Durability::Memory;
    config.metrics.bind = Some(taken.local_addr().expect("address"));
    match vane_server::Server::bind(config).await {
        Err(e @ vane_server::ServerError::MetricsBind { .. }) => {
            assert!(e.to_string().starts_with("metrics.bind:"), "{e}");
        }
        Err(e) => panic!("expected MetricsBind, got {e}"),
        Ok(_) => panic!("the broker started without its metrics endpoint"),
    }
}

#[tokio::test]
async fn the_endpoint_stops_with_the_broker() {
    let metrics = free_loopback_addr();
    let broker = TestBroker::start(|c| c.metrics.bind = Some(metrics)).await;
    scrape(metrics).await;
    broker.stop().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while TcpStream::connect(metrics).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still listening after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
