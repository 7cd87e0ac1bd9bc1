//! The TCP accept loop: one task per accepted connection, which runs the TLS handshake first
//! on a TLS listener.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, error};

use crate::auth::ListenerAuth;
use crate::broker::Broker;
use crate::connection::{self, Origin};
use crate::tls::{self, TlsListener};

/// Accepts connections until shutdown; with TLS, every connection is TLS.
pub(crate) async fn run_tcp(
    listener: TcpListener,
    tls: Option<Arc<TlsListener>>,
    auth: Arc<ListenerAuth>,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    // Small packets are the norm: send them at once, batching is done above.
                    let _ = stream.set_nodelay(true);
                    debug!(%peer, "connection accepted");
                    let connect_deadline = tokio::time::Instant::now() + broker.config.mqtt.connect_timeout;
                    match &tls {
                        // The handshake runs in the connection's own task, so a slow one holds
                        // up no one else.
                        // The acceptor of the moment: a reload changes it for new connections.
                        Some(tls_listener) => {
                            tokio::spawn(tls::serve(broker.clone(), peer, auth.clone(), stream, tls_listener.acceptor(), connect_deadline, shutdown.clone()));
                        }
                        None => {
                            let (reader, writer) = stream.into_split();
                            let origin = Origin { peer, listener: auth.clone(), cert_name: None };
                            tokio::spawn(connection::serve(broker.clone(), origin, reader, writer, connect_deadline, shutdown.clone()));
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors or a transient error: back off instead of spinning.
                    error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
