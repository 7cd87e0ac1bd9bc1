//! `vane bench`: load generators that measure an MQTT broker over plain TCP, with packets
//! encoded and decoded by `vane_proto`. They connect only to the host they are given and stop
//! by themselves.

mod client;
mod common;
mod conn;
mod fanin;
mod fanout;
mod flow;
mod latency;
mod pairs;
mod publish;
mod retained;
mod seqset;
mod subscribe;

use std::time::Duration;

use clap::{Args, Subcommand};

pub use conn::ConnArgs;
pub use fanin::FaninArgs;
pub use fanout::FanoutArgs;
pub use latency::LatencyArgs;
pub use pairs::PairsArgs;
pub use publish::PubArgs;
pub use retained::RetainedArgs;
pub use subscribe::SubArgs;

/// Arguments of `vane bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The load scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Fan-in: many publishers, each on its own topic, one subscriber to all of them; measures
    /// the messages per second the subscriber receives.
    Fanin(FaninArgs),
    /// Fan-out: one publisher, many subscribers on its topic; measures deliveries per second
    /// summed over the subscribers.
    Fanout(FanoutArgs),
    /// Pairs: N publisher/subscriber pairs, each on its own topic; measures the messages per
    /// second received in total.
    Pairs(PairsArgs),
    /// Publish: many publishers, each on its own topic, at a fixed rate or as fast as the
    /// broker takes them, and no subscriber; measures publishes and acknowledgements per
    /// second. Run `sub` (or any subscriber) alongside.
    Pub(PubArgs),
    /// Subscribe: many subscribers to one filter, and no publisher; measures the messages per
    /// second they receive while something else publishes (`pub`, for example).
    Sub(SubArgs),
    /// Connections: opens many idle connections at a target rate, holds them, closes them;
    /// measures the connect rate and failures.
    Conn(ConnArgs),
    /// Latency: one publisher at a fixed rate to one subscriber; end-to-end latency
    /// percentiles from timestamps in the payloads.
    Latency(LatencyArgs),
    /// Retained: stores many retained messages, then measures how long a new subscriber takes
    /// to receive all of them.
    Retained(RetainedArgs),
}

/// Runs one scenario.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Fanin(args) => fanin::run(args),
        Scenario::Fanout(args) => fanout::run(args),
        Scenario::Pairs(args) => pairs::run(args),
        Scenario::Pub(args) => publish::run(args),
        Scenario::Sub(args) => subscribe::run(args),
        Scenario::Conn(args) => conn::run(args),
        Scenario::Latency(args) => latency::run(args),
        Scenario::Retained(args) => retained::run(args),
    }
}

/// Parses a duration with units ("10s", "500ms", "1m"), for clap.
fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let head = match digits.len() % 3 {
        0 => 3.min(digits.len()),
        r => r,
    };
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    out.push_str(&digits[..head]);
    for group in digits.as_bytes()[head..].chunks(3) {
        out.push(',');
        out.extend(group.iter().map(|&b| char::from(b)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
