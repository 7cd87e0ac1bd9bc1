//! `vane bench sub`: S subscribers to one topic filter, and no publisher here (run
//! `vane bench pub` or any other publisher alongside); measures the messages per second the
//! subscribers receive together during the measured time, every message on the filter
//! counting. Like `emqtt_bench sub`. The engine is in [`super::flow`].

use anyhow::bail;
use clap::Args;

use super::flow::{self, FlowArgs, Shape};

/// Arguments of `vane bench sub`.
#[derive(Debug, Args)]
pub struct SubArgs {
    /// Subscriber connections, all to --filter.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub subscribers: u32,
    /// Topic filter every subscriber subscribes to (wildcards and `$share/<group>/` allowed).
    #[arg(long, default_value = "bench/#")]
    pub filter: String,
    #[command(flatten)]
    pub flow: FlowArgs,
}

pub fn run(args: SubArgs) -> anyhow::Result<()> {
    if args.filter.is_empty() {
        bail!("--filter must not be empty");
    }
    flow::run(
        Shape::Sub(args.subscribers as usize, &args.filter),
        &args.flow,
        None,
    )
}
