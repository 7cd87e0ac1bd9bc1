//! MQTT 5.0 enhanced authentication (section 4.12) with SCRAM-SHA-256, over raw packets: the
//! exchange at CONNECT, its refusals, re-authentication (section 4.12.1), the CONNECT timeout
//! that bounds it, and the credentials file at start-up. The client side of SCRAM is
//! `test_support::enhanced_auth::ScramClient`, written apart from the broker's `vane-auth`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use test_support::enhanced_auth::{
    auth, connect_with_auth, expect_auth, ScramClient, SCRAM_SHA_256,
};
use test_support::vane_proto::{
    AuthReason, ConnAck, ConnAckReason, DisconnectReason, Packet, ProtocolVersion,
};
use test_support::*;
use vane_auth::MemoryCredentialStore;

const ALICE: (&str, &str) = ("alice", "correct horse battery staple");
const BOB: (&str, &str) = ("bob", "hunter2");

/// A credentials file in a fresh temp directory, removed when dropped.
struct CredentialsFile {
    dir: PathBuf,
    path: PathBuf,
}

impl CredentialsFile {
    /// A file holding `users` (name, password) at `iterations`, written with `format_store`.
    fn with_users(name: &str, users: &[(&str, &str)], iterations: u32) -> CredentialsFile {
        let mut store = MemoryCredentialStore::new();
        for (user, password) in users {
            store
                .insert_password(*user, password, iterations)
                .expect("valid password");
        }
        let text = vane_auth::scram::file::format_store(&store).expect("storable users");
        CredentialsFile::with_text(name, &text)
    }

    fn with_text(name: &str, text: &str) -> CredentialsFile {
        let dir = std::env::temp_dir().join(unique_id(&format!("vane-enhanced-auth-{name}")));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let path = dir.join("users.scram");
        std::fs::write(&path, text).expect("write the credentials file");
        CredentialsFile { dir, path }
    }

    fn path(&self) -> String {
        self.path.to_str().expect("UTF-8 temp path").to_owned()
    }
}

impl Drop for CredentialsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A broker offering SCRAM-SHA-256 to alice and bob. The file must outlive the start only,
/// but is kept with the broker for simplicity.
async fn scram_broker(name: &str) -> (TestBroker, CredentialsFile) {
    let file = CredentialsFile::with_users(name, &[ALICE, BOB], 4096);
    let path = file.path();
    let broker = TestBroker::start(|c| c.auth.scram_credentials = path).await;
    (broker, file)
}

/// Opens a connection and sends CONNECT with SCRAM-SHA-256 and the client-first-message.
async fn send_client_first(addr: SocketAddr, scram: &ScramClient) -> TestClient {
    let mut c = TestClient::open(addr, ProtocolVersion::V5).await;
    let connect = connect_with_auth(
        &unique_id("scram"),
        SCRAM_SHA_256,
        Some(&scram.client_first()),
    );
    c.send(Packet::Connect(Box::new(connect))).await;
    c
}

/// Expects AUTH 0x18 with the method [MQTT-4.12.0-2], [MQTT-4.12.0-5]; returns its data.
async fn expect_continue(c: &mut TestClient) -> Bytes {
    let (reason, method, data) = expect_auth(c.recv().await);
    assert_eq!(reason, AuthReason::ContinueAuthentication);
    assert_eq!(method.as_deref(), Some(SCRAM_SHA_256));
    data.expect("AUTH 0x18 carries the server's SCRAM message")
}

async fn expect_connack(c: &mut TestClient) -> ConnAck {
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => ack,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// The whole exchange at CONNECT up to the CONNACK, whatever its reason code.
async fn scram_connect(addr: SocketAddr, user: &str, password: &str) -> (TestClient, ConnAck) {
    let mut scram = ScramClient::new(user, password);
    let mut c = send_client_first(addr, &scram).await;
    let server_first = expect_continue(&mut c).await;
    let client_final = scram
        .client_final(&server_first)
        .expect("valid server-first");
    c.send(auth(
        AuthReason::ContinueAuthentication,
        SCRAM_SHA_256,
        Some(&client_final),
    ))
    .await;
    let ack = expect_connack(&mut c).await;
    if ack.reason == ConnAckReason::Success {
        // [MQTT-4.12.0-5] a successful CONNACK names the method; SCRAM's server-final-message
        // proves the server knows the password's keys.
        assert_eq!(
            ack.properties.authentication_method.as_deref(),
            Some(SCRAM_SHA_256)
        );
        let server_final = ack
            .properties
            .authentication_data
            .as_ref()
            .expect("CONNACK carries the server-final-message");
        scram
            .verify_server_final(server_final)
            .expect("the server's signature verifies");
    }
    (c, ack)
}

/// A connection authenticated as `user`.
async fn authenticated(addr: SocketAddr, (user, password): (&str, &str)) -> TestClient {
    let (c, ack) = scram_connect(addr, user, password).await;
    assert_eq!(ack.reason, ConnAckReason::Success, "{ack:?}");
    c
}

/// The client subscribes to a topic of its own and publishes to it at QoS 1.
async fn assert_usable(c: &mut TestClient, packet_id: u16) {
    let topic = unique_id("enhanced-auth/usable");
    c.send(subscribe(packet_id, &topic, 1)).await;
    c.expect(suback(packet_id, &[1])).await;
    c.send(publish(&topic, 1, packet_id + 1, "hello")).await;
    let mut puback = false;
    let mut message = false;
    while !(puback && message) {
        match c.recv().await {
            Some(Packet::PubAck(a)) if a.packet_id == pid(packet_id + 1) => puback = true,
            Some(Packet::Publish(p)) if &p.payload[..] == b"hello" => {
                message = true;
                let id = p.packet_id.expect("QoS 1");
                c.send(Packet::PubAck(test_support::vane_proto::PubAck::new(id)))
                    .await;
            }
            other => panic!("expected PUBACK and the message, got {other:?}"),
        }
    }
}

/// Runs a whole re-authentication (section 4.12.1) up to the broker's last answer.
async fn reauthenticate(c: &mut TestClient, user: &str, password: &str) -> Option<Packet> {
    let mut scram = ScramClient::new(user, password);
    c.send(auth(
        AuthReason::ReAuthenticate,
        SCRAM_SHA_256,
        Some(&scram.client_first()),
    ))
    .await;
    let server_first = expect_continue(c).await;
    let client_final = scram
        .client_final(&server_first)
        .expect("valid server-first");
    c.send(auth(
        AuthReason::ContinueAuthentication,
        SCRAM_SHA_256,
        Some(&client_final),
    ))
    .await;
    let answer = c.recv().await;
    if let Some(Packet::Auth(a)) = &answer {
        if a.reason == AuthReason::Success {
            assert_eq!(
                a.properties.authentication_method.as_deref(),
                Some(SCRAM_SHA_256)
            );
            let data = a
                .properties
                .authentication_data
                .as_ref()
                .expect("AUTH 0x00 carries the server-final-message");
            scram
                .verify_server_final(data)
                .expect("the server's signature verifies");
        }
    }
    answer
}

/// The salt and iteration count of a server-first-message.
fn salt_and_iterations(server_first: &[u8]) -> (String, String) {
    let text = std::str::from_utf8(server_first).expect("UTF-8");
    let mut parts = text.split(',').skip(1);
    let salt = parts.next().expect("salt").to_owned();
    let iterations = parts.next().expect("iterations").to_owned();
    (salt, iterations)
}

// ---------------------------------------------------------------------------------------------
// The exchange at CONNECT
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn scram_exchange_at_connect_succeeds_and_the_connection_works() {
    // Section 4.12: CONNECT with the method and the client-first-message, [MQTT-4.12.0-2] AUTH
    // 0x18 with the server-first-message, [MQTT-4.12.0-3] AUTH 0x18 with the
    // client-final-message, then CONNACK 0x00 with [MQTT-4.12.0-5] the method and the
    // server-final-message, which the client verifies. Publish and subscribe then work.
    let (broker, _file) = scram_broker("success").await;
    let mut alice = authenticated(broker.addr(), ALICE).await;
    assert_usable(&mut alice, 1).await;
    // Another authenticated user receives alice's messages.
    let mut bob = authenticated(broker.addr(), BOB).await;
    bob.send(subscribe(1, "enhanced-auth/shared", 0)).await;
    bob.expect(suback(1, &[0])).await;
    alice
        .send(publish("enhanced-auth/shared", 0, 0, "from alice"))
        .await;
    bob.expect(publish("enhanced-auth/shared", 0, 0, "from alice"))
        .await;
    alice.disconnect().await;
    bob.disconnect().await;
    // Clients without enhanced authentication are still served.
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn wrong_password_gets_connack_0x86() {
    // [MQTT-4.12.0-4] the server rejects the authentication with CONNACK 0x86 (Bad User Name
    // or Password) and closes the connection.
    let (broker, _file) = scram_broker("wrong-password").await;
    let (mut c, ack) = scram_connect(broker.addr(), ALICE.0, "not the password").await;
    assert_eq!(ack.reason, ConnAckReason::BadUserNameOrPassword);
    assert_eq!(ack.properties.authentication_data, None);
    assert_eq!(c.expect_closed().await, None);
}

#[tokio::test]
async fn unknown_user_fails_after_a_normal_looking_exchange() {
    // [MQTT-4.12.0-4] an unknown user is refused like a wrong password, after an AUTH 0x18
    // that looks like a known user's (a salt of the same length), so that user names cannot
    // be probed.
    let (broker, _file) = scram_broker("unknown-user").await;
    let mut scram = ScramClient::new("mallory", "guess");
    let mut c = send_client_first(broker.addr(), &scram).await;
    let server_first = expect_continue(&mut c).await;
    let (salt, iterations) = salt_and_iterations(&server_first);
    let known = ScramClient::new(ALICE.0, ALICE.1);
    let mut k = send_client_first(broker.addr(), &known).await;
    let (known_salt, known_iterations) = salt_and_iterations(&expect_continue(&mut k).await);
    assert_eq!(salt.len(), known_salt.len(), "{salt} vs {known_salt}");
    assert_eq!(iterations, known_iterations);

    let client_final = scram
        .client_final(&server_first)
        .expect("valid server-first");
    c.send(auth(
        AuthReason::ContinueAuthentication,
        SCRAM_SHA_256,
        Some(&client_final),
    ))
    .await;
    let ack = expect_connack(&mut c).await;
    assert!(
        matches!(
            ack.reason,
            ConnAckReason::BadUserNameOrPassword | ConnAckReason::NotAuthorized
        ),
        "{ack:?}"
    );
    assert_eq!(c.expect_closed().await, None);
}

#[tokio::test]
async fn unknown_user_gets_a_stable_salt() {
    // Section 4.12 with RFC 5802: a known user's salt never changes, so an unknown user's must
    // not either, or asking twice would tell them apart.
    let (broker, _file) = scram_broker("stable-salt").await;
    for user in ["mallory", ALICE.0] {
        let mut salts = Vec::new();
        for _ in 0..2 {
            let scram = ScramClient::new(user, "guess");
            let mut c = send_client_first(broker.addr(), &scram).await;
            salts.push(salt_and_iterations(&expect_continue(&mut c).await));
        }
        assert_eq!(salts[0], salts[1], "{user}");
    }
}

#[tokio::test]
async fn unknown_user_gets_the_iteration_count_of_known_users() {
    // Section 4.12 with RFC 5802 section 9: with credentials at `vane passwd`'s default of
    // 10000 iterations, the server-first-message of an unknown user must look the same.
    let file = CredentialsFile::with_users("fake-iterations", &[ALICE, BOB], 10_000);
    let path = file.path();
    let broker = TestBroker::start(|c| c.auth.scram_credentials = path).await;
    let mut iterations = Vec::new();
    for user in [ALICE.0, "mallory"] {
        let scram = ScramClient::new(user, "guess");
        let mut c = send_client_first(broker.addr(), &scram).await;
        iterations.push(salt_and_iterations(&expect_continue(&mut c).await).1);
    }
    assert_eq!(iterations[0], "i=10000");
    assert_eq!(
        iterations[1], iterations[0],
        "unknown user's iteration count"
    );
}

#[tokio::test]
async fn unknown_method_gets_connack_0x8c() {
    // [MQTT-4.12.0-1] a method the server does not support: CONNACK 0x8C (Bad authentication
    // method), then the close.
    let (broker, _file) = scram_broker("unknown-method").await;
    for method in ["SCRAM-SHA-1", "scram-sha-256", "SCRAM-SHA-256-PLUS"] {
        let connect = connect_with_auth(&unique_id("method"), method, Some(b"n,,n=alice,r=abc"));
        let (mut c, ack) = TestClient::connect_with_ack(broker.addr(), connect).await;
        assert_eq!(
            ack.reason,
            ConnAckReason::BadAuthenticationMethod,
            "{method}"
        );
        assert_eq!(ack.properties.authentication_method, None);
        assert_eq!(c.expect_closed().await, None);
    }
}

#[tokio::test]
async fn no_credentials_configured_means_no_method() {
    // [MQTT-4.12.0-1] without `auth.scram_credentials` no method is offered: CONNACK 0x8C.
    let broker = TestBroker::start_default().await;
    let scram = ScramClient::new(ALICE.0, ALICE.1);
    let connect = connect_with_auth(
        &unique_id("nocreds"),
        SCRAM_SHA_256,
        Some(&scram.client_first()),
    );
    let (mut c, ack) = TestClient::connect_with_ack(broker.addr(), connect).await;
    assert_eq!(ack.reason, ConnAckReason::BadAuthenticationMethod);
    assert_eq!(c.expect_closed().await, None);
}

#[tokio::test]
async fn another_packet_during_the_exchange_gets_connack_0x82() {
    // [MQTT-3.1.2-30] until CONNACK the client sends only AUTH or DISCONNECT, and
    // [MQTT-4.12.0-3] answers AUTH 0x18 with AUTH 0x18: anything else is a Protocol Error.
    let (broker, _file) = scram_broker("other-packet").await;
    let others = [
        publish("enhanced-auth/early", 0, 0, "too early"),
        pingreq(),
        subscribe(1, "enhanced-auth/#", 0),
        // AUTH 0x19 (Re-authenticate) before the CONNACK.
        auth(
            AuthReason::ReAuthenticate,
            SCRAM_SHA_256,
            Some(b"n,,n=alice,r=x"),
        ),
        // AUTH 0x00 from the client.
        auth(AuthReason::Success, SCRAM_SHA_256, None),
    ];
    for other in others {
        let scram = ScramClient::new(ALICE.0, ALICE.1);
        let mut c = send_client_first(broker.addr(), &scram).await;
        expect_continue(&mut c).await;
        c.send(other.clone()).await;
        let ack = expect_connack(&mut c).await;
        assert_eq!(ack.reason, ConnAckReason::ProtocolError, "after {other:?}");
        assert_eq!(c.expect_closed().await, None, "after {other:?}");
    }
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn auth_with_another_method_during_the_exchange_gets_connack_0x82() {
    // [MQTT-4.12.0-5] every AUTH carries the CONNECT's method; another one (or none) is a
    // Protocol Error.
    let (broker, _file) = scram_broker("other-method").await;
    for method in [Some("SCRAM-SHA-1"), None] {
        let mut scram = ScramClient::new(ALICE.0, ALICE.1);
        let mut c = send_client_first(broker.addr(), &scram).await;
        let server_first = expect_continue(&mut c).await;
        let client_final = scram
            .client_final(&server_first)
            .expect("valid server-first");
        let mut packet = auth(
            AuthReason::ContinueAuthentication,
            SCRAM_SHA_256,
            Some(&client_final),
        );
        if let Packet::Auth(a) = &mut packet {
            a.properties.authentication_method = method.map(Into::into);
        }
        c.send(packet).await;
        let ack = expect_connack(&mut c).await;
        assert_eq!(ack.reason, ConnAckReason::ProtocolError, "{method:?}");
        assert_eq!(c.expect_closed().await, None);
    }
}

#[tokio::test]
async fn disconnect_during_the_exchange_closes_the_connection() {
    // [MQTT-3.1.2-30] allows DISCONNECT before the CONNACK; the exchange ends and so does the
    // connection. (Whether the broker answers with a CONNACK first is not checked.)
    let (broker, _file) = scram_broker("disconnect").await;
    let scram = ScramClient::new(ALICE.0, ALICE.1);
    let mut c = send_client_first(broker.addr(), &scram).await;
    expect_continue(&mut c).await;
    c.send(disconnect()).await;
    loop {
        match c.recv().await {
            None => break,
            Some(Packet::ConnAck(ack)) => assert_ne!(ack.reason, ConnAckReason::Success),
            Some(other) => panic!("expected the close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn disconnect_during_the_exchange_is_not_a_protocol_error() {
    // [MQTT-3.1.2-30] a client that named a method may send AUTH or DISCONNECT before the
    // CONNACK; DISCONNECT is no Protocol Error, and the server just closes (section 3.14.4).
    let (broker, _file) = scram_broker("disconnect-strict").await;
    let scram = ScramClient::new(ALICE.0, ALICE.1);
    let mut c = send_client_first(broker.addr(), &scram).await;
    expect_continue(&mut c).await;
    c.send(disconnect()).await;
    assert_eq!(c.recv().await, None, "the close, without a CONNACK");
}

#[tokio::test]
async fn exchange_is_bounded_by_the_connect_timeout() {
    // Section 4.12: the exchange is part of connecting, so `mqtt.connect_timeout` bounds it:
    // a client that goes silent after the server's AUTH 0x18 is closed once it has passed.
    let file = CredentialsFile::with_users("timeout", &[ALICE], 4096);
    let path = file.path();
    let broker = TestBroker::start(|c| {
        c.auth.scram_credentials = path;
        c.mqtt.connect_timeout = Duration::from_secs(1);
    })
    .await;
    let scram = ScramClient::new(ALICE.0, ALICE.1);
    let started = Instant::now();
    let mut c = send_client_first(broker.addr(), &scram).await;
    expect_continue(&mut c).await;
    c.set_timeout(Duration::from_secs(4));
    assert_eq!(c.expect_closed().await, None);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the timeout"
    );
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn connect_without_a_method_gets_no_auth_and_may_not_send_auth() {
    // [MQTT-4.12.0-6] without an Authentication Method in CONNECT the server sends no AUTH and
    // no method in CONNACK, even when it offers SCRAM; [MQTT-4.12.0-7] the client may then
    // not send AUTH: DISCONNECT 0x82 (Protocol Error).
    let (broker, _file) = scram_broker("no-method").await;
    let (mut c, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v5(&unique_id("plain"))).await;
    assert_eq!(ack.reason, ConnAckReason::Success);
    assert_eq!(ack.properties.authentication_method, None);
    assert_eq!(ack.properties.authentication_data, None);
    let scram = ScramClient::new(ALICE.0, ALICE.1);
    c.send(auth(
        AuthReason::ReAuthenticate,
        SCRAM_SHA_256,
        Some(&scram.client_first()),
    ))
    .await;
    c.expect_closed_with(DisconnectReason::ProtocolError).await;
}

#[tokio::test]
async fn authentication_data_without_a_method_is_refused() {
    // Section 3.1.2.11.10: Authentication Data without an Authentication Method is a Protocol
    // Error; the connection is refused (CONNACK 0x82 if anything) and closed.
    let (broker, _file) = scram_broker("data-without-method").await;
    let mut connect = connect_v5(&unique_id("data-only"));
    connect.properties.authentication_data = Some(Bytes::from_static(b"n,,n=alice,r=abc"));
    let mut c = TestClient::open(broker.addr(), ProtocolVersion::V5).await;
    c.send(Packet::Connect(Box::new(connect))).await;
    match c.recv().await {
        None => {}
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.reason, ConnAckReason::ProtocolError);
            assert_eq!(c.expect_closed().await, None);
        }
        Some(other) => panic!("expected a refusal, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Re-authentication (section 4.12.1)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reauthentication_succeeds_and_the_connection_stays_usable() {
    // [MQTT-4.12.1-1] AUTH 0x19 with the CONNECT's method and a new client-first-message,
    // AUTH 0x18 both ways, then AUTH 0x00 with the server-final-message. Section 4.12.1:
    // other packets keep flowing meanwhile, and re-authentication can be repeated.
    let (broker, _file) = scram_broker("reauth").await;
    let mut c = authenticated(broker.addr(), ALICE).await;
    let answer = reauthenticate(&mut c, ALICE.0, ALICE.1).await;
    let (reason, method, data) = expect_auth(answer);
    assert_eq!(reason, AuthReason::Success);
    assert_eq!(method.as_deref(), Some(SCRAM_SHA_256));
    assert!(data.is_some());
    assert_usable(&mut c, 1).await;

    // Packets in the middle of a re-authentication are served under the old authentication.
    let mut scram = ScramClient::new(ALICE.0, ALICE.1);
    c.send(auth(
        AuthReason::ReAuthenticate,
        SCRAM_SHA_256,
        Some(&scram.client_first()),
    ))
    .await;
    let server_first = expect_continue(&mut c).await;
    c.send(publish("enhanced-auth/meanwhile", 1, 10, "meanwhile"))
        .await;
    match c.recv().await {
        // 0x10 No matching subscribers is a success too.
        Some(Packet::PubAck(a)) if a.packet_id == pid(10) && a.reason.as_u8() < 0x80 => {}
        other => panic!("expected PUBACK 10, got {other:?}"),
    }
    let client_final = scram
        .client_final(&server_first)
        .expect("valid server-first");
    c.send(auth(
        AuthReason::ContinueAuthentication,
        SCRAM_SHA_256,
        Some(&client_final),
    ))
    .await;
    let (reason, _, data) = expect_auth(c.recv().await);
    assert_eq!(reason, AuthReason::Success);
    scram
        .verify_server_final(&data.expect("server-final-message"))
        .expect("the server's signature verifies");
    assert_usable(&mut c, 20).await;
    c.disconnect().await;
}

#[tokio::test]
async fn reauthentication_with_a_wrong_password_disconnects_0x87() {
    // [MQTT-4.12.1-2] a failed re-authentication: DISCONNECT 0x87 (Not authorized; DISCONNECT
    // has no 0x86), then the close.
    let (broker, _file) = scram_broker("reauth-wrong").await;
    let mut c = authenticated(broker.addr(), ALICE).await;
    let answer = reauthenticate(&mut c, ALICE.0, "not the password").await;
    match answer {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, DisconnectReason::NotAuthorized),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    assert_eq!(c.expect_closed().await, None);
}

#[tokio::test]
async fn reauthentication_as_another_user_disconnects_0x87() {
    // [MQTT-4.12.1-2] re-authentication proves the same identity again: bob's valid
    // credentials on alice's connection fail with DISCONNECT 0x87.
    let (broker, _file) = scram_broker("reauth-other").await;
    let mut c = authenticated(broker.addr(), ALICE).await;
    let answer = reauthenticate(&mut c, BOB.0, BOB.1).await;
    match answer {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, DisconnectReason::NotAuthorized),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    assert_eq!(c.expect_closed().await, None);
}

#[tokio::test]
async fn reauthentication_with_another_method_disconnects_0x82() {
    // [MQTT-4.12.1-1] re-authentication must use the CONNECT's method: DISCONNECT 0x82.
    let (broker, _file) = scram_broker("reauth-method").await;
    let mut c = authenticated(broker.addr(), ALICE).await;
    c.send(auth(
        AuthReason::ReAuthenticate,
        "SCRAM-SHA-1",
        Some(b"n,,n=alice,r=x"),
    ))
    .await;
    c.expect_closed_with(DisconnectReason::ProtocolError).await;
}

#[tokio::test]
async fn auth_continue_without_reauthentication_disconnects_0x82() {
    // Section 4.12.1: AUTH 0x18 only answers the server's AUTH 0x18 [MQTT-4.12.0-3]; with no
    // re-authentication under way it is a Protocol Error, and so is AUTH 0x00 from a client.
    let (broker, _file) = scram_broker("stray-continue").await;
    for reason in [AuthReason::ContinueAuthentication, AuthReason::Success] {
        let mut c = authenticated(broker.addr(), ALICE).await;
        c.send(auth(reason, SCRAM_SHA_256, Some(b"c=biws,r=x,p=AAAA")))
            .await;
        c.expect_closed_with(DisconnectReason::ProtocolError).await;
    }
    // Nor after a completed re-authentication.
    let mut c = authenticated(broker.addr(), ALICE).await;
    let (reason, _, _) = expect_auth(reauthenticate(&mut c, ALICE.0, ALICE.1).await);
    assert_eq!(reason, AuthReason::Success);
    c.send(auth(
        AuthReason::ContinueAuthentication,
        SCRAM_SHA_256,
        Some(b"c=biws,r=x,p=AAAA"),
    ))
    .await;
    c.expect_closed_with(DisconnectReason::ProtocolError).await;
}

// ---------------------------------------------------------------------------------------------
// The credentials file
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_file_written_by_vane_passwd_authenticates() {
    // `vane passwd --scram` at its default iteration count, then the whole exchange.
    let file = CredentialsFile::with_text("passwd", "# written by vane passwd\n");
    for (user, password) in [ALICE, BOB] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vane"))
            .args([
                "passwd",
                "--scram",
                &file.path(),
                user,
                "--password",
                password,
            ])
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run vane passwd");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = file.path();
    let broker = TestBroker::start(|c| c.auth.scram_credentials = path).await;
    let mut alice = authenticated(broker.addr(), ALICE).await;
    assert_usable(&mut alice, 1).await;
    let (_, ack) = scram_connect(broker.addr(), BOB.0, ALICE.1).await;
    assert_eq!(ack.reason, ConnAckReason::BadUserNameOrPassword);
}

#[tokio::test]
async fn an_unparsable_credentials_file_stops_the_broker_naming_the_line() {
    // A broken credentials file never means "allow": `Server::bind` fails and says where.
    let good = CredentialsFile::with_users("good-line", &[ALICE], 4096);
    let line = std::fs::read_to_string(&good.path).expect("read");
    let file = CredentialsFile::with_text(
        "bad-line",
        &format!("# users\n{line}bob:SCRAM-SHA-256:4096:not base64!:AAAA:AAAA\n"),
    );
    let mut config = test_support::vane_config::Config {
        listeners: vec![test_support::vane_config::ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Default::default()
        }],
        ..Default::default()
    };
    config.auth.scram_credentials = file.path();
    let error = match vane_server::Server::bind(config.clone()).await {
        Ok(_) => panic!("the broker started with a broken credentials file"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("line 3"), "{error}");
    assert!(error.contains(&file.path()), "{error}");

    // A missing file is as fatal, naming the file.
    config.auth.scram_credentials = format!("{}.missing", file.path());
    let error = match vane_server::Server::bind(config).await {
        Ok(_) => panic!("the broker started without its credentials file"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains(".missing"), "{error}");
}
