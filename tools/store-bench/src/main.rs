//! store-bench: measures embedded storage engines on Vane's durability workload and checks
//! their crash safety (issue 5). `cargo run --release` runs everything and prints Markdown.

mod crash;
mod engines;
mod records;
mod workload;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use engines::Engine;

const USAGE: &str = "usage: store-bench [all [ENGINE...]]
       store-bench engine ENGINE              workload figures for one engine
       store-bench crash ENGINE [KILLS]       SIGKILL and corruption tests for one engine
       store-bench crash-writer ENGINE DIR FIRST
       store-bench verify ENGINE DIR ACKED
engines: redb fjall sqlite; data goes under $STORE_BENCH_DIR (default /tmp/store-bench-data)";

fn data_root() -> PathBuf {
    std::env::var_os("STORE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/store-bench-data"))
}

fn engine_arg(arg: Option<&String>) -> Engine {
    arg.and_then(|name| Engine::parse(name)).unwrap_or_else(|| {
        eprintln!("{USAGE}");
        std::process::exit(2)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or("all");
    match command {
        "all" => {
            let engines: Vec<Engine> = if args.len() > 1 {
                args[1..]
                    .iter()
                    .map(|name| engine_arg(Some(name)))
                    .collect()
            } else {
                Engine::ALL.to_vec()
            };
            run_all(&engines);
        }
        "engine" => {
            let engine = engine_arg(args.get(1));
            if let Err(error) = workload::run(engine, &data_root().join(engine.name())) {
                eprintln!("{}: {error}", engine.name());
                std::process::exit(1);
            }
        }
        "crash" => {
            let engine = engine_arg(args.get(1));
            let kills = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(20);
            for line in crash_report(engine, kills) {
                println!("{line}");
            }
        }
        "crash-writer" => {
            let engine = engine_arg(args.get(1));
            let (Some(dir), Some(first)) = (args.get(2), args.get(3).and_then(|n| n.parse().ok()))
            else {
                eprintln!("{USAGE}");
                std::process::exit(2)
            };
            let mut store = engine.open(Path::new(dir)).expect("open store");
            crash::write(store.as_mut(), first, u64::MAX, true).expect("commit");
        }
        "verify" => {
            let engine = engine_arg(args.get(1));
            let (Some(dir), Some(acked)) = (args.get(2), args.get(3).and_then(|n| n.parse().ok()))
            else {
                eprintln!("{USAGE}");
                std::process::exit(2)
            };
            std::process::exit(crash::verify(engine, Path::new(dir), acked));
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

/// Crash and corruption findings for one engine, one line each.
fn crash_report(engine: Engine, kills: u32) -> Vec<String> {
    let root = data_root().join(format!("{}-crash", engine.name()));
    let mut lines = vec![format!(
        "SIGKILL during fsynced commits: {}",
        crash::kill_test(engine, &root, kills)
    )];
    for line in crash::corruption_test(engine, &root, false, 20) {
        lines.push(format!("corruption: {line}"));
    }
    if engine == Engine::Fjall {
        for line in crash::corruption_test(engine, &root, true, 20) {
            lines.push(format!("corruption after flushing memtables: {line}"));
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    lines
}

/// Every figure for every engine (each in a child process, so that RSS is its own), then
/// the crash tests; prints Markdown.
fn run_all(engines: &[Engine]) {
    let root = data_root();
    let (median, p99) = crash::fsync_latency(&root, 500);
    println!(
        "raw 4 KiB write + fdatasync on {}: median {median:.0} µs, p99 {p99:.0} µs\n",
        root.display()
    );

    let mut names: Vec<String> = Vec::new();
    let mut figures: BTreeMap<(String, &'static str), String> = BTreeMap::new();
    for &engine in engines {
        eprintln!("== {} workload", engine.name());
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .args(["engine", engine.name()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn engine run");
        let stdout = child.stdout.take().expect("piped");
        for line in BufReader::new(stdout).lines().map_while(|line| line.ok()) {
            let mut fields = line.splitn(3, '\t');
            if let (Some("RESULT"), Some(name), Some(value)) =
                (fields.next(), fields.next(), fields.next())
            {
                eprintln!("  {name}: {value}");
                if !names.iter().any(|known| known == name) {
                    names.push(name.to_string());
                }
                figures.insert((name.to_string(), engine.name()), value.to_string());
            }
        }
        let status = child.wait().expect("wait");
        if !status.success() {
            eprintln!("{} run failed: {status}", engine.name());
        }
    }
    let header: Vec<&str> = engines.iter().map(|engine| engine.name()).collect();
    println!("| workload | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(engines.len()));
    for name in &names {
        let cells: Vec<&str> = engines
            .iter()
            .map(|engine| {
                figures
                    .get(&(name.clone(), engine.name()))
                    .map_or("-", String::as_str)
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    println!();
    for &engine in engines {
        eprintln!("== {} crash tests", engine.name());
        println!("{}:", engine.name());
        for line in crash_report(engine, 20) {
            println!("- {line}");
        }
    }
}
