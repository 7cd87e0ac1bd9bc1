//! `vane store check` and `vane store repair`: what an operator runs when the broker refuses
//! a damaged store, or to look at one.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use vane_config::Config;

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub action: StoreAction,
}

#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Read the store and report what it holds and what is damaged; changes nothing.
    Check(StoreDir),
    /// Move damaged records aside (into the store's quarantine, kept for inspection) so the
    /// broker can start; a store that cannot be read at all is moved to `<dir>.damaged-<time>`.
    /// Nothing is deleted.
    Repair(StoreDir),
}

#[derive(Debug, Args)]
pub struct StoreDir {
    /// The store directory (default: `store.dir` of the configuration, else `vane-data`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Configuration file whose `store.dir` to use.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl StoreDir {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.dir {
            return Ok(dir.clone());
        }
        let config = match &self.config {
            Some(path) => {
                Config::load(path).with_context(|| format!("configuration {}", path.display()))?
            }
            None => Config::default(),
        };
        Ok(PathBuf::from(config.store.dir))
    }
}

pub fn run(args: StoreArgs) -> anyhow::Result<()> {
    match args.action {
        StoreAction::Check(d) => check(&d.resolve()?),
        StoreAction::Repair(d) => repair(&d.resolve()?),
    }
}

fn check(dir: &std::path::Path) -> anyhow::Result<()> {
    let report = vane_store::check(dir)?;
    println!("store {}", report.path.display());
    println!("  commits            {}", report.commit_counter);
    match report.clean_shutdown {
        Some(c) => println!("  clean shutdown at  commit {c}"),
        None => println!("  clean shutdown     no (running, or stopped by a crash)"),
    }
    println!("  sessions           {}", report.sessions);
    println!("  queued messages    {}", report.queued);
    println!("  in-flight states   {}", report.outflight);
    println!("  inbound QoS 2 ids  {}", report.inbound);
    println!("  retained messages  {}", report.retained);
    println!("  quarantined        {}", report.quarantined);
    println!("  orphaned records   {}", report.orphans);
    for d in &report.damaged {
        println!("  damaged: {} key {}: {}", d.keyspace, d.key_hex, d.why);
    }
    if report.rolled_back {
        anyhow::bail!(
            "the store recovered to an earlier state than its clean shutdown: its journal was cut; `vane store repair --dir {}` accepts the earlier state",
            dir.display()
        );
    }
    if !report.damaged.is_empty() {
        anyhow::bail!(
            "{} damaged record(s); the broker sets them aside when it starts, or run `vane store repair --dir {}`",
            report.damaged.len(),
            dir.display()
        );
    }
    println!("ok");
    Ok(())
}

fn repair(dir: &std::path::Path) -> anyhow::Result<()> {
    let report = vane_store::repair(dir)?;
    if let (Some(to), Some(why)) = (&report.moved_to, &report.why_moved) {
        println!(
            "the store could not be read ({why}); it was moved to {} and the broker will start with an empty store in {}",
            to.display(),
            dir.display()
        );
        return Ok(());
    }
    for d in &report.damaged {
        println!("set aside: {} key {}: {}", d.keyspace, d.key_hex, d.why);
    }
    if let Some((clean, recovered)) = report.accepted_rollback {
        println!("accepted the state at commit {recovered} (the clean shutdown was at {clean})");
    }
    println!(
        "store {}: {} damaged record(s) set aside, {} orphaned record(s) removed",
        report.path.display(),
        report.damaged.len(),
        report.orphans_removed
    );
    Ok(())
}
