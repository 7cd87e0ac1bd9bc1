//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Vane, an MQTT 3.1 / 3.1.1 / 5.0 broker.
#[derive(Debug, Parser)]
#[command(name = "vane", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve`, which runs when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker (the default).
    Serve(ServeArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Load generators that measure a broker (this one or another).
    Bench(crate::bench::BenchArgs),
    /// Add, replace or delete a user in a password file (`--scram`: the SCRAM-SHA-256
    /// credentials file of `[auth] scram_credentials`).
    Passwd(crate::passwd::PasswdArgs),
    /// Publish messages, like mosquitto_pub (`-h` is the host; `--help` prints help).
    Pub(crate::pub_cmd::PubArgs),
    /// Subscribe and print messages, like mosquitto_sub (`-h` is the host; `--help` prints help).
    Sub(crate::sub_cmd::SubArgs),
    /// Check or repair the embedded store (run them while the broker is stopped).
    Store(crate::store_cmd::StoreArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the default configuration as TOML.
    Default,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without it, every default applies.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen on ADDR:PORT instead of the configured listeners; may be repeated.
    #[arg(short, long, value_name = "ADDR:PORT")]
    pub bind: Vec<SocketAddr>,
    /// Listen on ADDR:PORT for MQTT over WebSocket (ws://, path /mqtt) instead of the
    /// configured listeners (together with any --bind); may be repeated.
    #[arg(long, value_name = "ADDR:PORT")]
    pub ws_bind: Vec<SocketAddr>,
    /// Log format, overriding the configuration.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Check the configuration and exit.
    #[arg(long)]
    pub check: bool,
    /// Directory of the embedded store, overriding `store.dir`.
    #[arg(long, value_name = "DIR")]
    pub store_dir: Option<PathBuf>,
    /// What an acknowledgement promises, overriding `store.durability`: `sync` (on disk),
    /// `batch` (written; synced within `store.batch_interval`) or `memory` (no store).
    #[arg(long, value_enum)]
    pub durability: Option<DurabilityArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DurabilityArg {
    Sync,
    Batch,
    Memory,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}
