//! The `vane` binary: `serve` (the default) runs the broker; `config default` prints the
//! default configuration; `passwd` edits a password file.

mod bench;
mod cli;
mod client;
mod logging;
mod open_files;
mod passwd;
mod pub_cmd;
mod serve;
mod store_cmd;
mod sub_cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes, without the backtrace anyhow would add when
            // RUST_BACKTRACE is set: these are user errors, not bugs.
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    match cli.command.unwrap_or(cli::Command::Serve(cli.serve)) {
        cli::Command::Serve(args) => serve::run(args),
        cli::Command::Bench(args) => bench::run(args),
        cli::Command::Passwd(args) => passwd::run(args),
        cli::Command::Pub(args) => pub_cmd::run(args),
        cli::Command::Sub(args) => sub_cmd::run(args),
        cli::Command::Store(args) => store_cmd::run(args),
        cli::Command::Config {
            action: cli::ConfigAction::Default,
        } => {
            print!("{}", vane_config::Config::default_toml());
            Ok(())
        }
    }
}
