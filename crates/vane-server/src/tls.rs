//! TLS on a listener: loading the certificate chain, key and client CAs into a rustls server
//! configuration (again when the files change), running the handshake in the connection task
//! before MQTT starts, and naming the client from its verified certificate.

use std::io::BufReader;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::io::ReadHalf;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};
use vane_config::{CertIdentity, Config, TlsConfig};

use crate::auth::ListenerAuth;
use crate::broker::Broker;
use crate::connection::{self, Origin, Readable};

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

/// A listener's TLS: the acceptor new handshakes use, replaced when the files change.
pub(crate) struct TlsListener {
    index: usize,
    config: TlsConfig,
    current: RwLock<TlsAcceptor>,
    /// What the files held when `current` was built, and when a load last failed: a change
    /// is what triggers a reload, and a failure is logged once per content, not every poll.
    loaded: Mutex<Digests>,
}

/// Digests of the files' contents (see [`fingerprint`]).
#[derive(Debug, Clone, Copy)]
struct Digests {
    loaded: Option<[u8; 32]>,
    failed: Option<[u8; 32]>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The files are as they were.
    Unchanged,
    /// New handshakes use the new certificate, key and client CAs.
    Reloaded,
}

impl TlsListener {
    /// Loads listener `index`'s files; a failure stops the broker before it starts.
    pub(crate) fn load(index: usize, config: &TlsConfig) -> Result<TlsListener, String> {
        let fingerprint = fingerprint(config).ok();
        let acceptor = acceptor(index, config)?;
        Ok(TlsListener {
            index,
            config: config.clone(),
            current: RwLock::new(acceptor),
            loaded: Mutex::new(Digests {
                loaded: fingerprint,
                failed: None,
            }),
        })
    }

    /// The acceptor for a new connection.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.current.read().clone()
    }

    /// Re-reads the files; when they changed (or `force`), builds a new acceptor for new
    /// handshakes. Connections already up keep theirs. On failure the old certificate stays
    /// and the error is returned (and logged, once per content of the files).
    pub(crate) fn reload(&self, force: bool) -> Result<Reloaded, String> {
        let index = self.index;
        let fingerprint = match fingerprint(&self.config) {
            Ok(f) => f,
            Err(e) => {
                let e = format!("listeners[{index}].tls: {e}");
                warn!(listener = index, error = %e, "TLS reload failed; keeping the current certificate");
                return Err(e);
            }
        };
        let Digests { loaded, failed } = *self.loaded.lock();
        if !force && loaded == Some(fingerprint) {
            return Ok(Reloaded::Unchanged);
        }
        match acceptor(index, &self.config) {
            Ok(new) => {
                *self.current.write() = new;
                *self.loaded.lock() = Digests {
                    loaded: Some(fingerprint),
                    failed: None,
                };
                info!(listener = index, cert = %self.config.cert, "TLS certificate, key and client CAs reloaded for new connections");
                Ok(Reloaded::Reloaded)
            }
            Err(e) => {
                if force || failed != Some(fingerprint) {
                    warn!(listener = index, error = %e, "TLS reload failed; keeping the current certificate");
                }
                self.loaded.lock().failed = Some(fingerprint);
                Err(e)
            }
        }
    }

    /// Checks the files every `tls.reload_interval` until shutdown.
    pub(crate) async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let interval = self.config.reload_interval;
        if interval.is_zero() {
            return;
        }
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticks.tick() => {
                    // File reads and key parsing: off the runtime's workers.
                    let listener = self.clone();
                    let _ = tokio::task::spawn_blocking(move || listener.reload(false)).await;
                }
            }
        }
    }
}

/// Reloads the TLS files of every TLS listener (for SIGHUP), whatever their content: each
/// listener's result, by listener index.
#[derive(Clone, Default)]
pub struct TlsReloader(pub(crate) Vec<Arc<TlsListener>>);

impl TlsReloader {
    /// Reloads every TLS listener's certificate, key and client CAs for new connections. A
    /// listener whose files fail to load keeps its current ones; its error is returned.
    pub fn reload(&self) -> Vec<(usize, Result<Reloaded, String>)> {
        self.0.iter().map(|l| (l.index, l.reload(true))).collect()
    }
}

/// A digest of the certificate, key and client CA files' contents.
fn fingerprint(tls: &TlsConfig) -> Result<[u8; 32], String> {
    let mut h = Sha256::new();
    for path in [&tls.cert, &tls.key, &tls.client_ca] {
        if path.is_empty() {
            h.update([0]);
            continue;
        }
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        h.update([1]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(&bytes);
    }
    Ok(h.finalize().into())
}

/// The name `mode` picks from a certificate the handshake verified: the subject's CN, or the
/// first DNS, e-mail or URI subject alternative name. `None` when it has no such name, or
/// the name is not printable text.
pub(crate) fn certificate_name(der: &[u8], mode: CertIdentity) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = match mode {
        CertIdentity::None => return None,
        CertIdentity::Cn => cert
            .subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_owned(),
        CertIdentity::San => {
            let san = cert.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    Some((*s).to_owned())
                }
                _ => None,
            })?
        }
    };
    // A user name goes into logs and the ACL: no control characters, not empty.
    (!name.is_empty() && !name.chars().any(char::is_control)).then_some(name)
}

/// Every certificate in a PEM file; none is an error.
pub(crate) fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
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

/// Runs the TLS handshake, then serves MQTT over the encrypted stream (over WebSocket when
/// `websocket` is set). The handshake and the
/// CONNECT that follows share one deadline, `mqtt.connect_timeout` after the accept: a client
/// that never finishes the handshake is dropped, and a slow handshake leaves less time for
/// CONNECT. A client the handshake refuses (no or an unverifiable certificate on a listener
/// that requires one) never reaches MQTT.
// Every argument is the connection's own; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(
    broker: Arc<Broker>,
    peer: SocketAddr,
    listener: Arc<ListenerAuth>,
    stream: TcpStream,
    acceptor: TlsAcceptor,
    websocket: Option<Arc<crate::websocket::WebSocketListener>>,
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
    // Only a certificate the handshake verified against the client CAs is here.
    let cert_name = match listener.identity {
        CertIdentity::None => None,
        mode => {
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first());
            let name = leaf.and_then(|c| certificate_name(c.as_ref(), mode));
            match (&name, leaf) {
                (Some(name), _) => {
                    debug!(%peer, certificate_name = %name, "client certificate verified")
                }
                (None, Some(_)) => {
                    info!(%peer, identity = ?mode, "client certificate has no usable name for tls.identity")
                }
                (None, None) => {}
            }
            name
        }
    };
    let origin = Origin {
        peer,
        listener,
        cert_name,
    };
    if let Some(websocket) = websocket {
        // wss://: the upgrade runs over the TLS stream, against the same deadline.
        crate::websocket::serve(
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
    let (reader, writer) = tokio::io::split(stream);
    connection::serve(
        broker,
        origin,
        TlsReader(reader),
        writer,
        connect_deadline,
        shutdown,
    )
    .await;
}
