//! Crash safety: a writer child killed with SIGKILL mid-commit, then a check that every
//! acknowledged commit survived whole; and what each engine does with a truncated file or a
//! flipped byte (clean error, panic, or silently altered data).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::engines::{Engine, Op, Result, Store, Tree};
use crate::records::{
    message_value, parse_queue_key, queue_key, retained_topic, retained_value, Rng,
};

/// Messages each commit appends.
const PER_COMMIT: u64 = 8;
/// Commits kept: commit `c` deletes what commit `c - KEPT` appended (its acknowledgement).
const KEPT: u64 = 50;
/// Retained topics the commits cycle through.
const TOPICS: u64 = 1000;

/// Verdicts of [`verify`], as process exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_ENGINE_ERROR: i32 = 2;
pub const EXIT_ALTERED: i32 = 3;
pub const EXIT_MISSING: i32 = 4;

/// The writes of commit `c` (c >= 1): 8 messages, the acknowledgement of commit c - 50's
/// messages, and a retained message on topic c mod 1000.
fn commit_ops(c: u64) -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..PER_COMMIT {
        let seq = c * PER_COMMIT + i;
        let session = (seq % 100) as u32;
        ops.push(Op::put(
            Tree::Queue,
            queue_key(session, seq),
            message_value(session, seq),
        ));
        if c > KEPT {
            let old = (c - KEPT) * PER_COMMIT + i;
            ops.push(Op::delete(Tree::Queue, queue_key((old % 100) as u32, old)));
        }
    }
    let topic = (c % TOPICS) as u32;
    ops.push(Op::put(
        Tree::Retained,
        retained_topic(topic),
        retained_value(topic, c),
    ));
    ops
}

/// Commits from `first` on, printing each commit number once it is durable; stops after
/// `count` commits (never, when killed first).
pub fn write(store: &mut dyn Store, first: u64, count: u64, announce: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for c in first..first.saturating_add(count) {
        store.commit(&commit_ops(c))?;
        if announce {
            writeln!(out, "{c}")?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Opens the store in `dir` and checks it holds exactly the state after some commit
/// `last >= acked`: each of the last 50 commits' messages whole, nothing older, every value
/// exact, each retained topic at its latest version. Prints the verdict; returns the exit code.
pub fn verify(engine: Engine, dir: &Path, acked: u64) -> i32 {
    let store = match engine.open(dir) {
        Ok(store) => store,
        Err(error) => {
            println!("engine error on open: {error}");
            return EXIT_ENGINE_ERROR;
        }
    };
    let mut per_commit: BTreeMap<u64, u64> = BTreeMap::new();
    let mut altered = 0u64;
    let scanned = store.scan(
        Tree::Queue,
        &[],
        &mut |key, value| match parse_queue_key(key) {
            Some((session, seq))
                if u64::from(session) == seq % 100 && value == message_value(session, seq) =>
            {
                *per_commit.entry(seq / PER_COMMIT).or_default() += 1;
            }
            _ => altered += 1,
        },
    );
    if let Err(error) = scanned {
        println!("engine error on read: {error}");
        return EXIT_ENGINE_ERROR;
    }
    let last = per_commit.keys().next_back().copied().unwrap_or(0);
    let mut retained_wrong = 0u64;
    let mut retained_count = 0u64;
    let scanned = store.scan(Tree::Retained, &[], &mut |key, value| {
        retained_count += 1;
        let version = value
            .get(0..8)
            .map(|bytes| u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
            .unwrap_or(0);
        let topic = (version % TOPICS) as u32;
        let newest = last.checked_sub((last + TOPICS - u64::from(topic)) % TOPICS);
        if version == 0
            || Some(version) != newest
            || key != retained_topic(topic)
            || value != retained_value(topic, version)
        {
            retained_wrong += 1;
        }
    });
    if let Err(error) = scanned {
        println!("engine error on read: {error}");
        return EXIT_ENGINE_ERROR;
    }
    if altered > 0 || retained_wrong > 0 {
        println!("SILENTLY ALTERED: {altered} queue records, {retained_wrong} retained records");
        return EXIT_ALTERED;
    }
    let first_kept = last.saturating_sub(KEPT - 1).max(1);
    let whole = per_commit.len() as u64 == last + 1 - first_kept.min(last + 1)
        && per_commit
            .iter()
            .all(|(c, n)| *c >= first_kept && *n == PER_COMMIT);
    if last < acked || !whole || retained_count != last.min(TOPICS) {
        println!(
            "MISSING: last commit {last}, acknowledged {acked}, {} commits present, whole: {whole}, {retained_count} retained",
            per_commit.len()
        );
        return EXIT_MISSING;
    }
    println!("ok last={last} acked={acked}");
    EXIT_OK
}

fn own_binary() -> PathBuf {
    std::env::current_exe().expect("path of this binary")
}

/// Runs `store-bench verify` in a child (so a panic or abort is observed, not suffered).
/// Returns (exit code or -signal, the verdict line).
fn verify_in_child(engine: Engine, dir: &Path, acked: u64) -> (i32, String) {
    let output = Command::new(own_binary())
        .args(["verify", engine.name()])
        .arg(dir)
        .arg(acked.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run verify child");
    let code = output.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut verdict = stdout.lines().last().unwrap_or("").to_string();
    if code == 101 {
        let panic = stderr
            .lines()
            .find(|line| line.contains("panicked"))
            .unwrap_or("panicked")
            .to_string();
        let message = stderr
            .lines()
            .skip_while(|l| !l.contains("panicked"))
            .nth(1);
        verdict = format!("PANIC: {panic} {}", message.unwrap_or(""));
    }
    (code, verdict)
}

/// SIGKILLs a writer `kills` times at random moments and verifies the store after each.
/// Returns one summary line.
pub fn kill_test(engine: Engine, root: &Path, kills: u32) -> String {
    let dir = root.join(format!("{}-crash", engine.name()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut rng = Rng::new(7);
    let (mut acked, mut failures, mut unacked_durable) = (0u64, Vec::new(), 0u64);
    let mut max_acked = 0u64;
    for round in 0..kills {
        let mut child = Command::new(own_binary())
            .args(["crash-writer", engine.name()])
            .arg(&dir)
            .arg((acked + 1).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(|line| line.ok())
                .filter_map(|line| line.trim().parse::<u64>().ok())
                .last()
        });
        std::thread::sleep(Duration::from_millis(50 + rng.below(450)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let printed = reader.join().expect("reader thread").unwrap_or(acked);
        let (code, verdict) = verify_in_child(engine, &dir, printed);
        if code != EXIT_OK {
            failures.push(format!("kill {round}: {verdict}"));
            break;
        }
        let last = verdict
            .split_whitespace()
            .find_map(|word| word.strip_prefix("last="))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(printed);
        unacked_durable += last - printed;
        max_acked = max_acked.max(printed);
        acked = last;
    }
    let _ = std::fs::remove_dir_all(&dir);
    if failures.is_empty() {
        format!(
            "{kills}/{kills} kills recovered with every acknowledged commit whole ({max_acked} commits reached; {unacked_durable} commits were durable but not yet acknowledged when killed)"
        )
    } else {
        format!("FAILED: {}", failures.join("; "))
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Every file under `dir` with its size.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files(&path));
            } else if let Ok(meta) = entry.metadata() {
                out.push((path, meta.len()));
            }
        }
    }
    out
}

/// Length of a file up to its last non-zero byte.
fn used_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last as u64 + 1)
}

/// Tallies of corruption outcomes.
#[derive(Default)]
struct Tally {
    ok: u32,
    engine_error: u32,
    altered: u32,
    missing: u32,
    crashed: u32,
    examples: Vec<String>,
}

impl Tally {
    fn add(&mut self, code: i32, verdict: &str) {
        match code {
            EXIT_OK => self.ok += 1,
            EXIT_ENGINE_ERROR => self.engine_error += 1,
            EXIT_ALTERED => self.altered += 1,
            EXIT_MISSING => self.missing += 1,
            _ => self.crashed += 1,
        }
        if code != EXIT_OK && self.examples.len() < 3 {
            let short: String = verdict.chars().take(160).collect();
            self.examples.push(short);
        }
    }

    fn summary(&self) -> String {
        format!(
            "unaffected {}, clean error {}, silently altered {}, acked data silently missing {}, panic/abort {}{}",
            self.ok,
            self.engine_error,
            self.altered,
            self.missing,
            self.crashed,
            if self.examples.is_empty() {
                String::new()
            } else {
                format!(" | e.g. {}", self.examples.join(" | "))
            }
        )
    }
}

/// Truncations and byte flips of the engine's largest file, each on a fresh copy of a store
/// of 2,000 commits. With `settled`, the engine first moves its buffers into its long-term
/// files (fjall: memtables flushed to tables; the others are unchanged by it).
pub fn corruption_test(engine: Engine, root: &Path, settled: bool, flips: u32) -> Vec<String> {
    const COMMITS: u64 = 2000;
    let base = root.join(format!("{}-corrupt-base", engine.name()));
    let _ = std::fs::remove_dir_all(&base);
    {
        let mut store = engine.open(&base).expect("open base store");
        write(store.as_mut(), 1, COMMITS, false).expect("write base store");
        if settled {
            store.settle().expect("settle");
        }
    }
    // The file holding the most data (up to its last non-zero byte: fjall preallocates its
    // journal), skipping fjall's journal once its memtables are flushed to tables.
    let (target, size) = files(&base)
        .into_iter()
        .filter(|(path, _)| !(settled && path.extension().is_some_and(|ext| ext == "jnl")))
        .map(|(path, _)| {
            let used = used_len(&path);
            (path, used)
        })
        .max_by_key(|(_, used)| *used)
        .expect("a file");
    let relative = target
        .strip_prefix(&base)
        .expect("under base")
        .to_path_buf();
    let mut lines = vec![format!(
        "target file {} ({} KiB used; {} KiB in all files)",
        relative.display(),
        size / 1024,
        files(&base).iter().map(|(_, s)| s).sum::<u64>() / 1024
    )];
    let case_dir = root.join(format!("{}-corrupt-case", engine.name()));
    let run_case = |mutate: &dyn Fn(&Path)| -> (i32, String) {
        let _ = std::fs::remove_dir_all(&case_dir);
        copy_dir(&base, &case_dir).expect("copy store");
        mutate(&case_dir.join(&relative));
        verify_in_child(engine, &case_dir, COMMITS)
    };

    for (label, keep) in [
        ("truncated to half", size / 2),
        ("last 4 KiB cut off", size.saturating_sub(4096)),
    ] {
        let (_, verdict) = run_case(&|path| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("open");
            file.set_len(keep).expect("truncate");
        });
        lines.push(format!(
            "{label}: {}",
            verdict.chars().take(200).collect::<String>()
        ));
    }

    let mut rng = Rng::new(11);
    let mut tally = Tally::default();
    for _ in 0..flips {
        let offset = rng.below(size);
        let (code, verdict) = run_case(&|path| {
            let mut bytes = std::fs::read(path).expect("read");
            bytes[offset as usize] ^= 0x5A;
            std::fs::write(path, bytes).expect("write");
        });
        tally.add(code, &verdict);
    }
    lines.push(format!(
        "{flips} single-byte flips at random offsets: {}",
        tally.summary()
    ));
    let _ = std::fs::remove_dir_all(&base);
    let _ = std::fs::remove_dir_all(&case_dir);
    lines
}

/// Raw latency of write + fdatasync of 4 KiB to a file in `dir`: (median, p99) in µs.
pub fn fsync_latency(dir: &Path, rounds: usize) -> (f64, f64) {
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("create");
    let block = vec![0xABu8; 4096];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = std::time::Instant::now();
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        samples.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let _ = std::fs::remove_file(&path);
    samples.sort_by(|a, b| a.total_cmp(b));
    (samples[rounds / 2], samples[rounds * 99 / 100])
}
