//! The Vane broker on tokio: listeners, one task per connection that owns its session, and the
//! three shared structures (session registry, subscription index, retained messages).

#![warn(missing_docs)]

pub mod auth;
mod auth_hook;
mod authz;
mod broker;
mod connection;
mod expiry;
mod limits;
mod listener;
mod mailbox;
mod metrics;
mod metrics_http;
mod overload;
mod persistence;
mod proxy_protocol;
mod registry;
mod reload;
mod server;
mod sys;
pub mod tls;
mod token_policy;
pub mod websocket;

pub use server::{BanListHandle, Server, ServerError};
pub use tls::{Reloaded, TlsReloader};

/// Checks that the `[limits]` configuration can be used (the ban file reads and parses), for
/// `vane serve --check`.
pub fn check_limits(config: &vane_config::Config) -> Result<(), String> {
    limits::Limits::new(config).map(|_| ())
}
pub use reload::{ReloadError, ReloadHandle};
