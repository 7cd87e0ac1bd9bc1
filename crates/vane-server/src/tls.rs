//! TLS on a listener: loading the certificate chain, key and client CAs into a rustls server
//! configuration, and running the handshake in the connection task before MQTT starts.

use std::io::BufReader;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::ReadHalf;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};
use vane_config::{Config, TlsConfig};

use crate::broker::Broker;
use crate::connection::{self, Readable};

/// Checks that every listener's TLS files load (for `vane serve --check`).
pub fn check(config: &Config) -> Result<(), String> {
    for (i, l) in config.listeners.iter().enumerate() {
        if let Some(tls) = &l.tls {
            acceptor(i, tls)?;
        }
    }
    Ok(())
}

/// The acceptor of listener `index`, from its files. Every failure names the key, the file and
/// the reason; none of them ever means "serve plain TCP instead".
pub(crate) fn acceptor(index: usize, tls: &TlsConfig) -> Result<TlsAcceptor, String> {
    let key_path = |name: &str| format!("listeners[{index}].tls.{name}");
    let certs = read_certs(&tls.cert).map_err(|e| format!("{}: {e}", key_path("cert")))?;
    let key = read_key(&tls.key).map_err(|e| format!("{}: {e}", key_path("key")))?;
    // The provider's default protocol versions: TLS 1.3 and TLS 1.2.
    let builder = ServerConfig::builder();
    let builder = if tls.client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let ca_key = key_path("client_ca");
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&tls.client_ca).map_err(|e| format!("{ca_key}: {e}"))? {
            roots
                .add(cert)
                .map_err(|e| format!("{ca_key}: {}: invalid CA certificate: {e}", tls.client_ca))?;
        }
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots));
        let verifier = if tls.require_client_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        let verifier = verifier
            .build()
            .map_err(|e| format!("{ca_key}: {}: {e}", tls.client_ca))?;
        builder.with_client_cert_verifier(verifier)
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "listeners[{index}].tls: {} and {} are not a usable certificate and key: {e}",
            tls.cert, tls.key
        )
    })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Every certificate in a PEM file; none is an error.
fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path}: invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| format!("{path}: invalid PEM: {e}"))?
        .ok_or_else(|| format!("{path}: no PRIVATE KEY in the file"))
}

/// The read half of a TLS connection.
pub(crate) struct TlsReader(ReadHalf<TlsStream<TcpStream>>);

impl tokio::io::AsyncRead for TlsReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Readable for TlsReader {
    /// Always ready at once. A TLS stream may already hold decrypted bytes (a socket read can
    /// bring several records, and the handshake's last flight can carry the CONNECT): the
    /// socket would then not become readable again, and waiting for it would leave a packet
    /// unread until the client sent more. So the connection goes straight to `read_buf`,
    /// which returns those bytes or waits on the socket itself; the cost is that an idle TLS
    /// connection keeps its read buffer instead of giving it back.
    fn wait_readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Runs the TLS handshake, then serves MQTT over the encrypted stream. The handshake and the
/// CONNECT that follows share one deadline, `mqtt.connect_timeout` after the accept: a client
/// that never finishes the handshake is dropped, and a slow handshake leaves less time for
/// CONNECT. A client the handshake refuses (no or an unverifiable certificate on a listener
/// that requires one) never reaches MQTT.
pub(crate) async fn serve(
    broker: Arc<Broker>,
    peer: SocketAddr,
    allow_anonymous: bool,
    stream: TcpStream,
    acceptor: TlsAcceptor,
    connect_deadline: tokio::time::Instant,
    mut shutdown: watch::Receiver<bool>,
) {
    let timeout = broker.config.mqtt.connect_timeout;
    let handshake = tokio::time::timeout_at(connect_deadline, acceptor.accept(stream));
    let stream = tokio::select! {
        res = handshake => match res {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                info!(%peer, error = %e, "TLS handshake failed, closing");
                return;
            }
            Err(_) => {
                debug!(%peer, ?timeout, "TLS handshake not finished within the connect timeout, closing");
                return;
            }
        },
        _ = shutdown.changed() => return,
    };
    let (reader, writer) = tokio::io::split(stream);
    connection::serve(
        broker,
        peer,
        allow_anonymous,
        TlsReader(reader),
        writer,
        connect_deadline,
        shutdown,
    )
    .await;
}
