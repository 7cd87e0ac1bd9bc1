//! Sans-IO MQTT broker logic: the per-client [`Session`] state machine, the
//! [`SubscriptionIndex`] that routes topics to subscribers, [`RetainedMessages`], and the
//! bounded [`MessageQueue`] that holds deliveries for a client.
//!
//! Nothing here touches a socket, a clock or a disk: callers pass the current [`Instant`]
//! in and take packets out, so every rule can be tested deterministically.
//!
//! [`Instant`]: std::time::Instant

#![warn(missing_docs)]

#[doc(hidden)]
pub mod fuzzing;
mod message;
mod queue;
mod retained;
mod routing;
pub mod session;
mod subscription_index;

pub use message::{detach, Delivery, Message};
pub use queue::{MessageQueue, Offer, OverflowPolicy, QueueLimits};
pub use retained::{RetainedMessages, RetainedStore};
pub use routing::RouteScratch;
pub use session::{Session, SessionConfig, SessionError};
pub use subscription_index::{Picker, SharePolicy, SharedMatch, Subscription, SubscriptionIndex};
