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
use crate::limits::Refusal;
use crate::metrics::RefusedCause;
use crate::tls::{self, TlsListener};

/// Accepts connections until shutdown; with TLS, every connection is TLS. `index` is the
/// listener's place in the configuration, for its connection cap.
pub(crate) async fn run_tcp(
    listener: TcpListener,
    index: usize,
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
                    // Admission comes first, before the TLS handshake and before anything is
                    // allocated for the connection: a storm of connections that are refused
                    // costs an accept and a close each. The client's MQTT version is not known
                    // yet, so it gets no CONNACK, just the close (counted and logged in summary).
                    let permit = match broker.limits.admit(index, peer) {
                        Ok(permit) => permit,
                        Err(why) => {
                            broker.metrics.connection_refused(match why {
                                Refusal::GlobalCap | Refusal::ListenerCap => RefusedCause::ConnectionLimit,
                                Refusal::SourceRate => RefusedCause::Rate,
                                Refusal::BannedAddress => RefusedCause::Banned,
                            });
                            drop(stream);
                            continue;
                        }
                    };
                    let Some(stream) = crate::overload::admit(&broker, stream, peer, tls.is_some()) else { continue };
                    broker.metrics.connection_accepted();
                    // Small packets are the norm: send them at once, batching is done above.
                    let _ = stream.set_nodelay(true);
                    debug!(%peer, "connection accepted");
                    let connect_deadline = tokio::time::Instant::now() + broker.config.mqtt.connect_timeout;
                    match &tls {
                        // The handshake runs in the connection's own task, so a slow one holds
                        // up no one else.
                        // The acceptor of the moment: a reload changes it for new connections.
                        Some(tls_listener) => {
                            let (broker, auth, acceptor, shutdown) = (broker.clone(), auth.clone(), tls_listener.acceptor(), shutdown.clone());
                            // The connection's future is made inside the task's: made outside and
                            // moved in, it would be stored twice (captured, then awaited), doubling
                            // every connection's memory (measured: 3.9 to 7.0 KiB per idle one).
                            tokio::spawn(async move {
                                let _permit = permit;
                                tls::serve(broker, peer, auth, stream, acceptor, connect_deadline, shutdown).await;
                            });
                        }
                        None => {
                            let (reader, writer) = stream.into_split();
                            let origin = Origin { peer, listener: auth.clone(), cert_name: None };
                            let (broker, shutdown) = (broker.clone(), shutdown.clone());
                            tokio::spawn(async move {
                                let _permit = permit;
                                connection::serve(broker, origin, reader, writer, connect_deadline, shutdown).await;
                            });
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
