//! `vane pub` and `vane sub` end to end against a `vane serve` child process, over plain TCP
//! and over TLS (certificates made at test time with rcgen).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{serve, Proc, VANE};
use rcgen::SanType;
use test_support::certs::{ca as make_ca, client_cert, leaf as make_leaf, server_cert};

/// Starts `vane sub` with stdout piped.
fn spawn_sub(port: u16, args: &[&str]) -> Proc {
    let child = Command::new(VANE)
        .args(["sub", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vane sub");
    Proc(child)
}

/// Waits for a `vane sub` to exit and returns its output.
fn finish(mut sub: Proc) -> Output {
    let mut child = std::mem::replace(
        &mut sub.0,
        Command::new("true").spawn().expect("spawn true"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("poll").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut stdout).expect("read stdout");
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).expect("read stderr");
    }
    let status = child.wait().expect("wait");
    Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

/// Runs `vane pub` to completion, optionally feeding stdin.
fn publish(port: u16, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(VANE)
        .args(["pub", "-p", &port.to_string()])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vane pub");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("vane pub output")
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for a `vane sub` to exit, checks that it succeeded and returns what it printed.
fn finish_ok(sub: Proc, what: &str) -> String {
    let out = finish(sub);
    assert_ok(&out, what);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a command printed on stderr; it must have failed.
fn failure(out: &Output, what: &str) -> String {
    assert!(!out.status.success(), "{what}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Gives a background subscriber time to connect and subscribe.
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn pub_at_each_qos_reaches_sub() {
    let (_broker, port) = serve();
    let sub = spawn_sub(port, &["-C", "3", "-W", "10", "-v", "-q", "2", "-t", "t/#"]);
    settle();
    for qos in ["0", "1", "2"] {
        let out = publish(
            port,
            &[
                "-t",
                &format!("t/q{qos}"),
                "-q",
                qos,
                "-m",
                &format!("hello {qos}"),
            ],
            None,
        );
        assert_ok(&out, "vane pub");
    }
    let stdout = finish_ok(sub, "vane sub");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["t/q0 hello 0", "t/q1 hello 1", "t/q2 hello 2"]);
}

#[test]
fn retained_message_reaches_later_subscriber() {
    let (_broker, port) = serve();
    let out = publish(port, &["-t", "r/x", "-r", "-q", "1", "-m", "kept"], None);
    assert_ok(&out, "vane pub -r");
    let sub = spawn_sub(port, &["-C", "1", "-W", "10", "-t", "r/#"]);
    assert_eq!(finish_ok(sub, "vane sub"), "kept\n");
}

#[test]
fn stdin_lines_are_separate_messages() {
    let (_broker, port) = serve();
    let sub = spawn_sub(port, &["-C", "3", "-W", "10", "-q", "1", "-t", "l"]);
    settle();
    let out = publish(
        port,
        &["-t", "l", "-q", "1", "-l"],
        Some("one\ntwo\nthree\n"),
    );
    assert_ok(&out, "vane pub -l");
    assert_eq!(finish_ok(sub, "vane sub"), "one\ntwo\nthree\n");
}

#[test]
fn whole_stdin_and_null_messages() {
    let (_broker, port) = serve();
    let sub = spawn_sub(port, &["-C", "2", "-W", "10", "-t", "s"]);
    settle();
    assert_ok(
        &publish(port, &["-t", "s", "-s"], Some("a\nb")),
        "vane pub -s",
    );
    assert_ok(&publish(port, &["-t", "s", "-n"], None), "vane pub -n");
    assert_eq!(finish_ok(sub, "vane sub"), "a\nb\n\n");
}

#[test]
fn v5_properties_round_trip() {
    let (_broker, port) = serve();
    let sub = spawn_sub(
        port,
        &[
            "-V",
            "mqttv5",
            "-C",
            "1",
            "-W",
            "10",
            "-v",
            "--print-properties",
            "-t",
            "p",
        ],
    );
    settle();
    let out = publish(
        port,
        &[
            "-V",
            "mqttv5",
            "-t",
            "p",
            "-q",
            "1",
            "-m",
            "body",
            "--user-property",
            "colour",
            "blue",
            "--user-property",
            "size",
            "9",
            "--content-type",
            "text/plain",
            "--response-topic",
            "reply/here",
            "--correlation-data",
            "abc",
            "--message-expiry",
            "300",
        ],
        None,
    );
    assert_ok(&out, "vane pub -V mqttv5");
    let stdout = finish_ok(sub, "vane sub");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "p body");
    for expected in [
        "  user-property: colour blue",
        "  user-property: size 9",
        "  content-type: text/plain",
        "  response-topic: reply/here",
        "  correlation-data: abc",
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in {stdout}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  message-expiry-interval: ")),
        "missing message expiry in {stdout}"
    );
}

#[test]
fn connack_refusal_is_an_error() {
    let (_broker, port) = serve();
    let out = publish(
        port,
        &[
            "-V",
            "mqttv31",
            "-i",
            "abcdefghijklmnopqrstuvwxyz0123",
            "-t",
            "x",
            "-m",
            "y",
        ],
        None,
    );
    let stderr = failure(&out, "a refused CONNACK must fail");
    assert!(
        stderr.contains("client identifier not valid (0x02)"),
        "stderr: {stderr}"
    );
}

#[test]
fn connection_refused_and_timeout_are_errors() {
    let port = common::free_port();
    let out = publish(port, &["-t", "x", "-m", "y"], None);
    assert!(failure(&out, "nothing listens").contains("cannot connect"));

    let (_broker, port) = serve();
    let out = finish(spawn_sub(port, &["-W", "1", "-t", "nothing"]));
    assert!(failure(&out, "-W without messages must fail").contains("timed out"));
}

#[test]
fn suback_refusal_is_an_error() {
    let (_broker, port) = serve();
    let out = finish(spawn_sub(
        port,
        &["-V", "mqttv5", "-W", "10", "-t", "ok/#", "-t", "a/#/b"],
    ));
    let stderr = failure(&out, "a refused subscription must fail");
    assert!(
        stderr.contains("subscription to a/#/b refused") && stderr.contains("0x8F"),
        "stderr: {stderr}"
    );
    let out = finish(spawn_sub(port, &["-W", "10", "-t", "a/#/b"]));
    let stderr = failure(&out, "a refused MQTT 3.1.1 subscription must fail");
    assert!(stderr.contains("0x80"), "stderr: {stderr}");
}

#[test]
fn idle_subscriber_keeps_alive_and_qos2_drains() {
    let (_broker, port) = serve();
    let sub = spawn_sub(
        port,
        &["-k", "1", "-q", "2", "-C", "1", "-W", "15", "-t", "k"],
    );
    // Several keep-alive periods with no traffic: PINGREQ must keep the session up.
    std::thread::sleep(Duration::from_secs(3));
    assert_ok(
        &publish(port, &["-t", "k", "-q", "2", "-m", "late"], None),
        "vane pub",
    );
    assert_eq!(finish_ok(sub, "vane sub"), "late\n");
}

#[test]
fn will_and_persistent_session_options() {
    let (_broker, port) = serve();
    // A persistent subscriber: subscribe, leave, then collect what was queued meanwhile.
    let first = finish(spawn_sub(
        port,
        &["-c", "-i", "keeper", "-q", "1", "-W", "1", "-t", "queued"],
    ));
    assert!(!first.status.success(), "-W without -C times out");
    assert_ok(
        &publish(
            port,
            &[
                "-t",
                "queued",
                "-q",
                "1",
                "-m",
                "while away",
                "--will-topic",
                "w",
                "--will-payload",
                "gone",
            ],
            None,
        ),
        "vane pub",
    );
    let sub = spawn_sub(
        port,
        &[
            "-c", "-i", "keeper", "-q", "1", "-C", "1", "-W", "10", "-t", "queued",
        ],
    );
    assert_eq!(finish_ok(sub, "vane sub -c"), "while away\n");
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// A broker with three TLS listeners, and the PEM files the clients use.
struct TlsBroker {
    _broker: Proc,
    dir: tempfile::TempDir,
    /// Server certificate for localhost and 127.0.0.1, no client certificates.
    tls: u16,
    /// The same, and a client certificate signed by the CA is required.
    mtls: u16,
    /// Server certificate for another name only (other.example).
    other_name: u16,
}

impl TlsBroker {
    fn start() -> TlsBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = make_ca("vane cli test CA");
        ca.write(dir.path(), "ca");
        make_ca("some other CA").write(dir.path(), "stranger");
        server_cert(&ca).write(dir.path(), "server");
        make_leaf(
            &ca,
            "other.example",
            vec![SanType::DnsName(
                "other.example".try_into().expect("DNS name"),
            )],
            true,
        )
        .write(dir.path(), "other");
        client_cert(&ca, "alice").write(dir.path(), "alice");
        std::fs::write(dir.path().join("garbage.key"), "not a key\n").expect("write");

        let path = |name: &str| dir.path().join(name).display().to_string();
        let ports = [
            common::free_port(),
            common::free_port(),
            common::free_port(),
        ];
        let config = format!(
            "[[listeners]]\nbind = \"127.0.0.1:{}\"\ntls = {{ cert = {:?}, key = {:?} }}\n\n\
             [[listeners]]\nbind = \"127.0.0.1:{}\"\n\
             tls = {{ cert = {:?}, key = {:?}, client_ca = {:?}, require_client_cert = true }}\n\n\
             [[listeners]]\nbind = \"127.0.0.1:{}\"\ntls = {{ cert = {:?}, key = {:?} }}\n",
            ports[0],
            path("server.pem"),
            path("server.key"),
            ports[1],
            path("server.pem"),
            path("server.key"),
            path("ca.pem"),
            ports[2],
            path("other.pem"),
            path("other.key"),
        );
        let config_path = dir.path().join("vane.toml");
        std::fs::write(&config_path, config).expect("write config");
        let child = Command::new(VANE)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(["--durability", "memory"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vane serve");
        let mut broker = Proc(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in ports {
            while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
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
        }
        TlsBroker {
            _broker: broker,
            dir,
            tls: ports[0],
            mtls: ports[1],
            other_name: ports[2],
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[test]
fn tls_pub_reaches_tls_sub() {
    let b = TlsBroker::start();
    let ca = b.path("ca.pem");
    // The default host 127.0.0.1 matches the IP address SAN, localhost the DNS SAN.
    let sub = spawn_sub(
        b.tls,
        &[
            "--cafile", &ca, "-C", "3", "-W", "10", "-v", "-q", "1", "-t", "s/#",
        ],
    );
    settle();
    for (version, qos) in [("tlsv1.2", "0"), ("tlsv1.3", "1"), ("tlsv1.3", "2")] {
        let out = publish(
            b.tls,
            &[
                "-h",
                "localhost",
                "--cafile",
                &ca,
                "--tls-version",
                version,
                "-q",
                qos,
                "-t",
                &format!("s/{version}"),
                "-m",
                &format!("q{qos}"),
            ],
            None,
        );
        assert_ok(&out, "vane pub --cafile");
    }
    let stdout = finish_ok(sub, "vane sub --cafile");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["s/tlsv1.2 q0", "s/tlsv1.3 q1", "s/tlsv1.3 q2"]);
}

#[test]
fn mtls_needs_cert_and_key() {
    let b = TlsBroker::start();
    let ca = b.path("ca.pem");
    for version in ["tlsv1.2", "tlsv1.3"] {
        let out = publish(
            b.mtls,
            &[
                "--cafile",
                &ca,
                "--tls-version",
                version,
                "-t",
                "m",
                "-m",
                "x",
            ],
            None,
        );
        let stderr = failure(&out, "a client without a certificate must be refused");
        assert!(
            stderr.contains("client certificate")
                && stderr.contains("--cert")
                && stderr.contains("--key"),
            "{version}: stderr: {stderr}"
        );
        let out = finish(spawn_sub(b.mtls, &["--cafile", &ca, "-W", "10", "-t", "m"]));
        failure(&out, "a subscriber without a certificate must be refused");
    }

    let (cert, key) = (b.path("alice.pem"), b.path("alice.key"));
    let with_cert = ["--cafile", &ca, "--cert", &cert, "--key", &key];
    let sub_args: Vec<&str> = with_cert
        .iter()
        .copied()
        .chain(["-C", "1", "-W", "10", "-q", "1", "-t", "m"])
        .collect();
    let sub = spawn_sub(b.mtls, &sub_args);
    settle();
    let pub_args: Vec<&str> = with_cert
        .iter()
        .copied()
        .chain(["-q", "1", "-t", "m", "-m", "mutual"])
        .collect();
    assert_ok(&publish(b.mtls, &pub_args, None), "vane pub --cert --key");
    assert_eq!(finish_ok(sub, "vane sub --cert --key"), "mutual\n");
}

#[test]
fn wrong_ca_and_wrong_name_fail_and_insecure_skips_only_the_name() {
    let b = TlsBroker::start();
    let ca = b.path("ca.pem");
    let stranger = b.path("stranger.pem");
    let out = publish(b.tls, &["--cafile", &stranger, "-t", "w", "-m", "x"], None);
    let stderr = failure(&out, "a server certificate from an untrusted CA must fail");
    assert!(
        stderr.contains("TLS handshake failed") && stderr.contains("UnknownIssuer"),
        "stderr: {stderr}"
    );
    let out = publish(
        b.tls,
        &["--cafile", &stranger, "--insecure", "-t", "w", "-m", "x"],
        None,
    );
    let stderr = failure(&out, "--insecure still verifies the chain");
    assert!(stderr.contains("UnknownIssuer"), "stderr: {stderr}");

    // The certificate is for other.example, not 127.0.0.1.
    let out = publish(b.other_name, &["--cafile", &ca, "-t", "w", "-m", "x"], None);
    let stderr = failure(&out, "a certificate for another name must fail");
    assert!(stderr.contains("NotValidForName"), "stderr: {stderr}");
    assert_ok(
        &publish(
            b.other_name,
            &["--cafile", &ca, "--insecure", "-t", "w", "-m", "x"],
            None,
        ),
        "vane pub --insecure",
    );
}

#[test]
fn unusable_tls_files_are_named() {
    let b = TlsBroker::start();
    let missing = b.path("missing.pem");
    let out = publish(b.tls, &["--cafile", &missing, "-t", "f", "-m", "x"], None);
    let stderr = failure(&out, "a missing --cafile must fail");
    assert!(
        stderr.contains(&format!("cannot read {missing}")),
        "stderr: {stderr}"
    );

    let garbage = b.path("garbage.key");
    let out = publish(b.tls, &["--cafile", &garbage, "-t", "f", "-m", "x"], None);
    let stderr = failure(&out, "a --cafile without certificates must fail");
    assert!(
        stderr.contains(&garbage) && stderr.contains("no CERTIFICATE"),
        "stderr: {stderr}"
    );

    let (ca, cert) = (b.path("ca.pem"), b.path("alice.pem"));
    let out = publish(
        b.mtls,
        &[
            "--cafile", &ca, "--cert", &cert, "--key", &garbage, "-t", "f", "-m", "x",
        ],
        None,
    );
    let stderr = failure(&out, "a --key without a key must fail");
    assert!(
        stderr.contains(&garbage) && stderr.contains("no PRIVATE KEY"),
        "stderr: {stderr}"
    );

    let out = publish(b.mtls, &["--cafile", &ca, "--cert", &cert, "-t", "f"], None);
    failure(&out, "--cert without --key is a usage error");
}

#[test]
fn ws_pub_reaches_ws_sub_and_tcp_clients() {
    // `vane serve --ws-bind` adds a ws:// listener on /mqtt; `--ws-path /mqtt` makes the
    // clients speak MQTT over WebSocket (3.1 offers the mqttv3.1 subprotocol).
    let (tcp_port, ws_port) = (common::free_port(), common::free_port());
    let ws_addr = SocketAddr::from(([127, 0, 0, 1], ws_port));
    let tcp_bind = format!("127.0.0.1:{tcp_port}");
    let ws_bind = ws_addr.to_string();
    let _broker = common::serve_with(&["--bind", &tcp_bind, "--ws-bind", &ws_bind], ws_addr);
    let sub = spawn_sub(
        ws_port,
        &[
            "--ws-path",
            "/mqtt",
            "-C",
            "3",
            "-W",
            "10",
            "-v",
            "-q",
            "1",
            "-t",
            "w/#",
        ],
    );
    settle();
    for (version, port, ws) in [
        ("mqttv5", ws_port, true),
        ("mqttv31", ws_port, true),
        ("mqttv311", tcp_port, false),
    ] {
        let mut args = vec!["-V", version, "-q", "1", "-t", "w/x", "-m", version];
        if ws {
            args.extend(["--ws-path", "/mqtt"]);
        }
        assert_ok(&publish(port, &args, None), "vane pub");
    }
    let stdout = finish_ok(sub, "vane sub --ws-path");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["w/x mqttv5", "w/x mqttv31", "w/x mqttv311"]
    );
    // Another path is refused by the upgrade (HTTP 404), reported as such.
    let out = publish(
        ws_port,
        &["--ws-path", "/nope", "-t", "w/x", "-m", "x"],
        None,
    );
    assert!(
        failure(&out, "vane pub to a wrong path").contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
