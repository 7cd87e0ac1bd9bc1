//! Loading the configured authentication: the password file, SCRAM credentials for the AUTH
//! exchange (MQTT 5.0 section 4.12), JWT keys, the HTTP hook, and each listener's chain.

use std::sync::Arc;

use parking_lot::RwLock;

use sha2::{Digest, Sha256};
use vane_auth::jwt::{JwtAlgorithm, JwtKey, JwtOptions};
use vane_auth::{Authenticators, JwtVerifier, ScramAuthenticator};
use vane_config::{AuthConfig, AuthMethod, Config};

use crate::auth_hook::HttpHook;

/// Checks that the configured authentication loads (for `vane serve --check`).
pub fn check(config: &AuthConfig) -> Result<(), String> {
    load(config)?;
    load_passwords(config)?;
    load_methods(config)?;
    Ok(())
}

/// The CONNECT credential checks beyond the password file.
#[derive(Debug, Default)]
pub(crate) struct Methods {
    /// Replaced when its key file is read again (SIGHUP): key rotation without a restart.
    pub jwt: Option<RwLock<Arc<JwtVerifier>>>,
    pub hook: Option<HttpHook>,
}

impl Methods {
    /// The JWT verifier in force, when JWT is configured.
    pub(crate) fn jwt(&self) -> Option<Arc<JwtVerifier>> {
        self.jwt.as_ref().map(|cell| cell.read().clone())
    }
}

/// The JWT verifier and HTTP hook, when configured. A key file that cannot be read or used is
/// an error naming the key: it never means "allow".
pub(crate) fn load_methods(config: &AuthConfig) -> Result<Methods, String> {
    let mut methods = Methods::default();
    if let Some(verifier) = load_jwt(config)? {
        methods.jwt = Some(RwLock::new(Arc::new(verifier)));
    }
    if config.http.enabled() {
        methods.hook = Some(HttpHook::new(&config.http)?);
        tracing::info!(url = %config.http.url, timeout = ?config.http.timeout, cache_ttl = ?config.http.cache_ttl, "HTTP authentication hook enabled");
    }
    Ok(methods)
}

/// The JWT verifier with its key read from the configuration or its key file, when JWT is
/// configured. A key that cannot be read or used is an error naming it.
pub(crate) fn load_jwt(config: &AuthConfig) -> Result<Option<JwtVerifier>, String> {
    let j = &config.jwt;
    if !j.enabled() {
        return Ok(None);
    }
    let read = |key: &str, path: &str| {
        std::fs::read(path).map_err(|e| format!("auth.jwt.{key}: cannot read {path}: {e}"))
    };
    let (source, key) = if !j.secret.is_empty() {
        ("secret", JwtKey::Secret(j.secret.as_bytes().to_vec()))
    } else if !j.secret_file.is_empty() {
        let mut secret = read("secret_file", &j.secret_file)?;
        // Files written by `echo` end with a newline that is not part of the secret.
        while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            secret.pop();
        }
        ("secret_file", JwtKey::Secret(secret))
    } else if !j.public_key_file.is_empty() {
        (
            "public_key_file",
            JwtKey::PublicKeyPem(read("public_key_file", &j.public_key_file)?),
        )
    } else {
        let text = String::from_utf8(read("jwks_file", &j.jwks_file)?)
            .map_err(|_| format!("auth.jwt.jwks_file: {}: not UTF-8", j.jwks_file))?;
        ("jwks_file", JwtKey::Jwks(text))
    };
    let algorithm = match j.algorithm {
        vane_config::JwtAlgorithm::HS256 => JwtAlgorithm::Hs256,
        vane_config::JwtAlgorithm::RS256 => JwtAlgorithm::Rs256,
        vane_config::JwtAlgorithm::ES256 => JwtAlgorithm::Es256,
    };
    let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    let options = JwtOptions {
        username_claim: j.username_claim.clone(),
        issuer: non_empty(&j.issuer),
        audience: non_empty(&j.audience),
        leeway_secs: j.leeway.as_secs(),
        publish_claim: j.publish_claim.clone(),
        subscribe_claim: j.subscribe_claim.clone(),
    };
    let verifier =
        JwtVerifier::new(algorithm, key, options).map_err(|e| format!("auth.jwt.{source}: {e}"))?;
    tracing::info!(algorithm = ?j.algorithm, key = source, username_claim = %j.username_claim, "JWT authentication enabled");
    Ok(Some(verifier))
}

/// The authentication methods listener `index` runs, in order (for `vane serve --check`).
pub fn chain_names(config: &Config, index: usize) -> Vec<&'static str> {
    ListenerAuth::new(config, index)
        .chain
        .iter()
        .map(|m| m.name())
        .collect()
}

/// How one listener authenticates clients.
#[derive(Debug, Clone)]
pub(crate) struct ListenerAuth {
    /// The listener's configured address, for logs and the hook.
    pub name: String,
    /// The methods, in the order they run.
    pub chain: Vec<AuthMethod>,
    /// Whether clients no method authenticated may connect.
    pub allow_anonymous: bool,
    /// Why, for the start-up log.
    pub anonymous_why: &'static str,
    /// Which certificate name becomes the user name.
    pub identity: vane_config::CertIdentity,
}

impl ListenerAuth {
    /// The chain of listener `index`: its `auth` list, or every configured method in the
    /// default order.
    pub(crate) fn new(config: &Config, index: usize) -> ListenerAuth {
        let l = &config.listeners[index];
        let configured = |m: &AuthMethod| match m {
            AuthMethod::Certificate => l.names_certificates(),
            AuthMethod::PasswordFile => !config.auth.password_file.is_empty(),
            AuthMethod::Jwt => config.auth.jwt.enabled(),
            AuthMethod::Http => config.auth.http.enabled(),
        };
        let chain = match &l.auth {
            Some(list) => list.iter().copied().filter(configured).collect(),
            None => AuthMethod::ORDER.into_iter().filter(configured).collect(),
        };
        let (allow_anonymous, anonymous_why) = l.anonymous(config.auth.checks_credentials());
        ListenerAuth {
            name: l.bind.to_string(),
            chain,
            allow_anonymous,
            anonymous_why,
            identity: l
                .tls
                .as_ref()
                .map_or(vane_config::CertIdentity::None, |t| t.identity),
        }
    }

    /// The chain's names, for the start-up log.
    pub(crate) fn describe(&self) -> String {
        if self.chain.is_empty() {
            return "none".into();
        }
        self.chain
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Checks that the configured ACL file loads (for `vane serve --check`); returns its number of
/// rules, `None` without a file.
pub fn check_acl(config: &vane_config::AclConfig) -> Result<Option<usize>, String> {
    Ok(crate::authz::load(config)?.map(|acl| acl.len()))
}

/// The password file for user name and password in CONNECT, if one is configured. A file that
/// cannot be read or parsed is an error naming the file and line: it never means "allow".
pub(crate) fn load_passwords(
    config: &AuthConfig,
) -> Result<Option<Arc<vane_auth::PasswordFile>>, String> {
    if config.password_file.is_empty() {
        return Ok(None);
    }
    let path = &config.password_file;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{path}: not UTF-8 text"))?;
    let file = vane_auth::PasswordFile::parse_str(&text).map_err(|e| format!("{path}: {e}"))?;
    tracing::info!(
        path,
        users = file.len(),
        "password file loaded: user names in CONNECT must come with their password"
    );
    Ok(Some(Arc::new(file)))
}

/// The methods the configuration offers. An unreadable or invalid credentials file is an error
/// naming the file and line: it never means "allow".
pub(crate) fn load(config: &AuthConfig) -> Result<Authenticators, String> {
    let mut methods = Authenticators::new();
    if config.scram_credentials.is_empty() {
        return Ok(methods);
    }
    let path = &config.scram_credentials;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{path}: not UTF-8 text"))?;
    let store = vane_auth::scram::file::parse_str(&text).map_err(|e| format!("{path}: {e}"))?;
    // The secret behind the fake salts of unknown users must not change across restarts, or
    // comparing salts would tell unknown users from known ones; derived from the file, it is
    // as secret as the file's keys.
    let secret: [u8; 32] = Sha256::new()
        .chain_update(b"vane scram unknown-user secret")
        .chain_update(text.as_bytes())
        .finalize()
        .into();
    let users = store.len();
    // Unknown users are answered with the iteration count most users have, so the count does
    // not tell them apart either.
    let mut counts = std::collections::HashMap::new();
    for (_, c) in store.iter() {
        *counts.entry(c.iterations).or_insert(0usize) += 1;
    }
    let common = counts
        .into_iter()
        .max_by_key(|&(iterations, n)| (n, iterations))
        .map(|(iterations, _)| iterations);
    let mut scram = ScramAuthenticator::new(Arc::new(store)).with_secret(secret);
    if let Some(iterations) = common {
        scram = scram.with_fake_iterations(iterations);
    }
    methods.register(Arc::new(scram));
    tracing::info!(path, users, "SCRAM-SHA-256 enhanced authentication enabled");
    Ok(methods)
}
