//! The Vane broker on tokio: listeners, one task per connection that owns its session, and the
//! three shared structures (session registry, subscription index, retained messages).

#![warn(missing_docs)]

pub mod auth;
mod authz;
mod broker;
mod connection;
mod expiry;
mod listener;
mod mailbox;
mod persistence;
mod registry;
mod reload;
mod server;
pub mod tls;

pub use reload::{ReloadError, ReloadHandle};
pub use server::{Server, ServerError};
