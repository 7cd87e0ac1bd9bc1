//! The `vane` binary end to end: `serve` on a free port, a real MQTT round trip, a clean exit
//! on SIGTERM; `config default` and `serve --check`.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use test_support::process::free_loopback_addr;
use test_support::vane_proto::DisconnectReason;
use test_support::{assert_broker_healthy, connect_v311, connect_v5, TestClient};

const VANE: &str = env!("CARGO_BIN_EXE_vane");

/// A child process killed (SIGKILL) if the test ends before it exits.
struct Vane(Child);

impl Vane {
    fn serve(addr: SocketAddr) -> Vane {
        let child = Command::new(VANE)
            .args([
                "serve",
                "--bind",
                &addr.to_string(),
                "--durability",
                "memory",
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vane serve");
        Vane(child)
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait().expect("poll the child") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        let mut out = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut out);
        }
        out
    }

    /// Waits until the broker accepts TCP connections.
    async fn wait_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let connected = tokio::net::TcpStream::connect(addr).await.is_ok();
            // Checked after a successful connect too: what answered must be this child.
            if let Some(status) = self.0.try_wait().expect("poll the child") {
                panic!("vane exited early with {status}: {}", self.stderr());
            }
            if connected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "vane is not listening on {addr} after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Vane {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn serve_answers_mqtt_and_exits_0_on_sigterm() {
    let addr = free_loopback_addr();
    let mut vane = Vane::serve(addr);
    vane.wait_listening(addr).await;
    assert_broker_healthy(addr).await;

    // Connected clients at shutdown: MQTT 5.0 is told why (DISCONNECT 0x8B Server shutting
    // down), MQTT 3.1.1 is just closed.
    let mut v5 = TestClient::connect(addr, connect_v5("bin-v5")).await;
    let mut v311 = TestClient::connect(addr, connect_v311("bin-v311")).await;
    let status = Command::new("kill")
        .args(["-TERM", &vane.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    v5.set_timeout(Duration::from_secs(5));
    v5.expect_closed_with(DisconnectReason::ServerShuttingDown)
        .await;
    v311.set_timeout(Duration::from_secs(5));
    assert_eq!(v311.expect_closed().await, None);

    let exit = vane.wait_exit(Duration::from_secs(5));
    let stderr = vane.stderr();
    let exit =
        exit.unwrap_or_else(|| panic!("vane still running 5 s after SIGTERM; log:\n{stderr}"));
    assert!(exit.success(), "vane exited with {exit}; log:\n{stderr}");
    assert!(
        stderr.contains("SIGTERM"),
        "the log names the signal:\n{stderr}"
    );
}

#[tokio::test]
async fn serve_fails_when_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("local address");
    let mut vane = Vane::serve(addr);
    let exit = vane
        .wait_exit(Duration::from_secs(5))
        .expect("vane exits when it cannot bind");
    let stderr = vane.stderr();
    assert!(
        !exit.success(),
        "vane exited 0 without a listener; log:\n{stderr}"
    );
    assert!(
        stderr.contains(&addr.to_string()),
        "the error names the address:\n{stderr}"
    );
}

#[test]
fn config_default_parses_back_as_the_default_config() {
    let out = Command::new(VANE)
        .args(["config", "default"])
        .output()
        .expect("run vane config default");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    let config = vane_config::Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
    assert_eq!(config, vane_config::Config::default());
}

#[test]
fn serve_check_validates_a_config_file() {
    let dir = std::env::temp_dir();
    let good = dir.join(format!("vane-test-good-{}.toml", std::process::id()));
    let bad = dir.join(format!("vane-test-bad-{}.toml", std::process::id()));
    std::fs::write(&good, "[mqtt]\nmax_inflight = 8\n").expect("write config");
    std::fs::write(&bad, "[mqtt]\nmax_inflight = 0\nmax_qos = 3\n").expect("write config");

    let out = Command::new(VANE)
        .args(["serve", "--check", "--config"])
        .arg(&good)
        .output()
        .expect("run vane");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(VANE)
        .args(["serve", "--check", "--config"])
        .arg(&bad)
        .output()
        .expect("run vane");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // Every problem is reported with its key.
    assert!(
        stderr.contains("mqtt.max_inflight") && stderr.contains("mqtt.max_qos"),
        "{stderr}"
    );

    let _ = std::fs::remove_file(good);
    let _ = std::fs::remove_file(bad);
}

#[test]
fn serve_check_loads_the_password_file_and_reports_anonymous_clients() {
    let dir = std::env::temp_dir();
    let id = std::process::id();
    let passwd = dir.join(format!("vane-test-passwd-{id}"));
    let config = dir.join(format!("vane-test-passwd-{id}.toml"));
    let write_config = |bind: &str| {
        let text = format!(
            "[[listeners]]\nbind = \"{bind}\"\n\n[auth]\npassword_file = {:?}\n",
            passwd.to_str().expect("UTF-8 temp path")
        );
        std::fs::write(&config, text).expect("write config");
    };
    let check = || {
        Command::new(VANE)
            .args(["serve", "--check", "--config"])
            .arg(&config)
            .output()
            .expect("run vane")
    };

    // A broken line stops the check, naming the line.
    std::fs::write(&passwd, "# users\nalice:not-a-hash\n").expect("write");
    write_config("127.0.0.1:1883");
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("line 2"), "{stderr}");

    // An empty file is valid; with it, even the loopback listener refuses anonymous clients.
    std::fs::write(&passwd, "# no users yet\n").expect("write");
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("listener 127.0.0.1:1883: anonymous clients refused"),
        "{stdout}"
    );
    assert!(
        stdout.contains("authentication methods: password_file"),
        "{stdout}"
    );

    let _ = std::fs::remove_file(passwd);
    let _ = std::fs::remove_file(config);
}

/// The soft and hard open file limits of a running process, from /proc.
#[cfg(target_os = "linux")]
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

// A broker started with a low soft open file limit (a login shell's 1024, say) raises it to
// the hard limit, or it could serve only about that many clients.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn serve_raises_a_low_soft_open_file_limit_to_the_hard_limit() {
    let addr = free_loopback_addr();
    let child = Command::new("sh")
        .args([
            "-c",
            "ulimit -S -n 256 && exec \"$0\" serve --bind \"$1\" --durability memory",
            VANE,
            &addr.to_string(),
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vane serve under sh");
    let mut vane = Vane(child);
    vane.wait_listening(addr).await;
    let (soft, hard) = open_file_limits(vane.0.id());
    assert_ne!(soft, "256", "the soft limit was not raised");
    let expected = if hard == "unlimited" {
        "1048576"
    } else {
        &hard
    };
    assert_eq!(soft, expected, "raised to the hard limit (capped at 2^20)");
    let status = Command::new("kill")
        .args(["-TERM", &vane.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    vane.wait_exit(Duration::from_secs(5));
    let log = vane.stderr();
    assert!(log.contains("open file limit raised"), "{log}");
}
