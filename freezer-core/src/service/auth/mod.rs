//! Who is calling: the identity a token stands for, and the authenticators that check tokens.
//!
//! Upstream freezer-api sits behind keystonemiddleware, which validates the `X-Auth-Token`
//! of every request against Keystone and hands the API the user, project and roles. Here an
//! [`Authenticator`] does that job: one validates against a real Keystone, another is the
//! standalone identity endpoint this server answers itself (`/identity/v3`).
//!
//! * [`keystone`]: [`keystone::KeystoneAuthenticator`], validation against a real Keystone.
//! * [`standalone`]: [`standalone::StandaloneIdentity`] and its Keystone v3 routes.
//! * [`users`]: the users file of the standalone identity, and [`users::hash_password`].
//! * [`policy`]: upstream freezer-api's policy rules over an [`Identity`].
//! * [`revocations`]: the standalone identity's revoked tokens, shared through the store.
//! * [`setup`]: `freezer api serve`'s authentication flags turned into the above.
//! * [`trusts`]: Keystone trusts for the centralized scheduler ([`trusts::TrustBroker`]).

pub mod keystone;
mod keystone_trusts;
pub mod policy;
pub mod revocations;
pub mod setup;
pub mod standalone;
mod token;
pub mod trusts;
pub mod users;

pub use token::TokenKey;

use async_trait::async_trait;
use jiff::Timestamp;

/// What a validated token stands for: the caller of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user's id.
    pub user_id: String,
    /// The user's name, for logs (never a secret).
    pub user_name: String,
    /// The project the token is scoped to.
    pub project_id: String,
    /// The role names, lower-cased (`admin`, `member`, `reader`, `service`).
    pub roles: Vec<String>,
    /// When the token stops being valid.
    pub expires_at: Timestamp,
}

impl Identity {
    /// Whether the identity holds `role` (case-insensitive).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case(role))
    }

    /// Upstream's `context_is_admin`: the `admin` role, which sees every project.
    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }
}

/// Why a token was not accepted. Every variant maps to HTTP 401 but `Unavailable` (503):
/// a request is never served on a token that could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token was given.
    #[error("no token given (send X-Auth-Token)")]
    Missing,
    /// The token is unknown, malformed or revoked.
    #[error("the token is not valid")]
    Invalid,
    /// The token was valid and has expired.
    #[error("the token expired at {0}")]
    Expired(Timestamp),
    /// The identity service could not be asked (it is down or refused the service user).
    #[error("the identity service could not validate the token: {0}")]
    Unavailable(String),
}

/// Turns a token into the identity it stands for. Implementations never log the token.
#[async_trait]
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Validates `token` and returns its identity.
    async fn validate(&self, token: &str) -> Result<Identity, AuthError>;
}
