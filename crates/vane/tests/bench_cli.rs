//! `vane bench` end to end: against a `vane serve` child process, a short run of each scenario
//! (fanin at each QoS, fanout, pairs, conn, latency, retained) reports sane JSON and exits 0 by
//! itself.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
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
    let mut run = Proc(child);
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
