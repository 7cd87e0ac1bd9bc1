//! The HTTP authentication hook: a POST of each CONNECT's credentials to a configured URL
//! (`http://` or `https://`), an allow or deny answer, a bounded cache of answers, and a bound
//! on requests in flight.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use vane_config::HttpAuthConfig;

/// Largest answer body read from the hook.
const MAX_ANSWER: usize = 16 * 1024;

/// What the hook said about a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HookVerdict {
    Allow,
    /// `{"result": "deny"}`, or HTTP 401/403.
    Deny,
    /// No usable answer: unreachable, timed out, busy, an unexpected status or body. The
    /// string says which, for the log.
    Unavailable(String),
}

/// What the hook is told about a CONNECT.
pub(crate) struct HookRequest<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub peer: SocketAddr,
    pub listener: &'a str,
    pub protocol: &'a str,
}

/// The configured hook.
pub(crate) struct HttpHook {
    uri: Uri,
    /// `host:port` to connect to, and the Host header.
    authority: String,
    /// For an `https://` hook: the TLS client and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
    cache_ttl: Duration,
    cache_size: usize,
    cache: Mutex<HashMap<[u8; 32], (Instant, bool)>>,
    permits: tokio::sync::Semaphore,
}

impl std::fmt::Debug for HttpHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHook")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl HttpHook {
    /// The hook of `[auth.http]`; an unusable URL is an error naming the key.
    pub(crate) fn new(config: &HttpAuthConfig) -> Result<HttpHook, String> {
        let uri: Uri = config
            .url
            .parse()
            .map_err(|e| format!("auth.http.url: {}: {e}", config.url))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "auth.http.url: {}: must start with http:// or https://",
                    config.url
                ))
            }
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| format!("auth.http.url: {}: no host", config.url))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tls = if https {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| format!("auth.http.url: {}: {e}", config.url))?;
            Some((TlsConnector::from(Arc::new(client_config(config)?)), name))
        } else {
            if !config.ca_file.is_empty() {
                return Err(format!(
                    "auth.http.ca_file: set for a hook that is not https:// ({})",
                    config.url
                ));
            }
            None
        };
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:{}", authority.host(), if https { 443 } else { 80 }),
        };
        Ok(HttpHook {
            uri,
            authority,
            tls,
            timeout: config.timeout,
            cache_ttl: config.cache_ttl,
            cache_size: config.cache_size,
            cache: Mutex::new(HashMap::new()),
            permits: tokio::sync::Semaphore::new(config.max_concurrent.max(1)),
        })
    }

    /// Asks the hook (or its cache) about a client. Never fails: every problem is
    /// `Unavailable`, which refuses the client.
    pub(crate) async fn check(&self, request: &HookRequest<'_>) -> HookVerdict {
        let key = cache_key(request);
        let caching = !self.cache_ttl.is_zero() && self.cache_size > 0;
        if caching {
            let mut cache = self.cache.lock();
            match cache.get(&key) {
                Some(&(expires, allow)) if expires > Instant::now() => {
                    return if allow {
                        HookVerdict::Allow
                    } else {
                        HookVerdict::Deny
                    };
                }
                Some(_) => {
                    cache.remove(&key);
                }
                None => {}
            }
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        // Waiting for a turn counts against the same timeout: a hook that answers slowly makes
        // CONNECTs wait, never pile up requests without bound.
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, self.permits.acquire()).await
        else {
            return HookVerdict::Unavailable("too many hook requests waiting".into());
        };
        let verdict = match tokio::time::timeout_at(deadline, self.ask(request)).await {
            Ok(verdict) => verdict,
            Err(_) => HookVerdict::Unavailable(format!("no answer within {:?}", self.timeout)),
        };
        // Allow and deny are cached; no answer is not, so the next CONNECT asks again.
        if caching && matches!(verdict, HookVerdict::Allow | HookVerdict::Deny) {
            self.remember(key, verdict == HookVerdict::Allow);
        }
        verdict
    }

    fn remember(&self, key: [u8; 32], allow: bool) {
        let now = Instant::now();
        let mut cache = self.cache.lock();
        if cache.len() >= self.cache_size {
            cache.retain(|_, (expires, _)| *expires > now);
        }
        if cache.len() >= self.cache_size {
            // Still full of live answers: one goes, whichever (an answer asked for again is
            // simply asked of the hook again).
            if let Some(victim) = cache.keys().next().copied() {
                cache.remove(&victim);
            }
        }
        cache.insert(key, (now + self.cache_ttl, allow));
    }

    /// One request and its answer, over TLS for an `https://` hook.
    async fn ask(&self, request: &HookRequest<'_>) -> HookVerdict {
        let body = request_body(request);
        let stream = match tokio::net::TcpStream::connect(self.authority.as_str()).await {
            Ok(s) => s,
            Err(e) => return HookVerdict::Unavailable(format!("cannot connect: {e}")),
        };
        let Some((connector, name)) = &self.tls else {
            return self.exchange(stream, body).await;
        };
        match connector.connect(name.clone(), stream).await {
            Ok(tls) => self.exchange(tls, body).await,
            Err(e) => HookVerdict::Unavailable(format!("TLS: {e}")),
        }
    }

    /// The HTTP/1.1 POST and its answer over an open connection.
    async fn exchange<S>(&self, stream: S, body: Vec<u8>) -> HookVerdict
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = match hyper::client::conn::http1::handshake(io).await {
            Ok(pair) => pair,
            Err(e) => return HookVerdict::Unavailable(format!("HTTP: {e}")),
        };
        // The connection is driven by its own task. It ends with the request, or at the
        // timeout: a hook that never answers must not keep a task and a socket per CONNECT.
        let timeout = self.timeout;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(timeout, connection).await;
        });
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let http_request = match hyper::Request::post(path)
            .header(hyper::header::HOST, self.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
        {
            Ok(r) => r,
            Err(e) => return HookVerdict::Unavailable(format!("request: {e}")),
        };
        let response = match sender.send_request(http_request).await {
            Ok(r) => r,
            Err(e) => return HookVerdict::Unavailable(format!("HTTP: {e}")),
        };
        let status = response.status();
        if status == hyper::StatusCode::UNAUTHORIZED || status == hyper::StatusCode::FORBIDDEN {
            return HookVerdict::Deny;
        }
        if !status.is_success() {
            return HookVerdict::Unavailable(format!("HTTP status {status}"));
        }
        let body = match Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => return HookVerdict::Unavailable(format!("answer body: {e}")),
        };
        parse_answer(&body)
    }
}

/// The TLS client of an `https://` hook: TLS 1.3 or 1.2, the server certificate verified
/// against `ca_file` or, without one, the system's trust store. No usable CA is an error: it
/// never means "do not verify".
fn client_config(config: &HttpAuthConfig) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    if config.ca_file.is_empty() {
        // Unreadable system certificates are skipped; none at all is the error below.
        if let Ok(certs) = rustls_native_certs::load_native_certs() {
            roots.add_parsable_certificates(certs);
        }
        if roots.is_empty() {
            return Err(format!(
                "auth.http.url: {}: no CA certificates in the system's trust store; set auth.http.ca_file",
                config.url
            ));
        }
    } else {
        let path = &config.ca_file;
        for cert in crate::tls::read_certs(path).map_err(|e| format!("auth.http.ca_file: {e}"))? {
            roots
                .add(cert)
                .map_err(|e| format!("auth.http.ca_file: {path}: invalid CA certificate: {e}"))?;
        }
    }
    Ok(ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `{"result": "allow"}` or `{"result": "deny"}`; anything else is no answer.
fn parse_answer(body: &[u8]) -> HookVerdict {
    #[derive(serde::Deserialize)]
    struct Answer {
        result: String,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(a) if a.result == "allow" => HookVerdict::Allow,
        Ok(a) if a.result == "deny" => HookVerdict::Deny,
        Ok(a) => HookVerdict::Unavailable(format!("unknown result {:?}", a.result)),
        Err(e) => HookVerdict::Unavailable(format!("answer is not the expected JSON: {e}")),
    }
}

/// The JSON the hook receives. A password that is not UTF-8 goes as `password_base64`.
fn request_body(r: &HookRequest<'_>) -> Vec<u8> {
    use base64::Engine as _;
    let mut body = serde_json::json!({
        "client_id": r.client_id,
        "username": r.username,
        "address": r.peer.ip().to_string(),
        "port": r.peer.port(),
        "listener": r.listener,
        "protocol": r.protocol,
    });
    if let (Some(password), Some(map)) = (r.password, body.as_object_mut()) {
        match std::str::from_utf8(password) {
            Ok(text) => map.insert("password".into(), text.into()),
            Err(_) => map.insert(
                "password_base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(password)
                    .into(),
            ),
        };
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The cache key: a hash of what the answer depends on (the source port is left out, or no
/// reconnection would ever hit the cache). Fields are length-prefixed so that no two
/// different requests share an encoding.
fn cache_key(r: &HookRequest<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    for field in [
        Some(r.client_id.as_bytes()),
        r.username.map(str::as_bytes),
        r.password,
        Some(r.listener.as_bytes()),
    ] {
        match field {
            Some(bytes) => {
                h.update([1]);
                h.update((bytes.len() as u64).to_be_bytes());
                h.update(bytes);
            }
            None => h.update([0]),
        }
    }
    h.update(r.peer.ip().to_string().as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_strictly() {
        assert_eq!(parse_answer(br#"{"result":"allow"}"#), HookVerdict::Allow);
        assert_eq!(parse_answer(br#"{"result":"deny"}"#), HookVerdict::Deny);
        for bad in [
            &b"allow"[..],
            b"",
            br#"{"result":"Allow"}"#,
            br#"{"ok":true}"#,
            b"{",
        ] {
            assert!(
                matches!(parse_answer(bad), HookVerdict::Unavailable(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_cache_holds_at_most_cache_size_answers() {
        let hook = HttpHook::new(&HttpAuthConfig {
            url: "http://127.0.0.1:9/auth".into(),
            cache_size: 2,
            ..HttpAuthConfig::default()
        })
        .expect("valid URL");
        for i in 0..5u8 {
            hook.remember([i; 32], i % 2 == 0);
            assert!(hook.cache.lock().len() <= 2);
        }
        // The newest answer is always kept.
        assert_eq!(hook.cache.lock().get(&[4; 32]).map(|e| e.1), Some(true));
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_taken() {
        for bad in ["ftp://h/", "http:///auth", "https:///auth", "not a url"] {
            let config = HttpAuthConfig {
                url: bad.into(),
                ..HttpAuthConfig::default()
            };
            assert!(HttpHook::new(&config).is_err(), "{bad}");
        }
        let config = HttpAuthConfig {
            url: "http://auth.internal/mqtt".into(),
            ..HttpAuthConfig::default()
        };
        assert_eq!(
            HttpHook::new(&config).expect("valid").authority,
            "auth.internal:80"
        );
        // A CA file only means something for https://.
        let config = HttpAuthConfig {
            url: "http://auth.internal/mqtt".into(),
            ca_file: "/etc/ssl/ca.pem".into(),
            ..HttpAuthConfig::default()
        };
        assert!(HttpHook::new(&config).is_err());
        // A CA file that cannot be read is an error, not an unverified connection.
        let config = HttpAuthConfig {
            url: "https://auth.internal/mqtt".into(),
            ca_file: "/nonexistent/ca.pem".into(),
            ..HttpAuthConfig::default()
        };
        let err = HttpHook::new(&config).expect_err("unreadable CA file");
        assert!(err.contains("auth.http.ca_file"), "{err}");
    }

    #[test]
    fn cache_keys_differ_with_every_field_but_the_port() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        let base = HookRequest {
            client_id: "c",
            username: Some("u"),
            password: Some(b"p"),
            peer,
            listener: "l",
            protocol: "5.0",
        };
        let key = cache_key(&base);
        let other_port = HookRequest {
            peer: "10.0.0.1:6000".parse().expect("addr"),
            ..base
        };
        assert_eq!(cache_key(&other_port), key);
        let variants = [
            HookRequest {
                client_id: "d",
                ..other_port
            },
            HookRequest {
                username: None,
                ..other_port
            },
            HookRequest {
                password: Some(b"q"),
                ..other_port
            },
            HookRequest {
                password: None,
                ..other_port
            },
            HookRequest {
                peer: "10.0.0.2:5000".parse().expect("addr"),
                ..other_port
            },
            // "u" + "p" must not collide with "up" + "".
            HookRequest {
                username: Some("up"),
                password: Some(b""),
                ..other_port
            },
        ];
        for v in variants {
            assert_ne!(cache_key(&v), key);
        }
    }
}
