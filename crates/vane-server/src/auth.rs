//! Enhanced authentication (MQTT 5.0 section 4.12): loading the configured methods, and running
//! an AUTH exchange over a connection.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use vane_auth::{Authenticators, ScramAuthenticator};
use vane_config::AuthConfig;

/// Checks that the configured authentication loads (for `vane serve --check`).
pub fn check(config: &AuthConfig) -> Result<(), String> {
    load(config)?;
    load_passwords(config)?;
    Ok(())
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
