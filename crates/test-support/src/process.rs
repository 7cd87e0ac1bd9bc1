//! A `vane serve` child process on a store directory, for the durability tests: start it,
//! kill it (SIGKILL) or stop it (SIGTERM), and start it again on the same directory and port.
//!
//! The broker's log (stderr and stdout) is appended to `vane.log` in a [`TempDir`] across
//! restarts, so a failing test can print what the broker said before and after each crash.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A directory under the system temp dir, removed on drop unless the thread is panicking (then
/// it is kept, and its path printed, so the store and log can be examined).
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("VANE_KEEP_TEMP").is_some() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A loopback address nothing listened on a moment ago, for a broker child process to bind.
///
/// The port is taken from below the kernel's ephemeral range, never from it: a port the kernel
/// handed out for `bind(…:0)` and released can be handed out again, to another test's listener
/// or as the source port of a client's connection (which then connects to itself), before the
/// child binds it. That happened in CI: the broker failed to start and the test talked to
/// another test's listener. Below the range only an explicit bind can take the port; the
/// process id spreads parallel test processes apart and a counter spreads one process's calls.
pub fn free_loopback_addr() -> SocketAddr {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (first, count) = non_ephemeral_ports();
    let start = u64::from(std::process::id()).wrapping_mul(7919);
    for _ in 0..count {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % u64::from(count);
        let port = first + offset as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().expect("local address");
        }
    }
    panic!(
        "no free loopback port in {first}..{}",
        u32::from(first) + u32::from(count)
    );
}

/// The first port and the number of ports in a range the kernel does not hand out by itself:
/// below `ip_local_port_range` when there is room (10000 up to it), else above it.
fn non_ephemeral_ports() -> (u16, u16) {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    if low >= 12000 {
        (10000, low - 10000)
    } else if high < 63000 {
        (high + 1, 65535 - high)
    } else {
        // The whole range is ephemeral: fall back to what the kernel gives.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        (listener.local_addr().expect("local address").port(), 1)
    }
}

/// How a [`VaneProcess`] is started; the same options are used for every restart.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The `vane` binary.
    pub binary: PathBuf,
    /// `--bind`: a loopback address, kept across restarts.
    pub addr: SocketAddr,
    /// `--store-dir`.
    pub store_dir: PathBuf,
    /// `--durability`: `sync`, `batch` or `memory`.
    pub durability: String,
    /// `--config`, when given.
    pub config: Option<PathBuf>,
    /// Where the log is appended.
    pub log_path: PathBuf,
    /// `RUST_LOG` for the broker.
    pub log_level: String,
}

impl ServeOptions {
    /// Options for `binary` with its store in `dir/store`, its log in `dir/vane.log`, on a free
    /// loopback port, with `durability`.
    pub fn new(binary: impl Into<PathBuf>, dir: &Path, durability: &str) -> ServeOptions {
        ServeOptions {
            binary: binary.into(),
            addr: free_loopback_addr(),
            store_dir: dir.join("store"),
            durability: durability.to_owned(),
            config: None,
            log_path: dir.join("vane.log"),
            log_level: "info".to_owned(),
        }
    }

    /// The command line after `vane`.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "serve".to_owned(),
            "--bind".to_owned(),
            self.addr.to_string(),
            "--store-dir".to_owned(),
            self.store_dir.display().to_string(),
            "--durability".to_owned(),
            self.durability.clone(),
        ];
        if let Some(config) = &self.config {
            args.push("--config".to_owned());
            args.push(config.display().to_string());
        }
        args
    }
}

/// A running (or exited) `vane serve` child. Killed with SIGKILL on drop.
pub struct VaneProcess {
    options: ServeOptions,
    child: Option<Child>,
    starts: u32,
}

impl VaneProcess {
    /// Starts the broker and waits (at most `timeout`) until it answers CONNECT with CONNACK.
    pub fn start(options: ServeOptions, timeout: Duration) -> VaneProcess {
        let mut p = VaneProcess {
            options,
            child: None,
            starts: 0,
        };
        p.spawn_and_wait(timeout);
        p
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.options.addr
    }

    /// The options the broker runs with.
    pub fn options(&self) -> &ServeOptions {
        &self.options
    }

    /// The process id of the running child.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many times the broker was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    fn spawn_and_wait(&mut self, timeout: Duration) {
        let started = Instant::now();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.options.log_path)
            .expect("open the broker log");
        self.starts += 1;
        let _ = writeln!(
            log,
            "=== test: start #{} of vane {}",
            self.starts,
            self.options.args().join(" ")
        );
        let err = log.try_clone().expect("clone the log handle");
        let child = Command::new(&self.options.binary)
            .args(self.options.args())
            .env("RUST_LOG", &self.options.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start vane serve");
        self.child = Some(child);
        let deadline = started + timeout;
        loop {
            if mqtt_ready(self.options.addr) {
                return;
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "vane exited with {status} before listening on {}; log:\n{}",
                    self.options.addr,
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "vane is not listening on {} {timeout:?} after start #{}; log:\n{}",
                    self.options.addr,
                    self.starts,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("poll the broker process"))
    }

    fn note(&self, line: &str) {
        if let Ok(mut log) = OpenOptions::new().append(true).open(&self.options.log_path) {
            let _ = writeln!(log, "=== test: {line}");
        }
    }

    /// SIGKILL: the process gets no chance to flush anything. Waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let status = child.wait().expect("reap the killed broker");
            self.note(&format!("SIGKILL, {status}"));
        }
    }

    /// Sends SIGTERM (the broker shuts down gracefully) without waiting.
    pub fn terminate(&mut self) {
        let pid = self.pid().expect("the broker is running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed");
        self.note("SIGTERM sent");
    }

    /// Waits at most `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                self.note(&format!("exited, {status}"));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the broker again with the same options (same store and port), after it was killed
    /// or has exited, and waits until it answers CONNECT.
    pub fn restart(&mut self, timeout: Duration) {
        assert!(
            self.child.is_none(),
            "restart: the previous broker is still running"
        );
        self.spawn_and_wait(timeout);
    }

    /// Everything the broker logged so far, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.options.log_path).unwrap_or_default()
    }

    /// The log lines at WARN or ERROR level (or that mention a panic), for reports.
    pub fn problems(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("panicked")
                    || l.contains("\"level\":\"WARN\"")
                    || l.contains("\"level\":\"ERROR\"")
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for VaneProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether the broker at `addr` answers an MQTT 3.1.1 CONNECT (clean session) with a
/// successful CONNACK. A TCP connection alone is not readiness: the listening socket accepts
/// connections (into its backlog) while the broker is still opening its store, before it
/// handles SIGTERM.
fn mqtt_ready(addr: SocketAddr) -> bool {
    use std::io::Read;
    use vane_proto::{Connect, Packet, ProtocolVersion};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let connect = Connect::new(ProtocolVersion::V3_1_1, "vane-test-ready-probe");
    let Ok(bytes) = Packet::Connect(Box::new(connect)).to_bytes(ProtocolVersion::V3_1_1) else {
        return false;
    };
    if s.write_all(&bytes).is_err() {
        return false;
    }
    let mut connack = [0u8; 4];
    if s.read_exact(&mut connack).is_err() {
        return false;
    }
    let _ = s.write_all(&[0xE0, 0x00]); // DISCONNECT
                                        // Any CONNACK: a broker that refuses anonymous clients (return code 5) is ready too.
    connack[..2] == [0x20, 0x02]
}

/// Writes `text` to `path` (a config file for `--config`).
pub fn write_file(path: &Path, text: &str) {
    let mut f = File::create(path).expect("create a file");
    f.write_all(text.as_bytes()).expect("write a file");
}
