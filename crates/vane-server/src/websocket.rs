//! MQTT over WebSocket (MQTT 5.0 section 6): the HTTP upgrade, run in the connection's task
//! within the CONNECT deadline, and an adapter that turns the WebSocket's binary messages into
//! the byte stream the connection loop reads and writes.
//!
//! The adapter treats the messages as one byte stream: a packet may span messages and a
//! message may hold several packets [MQTT-6.0.0-2] [MQTT-6.0.0-3], so the decoder sees exactly
//! what it sees on TCP. Each write of the connection loop (which gathers every pending packet
//! into one buffer) goes out as one binary message, split only above 65 KiB.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info};
use vane_config::WebSocketConfig as ListenerWebSocket;

use crate::broker::Broker;
use crate::connection::{self, Origin, Readable};

/// The subprotocols accepted, in order of preference: `mqtt` is what MQTT 3.1.1 and 5.0
/// clients offer [MQTT-6.0.0-4]; `mqttv3.1` is what MQTT 3.1 clients (and MQTT.js configured
/// for 3.1) offer.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Room for a message beyond `mqtt.max_packet_size`: a client may put a few bytes of the next
/// packet behind a full-size one.
const MESSAGE_SLACK: usize = 16;

/// Initial read buffer of the WebSocket layer. tungstenite allocates it at once for every
/// connection (128 KiB by default); MQTT connections are many and mostly idle, and a larger
/// frame grows the buffer as needed.
const READ_BUFFER: usize = 4 * 1024;

/// Largest binary message one write sends. The connection loop's batches stay below it (it
/// stops gathering at 64 KiB); a larger write, a single big packet, goes out as several
/// messages, which clients must reassemble [MQTT-6.0.0-2]. tungstenite keeps its write buffer
/// at the size of the largest message it framed, so this also bounds what an idle connection
/// holds after it once sent a big packet.
const MAX_WRITE_MESSAGE: usize = 64 * 1024 + 1024;

/// Room for pongs queued behind an unsent message while the client is not reading.
const PONG_BACKLOG: usize = 16 * 1024;

/// How long the closing handshake may take once the connection is over.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A WebSocket listener's settings, fixed when the broker starts.
#[derive(Debug)]
pub(crate) struct WebSocketListener {
    path: String,
    /// Largest WebSocket message (and frame) accepted from a client.
    max_message: usize,
}

impl WebSocketListener {
    pub(crate) fn new(config: &ListenerWebSocket, max_packet_size: usize) -> WebSocketListener {
        WebSocketListener {
            path: config.path.clone(),
            max_message: max_packet_size.saturating_add(MESSAGE_SLACK),
        }
    }

    fn protocol_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            // Every message is one batch of packets: write it at once, the flush follows.
            .write_buffer_size(0)
            // Our messages are flushed one at a time; beyond one message, only pongs pile up
            // (a client that floods pings and reads nothing): tungstenite then holds the
            // latest pong back instead of growing the buffer.
            .max_write_buffer_size(MAX_WRITE_MESSAGE + PONG_BACKLOG)
            .max_message_size(Some(self.max_message))
            .max_frame_size(Some(self.max_message))
    }
}

/// Why an upgrade was refused, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    WrongPath,
    NoSubprotocol,
}

/// Checks an upgrade request: the path, and a subprotocol to answer with [MQTT-6.0.0-5].
fn check_upgrade(
    path: &str,
    request: &Request,
    mut response: Response,
) -> Result<Response, (Refusal, ErrorResponse)> {
    if request.uri().path() != path {
        return Err((
            Refusal::WrongPath,
            error_response(StatusCode::NOT_FOUND, "no MQTT endpoint at this path"),
        ));
    }
    let offered = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let Some(selected) = SUBPROTOCOLS.iter().find(|p| offered.contains(p)) else {
        return Err((
            Refusal::NoSubprotocol,
            error_response(
                StatusCode::BAD_REQUEST,
                "MQTT over WebSocket needs the subprotocol mqtt (Sec-WebSocket-Protocol)",
            ),
        ));
    };
    response
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static(selected));
    Ok(response)
}

fn error_response(status: StatusCode, body: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(body.to_owned()));
    *response.status_mut() = status;
    response
}

/// Runs the WebSocket upgrade on `stream` (TCP, or TLS already negotiated), then serves MQTT
/// over it. The upgrade and the CONNECT that follows share `connect_deadline`, so a client
/// that sends its HTTP request a byte at a time is dropped with the rest of the slow ones.
/// tungstenite refuses an upgrade request above 64 KiB.
pub(crate) async fn serve<S>(
    broker: Arc<Broker>,
    origin: Origin,
    stream: S,
    websocket: Arc<WebSocketListener>,
    connect_deadline: tokio::time::Instant,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer: SocketAddr = origin.peer;
    let mut refused = None;
    let callback = |request: &Request, response: Response| {
        check_upgrade(&websocket.path, request, response).map_err(|(why, response)| {
            refused = Some((why, request.uri().path().to_owned()));
            response
        })
    };
    let upgrade = tokio::time::timeout_at(
        connect_deadline,
        tokio_tungstenite::accept_hdr_async_with_config(
            stream,
            callback,
            Some(websocket.protocol_config()),
        ),
    );
    // The upgrade's future (and with it the callback's borrow of `refused`) ends here.
    let upgraded = tokio::select! {
        res = upgrade => res,
        _ = shutdown.changed() => return,
    };
    let ws = match upgraded {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            match refused {
                Some((Refusal::WrongPath, path)) => {
                    info!(%peer, %path, expected = %websocket.path, "WebSocket upgrade refused with 404: wrong path")
                }
                Some((Refusal::NoSubprotocol, path)) => {
                    info!(%peer, %path, "WebSocket upgrade refused with 400: no mqtt subprotocol offered [MQTT-6.0.0-4]")
                }
                None => info!(%peer, error = %e, "WebSocket upgrade failed, closing"),
            }
            return;
        }
        Err(_) => {
            debug!(%peer, timeout = ?broker.config.mqtt.connect_timeout, "WebSocket upgrade not finished within the connect timeout, closing");
            return;
        }
    };
    debug!(%peer, "WebSocket upgrade done");
    let (reader, mut writer) = split(WsStream::new(ws));
    connection::serve(
        broker,
        origin,
        reader,
        &mut writer,
        connect_deadline,
        shutdown,
    )
    .await;
    // A connection refused before the session started (a CONNACK with a refusal, say) ends
    // without a shutdown of the writer: close the WebSocket properly in any case (a no-op
    // when it is closed already), bounded like the connection's own final flush.
    let _ = tokio::time::timeout(CLOSE_WAIT, writer.shutdown()).await;
}

/// A WebSocket connection as a byte stream: reads return the binary messages' bytes in order,
/// each write goes out as one binary message (of at most 65 KiB). Public so that clients (the
/// `vane pub` and `vane sub` commands, tests) can speak MQTT over a WebSocket the same way.
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// What is left of the last binary message received.
    unread: Bytes,
    /// Length of the buffer a write handed to the WebSocket and has not yet flushed. The
    /// message is committed: a write cancelled while it flushes reports these bytes written
    /// on the next call, which carries the same bytes first (the connection loop only ever
    /// appends to the buffer it writes from until a write returns).
    in_flight: Option<usize>,
    /// The close frame to send on shutdown, when the client broke a WebSocket rule of MQTT.
    close: Option<CloseFrame>,
    /// The client closed the WebSocket: reads return end of stream.
    eof: bool,
}

impl<S> WsStream<S> {
    /// A byte stream over an upgraded WebSocket (server or client side).
    pub fn new(ws: WebSocketStream<S>) -> WsStream<S> {
        WsStream {
            ws,
            unread: Bytes::new(),
            in_flight: None,
            close: None,
            eof: false,
        }
    }
}

/// A WebSocket error as an I/O error for the connection loop, which logs it as the reason the
/// connection closed.
fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Waits until `unread` holds bytes or the client closed (`eof`). Reading also sends what
    /// tungstenite owes the client: a pong for every ping, the answer to a close.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.unread.is_empty() && !self.eof {
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.unread = data,
                Some(Ok(Message::Text(_))) => {
                    // [MQTT-6.0.0-1] MQTT packets travel in binary frames only.
                    self.close = Some(CloseFrame {
                        code: CloseCode::Unsupported,
                        reason: "MQTT needs binary frames".into(),
                    });
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame received; MQTT over WebSocket is binary only [MQTT-6.0.0-1]",
                    )));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // The client closed: end of stream (tungstenite has queued the answer).
                Some(Ok(Message::Close(_)))
                | None
                | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => self.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_fill(cx))?;
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.in_flight.is_none() {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io_error)?;
            let message = &buf[..buf.len().min(MAX_WRITE_MESSAGE)];
            // One copy on the way out, into the message; tungstenite then frames it into its
            // own buffer.
            Pin::new(&mut this.ws)
                .start_send(Message::Binary(Bytes::copy_from_slice(message)))
                .map_err(io_error)?;
            this.in_flight = Some(message.len());
        }
        // Not done until the message is on the socket: nothing else would flush it if this
        // was the last write for a while.
        ready!(Pin::new(&mut this.ws).poll_flush(cx)).map_err(io_error)?;
        let written = this.in_flight.take().unwrap_or(0);
        Poll::Ready(Ok(written.min(buf.len())))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(frame) = this.close.take() {
            ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io_error)?;
            // Already closing (the client closed first): nothing more to say.
            let _ = Pin::new(&mut this.ws).start_send(Message::Close(Some(frame)));
        }
        ready!(Pin::new(&mut this.ws).poll_close(cx)).map_err(io_error)?;
        Pin::new(this.ws.get_mut()).poll_shutdown(cx)
    }
}

/// The halves of a [`WsStream`] for the connection loop. Both are polled by the connection's
/// one task, so the lock is never contended, and it is held only inside a poll, never across
/// an await. Unlike `tokio::io::split`, the read half can wait for the next message without
/// being handed a buffer (see [`Readable`]).
fn split<S>(stream: WsStream<S>) -> (WsReader<S>, WsWriter<S>) {
    let shared = Arc::new(Mutex::new(stream));
    (WsReader(shared.clone()), WsWriter(shared))
}

/// The read half of a WebSocket connection.
pub(crate) struct WsReader<S>(Arc<Mutex<WsStream<S>>>);

/// The write half of a WebSocket connection.
pub(crate) struct WsWriter<S>(Arc<Mutex<WsStream<S>>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsReader<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.lock()).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Readable for WsReader<S> {
    /// Pulls the next binary message in (answering pings on the way): an idle connection waits
    /// here without a read buffer of its own, while bytes tungstenite already holds are
    /// never waited on.
    fn wait_readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        std::future::poll_fn(move |cx| self.0.lock().poll_fill(cx))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsWriter<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.lock()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.lock()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.lock()).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, protocols: Option<&str>) -> Request {
        let mut builder = Request::builder().uri(path);
        if let Some(p) = protocols {
            builder = builder.header("Sec-WebSocket-Protocol", p);
        }
        builder.body(()).expect("valid request")
    }

    fn selected(r: &Response) -> Option<&str> {
        r.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
    }

    #[test]
    fn mqtt_is_selected_before_mqttv31() {
        // [MQTT-6.0.0-5] the server answers with the subprotocol it selected.
        let r = check_upgrade(
            "/mqtt",
            &request("/mqtt", Some("mqttv3.1, mqtt")),
            Response::new(()),
        )
        .expect("accepted");
        assert_eq!(selected(&r), Some("mqtt"));
        let r = check_upgrade(
            "/mqtt",
            &request("/mqtt?x=1", Some("mqttv3.1")),
            Response::new(()),
        )
        .expect("accepted");
        assert_eq!(selected(&r), Some("mqttv3.1"));
    }

    #[test]
    fn wrong_path_and_missing_subprotocol_are_refused() {
        let (why, resp) =
            check_upgrade("/mqtt", &request("/other", Some("mqtt")), Response::new(()))
                .expect_err("refused");
        assert_eq!(
            (why, resp.status()),
            (Refusal::WrongPath, StatusCode::NOT_FOUND)
        );
        // [MQTT-6.0.0-4] the client must offer mqtt.
        for offered in [None, Some("chat"), Some("mqtt5")] {
            let (why, resp) = check_upgrade("/mqtt", &request("/mqtt", offered), Response::new(()))
                .expect_err("refused");
            assert_eq!(
                (why, resp.status()),
                (Refusal::NoSubprotocol, StatusCode::BAD_REQUEST)
            );
        }
    }
}
