//! `vane bench pairs`: N publisher/subscriber pairs, pair i on `<prefix>/<i>`; measures the
//! messages per second received by all subscribers together. The engine is in
//! [`super::flow`].

use clap::Args;

use super::flow::{self, FlowArgs, PublishArgs, Shape};

/// Arguments of `vane bench pairs`.
#[derive(Debug, Args)]
pub struct PairsArgs {
    /// Publisher/subscriber pairs, each on a topic of its own.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=25_000))]
    pub pairs: u32,
    #[command(flatten)]
    pub flow: FlowArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
}

pub fn run(args: PairsArgs) -> anyhow::Result<()> {
    flow::run(
        Shape::Pairs(args.pairs as usize),
        &args.flow,
        Some(&args.publish),
    )
}
