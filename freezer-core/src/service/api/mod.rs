//! The freezer-api v2 compatible REST API: upstream's documents and their semantics over a
//! [`Store`](crate::service::store::Store), served by axum.
//!
//! * [`Documents`]: one method per API operation (job create with its ids, schedule times,
//!   `action_defaults` and action library; client registration; job events; sessions' start
//!   and end; backups; search and pagination), each checking the caller's policy.
//! * [`router`]: the HTTP routes of upstream's v2 API, mapping requests to [`Documents`]
//!   only, with upstream's status codes and `{"title", "description"}` error bodies.
//!
//! * [`serve`] and [`serve_tls`]: the server, in plain HTTP or HTTPS
//!   ([`tls_server_config`] reads the certificate and key).
//!
//! This module never prints and never exits; it logs through `tracing` (requests, and the
//! detail of internal errors with their request id), never a token or a password.

mod documents;
mod error;
mod http;
mod schema;
mod search;
mod tls;

pub use documents::SessionActionResult;
pub use documents::{Caller, Documents, new_id};
pub use error::{ApiError, ErrorKind};
pub use http::{ApiState, DEFAULT_BODY_LIMIT, router, serve};
pub use search::{Page, Search};
pub use tls::{serve_tls, server_config as tls_server_config};
