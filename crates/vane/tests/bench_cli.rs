//! `vane bench` end to end: against a `vane serve` child process, a short run of each scenario
//! (fanin at each QoS, fanout, pairs, pub and sub side by side, conn, latency, retained, and
//! each with MQTT 5.0) reports sane JSON and exits 0 by itself; against a stub broker, the
//! CONNECT carries the version asked for and comes from the source addresses asked for.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VANE: &str = env!("CARGO_BIN_EXE_vane");

/// A child process killed if the test ends before it exits.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn serve(addr: SocketAddr) -> Proc {
    let child = Command::new(VANE)
        .args(["serve", "--bind", &addr.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vane serve");
    let mut broker = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(
            broker.0.try_wait().expect("poll").is_none(),
            "vane serve exited early"
        );
        assert!(
            Instant::now() < deadline,
            "vane serve is not listening after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    broker
}

/// Runs `vane bench fanin` and returns its JSON result.
fn bench(port: u16, qos: u8) -> serde_json::Value {
    let qos = qos.to_string();
    run_bench(
        port,
        "fanin",
        &[
            "--publishers",
            "2",
            "--qos",
            &qos,
            "--window",
            "8",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--drain",
            "1s",
        ],
    )
}

/// Runs `vane bench <scenario> <args> --json --quiet`, checks that it stops by itself with
/// exit status 0, and returns its JSON result.
fn run_bench(port: u16, scenario: &str, args: &[&str]) -> serde_json::Value {
    finish_bench(start_bench(port, scenario, args), scenario, args)
}

/// Starts `vane bench <scenario> <args> --json --quiet` against 127.0.0.1:`port`.
fn start_bench(port: u16, scenario: &str, args: &[&str]) -> Proc {
    let child = Command::new(VANE)
        .args([
            "bench",
            scenario,
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args(args)
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
fn finish_bench(mut run: Proc, scenario: &str, args: &[&str]) -> serde_json::Value {
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
        "vane bench {scenario} {args:?} failed ({status}): {err}"
    );
    let result: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(result["scenario"], scenario, "{result}");
    result
}

#[test]
fn fanin_reports_received_messages_at_every_qos() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _broker = serve(addr);
    for qos in 0..=2u8 {
        let result = bench(addr.port(), qos);
        assert_eq!(result["scenario"], "fanin");
        assert_eq!(result["qos"], u64::from(qos));
        assert_eq!(result["granted_qos"], u64::from(qos));
        assert!(
            result["received"].as_u64().is_some_and(|n| n > 0),
            "QoS {qos}: {result}"
        );
        assert!(
            result["received_per_sec"].as_f64().is_some_and(|r| r > 0.0),
            "QoS {qos}: {result}"
        );
        assert_eq!(
            result["errors"].as_array().map(Vec::len),
            Some(0),
            "QoS {qos}: {result}"
        );
        if qos > 0 {
            let totals = &result["totals"];
            assert!(
                totals["acked"].as_u64().is_some_and(|n| n > 0),
                "QoS {qos}: {result}"
            );
            assert!(totals["lost"].is_u64(), "QoS {qos}: {result}");
            assert_eq!(totals["duplicates"], 0, "QoS {qos}: {result}");
        }
    }
}

#[test]
fn fanout_reports_deliveries_to_every_subscriber() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _broker = serve(addr);
    let result = run_bench(
        addr.port(),
        "fanout",
        &[
            "--subscribers",
            "3",
            "--qos",
            "1",
            "--window",
            "8",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--drain",
            "1s",
        ],
    );
    let result = &result;
    assert_eq!(result["subscribers"], 3, "{result}");
    assert!(
        result["received_per_sec"].as_f64().is_some_and(|r| r > 0.0),
        "{result}"
    );
    assert!(
        result["subscriber_received_min"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{result}"
    );
    assert!(result["totals"]["lost"].is_u64(), "{result}");
    assert_eq!(
        result["errors"].as_array().map(Vec::len),
        Some(0),
        "{result}"
    );
}

#[test]
fn pairs_reports_received_messages() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _broker = serve(addr);
    let result = run_bench(
        addr.port(),
        "pairs",
        &[
            "--pairs",
            "4",
            "--qos",
            "0",
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ],
    );
    assert_eq!(result["publishers"], 4, "{result}");
    assert_eq!(result["subscribers"], 4, "{result}");
    assert!(
        result["received_per_sec"].as_f64().is_some_and(|r| r > 0.0),
        "{result}"
    );
    assert_eq!(result["totals"]["foreign"], 0, "{result}");
}

#[test]
fn conn_opens_holds_and_closes_connections() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _broker = serve(addr);
    let result = run_bench(
        addr.port(),
        "conn",
        &["--connections", "50", "--rate", "500", "--hold", "1s"],
    );
    assert_eq!(result["opened"], 50, "{result}");
    assert_eq!(result["failed"], 0, "{result}");
    assert_eq!(result["dropped_while_held"], 0, "{result}");
    assert!(
        result["connect_per_sec"].as_f64().is_some_and(|r| r > 0.0),
        "{result}"
    );
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
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _broker = serve(addr);
    let result = run_bench(
        addr.port(),
        "latency",
        &["--rate", "1000", "--duration", "1s", "--warmup", "0s"],
    );
    let lat = &result["latency_us"];
    assert!(
        result["recorded"].as_u64().is_some_and(|n| n > 500),
        "{result}"
    );
    let p50 = lat["p50"].as_u64().expect("p50");
    let p99 = lat["p99"].as_u64().expect("p99");
    let max = lat["max"].as_u64().expect("max");
    assert!(p50 > 0 && p50 <= p99 && p99 <= max, "{result}");
}

#[test]
fn retained_delivers_every_stored_message() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _broker = serve(addr);
    let result = run_bench(
        addr.port(),
        "retained",
        &["--messages", "500", "--window", "32", "--duration", "20s"],
    );
    assert_eq!(result["received"], 500, "{result}");
    assert_eq!(result["missing"], 0, "{result}");
    assert_eq!(result["cleared"], true, "{result}");
}

#[test]
fn pub_and_sub_run_side_by_side() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _broker = serve(addr);
    // The publishers run well past the subscribers' whole run, so that they see messages.
    let pub_args = [
        "--publishers",
        "2",
        "--rate",
        "500",
        "--qos",
        "1",
        "--duration",
        "5s",
        "--warmup",
        "0s",
    ];
    let publishers = start_bench(addr.port(), "pub", &pub_args);
    let sub_args = [
        "--subscribers",
        "2",
        "--filter",
        "bench/#",
        "--qos",
        "1",
        "--duration",
        "1s",
        "--warmup",
        "0s",
    ];
    let sub = run_bench(addr.port(), "sub", &sub_args);
    let publishing = finish_bench(publishers, "pub", &pub_args);

    assert_eq!(sub["subscribers"], 2, "{sub}");
    assert_eq!(sub["publishers"], 0, "{sub}");
    assert_eq!(sub["filter"], "bench/#", "{sub}");
    assert_eq!(sub["granted_qos"], 1, "{sub}");
    assert!(sub["received"].as_u64().is_some_and(|n| n > 0), "{sub}");
    assert!(
        sub["received_per_sec"].as_f64().is_some_and(|r| r > 0.0),
        "{sub}"
    );
    // Both subscribers are on the same filter: each received messages.
    assert!(
        sub["subscriber_received_min"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{sub}"
    );
    assert_eq!(sub["totals"]["duplicates"], 0, "{sub}");

    assert_eq!(publishing["publishers"], 2, "{publishing}");
    assert_eq!(publishing["subscribers"], 0, "{publishing}");
    assert_eq!(publishing["rate_per_publisher"], 500.0, "{publishing}");
    assert!(
        publishing["sent"].as_u64().is_some_and(|n| n > 0),
        "{publishing}"
    );
    assert!(
        publishing["acked_per_sec"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{publishing}"
    );
    let totals = &publishing["totals"];
    assert_eq!(totals["acked"], totals["sent"], "{publishing}");
    assert_eq!(totals["refused"], 0, "{publishing}");
    assert_eq!(totals["unacked_at_end"], 0, "{publishing}");
    assert_eq!(
        publishing["errors"].as_array().map(Vec::len),
        Some(0),
        "{publishing}"
    );
}

#[test]
fn pub_completes_every_qos2_exchange() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _broker = serve(addr);
    let result = run_bench(
        addr.port(),
        "pub",
        &[
            "--publishers",
            "3",
            "--qos",
            "2",
            "--window",
            "8",
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ],
    );
    assert_eq!(result["qos"], 2, "{result}");
    assert!(result["granted_qos"].is_null(), "{result}");
    let totals = &result["totals"];
    assert!(totals["acked"].as_u64().is_some_and(|n| n > 0), "{result}");
    assert_eq!(totals["acked"], totals["sent"], "{result}");
    assert_eq!(totals["unacked_at_end"], 0, "{result}");
    assert_eq!(totals["received"], 0, "{result}");
}

#[test]
fn every_scenario_runs_over_mqtt_5() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _broker = serve(addr);
    let short = ["--duration", "1s", "--warmup", "0s"];
    let runs: [(&str, &[&str]); 8] = [
        ("fanin", &["--publishers", "2", "--qos", "1"]),
        ("fanout", &["--subscribers", "2", "--qos", "2"]),
        ("pairs", &["--pairs", "2", "--qos", "0"]),
        ("pub", &["--publishers", "2", "--qos", "1"]),
        ("sub", &["--subscribers", "2"]),
        ("latency", &["--rate", "1000", "--qos", "1"]),
        ("conn", &["--connections", "20", "--hold", "0s"]),
        ("retained", &["--messages", "200", "--duration", "20s"]),
    ];
    for (scenario, extra) in runs {
        let mut args = vec!["--mqtt-version", "5"];
        args.extend_from_slice(extra);
        if !matches!(scenario, "conn" | "retained") {
            args.extend_from_slice(&short);
        }
        let result = run_bench(addr.port(), scenario, &args);
        assert_eq!(result["mqtt_version"], "5.0", "{result}");
        let worked = match scenario {
            "conn" => result["opened"] == 20 && result["failed"] == 0,
            "pub" => result["totals"]["acked"].as_u64().is_some_and(|n| n > 0),
            // Nothing publishes alongside: the subscription is made and the run completes.
            "sub" => result["granted_qos"] == 0 && result["errors"].as_array().is_some(),
            _ => result["received"].as_u64().is_some_and(|n| n > 0),
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

/// A stub broker for one connection: accepts it, answers CONNECT with `connack` (a whole
/// CONNACK packet), SUBSCRIBE with a SUBACK granting QoS 0 and PINGREQ with PINGRESP, and
/// reads until the client closes.
fn stub_broker(listener: TcpListener, connack: Vec<u8>) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
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
    })
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
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let stub = stub_broker(listener, connack);
        let args = [
            "--connections",
            "1",
            "--hold",
            "0s",
            "--mqtt-version",
            version,
            "--sources",
            sources,
        ];
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
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    // MQTT 5.0 CONNACK with Server Keep Alive (0x13) = 2 s: PINGREQ is due every second.
    let stub = stub_broker(listener, vec![0x20, 6, 0, 0, 3, 0x13, 0, 2]);
    let result = run_bench(
        port,
        "sub",
        &[
            "--subscribers",
            "1",
            "--mqtt-version",
            "5",
            "--duration",
            "3s",
            "--warmup",
            "0s",
        ],
    );
    assert_eq!(result["received"], 0, "{result}");
    let seen = stub.join().expect("stub broker");
    assert_eq!(seen.packets.first(), Some(&0x82), "no SUBSCRIBE first");
    assert!(
        seen.packets.contains(&0xc0),
        "no PINGREQ: {:x?}",
        seen.packets
    );
}
