//! JSON Web Tokens (RFC 7519) given as the CONNECT password: signature (HS256, RS256, ES256
//! from a secret, a PEM public key or a JWKS), `exp` (required) and `nbf`, optional `iss` and
//! `aud`, the user name from a claim, and optional topic permissions from claims.

use std::fmt;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// The signature algorithm tokens must use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
}

impl JwtAlgorithm {
    fn algorithm(self) -> Algorithm {
        match self {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Es256 => Algorithm::ES256,
        }
    }
}

/// Where the verifying key comes from (the content, already read from its file).
#[derive(Debug, Clone)]
pub enum JwtKey {
    /// HS256 shared secret.
    Secret(Vec<u8>),
    /// A PEM public key or certificate (RS256, ES256).
    PublicKeyPem(Vec<u8>),
    /// A JWKS document (RS256, ES256); keys are chosen by the token's `kid`.
    Jwks(String),
}

/// What a verifier checks besides the signature.
#[derive(Debug, Clone)]
pub struct JwtOptions {
    /// The claim holding the user name.
    pub username_claim: String,
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Required `aud`, if any.
    pub audience: Option<String>,
    /// Seconds of clock skew allowed for `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Claim listing the topic filters the client may publish to.
    pub publish_claim: String,
    /// Claim listing the topic filters the client may subscribe to.
    pub subscribe_claim: String,
}

/// Topic filters a token limits its client to. A token carrying either claim is limited to
/// what it lists; a missing claim of the two then allows nothing for that direction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicPermissions {
    /// Filters the client may publish to.
    pub publish: Vec<String>,
    /// Filters the client may subscribe to.
    pub subscribe: Vec<String>,
}

impl TopicPermissions {
    /// May the client publish to the topic name `topic`? Some `publish` filter must match it.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish
            .iter()
            .any(|f| vane_proto::filter_matches(f, topic))
    }

    /// May the client subscribe to `filter` (without any `$share/<group>/` prefix)? Some
    /// `subscribe` filter must cover it: match every topic it can match (`a/#` covers
    /// `a/+/b`, `a/+/b` does not cover `a/#`).
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe.iter().any(|f| filter_covers(f, filter))
    }

    /// May the client receive a message published on `topic`? Some `subscribe` filter must
    /// match it.
    pub fn may_receive(&self, topic: &str) -> bool {
        self.subscribe
            .iter()
            .any(|f| vane_proto::filter_matches(f, topic))
    }
}

/// Whether every topic `filter` matches is matched by `pattern`.
fn filter_covers(pattern: &str, filter: &str) -> bool {
    let mut p_levels = pattern.split('/');
    let mut f_levels = filter.split('/');
    let mut first = true;
    loop {
        match (p_levels.next(), f_levels.next()) {
            (Some("#"), Some(f)) => return !(first && f.starts_with('$')),
            // `a/#` matches `a` too.
            (Some("#"), None) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(f)) => {
                if first && f.starts_with('$') {
                    return false;
                }
            }
            (Some(_), Some("+")) => return false,
            (Some(p), Some(f)) => {
                if p != f {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// Who a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIdentity {
    /// The user name claim.
    pub username: String,
    /// The token's topic permissions, when it carries permission claims.
    pub permissions: Option<TopicPermissions>,
}

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwtKeyError {
    /// The PEM key is not usable for the algorithm.
    #[error("not a usable {algorithm:?} public key: {reason}")]
    Pem {
        /// The configured algorithm.
        algorithm: JwtAlgorithm,
        /// The parser's reason.
        reason: String,
    },
    /// The JWKS is not valid JSON or has no usable key.
    #[error("invalid JWKS: {0}")]
    Jwks(String),
    /// A secret for RS256/ES256 or a public key for HS256.
    #[error("{0:?} does not take this kind of key")]
    WrongKind(JwtAlgorithm),
    /// An empty HS256 secret.
    #[error("the secret is empty")]
    EmptySecret,
}

/// Why a token was refused. The messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Signature, algorithm, format, `exp`, `nbf`, `iss` or `aud` check failed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// No key of the JWKS matches the token's `kid`.
    #[error("no key in the JWKS for the token's kid")]
    UnknownKey,
    /// The user name claim is missing or not a string.
    #[error("claim `{0}` is missing or not a string")]
    NoUsername(String),
    /// The CONNECT user name differs from the token's.
    #[error("the CONNECT user name is not the token's `{0}` claim")]
    UsernameMismatch(String),
    /// A permission claim is not an array of strings.
    #[error("claim `{0}` is not an array of topic filters")]
    BadPermissions(String),
}

/// Verifies tokens against one key or a key set.
pub struct JwtVerifier {
    keys: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
    options: JwtOptions,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// Whether a password has the shape of a JWT (three base64url parts, a JSON header naming an
/// algorithm): such passwords are the JWT method's to decide.
pub fn looks_like_jwt(password: &[u8]) -> bool {
    std::str::from_utf8(password)
        .ok()
        .filter(|s| s.split('.').count() == 3)
        .is_some_and(|s| jsonwebtoken::decode_header(s).is_ok())
}

impl JwtVerifier {
    /// A verifier for tokens signed with `algorithm` by `key`.
    pub fn new(
        algorithm: JwtAlgorithm,
        key: JwtKey,
        options: JwtOptions,
    ) -> Result<JwtVerifier, JwtKeyError> {
        let keys = match (algorithm, key) {
            (JwtAlgorithm::Hs256, JwtKey::Secret(secret)) => {
                if secret.is_empty() {
                    return Err(JwtKeyError::EmptySecret);
                }
                vec![(None, DecodingKey::from_secret(&secret))]
            }
            (JwtAlgorithm::Hs256, _) | (_, JwtKey::Secret(_)) => {
                return Err(JwtKeyError::WrongKind(algorithm))
            }
            (JwtAlgorithm::Rs256, JwtKey::PublicKeyPem(pem)) => {
                let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| JwtKeyError::Pem {
                    algorithm,
                    reason: e.to_string(),
                })?;
                vec![(None, key)]
            }
            (JwtAlgorithm::Es256, JwtKey::PublicKeyPem(pem)) => {
                let key = DecodingKey::from_ec_pem(&pem).map_err(|e| JwtKeyError::Pem {
                    algorithm,
                    reason: e.to_string(),
                })?;
                vec![(None, key)]
            }
            (_, JwtKey::Jwks(text)) => jwks_keys(algorithm, &text)?,
        };
        let mut validation = Validation::new(algorithm.algorithm());
        validation.leeway = options.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured issuer or audience must be in the token: jsonwebtoken checks only
        // claims that are present unless they are required.
        let mut required = vec!["exp"];
        match &options.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &options.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // Without a configured audience, a token's `aud` is not checked.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtVerifier {
            keys,
            validation,
            options,
        })
    }

    /// Verifies `token` (the CONNECT password). A `username` from CONNECT, when given, must be
    /// the token's user name claim.
    pub fn verify(&self, token: &[u8], username: Option<&str>) -> Result<JwtIdentity, JwtError> {
        let token =
            std::str::from_utf8(token).map_err(|_| JwtError::Invalid("not UTF-8 text".into()))?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
        let key = match (self.keys.as_slice(), &header.kid) {
            ([(_, only)], None) => only,
            (keys, Some(kid)) => keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid.as_str()))
                .or_else(|| match keys {
                    // A single key without a kid verifies every token.
                    [(None, _)] => keys.first(),
                    _ => None,
                })
                .map(|(_, key)| key)
                .ok_or(JwtError::UnknownKey)?,
            (_, None) => return Err(JwtError::UnknownKey),
        };
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, &self.validation)
                .map_err(|e| JwtError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let name_claim = &self.options.username_claim;
        let Some(Value::String(name)) = claims.get(name_claim) else {
            return Err(JwtError::NoUsername(name_claim.clone()));
        };
        if username.is_some_and(|u| u != name) {
            return Err(JwtError::UsernameMismatch(name_claim.clone()));
        }
        let publish = filters(&claims, &self.options.publish_claim)?;
        let subscribe = filters(&claims, &self.options.subscribe_claim)?;
        let permissions = match (publish, subscribe) {
            (None, None) => None,
            (publish, subscribe) => Some(TopicPermissions {
                publish: publish.unwrap_or_default(),
                subscribe: subscribe.unwrap_or_default(),
            }),
        };
        Ok(JwtIdentity {
            username: name.clone(),
            permissions,
        })
    }
}

/// The filters of a permission claim; `None` when the claim is absent.
fn filters(
    claims: &serde_json::Map<String, Value>,
    claim: &str,
) -> Result<Option<Vec<String>>, JwtError> {
    if claim.is_empty() {
        return Ok(None);
    }
    match claims.get(claim) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                // A valid, unshared topic filter: matching assumes one (`a/#/b` would
                // otherwise match more than it says).
                Value::String(s)
                    if vane_proto::TopicFilter::parse(s.as_str())
                        .is_ok_and(|f| f.share_group().is_none()) =>
                {
                    Ok(s.clone())
                }
                _ => Err(JwtError::BadPermissions(claim.to_owned())),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(JwtError::BadPermissions(claim.to_owned())),
    }
}

/// The keys of a JWKS usable with `algorithm`, with their `kid`s.
fn jwks_keys(
    algorithm: JwtAlgorithm,
    text: &str,
) -> Result<Vec<(Option<String>, DecodingKey)>, JwtKeyError> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| JwtKeyError::Jwks(e.to_string()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let fits = matches!(
            (&jwk.algorithm, algorithm),
            (AlgorithmParameters::RSA(_), JwtAlgorithm::Rs256)
                | (AlgorithmParameters::EllipticCurve(_), JwtAlgorithm::Es256)
        );
        if !fits {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| JwtKeyError::Jwks(e.to_string()))?;
        keys.push((jwk.common.key_id.clone(), key));
    }
    if keys.is_empty() {
        return Err(JwtKeyError::Jwks(format!(
            "no {algorithm:?} key among its {} keys",
            set.keys.len()
        )));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
