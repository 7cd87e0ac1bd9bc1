//! Starting and stopping the broker.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;
use vane_config::Config;

use crate::auth::ListenerAuth;
use crate::broker::Broker;
use crate::listener;
use crate::tls::{TlsListener, TlsReloader};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The authentication configuration could not be loaded.
    #[error("authentication: {0}")]
    Auth(String),
    /// The ACL file could not be read or parsed.
    #[error("ACL: {0}")]
    Acl(String),
    /// The store could not be opened (damaged, another version, or not a store at all).
    #[error("store: {0}")]
    Store(#[from] vane_store::StoreError),
    /// A listener's TLS certificate, key or client CA file could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The `[limits]` configuration could not be used (the ban file, naming its line).
    #[error("{0}")]
    Limits(String),
    /// The metrics endpoint (`metrics.bind`) could not bind its address.
    #[error("metrics.bind: cannot listen on {addr}: {source}")]
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Re-reads the ban file of a running server.
#[derive(Clone)]
pub struct BanListHandle(Arc<crate::limits::Limits>);

impl BanListHandle {
    /// Re-reads `limits.ban_file`. A file that cannot be read or parsed leaves the list in
    /// force unchanged; the error names the file and line. Returns the entries now in force.
    /// Connected clients the new list bans are disconnected (MQTT 5.0: DISCONNECT 0x98).
    pub fn reload(&self) -> Result<usize, String> {
        self.0.reload_bans()
    }
}

/// A broker with its listeners bound, ready to run.
pub struct Server {
    broker: Arc<Broker>,
    listeners: Vec<TcpListener>,
    /// Per listener, in the same order: its TLS, if it is a TLS listener.
    tls: Vec<Option<Arc<TlsListener>>>,
    /// The Prometheus endpoint's listener, when `metrics.bind` is set.
    metrics: Option<TcpListener>,
}

impl Server {
    /// Binds every configured listener. Port 0 picks a free port (see [`Server::local_addrs`]).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let authenticators = crate::auth::load(&config.auth).map_err(ServerError::Auth)?;
        let passwords = crate::auth::load_passwords(&config.auth).map_err(ServerError::Auth)?;
        let methods = crate::auth::load_methods(&config.auth).map_err(ServerError::Auth)?;
        let limits = Arc::new(crate::limits::Limits::new(&config).map_err(ServerError::Limits)?);
        let acl = crate::authz::load(&config.acl).map_err(ServerError::Acl)?;
        if let Some(acl) = &acl {
            info!(
                path = config.acl.file,
                rules = acl.len(),
                default = if acl.default_allow() { "allow" } else { "deny" },
                "ACL loaded: publish, subscribe and every delivery are checked"
            );
        }
        // Certificates are loaded before anything else starts: a TLS listener whose files
        // cannot be used stops the broker instead of serving plain TCP.
        let mut tls = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let acceptor = match &l.tls {
                Some(t) => Some(Arc::new(TlsListener::load(i, t).map_err(ServerError::Tls)?)),
                None => None,
            };
            tls.push(acceptor);
        }
        // The store is opened and restored before any port is bound: a client that can
        // connect finds its session as it left it.
        let opened = crate::persistence::open(&config.store)?;
        let (store, recovered) = match opened {
            Some((store, recovered)) => (Some(store), Some(recovered)),
            None => (None, None),
        };
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let listener = bind_tcp(l.bind, l.backlog).map_err(|source| ServerError::Bind {
                addr: l.bind,
                source,
            })?;
            listeners.push(listener);
        }
        // Bound like a listener: an endpoint the operator asked for and cannot have stops the
        // broker at start rather than leaving it unwatched.
        let metrics = match config.metrics.bind {
            Some(addr) => Some(
                bind_tcp(addr, 64).map_err(|source| ServerError::MetricsBind { addr, source })?,
            ),
            None => None,
        };
        let broker = Arc::new(Broker::new(
            config,
            authenticators,
            passwords,
            methods,
            acl,
            store,
            limits,
        ));
        if let Some(recovered) = recovered {
            crate::persistence::restore(&broker, recovered).await;
        }
        Ok(Server {
            broker,
            listeners,
            tls,
            metrics,
        })
    }

    /// Reloads the TLS listeners' certificates, keys and client CAs on demand (SIGHUP); it
    /// stays valid while the server runs.
    pub fn tls_reloader(&self) -> TlsReloader {
        TlsReloader(self.tls.iter().flatten().cloned().collect())
    }

    /// A handle to re-read the ban file (`limits.ban_file`) while the server runs, for SIGHUP.
    pub fn ban_list(&self) -> BanListHandle {
        BanListHandle(self.broker.limits.clone())
    }

    /// A handle to reload the broker's files (ACL, password file, ban list, TLS) while it runs, e.g. on
    /// SIGHUP. It stays usable after [`Server::run`] has taken the server.
    pub fn reload_handle(&self) -> crate::ReloadHandle {
        crate::ReloadHandle {
            broker: self.broker.clone(),
            tls: self.tls_reloader(),
        }
    }

    /// The addresses actually bound, in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The address the metrics endpoint is bound to, when `metrics.bind` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then tells clients (MQTT 5.0: DISCONNECT 0x8B) and
    /// closes their connections.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(crate::overload::run_sampler(
            self.broker.clone(),
            stop_rx.clone(),
        ));
        tokio::spawn(crate::sys::run(self.broker.clone(), stop_rx.clone()));
        if let Some(listener) = self.metrics {
            tokio::spawn(crate::metrics_http::run(
                listener,
                self.broker.clone(),
                stop_rx.clone(),
            ));
        }
        let limits = &self.broker.limits;
        info!(
            max_connections = limits.max_connections(),
            bans = limits.bans_len(),
            "connection limits in force"
        );
        for (index, ((listener, tls), addr)) in self
            .listeners
            .into_iter()
            .zip(self.tls)
            .zip(self.broker.config.listeners.iter())
            .enumerate()
        {
            let websocket = addr.websocket.as_ref().map(|ws| {
                Arc::new(crate::websocket::WebSocketListener::new(
                    ws,
                    self.broker.config.mqtt.max_packet_size.0,
                ))
            });
            let transport = match (&tls, &addr.websocket) {
                (None, None) => "TCP".to_owned(),
                (Some(_), None) => "TLS".to_owned(),
                (None, Some(ws)) => format!("WebSocket (ws://, path {})", ws.path),
                (Some(_), Some(ws)) => format!("WebSocket over TLS (wss://, path {})", ws.path),
            };
            let auth = Arc::new(ListenerAuth::new(&self.broker.config, index));
            let anonymous = if auth.allow_anonymous {
                "accepted"
            } else {
                "refused"
            };
            info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.bind.to_string()), auth = %auth.describe(), "listening for MQTT over {transport}; anonymous clients {anonymous}: {}", auth.anonymous_why);
            if let Some(tls) = &tls {
                tokio::spawn(tls.clone().watch(stop_rx.clone()));
            }
            let setup = listener::ListenerSetup {
                index,
                tls,
                websocket,
                proxy_protocol: self.broker.config.listeners[index].proxy_protocol,
                auth,
            };
            tokio::spawn(listener::run_tcp(
                listener,
                setup,
                self.broker.clone(),
                stop_rx.clone(),
            ));
        }
        let flusher = tokio::spawn({
            let limits = self.broker.limits.clone();
            async move {
                let mut every = tokio::time::interval(crate::limits::Limits::REFUSAL_LOG_INTERVAL);
                loop {
                    every.tick().await;
                    limits.flush_refusal_log();
                }
            }
        });
        shutdown.await;
        flusher.abort();
        info!(sessions = self.broker.registry.len(), "shutting down");
        let _ = stop_tx.send(true);
        // Connection tasks send their DISCONNECT (MQTT 5.0: 0x8B), flush, and save their
        // sessions; each takes at most about a second.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while self.broker.connections.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(store) = &self.broker.store {
            match store.close() {
                Ok(()) => {
                    let stats = store.stats();
                    info!(
                        commits = stats.commits,
                        syncs = stats.syncs,
                        writes = stats.ops,
                        bytes = stats.bytes_written,
                        "store flushed and closed"
                    );
                }
                Err(e) => tracing::error!(error = %e, "store could not be closed cleanly"),
            }
        }
    }
}

/// A TCP listener with the configured backlog (tokio's `TcpListener::bind` uses 128, which a
/// burst of connecting devices overflows: the kernel drops their SYNs and they retry a second
/// later).
fn bind_tcp(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std and tokio do for listeners: a restarted broker can bind while old connections
    // linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
