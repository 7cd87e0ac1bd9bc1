//! Helpers shared by the tests that run the `vane` binary: a child process killed when the
//! test ends, a free loopback port, and a `vane serve` child listening on one.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `vane` binary under test.
pub const VANE: &str = env!("CARGO_BIN_EXE_vane");

/// A child process killed if the test ends before it exits.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A loopback port nothing listens on (at the time of the call).
pub fn free_port() -> u16 {
    test_support::process::free_loopback_addr().port()
}

/// Starts `vane serve` on a free loopback port and waits until it listens.
pub fn serve() -> (Proc, u16) {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    (serve_with(&["--bind", &addr.to_string()], addr), port)
}

/// Starts `vane serve` with `args` (its listeners) and `--durability memory`, and waits until
/// `ready` accepts connections.
pub fn serve_with(args: &[&str], ready: SocketAddr) -> Proc {
    let child = Command::new(VANE)
        .arg("serve")
        .args(args)
        .args(["--durability", "memory"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vane serve");
    let mut broker = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(ready).is_err() {
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
