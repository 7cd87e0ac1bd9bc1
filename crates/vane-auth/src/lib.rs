//! Sans-IO authentication for the Vane MQTT broker: MQTT 5.0 enhanced authentication
//! (the AUTH exchange, MQTT 5.0 section 4.12) and its SCRAM-SHA-256 method (RFC 5802, RFC 7677).
//!
//! The server owns the I/O. When a CONNECT names an Authentication Method it looks the method up
//! in an [`Authenticators`] registry (an unknown method is answered with CONNACK 0x8C, see
//! [`UnknownMethod::connack_reason`]), starts an [`AuthExchange`] and feeds it the CONNECT's
//! Authentication Data, then the data of each AUTH packet the client sends. Each
//! [`AuthExchange::step`] returns an [`AuthStep`] telling the server what to send next:
//!
//! | step | on CONNECT | on re-authentication |
//! | --- | --- | --- |
//! | [`AuthStep::Continue`] | AUTH 0x18 with the data | AUTH 0x18 with the data |
//! | [`AuthStep::Success`] | CONNACK 0x00 with the data | AUTH 0x00 with the data |
//! | [`AuthStep::Failure`] | CONNACK [`AuthFailure::connack_reason`] | DISCONNECT [`AuthFailure::disconnect_reason`] |
//!
//! ```
//! use std::sync::Arc;
//! use vane_auth::{AuthStep, Authenticators, MemoryCredentialStore, ScramAuthenticator};
//!
//! let mut store = MemoryCredentialStore::new();
//! store.insert_password("alice", "correct horse", 4096).expect("valid password");
//! let registry =
//!     Authenticators::new().with(Arc::new(ScramAuthenticator::new(Arc::new(store))));
//!
//! // CONNECT with Authentication Method "SCRAM-SHA-256" and the client-first-message.
//! let (mut exchange, step) = registry
//!     .begin("SCRAM-SHA-256", "client-1", Some(b"n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL"))
//!     .expect("known method");
//! let AuthStep::Continue(server_first) = step else { panic!("{step:?}") };
//! assert!(server_first.starts_with(b"r=fyko+d2lbbFgONRv9qkxdawL"));
//! // ...send AUTH 0x18 with `server_first`, then pass the client's AUTH data on:
//! let step = exchange.step(Some(b"c=biws,r=wrong-nonce,p=AAAA"));
//! assert!(matches!(step, AuthStep::Failure(_)));
//!
//! // An unknown method is answered with CONNACK 0x8C.
//! let unknown = registry.begin("KERBEROS", "client-1", None).err().expect("unknown");
//! assert_eq!(unknown.connack_reason().as_u8(), 0x8C);
//! ```
//!
//! Nothing in this crate performs I/O (apart from the optional [`scram::file::load`] helper)
//! or depends on an async runtime.

#![warn(missing_docs)]

pub mod acl;
mod exchange;
pub mod jwt;
pub mod password;
mod registry;
pub mod scram;
mod store;
mod username;

pub use acl::{Acl, AclAction, AclError, AclIdentity};
pub use exchange::{AuthExchange, AuthFailure, AuthStep, Authenticator};
pub use jwt::{JwtIdentity, JwtVerifier, TopicPermissions};
pub use password::{PasswordFile, PasswordHash};
pub use registry::{Authenticators, UnknownMethod};
pub use scram::{ScramAuthenticator, ScramCredentials, SCRAM_SHA_256};
pub use store::{CredentialStore, MemoryCredentialStore};
