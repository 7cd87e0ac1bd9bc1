//! The TCP accept loop: one task per accepted connection, which reads the PROXY protocol
//! header first on a listener behind a balancer, then runs the TLS handshake on a TLS
//! listener, and the WebSocket upgrade (after TLS, if any) on a WebSocket listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
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
                    let answers_busy = tls.is_none() && websocket.is_none() && !proxy_protocol;
                    let Some(stream) = crate::overload::admit(&broker, stream, peer, !answers_busy) else { continue };
                    broker.metrics.connection_accepted();
                    // Small packets are the norm: send them at once, batching is done above.
                    let _ = stream.set_nodelay(true);
                    debug!(%peer, "connection accepted");
                    let connect_deadline = tokio::time::Instant::now() + broker.config.mqtt.connect_timeout;
                    // The acceptor of the moment: a reload changes it for new connections.
                    let transport = Transport {
                        tls: tls.as_ref().map(|t| t.acceptor()),
                        websocket: websocket.clone(),
                        auth: auth.clone(),
                    };
                    let (broker, shutdown) = (broker.clone(), shutdown.clone());
                    // Everything else runs in the connection's own task, so a slow handshake
                    // holds up no one else. The connection's future is made inside the task's:
                    // made outside and moved in, it would be stored twice (captured, then
                    // awaited), doubling every connection's memory (measured: 3.9 to 7.0 KiB
                    // per idle one).
                    tokio::spawn(async move {
                        let _permit = permit;
                        let mut stream = stream;
                        let peer = if proxy_protocol {
                            match client_address(&broker, &mut stream, peer, connect_deadline).await {
                                Some(client) => client,
                                None => return,
                            }
                        } else {
                            peer
                        };
                        serve(broker, stream, peer, transport, connect_deadline, shutdown).await;
                    });
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

/// How a listener's connections are served once admitted.
struct Transport {
    tls: Option<TlsAcceptor>,
    websocket: Option<Arc<WebSocketListener>>,
    auth: Arc<ListenerAuth>,
}

/// Serves one admitted connection from `peer`: TLS handshake first on a TLS listener, the
/// WebSocket upgrade (after TLS, if any) on a WebSocket listener, then MQTT.
async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    connect_deadline: tokio::time::Instant,
    shutdown: watch::Receiver<bool>,
) {
    let Transport {
        tls,
        websocket,
        auth,
    } = transport;
    if let Some(acceptor) = tls {
        tls::serve(
            broker,
            peer,
            auth,
            stream,
            acceptor,
            websocket,
            connect_deadline,
            shutdown,
        )
        .await;
        return;
    }
    let origin = Origin {
        peer,
        listener: auth,
        cert_name: None,
    };
    if let Some(websocket) = websocket {
        websocket::serve(
            broker,
            origin,
            stream,
            websocket,
            connect_deadline,
            shutdown,
        )
        .await;
        return;
    }
    let (reader, writer) = stream.into_split();
    connection::serve(broker, origin, reader, writer, connect_deadline, shutdown).await;
}

/// Reads the PROXY protocol header (within the connect deadline) and admits the client's
/// address it names: bans and the connection rate per source apply to the client, not to
/// the balancer. `None`: the connection is to be closed (logged).
async fn client_address(
    broker: &Broker,
    stream: &mut TcpStream,
    balancer: SocketAddr,
    connect_deadline: tokio::time::Instant,
) -> Option<SocketAddr> {
    let read = proxy_protocol::read_source(stream, balancer);
    let client = match tokio::time::timeout_at(connect_deadline, read).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            info!(peer = %balancer, error = %e, "closing a connection on a PROXY protocol listener");
            return None;
        }
        Err(_) => {
            debug!(peer = %balancer, "no PROXY protocol header within the connect timeout, closing");
            return None;
        }
    };
    if let Err(why) = broker.limits.admit_source(client) {
        count_refusal(broker, why);
        return None;
    }
    debug!(peer = %client, balancer = %balancer, "PROXY protocol header read");
    Some(client)
}

/// Counts a connection refused at admission, by cause.
fn count_refusal(broker: &Broker, why: Refusal) {
    broker.metrics.connection_refused(match why {
        Refusal::GlobalCap | Refusal::ListenerCap => RefusedCause::ConnectionLimit,
        Refusal::SourceRate => RefusedCause::Rate,
        Refusal::BannedAddress => RefusedCause::Banned,
    });
}
