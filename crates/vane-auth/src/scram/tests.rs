//! SCRAM-SHA-256 exchange tests: the RFC 7677 vector, a client written here, and failures.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use vane_proto::{ConnAckReason, DisconnectReason};

use super::messages::encode_username;
use super::*;
use crate::store::MemoryCredentialStore;

const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

/// A store holding `user`/`pencil` with the RFC 7677 salt, and an authenticator over it whose
/// server nonce is the RFC's.
fn rfc_authenticator() -> ScramAuthenticator {
    let salt = STANDARD.decode(RFC_SALT).unwrap();
    let mut store = MemoryCredentialStore::new();
    store.insert(
        "user",
        ScramCredentials::from_password_with_salt("pencil", &salt, 4096).unwrap(),
    );
    ScramAuthenticator::new(Arc::new(store))
        .with_secret([7; 32])
        .with_nonce_generator(|| RFC_SERVER_NONCE.to_owned())
}

/// An authenticator over the given users and passwords, with random salts and nonces.
fn authenticator(users: &[(&str, &str)]) -> ScramAuthenticator {
    let mut store = MemoryCredentialStore::new();
    for (user, password) in users {
        store.insert_password(*user, password, 4096).unwrap();
    }
    ScramAuthenticator::new(Arc::new(store))
}

fn continue_text(step: AuthStep) -> String {
    match step {
        AuthStep::Continue(data) => String::from_utf8(data).unwrap(),
        other => panic!("expected Continue, got {other:?}"),
    }
}

fn failure(step: AuthStep) -> AuthFailure {
    match step {
        AuthStep::Failure(failure) => failure,
        other => panic!("expected Failure, got {other:?}"),
    }
}

/// A minimal SCRAM-SHA-256 client, written from RFC 5802 independently of the server code.
struct Client {
    password: String,
    client_first_bare: String,
    expected_server_final: Option<String>,
}

impl Client {
    fn new(username: &str, password: &str, nonce: &str) -> Self {
        Self {
            password: password.to_owned(),
            client_first_bare: format!("n={},r={nonce}", encode_username(username)),
            expected_server_final: None,
        }
    }

    fn first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    fn final_message(&mut self, server_first: &str) -> String {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in server_first.split(',') {
            let (key, value) = attribute.split_once('=').unwrap();
            match key {
                "r" => nonce = Some(value),
                "s" => salt = Some(STANDARD.decode(value).unwrap()),
                "i" => iterations = Some(value.parse::<u32>().unwrap()),
                _ => {}
            }
        }
        let (nonce, salt, iterations) = (nonce.unwrap(), salt.unwrap(), iterations.unwrap());
        let mac = |key: &[u8], data: &[u8]| -> Vec<u8> {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        };
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(self.password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = mac(&salted, b"Client Key");
        let stored_key = Sha256::digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = mac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = mac(&salted, b"Server Key");
        let server_signature = mac(&server_key, auth_message.as_bytes());
        self.expected_server_final = Some(format!("v={}", STANDARD.encode(server_signature)));
        format!("{without_proof},p={}", STANDARD.encode(proof))
    }
}

/// Runs a whole exchange with the test client; returns the final step.
fn run(auth: &ScramAuthenticator, username: &str, password: &str) -> AuthStep {
    let mut client = Client::new(username, password, "fyko+d2lbbFgONRv9qkxdawL");
    let mut exchange = auth.start("client-1");
    let server_first = continue_text(exchange.step(Some(client.first().as_bytes())));
    let client_final = client.final_message(&server_first);
    let step = exchange.step(Some(client_final.as_bytes()));
    if let AuthStep::Success { data, .. } = &step {
        let data = String::from_utf8(data.clone().unwrap()).unwrap();
        assert_eq!(Some(data), client.expected_server_final, "server signature");
    }
    step
}

#[test]
fn rfc7677_test_vector() {
    let auth = rfc_authenticator();
    assert_eq!(auth.method(), "SCRAM-SHA-256");
    let mut exchange = auth.start("client-1");
    let server_first = exchange.step(Some(RFC_CLIENT_FIRST.as_bytes()));
    assert_eq!(
        server_first,
        AuthStep::Continue(RFC_SERVER_FIRST.as_bytes().to_vec())
    );
    let server_final = exchange.step(Some(RFC_CLIENT_FINAL.as_bytes()));
    assert_eq!(
        server_final,
        AuthStep::Success {
            data: Some(RFC_SERVER_FINAL.as_bytes().to_vec()),
            username: "user".to_owned(),
        }
    );
    assert_eq!(server_final.connack_reason(), Some(ConnAckReason::Success));
}

#[test]
fn test_client_reproduces_the_rfc7677_proof() {
    let mut client = Client::new("user", "pencil", RFC_CLIENT_NONCE);
    assert_eq!(client.first(), RFC_CLIENT_FIRST);
    assert_eq!(client.final_message(RFC_SERVER_FIRST), RFC_CLIENT_FINAL);
    assert_eq!(
        client.expected_server_final.as_deref(),
        Some(RFC_SERVER_FINAL)
    );
}

#[test]
fn end_to_end_success_with_random_nonce_and_salt() {
    let auth = authenticator(&[("alice", "correct horse"), ("bob", "battery staple")]);
    for (user, password) in [("alice", "correct horse"), ("bob", "battery staple")] {
        match run(&auth, user, password) {
            AuthStep::Success { username, .. } => assert_eq!(username, user),
            other => panic!("expected success for {user}, got {other:?}"),
        }
    }
}

#[test]
fn server_nonce_is_random_and_extends_the_client_nonce() {
    let auth = authenticator(&[("alice", "pw")]);
    let nonces: Vec<String> = (0..2)
        .map(|_| {
            let mut exchange = auth.start("c");
            let first = continue_text(exchange.step(Some(b"n,,n=alice,r=abc")));
            let nonce = first.split(',').next().unwrap().strip_prefix("r=").unwrap();
            assert!(nonce.starts_with("abc") && nonce.len() >= 3 + 32, "{nonce}");
            nonce.to_owned()
        })
        .collect();
    assert_ne!(nonces[0], nonces[1]);
}

#[test]
fn escaped_and_non_ascii_user_names() {
    let auth = authenticator(&[("a,b=c", "pw1"), ("jürgen", "pässwörd")]);
    for (user, password) in [("a,b=c", "pw1"), ("jürgen", "pässwörd")] {
        match run(&auth, user, password) {
            AuthStep::Success { username, .. } => assert_eq!(username, user),
            other => panic!("expected success for {user}, got {other:?}"),
        }
    }
    // Escapes are decoded before the look-up, in either hex case: same user, same salt.
    let auth = ScramAuthenticator::new(Arc::new(MemoryCredentialStore::new()))
        .with_nonce_generator(|| "s".to_owned());
    let first = |message: &str| continue_text(auth.start("c").step(Some(message.as_bytes())));
    assert_eq!(first("n,,n=a=2Cb=3D,r=x"), first("n,,n=a=2cb=3d,r=x"));
    assert_ne!(first("n,,n=a=2Cb=3D,r=x"), first("n,,n=a=2Cb,r=x"));
}

/// The salt and iteration count a server-first-message announces.
fn salt_and_iterations(server_first: &str) -> (Vec<u8>, u32) {
    let mut parts = server_first.split(',');
    assert!(parts.next().unwrap().starts_with("r="));
    let salt = STANDARD
        .decode(parts.next().unwrap().strip_prefix("s=").unwrap())
        .unwrap();
    let iterations = parts
        .next()
        .unwrap()
        .strip_prefix("i=")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(parts.next(), None);
    (salt, iterations)
}

#[test]
fn unknown_user_gets_a_normal_looking_exchange_and_fails_at_the_proof() {
    let store = Arc::new({
        let mut store = MemoryCredentialStore::new();
        store.insert_password("alice", "pw", 4096).unwrap();
        store
    });
    let auth = ScramAuthenticator::new(store.clone()).with_secret([42; 32]);

    let known = continue_text(auth.start("c").step(Some(b"n,,n=alice,r=abc")));
    let unknown = continue_text(auth.start("c").step(Some(b"n,,n=mallory,r=abc")));
    let (known_salt, known_iterations) = salt_and_iterations(&known);
    let (fake_salt, fake_iterations) = salt_and_iterations(&unknown);
    assert_eq!(fake_salt.len(), known_salt.len());
    assert_eq!(fake_iterations, known_iterations);
    assert_eq!(unknown.len(), known.len());

    // Deterministic per user name and secret; different for another name or secret.
    let again = continue_text(auth.start("c").step(Some(b"n,,n=mallory,r=abc")));
    assert_eq!(salt_and_iterations(&again).0, fake_salt);
    let other = continue_text(auth.start("c").step(Some(b"n,,n=eve,r=abc")));
    assert_ne!(salt_and_iterations(&other).0, fake_salt);
    let other_secret = ScramAuthenticator::new(store).with_secret([43; 32]);
    let other = continue_text(other_secret.start("c").step(Some(b"n,,n=mallory,r=abc")));
    assert_ne!(salt_and_iterations(&other).0, fake_salt);

    // The configured fake iteration count is announced (never below the minimum).
    let tuned = auth.clone().with_fake_iterations(10_000);
    let tuned_first = continue_text(tuned.start("c").step(Some(b"n,,n=mallory,r=abc")));
    assert_eq!(salt_and_iterations(&tuned_first).1, 10_000);
    let floored = auth.clone().with_fake_iterations(1);
    let floored_first = continue_text(floored.start("c").step(Some(b"n,,n=mallory,r=abc")));
    assert_eq!(salt_and_iterations(&floored_first).1, MIN_ITERATIONS);

    // Whatever password the client tries, the proof step fails like a wrong password.
    for password in ["pw", "", "anything"] {
        assert_eq!(
            run(&auth, "mallory", password),
            AuthStep::Failure(AuthFailure::InvalidCredentials)
        );
    }
}

#[test]
fn wrong_password_fails_at_the_proof() {
    let auth = authenticator(&[("alice", "right")]);
    let step = run(&auth, "alice", "wrong");
    assert_eq!(step, AuthStep::Failure(AuthFailure::InvalidCredentials));
    assert_eq!(
        step.connack_reason(),
        Some(ConnAckReason::BadUserNameOrPassword)
    );
    assert_eq!(
        AuthFailure::InvalidCredentials.disconnect_reason(),
        DisconnectReason::NotAuthorized
    );
}

#[test]
fn malformed_client_first_messages_fail_cleanly() {
    let auth = rfc_authenticator();
    let cases: &[(&[u8], AuthFailure)] = &[
        (
            b"",
            AuthFailure::Malformed("client-first-message has no GS2 header"),
        ),
        (
            b"n,,",
            AuthFailure::Malformed("client-first-message has no user name"),
        ),
        (
            b"n,",
            AuthFailure::Malformed("client-first-message has no GS2 header"),
        ),
        (
            b"x,,n=user,r=abc",
            AuthFailure::Malformed("invalid GS2 channel binding flag"),
        ),
        (
            b"y,,n=user,r=abc",
            AuthFailure::Unsupported("channel binding"),
        ),
        (
            b"p=tls-unique,,n=user,r=abc",
            AuthFailure::Unsupported("channel binding"),
        ),
        (
            b"n,a=admin,n=user,r=abc",
            AuthFailure::Unsupported("authorization identity"),
        ),
        (
            b"n,zz,n=user,r=abc",
            AuthFailure::Malformed("invalid GS2 authorization identity"),
        ),
        (
            b"n,,m=ext,n=user,r=abc",
            AuthFailure::Unsupported("mandatory extension"),
        ),
        (
            b"n,,r=abc,n=user",
            AuthFailure::Malformed("client-first-message has no user name"),
        ),
        (
            b"n,,n=user",
            AuthFailure::Malformed("client-first-message has no nonce"),
        ),
        (
            b"n,,n=user,x=abc",
            AuthFailure::Malformed("client-first-message has no nonce"),
        ),
        (b"n,,n=user,r=", AuthFailure::Malformed("invalid nonce")),
        (b"n,,n=user,r=a b", AuthFailure::Malformed("invalid nonce")),
        (
            b"n,,n=user,r=abc,=oops",
            AuthFailure::Malformed("invalid attribute"),
        ),
        (b"n,,n=,r=abc", AuthFailure::Malformed("empty user name")),
        (
            b"n,,n=us=2Xer,r=abc",
            AuthFailure::Malformed("invalid '=' escape in user name"),
        ),
        (
            b"n,,n=user=,r=abc",
            AuthFailure::Malformed("invalid '=' escape in user name"),
        ),
        (
            b"n,,n=user=2,r=abc",
            AuthFailure::Malformed("invalid '=' escape in user name"),
        ),
        (
            b"n,,n=us\x07er,r=abc",
            AuthFailure::Malformed("user name is not valid under SASLprep"),
        ),
        (
            b"n,,n=\xff,r=abc",
            AuthFailure::Malformed("message is not UTF-8"),
        ),
    ];
    for (message, expected) in cases {
        let step = auth.start("c").step(Some(message));
        assert_eq!(
            failure(step.clone()),
            *expected,
            "for {:?}",
            String::from_utf8_lossy(message)
        );
        assert_eq!(step.connack_reason(), Some(ConnAckReason::NotAuthorized));
    }
    assert_eq!(
        failure(auth.start("c").step(None)),
        AuthFailure::Malformed("missing client-first-message")
    );
}

#[test]
fn malformed_client_final_messages_fail_cleanly() {
    let auth = rfc_authenticator();
    let nonce = format!("{RFC_CLIENT_NONCE}{RFC_SERVER_NONCE}");
    let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let cases: Vec<(String, AuthFailure)> = vec![
        (
            format!("c=biws,r={nonce}"),
            AuthFailure::Malformed("client-final-message has no proof"),
        ),
        (
            format!("r={nonce},p={proof}"),
            AuthFailure::Malformed("client-final-message has no channel binding"),
        ),
        (
            format!("c=biws,p={proof}"),
            AuthFailure::Malformed("client-final-message has no nonce"),
        ),
        (
            format!("c=eSws,r={nonce},p={proof}"),
            AuthFailure::Malformed("channel binding does not match the GS2 header"),
        ),
        (
            format!("c=b!ws,r={nonce},p={proof}"),
            AuthFailure::Malformed("channel binding is not valid base64"),
        ),
        (
            format!("c=biws,r={RFC_CLIENT_NONCE},p={proof}"),
            AuthFailure::Malformed("nonce does not match the server-first-message"),
        ),
        (
            format!("c=biws,r={nonce}x,p={proof}"),
            AuthFailure::Malformed("nonce does not match the server-first-message"),
        ),
        (
            format!("c=biws,r={nonce},p=not*base64"),
            AuthFailure::Malformed("proof is not valid base64"),
        ),
        (
            format!("c=biws,r={nonce},p=AAAA"),
            AuthFailure::Malformed("proof is not 32 bytes long"),
        ),
        (
            format!("c=biws,r={nonce},1=x,p={proof}"),
            AuthFailure::Malformed("invalid attribute"),
        ),
    ];
    for (message, expected) in cases {
        let mut exchange = auth.start("c");
        continue_text(exchange.step(Some(RFC_CLIENT_FIRST.as_bytes())));
        assert_eq!(
            failure(exchange.step(Some(message.as_bytes()))),
            expected,
            "for {message:?}"
        );
        // An exchange that failed stays failed.
        assert_eq!(
            failure(exchange.step(Some(RFC_CLIENT_FINAL.as_bytes()))),
            AuthFailure::OutOfOrder
        );
    }
    let mut exchange = auth.start("c");
    continue_text(exchange.step(Some(RFC_CLIENT_FIRST.as_bytes())));
    assert_eq!(
        failure(exchange.step(None)),
        AuthFailure::Malformed("missing client-final-message")
    );

    // Optional extensions are ignored but stay part of the signed AuthMessage: the RFC proof,
    // computed without the extension, no longer verifies.
    let mut exchange = auth.start("c");
    continue_text(exchange.step(Some(RFC_CLIENT_FIRST.as_bytes())));
    let with_extension = format!("c=biws,r={nonce},x=ext,p={proof}");
    assert_eq!(
        failure(exchange.step(Some(with_extension.as_bytes()))),
        AuthFailure::InvalidCredentials
    );
}

#[test]
fn steps_out_of_order_fail() {
    let auth = rfc_authenticator();

    // The client-final-message first: it is not a client-first-message.
    let step = auth.start("c").step(Some(RFC_CLIENT_FINAL.as_bytes()));
    assert!(matches!(failure(step), AuthFailure::Malformed(_)));

    // The client-first-message twice.
    let mut exchange = auth.start("c");
    continue_text(exchange.step(Some(RFC_CLIENT_FIRST.as_bytes())));
    assert!(matches!(
        failure(exchange.step(Some(RFC_CLIENT_FIRST.as_bytes()))),
        AuthFailure::Malformed(_)
    ));

    // Anything after success.
    let mut exchange = auth.start("c");
    continue_text(exchange.step(Some(RFC_CLIENT_FIRST.as_bytes())));
    assert!(matches!(
        exchange.step(Some(RFC_CLIENT_FINAL.as_bytes())),
        AuthStep::Success { .. }
    ));
    for data in [
        None,
        Some(RFC_CLIENT_FIRST.as_bytes()),
        Some(RFC_CLIENT_FINAL.as_bytes()),
    ] {
        let step = exchange.step(data);
        assert_eq!(failure(step.clone()), AuthFailure::OutOfOrder);
        assert_eq!(step.connack_reason(), Some(ConnAckReason::NotAuthorized));
    }
}

#[test]
fn replayed_client_final_fails_in_a_new_exchange() {
    // A recorded client-final-message is useless against a fresh server nonce.
    let auth = authenticator(&[("alice", "pw")]);
    let mut client = Client::new("alice", "pw", "cnonce");
    let mut exchange = auth.start("c");
    let server_first = continue_text(exchange.step(Some(client.first().as_bytes())));
    let recorded = client.final_message(&server_first);
    assert!(matches!(
        exchange.step(Some(recorded.as_bytes())),
        AuthStep::Success { .. }
    ));

    let mut replay = auth.start("c");
    continue_text(replay.step(Some(client.first().as_bytes())));
    assert_eq!(
        failure(replay.step(Some(recorded.as_bytes()))),
        AuthFailure::Malformed("nonce does not match the server-first-message")
    );
}

#[test]
fn step_reasons_map_to_auth_packets() {
    use vane_proto::AuthReason;
    assert_eq!(
        AuthStep::Continue(vec![]).auth_reason(),
        Some(AuthReason::ContinueAuthentication)
    );
    assert_eq!(AuthStep::Continue(vec![]).connack_reason(), None);
    let success = AuthStep::Success {
        data: None,
        username: "u".into(),
    };
    assert_eq!(success.auth_reason(), Some(AuthReason::Success));
    assert_eq!(
        AuthStep::Failure(AuthFailure::NotAuthorized).auth_reason(),
        None
    );
}

#[test]
fn credentials_from_password() {
    let salt = STANDARD.decode(RFC_SALT).unwrap();
    assert_eq!(
        ScramCredentials::from_password_with_salt("pencil", &salt, 4095),
        Err(CredentialError::TooFewIterations(4095))
    );
    assert_eq!(
        ScramCredentials::from_password("pencil", 1),
        Err(CredentialError::TooFewIterations(1))
    );
    assert_eq!(
        ScramCredentials::from_password_with_salt("pencil", &[], 4096),
        Err(CredentialError::EmptySalt)
    );
    assert_eq!(
        ScramCredentials::from_password_with_salt("bad\u{7}", &salt, 4096),
        Err(CredentialError::InvalidPassword)
    );
    // SASLprep: U+00AD (soft hyphen) maps to nothing, U+00A0 (no-break space) to a space.
    assert_eq!(
        ScramCredentials::from_password_with_salt("I\u{AD}X a", &salt, 4096),
        ScramCredentials::from_password_with_salt("IX\u{A0}a", &salt, 4096)
    );

    let random = ScramCredentials::from_password("pencil", 4096).unwrap();
    let again = ScramCredentials::from_password("pencil", 4096).unwrap();
    assert_eq!(random.salt.len(), credentials::SALT_LEN);
    assert_ne!(random.salt, again.salt);
    assert_ne!(random.stored_key, again.stored_key);

    let debug = format!("{random:?}");
    assert!(debug.contains("<redacted>"));
    assert!(!debug.contains(&format!("{:?}", random.stored_key)));
}
