//! The store from the operator's side: `vane serve` refuses a store it cannot trust with an
//! error that names the directory and the way out, and `vane store check` / `repair` report
//! on a store without losing anything.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use test_support::process::{free_loopback_addr, ServeOptions, TempDir, VaneProcess};
use test_support::*;

const VANE: &str = env!("CARGO_BIN_EXE_vane");

fn vane(args: &[&str]) -> Output {
    Command::new(VANE)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run vane")
}

/// `vane serve` on a free port with `dir` as its store; it must exit on its own.
fn serve_refused(dir: &Path) -> String {
    let addr = free_loopback_addr().to_string();
    let mut child = Command::new(VANE)
        .args(["serve", "--bind", &addr, "--store-dir"])
        .arg(dir)
        .env_remove("RUST_BACKTRACE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vane");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "vane served a store it should have refused: {}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "refusing is a failure exit");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut stderr).expect("read stderr");
    }
    assert!(
        !stderr.contains("panicked"),
        "a refusal is not a panic:\n{stderr}"
    );
    stderr
}

#[test]
fn a_store_path_that_is_a_file_is_refused_by_name() {
    let tmp = TempDir::new("store-file");
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"hello").expect("write");
    let stderr = serve_refused(&file);
    assert!(stderr.contains("not-a-dir"), "names the path:\n{stderr}");
    assert_eq!(std::fs::read(&file).expect("read"), b"hello", "left alone");
}

#[test]
fn a_directory_that_is_not_a_store_is_refused_and_left_alone() {
    let tmp = TempDir::new("store-foreign");
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("mosquitto.db"), b"someone else's data").expect("write");
    let stderr = serve_refused(&dir);
    assert!(stderr.contains("data"), "names the directory:\n{stderr}");
    assert_eq!(
        std::fs::read(dir.join("mosquitto.db")).expect("read"),
        b"someone else's data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_healthy_store_and_repair_changes_nothing_in_it() {
    let tmp = TempDir::new("store-check");
    let options = ServeOptions::new(VANE, tmp.path(), "sync");
    let store = options.store_dir.clone();
    let mut broker = VaneProcess::start(options, Duration::from_secs(20));
    let mut c = TestClient::connect(broker.addr(), connect_v311_persistent("checked")).await;
    c.send(subscribe(1, "c/#", 1)).await;
    c.expect(suback(1, &[1])).await;
    c.disconnect().await;
    let mut p = TestClient::connect(broker.addr(), connect_v311("check-pub")).await;
    for id in 1..=3u16 {
        p.send(publish("c/x", 1, id, "queued")).await;
        p.expect(puback(id)).await;
    }
    // Retained, and queued for the subscriber too: four queued messages in all.
    p.send(publish_retained("c/r", 1, 4, "kept")).await;
    p.expect(puback(4)).await;
    p.disconnect().await;
    broker.terminate();
    assert!(
        broker
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "graceful stop:\n{}",
        broker.log()
    );

    let dir = store.display().to_string();
    let out = vane(&["store", "check", "--dir", &dir]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("sessions           1"), "{text}");
    assert!(text.contains("queued messages    4"), "{text}");
    assert!(text.contains("retained messages  1"), "{text}");
    let out = vane(&["store", "repair", "--dir", &dir]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 damaged record(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = vane(&["store", "check", "--dir", &dir]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("queued messages    4"));
    let out = vane(&["store", "check", "--dir", "/nonexistent/vane-store"]);
    assert!(!out.status.success(), "a missing store is an error");
}
