//! Topic authorization with `[acl] file` against a real broker: a matrix of users x topics x
//! publish/subscribe x MQTT 3.1.1/5.0 (with `%u`/`%c`, wildcards, `$SYS`, shared
//! subscriptions and P2P topics), the per-delivery check (retained, queued and after a
//! reload), password file reload, and files that cannot be parsed.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use test_support::process::{ServeOptions, TempDir, VaneProcess};
use test_support::vane_proto::{
    ByteString, Connect, DisconnectReason, Packet, ProtocolVersion, PubAckReason, PubRecReason,
};
use test_support::*;

/// Authorizes each client of the matrix; `spy` sees everything that is published (outside
/// `$` topics), so that a test can tell a dropped publish from a delivered one.
const ACL: &str = "\
# the spy reads everything, to see what was published
allow user spy subscribe #
# a narrower deny before the allows: filtered per delivery, not at subscribe
deny  any subscribe sensors/+/secret
allow user alice publish sensors/alice/#
allow user dash subscribe sensors/#
allow any subscribe sensors/+/temp
allow authenticated all users/%u/#
allow any all clients/%c/#
allow user admin subscribe $SYS/#
allow any publish cmd/p2p/#
allow any subscribe cmd/p2p/%c
allow any publish alerts/p2p/#
allow anonymous subscribe public/#
allow any publish marker/#
allow any subscribe marker/#
";

const USERS: [(&str, &str); 5] = [
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("dash", "dash-pw"),
    ("admin", "admin-pw"),
    ("spy", "spy-pw"),
];

/// The ACL and password files in a temp directory.
struct Files {
    dir: TempDir,
}

impl Files {
    fn new(name: &str, acl: &str, users: &[(&str, &str)]) -> Files {
        let dir = TempDir::new(&format!("vane-acl-{name}"));
        let files = Files { dir };
        files.write_acl(acl);
        files.write_users(users);
        files
    }

    fn acl(&self) -> PathBuf {
        self.dir.path().join("acl")
    }

    fn passwd(&self) -> PathBuf {
        self.dir.path().join("passwd")
    }

    fn write_acl(&self, text: &str) {
        std::fs::write(self.acl(), text).expect("write the ACL");
    }

    fn write_users(&self, users: &[(&str, &str)]) {
        let mut text = String::new();
        for (user, password) in users {
            // The minimum iteration count: the tests check authorization, not hashing cost.
            let hash = vane_auth::PasswordHash::new(password, 1000).expect("hash");
            text += &vane_auth::password::format_line(user, &hash).expect("line");
            text.push('\n');
        }
        std::fs::write(self.passwd(), text).expect("write the password file");
    }
}

async fn acl_broker(files: &Files) -> TestBroker {
    let acl = files.acl().display().to_string();
    let passwd = files.passwd().display().to_string();
    TestBroker::start(|c| {
        c.acl.file = acl;
        c.auth.password_file = passwd;
        c.listeners[0].allow_anonymous = Some(true);
    })
    .await
}

fn login(mut connect: Connect, user: &str) -> Connect {
    let password = USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map_or("unknown", |(_, p)| p);
    connect.username = Some(ByteString::from(user));
    connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    connect
}

fn connect_as(version: ProtocolVersion, user: Option<&str>, client_id: &str) -> Connect {
    let connect = match version {
        ProtocolVersion::V5 => connect_v5(client_id),
        _ => connect_v311(client_id),
    };
    match user {
        Some(u) => login(connect, u),
        None => connect,
    }
}

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V3_1_1, ProtocolVersion::V5];

/// The SUBACK code for a refusal: 0x87 Not authorized (MQTT 5.0), 0x80 Failure (3.1.1).
fn refused(version: ProtocolVersion) -> u8 {
    if version.is_v5() {
        0x87
    } else {
        0x80
    }
}

/// A connected spy subscribed to `#` and `marker/#`... (`#` covers it).
async fn spy(addr: std::net::SocketAddr) -> TestClient {
    let mut spy = TestClient::connect(
        addr,
        connect_as(ProtocolVersion::V5, Some("spy"), &unique_id("spy")),
    )
    .await;
    spy.send(subscribe(1, "#", 1)).await;
    spy.expect(suback(1, &[1])).await;
    spy
}

/// Expects the next PUBLISH on `client` to be on `topic`.
async fn expect_topic(client: &mut TestClient, topic: &str) {
    let p = client.recv_publish().await;
    assert_eq!(p.topic.as_ref() as &str, topic, "next delivery");
    if let Some(id) = p.packet_id {
        client.send(puback(id.get())).await;
    }
}

/// Publishes at QoS 1 and returns the PUBACK reason (always success for MQTT 3.1.1).
async fn publish_q1(client: &mut TestClient, topic: &str, id: u16) -> PubAckReason {
    client.send(publish(topic, 1, id, b"x")).await;
    match client.recv().await {
        Some(Packet::PubAck(a)) => {
            assert_eq!(a.packet_id, pid(id));
            a.reason
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// Expects a PUBACK for `id` that is not a refusal (MQTT 5.0 may say 0x10 No matching
/// subscribers).
async fn acked(client: &mut TestClient, id: u16) {
    match client.recv().await {
        Some(Packet::PubAck(a)) => {
            assert_eq!(a.packet_id, pid(id));
            assert!(!a.reason.is_error(), "{a:?}");
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

// [MQTT-3.3.5-2] / MQTT 5.0 section 3.4.2.1: a publish the client is not authorized for is
// acknowledged with 0x87 (MQTT 5.0) or a plain PUBACK (3.1.1, documented choice) and not
// forwarded; the spy sees only the allowed ones, in order.
#[tokio::test]
async fn publish_matrix_v311_and_v5() {
    let files = Files::new("publish", ACL, &USERS);
    let broker = acl_broker(&files).await;
    let addr = broker.addr();
    // (user, client id, topic, allowed)
    let cases: &[(Option<&str>, &str, &str, bool)] = &[
        (Some("alice"), "a1", "sensors/alice/temp", true),
        (Some("alice"), "a1", "sensors/alice", true),
        (Some("alice"), "a1", "sensors/bob/temp", false),
        (Some("bob"), "b1", "sensors/bob/temp", false),
        (Some("dash"), "d1", "sensors/alice/temp", false),
        // %u: own subtree only.
        (Some("bob"), "b1", "users/bob/x", true),
        (Some("bob"), "b1", "users/alice/x", false),
        (None, "bob", "users/bob/x", false),
        // %c: own client subtree, anonymous or not.
        (None, "anon-c", "clients/anon-c/x", true),
        (Some("bob"), "b1", "clients/b1/y", true),
        (Some("bob"), "b1", "clients/b2/y", false),
        // Nobody publishes to $SYS, whatever the rules.
        (Some("admin"), "adm", "$SYS/broker/uptime", false),
        // Default deny.
        (Some("admin"), "adm", "other/topic", false),
        (None, "anon-c", "public/x", false),
    ];
    for version in VERSIONS {
        let mut spy = spy(addr).await;
        for (i, (user, client_id, topic, allowed)) in cases.iter().enumerate() {
            let mut c = TestClient::connect(addr, connect_as(version, *user, client_id)).await;
            let reason = publish_q1(&mut c, topic, 1).await;
            let marker = format!("marker/{i}");
            assert!(!publish_q1(&mut c, &marker, 2).await.is_error());
            if version.is_v5() {
                assert_eq!(
                    reason == PubAckReason::NotAuthorized,
                    !allowed,
                    "{user:?} {topic}: {reason:?}"
                );
            } else {
                assert!(!reason.is_error(), "3.1.1 gets a plain PUBACK");
            }
            if *allowed && !topic.starts_with('$') {
                expect_topic(&mut spy, topic).await;
            }
            // A refused publish never reached the spy: the marker comes next.
            expect_topic(&mut spy, &marker).await;
            c.disconnect().await;
        }
        spy.disconnect().await;
    }
    broker.stop().await;
}

// QoS 0 and QoS 2 publishes that are refused: QoS 0 dropped silently, QoS 2 PUBREC 0x87
// (MQTT 5.0) and nothing forwarded.
#[tokio::test]
async fn refused_qos0_is_dropped_and_qos2_gets_pubrec_0x87() {
    let files = Files::new("qos", ACL, &USERS);
    let broker = acl_broker(&files).await;
    let addr = broker.addr();
    let mut spy = spy(addr).await;
    let mut bob = TestClient::connect(
        addr,
        connect_as(ProtocolVersion::V5, Some("bob"), &unique_id("b")),
    )
    .await;
    bob.send(publish("sensors/bob/temp", 0, 0, b"q0")).await;
    bob.send(publish("sensors/bob/temp", 2, 7, b"q2")).await;
    match bob.recv().await {
        Some(Packet::PubRec(r)) => assert_eq!(r.reason, PubRecReason::NotAuthorized),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // The connection goes on, and a QoS 0 allowed publish gets through after the refused ones.
    bob.send(publish("users/bob/ok", 0, 0, b"ok")).await;
    expect_topic(&mut spy, "users/bob/ok").await;
    bob.disconnect().await;
    spy.disconnect().await;
    broker.stop().await;
}

// SUBACK per filter: granted QoS, 0x87 (MQTT 5.0) or 0x80 (3.1.1), for plain filters,
// wildcards, %u/%c, $SYS and shared subscriptions.
#[tokio::test]
async fn subscribe_matrix_v311_and_v5() {
    let files = Files::new("subscribe", ACL, &USERS);
    let broker = acl_broker(&files).await;
    let addr = broker.addr();
    // (user, client id, filter, granted)
    let cases: &[(Option<&str>, &str, &str, bool)] = &[
        (Some("dash"), "d1", "sensors/#", true),
        (Some("dash"), "d1", "sensors/+/humidity", true),
        (Some("dash"), "d1", "#", false),
        // Covered by the deny rule: refused even for dash.
        (Some("dash"), "d1", "sensors/+/secret", false),
        // `sensors/+/temp` does not cover wider filters.
        (Some("bob"), "b1", "sensors/+/temp", true),
        (Some("bob"), "b1", "sensors/x/temp", true),
        (Some("bob"), "b1", "sensors/#", false),
        (Some("bob"), "b1", "sensors/+/+", false),
        (Some("bob"), "b1", "+/+/temp", false),
        (Some("alice"), "a1", "sensors/alice/#", false),
        // %u and %c: own subtree, never a wildcard over other users'.
        (Some("bob"), "b1", "users/bob/#", true),
        (Some("bob"), "b1", "users/+/x", false),
        (Some("bob"), "b1", "users/#", false),
        (Some("bob"), "b1", "clients/b1/#", true),
        (Some("bob"), "b1", "clients/+/#", false),
        (None, "anon-c", "users/anon-c/#", false),
        // $SYS only with an explicit rule; `#` by the spy rule does not reach it.
        (Some("admin"), "adm", "$SYS/#", true),
        (Some("admin"), "adm", "$SYS/broker/+", true),
        (Some("dash"), "d1", "$SYS/#", false),
        (Some("spy"), "s1", "$SYS/#", false),
        (Some("spy"), "s1", "#", true),
        // Shared subscriptions: judged on the filter without $share/<group>/.
        (Some("dash"), "d1", "$share/g/sensors/#", true),
        (Some("bob"), "b1", "$share/g/sensors/#", false),
        (Some("bob"), "b1", "$share/g/sensors/+/temp", true),
        (Some("admin"), "adm", "$share/g/$SYS/#", true),
        (Some("bob"), "b1", "$share/g/$SYS/#", false),
        // Anonymous clients.
        (None, "anon-c", "public/#", true),
        (Some("bob"), "b1", "public/#", false),
    ];
    for version in VERSIONS {
        for (user, client_id, filter, granted) in cases {
            let mut c = TestClient::connect(addr, connect_as(version, *user, client_id)).await;
            c.send(subscribe(1, filter, 1)).await;
            let code = if *granted { 1 } else { refused(version) };
            c.expect(suback(1, &[code])).await;
            // Not `disconnect()`, which expects nothing more: a granted `$SYS` filter
            // receives the broker's retained `$SYS` values (tests/metrics.rs).
            drop(c);
        }
    }
    // One SUBSCRIBE with several filters gets one code per filter [MQTT-3.8.4-6].
    let mut bob = TestClient::connect(
        addr,
        connect_as(ProtocolVersion::V5, Some("bob"), &unique_id("b")),
    )
    .await;
    bob.send(subscribe_many(
        2,
        &[("users/bob/#", 0), ("#", 1), ("sensors/+/temp", 2)],
    ))
    .await;
    bob.expect(suback(2, &[0, 0x87, 2])).await;
    bob.disconnect().await;
    broker.stop().await;
}

// Every delivery is checked: a subscription granted by a wide rule does not receive topics a
// narrower deny rule forbids, retained or live, plain or shared.
#[tokio::test]
async fn deliveries_are_checked_per_topic_retained_live_and_shared() {
    let files = Files::new("delivery", ACL, &USERS);
    let broker = acl_broker(&files).await;
    let addr = broker.addr();
    for version in VERSIONS {
        let mut alice =
            TestClient::connect(addr, connect_as(version, Some("alice"), &unique_id("a"))).await;
        // Retained: one readable, one secret.
        alice
            .send(publish_retained("sensors/alice/secret", 1, 1, b"r"))
            .await;
        acked(&mut alice, 1).await;
        alice
            .send(publish_retained("sensors/alice/temp", 1, 2, b"r"))
            .await;
        acked(&mut alice, 2).await;
        let mut dash =
            TestClient::connect(addr, connect_as(version, Some("dash"), &unique_id("d"))).await;
        dash.send(subscribe_many(
            1,
            &[("sensors/#", 1), ("$share/g/sensors/alice/+", 1)],
        ))
        .await;
        dash.expect(suback(1, &[1, 1])).await;
        // The retained secret is not sent; the retained reading is.
        let p = dash.recv_publish().await;
        assert_eq!(&*p.topic, "sensors/alice/temp");
        assert!(p.retain);
        dash.send(puback(p.packet_id.expect("QoS 1").get())).await;
        // Live: the secret goes to neither the plain nor the shared subscription.
        alice
            .send(publish("sensors/alice/secret", 1, 3, b"s"))
            .await;
        acked(&mut alice, 3).await;
        alice.send(publish("sensors/alice/hum", 1, 4, b"h")).await;
        acked(&mut alice, 4).await;
        // Two copies of the allowed one (plain and shared subscription), no secret.
        expect_topic(&mut dash, "sensors/alice/hum").await;
        expect_topic(&mut dash, "sensors/alice/hum").await;
        dash.disconnect().await;
        alice.disconnect().await;
    }
    broker.stop().await;
}

// A shared group's message goes to a member allowed to receive it: a member whose rules
// forbid the topic is skipped, not picked and made to drop the message (the group would lose
// it). MQTT 5.0 section 4.8.2: each message goes to one member of the group.
#[tokio::test]
async fn a_shared_group_gives_each_message_to_a_member_allowed_to_receive_it() {
    let files = Files::new("shared-pick", ACL, &USERS);
    let broker = TestBroker::start(|c| {
        c.acl.file = files.acl().display().to_string();
        c.auth.password_file = files.passwd().display().to_string();
        c.listeners[0].allow_anonymous = Some(true);
        c.shared.policy = vane_config::SharePolicy::RoundRobin;
    })
    .await;
    let addr = broker.addr();
    for version in VERSIONS {
        let group = format!("$share/{}/sensors/#", unique_id("g"));
        // spy may receive everything; dash may not receive sensors/+/secret.
        let mut spy =
            TestClient::connect(addr, connect_as(version, Some("spy"), &unique_id("s"))).await;
        let mut dash =
            TestClient::connect(addr, connect_as(version, Some("dash"), &unique_id("d"))).await;
        for c in [&mut spy, &mut dash] {
            c.send(subscribe(1, &group, 1)).await;
            c.expect(suback(1, &[1])).await;
        }
        let mut alice =
            TestClient::connect(addr, connect_as(version, Some("alice"), &unique_id("a"))).await;
        for id in 1..=6 {
            alice
                .send(publish("sensors/alice/secret", 1, id, b"s"))
                .await;
            acked(&mut alice, id).await;
        }
        for _ in 1..=6 {
            let p = spy.recv_publish().await;
            assert_eq!(&*p.topic, "sensors/alice/secret");
            spy.send(puback(p.packet_id.expect("QoS 1").get())).await;
        }
        dash.expect_nothing(Duration::from_millis(300)).await;
        // Topics both may receive are still shared between them.
        for id in 7..=10 {
            alice.send(publish("sensors/alice/temp", 1, id, b"t")).await;
            acked(&mut alice, id).await;
        }
        let p = dash.recv_publish().await;
        assert_eq!(&*p.topic, "sensors/alice/temp");
        // The rest of the shared messages are still on their way: closed without waiting.
        drop((spy, dash, alice));
    }
    broker.stop().await;
}

// P2P topics are checked as ordinary topics: on publish (the publisher's rules) and on
// delivery (the receiver's rules).
#[tokio::test]
async fn p2p_topics_obey_the_acl() {
    let files = Files::new("p2p", ACL, &USERS);
    let broker = acl_broker(&files).await;
    let addr = broker.addr();
    for version in VERSIONS {
        let dash_id = unique_id("dash");
        let mut dash = TestClient::connect(addr, connect_as(version, Some("dash"), &dash_id)).await;
        let mut bob =
            TestClient::connect(addr, connect_as(version, Some("bob"), &unique_id("b"))).await;
        // Published (allowed) but not receivable by dash: dropped at delivery.
        bob.send(publish(&format!("alerts/p2p/{dash_id}"), 1, 1, b"a"))
            .await;
        acked(&mut bob, 1).await;
        // Not publishable by bob: refused at publish.
        let reason = publish_q1(&mut bob, &format!("other/p2p/{dash_id}"), 2).await;
        assert_eq!(reason.is_error(), version.is_v5());
        // Allowed both ways: arrives, and first.
        bob.send(publish(&format!("cmd/p2p/{dash_id}"), 1, 3, b"c"))
            .await;
        acked(&mut bob, 3).await;
        expect_topic(&mut dash, &format!("cmd/p2p/{dash_id}")).await;
        bob.disconnect().await;
        dash.disconnect().await;
    }
    broker.stop().await;
}

// After an ACL reload, a client already subscribed receives nothing more on the revoked
// topics: neither live messages nor those queued for it while it was offline.
#[tokio::test]
async fn acl_reload_revokes_live_and_queued_deliveries() {
    let files = Files::new("reload", ACL, &USERS);
    let broker = acl_broker(&files).await;
    let addr = broker.addr();
    let dash_id = unique_id("dash");
    let mut dash = TestClient::connect(addr, login(connect_v5_persistent(&dash_id), "dash")).await;
    dash.send(subscribe_many(1, &[("sensors/#", 1), ("marker/#", 1)]))
        .await;
    dash.expect(suback(1, &[1, 1])).await;
    let mut alice = TestClient::connect(
        addr,
        connect_as(ProtocolVersion::V5, Some("alice"), &unique_id("a")),
    )
    .await;
    // The same topic before and after the reload: decisions a connection remembers must not
    // outlive the rules they were made under.
    alice
        .send(publish("sensors/alice/hum", 1, 1, b"before"))
        .await;
    acked(&mut alice, 1).await;
    expect_topic(&mut dash, "sensors/alice/hum").await;

    // dash loses sensors/#; the rest stays.
    files.write_acl(&ACL.replace("allow user dash subscribe sensors/#\n", ""));
    broker.reload().expect("the new ACL parses");
    // (`sensors/+/temp` is still readable by anyone: another topic.)
    alice
        .send(publish("sensors/alice/hum", 1, 2, b"after"))
        .await;
    acked(&mut alice, 2).await;
    alice.send(publish("marker/1", 1, 3, b"m")).await;
    acked(&mut alice, 3).await;
    expect_topic(&mut dash, "marker/1").await;

    // Queued while offline, revoked before it comes back: not delivered.
    dash.disconnect().await;
    files.write_acl(ACL);
    broker.reload().expect("the ACL parses");
    alice
        .send(publish("sensors/alice/hum", 1, 4, b"queued"))
        .await;
    acked(&mut alice, 4).await;
    alice.send(publish("marker/2", 1, 5, b"m")).await;
    acked(&mut alice, 5).await;
    files.write_acl(&ACL.replace("allow user dash subscribe sensors/#\n", ""));
    broker.reload().expect("the new ACL parses");
    let mut dash = TestClient::connect(addr, login(connect_v5_persistent(&dash_id), "dash")).await;
    expect_topic(&mut dash, "marker/2").await;
    dash.disconnect().await;
    alice.disconnect().await;
    broker.stop().await;
}

// A queued message a reload revoked is removed from the store when it is refused, so it does
// not come back after a restart, even once the rule is back.
#[tokio::test]
async fn revoked_stored_deliveries_do_not_come_back_after_a_restart() {
    let files = Files::new("stored", ACL, &USERS);
    let store = files.dir.path().join("store").display().to_string();
    let start = || {
        let acl = files.acl().display().to_string();
        let passwd = files.passwd().display().to_string();
        let store = store.clone();
        TestBroker::start(move |c| {
            c.acl.file = acl;
            c.auth.password_file = passwd;
            c.store.durability = vane_config::Durability::Sync;
            c.store.dir = store;
        })
    };
    let broker = start().await;
    let addr = broker.addr();
    let dash_id = unique_id("dash");
    let mut dash = TestClient::connect(addr, login(connect_v5_persistent(&dash_id), "dash")).await;
    dash.send(subscribe_many(1, &[("sensors/#", 1), ("marker/#", 1)]))
        .await;
    dash.expect(suback(1, &[1, 1])).await;
    dash.disconnect().await;
    let mut alice = TestClient::connect(
        addr,
        connect_as(ProtocolVersion::V5, Some("alice"), &unique_id("a")),
    )
    .await;
    alice
        .send(publish("sensors/alice/hum", 1, 1, b"stored"))
        .await;
    acked(&mut alice, 1).await;
    alice.send(publish("marker/1", 1, 2, b"m")).await;
    acked(&mut alice, 2).await;
    alice.disconnect().await;
    files.write_acl(&ACL.replace("allow user dash subscribe sensors/#\n", ""));
    broker.reload().expect("parses");
    let mut dash = TestClient::connect(addr, login(connect_v5_persistent(&dash_id), "dash")).await;
    expect_topic(&mut dash, "marker/1").await;
    dash.disconnect().await;
    broker.stop().await;

    // The rule is back, the broker restarts from its store: the refused message is gone.
    files.write_acl(ACL);
    let broker = start().await;
    let addr = broker.addr();
    let mut alice = TestClient::connect(
        addr,
        connect_as(ProtocolVersion::V5, Some("alice"), &unique_id("a")),
    )
    .await;
    let mut dash = TestClient::connect(addr, login(connect_v5_persistent(&dash_id), "dash")).await;
    alice.send(publish("marker/2", 1, 1, b"m")).await;
    acked(&mut alice, 1).await;
    expect_topic(&mut dash, "marker/2").await;
    dash.disconnect().await;
    alice.disconnect().await;
    broker.stop().await;
}

// A user authenticated by SCRAM-SHA-256 (MQTT 5.0 enhanced authentication) is the same user
// to the ACL as one from the password file.
#[tokio::test]
async fn scram_users_are_authorized_by_their_name() {
    use test_support::enhanced_auth::{auth, connect_with_auth, expect_auth, ScramClient};
    use test_support::vane_proto::AuthReason;
    let files = Files::new("scram", ACL, &USERS);
    let mut store = vane_auth::MemoryCredentialStore::new();
    store
        .insert_password("bob", "bob-scram", 4096)
        .expect("valid password");
    let scram_path = files.dir.path().join("users.scram");
    std::fs::write(
        &scram_path,
        vane_auth::scram::file::format_store(&store).expect("storable"),
    )
    .expect("write");
    let acl = files.acl().display().to_string();
    let scram_file = scram_path.display().to_string();
    let broker = TestBroker::start(|c| {
        c.acl.file = acl;
        c.auth.scram_credentials = scram_file;
    })
    .await;
    let mut scram = ScramClient::new("bob", "bob-scram");
    let mut bob = TestClient::open(broker.addr(), ProtocolVersion::V5).await;
    let method = vane_auth::SCRAM_SHA_256;
    bob.send(Packet::Connect(Box::new(connect_with_auth(
        &unique_id("bob"),
        method,
        Some(&scram.client_first()),
    ))))
    .await;
    let (_, _, server_first) = expect_auth(bob.recv().await);
    let client_final = scram
        .client_final(&server_first.expect("server-first"))
        .expect("valid");
    bob.send(auth(
        AuthReason::ContinueAuthentication,
        method,
        Some(&client_final),
    ))
    .await;
    match bob.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason.as_u8(), 0, "{ack:?}"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    bob.send(subscribe_many(1, &[("users/bob/#", 1), ("users/+/x", 1)]))
        .await;
    bob.expect(suback(1, &[1, 0x87])).await;
    bob.disconnect().await;
    broker.stop().await;
}

// An ACL that cannot be parsed on reload keeps the rules in force; at start, it stops the
// broker with the line and the reason. It never means "allow".
#[tokio::test]
async fn unparseable_acl_keeps_old_rules_on_reload_and_refuses_start() {
    let files = Files::new("broken", ACL, &USERS);
    let broker = acl_broker(&files).await;
    let addr = broker.addr();
    files.write_acl("allow any all #\nallow user\n");
    let err = broker.reload().expect_err("line 2 is broken");
    assert!(
        err.to_string().contains("line 2: user needs a name"),
        "{err}"
    );
    // The old rules still hold: bob may not subscribe to everything.
    let mut bob = TestClient::connect(
        addr,
        connect_as(ProtocolVersion::V5, Some("bob"), &unique_id("b")),
    )
    .await;
    bob.send(subscribe(1, "#", 0)).await;
    bob.expect(suback(1, &[0x87])).await;
    bob.disconnect().await;
    broker.stop().await;

    let mut config = vane_config::Config::default();
    config.listeners[0].bind = "127.0.0.1:0".parse().expect("address");
    config.store.durability = vane_config::Durability::Memory;
    config.acl.file = files.acl().display().to_string();
    let err = vane_server::Server::bind(config.clone())
        .await
        .err()
        .expect("a broken ACL stops the start");
    let text = err.to_string();
    assert!(text.contains("line 2: user needs a name"), "{text}");
    // A missing file too.
    config.acl.file = files.dir.path().join("missing").display().to_string();
    assert!(vane_server::Server::bind(config).await.is_err());
}

// A password file reload disconnects clients whose user was removed or whose password
// changed (MQTT 5.0: DISCONNECT 0x87); others stay connected.
#[tokio::test]
async fn password_reload_disconnects_revoked_users() {
    let files = Files::new("passwd-reload", ACL, &USERS);
    let broker = acl_broker(&files).await;
    let addr = broker.addr();
    let mut bob = TestClient::connect(
        addr,
        connect_as(ProtocolVersion::V5, Some("bob"), &unique_id("b")),
    )
    .await;
    let mut alice = TestClient::connect(
        addr,
        connect_as(ProtocolVersion::V5, Some("alice"), &unique_id("a")),
    )
    .await;
    let mut dash = TestClient::connect(
        addr,
        connect_as(ProtocolVersion::V3_1_1, Some("dash"), &unique_id("d")),
    )
    .await;
    // bob removed, dash's password changed, alice unchanged (the same line).
    let text = std::fs::read_to_string(files.passwd()).expect("read");
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("bob:") && !l.starts_with("dash:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let hash = vane_auth::PasswordHash::new("new-dash-pw", 1000).expect("hash");
    let dash_line = vane_auth::password::format_line("dash", &hash).expect("line");
    std::fs::write(files.passwd(), format!("{kept}{dash_line}\n")).expect("write");
    broker.reload().expect("the password file parses");
    bob.expect_closed_with(DisconnectReason::NotAuthorized)
        .await;
    dash.expect_closed().await;
    alice.send(pingreq()).await;
    alice.expect(Packet::PingResp).await;
    alice.disconnect().await;
    // bob can no longer log in.
    let (_, ack) = TestClient::connect_with_ack(
        addr,
        connect_as(ProtocolVersion::V5, Some("bob"), &unique_id("b")),
    )
    .await;
    assert_eq!(ack.reason.as_u8(), 0x86);
    // A broken password file keeps the old one.
    std::fs::write(files.passwd(), "alice:plaintext\n").expect("write");
    let err = broker.reload().expect_err("broken");
    assert!(err.to_string().contains("line 1"), "{err}");
    let alice = TestClient::connect(
        addr,
        connect_as(ProtocolVersion::V5, Some("alice"), &unique_id("a")),
    )
    .await;
    alice.disconnect().await;
    broker.stop().await;
}

/// Waits (bounded) until the broker's log holds `text`.
fn wait_for_log(broker: &VaneProcess, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !broker.log().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "log never said {text:?}:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// `vane serve` reloads the ACL on SIGHUP; a broken file at start stops it with the line.
#[test]
fn sighup_reloads_the_acl_and_a_broken_acl_stops_vane_serve() {
    let dir = TempDir::new("vane-acl-sighup");
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "allow anonymous all open/#\n").expect("write");
    let config = dir.path().join("vane.toml");
    std::fs::write(&config, format!("[acl]\nfile = \"{}\"\n", acl.display())).expect("write");
    let mut options = ServeOptions::new(env!("CARGO_BIN_EXE_vane"), dir.path(), "memory");
    options.config = Some(config.clone());
    let mut broker = VaneProcess::start(options, Duration::from_secs(20));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr = broker.addr();
    runtime.block_on(async {
        let mut c = TestClient::connect(addr, connect_v5(&unique_id("c"))).await;
        c.send(subscribe(1, "open/#", 0)).await;
        c.expect(suback(1, &[0])).await;
        c.disconnect().await;
    });
    std::fs::write(&acl, "allow anonymous all other/#\n").expect("write");
    let pid = broker.pid().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    wait_for_log(&broker, "ACL reloaded");
    runtime.block_on(async {
        let mut c = TestClient::connect(addr, connect_v5(&unique_id("c"))).await;
        c.send(subscribe_many(1, &[("open/#", 0), ("other/#", 0)]))
            .await;
        c.expect(suback(1, &[0x87, 0])).await;
        c.disconnect().await;
    });
    broker.terminate();
    broker.wait_exit(Duration::from_secs(10));

    std::fs::write(
        &acl,
        "# fine\nallow anonymous all open/#\ndeny sometimes all x\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vane"))
        .args([
            "serve",
            "--durability",
            "memory",
            "--bind",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("run vane serve");
    assert!(!out.status.success(), "a broken ACL must stop the broker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("\"sometimes\""),
        "{stderr}"
    );
}

// examples/secure says what README.md's security section says: one TLS listener on
// 127.0.0.1:8883 and no plain one, no anonymous clients, sensor1 and dashboard with their
// passwords, and an ACL that confines them. (interop/secure_example.sh runs it with the
// mosquitto clients over TLS.)
#[test]
fn secure_example_is_what_the_readme_says() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let config = vane_config::Config::load(std::path::Path::new(&format!(
        "{root}/examples/secure/vane.toml"
    )))
    .expect("examples/secure/vane.toml is valid");
    assert_eq!(config.listeners.len(), 1, "one listener only");
    let listener = &config.listeners[0];
    assert_eq!(listener.bind.to_string(), "127.0.0.1:8883");
    let tls = listener.tls.as_ref().expect("the listener is TLS");
    assert_eq!(tls.cert, "examples/secure/certs/server.pem");
    assert_eq!(tls.key, "examples/secure/certs/server.key");
    assert!(!listener.anonymous(true).0, "anonymous clients refused");
    assert_eq!(config.auth.password_file, "examples/secure/passwd");
    assert_eq!(config.acl.file, "examples/secure/acl");
    assert_eq!(config.acl.default, vane_config::AclDefault::Deny);

    let passwd = std::fs::read_to_string(format!("{root}/examples/secure/passwd")).expect("read");
    let passwords = vane_auth::PasswordFile::parse_str(&passwd).expect("parses");
    assert_eq!(passwords.len(), 2);
    assert!(passwords.verify("sensor1", b"sensor1-pass"));
    assert!(passwords.verify("dashboard", b"dashboard-pass"));

    let text = std::fs::read_to_string(format!("{root}/examples/secure/acl")).expect("read");
    let acl = vane_auth::Acl::parse(&text, false).expect("parses");
    let sensor1 = vane_auth::AclIdentity {
        username: Some("sensor1"),
        client_id: "s",
    };
    let dashboard = vane_auth::AclIdentity {
        username: Some("dashboard"),
        client_id: "d",
    };
    assert!(acl.may_publish(sensor1, "sensors/sensor1/temp"));
    assert!(!acl.may_publish(sensor1, "sensors/sensor2/temp"));
    assert!(!acl.may_subscribe(sensor1, "sensors/#"));
    assert!(acl.may_subscribe(dashboard, "sensors/#"));
    assert!(acl.may_receive(dashboard, "sensors/sensor1/temp"));
    assert!(!acl.may_publish(dashboard, "sensors/sensor1/temp"));
    assert!(!acl.may_subscribe(dashboard, "#"));
}
