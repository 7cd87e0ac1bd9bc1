//! The broker's workload against one engine: group-commit appends, acknowledgement deletes,
//! retained overwrites, a session scan on reconnect, and start-up over a 1M-message store.
//! Each figure is printed as `RESULT<TAB>name<TAB>value` for the parent to tabulate.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::engines::{Engine, Op, Result, Store, Tree};
use crate::records::{
    message_value, queue_key, retained_topic, retained_value, session_prefix, session_value, Rng,
};

/// Offline sessions receiving messages.
const SESSIONS: u32 = 10_000;
/// Distinct retained topics.
const RETAINED_TOPICS: u32 = 100_000;

/// Prints one figure for the parent process.
pub fn report(name: &str, value: impl std::fmt::Display) {
    println!("RESULT\t{name}\t{value}");
}

/// Runs every workload on `engine` under `root` and reports the figures.
pub fn run(engine: Engine, root: &Path) -> Result<()> {
    let dir = |name: &str| -> PathBuf {
        let path = root.join(format!("{}-{name}", engine.name()));
        let _ = std::fs::remove_dir_all(&path);
        path
    };
    group_commit_append(engine, &dir("append"))?;
    ack_delete(engine, &dir("ack"))?;
    retained_overwrite(engine, &dir("retained"))?;
    reconnect_and_startup(engine, &dir("startup"))?;
    report(
        "peak RSS of the process (MiB)",
        format!("{:.0}", rss_mib("VmHWM")),
    );
    let _ = std::fs::remove_dir_all(root);
    Ok(())
}

/// Commits `ops` in groups of `group` until `budget` has passed or `ops` runs dry; returns
/// (ops committed, commits, elapsed).
fn commit_groups(
    store: &mut dyn Store,
    mut next_group: impl FnMut() -> Option<Vec<Op>>,
    budget: Duration,
) -> Result<(u64, u64, Duration)> {
    let start = Instant::now();
    let (mut ops, mut commits) = (0u64, 0u64);
    while start.elapsed() < budget {
        let Some(group) = next_group() else { break };
        store.commit(&group)?;
        ops += group.len() as u64;
        commits += 1;
    }
    Ok((ops, commits, start.elapsed()))
}

fn per_second(count: u64, elapsed: Duration) -> String {
    thousands((count as f64 / elapsed.as_secs_f64()) as u64)
}

/// 12345678 -> "12,345,678".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// (a) QoS 1 messages to random offline sessions, committed in groups. However many
/// publishers there are, their writes reach the broker's one committer thread, which commits
/// whatever is pending as one group: so this loop is that committer.
fn group_commit_append(engine: Engine, dir: &Path) -> Result<()> {
    let mut store = engine.open(dir)?;
    let mut rng = Rng::new(1);
    let mut next_seq = vec![0u64; SESSIONS as usize];
    for group in [1usize, 16, 256] {
        let budget = Duration::from_secs(if group == 1 { 2 } else { 3 });
        let (ops, commits, elapsed) = commit_groups(
            store.as_mut(),
            || {
                let mut ops = Vec::with_capacity(group);
                for _ in 0..group {
                    let session = rng.below(u64::from(SESSIONS)) as u32;
                    let seq = &mut next_seq[session as usize];
                    *seq += 1;
                    ops.push(Op::put(
                        Tree::Queue,
                        queue_key(session, *seq),
                        message_value(session, *seq),
                    ));
                }
                Some(ops)
            },
            budget,
        )?;
        report(
            &format!("(a) append, {group}/commit: msg/s (fsyncs/s)"),
            format!(
                "{} ({})",
                per_second(ops, elapsed),
                per_second(commits, elapsed)
            ),
        );
    }
    Ok(())
}

/// Bytes allocated on disk to every file under `path` (not their lengths: fjall preallocates
/// its journal sparsely).
pub fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(path) else {
        return std::fs::metadata(path)
            .map(|m| m.blocks() * 512)
            .unwrap_or(0);
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                disk_bytes(&path)
            } else {
                entry.metadata().map(|m| m.blocks() * 512).unwrap_or(0)
            }
        })
        .sum()
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// (b) Appends interleaved with deletes of the oldest entries as acknowledgements arrive, at a
/// steady 100K live messages; then what the files hold after 500K appends and 500K deletes.
fn ack_delete(engine: Engine, dir: &Path) -> Result<()> {
    const ACK_SESSIONS: u32 = 1_000;
    const LIVE_PER_SESSION: u64 = 100;
    const CHURN: u64 = 500_000;
    let mut store = engine.open(dir)?;
    let mut queues: Vec<VecDeque<u64>> = vec![VecDeque::new(); ACK_SESSIONS as usize];
    let mut next_seq = vec![0u64; ACK_SESSIONS as usize];
    let mut preload = Vec::new();
    for round in 0..LIVE_PER_SESSION {
        for session in 0..ACK_SESSIONS {
            let seq = round + 1;
            next_seq[session as usize] = seq;
            queues[session as usize].push_back(seq);
            preload.push(Op::put(
                Tree::Queue,
                queue_key(session, seq),
                message_value(session, seq),
            ));
            if preload.len() == 10_000 {
                store.commit(&preload)?;
                preload.clear();
            }
        }
    }
    let live_bytes = disk_bytes(dir);

    let mut rng = Rng::new(2);
    let mut churn_step = |rng: &mut Rng, ops: &mut Vec<Op>| {
        let session = rng.below(u64::from(ACK_SESSIONS)) as usize;
        next_seq[session] += 1;
        let seq = next_seq[session];
        queues[session].push_back(seq);
        ops.push(Op::put(
            Tree::Queue,
            queue_key(session as u32, seq),
            message_value(session as u32, seq),
        ));
        let acked = rng.below(u64::from(ACK_SESSIONS)) as usize;
        if let Some(oldest) = queues[acked].pop_front() {
            ops.push(Op::delete(Tree::Queue, queue_key(acked as u32, oldest)));
        }
    };
    let mut appended = 0u64;
    for (group, budget) in [(16u64, 2u64), (256, 120)] {
        let target = if group == 16 { u64::MAX } else { CHURN };
        let mut done = 0u64;
        let (_, commits, elapsed) = commit_groups(
            store.as_mut(),
            || {
                if done >= target {
                    return None;
                }
                let mut ops = Vec::with_capacity(2 * group as usize);
                for _ in 0..group {
                    churn_step(&mut rng, &mut ops);
                }
                done += group;
                Some(ops)
            },
            Duration::from_secs(budget),
        )?;
        appended += done;
        report(
            &format!("(b) append+ack, {group}+{group}/commit: pairs/s"),
            per_second(commits * group, elapsed),
        );
    }
    report("(b) appends+acks churned", thousands(appended));
    // A reconnect after the churn: the session's acknowledged entries are deleted, which an
    // LSM tree keeps as tombstones until compaction.
    let scan_session = |store: &dyn Store| -> Result<(u64, Duration)> {
        let start = Instant::now();
        let mut entries = 0u64;
        for session in 0..10 {
            store.scan(Tree::Queue, &session_prefix(session), &mut |_, _| {
                entries += 1
            })?;
        }
        Ok((entries, start.elapsed() / 10))
    };
    let (entries, elapsed) = scan_session(store.as_ref())?;
    report(
        "(d) scan a ~100-msg session after churn (µs)",
        format!(
            "{} ({} entries in 10 sessions)",
            elapsed.as_micros(),
            entries
        ),
    );
    let churned_bytes = disk_bytes(dir);
    drop(store);
    let mut store = engine.open(dir)?;
    std::thread::sleep(Duration::from_secs(1));
    let reopened_bytes = disk_bytes(dir);
    let start = Instant::now();
    store.compact()?;
    report(
        "(f) explicit compaction after churn (ms)",
        millis(start.elapsed()),
    );
    let compacted_bytes = disk_bytes(dir);
    drop(store);
    let store = engine.open(dir)?;
    std::thread::sleep(Duration::from_secs(1));
    let compacted_reopened_bytes = disk_bytes(dir);
    drop(store);
    report(
        "(f) disk MiB: 100K live / churned / reopened / compacted / reopened",
        format!(
            "{} / {} / {} / {} / {}",
            mib(live_bytes),
            mib(churned_bytes),
            mib(reopened_bytes),
            mib(compacted_bytes),
            mib(compacted_reopened_bytes)
        ),
    );
    Ok(())
}

/// (c) 100K retained topics, overwritten at random.
fn retained_overwrite(engine: Engine, dir: &Path) -> Result<()> {
    let mut store = engine.open(dir)?;
    let mut preload = Vec::new();
    for topic in 0..RETAINED_TOPICS {
        preload.push(Op::put(
            Tree::Retained,
            retained_topic(topic),
            retained_value(topic, 0),
        ));
        if preload.len() == 10_000 {
            store.commit(&preload)?;
            preload.clear();
        }
    }
    let mut rng = Rng::new(3);
    let mut version = 0u64;
    for group in [1usize, 256] {
        let (ops, _, elapsed) = commit_groups(
            store.as_mut(),
            || {
                let mut ops = Vec::with_capacity(group);
                for _ in 0..group {
                    version += 1;
                    let topic = rng.below(u64::from(RETAINED_TOPICS)) as u32;
                    ops.push(Op::put(
                        Tree::Retained,
                        retained_topic(topic),
                        retained_value(topic, version),
                    ));
                }
                Some(ops)
            },
            Duration::from_secs(if group == 1 { 2 } else { 3 }),
        )?;
        report(
            &format!("(c) retained overwrite, {group}/commit: msg/s"),
            per_second(ops, elapsed),
        );
    }
    Ok(())
}

/// (d, e) A store of ~1M queued messages for 10,000 sessions, one of which holds 10,000:
/// load it, close it, then time opening, the session index, that session's scan, and a full
/// scan.
fn reconnect_and_startup(engine: Engine, dir: &Path) -> Result<()> {
    const BIG_SESSION: u32 = 0;
    const ROUNDS: u64 = 100;
    let start = Instant::now();
    {
        let mut store = engine.open(dir)?;
        let mut ops: Vec<Op> = (0..SESSIONS)
            .map(|session| {
                Op::put(
                    Tree::Sessions,
                    session.to_be_bytes().to_vec(),
                    session_value(session),
                )
            })
            .collect();
        let mut messages = 0u64;
        // Arrival order interleaves the sessions, as live traffic would.
        for round in 0..ROUNDS {
            for session in 0..SESSIONS {
                let per_round = if session == BIG_SESSION { 100 } else { 1 };
                if session != BIG_SESSION && round == ROUNDS - 1 {
                    continue; // 99 each for the others: ~1M in all
                }
                for i in 0..per_round {
                    let seq = round * per_round + i + 1;
                    ops.push(Op::put(
                        Tree::Queue,
                        queue_key(session, seq),
                        message_value(session, seq),
                    ));
                    messages += 1;
                }
                if ops.len() >= 10_000 {
                    store.commit(&ops)?;
                    ops.clear();
                }
            }
        }
        store.commit(&ops)?;
        let elapsed = start.elapsed();
        report(
            "(e) bulk load 1M msgs, 10K/commit: msg/s",
            per_second(messages, elapsed),
        );
    }
    report("(e) disk MiB holding 1M msgs", mib(disk_bytes(dir)));

    let start = Instant::now();
    let mut store = engine.open(dir)?;
    report("(e) open the 1M-msg store (ms)", millis(start.elapsed()));
    let start = Instant::now();
    let mut sessions = 0u64;
    store.scan(Tree::Sessions, &[], &mut |_, _| sessions += 1)?;
    assert_eq!(sessions, u64::from(SESSIONS));
    report(
        "(e) iterate the 10K-session index (ms)",
        millis(start.elapsed()),
    );

    let start = Instant::now();
    let mut entries = 0u64;
    store.scan(Tree::Queue, &session_prefix(BIG_SESSION), &mut |_, _| {
        entries += 1
    })?;
    assert_eq!(entries, 10_000, "{engine:?}");
    report(
        "(d) scan one session's 10K msgs (ms)",
        millis(start.elapsed()),
    );
    let start = Instant::now();
    let mut small = 0u64;
    store.scan(Tree::Queue, &session_prefix(4321), &mut |_, _| small += 1)?;
    assert_eq!(small, 99);
    report(
        "(d) scan a 99-msg session (µs)",
        start.elapsed().as_micros(),
    );

    let start = Instant::now();
    let mut all = 0u64;
    store.scan(Tree::Queue, &[], &mut |_, _| all += 1)?;
    report("(e) scan all 1M queued msgs (ms)", millis(start.elapsed()));
    report(
        "RSS after start-up and scans (MiB)",
        format!("{:.0}", rss_mib("VmRSS")),
    );
    store.settle()?;
    drop(store);
    let start = Instant::now();
    let store = engine.open(dir)?;
    report(
        "(e) reopen after flushing buffers (ms)",
        millis(start.elapsed()),
    );
    drop(store);
    Ok(())
}

fn millis(elapsed: Duration) -> String {
    format!("{:.1}", elapsed.as_secs_f64() * 1000.0)
}

/// A memory figure of this process from /proc/self/status, in MiB.
fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
