//! `vane bench fanin`: P publishers, each publishing to `<prefix>/<i>` as fast as the broker
//! takes it, and one subscriber to `<prefix>/#`; measures the messages per second the
//! subscriber receives. The engine is in [`super::flow`].

use super::flow::{PublishersArgs, Shape};

/// Arguments of `vane bench fanin`.
pub type FaninArgs = PublishersArgs;

pub fn run(args: FaninArgs) -> anyhow::Result<()> {
    args.run(Shape::Fanin)
}
