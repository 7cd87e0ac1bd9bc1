//! `vane pub` and `vane sub` end to end against a `vane serve` child process.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{serve, Proc, VANE};

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
