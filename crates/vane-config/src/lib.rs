//! The broker's configuration: one TOML file, every default in one `impl Default`, validation
//! that reports every problem with its key path at once.

#![warn(missing_docs)]

mod byte_size;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use byte_size::ByteSize;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Network listeners. Default: one plain TCP listener on 127.0.0.1:1883.
    pub listeners: Vec<ListenerConfig>,
    /// Protocol limits.
    pub mqtt: MqttConfig,
    /// Queues of messages waiting for a client (offline, or slower than the flow of messages).
    pub queue: QueueConfig,
    /// Point-to-point messages to `<first-level>/p2p/<client id>`.
    pub p2p: P2pConfig,
    /// Shared subscriptions, `$share/<group>/<filter>`.
    pub shared: SharedConfig,
    /// Sending clients to another server.
    pub redirect: RedirectConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// Topic authorization (ACL file).
    pub acl: AclConfig,
    /// Logging.
    pub log: LogConfig,
    /// The embedded store that makes sessions, queues, in-flight and retained messages
    /// survive a restart.
    pub store: StoreConfig,
    /// Limits that keep one hostile or broken client from hurting the others: connection
    /// admission, bans, flapping, subscriptions, topics, publish rate.
    pub limits: LimitsConfig,
    /// Clients that take none of the messages waiting for them.
    pub slow_consumer: SlowConsumerConfig,
    /// The memory budget and what the broker gives up, in order, as it nears it.
    pub overload: OverloadConfig,
    /// The broker's own `$SYS` topics.
    pub sys: SysConfig,
    /// The Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![ListenerConfig::default()],
            mqtt: MqttConfig::default(),
            queue: QueueConfig::default(),
            p2p: P2pConfig::default(),
            shared: SharedConfig::default(),
            redirect: RedirectConfig::default(),
            auth: AuthConfig::default(),
            acl: AclConfig::default(),
            log: LogConfig::default(),
            store: StoreConfig::default(),
            limits: LimitsConfig::default(),
            slow_consumer: SlowConsumerConfig::default(),
            overload: OverloadConfig::default(),
            sys: SysConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// The `$SYS` topics the broker publishes about itself (retained, through normal routing, so
/// the ACL applies to them like to any topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SysConfig {
    /// How often the `$SYS/broker/...` values are published (only those that changed).
    /// 0: never. At least 1s otherwise.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl SysConfig {
    /// The shortest interval allowed: publishing every value more often costs the
    /// subscribers more than it tells them.
    pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig {
            interval: Duration::from_secs(10),
        }
    }
}

/// The Prometheus text endpoint (`GET /metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics`, e.g. `"127.0.0.1:9100"`. Absent (the default): no
    /// endpoint. Off by default because it is plain HTTP without authentication: the operator
    /// chooses an address only the scraper can reach. The broker does not start if the
    /// address cannot be bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
}

// Written out, not derived: every default lives in an `impl Default` (house rule).
#[allow(clippy::derivable_impls)]
impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { bind: None }
    }
}

/// The slow-consumer policy: what happens to a connected client while messages wait for it
/// and it takes none of them (its in-flight window stays full, or its socket stops draining).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlowConsumerConfig {
    /// How long a client may take nothing while messages wait for it before it counts as a
    /// slow consumer: QoS 0 messages to it are dropped (counted, one warning) and publishers
    /// stop waiting for it. 0: no slow-consumer policy.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How much longer a slow consumer may go on taking nothing before it is disconnected
    /// (MQTT 5.0: DISCONNECT 0x97 Quota exceeded). Its persistent session keeps what the
    /// queue caps allow. 0: never disconnected.
    #[serde(with = "humantime_serde")]
    pub disconnect_after: Duration,
}

impl Default for SlowConsumerConfig {
    fn default() -> Self {
        SlowConsumerConfig {
            timeout: Duration::from_secs(10),
            disconnect_after: Duration::from_secs(20),
        }
    }
}

/// The global memory budget. The broker samples its resident memory (RSS) and, as it nears
/// the budget, degrades in order instead of growing until the kernel kills it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadConfig {
    /// Resident memory the broker may use. Absent (the default): 75% of the machine's memory
    /// or of the cgroup's memory limit, whichever is less, computed at start and logged.
    /// 0: no budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<ByteSize>,
    /// Percent of the budget at which reading of new publishes pauses and QoS 0 deliveries
    /// are dropped.
    pub shed_at_percent: u8,
    /// Percent of the budget at which QoS 1/2 publishes are refused (MQTT 5.0: 0x97; MQTT 3.x:
    /// the connection is closed unacknowledged) and new connections too (0x89; MQTT 3.x
    /// return code 3; closed before the handshake on TLS and WebSocket listeners).
    pub refuse_at_percent: u8,
    /// Percent of the budget below which everything is back to normal.
    pub recover_below_percent: u8,
    /// How often resident memory is sampled.
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            memory_budget: None,
            shed_at_percent: 80,
            refuse_at_percent: 90,
            recover_below_percent: 70,
            sample_interval: Duration::from_millis(200),
        }
    }
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Address and port to listen on.
    pub bind: SocketAddr,
    /// Connections the kernel holds for the accept loop (listen backlog; the kernel caps it
    /// at net.core.somaxconn).
    pub backlog: u32,
    /// TLS on this listener. Absent (the default): plain TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Whether clients that are not authenticated (no user name and password checked against
    /// `[auth] password_file`, no enhanced authentication) may connect here. Absent (the
    /// default): only on a loopback address and only when no password file is configured;
    /// see [`ListenerConfig::anonymous`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
    /// Most connections open on this listener at once; more are closed as soon as they are
    /// accepted, before any TLS handshake. 0: only the global `limits.max_connections` applies.
    pub max_connections: usize,
    /// The authentication methods this listener runs, in order: `certificate`,
    /// `password_file`, `jwt`, `http`. Absent (the default): every configured method, in that
    /// order. Each method either decides (accepts or refuses) or passes the client on; see
    /// [`AuthMethod`]. A method listed here must be configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<Vec<AuthMethod>>,
    /// Every connection starts with a PROXY protocol header (HAProxy's, version 1 or 2) from
    /// the load balancer in front of this listener, naming the client's address; connections
    /// without one are closed. Only for listeners that nothing but the balancer can reach.
    pub proxy_protocol: bool,
    /// MQTT over WebSocket (MQTT 5.0 section 6) on this listener: every connection starts with
    /// an HTTP upgrade. With `tls` too, it is wss://. Absent (the default): MQTT straight over
    /// TCP (or TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebSocketConfig>,
}

/// WebSocket on a listener. The upgrade must name the subprotocol `mqtt` (or `mqttv3.1`, used
/// by old clients), which the answer repeats; an upgrade offering neither is refused with
/// HTTP 400, one to another path with 404. A WebSocket message may be at most
/// `mqtt.max_packet_size` plus 16 bytes, and the upgrade request at most 64 KiB; both must
/// arrive within `mqtt.connect_timeout` of the accept, together with CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// The HTTP path clients upgrade on (the query string is ignored).
    pub path: String,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            path: "/mqtt".into(),
        }
    }
}

/// An authentication method of a listener's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// The verified client certificate's name (`tls.identity`) is the user name: decides
    /// (accepts) when the client presented a certificate, passes otherwise.
    Certificate,
    /// `[auth] password_file`: decides for user names the file holds, passes others on.
    PasswordFile,
    /// `[auth.jwt]`: decides when the password is a JSON Web Token, passes otherwise.
    Jwt,
    /// `[auth.http]`: the hook decides for every client that reaches it.
    Http,
}

impl AuthMethod {
    /// The default chain order.
    pub const ORDER: [AuthMethod; 4] = [
        AuthMethod::Certificate,
        AuthMethod::PasswordFile,
        AuthMethod::Jwt,
        AuthMethod::Http,
    ];

    /// The name used in the configuration and in log lines.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Certificate => "certificate",
            AuthMethod::PasswordFile => "password_file",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Http => "http",
        }
    }
}

/// Which name of a verified client certificate becomes the client's user name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CertIdentity {
    /// None: the certificate only gets the client through the handshake.
    #[default]
    None,
    /// The subject's common name (CN).
    Cn,
    /// The first subject alternative name that is a DNS name, an e-mail address or a URI.
    San,
}

impl ListenerConfig {
    /// Whether a verified client certificate names the client here (`tls.identity`).
    pub fn names_certificates(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.identity != CertIdentity::None)
    }

    /// Whether this listener accepts anonymous clients, and why (for the log), given whether
    /// a method checking CONNECT credentials is configured (see
    /// [`AuthConfig::checks_credentials`]). Certificate identities on this listener count as
    /// such a method.
    pub fn anonymous(&self, checks_credentials: bool) -> (bool, &'static str) {
        match self.allow_anonymous {
            Some(true) => (true, "allow_anonymous = true"),
            Some(false) => (false, "allow_anonymous = false"),
            None if checks_credentials || self.names_certificates() => (
                false,
                "an authentication method is configured (set allow_anonymous = true to accept anonymous clients)",
            ),
            None if !self.bind.ip().is_loopback() => (
                false,
                "not a loopback address (set allow_anonymous = true to accept anonymous clients)",
            ),
            None => (true, "loopback address and no authentication method"),
        }
    }
}

/// TLS on a listener (TLS 1.2 and 1.3). The files are read and parsed when the broker starts
/// (and by `vane serve --check`); one that cannot be stops it, naming the file: a listener
/// configured for TLS never falls back to plain TCP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain, leaf first.
    pub cert: String,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// PEM file with the CA certificates client certificates are verified against. Empty:
    /// client certificates are not asked for.
    pub client_ca: String,
    /// With `client_ca`: refuse, during the handshake, a client without a certificate signed
    /// by one of those CAs. false: a client may send none, but one it sends must verify.
    pub require_client_cert: bool,
    /// With `client_ca`: which name of a verified client certificate becomes the client's
    /// user name (authentication method `certificate`): `none`, `cn` or `san`.
    pub identity: CertIdentity,
    /// How often the certificate, key and client CA files are checked for changes; changed
    /// files are loaded for new handshakes (a file that fails to load keeps the old ones and
    /// is logged). 0s: never (SIGHUP-style reloads through the server's reload call still
    /// work).
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: String::new(),
            key: String::new(),
            client_ca: String::new(),
            require_client_cert: false,
            identity: CertIdentity::None,
            reload_interval: Duration::from_secs(10),
        }
    }
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            backlog: 4096,
            tls: None,
            allow_anonymous: None,
            max_connections: 0,
            auth: None,
            proxy_protocol: false,
            websocket: None,
        }
    }
}

/// Protocol limits and what the broker offers clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Largest packet accepted from a client; larger ones end the connection (0x95).
    pub max_packet_size: ByteSize,
    /// Time a new connection has to send CONNECT before it is closed.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// QoS 1/2 messages in flight to one client at once (also capped by the client's Receive
    /// Maximum in MQTT 5.0).
    pub max_inflight: u16,
    /// Highest QoS granted and accepted (0, 1 or 2).
    pub max_qos: u8,
    /// QoS 2 messages from one client awaiting PUBREL at once (the broker's Receive Maximum).
    pub receive_maximum: u16,
    /// Topic aliases a client may set (MQTT 5.0).
    pub topic_alias_maximum: u16,
    /// Longest client identifier accepted, in bytes.
    pub max_client_id_len: usize,
    /// Longest keep alive, in seconds, an MQTT 5.0 client may use; one asking for more, or for
    /// none (0), is told this value in CONNACK (Server Keep Alive) and held to it. 0: no cap.
    pub max_keep_alive: u16,
    /// Response Information for MQTT 5.0 clients that ask for it: `<prefix>/<client id>`, the
    /// base of the response topics they should use for request/response. Empty: not offered.
    pub response_topic_prefix: String,
    /// Longest a persistent session may outlive its connection. An MQTT 5.0 client asking for
    /// more (or for "never", 0xFFFFFFFF) is told this value in CONNACK (Session Expiry
    /// Interval); an MQTT 3.x persistent session (Clean Session 0), which the protocol never
    /// expires, is removed after this long offline. Absent (the default): no cap, as the
    /// protocol says; sessions of devices that never come back are then kept for ever.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_session_expiry: Option<Duration>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_packet_size: ByteSize(1024 * 1024),
            connect_timeout: Duration::from_secs(10),
            max_inflight: 1024,
            max_qos: 2,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
            max_client_id_len: 256,
            max_keep_alive: 0,
            response_topic_prefix: "reply".into(),
            max_session_expiry: None,
        }
    }
}

/// What a client that publishes faster than `limits.publish_rate` or
/// `limits.publish_bandwidth` allows meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RateExceeded {
    /// The broker stops reading from the client until the budget has refilled: the client's
    /// TCP window fills and it slows down.
    #[default]
    Pause,
    /// The connection ends (MQTT 5.0: DISCONNECT 0x96 Message rate too high).
    Disconnect,
}

/// Limits against hostile or broken clients (see the README's "Limits" table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most connections open at once over all listeners; more are closed as soon as they are
    /// accepted, before any TLS handshake. 0 (the default): the process's open file limit
    /// (soft RLIMIT_NOFILE) less 64 descriptors kept for the store and listeners, or 100000
    /// when the limit cannot be read or is unlimited.
    pub max_connections: usize,
    /// New connections per second accepted from one source IP address (a token bucket);
    /// more are closed at once, before any TLS handshake. 0 (the default): no limit, since
    /// clients behind a load balancer or NAT share one address.
    pub connection_rate_per_source: u32,
    /// Connections one source address may open in a burst above `connection_rate_per_source`.
    /// 0: as many as the rate (one second's worth).
    pub connection_burst_per_source: u32,
    /// Ban list file: lines `client ID`, `user NAME` or `address IP[/PREFIX]`, each optionally
    /// followed by `until RFC3339-TIME`; `#` starts a comment. Banned addresses are closed at
    /// accept, banned client ids and user names get CONNACK 0x8A (MQTT 3.x: return code 5).
    /// A file that cannot be read or parsed stops the broker, naming the line. Empty: none.
    pub ban_file: String,
    /// Most subscriptions one client holds; filters beyond get SUBACK 0x97 (MQTT 3.x: 0x80).
    /// Replacing an existing subscription does not count. 0: no limit.
    pub max_subscriptions_per_client: usize,
    /// Longest topic name or topic filter, in bytes (also a will topic). 65535, the protocol's
    /// own maximum, is no limit.
    pub max_topic_length: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter (also a will topic).
    /// 0: no limit.
    pub max_topic_levels: usize,
    /// PUBLISH packets per second one client may send (a token bucket with one second's
    /// burst). 0 (the default): no limit.
    pub publish_rate: u32,
    /// PUBLISH bytes (whole packets) per second one client may send (a token bucket with one
    /// second's burst). 0 (the default): no limit.
    pub publish_bandwidth: ByteSize,
    /// What a client over `publish_rate` or `publish_bandwidth` meets: `pause` (reading
    /// pauses until the budget refills) or `disconnect` (MQTT 5.0: DISCONNECT 0x96).
    pub rate_exceeded: RateExceeded,
    /// Temporary bans for clients that connect too often.
    pub flapping: FlappingConfig,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 0,
            connection_rate_per_source: 0,
            connection_burst_per_source: 0,
            ban_file: String::new(),
            max_subscriptions_per_client: 1000,
            max_topic_length: 65_535,
            max_topic_levels: 128,
            publish_rate: 0,
            publish_bandwidth: ByteSize(0),
            rate_exceeded: RateExceeded::Pause,
            flapping: FlappingConfig::default(),
        }
    }
}

/// Flapping detection: a client id that connects more than `max_connects` times within
/// `window` is banned for `ban` (CONNACK 0x8A; MQTT 3.x: return code 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlappingConfig {
    /// Whether flapping clients are banned. Off by default: test suites and some devices
    /// reconnect one client id many times a minute on purpose.
    pub enabled: bool,
    /// CONNECTs of one client id allowed within `window`.
    pub max_connects: u32,
    /// The window the CONNECTs are counted in.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long a flapping client id stays banned.
    #[serde(with = "humantime_serde")]
    pub ban: Duration,
}

impl Default for FlappingConfig {
    fn default() -> Self {
        FlappingConfig {
            enabled: false,
            max_connects: 10,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(300),
        }
    }
}

/// What a full queue does with a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowPolicy {
    /// Drop the oldest queued message to make room.
    DropOldest,
    /// Refuse the new message.
    DropNewest,
}

/// Per-client queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Most messages queued for one client.
    pub max_messages: usize,
    /// Most bytes (topic and payload) queued for one client.
    pub max_bytes: ByteSize,
    /// What a full queue does: `drop-oldest` or `drop-newest`. Drops are counted and logged.
    pub overflow: OverflowPolicy,
    /// Whether QoS 0 messages are queued for offline persistent sessions.
    pub queue_qos0_offline: bool,
    /// Longest time publishers wait for an online client whose queue is full before QoS 1/2
    /// messages to it fall under the overflow policy. 0: never wait (drop at once).
    #[serde(with = "humantime_serde")]
    pub backpressure_timeout: Duration,
    /// Queue length of a connected client above which QoS 1/2 publishers to it wait (at most
    /// `max_messages`). Short queues keep the broker's working set in the CPU cache.
    pub backpressure_above: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_messages: 10_000,
            max_bytes: ByteSize(64 * 1024 * 1024),
            overflow: OverflowPolicy::DropOldest,
            queue_qos0_offline: false,
            backpressure_timeout: Duration::from_secs(10),
            backpressure_above: 1000,
        }
    }
}

/// Point-to-point messaging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pConfig {
    /// Deliver a PUBLISH to `<first-level>/p2p/<client id>` to that client only.
    pub enabled: bool,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig { enabled: true }
    }
}

/// How a shared subscription group picks the member that gets a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SharePolicy {
    /// Each member in turn.
    RoundRobin,
    /// A member at random.
    Random,
    /// The same member for as long as it can take messages.
    Sticky,
    /// A member chosen by the publishing client: one publisher's messages stay in order.
    HashClient,
    /// A member chosen by the topic: one topic's messages stay in order.
    HashTopic,
}

/// Shared subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedConfig {
    /// Member selection: `round-robin`, `random`, `sticky`, `hash-client` or `hash-topic`.
    /// Whatever the policy, a member that is offline or whose queue is full is passed over.
    pub policy: SharePolicy,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            policy: SharePolicy::RoundRobin,
        }
    }
}

/// Authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// SCRAM-SHA-256 credentials file for MQTT 5.0 enhanced authentication (the AUTH exchange),
    /// one `user:SCRAM-SHA-256:iterations:salt:stored_key:server_key` line per user, written by
    /// `vane passwd --scram FILE USER`. Empty: no enhanced authentication method is offered,
    /// and a CONNECT naming one gets CONNACK 0x8C. A file that cannot be read or parsed stops
    /// the broker from starting, naming the line.
    pub scram_credentials: String,
    /// Password file for user name and password in CONNECT, in Mosquitto's format: one
    /// `user:$7$iterations$salt$hash` (PBKDF2-HMAC-SHA512) or `user:$6$salt$hash` (SHA-512,
    /// read only) line per user, written by `vane passwd FILE USER`. With one, a client giving
    /// a user name must give the matching password. Empty: no password file. A file that
    /// cannot be read or parsed stops the broker from starting, naming the line.
    pub password_file: String,
    /// JSON Web Tokens in the CONNECT password (method `jwt`).
    pub jwt: JwtConfig,
    /// An HTTP service that allows or denies each CONNECT (method `http`).
    pub http: HttpAuthConfig,
    /// Whether a client id belongs to the first authenticated user name that used it, for as
    /// long as its session exists: another user name (or an anonymous client) using it is
    /// refused with 0x87 (3.x: return code 5). Absent (the default): on when any
    /// authentication method is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_client_id: Option<bool>,
}

impl AuthConfig {
    /// Whether a method that checks CONNECT's user name and password (password file, JWT,
    /// HTTP hook) is configured: then listeners refuse anonymous clients unless they say
    /// `allow_anonymous = true`.
    pub fn checks_credentials(&self) -> bool {
        !self.password_file.is_empty() || self.jwt.enabled() || self.http.enabled()
    }
}

impl Config {
    /// Whether client ids are bound to the user name that first used them: `auth.bind_client_id`
    /// when set, otherwise whenever an authentication method is configured (including SCRAM
    /// and certificate identities).
    pub fn binds_client_ids(&self) -> bool {
        self.auth.bind_client_id.unwrap_or_else(|| {
            self.auth.checks_credentials()
                || !self.auth.scram_credentials.is_empty()
                || self
                    .listeners
                    .iter()
                    .any(ListenerConfig::names_certificates)
        })
    }
}

/// The signature algorithm of accepted tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    #[default]
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256, verified with a public key or a JWKS.
    RS256,
    /// ECDSA P-256 with SHA-256, verified with a public key or a JWKS.
    ES256,
}

/// JSON Web Tokens (RFC 7519) given as the CONNECT password. Configured when one key source
/// is set: `secret` or `secret_file` for HS256, `public_key_file` or `jwks_file` for RS256
/// and ES256. The signature, `exp` (required) and `nbf` are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// `HS256`, `RS256` or `ES256`; a token signed otherwise is refused.
    pub algorithm: JwtAlgorithm,
    /// HS256 shared secret (prefer `secret_file`, which keeps it out of the configuration).
    pub secret: String,
    /// File whose content (trailing newline removed) is the HS256 secret.
    pub secret_file: String,
    /// PEM public key (or certificate) for RS256/ES256.
    pub public_key_file: String,
    /// JWKS file (RFC 7517) for RS256/ES256: the key is chosen by the token's `kid`.
    pub jwks_file: String,
    /// The claim holding the user name.
    pub username_claim: String,
    /// Required `iss`. Empty: not checked.
    pub issuer: String,
    /// Required `aud`. Empty: not checked.
    pub audience: String,
    /// Clock skew allowed for `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Claim with an array of topic filters the client may publish to. A token with this
    /// claim or `subscribe_claim` is limited to the filters they list.
    pub publish_claim: String,
    /// Claim with an array of topic filters the client may subscribe to.
    pub subscribe_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            algorithm: JwtAlgorithm::HS256,
            secret: String::new(),
            secret_file: String::new(),
            public_key_file: String::new(),
            jwks_file: String::new(),
            username_claim: "sub".into(),
            issuer: String::new(),
            audience: String::new(),
            leeway: Duration::from_secs(30),
            publish_claim: "publish".into(),
            subscribe_claim: "subscribe".into(),
        }
    }
}

impl JwtConfig {
    /// Whether a key source is configured.
    pub fn enabled(&self) -> bool {
        self.key_sources() > 0
    }

    fn key_sources(&self) -> usize {
        [
            &self.secret,
            &self.secret_file,
            &self.public_key_file,
            &self.jwks_file,
        ]
        .iter()
        .filter(|s| !s.is_empty())
        .count()
    }
}

/// An HTTP authentication hook: the broker POSTs each CONNECT's client id, user name,
/// password, address, listener and protocol as JSON to `url` and expects a 2xx answer with
/// `{"result": "allow"}` or `{"result": "deny"}`. Anything else refuses the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpAuthConfig {
    /// `http://host:port/path` or `https://host:port/path`. Empty: no hook.
    pub url: String,
    /// PEM file of the CA certificates an `https://` hook's certificate must chain to. Empty
    /// (the default): the system's trust store.
    pub ca_file: String,
    /// Longest wait for the hook's answer; then the client is refused with 0x88 Server
    /// unavailable (3.x: return code 3).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long an answer (allow or deny) is reused for the same client id, user name,
    /// password and address. 0s: no cache.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Most answers cached.
    pub cache_size: usize,
    /// Most requests to the hook at once; more CONNECTs wait their turn (within the timeout).
    pub max_concurrent: usize,
}

impl Default for HttpAuthConfig {
    fn default() -> Self {
        HttpAuthConfig {
            url: String::new(),
            ca_file: String::new(),
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(60),
            cache_size: 10_000,
            max_concurrent: 32,
        }
    }
}

impl HttpAuthConfig {
    /// Whether a hook is configured.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }
}

/// The decision when no ACL rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AclDefault {
    /// Refuse: only what a rule allows is allowed.
    #[default]
    Deny,
    /// Allow: only what a rule denies is denied.
    Allow,
}

/// Topic authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AclConfig {
    /// ACL file: one `allow|deny  user NAME|client ID|anonymous|authenticated|any
    /// publish|subscribe|all  TOPIC-PATTERN` rule per line, `%u`/`%c` standing for the user
    /// name and client id; the first rule that applies decides. Empty: no topic checks at all.
    /// A file that cannot be read or parsed stops the broker from starting (on SIGHUP: the
    /// previous rules stay), naming the line and the reason.
    pub file: String,
    /// `deny` or `allow`: the decision when no rule applies (never for topics starting with
    /// `$`, which need an explicit rule). Only used with a file.
    pub default: AclDefault,
}

/// When a configured redirect applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RedirectWhen {
    /// Refuse every CONNECT with the redirect.
    #[default]
    Connect,
    /// Accept clients; at shutdown, send connected MQTT 5.0 clients to the other server.
    Shutdown,
}

/// Sending MQTT 5.0 clients to another server (MQTT 5.0 section 4.11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RedirectConfig {
    /// The server clients should use instead, e.g. `mqtt2.example.com:1883`. Empty: no
    /// redirect.
    pub server_reference: String,
    /// true: the move is permanent (0x9D Server moved); false: temporary (0x9C Use another
    /// server).
    pub permanent: bool,
    /// `connect`: every CONNECT is refused with CONNACK 0x9C/0x9D carrying the Server
    /// Reference (MQTT 3.x clients: return code 3). `shutdown`: clients are served, and at
    /// shutdown connected MQTT 5.0 clients get DISCONNECT 0x9C/0x9D with the reference.
    pub when: RedirectWhen,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Filter in `tracing` syntax, e.g. `info` or `info,vane_server=debug`. `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// What an acknowledgement promises about the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// A message is acknowledged (PUBACK, PUBREC, SUBACK) only once it is synced to disk
    /// for every persistent session that must receive it: nothing acknowledged is lost,
    /// not even to a power cut. Syncs are grouped, so many messages share one.
    Sync,
    /// Acknowledged once written to the operating system: a crash of the broker loses
    /// nothing; a crash of the machine or a power cut loses at most `batch_interval`.
    Batch,
    /// No store: everything lives in memory and is lost when the broker stops.
    Memory,
}

/// The embedded store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory of the store, created when missing (relative paths are from the working
    /// directory).
    pub dir: String,
    /// `sync`, `batch` or `memory` (see [`Durability`]).
    pub durability: Durability,
    /// In `batch` mode, longest time between a write and its sync to disk.
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dir: "vane-data".into(),
            durability: Durability::Sync,
            batch_interval: Duration::from_millis(10),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this model.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// Values out of range; every problem is listed with its key.
    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks value ranges, reporting every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.listeners.is_empty() {
            problems.push("listeners: at least one listener is needed".to_string());
        }
        for (i, a) in self.listeners.iter().enumerate() {
            for b in &self.listeners[i + 1..] {
                if a.bind == b.bind {
                    problems.push(format!("listeners: {} is listed twice", a.bind));
                }
            }
        }
        let m = &self.mqtt;
        if m.max_packet_size.0 < 64 || m.max_packet_size.0 > 268_435_460 {
            problems.push("mqtt.max_packet_size: must be between 64 B and 256 MiB".into());
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.backlog == 0 {
                problems.push(format!("listeners[{i}].backlog: must be at least 1"));
            }
            if let Some(ws) = &l.websocket {
                if !ws.path.starts_with('/')
                    || ws.path.chars().any(|c| c.is_whitespace() || c == '?')
                {
                    problems.push(format!(
                        "listeners[{i}].websocket.path: must start with / and hold no spaces or ?"
                    ));
                }
            }
            if let Some(tls) = &l.tls {
                if tls.cert.is_empty() {
                    problems.push(format!(
                        "listeners[{i}].tls.cert: must name the PEM certificate chain file"
                    ));
                }
                if tls.key.is_empty() {
                    problems.push(format!(
                        "listeners[{i}].tls.key: must name the PEM private key file"
                    ));
                }
                if tls.identity != CertIdentity::None && tls.client_ca.is_empty() {
                    problems.push(format!(
                        "listeners[{i}].tls.identity: needs client_ca (a client certificate must be verified to name anyone)"
                    ));
                }
                if tls.require_client_cert && tls.client_ca.is_empty() {
                    problems.push(format!(
                        "listeners[{i}].tls.client_ca: must name a PEM CA file when require_client_cert = true"
                    ));
                }
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            for method in l.auth.iter().flatten() {
                let configured = match method {
                    AuthMethod::Certificate => l.names_certificates(),
                    AuthMethod::PasswordFile => !self.auth.password_file.is_empty(),
                    AuthMethod::Jwt => self.auth.jwt.enabled(),
                    AuthMethod::Http => self.auth.http.enabled(),
                };
                if !configured {
                    problems.push(format!(
                        "listeners[{i}].auth: `{}` is listed but not configured",
                        method.name()
                    ));
                }
            }
        }
        let jwt = &self.auth.jwt;
        if jwt.key_sources() > 1 {
            problems.push(
                "auth.jwt: set only one of secret, secret_file, public_key_file, jwks_file".into(),
            );
        } else if jwt.enabled() {
            let hmac = !jwt.secret.is_empty() || !jwt.secret_file.is_empty();
            if hmac != (jwt.algorithm == JwtAlgorithm::HS256) {
                problems.push(
                    "auth.jwt.algorithm: HS256 takes secret or secret_file; RS256 and ES256 take public_key_file or jwks_file".into(),
                );
            }
            if jwt.username_claim.is_empty() {
                problems.push("auth.jwt.username_claim: must name a claim".into());
            }
        }
        let http = &self.auth.http;
        if http.enabled() {
            if !http.url.starts_with("http://") && !http.url.starts_with("https://") {
                problems.push("auth.http.url: must be an http:// or https:// URL".into());
            }
        } else if !http.ca_file.is_empty() {
            problems.push("auth.http.ca_file: set without auth.http.url".into());
        }
        if http.enabled() {
            if http.timeout.is_zero() {
                problems.push("auth.http.timeout: must be more than 0s".into());
            }
            if http.max_concurrent == 0 {
                problems.push("auth.http.max_concurrent: must be at least 1".into());
            }
        }
        if m.connect_timeout.is_zero() {
            problems.push("mqtt.connect_timeout: must be more than 0s".into());
        }
        if m.max_session_expiry
            .is_some_and(|d| d.as_secs() >= u64::from(u32::MAX))
        {
            problems.push(
                "mqtt.max_session_expiry: must be under 4294967295s (leave it out for no cap)"
                    .into(),
            );
        }
        if m.max_inflight == 0 {
            problems.push("mqtt.max_inflight: must be at least 1".into());
        }
        if m.max_qos > 2 {
            problems.push("mqtt.max_qos: must be 0, 1 or 2".into());
        }
        if m.receive_maximum == 0 {
            problems.push("mqtt.receive_maximum: must be at least 1".into());
        }
        if m.max_client_id_len < 23 || m.max_client_id_len > 65_535 {
            problems.push("mqtt.max_client_id_len: must be between 23 and 65535".into());
        }
        if self.queue.max_messages == 0 {
            problems.push("queue.max_messages: must be at least 1".into());
        }
        if self.queue.backpressure_above == 0 {
            problems.push("queue.backpressure_above: must be at least 1".into());
        }
        if self.queue.max_bytes.0 == 0 {
            problems.push("queue.max_bytes: must be more than 0".into());
        }
        let o = &self.overload;
        if !(1..=100).contains(&o.recover_below_percent)
            || o.recover_below_percent >= o.shed_at_percent
            || o.shed_at_percent > o.refuse_at_percent
            || o.refuse_at_percent > 100
        {
            problems.push(
                "overload: need 0 < recover_below_percent < shed_at_percent <= refuse_at_percent <= 100"
                    .into(),
            );
        }
        if o.sample_interval < Duration::from_millis(10)
            || o.sample_interval > Duration::from_secs(10)
        {
            problems.push("overload.sample_interval: must be between 10ms and 10s".into());
        }
        if self.store.durability != Durability::Memory && self.store.dir.is_empty() {
            problems
                .push("store.dir: must name a directory (or set durability = \"memory\")".into());
        }
        if self.store.durability == Durability::Batch && self.store.batch_interval.is_zero() {
            problems.push("store.batch_interval: must be more than 0s".into());
        }
        let lim = &self.limits;
        if lim.max_topic_length == 0 || lim.max_topic_length > 65_535 {
            problems.push("limits.max_topic_length: must be between 1 and 65535".into());
        }
        if lim.flapping.enabled {
            if lim.flapping.max_connects == 0 {
                problems.push("limits.flapping.max_connects: must be at least 1".into());
            }
            if lim.flapping.window.is_zero() {
                problems.push("limits.flapping.window: must be more than 0s".into());
            }
            if lim.flapping.ban.is_zero() || lim.flapping.ban > Duration::from_secs(365 * 86_400) {
                problems
                    .push("limits.flapping.ban: must be more than 0s and at most 365 days".into());
            }
            if lim.flapping.window > Duration::from_secs(7 * 86_400) {
                problems.push("limits.flapping.window: must be at most 7 days".into());
            }
        }
        if !self.sys.interval.is_zero() && self.sys.interval < SysConfig::MIN_INTERVAL {
            problems.push("sys.interval: must be 0s (off) or at least 1s".into());
        }
        if let Some(bind) = self.metrics.bind {
            if self.listeners.iter().any(|l| l.bind == bind) {
                problems.push(format!(
                    "metrics.bind: {bind} is already an MQTT listener's address"
                ));
            }
        }
        if lim.connection_rate_per_source == 0 && lim.connection_burst_per_source != 0 {
            problems.push(
                "limits.connection_burst_per_source: needs limits.connection_rate_per_source"
                    .into(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The defaults as TOML, as `vane config default` prints them.
    pub fn default_toml() -> String {
        toml::to_string_pretty(&Config::default()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").ok(), Some(Config::default()));
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        assert_eq!(
            Config::parse(&Config::default_toml()).ok(),
            Some(Config::default())
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(matches!(
            Config::parse("[mqtt]\nmax_pakcet_size = 10"),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn every_problem_is_reported() {
        let err =
            Config::parse("[mqtt]\nmax_inflight = 0\nmax_qos = 3\n[queue]\nmax_messages = 0\n");
        match err {
            Err(ConfigError::Invalid(p)) => assert_eq!(p.len(), 3, "{p:?}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn sys_and_metrics_options_parse_and_are_checked() {
        let c = Config::parse("[sys]\ninterval = \"2s\"\n[metrics]\nbind = \"127.0.0.1:9100\"\n")
            .expect("valid");
        assert_eq!(c.sys.interval, Duration::from_secs(2));
        assert_eq!(
            c.metrics.bind,
            Some("127.0.0.1:9100".parse().expect("an address"))
        );
        assert_eq!(Config::default().sys.interval, Duration::from_secs(10));
        assert_eq!(
            Config::default().metrics.bind,
            None,
            "the endpoint is off by default"
        );
        assert!(
            Config::parse("[sys]\ninterval = \"0s\"\n").is_ok(),
            "0 turns $SYS off"
        );
        match Config::parse("[sys]\ninterval = \"100ms\"\n[metrics]\nbind = \"127.0.0.1:1883\"\n") {
            Err(ConfigError::Invalid(p)) => {
                assert_eq!(p.len(), 2, "{p:?}");
                assert!(p[0].starts_with("sys.interval"), "{p:?}");
                assert!(p[1].starts_with("metrics.bind"), "{p:?}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn overload_and_slow_consumer_options_parse_and_are_checked() {
        let c = Config::parse(
            "[overload]\nmemory_budget = \"64MiB\"\nsample_interval = \"50ms\"\n[slow_consumer]\ntimeout = \"1s\"\ndisconnect_after = \"0s\"\n",
        )
        .expect("valid");
        assert_eq!(c.overload.memory_budget, Some(ByteSize(64 << 20)));
        assert_eq!(c.overload.sample_interval, Duration::from_millis(50));
        assert_eq!(c.slow_consumer.timeout, Duration::from_secs(1));
        assert_eq!(c.slow_consumer.disconnect_after, Duration::ZERO);
        let Err(ConfigError::Invalid(problems)) =
            Config::parse("[overload]\nshed_at_percent = 95\nrefuse_at_percent = 90\n")
        else {
            panic!("shedding above refusing must be refused");
        };
        assert!(problems[0].starts_with("overload:"), "{problems:?}");
        let Err(ConfigError::Invalid(problems)) =
            Config::parse("[overload]\nsample_interval = \"1ms\"\n")
        else {
            panic!("a 1ms sample interval must be refused");
        };
        assert!(
            problems[0].starts_with("overload.sample_interval"),
            "{problems:?}"
        );
    }

    #[test]
    fn websocket_listener_parses_and_its_path_is_checked() {
        let c = Config::parse(
            "[[listeners]]\nbind = \"127.0.0.1:8080\"\n[listeners.websocket]\n\n[[listeners]]\nbind = \"127.0.0.1:8081\"\nwebsocket = { path = \"/ws\" }\n",
        )
        .expect("valid");
        assert_eq!(c.listeners[0].websocket, Some(WebSocketConfig::default()));
        assert_eq!(
            c.listeners[0].websocket.as_ref().map(|w| w.path.as_str()),
            Some("/mqtt")
        );
        assert_eq!(
            c.listeners[1].websocket.as_ref().map(|w| w.path.as_str()),
            Some("/ws")
        );
        for path in ["mqtt", "/a b", "/mqtt?x=1", ""] {
            let toml = format!("[[listeners]]\nwebsocket = {{ path = \"{path}\" }}\n");
            let Err(ConfigError::Invalid(problems)) = Config::parse(&toml) else {
                panic!("path {path:?} must be refused");
            };
            assert!(
                problems[0].starts_with("listeners[0].websocket.path"),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn anonymous_rule_per_listener() {
        let loopback = ListenerConfig::default();
        assert!(loopback.anonymous(false).0);
        assert!(!loopback.anonymous(true).0);
        let any: ListenerConfig = toml::from_str("bind = \"0.0.0.0:1883\"").expect("parses");
        assert_eq!(any.allow_anonymous, None);
        let (allowed, why) = any.anonymous(false);
        assert!(!allowed);
        assert!(why.contains("not a loopback address"), "{why}");
        let v6: ListenerConfig = toml::from_str("bind = \"[::1]:1883\"").expect("parses");
        assert!(v6.anonymous(false).0);
        let open: ListenerConfig =
            toml::from_str("bind = \"0.0.0.0:1883\"\nallow_anonymous = true").expect("parses");
        assert!(open.anonymous(true).0);
        let closed = ListenerConfig {
            allow_anonymous: Some(false),
            ..ListenerConfig::default()
        };
        assert!(!closed.anonymous(false).0);
    }

    #[test]
    fn listener_tls_parses_and_is_checked() {
        let c = Config::parse(
            "[[listeners]]\nbind = \"127.0.0.1:8883\"\ntls = { cert = \"s.pem\", key = \"s.key\", client_ca = \"ca.pem\", require_client_cert = true }\n",
        )
        .expect("valid");
        let tls = c.listeners[0].tls.as_ref().expect("tls");
        assert_eq!((tls.cert.as_str(), tls.key.as_str()), ("s.pem", "s.key"));
        assert!(tls.require_client_cert);
        match Config::parse(
            "[[listeners]]\nbind = \"127.0.0.1:8883\"\ntls = { require_client_cert = true }\n",
        ) {
            Err(ConfigError::Invalid(p)) => {
                assert_eq!(p.len(), 3, "{p:?}");
                assert!(
                    p.iter().all(|m| m.starts_with("listeners[0].tls.")),
                    "{p:?}"
                );
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn authentication_chain_options_parse_and_are_checked() {
        let c = Config::parse(
            "[[listeners]]\nbind = \"127.0.0.1:8883\"\nauth = [\"jwt\", \"http\"]\n[auth.jwt]\nsecret = \"s\"\n[auth.http]\nurl = \"http://127.0.0.1:9000/auth\"\n",
        )
        .expect("valid");
        assert_eq!(
            c.listeners[0].auth,
            Some(vec![AuthMethod::Jwt, AuthMethod::Http])
        );
        assert!(c.binds_client_ids(), "on by default with a method");
        assert!(!Config::default().binds_client_ids());
        // Listed but not configured; two key sources; a key that does not fit the algorithm;
        // a hook URL that is not http(s); a hook CA without a hook; identity without client_ca.
        for (text, key) in [
            (
                "[[listeners]]\nauth = [\"password_file\"]\n",
                "listeners[0].auth",
            ),
            (
                "[auth.jwt]\nsecret = \"s\"\njwks_file = \"k.json\"\n",
                "auth.jwt",
            ),
            (
                "[auth.jwt]\nalgorithm = \"ES256\"\nsecret = \"s\"\n",
                "auth.jwt.algorithm",
            ),
            ("[auth.http]\nurl = \"ftp://h/auth\"\n", "auth.http.url"),
            ("[auth.http]\nca_file = \"ca.pem\"\n", "auth.http.ca_file"),
            (
                "[[listeners]]\ntls = { cert = \"c\", key = \"k\", identity = \"cn\" }\n",
                "listeners[0].tls.identity",
            ),
        ] {
            match Config::parse(text) {
                Err(ConfigError::Invalid(p)) => {
                    assert!(p.iter().any(|m| m.starts_with(key)), "{text}: {p:?}")
                }
                other => panic!("{text}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn limits_parse_and_are_checked() {
        let c = Config::parse(
            "[limits]\npublish_bandwidth = \"64KiB\"\nrate_exceeded = \"disconnect\"\n[limits.flapping]\nenabled = true\nwindow = \"30s\"\n",
        )
        .expect("valid");
        assert_eq!(c.limits.publish_bandwidth, ByteSize(64 * 1024));
        assert_eq!(c.limits.rate_exceeded, RateExceeded::Disconnect);
        assert_eq!(c.limits.flapping.window, Duration::from_secs(30));
        match Config::parse(
            "[limits]\nmax_topic_length = 0\nconnection_burst_per_source = 5\n[limits.flapping]\nenabled = true\nmax_connects = 0\nban = \"0s\"\n",
        ) {
            Err(ConfigError::Invalid(p)) => {
                assert_eq!(p.len(), 4, "{p:?}");
                assert!(p.iter().all(|m| m.starts_with("limits.")), "{p:?}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn human_units_parse() {
        let c = Config::parse(
            "[mqtt]\nmax_packet_size = \"256KiB\"\nconnect_timeout = \"2s\"\n[queue]\noverflow = \"drop-newest\"\n",
        )
        .expect("valid");
        assert_eq!(c.mqtt.max_packet_size, ByteSize(256 * 1024));
        assert_eq!(c.mqtt.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.queue.overflow, OverflowPolicy::DropNewest);
    }

    #[test]
    fn max_session_expiry_is_a_duration_and_absent_by_default() {
        assert_eq!(Config::default().mqtt.max_session_expiry, None);
        let c = Config::parse("[mqtt]\nmax_session_expiry = \"7d\"\n").expect("valid");
        assert_eq!(
            c.mqtt.max_session_expiry,
            Some(Duration::from_secs(7 * 86_400))
        );
        let err = Config::parse("[mqtt]\nmax_session_expiry = \"200years\"\n")
            .expect_err("beyond the protocol's range");
        assert!(err.to_string().contains("mqtt.max_session_expiry"), "{err}");
    }
}

#[cfg(test)]
mod example_file {
    use super::Config;

    /// `vane.example.toml` documents every option at its default: it must stay equal to the
    /// code's defaults and name every key the defaults have.
    #[test]
    fn example_file_is_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../vane.example.toml");
        let text = std::fs::read_to_string(path).expect("vane.example.toml is readable");
        assert_eq!(
            Config::parse(&text).expect("example parses"),
            Config::default()
        );
        let defaults = Config::default_toml();
        for line in defaults.lines().filter(|l| l.contains(" = ")) {
            let key = line.split(" = ").next().unwrap_or_default().trim();
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{key} = "))),
                "vane.example.toml does not document `{key}`"
            );
        }
    }
}
