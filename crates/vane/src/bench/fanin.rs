//! `vane bench fanin`: P publishers, each publishing to `<prefix>/<i>` as fast as the broker
//! takes it, and one subscriber to `<prefix>/#`; measures the messages per second the
//! subscriber receives. The engine is in [`super::flow`].

use clap::Args;

use super::flow::{self, FlowArgs, PublishArgs, Shape};

/// Arguments of `vane bench fanin`.
#[derive(Debug, Args)]
pub struct FaninArgs {
    /// Publisher connections.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub publishers: u32,
    #[command(flatten)]
    pub flow: FlowArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
}

pub fn run(args: FaninArgs) -> anyhow::Result<()> {
    flow::run(
        Shape::Fanin(args.publishers as usize),
        &args.flow,
        Some(&args.publish),
    )
}
