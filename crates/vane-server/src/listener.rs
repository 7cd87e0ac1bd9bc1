//! The TCP accept loop: one task per accepted connection, which reads the PROXY protocol
//! header first on a listener behind a balancer, then runs the TLS handshake on a TLS
//! listener, and the WebSocket upgrade (after TLS, if any) on a WebSocket listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, error, info};

use crate::auth::ListenerAuth;
use crate::broker::Broker;
use crate::connection::{self, Origin};
use crate::limits::Refusal;
use crate::metrics::RefusedCause;
use crate::proxy_protocol;
use crate::tls::{self, TlsListener};
use crate::websocket::{self, WebSocketListener};

/// Accepts connections until shutdown; with TLS, every connection is TLS, and with WebSocket,
/// every connection starts with an HTTP upgrade; behind a balancer, with a PROXY protocol header.
pub(crate) async fn run_tcp(
    listener: TcpListener,
    setup: ListenerSetup,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ListenerSetup {
        index,
        tls,
        websocket,
        proxy_protocol,
        auth,
    } = setup;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    // Admission comes first, before the TLS handshake and before anything is
                    // allocated for the connection: a storm of connections that are refused
                    // costs an accept and a close each. The client's MQTT version is not known
                    // yet, so it gets no CONNACK, just the close (counted and logged in summary).
                    // Behind a PROXY protocol balancer every connection comes from the balancer:
                    // only the caps are checked here, the client's address once its header is read.
                    let admitted = if proxy_protocol {
                        broker.limits.admit_slot(index)
                    } else {
                        broker.limits.admit(index, peer)
                    };
                    let permit = match admitted {
                        Ok(permit) => permit,
                        Err(why) => {
                            count_refusal(&broker, why);
                            drop(stream);
                            continue;
                        }
                    };
                    // Something comes before MQTT (a PROXY header, TLS, an HTTP upgrade): a
                    // refusal for overload cannot be a CONNACK, the connection just closes.
                    let handshake_first = tls.is_some() || websocket.is_some() || proxy_protocol;
                    let Some(stream) = crate::overload::admit(&broker, stream, peer, handshake_first) else { continue };
                    broker.metrics.connection_accepted();
                    // Small packets are the norm: send them at once, batching is done above.
                    let _ = stream.set_nodelay(true);
                    debug!(%peer, "connection accepted");
                    let connect_deadline = tokio::time::Instant::now() + broker.config.mqtt.connect_timeout;
                    let (broker, auth, shutdown) = (broker.clone(), auth.clone(), shutdown.clone());
                    // Everything else runs in the connection's own task, so a slow handshake
                    // holds up no one else. One spawn per transport: a task's memory is its
                    // future's size, and a future that could be any of the three would make
                    // every plain TCP connection pay for the TLS and WebSocket states
                    // (measured: 4.7 to 14.4 KiB per idle connection). The connection's future
                    // is made inside the task's: made outside and moved in, it would be stored
                    // twice (captured, then awaited; measured: 3.9 to 7.0 KiB).
                    match (&tls, &websocket) {
                        (Some(tls), websocket) => {
                            // The acceptor of the moment: a reload changes it for new connections.
                            let (acceptor, websocket) = (tls.acceptor(), websocket.clone());
                            tokio::spawn(async move {
                                let _permit = permit;
                                let Some((stream, peer)) = client_address(&broker, stream, peer, proxy_protocol, connect_deadline).await else { return };
                                tls::serve(broker, peer, auth, stream, acceptor, websocket, connect_deadline, shutdown).await;
                            });
                        }
                        (None, Some(websocket)) => {
                            let websocket = websocket.clone();
                            tokio::spawn(async move {
                                let _permit = permit;
                                let Some((stream, peer)) = client_address(&broker, stream, peer, proxy_protocol, connect_deadline).await else { return };
                                let origin = Origin { peer, listener: auth, cert_name: None };
                                websocket::serve(broker, origin, stream, websocket, connect_deadline, shutdown).await;
                            });
                        }
                        (None, None) => {
                            tokio::spawn(async move {
                                let _permit = permit;
                                let Some((stream, peer)) = client_address(&broker, stream, peer, proxy_protocol, connect_deadline).await else { return };
                                let origin = Origin { peer, listener: auth, cert_name: None };
                                let (reader, writer) = stream.into_split();
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

/// What a listener's accept loop serves its connections with.
pub(crate) struct ListenerSetup {
    /// The listener's place in the configuration, for its connection cap.
    pub index: usize,
    pub tls: Option<Arc<TlsListener>>,
    pub websocket: Option<Arc<WebSocketListener>>,
    /// Connections start with a PROXY protocol header naming the client.
    pub proxy_protocol: bool,
    pub auth: Arc<ListenerAuth>,
}

/// The stream and the client's address: the connection's own peer, or, on a PROXY protocol
/// listener (`proxied`), the address its header names (read within the connect deadline),
/// admitted there: bans and the connection rate per source apply to the client, not to the
/// balancer. `None`: the connection is to be closed (logged).
async fn client_address(
    broker: &Broker,
    mut stream: TcpStream,
    peer: SocketAddr,
    proxied: bool,
    connect_deadline: tokio::time::Instant,
) -> Option<(TcpStream, SocketAddr)> {
    if !proxied {
        return Some((stream, peer));
    }
    let read = proxy_protocol::read_source(&mut stream, peer);
    let client = match tokio::time::timeout_at(connect_deadline, read).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            info!(%peer, error = %e, "closing a connection on a PROXY protocol listener");
            return None;
        }
        Err(_) => {
            debug!(%peer, "no PROXY protocol header within the connect timeout, closing");
            return None;
        }
    };
    if let Err(why) = broker.limits.admit_source(client) {
        count_refusal(broker, why);
        return None;
    }
    debug!(peer = %client, balancer = %peer, "PROXY protocol header read");
    Some((stream, client))
}

/// Counts a connection refused at admission, by cause.
fn count_refusal(broker: &Broker, why: Refusal) {
    broker.metrics.connection_refused(match why {
        Refusal::GlobalCap | Refusal::ListenerCap => RefusedCause::ConnectionLimit,
        Refusal::SourceRate => RefusedCause::Rate,
        Refusal::BannedAddress => RefusedCause::Banned,
    });
}
