//! The `vane` binary: `serve` (the default) runs the broker; `config default` prints the
//! default configuration; `passwd` edits a password file.

mod bench;
mod cli;
mod client;
mod logging;
mod passwd;
mod pub_cmd;
mod serve;
mod sub_cmd;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    match cli.command.unwrap_or(cli::Command::Serve(cli.serve)) {
        cli::Command::Serve(args) => serve::run(args),
        cli::Command::Bench(args) => bench::run(args),
        cli::Command::Passwd(args) => passwd::run(args),
        cli::Command::Pub(args) => pub_cmd::run(args),
        cli::Command::Sub(args) => sub_cmd::run(args),
        cli::Command::Config {
            action: cli::ConfigAction::Default,
        } => {
            print!("{}", vane_config::Config::default_toml());
            Ok(())
        }
    }
}
