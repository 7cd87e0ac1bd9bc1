//! Client certificates as identities (`tls.identity = "cn" | "san"`) and TLS certificate
//! reload without a restart (on demand, as SIGHUP does, and by polling the files), over real
//! TLS connections with certificates made at test time.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::SanType;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use test_support::certs::{ca, client_cert, leaf, server_cert, Issued};
use test_support::vane_config::{CertIdentity, Config, TlsConfig};
use test_support::vane_proto::{ConnAck, ConnAckReason, Connect, Packet};
use test_support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod tls_client;

/// Writes a server certificate signed by `ca` and `ca` itself (as the client CA bundle) into
/// `dir`, as the listener's files.
fn write_files(dir: &Path, ca: &Issued) {
    let server = server_cert(ca);
    std::fs::write(dir.join("server.pem"), server.cert.pem()).expect("write");
    std::fs::write(dir.join("server.key"), server.key.serialize_pem()).expect("write");
    std::fs::write(dir.join("ca.pem"), ca.cert.pem()).expect("write");
}

fn tls_config(dir: &Path, identity: CertIdentity, require: bool) -> TlsConfig {
    let path = |n: &str| dir.join(n).display().to_string();
    TlsConfig {
        cert: path("server.pem"),
        key: path("server.key"),
        client_ca: path("ca.pem"),
        require_client_cert: require,
        identity,
        // Tests that poll set their own.
        reload_interval: Duration::ZERO,
    }
}

fn client(trusted: &Issued, identity: Option<&Issued>) -> ClientConfig {
    tls_client::client_config(trusted, rustls::DEFAULT_VERSIONS, identity)
}

/// TLS handshake, CONNECT, CONNACK. Any failure before the CONNACK is an error (with TLS 1.3
/// a refused client certificate shows only at the first read).
async fn try_connect(
    addr: SocketAddr,
    config: ClientConfig,
    connect: Connect,
) -> Result<(TestClient, ConnAck), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").expect("name");
    let stream = tokio::time::timeout(DEFAULT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake failed: {e}"))?;
    let version = connect.protocol;
    let mut client = TestClient::over(stream, version);
    client
        .try_send(&Packet::Connect(Box::new(connect)))
        .await
        .map_err(|e| format!("sending CONNECT: {e}"))?;
    match client.next_event(DEFAULT_TIMEOUT).await {
        Received::Packet(Packet::ConnAck(ack)) => Ok((client, ack)),
        other => Err(format!("no CONNACK: {other:?}")),
    }
}

async fn reason(addr: SocketAddr, config: ClientConfig, connect: Connect) -> ConnAckReason {
    try_connect(addr, config, connect)
        .await
        .expect("CONNACK")
        .1
        .reason
}

async fn tls_broker(tls: TlsConfig) -> TestBroker {
    TestBroker::start(move |c| c.listeners[0].tls = Some(tls)).await
}

#[tokio::test]
async fn the_certificate_common_name_is_the_user_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca("identity CA");
    write_files(dir.path(), &ca);
    // Client certificates optional, so that a client without one can try.
    let broker = tls_broker(tls_config(dir.path(), CertIdentity::Cn, false)).await;
    let addr = broker.addr();
    let device = client_cert(&ca, "device-42");
    // Not anonymous: the listener refuses anonymous clients, and accepts this one.
    let id = unique_id("dev");
    let (mut owner, ack) =
        try_connect(addr, client(&ca, Some(&device)), connect_v5_persistent(&id))
            .await
            .expect("CONNACK");
    assert_eq!(ack.reason, ConnAckReason::Success);
    assert_eq!(
        reason(addr, client(&ca, None), connect_v5(&unique_id("anon"))).await,
        ConnAckReason::NotAuthorized
    );
    // The client id is now device-42's: another certificate cannot take the session over
    // (0x87; MQTT 3.1.1: return code 5), whatever user name its CONNECT claims.
    let other = client_cert(&ca, "device-43");
    assert_eq!(
        reason(addr, client(&ca, Some(&other)), connect_v5_persistent(&id)).await,
        ConnAckReason::NotAuthorized
    );
    let mut claims = connect_v311(&id);
    claims.username = Some("device-42".into());
    claims.password = Some(bytes::Bytes::from_static(b"x"));
    assert_eq!(
        reason(addr, client(&ca, Some(&other)), claims).await,
        ConnAckReason::NotAuthorized
    );
    owner.send(Packet::PingReq).await;
    owner.expect(Packet::PingResp).await;
    // The same certificate may.
    let (_again, ack) = try_connect(addr, client(&ca, Some(&device)), connect_v5_persistent(&id))
        .await
        .expect("CONNACK");
    assert_eq!(ack.reason, ConnAckReason::Success);
    assert!(ack.session_present);
    broker.stop().await;
}

#[tokio::test]
async fn san_identity_uses_the_first_subject_alternative_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca("identity CA");
    write_files(dir.path(), &ca);
    let broker = tls_broker(tls_config(dir.path(), CertIdentity::San, true)).await;
    let addr = broker.addr();
    let dns = |n: &str| vec![SanType::DnsName(n.try_into().expect("DNS name"))];
    let a = leaf(&ca, "same-cn", dns("a.sensors.example"), false);
    let b = leaf(&ca, "same-cn", dns("b.sensors.example"), false);
    let a_again = leaf(&ca, "another-cn", dns("a.sensors.example"), false);
    let id = unique_id("san");
    let (_owner, ack) = try_connect(addr, client(&ca, Some(&a)), connect_v5_persistent(&id))
        .await
        .expect("CONNACK");
    assert_eq!(ack.reason, ConnAckReason::Success);
    // Same CN, other SAN: another identity.
    assert_eq!(
        reason(addr, client(&ca, Some(&b)), connect_v5_persistent(&id)).await,
        ConnAckReason::NotAuthorized
    );
    // Other CN, same SAN: the same identity.
    assert_eq!(
        reason(
            addr,
            client(&ca, Some(&a_again)),
            connect_v5_persistent(&id)
        )
        .await,
        ConnAckReason::Success
    );
    // A certificate without a SAN names nobody: anonymous, refused.
    let plain = client_cert(&ca, "no-san");
    assert_eq!(
        reason(addr, client(&ca, Some(&plain)), connect_v5(&unique_id("x"))).await,
        ConnAckReason::NotAuthorized
    );
    broker.stop().await;
}

/// A server run by the test itself, for its TLS reloader.
async fn start_server(
    tls: TlsConfig,
) -> (
    SocketAddr,
    vane_server::TlsReloader,
    tokio::sync::oneshot::Sender<()>,
) {
    let mut config = Config::default();
    config.listeners[0].bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.listeners[0].tls = Some(tls);
    config.listeners[0].allow_anonymous = Some(true);
    config.store.durability = test_support::vane_config::Durability::Memory;
    let server = vane_server::Server::bind(config).await.expect("binds");
    let addr = server.local_addrs()[0];
    let reloader = server.tls_reloader();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (addr, reloader, stop)
}

#[tokio::test]
async fn a_reload_serves_new_handshakes_with_the_new_certificate_and_client_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (old_ca, new_ca) = (ca("old CA"), ca("new CA"));
    write_files(dir.path(), &old_ca);
    let (addr, reloader, stop) =
        start_server(tls_config(dir.path(), CertIdentity::None, true)).await;
    let old_client = client_cert(&old_ca, "old-client");
    let new_client = client_cert(&new_ca, "new-client");
    let (mut before, ack) = try_connect(
        addr,
        client(&old_ca, Some(&old_client)),
        connect_v311(&unique_id("before")),
    )
    .await
    .expect("CONNACK");
    assert_eq!(ack.reason, ConnAckReason::Success);

    // Nothing changed: a reload rebuilds from the same files and changes nothing visible.
    assert!(reloader.reload().iter().all(|(_, r)| r.is_ok()));

    write_files(dir.path(), &new_ca);
    let results = reloader.reload();
    assert_eq!(results, vec![(0, Ok(vane_server::Reloaded::Reloaded))]);
    // New handshakes: the server now shows a certificate of the new CA and takes client
    // certificates of the new CA only.
    assert!(try_connect(
        addr,
        client(&old_ca, Some(&old_client)),
        connect_v311(&unique_id("a"))
    )
    .await
    .is_err());
    assert!(try_connect(
        addr,
        client(&new_ca, Some(&old_client)),
        connect_v311(&unique_id("b"))
    )
    .await
    .is_err());
    assert_eq!(
        reason(
            addr,
            client(&new_ca, Some(&new_client)),
            connect_v311(&unique_id("c"))
        )
        .await,
        ConnAckReason::Success
    );
    // The connection made before the reload is untouched.
    before.send(Packet::PingReq).await;
    before.expect(Packet::PingResp).await;
    let _ = stop.send(());
}

#[tokio::test]
async fn a_failed_reload_keeps_the_current_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca("kept CA");
    write_files(dir.path(), &ca);
    let (addr, reloader, stop) =
        start_server(tls_config(dir.path(), CertIdentity::None, false)).await;
    std::fs::write(dir.path().join("server.key"), "not a key").expect("write");
    let results = reloader.reload();
    assert_eq!(results.len(), 1);
    let error = results[0]
        .1
        .clone()
        .expect_err("a broken key does not load");
    assert!(error.contains("server.key"), "{error}");
    assert_eq!(
        reason(addr, client(&ca, None), connect_v5(&unique_id("kept"))).await,
        ConnAckReason::Success
    );
    std::fs::remove_file(dir.path().join("server.pem")).expect("remove");
    assert!(reloader.reload()[0].1.is_err());
    assert_eq!(
        reason(addr, client(&ca, None), connect_v5(&unique_id("kept"))).await,
        ConnAckReason::Success
    );
    let _ = stop.send(());
}

#[tokio::test]
async fn changed_files_are_picked_up_without_a_signal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (old_ca, new_ca) = (ca("old CA"), ca("new CA"));
    write_files(dir.path(), &old_ca);
    let mut tls = tls_config(dir.path(), CertIdentity::None, false);
    tls.reload_interval = Duration::from_millis(50);
    let broker = TestBroker::start(move |c| {
        c.listeners[0].tls = Some(tls);
        c.listeners[0].allow_anonymous = Some(true);
    })
    .await;
    let addr = broker.addr();
    assert_eq!(
        reason(addr, client(&old_ca, None), connect_v5(&unique_id("p"))).await,
        ConnAckReason::Success
    );
    write_files(dir.path(), &new_ca);
    // The poller notices within a few intervals; the bound only keeps a broken poller from
    // hanging the test.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((_, ack)) =
            try_connect(addr, client(&new_ca, None), connect_v5(&unique_id("p"))).await
        {
            assert_eq!(ack.reason, ConnAckReason::Success);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        try_connect(addr, client(&old_ca, None), connect_v5(&unique_id("p")))
            .await
            .is_err()
    );
    broker.stop().await;
}

/// A `vane serve` process, killed if the test ends first.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn vane_serve_reloads_certificates_on_sighup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (old_ca, new_ca) = (ca("old CA"), ca("new CA"));
    write_files(dir.path(), &old_ca);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let path = |n: &str| dir.path().join(n).display().to_string();
    // No polling: only the signal reloads.
    let config = format!(
        "[[listeners]]\nbind = \"{addr}\"\nallow_anonymous = true\ntls = {{ cert = \"{}\", key = \"{}\", reload_interval = \"0s\" }}\n[store]\ndurability = \"memory\"\n",
        path("server.pem"),
        path("server.key"),
    );
    std::fs::write(dir.path().join("vane.toml"), config).expect("write config");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_vane"))
        .args(["serve", "--config", &path("vane.toml")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start vane serve");
    let mut vane = Process(child);
    // Serving (and so past installing its signal handlers) once a TLS client gets CONNACK.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while try_connect(addr, client(&old_ca, None), connect_v5(&unique_id("up")))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "vane is not serving TLS"
        );
        assert!(vane.0.try_wait().expect("poll").is_none(), "vane exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    write_files(dir.path(), &new_ca);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &vane.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while try_connect(addr, client(&new_ca, None), connect_v5(&unique_id("new")))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not loaded after SIGHUP"
        );
        assert!(
            vane.0.try_wait().expect("poll").is_none(),
            "vane exited on SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(vane.0.try_wait().expect("poll").is_none());
}
