//! `vane serve`: load the configuration, bind, run until SIGINT or SIGTERM.

use anyhow::Context;
use vane_config::{Config, Durability, ListenerConfig, LogFormat};
use vane_server::Server;

use crate::cli::{DurabilityArg, LogFormatArg, ServeArgs};

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            Config::load(path).with_context(|| format!("configuration {}", path.display()))?
        }
        None => Config::default(),
    };
    if !args.bind.is_empty() {
        config.listeners = args
            .bind
            .iter()
            .map(|&bind| ListenerConfig {
                bind,
                ..ListenerConfig::default()
            })
            .collect();
    }
    if let Some(f) = args.log_format {
        config.log.format = match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    if let Some(dir) = &args.store_dir {
        config.store.dir = dir.display().to_string();
    }
    if let Some(d) = args.durability {
        config.store.durability = match d {
            DurabilityArg::Sync => Durability::Sync,
            DurabilityArg::Batch => Durability::Batch,
            DurabilityArg::Memory => Durability::Memory,
        };
    }
    config.validate()?;
    if args.check {
        vane_server::auth::check(&config.auth)
            .map_err(|e| anyhow::anyhow!("authentication: {e}"))?;
        println!("configuration is valid");
        return Ok(());
    }
    crate::logging::init(&config.log.level, config.log.format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "vane started");
        server.run(shutdown_signal()).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
