//! Reloading what the broker reads from files while it runs (SIGHUP): the ACL, the password
//! file, the JWT key, the ban list and TLS certificates. A file that cannot be read or parsed
//! keeps what is in force and is reported with its line and reason. Each file is a step of
//! its own in [`reload`].

use std::collections::HashSet;
use std::sync::Arc;

use crate::broker::Broker;

/// Files that could not be reloaded; what they held before stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reload failed, the previous contents stay in force: {}", .0.join("; "))]
pub struct ReloadError(pub Vec<String>);

/// A handle that reloads the running broker's files, for a signal handler or an admin call.
#[derive(Clone)]
pub struct ReloadHandle {
    pub(crate) broker: Arc<Broker>,
    pub(crate) tls: crate::tls::TlsReloader,
}

impl ReloadHandle {
    /// Reads the ACL, the password file, the JWT key, the ban list and the TLS listeners' certificates,
    /// keys and client CAs again (those that are configured). The new ACL
    /// applies at once to every check, including every delivery to clients already
    /// connected; clients whose password-file user was removed or whose password changed are
    /// disconnected (MQTT 5.0: DISCONNECT 0x87). Every file that fails keeps its previous
    /// contents and is named in the error.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let mut result = reload(&self.broker);
        // New TLS handshakes use the new certificates; connections already up keep theirs.
        // Each listener logs its own outcome; a failure keeps its current certificate.
        for (index, outcome) in self.tls.reload() {
            if let Err(e) = outcome {
                let failure = format!("TLS listener {index}: {e}");
                match &mut result {
                    Ok(()) => result = Err(ReloadError(vec![failure])),
                    Err(ReloadError(failures)) => failures.push(failure),
                }
            }
        }
        result
    }
}

pub(crate) fn reload(broker: &Broker) -> Result<(), ReloadError> {
    let mut failures = Vec::new();
    if let Err(e) = reload_acl(broker) {
        failures.push(format!("ACL: {e}"));
    }
    if let Err(e) = reload_passwords(broker) {
        failures.push(format!("password file: {e}"));
    }
    if let Err(e) = reload_jwt_key(broker) {
        failures.push(format!("JWT key: {e}"));
    }
    // A new ban also disconnects the connected clients it names (MQTT 5.0: 0x98).
    if let Err(e) = broker.limits.reload_bans() {
        failures.push(e);
    }
    for failure in &failures {
        tracing::error!(error = %failure, "reload failed; the previous contents stay in force");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ReloadError(failures))
    }
}

fn reload_acl(broker: &Broker) -> Result<(), String> {
    let Some(rules) = &broker.acl else {
        return Ok(());
    };
    let count = rules.reload()?;
    tracing::info!(
        path = rules.path(),
        rules = count,
        "ACL reloaded: it applies now to every publish, subscription and delivery"
    );
    Ok(())
}

fn reload_passwords(broker: &Broker) -> Result<(), String> {
    let Some(cell) = &broker.passwords else {
        return Ok(());
    };
    let Some(new) = crate::auth::load_passwords(&broker.config.auth)? else {
        return Ok(());
    };
    let old = std::mem::replace(&mut *cell.write(), new.clone());
    // Users removed, or whose password entry changed: their connections authenticated with
    // credentials that no longer hold.
    let revoked: HashSet<String> = old
        .usernames()
        .filter(|u| new.get(u) != old.get(u))
        .map(str::to_owned)
        .collect();
    if revoked.is_empty() {
        return Ok(());
    }
    for slot in broker.registry.all() {
        if let Some(user) = slot.revoke_if_user(&revoked) {
            tracing::info!(
                client_id = %slot.client_id,
                username = user,
                "password file reloaded: the user was removed or its password changed; disconnecting (MQTT 5.0: DISCONNECT 0x87)"
            );
        }
    }
    Ok(())
}

/// Reads the JWT key (secret file, public key or JWKS file) again: a rotated key applies to
/// the next CONNECT. Clients already connected stay: their token was valid when they
/// connected, and a token carries no revocation.
fn reload_jwt_key(broker: &Broker) -> Result<(), String> {
    let Some(cell) = &broker.methods.jwt else {
        return Ok(());
    };
    let Some(new) = crate::auth::load_jwt(&broker.config.auth)? else {
        return Ok(());
    };
    *cell.write() = Arc::new(new);
    tracing::info!("JWT key reloaded: it applies to every new CONNECT");
    Ok(())
}
