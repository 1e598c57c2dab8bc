//! The Freezer service: what makes freezer-rs Freezer for an operator.
//!
//! * [`store`]: the [`store::Store`] trait, a versioned JSON document store, and its
//!   implementations (SQLite, the embedded default; MariaDB/MySQL for a control plane).
//! * [`api`]: the freezer-api v2 compatible REST API ([`api::router`]) and the semantics of
//!   its documents ([`api::Documents`]).
//! * [`auth`]: who is calling: the [`auth::Identity`] a request carries, and the
//!   [`auth::Authenticator`]s that turn a token into one (a real Keystone, or the standalone
//!   identity endpoint this server answers itself).
//!
//! Front-ends only start these: `freezer api serve`, `freezer scheduler`.

pub mod api;
pub mod auth;
pub mod client;
pub mod scheduler;
pub mod store;
