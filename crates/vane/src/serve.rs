//! `vane serve`: load the configuration, bind, run until SIGINT or SIGTERM.

use anyhow::Context;
use vane_config::{Config, Durability, ListenerConfig, LogFormat, WebSocketConfig};
use vane_server::Server;

use crate::cli::{DurabilityArg, LogFormatArg, ServeArgs};

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            Config::load(path).with_context(|| format!("configuration {}", path.display()))?
        }
        None => Config::default(),
    };
    if !args.bind.is_empty() || !args.ws_bind.is_empty() {
        let tcp = args.bind.iter().map(|&bind| ListenerConfig {
            bind,
            ..ListenerConfig::default()
        });
        let websocket = args.ws_bind.iter().map(|&bind| ListenerConfig {
            bind,
            websocket: Some(WebSocketConfig::default()),
            ..ListenerConfig::default()
        });
        config.listeners = tcp.chain(websocket).collect();
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
        vane_server::tls::check(&config).map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
        vane_server::check_limits(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(rules) =
            vane_server::auth::check_acl(&config.acl).map_err(|e| anyhow::anyhow!("ACL: {e}"))?
        {
            println!("ACL {}: {rules} rules", config.acl.file);
        }
        for (index, listener) in config.listeners.iter().enumerate() {
            let (allowed, why) = listener.anonymous(config.auth.checks_credentials());
            let anonymous = if allowed { "accepted" } else { "refused" };
            let chain = vane_server::auth::chain_names(&config, index);
            let chain = if chain.is_empty() {
                "none".to_string()
            } else {
                chain.join(", ")
            };
            let transport = match (&listener.tls, &listener.websocket) {
                (None, None) => "MQTT over TCP".to_string(),
                (Some(_), None) => "MQTT over TLS".to_string(),
                (None, Some(ws)) => format!("MQTT over WebSocket (ws://, path {})", ws.path),
                (Some(_), Some(ws)) => format!("MQTT over WebSocket (wss://, path {})", ws.path),
            };
            println!(
                "listener {}: anonymous clients {anonymous}: {why}; authentication methods: {chain}; {transport}",
                listener.bind
            );
        }
        println!("configuration is valid");
        return Ok(());
    }
    crate::logging::init(&config.log.level, config.log.format);
    // Before the connection cap (`limits.max_connections` = 0) is derived from it.
    crate::open_files::raise_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        // Registered before the store is opened and the port bound, so that a SIGTERM that
        // arrives while the broker starts still means a graceful shutdown.
        let shutdown = shutdown_signal()?;
        let reload = reload_signal()?;
        let server = Server::bind(config).await?;
        spawn_reloader(reload, server.reload_handle());
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "vane started");
        server.run(shutdown).await;
        Ok(())
    })
}

/// Completes on the first SIGINT or SIGTERM; the handlers are installed at once.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}

/// The SIGHUP stream, installed at once so that a SIGHUP during start does not end the process.
#[cfg(unix)]
fn reload_signal() -> anyhow::Result<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup()).context("installing the SIGHUP handler")
}

/// Reloads the ACL, the password file, the ban list and TLS certificates on every SIGHUP; a
/// file that cannot be parsed keeps the previous one (the reload logs the file, line and
/// reason).
#[cfg(unix)]
fn spawn_reloader(mut hangup: tokio::signal::unix::Signal, handle: vane_server::ReloadHandle) {
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!(
                "SIGHUP received: reloading the ACL, the password file, the ban list and TLS certificates"
            );
            // Reading and parsing the files is quick, blocking I/O: off the workers anyway.
            let handle = handle.clone();
            let _ = tokio::task::spawn_blocking(move || handle.reload()).await;
        }
    });
}

#[cfg(not(unix))]
fn reload_signal() -> anyhow::Result<()> {
    Ok(())
}

#[cfg(not(unix))]
fn spawn_reloader(_: (), _: vane_server::ReloadHandle) {}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received");
    })
}
