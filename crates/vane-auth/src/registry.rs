//! The [`Authenticators`] registry: the enhanced authentication methods a server offers, by
//! Authentication Method name.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use vane_proto::{ConnAckReason, DisconnectReason};

use crate::exchange::{AuthExchange, AuthStep, Authenticator};

/// The authentication methods a server offers, looked up by the exact Authentication Method
/// name a client sends.
#[derive(Clone, Default)]
pub struct Authenticators {
    by_method: BTreeMap<String, Arc<dyn Authenticator>>,
}

impl Authenticators {
    /// An empty registry: every method is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an authenticator under its [`Authenticator::method`] name and returns the one it
    /// replaces, if any.
    pub fn register(
        &mut self,
        authenticator: Arc<dyn Authenticator>,
    ) -> Option<Arc<dyn Authenticator>> {
        self.by_method
            .insert(authenticator.method().to_owned(), authenticator)
    }

    /// Builder form of [`Authenticators::register`].
    #[must_use]
    pub fn with(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.register(authenticator);
        self
    }

    /// The authenticator for `method`, or [`UnknownMethod`] (answered with CONNACK 0x8C).
    pub fn get(&self, method: &str) -> Result<&Arc<dyn Authenticator>, UnknownMethod> {
        self.by_method.get(method).ok_or_else(|| UnknownMethod {
            method: method.to_owned(),
        })
    }

    /// Looks `method` up, starts an exchange for `client_id` and steps it once with the
    /// CONNECT's (or AUTH 0x19's) Authentication Data. The server then acts on the returned
    /// [`AuthStep`] and keeps the exchange while it returns [`AuthStep::Continue`].
    pub fn begin(
        &self,
        method: &str,
        client_id: &str,
        data: Option<&[u8]>,
    ) -> Result<(Box<dyn AuthExchange>, AuthStep), UnknownMethod> {
        let mut exchange = self.get(method)?.start(client_id);
        let step = exchange.step(data);
        Ok((exchange, step))
    }

    /// The registered method names, in sorted order.
    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.by_method.keys().map(String::as_str)
    }

    /// The number of registered methods.
    pub fn len(&self) -> usize {
        self.by_method.len()
    }

    /// True when no method is registered.
    pub fn is_empty(&self) -> bool {
        self.by_method.is_empty()
    }
}

impl fmt::Debug for Authenticators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticators")
            .field("methods", &self.by_method.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A client named an Authentication Method the server does not offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported authentication method {method:?}")]
pub struct UnknownMethod {
    /// The method name the client sent.
    pub method: String,
}

impl UnknownMethod {
    /// The CONNACK reason code for an unknown method: 0x8C (Bad authentication method).
    pub fn connack_reason(&self) -> ConnAckReason {
        ConnAckReason::BadAuthenticationMethod
    }

    /// The DISCONNECT reason code when a re-authentication names another method than the
    /// CONNECT did: 0x82 (Protocol Error, MQTT 5.0 section 4.12.1).
    pub fn disconnect_reason(&self) -> DisconnectReason {
        DisconnectReason::ProtocolError
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::exchange::AuthFailure;
    use crate::scram::{ScramAuthenticator, SCRAM_SHA_256};
    use crate::store::MemoryCredentialStore;

    /// A one-step method accepting the data `"letmein"`, to show the trait is not SCRAM-shaped.
    struct Token;

    struct TokenExchange;

    impl Authenticator for Token {
        fn method(&self) -> &str {
            "TOKEN"
        }

        fn start(&self, _client_id: &str) -> Box<dyn AuthExchange> {
            Box::new(TokenExchange)
        }
    }

    impl AuthExchange for TokenExchange {
        fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
            match data {
                Some(b"letmein") => AuthStep::Success {
                    data: None,
                    username: "token-user".into(),
                },
                _ => AuthStep::Failure(AuthFailure::NotAuthorized),
            }
        }
    }

    fn registry() -> Authenticators {
        let scram = ScramAuthenticator::new(Arc::new(MemoryCredentialStore::new()));
        Authenticators::new()
            .with(Arc::new(scram))
            .with(Arc::new(Token))
    }

    #[test]
    fn lookup_by_exact_method_name() {
        let registry = registry();
        assert_eq!(registry.len(), 2);
        assert!(!registry.is_empty());
        assert_eq!(
            registry.methods().collect::<Vec<_>>(),
            ["SCRAM-SHA-256", "TOKEN"]
        );
        assert_eq!(registry.get(SCRAM_SHA_256).unwrap().method(), SCRAM_SHA_256);
        assert_eq!(
            format!("{registry:?}"),
            r#"Authenticators { methods: ["SCRAM-SHA-256", "TOKEN"] }"#
        );

        for method in ["scram-sha-256", "SCRAM-SHA-1", "", "TOKEN "] {
            let error = registry.get(method).err().unwrap();
            assert_eq!(error.method, method);
            assert_eq!(
                error.connack_reason(),
                ConnAckReason::BadAuthenticationMethod
            );
            assert_eq!(error.connack_reason().as_u8(), 0x8C);
            assert_eq!(error.disconnect_reason(), DisconnectReason::ProtocolError);
        }
        assert!(Authenticators::new().is_empty());
    }

    #[test]
    fn register_replaces_by_method() {
        let mut registry = registry();
        assert!(registry.register(Arc::new(Token)).is_some());
        assert_eq!(registry.len(), 2);
    }

    #[test]
    fn begin_starts_and_steps_once() {
        let registry = registry();
        let (_, step) = registry.begin("TOKEN", "c", Some(b"letmein")).unwrap();
        assert_eq!(step.connack_reason(), Some(ConnAckReason::Success));
        let (_, step) = registry.begin("TOKEN", "c", None).unwrap();
        assert_eq!(step.connack_reason(), Some(ConnAckReason::NotAuthorized));

        let (mut exchange, step) = registry
            .begin(SCRAM_SHA_256, "c", Some(b"n,,n=nobody,r=abc"))
            .unwrap();
        assert!(matches!(step, AuthStep::Continue(_)));
        assert!(matches!(
            exchange.step(Some(b"c=biws")),
            AuthStep::Failure(_)
        ));

        let error = registry.begin("PLAIN", "c", None).err().unwrap();
        assert_eq!(
            error.to_string(),
            r#"unsupported authentication method "PLAIN""#
        );
    }
}
