//! Keystone trusts, for upstream's "centralized scheduler": a user (the trustor) lets the
//! API's service user (the trustee) act in the trustor's project with a few delegated roles,
//! so that one central scheduler, running as the service user, runs every project's jobs and
//! reports each into its own project.
//!
//! [`TrustBroker`] is what the API asks when a job is created for a central client (or
//! `--enforce-trusts` is on) and when such a job is deleted. Two implement it: the standalone
//! identity (trusts kept in the document store, shared by API servers on one database) and
//! [`KeystoneAuthenticator`](super::keystone::KeystoneAuthenticator) (Keystone's `OS-TRUST`
//! API, called with the caller's own token, as upstream does). A broker never logs a token.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::Identity;
use super::users::derived_id;

/// A trust as Keystone describes it (the subset the flow needs). Upstream creates them
/// without impersonation and without redelegation: a trust-scoped token names the trustee
/// as its user, in the trustor's project, with the delegated roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    /// The trust's id.
    pub id: String,
    /// The user who delegates (the job's creator).
    pub trustor_user_id: String,
    /// The user who acts (the API's service user).
    pub trustee_user_id: String,
    /// The trustor's project the trust is scoped to.
    pub project_id: String,
    /// Whether a trust-scoped token names the trustor (always `false` here, as upstream).
    pub impersonation: bool,
    /// The delegated role names, lower-cased.
    pub roles: Vec<String>,
}

impl Trust {
    /// Keystone's `trust` object.
    pub fn to_keystone(&self) -> Value {
        let roles: Vec<Value> = self
            .roles
            .iter()
            .map(|r| json!({"id": derived_id("role", r), "name": r}))
            .collect();
        json!({
            "id": self.id,
            "trustor_user_id": self.trustor_user_id,
            "trustee_user_id": self.trustee_user_id,
            "project_id": self.project_id,
            "impersonation": self.impersonation,
            "allow_redelegation": false,
            "redelegation_count": 0,
            "remaining_uses": null,
            "expires_at": null,
            "roles": roles,
        })
    }

    /// Reads Keystone's `trust` object; `None` when a required field is missing.
    pub fn from_keystone(v: &Value) -> Option<Trust> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Trust {
            id: s("id")?,
            trustor_user_id: s("trustor_user_id")?,
            trustee_user_id: s("trustee_user_id")?,
            project_id: s("project_id")?,
            impersonation: v
                .get("impersonation")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            roles: v
                .get("roles")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.get("name").and_then(Value::as_str))
                        .map(str::to_ascii_lowercase)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The `OS-TRUST:trust` section of a trust-scoped token, as Keystone writes it.
    pub fn token_section(&self) -> Value {
        json!({
            "id": self.id,
            "impersonation": self.impersonation,
            "trustee_user": {"id": self.trustee_user_id},
            "trustor_user": {"id": self.trustor_user_id},
        })
    }
}

/// Why a trust could not be made, found or deleted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The trustor cannot delegate what is asked (a role they do not hold, no service user
    /// configured, no token to act with): upstream's `MissingCredentialError` (422).
    #[error("{0}")]
    MissingCredentials(String),
    /// The identity service refused (the caller may not do this).
    #[error("the identity service refused: {0}")]
    Refused(String),
    /// The identity service (or the store of trusts) could not be asked.
    #[error("the identity service could not be asked about trusts: {0}")]
    Unavailable(String),
}

/// Makes and deletes the trusts of the centralized scheduler.
#[async_trait]
pub trait TrustBroker: Send + Sync + std::fmt::Debug {
    /// A trust from `trustor` (in their token's project) to the service user, delegating
    /// `roles`: an existing one of the same trustor, trustee and project is reused (as
    /// upstream does), else one is created. `token` is the trustor's own token (Keystone
    /// creates a trust only for the trustor's token).
    async fn ensure_trust(
        &self,
        trustor: &Identity,
        token: Option<&str>,
        roles: &[String],
    ) -> Result<Trust, TrustError>;

    /// Deletes trust `trust_id` (a missing one is not an error), acting with `token` where
    /// the identity service needs one.
    async fn delete_trust(&self, trust_id: &str, token: Option<&str>) -> Result<(), TrustError>;
}

/// How the API uses trusts (`freezer api serve`'s `[centralized_scheduler]` options).
#[derive(Clone, Debug)]
pub struct TrustPolicy {
    /// Who makes and deletes them.
    pub broker: std::sync::Arc<dyn TrustBroker>,
    /// `--enforce-trusts`: every job gets a trust, not only a central client's.
    pub enforce: bool,
    /// `--trusts-delegated-roles` (upstream's default `member`).
    pub delegated_roles: Vec<String>,
}
