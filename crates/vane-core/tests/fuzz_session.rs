//! Runs the `session` fuzz target's check (`vane_core::fuzzing::check`) without cargo-fuzz: on
//! the committed corpus (`fuzz/corpus/session/`), on the hand-written seeds it starts from, and
//! on pseudo-random inputs. Regenerate the seed files with
//! `VANE_WRITE_SESSION_CORPUS=1 cargo test -p vane-core --test fuzz_session write_seed_corpus -- --ignored`.

use std::path::PathBuf;

use vane_core::fuzzing::{check, Stats};

/// Selector byte: protocol version (0 3.1, 1 3.1.1, 2 5.0), index of `max_inflight` in
/// [1, 2, 3, 4, 8, 16, 64, 1024], index of the broker's Receive Maximum in [1, 2, 4, 1024].
fn selector(version: u8, inflight: u8, receive_maximum: u8) -> u8 {
    version | (inflight << 2) | (receive_maximum << 5)
}

/// Client byte: indexes of Receive Maximum [none, 1, 2, 5], Maximum Packet Size [none, 64,
/// 128, 300], Topic Alias Maximum [none, 1, 2, 3] and keep alive [0, 1, 2, 60].
fn client(receive_maximum: u8, packet_size: u8, aliases: u8, keep_alive: u8) -> u8 {
    receive_maximum | (packet_size << 2) | (aliases << 4) | (keep_alive << 6)
}

// Operations (opcode, then arguments), as `vane_core::fuzzing` reads them.
fn deliver(qos: u8, topic: u8, payload_half: u8, extra: u8) -> Vec<u8> {
    vec![6, qos | (topic << 2), payload_half, extra]
}
fn ack_first() -> Vec<u8> {
    vec![4, 0, 0]
}
fn flush() -> Vec<u8> {
    vec![7, 7]
}
fn resume(client: u8) -> Vec<u8> {
    vec![11, 1, client]
}
fn drop_connection() -> Vec<u8> {
    vec![10, 0]
}
fn wait_secs(s: u8) -> Vec<u8> {
    vec![9, 0x80 | s]
}
fn publish(qos: u8, topic: u8, id: u8, flags: u8) -> Vec<u8> {
    // Routed with PUBACK/PUBREC, and also delivered back to the client.
    vec![1, qos | (topic << 2), id, flags, 4]
}
fn subscribe(filter: u8, qos: u8, retained: u8) -> Vec<u8> {
    vec![2, filter | (qos << 3), 0x40, 1, retained]
}

fn input(head: [u8; 2], ops: &[Vec<u8>]) -> Vec<u8> {
    let mut data = head.to_vec();
    for op in ops {
        data.extend_from_slice(op);
    }
    data
}

/// The hand-written seeds, each reaching a state the fuzzer should start from.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let rm2 = client(2, 0, 2, 0);
    vec![
        (
            // QoS 1 deliveries fill a Receive Maximum of 2, wait, and are resent on resume.
            "seed-v5-window-and-resume",
            input(
                [selector(2, 7, 3), rm2],
                &[
                    deliver(1, 0, 5, 0),
                    deliver(1, 1, 5, 0),
                    deliver(1, 2, 5, 0),
                    deliver(2, 0, 5, 0),
                    ack_first(),
                    flush(),
                    drop_connection(),
                    deliver(1, 1, 5, 0),
                    resume(rm2),
                    ack_first(),
                    ack_first(),
                    flush(),
                    ack_first(),
                ],
            ),
        ),
        (
            // QoS 2 through a window of one: PUBREC, PUBREL, PUBCOMP, and a resume in between.
            "seed-v311-qos2-window-1",
            input(
                [selector(1, 0, 3), client(0, 0, 0, 0)],
                &[
                    deliver(2, 1, 3, 0),
                    deliver(2, 2, 3, 8),
                    ack_first(),
                    drop_connection(),
                    resume(0),
                    ack_first(),
                    flush(),
                    ack_first(),
                    ack_first(),
                ],
            ),
        ),
        (
            // Inbound QoS 2 beyond the broker's Receive Maximum of 2.
            "seed-v5-receive-maximum",
            input(
                [selector(2, 7, 1), client(0, 0, 0, 0)],
                &[
                    publish(2, 0, 1, 0),
                    publish(2, 0, 2, 0),
                    publish(2, 0, 3, 0),
                    resume(0),
                    vec![5, 2],
                ],
            ),
        ),
        (
            // Server topic aliases for a long topic, and a message too large for the client.
            "seed-v5-aliases-and-size",
            input(
                [selector(2, 7, 3), client(0, 2, 3, 0)],
                &[
                    deliver(0, 4, 1, 0),
                    deliver(0, 4, 1, 0),
                    deliver(1, 4, 100, 0),
                    deliver(0, 3, 1, 0),
                    deliver(1, 4, 1, 0),
                    ack_first(),
                ],
            ),
        ),
        (
            // Keep alive of 1 s: 2 s of silence end the connection.
            "seed-v5-keep-alive",
            input(
                [selector(2, 7, 3), client(0, 0, 0, 1)],
                &[vec![8], wait_secs(1), wait_secs(1), resume(0)],
            ),
        ),
        (
            // MQTT 3.1: subscribe, retained messages, a publish routed back, message expiry.
            "seed-v31-subscribe-retained",
            input(
                [selector(0, 3, 3), client(0, 0, 0, 0)],
                &[
                    subscribe(1, 2, 3),
                    flush(),
                    publish(1, 1, 4, 0),
                    deliver(1, 0, 1, 0x13),
                    wait_secs(5),
                    flush(),
                    ack_first(),
                    vec![3, 1],
                ],
            ),
        ),
        (
            // Raw client bytes: a v5 PUBLISH with topic alias 1, then the alias alone.
            "seed-v5-raw-alias",
            input(
                [selector(2, 7, 3), client(0, 0, 0, 0)],
                &[
                    vec![
                        0, 10, 0x30, 0x08, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x01, b'x',
                    ],
                    vec![0, 9, 0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, b'y'],
                    vec![0, 2, 0xC0, 0x00],
                ],
            ),
        ),
    ]
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/session")
}

#[test]
fn seeds_reach_the_states_they_are_for() {
    let stats: Vec<(&str, Stats)> = seeds().into_iter().map(|(n, d)| (n, check(&d))).collect();
    let get = |name: &str| {
        stats
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone())
            .expect("seed")
    };
    let window = get("seed-v5-window-and-resume");
    assert_eq!(window.most_unacknowledged, 2, "{window:?}");
    assert!(window.window_full > 0 && window.resumes == 1, "{window:?}");
    let qos2 = get("seed-v311-qos2-window-1");
    assert_eq!(qos2.most_unacknowledged, 1, "{qos2:?}");
    assert!(qos2.resumes == 1, "{qos2:?}");
    let receive_maximum = get("seed-v5-receive-maximum");
    assert_eq!(receive_maximum.session_errors, 1, "{receive_maximum:?}");
    let aliases = get("seed-v5-aliases-and-size");
    assert!(aliases.packets_read >= 4, "{aliases:?}");
    let keep_alive = get("seed-v5-keep-alive");
    assert_eq!(keep_alive.session_errors, 1, "{keep_alive:?}");
    let v31 = get("seed-v31-subscribe-retained");
    assert!(v31.qos_publishes_read >= 2, "{v31:?}");
    let raw = get("seed-v5-raw-alias");
    assert_eq!(raw.session_errors, 0, "{raw:?}");
}

#[test]
fn replay_session_corpus() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= seeds().len(),
        "only {} corpus files",
        files.len()
    );
    for path in files {
        let data = std::fs::read(&path).expect("read a corpus file");
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("corpus file {} fails the session check", path.display());
        }
    }
}

#[test]
fn committed_seeds_are_the_written_ones() {
    for (name, data) in seeds() {
        let path = corpus_dir().join(name);
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            committed, data,
            "{name} differs: regenerate the seed corpus"
        );
    }
}

#[test]
fn random_inputs_keep_the_invariants() {
    // xorshift: deterministic, so a failure reproduces; biased towards the opcodes that move
    // deliveries and acknowledgements, which a uniform byte stream rarely lines up.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let len = (next() % 300) as usize;
        let data: Vec<u8> = (0..len)
            .map(|i| {
                let r = next();
                if i > 1 && r % 5 == 0 {
                    [4, 6, 7, 11][(r >> 8) as usize % 4]
                } else {
                    (r >> 16) as u8
                }
            })
            .collect();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("input {data:02x?} fails the session check");
        }
    }
}

#[test]
#[ignore = "writes fuzz/corpus/session/seed-*; run with VANE_WRITE_SESSION_CORPUS=1"]
fn write_seed_corpus() {
    if std::env::var_os("VANE_WRITE_SESSION_CORPUS").is_none() {
        return;
    }
    std::fs::create_dir_all(corpus_dir()).expect("create the corpus directory");
    for (name, data) in seeds() {
        std::fs::write(corpus_dir().join(name), data).expect("write a seed");
    }
}
