//! A listener's authentication chain for CONNECT: each method in turn either decides (accepts
//! or refuses) or passes the client on; a client no method decided for is anonymous, or is
//! refused when it gave credentials that no method accepted.

use std::sync::Arc;

use vane_auth::TopicPermissions;
use vane_config::AuthMethod;
use vane_proto::{ConnAckReason, Connect};

use super::handshake::Origin;
use crate::auth_hook::{HookRequest, HookVerdict};
use crate::broker::Broker;

/// Who a connection's client is, from the handshake to the end of the connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Identity {
    /// The authenticated user name; `None` for an anonymous client.
    pub username: Option<String>,
    /// The method that authenticated the client (`scram` for the AUTH exchange).
    pub method: Option<&'static str>,
    /// Topic filters a JWT limits the client to, when it carries permission claims.
    pub permissions: Option<Arc<TopicPermissions>>,
}

impl Identity {
    fn user(username: String, method: AuthMethod) -> Identity {
        Identity {
            username: Some(username),
            method: Some(method.name()),
            permissions: None,
        }
    }
}

/// A refusal and what to log about it.
struct Refusal {
    reason: ConnAckReason,
    method: &'static str,
    why: String,
}

impl Refusal {
    fn new(reason: ConnAckReason, method: &'static str, why: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            method,
            why: why.into(),
        }
    }
}

/// What one method made of a client.
enum Decision {
    Accept(Identity),
    Refuse(Refusal),
    /// Not this method's client: the next one decides.
    Pass,
}

/// Runs the listener's chain on a CONNECT. Every refusal is logged here, once, with the
/// client id, user name, peer, the method that refused and why; never the password.
pub(crate) async fn authenticate(
    broker: &Broker,
    connect: &Connect,
    client_id: &str,
    origin: &Origin,
) -> Result<Identity, ConnAckReason> {
    let username = connect.username.as_deref();
    match run(broker, connect, client_id, origin).await {
        Ok(identity) => Ok(identity),
        Err(refusal) => {
            tracing::info!(
                peer = %origin.peer,
                client_id,
                username = username.unwrap_or(""),
                listener = %origin.listener.name,
                method = refusal.method,
                reason = ?refusal.reason,
                "CONNECT refused: {}",
                refusal.why
            );
            Err(refusal.reason)
        }
    }
}

async fn run(
    broker: &Broker,
    connect: &Connect,
    client_id: &str,
    origin: &Origin,
) -> Result<Identity, Refusal> {
    let username = connect.username.as_deref();
    let password = connect.password.as_deref();
    for &method in &origin.listener.chain {
        let decision = match method {
            AuthMethod::Certificate => match &origin.cert_name {
                // The certificate's name replaces any user name in CONNECT, as Mosquitto's
                // use_identity_as_username does: the handshake proved it, CONNECT did not.
                Some(name) => Decision::Accept(Identity::user(name.clone(), method)),
                None => Decision::Pass,
            },
            AuthMethod::PasswordFile => password_file(broker, connect).await,
            AuthMethod::Jwt => jwt(broker, username, password),
            AuthMethod::Http => hook(broker, connect, client_id, origin).await,
        };
        match decision {
            Decision::Accept(identity) => return Ok(identity),
            Decision::Refuse(refusal) => return Err(refusal),
            Decision::Pass => {}
        }
    }
    let gave_credentials = username.is_some() || password.is_some();
    let checks_credentials = origin
        .listener
        .chain
        .iter()
        .any(|m| matches!(m, AuthMethod::PasswordFile | AuthMethod::Jwt));
    if gave_credentials && checks_credentials {
        if let (Some(passwords), Some(user)) = (broker.password_file(), username) {
            if origin.listener.chain.contains(&AuthMethod::PasswordFile) {
                // An unknown user costs what a known one does (a decoy hash), so that the
                // time of a refusal does not tell which user names exist.
                let user = user.to_owned();
                let password = password.map(<[u8]>::to_vec).unwrap_or_default();
                let _ =
                    tokio::task::spawn_blocking(move || passwords.verify(&user, &password)).await;
            }
        }
        return Err(Refusal::new(
            ConnAckReason::BadUserNameOrPassword,
            "chain",
            "bad user name or password (no method accepted the credentials)",
        ));
    }
    if origin.listener.allow_anonymous {
        return Ok(Identity::default());
    }
    Err(Refusal::new(
        ConnAckReason::NotAuthorized,
        "anonymous",
        "anonymous clients are not allowed on this listener",
    ))
}

/// Decides for user names the password file holds; passes others on.
async fn password_file(broker: &Broker, connect: &Connect) -> Decision {
    const NAME: &str = "password_file";
    let (Some(passwords), Some(user)) = (broker.password_file(), connect.username.as_deref())
    else {
        return Decision::Pass;
    };
    if passwords.get(user).is_none() {
        return Decision::Pass;
    }
    let Some(password) = connect.password.clone() else {
        return Decision::Refuse(Refusal::new(
            ConnAckReason::BadUserNameOrPassword,
            NAME,
            "bad user name or password (no password)",
        ));
    };
    // PBKDF2 takes milliseconds of CPU: off the runtime's workers, so that a storm of
    // CONNECTs cannot stall the clients already connected. Clients waiting for a turn wait
    // no longer than a client may take to send CONNECT; then they are told the server is
    // busy (MQTT 3.x: return code 3).
    let timeout = broker.config.mqtt.connect_timeout;
    let Ok(Ok(_permit)) = tokio::time::timeout(timeout, broker.password_checks.acquire()).await
    else {
        return Decision::Refuse(Refusal::new(
            ConnAckReason::ServerBusy,
            NAME,
            "too many password checks waiting",
        ));
    };
    let name = user.to_owned();
    let verified = tokio::task::spawn_blocking(move || passwords.verify(&name, &password))
        .await
        .unwrap_or(false);
    if verified {
        Decision::Accept(Identity::user(user.to_owned(), AuthMethod::PasswordFile))
    } else {
        Decision::Refuse(Refusal::new(
            ConnAckReason::BadUserNameOrPassword,
            NAME,
            "bad user name or password",
        ))
    }
}

/// Decides when the password is a JSON Web Token; passes other passwords on.
fn jwt(broker: &Broker, username: Option<&str>, password: Option<&[u8]>) -> Decision {
    let (Some(verifier), Some(token)) = (broker.methods.jwt(), password) else {
        return Decision::Pass;
    };
    if !vane_auth::jwt::looks_like_jwt(token) {
        return Decision::Pass;
    }
    match verifier.verify(token, username) {
        Ok(id) => Decision::Accept(Identity {
            username: Some(id.username),
            method: Some(AuthMethod::Jwt.name()),
            permissions: id.permissions.map(Arc::new),
        }),
        Err(e) => Decision::Refuse(Refusal::new(
            ConnAckReason::BadUserNameOrPassword,
            "jwt",
            e.to_string(),
        )),
    }
}

/// The hook decides for every client that reaches it.
async fn hook(broker: &Broker, connect: &Connect, client_id: &str, origin: &Origin) -> Decision {
    const NAME: &str = "http";
    let Some(hook) = &broker.methods.hook else {
        return Decision::Pass;
    };
    let protocol = connect.protocol.to_string();
    let request = HookRequest {
        client_id,
        username: connect.username.as_deref(),
        password: connect.password.as_deref(),
        peer: origin.peer,
        listener: &origin.listener.name,
        protocol: &protocol,
    };
    match hook.check(&request).await {
        HookVerdict::Allow => Decision::Accept(Identity {
            username: connect.username.as_deref().map(str::to_owned),
            method: Some(NAME),
            permissions: None,
        }),
        HookVerdict::Deny => Decision::Refuse(Refusal::new(
            ConnAckReason::BadUserNameOrPassword,
            NAME,
            "denied by the HTTP hook",
        )),
        HookVerdict::Unavailable(why) => Decision::Refuse(Refusal::new(
            ConnAckReason::ServerUnavailable,
            NAME,
            format!("the HTTP hook gave no answer: {why}"),
        )),
    }
}
