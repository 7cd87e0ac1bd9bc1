//! `vane bench pub`: P publishers, publisher i on `<prefix>/<i>`, each at `--rate` messages per
//! second or as fast as the broker takes them, at QoS 0, 1 or 2, and no subscriber here (run
//! `vane bench sub` or any other subscriber alongside); measures the publishes per second sent
//! and, at QoS 1 and 2, the acknowledgements per second. Like `emqtt_bench pub`. The engine is
//! in [`super::flow`].

use super::flow::{PublishersArgs, Shape};

/// Arguments of `vane bench pub`.
pub type PubArgs = PublishersArgs;

pub fn run(args: PubArgs) -> anyhow::Result<()> {
    args.run(Shape::Pub)
}
