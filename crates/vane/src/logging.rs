//! Log output: human-readable lines by default, JSON on request; `RUST_LOG` overrides the level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use vane_config::LogFormat;

pub fn init(level: &str, format: LogFormat) {
    // The store engine logs every file it opens at info: useful when debugging it, noise for
    // an operator. Its warnings and errors still show; RUST_LOG can ask for more.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("fjall=warn,lsm_tree=warn,{level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
