//! User name and password in CONNECT against `[auth] password_file` (Mosquitto's format), and
//! the per-listener rule for anonymous clients. Expected hashes are computed here with the
//! `pbkdf2` and `sha2` crates, apart from the broker's `vane-auth`.

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest, Sha512};
use test_support::vane_proto::{ByteString, ConnAckReason, Connect};
use test_support::*;

/// A password file in a fresh temp directory, removed when dropped.
struct PasswordFile {
    dir: PathBuf,
    path: PathBuf,
}

impl PasswordFile {
    fn with_text(name: &str, text: &str) -> PasswordFile {
        let dir = std::env::temp_dir().join(unique_id(&format!("vane-password-auth-{name}")));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let path = dir.join("passwd");
        std::fs::write(&path, text).expect("write the password file");
        PasswordFile { dir, path }
    }

    fn path(&self) -> String {
        self.path.to_str().expect("UTF-8 temp path").to_owned()
    }
}

impl Drop for PasswordFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `$7$` line as mosquitto_passwd writes it, computed with the `pbkdf2` crate.
fn pbkdf2_line(user: &str, password: &str, salt: &[u8], iterations: u32) -> String {
    let mut hash = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut hash);
    format!(
        "{user}:$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(hash)
    )
}

/// A `$6$` line (Mosquitto 1.x): SHA-512 of the password, then the salt.
fn sha512_line(user: &str, password: &str, salt: &[u8]) -> String {
    let hash = Sha512::new()
        .chain_update(password.as_bytes())
        .chain_update(salt)
        .finalize();
    format!(
        "{user}:$6${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(hash)
    )
}

/// alice (PBKDF2, Mosquitto's 101 iterations and 12-byte salt), bob (PBKDF2, 1000) and carol
/// (the older `$6$`).
fn users_file(name: &str) -> PasswordFile {
    let text = format!(
        "# migrated from mosquitto\n{}\n\n{}\n{}\n",
        pbkdf2_line("alice", "wonderland", b"0123456789ab", 101),
        pbkdf2_line("bob", "hunter2", b"another salt", 1000),
        sha512_line("carol", "legacy pw", b"saltysalt"),
    );
    PasswordFile::with_text(name, &text)
}

async fn password_broker(name: &str) -> (TestBroker, PasswordFile) {
    let file = users_file(name);
    let path = file.path();
    let broker = TestBroker::start(|c| c.auth.password_file = path).await;
    (broker, file)
}

fn with_login(mut connect: Connect, user: &str, password: &str) -> Connect {
    connect.username = Some(ByteString::from(user));
    connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    connect
}

async fn ack(addr: SocketAddr, connect: Connect) -> ConnAckReason {
    TestClient::connect_with_ack(addr, connect).await.1.reason
}

#[tokio::test]
async fn right_password_is_accepted_v311_v5_and_v31() {
    let (broker, _file) = password_broker("right").await;
    let addr = broker.addr();
    let c = with_login(connect_v311(&unique_id("a")), "alice", "wonderland");
    let mut client = TestClient::connect(addr, c).await;
    // The session works: a subscription is granted.
    client.send(subscribe(1, "t/#", 1)).await;
    client.expect(suback(1, &[1])).await;
    let c = with_login(connect_v5(&unique_id("b")), "bob", "hunter2");
    TestClient::connect(addr, c).await.disconnect().await;
    let c = with_login(connect_v31("carol-31"), "carol", "legacy pw");
    TestClient::connect(addr, c).await.disconnect().await;
    client.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_refused_with_bad_user_name_or_password() {
    let (broker, _file) = password_broker("wrong").await;
    let addr = broker.addr();
    for connect in [connect_v311(&unique_id("w")), connect_v5(&unique_id("w"))] {
        let version = connect.protocol;
        for (user, password) in [
            ("alice", "Wonderland"),
            ("alice", ""),
            ("carol", "legacy pw "),
            ("mallory", "wonderland"),
        ] {
            let c = with_login(connect.clone(), user, password);
            let (mut client, ack) = TestClient::connect_with_ack(addr, c).await;
            // MQTT 5.0: 0x86; MQTT 3.1.1: return code 4, which decodes to the same reason.
            assert_eq!(
                ack.reason,
                ConnAckReason::BadUserNameOrPassword,
                "{version:?} {user}:{password}"
            );
            assert!(!ack.session_present);
            client.expect_closed().await;
        }
        // A user name without a password.
        let mut c = connect.clone();
        c.username = Some(ByteString::from("alice"));
        assert_eq!(ack(addr, c).await, ConnAckReason::BadUserNameOrPassword);
    }
    // MQTT 3.1 gets return code 4 too.
    let c = with_login(connect_v31("v31-wrong"), "bob", "hunter3");
    assert_eq!(ack(addr, c).await, ConnAckReason::BadUserNameOrPassword);
    broker.stop().await;
}

#[tokio::test]
async fn v311_refusals_use_return_codes_4_and_5_on_the_wire() {
    use test_support::vane_proto::{Packet, ProtocolVersion};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (broker, _file) = password_broker("wire").await;
    for (connect, code) in [
        (with_login(connect_v311("wire-1"), "bob", "nope"), 4u8),
        (connect_v311("wire-2"), 5u8),
    ] {
        let mut stream = tokio::net::TcpStream::connect(broker.addr())
            .await
            .expect("connect");
        let raw = encode(ProtocolVersion::V3_1_1, &Packet::Connect(Box::new(connect)));
        stream.write_all(&raw).await.expect("send CONNECT");
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.expect("read CONNACK");
        assert_eq!(buf, [0x20, 0x02, 0x00, code]);
    }
    broker.stop().await;
}

#[tokio::test]
async fn anonymous_clients_are_refused_when_a_password_file_is_configured() {
    let (broker, _file) = password_broker("anon").await;
    let addr = broker.addr();
    assert_eq!(
        ack(addr, connect_v5(&unique_id("anon"))).await,
        ConnAckReason::NotAuthorized
    );
    assert_eq!(
        ack(addr, connect_v311(&unique_id("anon"))).await,
        ConnAckReason::NotAuthorized
    );
    broker.stop().await;

    // Unless the listener says otherwise; a user name given must still be right.
    let file = users_file("anon-allowed");
    let path = file.path();
    let broker = TestBroker::start(|c| {
        c.auth.password_file = path;
        c.listeners[0].allow_anonymous = Some(true);
    })
    .await;
    let addr = broker.addr();
    TestClient::connect(addr, connect_v311(&unique_id("anon")))
        .await
        .disconnect()
        .await;
    let c = with_login(connect_v5(&unique_id("anon")), "alice", "wrong");
    assert_eq!(ack(addr, c).await, ConnAckReason::BadUserNameOrPassword);
    broker.stop().await;
}

#[tokio::test]
async fn anonymous_clients_are_accepted_on_the_default_loopback_listener() {
    let broker = TestBroker::start_default().await;
    let addr = broker.addr();
    TestClient::connect(addr, connect_v5(&unique_id("lo")))
        .await
        .disconnect()
        .await;
    // Without a password file a user name proves nothing, and is not checked.
    let c = with_login(connect_v311(&unique_id("lo")), "anyone", "anything");
    TestClient::connect(addr, c).await.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn a_non_loopback_listener_refuses_anonymous_clients_unless_told_otherwise() {
    let broker = TestBroker::start(|c| {
        c.listeners[0].bind = SocketAddr::from(([0, 0, 0, 0], 0));
    })
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], broker.addr().port()));
    assert_eq!(
        ack(addr, connect_v5(&unique_id("any"))).await,
        ConnAckReason::NotAuthorized
    );
    // A user name without a password file does not make a client less anonymous.
    let c = with_login(connect_v311(&unique_id("any")), "alice", "wonderland");
    assert_eq!(ack(addr, c).await, ConnAckReason::NotAuthorized);
    broker.stop().await;

    let broker = TestBroker::start(|c| {
        c.listeners[0].bind = SocketAddr::from(([0, 0, 0, 0], 0));
        c.listeners[0].allow_anonymous = Some(true);
    })
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], broker.addr().port()));
    TestClient::connect(addr, connect_v5(&unique_id("any")))
        .await
        .disconnect()
        .await;
    broker.stop().await;

    // And a loopback listener can be closed to them.
    let broker = TestBroker::start(|c| c.listeners[0].allow_anonymous = Some(false)).await;
    assert_eq!(
        ack(broker.addr(), connect_v5(&unique_id("lo"))).await,
        ConnAckReason::NotAuthorized
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_broken_password_file_stops_the_broker_naming_the_line() {
    // A broken file never means "allow": `Server::bind` fails and says where.
    let good = pbkdf2_line("alice", "wonderland", b"0123456789ab", 101);
    let file = PasswordFile::with_text("broken", &format!("# users\n{good}\nbob:hunter2\n"));
    let mut config = test_support::vane_config::Config {
        listeners: vec![test_support::vane_config::ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Default::default()
        }],
        ..Default::default()
    };
    config.store.durability = test_support::vane_config::Durability::Memory;
    config.auth.password_file = file.path();
    let error = match vane_server::Server::bind(config.clone()).await {
        Ok(_) => panic!("the broker started with a broken password file"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("line 3"), "{error}");
    assert!(error.contains(&file.path()), "{error}");
    assert!(vane_server::auth::check(&config.auth).is_err());

    config.auth.password_file = format!("{}.missing", file.path());
    let error = match vane_server::Server::bind(config).await {
        Ok(_) => panic!("the broker started without its password file"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains(".missing"), "{error}");
}

#[tokio::test]
async fn concurrent_password_checks_all_complete() {
    // Checks take turns on a bounded number of threads; none is lost or refused.
    let (broker, _file) = password_broker("storm").await;
    let addr = broker.addr();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (user, password) = if i % 2 == 0 {
            ("bob", "hunter2")
        } else {
            ("bob", "wrong")
        };
        let c = with_login(connect_v311(&unique_id("storm")), user, password);
        tasks.push(tokio::spawn(async move { (i, ack(addr, c).await) }));
    }
    for task in tasks {
        let (i, reason) = task.await.expect("task");
        let expected = if i % 2 == 0 {
            ConnAckReason::Success
        } else {
            ConnAckReason::BadUserNameOrPassword
        };
        assert_eq!(reason, expected, "client {i}");
    }
    broker.stop().await;
}
