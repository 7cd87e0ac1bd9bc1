//! `vane bench pub`: P publishers, publisher i on `<prefix>/<i>`, each at `--rate` messages per
//! second or as fast as the broker takes them, at QoS 0, 1 or 2, and no subscriber here (run
//! `vane bench sub` or any other subscriber alongside); measures the publishes per second sent
//! and, at QoS 1 and 2, the acknowledgements per second. Like `emqtt_bench pub`. The engine is
//! in [`super::flow`].

use clap::Args;

use super::flow::{self, FlowArgs, PublishArgs, Shape};

/// Arguments of `vane bench pub`.
#[derive(Debug, Args)]
pub struct PubArgs {
    /// Publisher connections, publisher i on PREFIX/<i>.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub publishers: u32,
    #[command(flatten)]
    pub flow: FlowArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
}

pub fn run(args: PubArgs) -> anyhow::Result<()> {
    flow::run(
        Shape::Pub(args.publishers as usize),
        &args.flow,
        Some(&args.publish),
    )
}
