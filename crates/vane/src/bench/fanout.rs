//! `vane bench fanout`: one publisher to `<prefix>/0` as fast as the broker takes it, and S
//! subscribers to that topic; measures deliveries per second summed over the subscribers, the
//! least and most one subscriber received, and at QoS 1 and 2 acknowledged messages some
//! subscriber never received. The engine is in [`super::flow`].

use clap::Args;

use super::flow::{self, FlowArgs, PublishArgs, Shape};

/// Arguments of `vane bench fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Subscriber connections, all on the same topic.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub subscribers: u32,
    #[command(flatten)]
    pub flow: FlowArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
}

pub fn run(args: FanoutArgs) -> anyhow::Result<()> {
    flow::run(
        Shape::Fanout(args.subscribers as usize),
        &args.flow,
        Some(&args.publish),
    )
}
