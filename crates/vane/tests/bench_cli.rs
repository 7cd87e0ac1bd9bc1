//! `vane bench fanin` end to end: against a `vane serve` child process, at each QoS, a short
//! run reports received messages as JSON and exits 0 by itself.

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
    let child = Command::new(VANE)
        .args([
            "bench",
            "fanin",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args([
            "--publishers",
            "2",
            "--qos",
            &qos.to_string(),
            "--window",
            "8",
        ])
        .args([
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--drain",
            "1s",
            "--json",
            "--quiet",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vane bench");
    let mut run = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = run.0.try_wait().expect("poll") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "vane bench fanin did not stop by itself"
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
        "vane bench fanin --qos {qos} failed ({status}): {err}"
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
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
