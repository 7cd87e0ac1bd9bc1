//! The authentication chain of a listener over real sockets: JWT in the password field, the
//! HTTP hook (a tiny HTTP server in the test that counts requests), the order in which
//! methods decide, and client ids bound to the user name that first used them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use test_support::vane_config::{AuthMethod, Config};
use test_support::vane_proto::{ByteString, ConnAckReason, Connect, Packet, PubAckReason};
use test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "the secret the token issuer and the broker share";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn token_signed_with(secret: &str, claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token encodes")
}

fn token(sub: &str) -> String {
    token_signed_with(SECRET, json!({"sub": sub, "exp": now() + 600}))
}

fn with_login(mut connect: Connect, user: Option<&str>, password: &str) -> Connect {
    connect.username = user.map(ByteString::from);
    connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    connect
}

async fn ack(addr: SocketAddr, connect: Connect) -> ConnAckReason {
    TestClient::connect_with_ack(addr, connect).await.1.reason
}

/// A PINGREQ answered proves the connection is still served.
async fn still_connected(client: &mut TestClient) {
    client.send(Packet::PingReq).await;
    client.expect(Packet::PingResp).await;
}

/// A temp directory with a password file holding alice/wonderland and bob/hunter2 (PBKDF2,
/// written by vane-auth's own writer, which the password file tests check independently).
fn password_file(dir: &tempfile::TempDir) -> String {
    let mut text = String::new();
    for (user, password) in [("alice", "wonderland"), ("bob", "hunter2")] {
        let hash = vane_auth::PasswordHash::new(password, 1000).expect("hash");
        text.push_str(&vane_auth::password::format_line(user, &hash).expect("line"));
        text.push('\n');
    }
    let path = dir.path().join("passwd");
    std::fs::write(&path, text).expect("write password file");
    path.display().to_string()
}

async fn jwt_broker(configure: impl FnOnce(&mut Config)) -> TestBroker {
    TestBroker::start(|c| {
        c.auth.jwt.secret = SECRET.into();
        configure(c);
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// JWT
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_token_in_the_password_field_is_accepted() {
    let broker = jwt_broker(|_| {}).await;
    let addr = broker.addr();
    // No user name: the token names the user.
    let c = with_login(connect_v5(&unique_id("jwt")), None, &token("alice"));
    let mut client = TestClient::connect(addr, c).await;
    client.send(subscribe(1, "t/#", 1)).await;
    client.expect(suback(1, &[1])).await;
    client.disconnect().await;
    // A user name that is the token's subject; MQTT 3.1.1 too.
    let c = with_login(
        connect_v311(&unique_id("jwt")),
        Some("alice"),
        &token("alice"),
    );
    TestClient::connect(addr, c).await.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn expired_forged_and_mismatched_tokens_are_refused_with_bad_user_name_or_password() {
    let broker = jwt_broker(|_| {}).await;
    let addr = broker.addr();
    let expired = token_signed_with(SECRET, json!({"sub": "alice", "exp": now() - 120}));
    let early = token_signed_with(
        SECRET,
        json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 300}),
    );
    let forged = token_signed_with(
        "not the secret",
        json!({"sub": "alice", "exp": now() + 600}),
    );
    let no_exp = token_signed_with(SECRET, json!({"sub": "alice"}));
    for connect in [
        connect_v5(&unique_id("bad")),
        connect_v311(&unique_id("bad")),
    ] {
        let version = connect.protocol;
        for (what, user, password) in [
            ("expired", None, expired.as_str()),
            ("not yet valid", None, early.as_str()),
            ("wrong signature", None, forged.as_str()),
            ("no exp", None, no_exp.as_str()),
            ("another user's token", Some("bob"), &*token("alice")),
            // Not a token, and no other method to decide: the credentials are refused.
            ("plain password", Some("alice"), "wonderland"),
        ] {
            // MQTT 3.1.1 allows no password without a user name [MQTT-3.1.2-22].
            let user = user.or((!version.is_v5()).then_some("alice"));
            let c = with_login(connect.clone(), user, password);
            // MQTT 5.0: 0x86; MQTT 3.1.1: return code 4, decoded to the same reason.
            assert_eq!(
                ack(addr, c).await,
                ConnAckReason::BadUserNameOrPassword,
                "{version:?}: {what}"
            );
        }
    }
    // With a JWT method configured the listener is closed to anonymous clients.
    assert_eq!(
        ack(addr, connect_v5(&unique_id("anon"))).await,
        ConnAckReason::NotAuthorized
    );
    broker.stop().await;
}

async fn publish_q1(client: &mut TestClient, topic: &str, id: u16) -> PubAckReason {
    client.send(publish(topic, 1, id, b"x")).await;
    match client.recv().await {
        Some(Packet::PubAck(a)) => a.reason,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn a_token_with_permission_claims_is_limited_to_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The ACL allows everything under `plant/`; the token narrows it further.
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "allow any all plant/#\n").expect("write ACL");
    let broker = jwt_broker(|c| c.acl.file = acl.display().to_string()).await;
    let addr = broker.addr();
    let limited = token_signed_with(
        SECRET,
        json!({
            "sub": "sensor-7", "exp": now() + 600,
            "publish": ["plant/sensors/7/#", "elsewhere/#"],
            "subscribe": ["plant/cmd/7"]
        }),
    );
    let c = with_login(connect_v5(&unique_id("limited")), None, &limited);
    let mut client = TestClient::connect(addr, c).await;
    assert!(!publish_q1(&mut client, "plant/sensors/7/temp", 1)
        .await
        .is_error());
    // Outside the claims: 0x87 Not authorized.
    assert_eq!(
        publish_q1(&mut client, "plant/sensors/8/temp", 2).await,
        PubAckReason::NotAuthorized
    );
    // Inside the claims but outside the ACL: the ACL still decides.
    assert_eq!(
        publish_q1(&mut client, "elsewhere/x", 3).await,
        PubAckReason::NotAuthorized
    );
    // A subscription must be covered by a `subscribe` filter.
    client
        .send(subscribe_many(4, &[("plant/cmd/7", 1), ("plant/cmd/#", 1)]))
        .await;
    client.expect(suback(4, &[1, 0x87])).await;
    client.disconnect().await;

    // A token without permission claims gets what the ACL gives.
    let c = with_login(connect_v5(&unique_id("open")), None, &token("dashboard"));
    let mut client = TestClient::connect(addr, c).await;
    assert!(!publish_q1(&mut client, "plant/sensors/8/temp", 1)
        .await
        .is_error());
    client.send(subscribe(2, "plant/cmd/#", 1)).await;
    client.expect(suback(2, &[1])).await;
    client.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn a_banned_user_is_refused_when_only_the_token_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bans = dir.path().join("bans");
    std::fs::write(&bans, "user mallory\n").expect("write ban file");
    let broker = jwt_broker(|c| c.limits.ban_file = bans.display().to_string()).await;
    let addr = broker.addr();
    // No user name in CONNECT: the ban list learns the name from the token. 0x8A Banned.
    let c = with_login(connect_v5(&unique_id("ban")), None, &token("mallory"));
    assert_eq!(ack(addr, c).await, ConnAckReason::Banned);
    let c = with_login(connect_v5(&unique_id("ban")), None, &token("alice"));
    assert_eq!(ack(addr, c).await, ConnAckReason::Success);
    broker.stop().await;
}

#[tokio::test]
async fn the_secret_can_come_from_a_file_and_issuer_is_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jwt.secret");
    std::fs::write(&path, format!("{SECRET}\n")).expect("write secret");
    let broker = TestBroker::start(|c| {
        c.auth.jwt.secret_file = path.display().to_string();
        c.auth.jwt.issuer = "https://idp.example".into();
    })
    .await;
    let addr = broker.addr();
    let right = token_signed_with(
        SECRET,
        json!({"sub": "a", "exp": now() + 600, "iss": "https://idp.example"}),
    );
    let c = with_login(connect_v5(&unique_id("iss")), None, &right);
    TestClient::connect(addr, c).await.disconnect().await;
    let wrong = token_signed_with(
        SECRET,
        json!({"sub": "a", "exp": now() + 600, "iss": "https://other"}),
    );
    let c = with_login(connect_v5(&unique_id("iss")), None, &wrong);
    assert_eq!(ack(addr, c).await, ConnAckReason::BadUserNameOrPassword);
    broker.stop().await;
}

#[tokio::test]
async fn a_rotated_key_file_applies_after_a_reload_and_a_missing_one_keeps_the_old_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jwt.secret");
    std::fs::write(&path, "first-secret").expect("write secret");
    let broker = TestBroker::start(|c| {
        c.auth.jwt.secret_file = path.display().to_string();
    })
    .await;
    let addr = broker.addr();
    let signed = |secret: &str| {
        let token = token_signed_with(secret, json!({"sub": "a", "exp": now() + 600}));
        with_login(connect_v5(&unique_id("rotate")), None, &token)
    };
    assert_eq!(
        ack(addr, signed("first-secret")).await,
        ConnAckReason::Success
    );
    let mut before = TestClient::connect(addr, signed("first-secret")).await;

    std::fs::write(&path, "second-secret").expect("rotate the secret");
    broker.reload().expect("the new key loads");
    assert_eq!(
        ack(addr, signed("second-secret")).await,
        ConnAckReason::Success
    );
    assert_eq!(
        ack(addr, signed("first-secret")).await,
        ConnAckReason::BadUserNameOrPassword,
        "the old key no longer verifies"
    );
    // A client that connected with a token valid at the time stays connected.
    still_connected(&mut before).await;

    // A key file that cannot be read never means "allow" and never drops the key in force.
    std::fs::remove_file(&path).expect("remove the key file");
    let err = broker.reload().expect_err("the key file is gone");
    assert!(err.to_string().contains("JWT key"), "{err}");
    assert_eq!(
        ack(addr, signed("second-secret")).await,
        ConnAckReason::Success
    );
    assert_eq!(
        ack(addr, signed("first-secret")).await,
        ConnAckReason::BadUserNameOrPassword
    );
    broker.stop().await;
}

#[tokio::test]
async fn es256_tokens_verify_against_a_public_key_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let key_path = dir.path().join("jwt-public.pem");
    std::fs::write(&key_path, pair.public_key_pem()).expect("write key");
    let broker = TestBroker::start(|c| {
        c.auth.jwt.algorithm = test_support::vane_config::JwtAlgorithm::ES256;
        c.auth.jwt.public_key_file = key_path.display().to_string();
        c.auth.jwt.username_claim = "device".into();
    })
    .await;
    let addr = broker.addr();
    let es_token = |pair: &rcgen::KeyPair| {
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("key");
        encode(
            &Header::new(Algorithm::ES256),
            &json!({"device": "meter-9", "exp": now() + 600}),
            &key,
        )
        .expect("token")
    };
    let c = with_login(connect_v5(&unique_id("es")), None, &es_token(&pair));
    assert_eq!(ack(addr, c).await, ConnAckReason::Success);
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let c = with_login(connect_v5(&unique_id("es")), None, &es_token(&other));
    assert_eq!(ack(addr, c).await, ConnAckReason::BadUserNameOrPassword);
    // An HS256 token whose secret is the public key (the algorithm-confusion attack).
    let confused = token_signed_with(
        &pair.public_key_pem(),
        json!({"device": "meter-9", "exp": now() + 600}),
    );
    let c = with_login(connect_v5(&unique_id("es")), None, &confused);
    assert_eq!(ack(addr, c).await, ConnAckReason::BadUserNameOrPassword);
    broker.stop().await;
}

#[tokio::test]
async fn an_unusable_jwt_key_stops_the_broker_naming_the_key() {
    let mut config = Config::default();
    config.listeners[0].bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.store.durability = test_support::vane_config::Durability::Memory;
    config.auth.jwt.algorithm = test_support::vane_config::JwtAlgorithm::ES256;
    config.auth.jwt.public_key_file = "/nonexistent/jwt.pem".into();
    let error = match vane_server::Server::bind(config).await {
        Ok(_) => panic!("the broker started without its JWT key"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("auth.jwt.public_key_file"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// The chain: who decides
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn password_file_decides_for_its_users_and_jwt_for_tokens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = password_file(&dir);
    let broker = jwt_broker(|c| c.auth.password_file = passwd).await;
    let addr = broker.addr();
    let ok = [
        (Some("alice"), "wonderland".to_string()),
        // carol is not in the file: the token decides.
        (Some("carol"), token("carol")),
        (None, token("dave")),
    ];
    for (user, password) in ok {
        // MQTT 5.0: a password without a user name is allowed.
        let c = with_login(connect_v5(&unique_id("chain")), user, &password);
        assert_eq!(ack(addr, c).await, ConnAckReason::Success, "{user:?}");
    }
    let refused = [
        // alice is in the file: the file decides, and a token is not her password.
        (Some("alice"), token("alice")),
        (Some("alice"), "Wonderland".to_string()),
        // Unknown to the file and not a token.
        (Some("carol"), "wonderland".to_string()),
    ];
    for (user, password) in refused {
        let c = with_login(connect_v5(&unique_id("chain")), user, &password);
        assert_eq!(
            ack(addr, c).await,
            ConnAckReason::BadUserNameOrPassword,
            "{user:?}"
        );
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_listener_runs_only_the_methods_it_lists() {
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = password_file(&dir);
    let broker = jwt_broker(|c| {
        c.auth.password_file = passwd;
        c.listeners[0].auth = Some(vec![AuthMethod::Jwt]);
    })
    .await;
    let addr = broker.addr();
    let c = with_login(connect_v5(&unique_id("only")), None, &token("alice"));
    assert_eq!(ack(addr, c).await, ConnAckReason::Success);
    // The password file is configured but not on this listener.
    let c = with_login(connect_v5(&unique_id("only")), Some("alice"), "wonderland");
    assert_eq!(ack(addr, c).await, ConnAckReason::BadUserNameOrPassword);
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// HTTP hook
// ---------------------------------------------------------------------------------------------

/// What the test hook answers.
#[derive(Clone, Copy)]
enum Answer {
    Allow,
    Deny,
    Status(u16),
    Garbage,
    Silence,
}

/// A tiny HTTP server: reads one request per connection, records its JSON body, answers by
/// the password it carries (`allow`, `deny`, `500`, `garbage`, `silence`).
struct Hook {
    url: String,
    requests: Arc<AtomicUsize>,
    last: Arc<parking_lot::Mutex<Option<Value>>>,
}

impl Hook {
    async fn start() -> Hook {
        Hook::serve(None).await
    }

    /// The hook over TLS (`https://`), with the certificate `tls` serves.
    async fn start_tls(tls: tokio_rustls::TlsAcceptor) -> Hook {
        Hook::serve(Some(tls)).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Hook {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind hook");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(parking_lot::Mutex::new(None));
        let (count, record) = (requests.clone(), last.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (count, record, tls) = (count.clone(), record.clone(), tls.clone());
                tokio::spawn(async move {
                    let mut stream: Box<dyn Stream> = match tls {
                        None => Box::new(stream),
                        Some(tls) => match tls.accept(stream).await {
                            Ok(s) => Box::new(s),
                            // A client that does not trust the certificate hangs up here.
                            Err(_) => return,
                        },
                    };
                    let Some(body) = read_request(&mut stream).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let answer = match value["password"].as_str() {
                        Some("allow") => Answer::Allow,
                        Some("500") => Answer::Status(500),
                        Some("403") => Answer::Status(403),
                        Some("garbage") => Answer::Garbage,
                        Some("silence") => Answer::Silence,
                        _ => Answer::Deny,
                    };
                    *record.lock() = Some(value);
                    let (status, body) = match answer {
                        Answer::Allow => (200, r#"{"result":"allow"}"#.to_string()),
                        Answer::Deny => (200, r#"{"result":"deny"}"#.to_string()),
                        Answer::Status(s) => (s, String::new()),
                        Answer::Garbage => (200, "yes please".to_string()),
                        Answer::Silence => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                    };
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Hook {
            url: format!("{scheme}://{addr}/mqtt/auth"),
            requests,
            last,
        }
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A hook connection, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for S {}

/// The body of one HTTP/1.1 request with a Content-Length.
async fn read_request(stream: &mut Box<dyn Stream>) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        assert!(head.starts_with("post /mqtt/auth http/1.1"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())?;
        while buf.len() < end + 4 + length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return Some(buf[end + 4..end + 4 + length].to_vec());
    }
}

async fn hook_broker(hook: &Hook, configure: impl FnOnce(&mut Config)) -> TestBroker {
    let url = hook.url();
    TestBroker::start(move |c| {
        c.auth.http.url = url;
        c.auth.http.timeout = Duration::from_millis(500);
        configure(c);
    })
    .await
}

#[tokio::test]
async fn hook_allow_accepts_and_deny_refuses_with_bad_user_name_or_password() {
    let hook = Hook::start().await;
    let broker = hook_broker(&hook, |_| {}).await;
    let addr = broker.addr();
    let id = unique_id("hooked");
    let c = with_login(connect_v5(&id), Some("alice"), "allow");
    let mut client = TestClient::connect(addr, c).await;
    still_connected(&mut client).await;
    client.disconnect().await;
    // The hook was told who, from where, on which listener, with which protocol.
    let seen = hook.last.lock().clone().expect("a request");
    assert_eq!(seen["client_id"], id.as_str());
    assert_eq!(seen["username"], "alice");
    assert_eq!(seen["password"], "allow");
    assert_eq!(seen["address"], "127.0.0.1");
    assert_eq!(seen["protocol"], "5.0");
    assert_eq!(seen["listener"], "127.0.0.1:0");

    for connect in [connect_v5(&unique_id("h")), connect_v311(&unique_id("h"))] {
        let version = connect.protocol;
        for password in ["deny", "403"] {
            let c = with_login(connect.clone(), Some("alice"), password);
            assert_eq!(
                ack(addr, c).await,
                ConnAckReason::BadUserNameOrPassword,
                "{version:?} {password}"
            );
        }
    }
    broker.stop().await;
}

/// A TLS acceptor serving a certificate for 127.0.0.1 signed by `ca`.
fn hook_tls(ca: &test_support::certs::Issued) -> tokio_rustls::TlsAcceptor {
    let leaf = test_support::certs::server_cert(ca);
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(leaf.key.serialize_der()).expect("server key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert.der().clone()], key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn an_https_hook_is_asked_over_tls_and_its_certificate_verified() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = test_support::certs::ca("hook CA");
    ca.write(dir.path(), "hook-ca");
    let stranger = test_support::certs::ca("another CA");
    stranger.write(dir.path(), "other-ca");
    let hook = Hook::start_tls(hook_tls(&ca)).await;
    assert!(hook.url().starts_with("https://"));

    let ca_file = dir.path().join("hook-ca.pem").display().to_string();
    let broker = hook_broker(&hook, |c| c.auth.http.ca_file = ca_file).await;
    let addr = broker.addr();
    let c = with_login(connect_v5(&unique_id("tls-hook")), Some("alice"), "allow");
    assert_eq!(ack(addr, c).await, ConnAckReason::Success);
    let c = with_login(connect_v5(&unique_id("tls-hook")), Some("alice"), "deny");
    assert_eq!(ack(addr, c).await, ConnAckReason::BadUserNameOrPassword);
    assert_eq!(hook.requests(), 2);
    broker.stop().await;

    // A hook whose certificate does not chain to the CA is never asked: no answer, 0x88.
    let other = dir.path().join("other-ca.pem").display().to_string();
    let broker = hook_broker(&hook, |c| c.auth.http.ca_file = other).await;
    let c = with_login(connect_v5(&unique_id("tls-hook")), Some("alice"), "allow");
    assert_eq!(
        ack(broker.addr(), c).await,
        ConnAckReason::ServerUnavailable
    );
    assert_eq!(
        hook.requests(),
        2,
        "no request went to an unverified server"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_hook_without_a_usable_answer_refuses_with_server_unavailable() {
    let hook = Hook::start().await;
    let broker = hook_broker(&hook, |_| {}).await;
    let addr = broker.addr();
    for connect in [connect_v5(&unique_id("u")), connect_v311(&unique_id("u"))] {
        let version = connect.protocol;
        // A server error, an answer that is not the expected JSON, no answer within the
        // timeout: never "allow". MQTT 5.0: 0x88; MQTT 3.1.1: return code 3.
        for password in ["500", "garbage", "silence"] {
            let c = with_login(connect.clone(), Some("alice"), password);
            assert_eq!(
                ack(addr, c).await,
                ConnAckReason::ServerUnavailable,
                "{version:?} {password}"
            );
        }
    }
    broker.stop().await;

    // A hook nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/auth", closed.local_addr().expect("addr"));
    drop(closed);
    let broker = TestBroker::start(|c| c.auth.http.url = url).await;
    let c = with_login(connect_v311(&unique_id("u")), Some("alice"), "allow");
    assert_eq!(
        ack(broker.addr(), c).await,
        ConnAckReason::ServerUnavailable
    );
    broker.stop().await;
}

#[tokio::test]
async fn hook_answers_are_cached_for_the_same_credentials() {
    let hook = Hook::start().await;
    let broker = hook_broker(&hook, |c| c.auth.http.cache_ttl = Duration::from_secs(600)).await;
    let addr = broker.addr();
    let id = unique_id("cached");
    for _ in 0..3 {
        let c = with_login(connect_v311(&id), Some("alice"), "allow");
        TestClient::connect(addr, c).await.disconnect().await;
    }
    assert_eq!(hook.requests(), 1, "allow is cached");
    for _ in 0..3 {
        let c = with_login(connect_v311(&id), Some("alice"), "deny");
        assert_eq!(ack(addr, c).await, ConnAckReason::BadUserNameOrPassword);
    }
    assert_eq!(hook.requests(), 2, "deny is cached, under its own key");
    // Another client id is another question.
    let c = with_login(connect_v311(&unique_id("other")), Some("alice"), "allow");
    TestClient::connect(addr, c).await.disconnect().await;
    assert_eq!(hook.requests(), 3);
    // Failures are not cached: the next CONNECT asks again.
    for _ in 0..2 {
        let c = with_login(connect_v311(&id), Some("alice"), "500");
        assert_eq!(ack(addr, c).await, ConnAckReason::ServerUnavailable);
    }
    assert_eq!(hook.requests(), 5);
    broker.stop().await;

    // cache_ttl = 0: every CONNECT asks.
    let hook = Hook::start().await;
    let broker = hook_broker(&hook, |c| c.auth.http.cache_ttl = Duration::ZERO).await;
    for _ in 0..2 {
        let c = with_login(connect_v311(&id), Some("alice"), "allow");
        TestClient::connect(broker.addr(), c)
            .await
            .disconnect()
            .await;
    }
    assert_eq!(hook.requests(), 2);
    broker.stop().await;
}

#[tokio::test]
async fn the_hook_has_the_last_word_after_the_password_file() {
    let hook = Hook::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = password_file(&dir);
    let broker = hook_broker(&hook, |c| c.auth.password_file = passwd).await;
    let addr = broker.addr();
    // alice is the file's: the hook is not asked.
    let c = with_login(connect_v311(&unique_id("f")), Some("alice"), "wonderland");
    assert_eq!(ack(addr, c).await, ConnAckReason::Success);
    let c = with_login(connect_v311(&unique_id("f")), Some("alice"), "allow");
    assert_eq!(ack(addr, c).await, ConnAckReason::BadUserNameOrPassword);
    assert_eq!(hook.requests(), 0);
    // carol is not: the hook decides.
    let c = with_login(connect_v311(&unique_id("f")), Some("carol"), "allow");
    assert_eq!(ack(addr, c).await, ConnAckReason::Success);
    let c = with_login(connect_v311(&unique_id("f")), Some("carol"), "deny");
    assert_eq!(ack(addr, c).await, ConnAckReason::BadUserNameOrPassword);
    assert_eq!(hook.requests(), 2);
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Client ids bound to credentials
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_client_id_belongs_to_the_user_that_first_used_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = password_file(&dir);
    let broker = TestBroker::start(|c| {
        c.auth.password_file = passwd;
        c.listeners[0].allow_anonymous = Some(true);
    })
    .await;
    let addr = broker.addr();
    let id = unique_id("victim");
    let alice = with_login(connect_v5_persistent(&id), Some("alice"), "wonderland");
    let mut victim = TestClient::connect(addr, alice.clone()).await;
    victim.send(subscribe(1, "inbox/#", 1)).await;
    victim.expect(suback(1, &[1])).await;
    // bob knows the client id and has a valid login of his own: refused with 0x87, and
    // alice's connection is not taken over.
    let bob = with_login(connect_v5_persistent(&id), Some("bob"), "hunter2");
    assert_eq!(ack(addr, bob).await, ConnAckReason::NotAuthorized);
    // MQTT 3.1.1: return code 5.
    let bob = with_login(connect_v311(&id), Some("bob"), "hunter2");
    assert_eq!(ack(addr, bob).await, ConnAckReason::NotAuthorized);
    // Nor may an anonymous client use it.
    assert_eq!(
        ack(addr, connect_v311(&id)).await,
        ConnAckReason::NotAuthorized
    );
    still_connected(&mut victim).await;
    // alice herself may take her session over.
    let (again, connack) = TestClient::connect_with_ack(addr, alice).await;
    assert_eq!(connack.reason, ConnAckReason::Success);
    assert!(connack.session_present);
    victim.expect_closed().await;
    // When her session ends, the id is free again.
    let mut end = connect_v5(&id);
    end.username = Some(ByteString::from("alice"));
    end.password = Some(Bytes::from_static(b"wonderland"));
    again.disconnect().await;
    TestClient::connect(addr, end).await.disconnect().await;
    let bob = with_login(connect_v311(&id), Some("bob"), "hunter2");
    assert_eq!(ack(addr, bob).await, ConnAckReason::Success);
    broker.stop().await;
}

#[test]
fn a_bound_client_id_stays_bound_across_a_restart() {
    // The binding of a persistent session is kept in its store record: after a crash
    // (SIGKILL) the first user to connect with the client id does not get the session.
    let dir = test_support::process::TempDir::new("vane-bind-restart");
    let tmp = tempfile::tempdir().expect("temp dir");
    let passwd = password_file(&tmp);
    let config = dir.path().join("vane.toml");
    std::fs::write(&config, format!("[auth]\npassword_file = \"{passwd}\"\n")).expect("write");
    let mut options =
        test_support::process::ServeOptions::new(env!("CARGO_BIN_EXE_vane"), dir.path(), "sync");
    options.config = Some(config);
    let mut broker = test_support::process::VaneProcess::start(options, Duration::from_secs(20));
    let addr = broker.addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let id = unique_id("bound");
    let alice = with_login(connect_v5_persistent(&id), Some("alice"), "wonderland");
    runtime.block_on(async {
        let mut c = TestClient::connect(addr, alice.clone()).await;
        c.send(subscribe(1, "inbox/#", 1)).await;
        c.expect(suback(1, &[1])).await;
        c.disconnect().await;
    });
    broker.kill();
    broker.restart(Duration::from_secs(20));
    runtime.block_on(async {
        let bob = with_login(connect_v5_persistent(&id), Some("bob"), "hunter2");
        assert_eq!(ack(addr, bob).await, ConnAckReason::NotAuthorized);
        let (c, connack) = TestClient::connect_with_ack(addr, alice).await;
        assert_eq!(connack.reason, ConnAckReason::Success);
        assert!(
            connack.session_present,
            "alice's session survived the restart"
        );
        c.disconnect().await;
    });
    broker.terminate();
}

#[tokio::test]
async fn binding_can_be_turned_off_and_anonymous_clients_bind_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = password_file(&dir);
    let broker = TestBroker::start(|c| {
        c.auth.password_file = passwd;
        c.auth.bind_client_id = Some(false);
    })
    .await;
    let addr = broker.addr();
    let id = unique_id("unbound");
    let mut first = TestClient::connect(
        addr,
        with_login(connect_v311(&id), Some("alice"), "wonderland"),
    )
    .await;
    let bob = with_login(connect_v311(&id), Some("bob"), "hunter2");
    assert_eq!(ack(addr, bob).await, ConnAckReason::Success);
    first.expect_closed().await;
    broker.stop().await;

    // An anonymous listener without authentication: ids are not bound, takeover works.
    let broker = TestBroker::start_default().await;
    let id = unique_id("anon");
    let mut first = TestClient::connect(broker.addr(), connect_v311(&id)).await;
    let mut second = TestClient::connect(broker.addr(), connect_v311(&id)).await;
    first.expect_closed().await;
    still_connected(&mut second).await;
    broker.stop().await;
}
