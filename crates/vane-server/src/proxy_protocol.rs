//! The PROXY protocol (HAProxy's, version 1 text and version 2 binary) on a listener behind a
//! load balancer: the header the balancer sends before anything else names the client's own
//! address, which then stands for the connection's peer in admission, bans, logs, the ACL and
//! the HTTP hook.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Longest header accepted: a version 1 header is at most 107 bytes; a version 2 header is
/// 16 bytes and its addresses and TLVs, which balancers keep to a few hundred bytes.
const MAX_HEADER: usize = 2048;

/// How long to wait before looking again at a header that has not fully arrived. Balancers
/// send it in one segment, so this is the rare path.
const RETRY: Duration = Duration::from_millis(5);

/// Why a connection on a PROXY protocol listener is closed before anything else is read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyHeaderError {
    /// The first bytes are not a PROXY protocol header (a client that bypassed the balancer,
    /// or a balancer not configured to send one).
    #[error("no valid PROXY protocol header: {0}")]
    Invalid(String),
    /// The header is longer than [`MAX_HEADER`].
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    /// The connection closed before the header was complete.
    #[error("connection closed before the PROXY protocol header was complete")]
    Closed,
    /// Reading failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProxyHeader {
    /// Its length in bytes, all of which belong to it.
    pub len: usize,
    /// The client's address, when the header carries one (version 1 `PROXY TCP4/TCP6`,
    /// version 2 `PROXY` over IPv4 or IPv6). `None` for `UNKNOWN`, `LOCAL` (the balancer's
    /// own health checks) and address families without a port: the connection's own peer
    /// address is used then, as the protocol says.
    pub source: Option<SocketAddr>,
}

/// Parses the header at the start of `bytes`: `Ok(None)` while it may still be incomplete.
pub(crate) fn parse(bytes: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    let result = HeaderResult::parse(bytes);
    if result.is_incomplete() {
        return if bytes.len() >= MAX_HEADER {
            Err(ProxyHeaderError::TooLong)
        } else {
            Ok(None)
        };
    }
    let header = match result {
        HeaderResult::V1(Ok(h)) => ProxyHeader {
            len: h.header.len(),
            source: match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) => ProxyHeader {
            len: h.len(),
            source: match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            },
        },
        HeaderResult::V1(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
    };
    if header.len > MAX_HEADER {
        return Err(ProxyHeaderError::TooLong);
    }
    Ok(Some(header))
}

/// Reads the header from the start of `stream` and returns the client's address (`peer`, the
/// balancer's, when the header names none). Only the header's own bytes are consumed: it is
/// found by peeking, so what follows (a TLS ClientHello, a CONNECT) stays in the socket for
/// whoever reads next. The caller bounds the wait (the connect timeout).
pub(crate) async fn read_source(
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyHeaderError> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut seen = 0;
    let header = loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        if let Some(header) = parse(&buf[..n])? {
            break header;
        }
        if n == seen {
            // Nothing new since the last look: the rest of a split header is on its way.
            tokio::time::sleep(RETRY).await;
        }
        seen = n;
    };
    stream.read_exact(&mut buf[..header.len]).await?;
    Ok(header.source.unwrap_or(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_headers_name_the_client() {
        let h = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\nMQTT")
            .expect("valid")
            .expect("complete");
        assert_eq!(h.source, Some("203.0.113.7:51234".parse().expect("addr")));
        assert_eq!(
            h.len,
            "PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\n".len()
        );
        let h = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 1883\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(h.source, Some("[2001:db8::1]:4000".parse().expect("addr")));
        let h = parse(b"PROXY UNKNOWN\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!((h.len, h.source), (15, None));
    }

    #[test]
    fn version_2_headers_name_the_client_unless_local() {
        let client: SocketAddr = "198.51.100.9:40000".parse().expect("addr");
        let server: SocketAddr = "10.0.0.1:1883".parse().expect("addr");
        let header = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (client, server),
        )
        .build()
        .expect("header");
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"\x10\x0c");
        let h = parse(&bytes).expect("valid").expect("complete");
        assert_eq!((h.len, h.source), (header.len(), Some(client)));
        // Every prefix is incomplete, never an error.
        for cut in 0..header.len() {
            assert_eq!(parse(&header[..cut]).expect("a prefix is no error"), None);
        }
        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Stream,
            (client, server),
        )
        .build()
        .expect("header");
        let h = parse(&local).expect("valid").expect("complete");
        assert_eq!(h.source, None, "LOCAL: the balancer's own connection");
    }

    #[test]
    fn anything_else_is_refused() {
        // An MQTT CONNECT straight from a client, a TLS ClientHello, a broken v1 header.
        for bytes in [
            &b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c"[..],
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            &b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n"[..],
        ] {
            assert!(parse(bytes).is_err(), "{bytes:?}");
        }
        // A version 1 line that never ends is cut at the limit.
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; MAX_HEADER]].concat();
        assert!(parse(&endless).is_err());
    }
}
