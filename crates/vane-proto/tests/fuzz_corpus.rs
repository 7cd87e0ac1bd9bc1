//! Replays the committed corpus of the `decode` fuzz target (`fuzz/corpus/decode/`) through the
//! same check the fuzzer runs, `vane_proto::fuzzing::check`, so `cargo test` covers it without
//! cargo-fuzz. Seeds written from the golden cases (`seed-*`, `session-*`) must also decode
//! without error; other files are inputs the fuzzer found interesting, valid or not.

use std::path::PathBuf;

use vane_proto::fuzzing;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, data)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn replay_decode_corpus() {
    let files = corpus();
    assert!(files.len() >= 40, "only {} corpus files", files.len());
    let mut packets = 0;
    for (name, data) in &files {
        let outcome = std::panic::catch_unwind(|| fuzzing::check(data))
            .unwrap_or_else(|_| panic!("corpus file {name} fails the fuzz check"));
        if name.starts_with("seed-") || name.starts_with("session-") {
            assert_eq!(outcome.error, None, "{name}");
            assert!(!outcome.packets.is_empty(), "{name} decodes no packet");
        }
        if name.starts_with("session-") {
            assert!(
                outcome.packets.len() >= 10,
                "{name}: {} packets",
                outcome.packets.len()
            );
        }
        packets += outcome.packets.len();
    }
    eprintln!("replayed {} files, {packets} packets", files.len());
}

/// Every selector keeps the seeds valid as long as the version and size fit: each seed decodes
/// the same whatever chunk size the selector's upper bits ask for.
#[test]
fn seeds_decode_the_same_in_any_chunk_size() {
    for (name, data) in corpus()
        .iter()
        .filter(|(n, _)| n.starts_with("seed-") || n.starts_with("session-"))
    {
        let reference = fuzzing::check(data);
        for chunk_bits in 0..16u8 {
            let mut changed = data.clone();
            changed[0] = (data[0] & 0x0F) | (chunk_bits << 4);
            assert_eq!(
                fuzzing::check(&changed),
                reference,
                "{name} with chunk bits {chunk_bits}"
            );
        }
    }
}
