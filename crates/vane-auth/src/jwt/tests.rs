//! Tokens made here with `jsonwebtoken::encode` (HS256 with a secret, ES256 with a P-256 key
//! from rcgen), checked by the verifier for each way a token must be refused.

use super::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

const SECRET: &[u8] = b"a secret of the broker and its token issuer";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn options() -> JwtOptions {
    JwtOptions {
        username_claim: "sub".into(),
        issuer: None,
        audience: None,
        leeway_secs: 0,
        publish_claim: "publish".into(),
        subscribe_claim: "subscribe".into(),
    }
}

fn hs256() -> JwtVerifier {
    JwtVerifier::new(
        JwtAlgorithm::Hs256,
        JwtKey::Secret(SECRET.to_vec()),
        options(),
    )
    .expect("valid secret")
}

fn hs_token(claims: Value) -> Vec<u8> {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("encodes")
    .into_bytes()
}

#[test]
fn valid_hs256_token_names_its_subject() {
    let token = hs_token(json!({"sub": "alice", "exp": now() + 600}));
    assert!(looks_like_jwt(&token));
    let id = hs256().verify(&token, None).expect("valid");
    assert_eq!(id.username, "alice");
    assert_eq!(id.permissions, None);
    // A CONNECT user name, when given, must be the token's.
    assert!(hs256().verify(&token, Some("alice")).is_ok());
    assert_eq!(
        hs256().verify(&token, Some("mallory")),
        Err(JwtError::UsernameMismatch("sub".into()))
    );
}

#[test]
fn expired_not_yet_valid_and_exp_less_tokens_are_refused() {
    let v = hs256();
    let expired = hs_token(json!({"sub": "alice", "exp": now() - 60}));
    assert!(matches!(
        v.verify(&expired, None),
        Err(JwtError::Invalid(_))
    ));
    let early = hs_token(json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 300}));
    assert!(matches!(v.verify(&early, None), Err(JwtError::Invalid(_))));
    // `exp` is required: a token without it would be valid forever.
    let forever = hs_token(json!({"sub": "alice"}));
    assert!(matches!(
        v.verify(&forever, None),
        Err(JwtError::Invalid(_))
    ));
}

#[test]
fn leeway_accepts_a_token_expired_within_it() {
    let v = JwtVerifier::new(
        JwtAlgorithm::Hs256,
        JwtKey::Secret(SECRET.to_vec()),
        JwtOptions {
            leeway_secs: 120,
            ..options()
        },
    )
    .expect("valid");
    let token = hs_token(json!({"sub": "alice", "exp": now() - 60}));
    assert!(v.verify(&token, None).is_ok());
}

#[test]
fn wrong_secret_other_algorithm_and_tampering_are_refused() {
    let v = hs256();
    let claims = json!({"sub": "alice", "exp": now() + 600});
    let other = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"another secret"),
    )
    .expect("encodes");
    assert!(matches!(
        v.verify(other.as_bytes(), None),
        Err(JwtError::Invalid(_))
    ));
    let hs384 = encode(
        &Header::new(Algorithm::HS384),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("encodes");
    assert!(matches!(
        v.verify(hs384.as_bytes(), None),
        Err(JwtError::Invalid(_))
    ));
    // The payload swapped for another user's, the signature kept.
    let good = String::from_utf8(hs_token(claims)).expect("ascii");
    let bob =
        String::from_utf8(hs_token(json!({"sub": "bob", "exp": now() + 600}))).expect("ascii");
    let parts: Vec<&str> = good.split('.').collect();
    let bob_payload = bob.split('.').nth(1).expect("payload");
    let forged = format!("{}.{}.{}", parts[0], bob_payload, parts[2]);
    assert!(matches!(
        v.verify(forged.as_bytes(), None),
        Err(JwtError::Invalid(_))
    ));
    // alg "none" is never accepted.
    let none = format!("eyJhbGciOiJub25lIn0.{bob_payload}.");
    assert!(v.verify(none.as_bytes(), None).is_err());
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let v = JwtVerifier::new(
        JwtAlgorithm::Hs256,
        JwtKey::Secret(SECRET.to_vec()),
        JwtOptions {
            issuer: Some("https://idp.example".into()),
            audience: Some("vane".into()),
            ..options()
        },
    )
    .expect("valid");
    let exp = now() + 600;
    let right =
        hs_token(json!({"sub": "a", "exp": exp, "iss": "https://idp.example", "aud": "vane"}));
    assert!(v.verify(&right, None).is_ok());
    let wrong_iss = hs_token(json!({"sub": "a", "exp": exp, "iss": "https://evil", "aud": "vane"}));
    assert!(v.verify(&wrong_iss, None).is_err());
    let wrong_aud =
        hs_token(json!({"sub": "a", "exp": exp, "iss": "https://idp.example", "aud": "x"}));
    assert!(v.verify(&wrong_aud, None).is_err());
    let no_aud = hs_token(json!({"sub": "a", "exp": exp, "iss": "https://idp.example"}));
    assert!(v.verify(&no_aud, None).is_err());
}

#[test]
fn username_claim_must_be_a_string() {
    let v = hs256();
    let token = hs_token(json!({"exp": now() + 600, "name": "alice"}));
    assert_eq!(
        v.verify(&token, None),
        Err(JwtError::NoUsername("sub".into()))
    );
    let token = hs_token(json!({"exp": now() + 600, "sub": 42}));
    assert_eq!(
        v.verify(&token, None),
        Err(JwtError::NoUsername("sub".into()))
    );
}

#[test]
fn permission_claims_are_read_and_malformed_ones_refused() {
    let v = hs256();
    let token = hs_token(json!({
        "sub": "sensor-7", "exp": now() + 600,
        "publish": ["sensors/7/#"], "subscribe": ["cmd/7", "cmd/all"]
    }));
    let id = v.verify(&token, None).expect("valid");
    assert_eq!(
        id.permissions,
        Some(TopicPermissions {
            publish: vec!["sensors/7/#".into()],
            subscribe: vec!["cmd/7".into(), "cmd/all".into()],
        })
    );
    // One claim alone limits both directions: nothing may be subscribed to.
    let token = hs_token(json!({"sub": "s", "exp": now() + 600, "publish": ["a"]}));
    let id = v.verify(&token, None).expect("valid");
    assert_eq!(id.permissions.map(|p| p.subscribe.len()), Some(0));
    for bad in [
        json!("a/#"),
        json!([1]),
        json!([""]),
        json!({"a": 1}),
        // Not topic filters: a wildcard inside a level or before the end, a shared one.
        json!(["a/#/b"]),
        json!(["a+/b"]),
        json!(["$share/g/a"]),
    ] {
        let token = hs_token(json!({"sub": "s", "exp": now() + 600, "publish": bad}));
        assert_eq!(
            v.verify(&token, None),
            Err(JwtError::BadPermissions("publish".into()))
        );
    }
}

#[test]
fn passwords_that_are_not_tokens_are_not_taken_for_one() {
    assert!(!looks_like_jwt(b"hunter2"));
    assert!(!looks_like_jwt(b"a.b.c"));
    assert!(!looks_like_jwt(&[0xff, b'.', b'.']));
    assert!(looks_like_jwt(b"eyJhbGciOiJIUzI1NiJ9.e30.x"));
}

fn es256_key() -> (rcgen::KeyPair, EncodingKey) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("PKCS#8 PEM");
    (pair, encoding)
}

fn es_token(key: &EncodingKey, kid: Option<&str>, sub: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    encode(&header, &json!({"sub": sub, "exp": now() + 600}), key).expect("encodes")
}

#[test]
fn es256_with_a_pem_public_key() {
    let (pair, key) = es256_key();
    let v = JwtVerifier::new(
        JwtAlgorithm::Es256,
        JwtKey::PublicKeyPem(pair.public_key_pem().into_bytes()),
        options(),
    )
    .expect("valid public key");
    let id = v
        .verify(es_token(&key, None, "dev-1").as_bytes(), None)
        .expect("valid");
    assert_eq!(id.username, "dev-1");
    let (_, other) = es256_key();
    assert!(v
        .verify(es_token(&other, None, "dev-1").as_bytes(), None)
        .is_err());
    // An HS256 token is refused by an ES256 verifier whatever its signature.
    assert!(v
        .verify(&hs_token(json!({"sub": "x", "exp": now() + 600})), None)
        .is_err());
}

fn jwk(pair: &rcgen::KeyPair, kid: &str) -> Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    // Uncompressed point: 0x04, x, y.
    let raw = pair.public_key_raw();
    json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    })
}

#[test]
fn es256_with_a_jwks_picks_the_key_by_kid() {
    let (pair_a, key_a) = es256_key();
    let (pair_b, key_b) = es256_key();
    let set = json!({"keys": [jwk(&pair_a, "a"), jwk(&pair_b, "b")]}).to_string();
    let v = JwtVerifier::new(JwtAlgorithm::Es256, JwtKey::Jwks(set), options()).expect("JWKS");
    assert!(v
        .verify(es_token(&key_a, Some("a"), "x").as_bytes(), None)
        .is_ok());
    assert!(v
        .verify(es_token(&key_b, Some("b"), "x").as_bytes(), None)
        .is_ok());
    // Signed by a, claiming to be b.
    assert!(v
        .verify(es_token(&key_a, Some("b"), "x").as_bytes(), None)
        .is_err());
    assert_eq!(
        v.verify(es_token(&key_a, Some("c"), "x").as_bytes(), None),
        Err(JwtError::UnknownKey)
    );
    // Two keys and no kid: no key to choose.
    assert_eq!(
        v.verify(es_token(&key_a, None, "x").as_bytes(), None),
        Err(JwtError::UnknownKey)
    );
}

#[test]
fn keys_that_do_not_fit_the_algorithm_are_refused_at_load() {
    assert!(JwtVerifier::new(JwtAlgorithm::Hs256, JwtKey::Secret(Vec::new()), options()).is_err());
    assert!(JwtVerifier::new(
        JwtAlgorithm::Es256,
        JwtKey::Secret(b"s".to_vec()),
        options()
    )
    .is_err());
    assert!(JwtVerifier::new(
        JwtAlgorithm::Es256,
        JwtKey::PublicKeyPem(b"junk".to_vec()),
        options()
    )
    .is_err());
    assert!(JwtVerifier::new(
        JwtAlgorithm::Rs256,
        JwtKey::Jwks("{\"keys\": []}".into()),
        options()
    )
    .is_err());
    assert!(JwtVerifier::new(
        JwtAlgorithm::Rs256,
        JwtKey::Jwks("not json".into()),
        options()
    )
    .is_err());
}

#[test]
fn token_permissions_match_topics_and_cover_filters() {
    let p = TopicPermissions {
        publish: vec!["sensors/7/#".into(), "status/+".into()],
        subscribe: vec!["cmd/7/#".into(), "broadcast/+/news".into()],
    };
    assert!(p.may_publish("sensors/7"));
    assert!(p.may_publish("sensors/7/temp/c"));
    assert!(p.may_publish("status/7"));
    assert!(!p.may_publish("sensors/8/temp"));
    assert!(!p.may_publish("status/7/extra"));
    assert!(!p.may_publish("cmd/7"));
    // Subscribe: the filter must be covered, not merely overlap.
    assert!(p.may_subscribe("cmd/7/#"));
    assert!(p.may_subscribe("cmd/7/+/reboot"));
    assert!(p.may_subscribe("cmd/7"));
    assert!(p.may_subscribe("broadcast/+/news"));
    assert!(p.may_subscribe("broadcast/eu/news"));
    assert!(!p.may_subscribe("broadcast/#"));
    assert!(!p.may_subscribe("broadcast/eu/+"));
    assert!(!p.may_subscribe("cmd/#"));
    assert!(!p.may_subscribe("#"));
    assert!(p.may_receive("cmd/7/reboot"));
    assert!(p.may_receive("broadcast/eu/news"));
    assert!(!p.may_receive("broadcast/eu/sports"));
    // [MQTT-4.7.2-1] first-level wildcards never reach `$` topics.
    let all = TopicPermissions {
        publish: vec!["#".into()],
        subscribe: vec!["+/#".into()],
    };
    assert!(!all.may_publish("$SYS/broker/load"));
    assert!(!all.may_subscribe("$SYS/#"));
    assert!(!all.may_receive("$SYS/x"));
    assert!(all.may_subscribe("a/b"));
    // No claim for a direction: nothing in it.
    let none = TopicPermissions::default();
    assert!(!none.may_publish("a") && !none.may_subscribe("a") && !none.may_receive("a"));
}
