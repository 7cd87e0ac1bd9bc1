//! `vane bench` end to end: against a `vane serve` child process, a short run of each scenario
//! (fanin at each QoS, fanout, pairs, pub and sub side by side, conn, latency, retained, and
//! each with MQTT 5.0) reports sane JSON and exits 0 by itself; against a stub broker, the
//! CONNECT carries the version asked for and comes from the source addresses asked for.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, VANE};
use serde_json::Value;

/// The measured time of most runs here, and no warmup.
const SHORT: &str = "--duration 1s --warmup 0s";

/// Runs `vane bench <scenario> <args> --json --quiet`, checks that it stops by itself with
/// exit status 0, and returns its JSON result. `args` are separated by white space.
fn run_bench(port: u16, scenario: &str, args: &str) -> Value {
    finish_bench(start_bench(port, scenario, args), scenario, args)
}

/// Starts a `vane serve`, runs [`run_bench`] against it and returns the JSON result.
fn bench_on_broker(scenario: &str, args: &str) -> Value {
    let (_broker, port) = common::serve();
    run_bench(port, scenario, args)
}

/// Starts `vane bench <scenario> <args> --json --quiet` against 127.0.0.1:`port`.
fn start_bench(port: u16, scenario: &str, args: &str) -> Proc {
    let child = Command::new(VANE)
        .args(["bench", scenario, "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(args.split_whitespace())
        .args(["--json", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vane bench");
    Proc(child)
}

/// Waits for a `vane bench` started by [`start_bench`] to stop by itself with exit status 0,
/// and returns its JSON result.
fn finish_bench(mut run: Proc, scenario: &str, args: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = run.0.try_wait().expect("poll") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "vane bench {scenario} did not stop by itself"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut s) = run.0.stdout.take() {
        s.read_to_string(&mut out).expect("read stdout");
    }
    if let Some(mut s) = run.0.stderr.take() {
        s.read_to_string(&mut err).expect("read stderr");
    }
    assert!(
        status.success(),
        "vane bench {scenario} {args} failed ({status}): {err}"
    );
    let result: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(result["scenario"], scenario, "{result}");
    result
}

/// The whole number at `pointer` (a JSON pointer, such as `/totals/acked`) in `result`, if
/// there is one above `min`.
fn above(result: &Value, pointer: &str, min: u64) -> bool {
    result
        .pointer(pointer)
        .and_then(Value::as_u64)
        .is_some_and(|n| n > min)
}

/// Asserts that the whole number at `pointer` in `result` is above `min`.
fn assert_above(result: &Value, pointer: &str, min: u64) {
    assert!(above(result, pointer, min), "{pointer} <= {min}: {result}");
}

/// Asserts that the rate at `pointer` in `result` is above zero.
fn assert_rate(result: &Value, pointer: &str) {
    assert!(
        result
            .pointer(pointer)
            .and_then(Value::as_f64)
            .is_some_and(|r| r > 0.0),
        "{pointer} not above 0: {result}"
    );
}

/// Asserts that `result` lists its errors, and that there are none.
fn assert_no_errors(result: &Value) {
    assert_eq!(
        result["errors"].as_array().map(Vec::len),
        Some(0),
        "{result}"
    );
}

#[test]
fn fanin_reports_received_messages_at_every_qos() {
    let (_broker, port) = common::serve();
    for qos in 0..=2u8 {
        let args = format!("--publishers 2 --qos {qos} --window 8 {SHORT} --drain 1s");
        let result = run_bench(port, "fanin", &args);
        assert_eq!(result["qos"], u64::from(qos), "{result}");
        assert_eq!(result["granted_qos"], u64::from(qos), "{result}");
        assert_above(&result, "/received", 0);
        assert_rate(&result, "/received_per_sec");
        assert_no_errors(&result);
        if qos > 0 {
            assert_above(&result, "/totals/acked", 0);
            assert!(result["totals"]["lost"].is_u64(), "QoS {qos}: {result}");
            assert_eq!(result["totals"]["duplicates"], 0, "QoS {qos}: {result}");
        }
    }
}

#[test]
fn fanout_reports_deliveries_to_every_subscriber() {
    let args = format!("--subscribers 3 --qos 1 --window 8 {SHORT} --drain 1s");
    let result = bench_on_broker("fanout", &args);
    assert_eq!(result["subscribers"], 3, "{result}");
    assert_rate(&result, "/received_per_sec");
    assert_above(&result, "/subscriber_received_min", 0);
    assert!(result["totals"]["lost"].is_u64(), "{result}");
    assert_no_errors(&result);
}

#[test]
fn pairs_reports_received_messages() {
    let result = bench_on_broker("pairs", &format!("--pairs 4 --qos 0 {SHORT}"));
    assert_eq!(result["publishers"], 4, "{result}");
    assert_eq!(result["subscribers"], 4, "{result}");
    assert_rate(&result, "/received_per_sec");
    assert_eq!(result["totals"]["foreign"], 0, "{result}");
}

#[test]
fn conn_opens_holds_and_closes_connections() {
    let result = bench_on_broker("conn", "--connections 50 --rate 500 --hold 1s");
    assert_eq!(result["opened"], 50, "{result}");
    assert_eq!(result["failed"], 0, "{result}");
    assert_eq!(result["dropped_while_held"], 0, "{result}");
    assert_rate(&result, "/connect_per_sec");
}

#[test]
fn conn_refuses_more_connections_than_the_open_file_limit() {
    let out = Command::new(VANE)
        .args(["bench", "conn", "--port", "1", "--connections", "1000000"])
        .stdin(Stdio::null())
        .output()
        .expect("run vane bench conn");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("open files"), "{err}");
}

#[test]
fn latency_reports_percentiles() {
    let result = bench_on_broker("latency", &format!("--rate 1000 {SHORT}"));
    assert_above(&result, "/recorded", 500);
    let lat = &result["latency_us"];
    let p50 = lat["p50"].as_u64().expect("p50");
    let p99 = lat["p99"].as_u64().expect("p99");
    let max = lat["max"].as_u64().expect("max");
    assert!(p50 > 0 && p50 <= p99 && p99 <= max, "{result}");
}

#[test]
fn retained_delivers_every_stored_message() {
    let result = bench_on_broker("retained", "--messages 500 --window 32 --duration 20s");
    assert_eq!(result["received"], 500, "{result}");
    assert_eq!(result["missing"], 0, "{result}");
    assert_eq!(result["cleared"], true, "{result}");
}

#[test]
fn pub_and_sub_run_side_by_side() {
    let (_broker, port) = common::serve();
    // The publishers run well past the subscribers' whole run, so that they see messages.
    let pub_args = "--publishers 2 --rate 500 --qos 1 --duration 5s --warmup 0s";
    let publishers = start_bench(port, "pub", pub_args);
    let sub_args = format!("--subscribers 2 --filter bench/# --qos 1 {SHORT}");
    let sub = run_bench(port, "sub", &sub_args);
    let publishing = finish_bench(publishers, "pub", pub_args);

    assert_eq!(sub["subscribers"], 2, "{sub}");
    assert_eq!(sub["publishers"], 0, "{sub}");
    assert_eq!(sub["filter"], "bench/#", "{sub}");
    assert_eq!(sub["granted_qos"], 1, "{sub}");
    assert_above(&sub, "/received", 0);
    assert_rate(&sub, "/received_per_sec");
    // Both subscribers are on the same filter: each received messages.
    assert_above(&sub, "/subscriber_received_min", 0);
    assert_eq!(sub["totals"]["duplicates"], 0, "{sub}");

    assert_eq!(publishing["publishers"], 2, "{publishing}");
    assert_eq!(publishing["subscribers"], 0, "{publishing}");
    assert_eq!(publishing["rate_per_publisher"], 500.0, "{publishing}");
    assert_above(&publishing, "/sent", 0);
    assert_rate(&publishing, "/acked_per_sec");
    let totals = &publishing["totals"];
    assert_eq!(totals["acked"], totals["sent"], "{publishing}");
    assert_eq!(totals["refused"], 0, "{publishing}");
    assert_eq!(totals["unacked_at_end"], 0, "{publishing}");
    assert_no_errors(&publishing);
}

#[test]
fn pub_completes_every_qos2_exchange() {
    let args = format!("--publishers 3 --qos 2 --window 8 {SHORT}");
    let result = bench_on_broker("pub", &args);
    assert_eq!(result["qos"], 2, "{result}");
    assert!(result["granted_qos"].is_null(), "{result}");
    assert_above(&result, "/totals/acked", 0);
    let totals = &result["totals"];
    assert_eq!(totals["acked"], totals["sent"], "{result}");
    assert_eq!(totals["unacked_at_end"], 0, "{result}");
    assert_eq!(totals["received"], 0, "{result}");
}

#[test]
fn every_scenario_runs_over_mqtt_5() {
    let (_broker, port) = common::serve();
    let runs = [
        ("fanin", "--publishers 2 --qos 1"),
        ("fanout", "--subscribers 2 --qos 2"),
        ("pairs", "--pairs 2 --qos 0"),
        ("pub", "--publishers 2 --qos 1"),
        ("sub", "--subscribers 2"),
        ("latency", "--rate 1000 --qos 1"),
        ("conn", "--connections 20 --hold 0s"),
        ("retained", "--messages 200 --duration 20s"),
    ];
    for (scenario, extra) in runs {
        let short = if matches!(scenario, "conn" | "retained") {
            ""
        } else {
            SHORT
        };
        let result = run_bench(port, scenario, &format!("--mqtt-version 5 {extra} {short}"));
        assert_eq!(result["mqtt_version"], "5.0", "{result}");
        let worked = match scenario {
            "conn" => result["opened"] == 20 && result["failed"] == 0,
            "pub" => above(&result, "/totals/acked", 0),
            // Nothing publishes alongside: the subscription is made and the run completes.
            "sub" => result["granted_qos"] == 0 && result["errors"].as_array().is_some(),
            _ => above(&result, "/received", 0),
        };
        assert!(worked, "{scenario}: {result}");
    }
}

/// Reads one MQTT packet: its first byte and its body; None at the end of the stream.
fn read_packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).ok()?;
    let first = byte[0];
    let (mut len, mut shift) = (0usize, 0);
    loop {
        stream.read_exact(&mut byte).ok()?;
        len |= usize::from(byte[0] & 0x7f) << shift;
        shift += 7;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some((first, body))
}

/// What a stub broker saw of its one client.
struct Seen {
    peer: SocketAddr,
    /// The CONNECT's body.
    connect: Vec<u8>,
    /// The first byte of every packet after CONNECT.
    packets: Vec<u8>,
}

/// A stub broker for one connection on a free loopback port, returned with it: accepts the
/// connection, answers CONNECT with `connack` (a whole CONNACK packet), SUBSCRIBE with a
/// SUBACK granting QoS 0 and PINGREQ with PINGRESP, and reads until the client closes.
fn stub_broker(connack: Vec<u8>) -> (u16, std::thread::JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let stub = std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let (first, connect) = read_packet(&mut stream).expect("CONNECT");
        assert_eq!(first, 0x10, "not a CONNECT");
        let v5 = connect.get(6) == Some(&5);
        stream.write_all(&connack).expect("write CONNACK");
        let mut packets = Vec::new();
        while let Some((first, body)) = read_packet(&mut stream) {
            packets.push(first);
            let reply = match first {
                0x82 if v5 => vec![0x90, 4, body[0], body[1], 0, 0],
                0x82 => vec![0x90, 3, body[0], body[1], 0],
                0xc0 => vec![0xd0, 0],
                _ => continue,
            };
            stream.write_all(&reply).expect("reply");
        }
        Seen {
            peer,
            connect,
            packets,
        }
    });
    (port, stub)
}

#[test]
fn connects_with_the_version_and_source_address_asked_for() {
    for (version, level, connack, sources, source) in [
        ("3.1.1", 4, vec![0x20, 2, 0, 0], "0", Ipv4Addr::LOCALHOST),
        (
            "5",
            5,
            vec![0x20, 3, 0, 0, 0],
            "3",
            Ipv4Addr::new(127, 0, 0, 2),
        ),
    ] {
        let (port, stub) = stub_broker(connack);
        let args =
            format!("--connections 1 --hold 0s --mqtt-version {version} --sources {sources}");
        let result = run_bench(port, "conn", &args);
        assert_eq!(result["opened"], 1, "{result}");
        let seen = stub.join().expect("stub broker");
        let connect = &seen.connect;
        assert_eq!(connect.get(..6), Some(&b"\0\x04MQTT"[..]), "{connect:?}");
        assert_eq!(
            connect.get(6),
            Some(&level),
            "version {version}: {connect:?}"
        );
        // The longest keep alive: brokers that refuse 0 (rumqttd) accept it.
        assert_eq!(connect.get(8..10), Some(&[0xff, 0xff][..]), "{connect:?}");
        assert_eq!(seen.peer.ip(), IpAddr::V4(source), "version {version}");
    }
}

#[test]
fn a_silent_subscriber_pings_within_the_brokers_server_keep_alive() {
    // MQTT 5.0 CONNACK with Server Keep Alive (0x13) = 2 s: PINGREQ is due every second.
    let (port, stub) = stub_broker(vec![0x20, 6, 0, 0, 3, 0x13, 0, 2]);
    let args = "--subscribers 1 --mqtt-version 5 --duration 3s --warmup 0s";
    let result = run_bench(port, "sub", args);
    assert_eq!(result["received"], 0, "{result}");
    let seen = stub.join().expect("stub broker");
    assert_eq!(seen.packets.first(), Some(&0x82), "no SUBSCRIBE first");
    assert!(
        seen.packets.contains(&0xc0),
        "no PINGREQ: {:x?}",
        seen.packets
    );
}

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "vane-bench-cli-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `vane serve --durability sync` on `port` with its store in `store`, without waiting
/// for it to listen (the bench runs below retry until it answers).
fn serve_durable(port: u16, store: &std::path::Path) -> Proc {
    let child = Command::new(VANE)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .arg("--store-dir")
        .arg(store)
        .args(["--durability", "sync"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vane serve");
    Proc(child)
}

#[test]
fn conn_makes_persistent_sessions_that_a_restarted_broker_resumes() {
    let dir = TempDir::new("sessions");
    let port = common::free_port();
    let broker = serve_durable(port, &dir.0);
    let made = run_bench(
        port,
        "conn",
        "--connections 30 --persistent --subscribe s/{i} --qos 1 --disconnect \
         --client-prefix keep --retry-for 10s",
    );
    assert_eq!(made["opened"], 30, "{made}");
    assert_eq!(made["subscribed"], 30, "{made}");
    assert_eq!(made["session_present"], 0, "{made}");
    assert_eq!(made["disconnect"], true, "{made}");
    assert!(made["first_connack_unix"].as_f64().is_some(), "{made}");
    // SUBACK in `sync` mode means on disk: even a kill loses nothing.
    drop(broker);

    let _broker = serve_durable(port, &dir.0);
    let launched = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let resumed = run_bench(
        port,
        "conn",
        "--connections 30 --persistent --disconnect --client-prefix keep --retry-for 10s",
    );
    assert_eq!(resumed["opened"], 30, "{resumed}");
    assert_eq!(resumed["session_present"], 30, "{resumed}");
    let connack = resumed["first_connack_unix"]
        .as_f64()
        .expect("first CONNACK");
    assert!(connack >= launched - 1.0, "{resumed}");
    // Clean sessions are never resumed.
    let clean = run_bench(
        port,
        "conn",
        "--connections 5 --disconnect --client-prefix keep",
    );
    assert_eq!(clean["session_present"], 0, "{clean}");
}

#[test]
fn pub_count_publishes_that_many_and_sub_resumes_the_queued_messages() {
    let (_broker, port) = common::serve();
    let subscribe = "--subscribers 3 --persistent --client-prefix offline --filter q/# --qos 1 \
                     --duration 1s --warmup 0s";
    let first = run_bench(port, "sub", subscribe);
    assert_eq!(first["persistent_subscribers"], true, "{first}");
    assert_eq!(first["resumed_sessions"], 0, "{first}");
    assert_eq!(first["granted_qos"], 1, "{first}");

    // The subscribers are offline now: each of the 2 x 40 messages is queued for all three.
    let began = Instant::now();
    let publishing = run_bench(
        port,
        "pub",
        "--publishers 2 --count 40 --qos 1 --prefix q --window 8 --duration 30s --warmup 0s",
    );
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "pub --count did not end once done"
    );
    assert_eq!(publishing["count_per_publisher"], 40, "{publishing}");
    let totals = &publishing["totals"];
    assert_eq!(totals["sent"], 80, "{publishing}");
    assert_eq!(totals["acked"], 80, "{publishing}");
    assert_eq!(totals["unacked_at_end"], 0, "{publishing}");

    let again = run_bench(
        port,
        "sub",
        &subscribe.replace("--duration 1s", "--duration 2s"),
    );
    assert_eq!(again["resumed_sessions"], 3, "{again}");
    assert_eq!(again["totals"]["received"], 240, "{again}");
    assert_eq!(again["subscriber_received_min"], 80, "{again}");
    assert_eq!(again["subscriber_received_max"], 80, "{again}");
}

#[test]
fn fanin_with_a_persistent_subscriber_loses_nothing() {
    let (_broker, port) = common::serve();
    let args = format!(
        "--publishers 2 --qos 1 --window 8 --persistent --client-prefix fp {SHORT} --drain 2s \
         --settle 300ms"
    );
    let result = run_bench(port, "fanin", &args);
    assert_eq!(result["persistent_subscribers"], true, "{result}");
    assert_eq!(result["settle_secs"], 0.3, "{result}");
    assert_above(&result, "/received", 0);
    assert_eq!(result["totals"]["lost"], 0, "{result}");
    assert_no_errors(&result);
    // A second run resumes the subscriber's session instead of subscribing again.
    let again = run_bench(port, "fanin", &args);
    assert_eq!(again["resumed_sessions"], 1, "{again}");
    assert_above(&again, "/received", 0);
    assert_eq!(again["totals"]["lost"], 0, "{again}");
}

/// Waits until something listens on 127.0.0.1:`port`, 10 s at most.
fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {port} after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn retained_stored_by_one_run_is_received_by_another_after_a_restart() {
    let dir = TempDir::new("retained");
    let port = common::free_port();
    let broker = serve_durable(port, &dir.0);
    wait_listening(port);
    let stored = run_bench(
        port,
        "retained",
        "--only store --messages 300 --prefix keep/r --window 32 --duration 20s",
    );
    assert_eq!(stored["only"], "store", "{stored}");
    assert!(stored["store_secs"].as_f64().is_some(), "{stored}");
    assert!(stored["received"].is_null(), "{stored}");
    // PUBACK in `sync` mode means on disk: even a kill loses nothing.
    drop(broker);

    let _broker = serve_durable(port, &dir.0);
    wait_listening(port);
    let received = run_bench(
        port,
        "retained",
        "--only receive --messages 300 --prefix keep/r --filter # --duration 20s",
    );
    assert_eq!(received["received"], 300, "{received}");
    assert_eq!(received["missing"], 0, "{received}");
    assert!(received["store_secs"].is_null(), "{received}");
}
