//! The standalone identity's trusts: kept in the document store ([`Kind::Trust`], in the
//! trustor's project), made for the API by [`TrustBroker`], and exchanged for trust-scoped
//! tokens by the trustee. Only the subset of Keystone's `OS-TRUST` the centralized scheduler
//! needs: no impersonation, no redelegation, no expiry, unlimited uses.

use async_trait::async_trait;
use serde_json::Value;

use super::{Issued, StandaloneIdentity, with_implied};
use crate::service::api::new_id;
use crate::service::auth::token::{Claims, audit_id};
use crate::service::auth::trusts::{Trust, TrustBroker, TrustError};
use crate::service::auth::users::User;
use crate::service::auth::{AuthError, Identity};
use crate::service::store::{Kind, Scope, Store, StoreError};

fn unavailable(e: StoreError) -> TrustError {
    TrustError::Unavailable(e.to_string())
}

impl StandaloneIdentity {
    fn trust_store(&self) -> Result<&std::sync::Arc<dyn Store>, TrustError> {
        self.store.get().ok_or_else(|| {
            TrustError::Unavailable("the identity service has no store for trusts".into())
        })
    }

    /// The service user trusts delegate to (`--service-user`).
    pub(crate) fn service_user(&self) -> Result<User, TrustError> {
        let name = self.service_user.get().ok_or_else(|| {
            TrustError::MissingCredentials(
                "Missing required credentials: no service user to delegate to (start the API \
                 with --service-user NAME)"
                    .into(),
            )
        })?;
        self.users().by_name(name).cloned().ok_or_else(|| {
            TrustError::MissingCredentials(format!(
                "Missing required credentials: the service user {name} is not in the users file"
            ))
        })
    }

    /// Trust `id`, if it exists.
    pub(crate) async fn find_trust(&self, id: &str) -> Result<Option<Trust>, TrustError> {
        let store = self.trust_store()?;
        let doc = store
            .get(Kind::Trust, &Scope::All, id)
            .await
            .map_err(unavailable)?;
        Ok(doc.and_then(|d| Trust::from_keystone(&d.body)))
    }

    /// Every trust `keep` accepts.
    pub(crate) async fn list_trusts(
        &self,
        scope: &Scope,
        keep: impl Fn(&Trust) -> bool,
    ) -> Result<Vec<Trust>, TrustError> {
        let store = self.trust_store()?;
        let docs = store
            .list(Kind::Trust, scope, 0, None)
            .await
            .map_err(unavailable)?;
        Ok(docs
            .iter()
            .filter_map(|d| Trust::from_keystone(&d.body))
            .filter(|t| keep(t))
            .collect())
    }

    /// Stores a new trust (its id is made here).
    pub(crate) async fn store_trust(&self, mut trust: Trust) -> Result<Trust, TrustError> {
        let store = self.trust_store()?;
        trust.id = new_id();
        store
            .insert(
                Kind::Trust,
                &trust.project_id,
                &trust.id,
                &trust.to_keystone(),
            )
            .await
            .map_err(unavailable)?;
        Ok(trust)
    }

    /// Deletes trust `id`; whether there was one.
    pub(crate) async fn remove_trust(&self, id: &str) -> Result<bool, TrustError> {
        let store = self.trust_store()?;
        store
            .delete(Kind::Trust, &Scope::All, id)
            .await
            .map_err(unavailable)
    }

    /// The roles of `roles` that `user` does not hold in `project` (none: the user may
    /// delegate them all there).
    pub(crate) fn roles_missing(user: &User, project: &str, roles: &[String]) -> Vec<String> {
        let held = with_implied(&user.roles);
        roles
            .iter()
            .filter(|r| user.project_id != project || !held.contains(&r.to_ascii_lowercase()))
            .cloned()
            .collect()
    }

    /// Whether `trust` still holds: its trustor and trustee exist and the trustor still has
    /// its roles in its project.
    pub(crate) fn trust_holds(&self, trust: &Trust) -> bool {
        let users = self.users();
        let Some(trustor) = users.by_id(&trust.trustor_user_id) else {
            return false;
        };
        users.by_id(&trust.trustee_user_id).is_some()
            && Self::roles_missing(trustor, &trust.project_id, &trust.roles).is_empty()
    }

    /// A trust-scoped token's trust is still there and still holds (a deleted trust ends
    /// its tokens at once, as in Keystone). Other tokens pass.
    pub(crate) async fn check_trust_token(&self, claims: &Claims) -> Result<(), AuthError> {
        let Some(id) = &claims.t else {
            return Ok(());
        };
        let trust = self
            .find_trust(id)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?
            .ok_or(AuthError::Invalid)?;
        if trust.trustee_user_id != claims.u
            || trust.project_id != claims.p
            || !self.trust_holds(&trust)
        {
            return Err(AuthError::Invalid);
        }
        Ok(())
    }

    /// Issues a token for `trustee` acting through `trust`: the trustee's user, the
    /// trustor's project, the trust's roles.
    pub(crate) fn issue_for_trust(
        &self,
        trustee: &User,
        trust: &Trust,
        methods: Vec<String>,
        not_after: Option<i64>,
    ) -> Issued {
        let (now, expires) = self.lifetime(not_after);
        let claims = Claims {
            u: trustee.id.clone(),
            p: trust.project_id.clone(),
            r: trust.roles.clone(),
            i: now,
            e: expires,
            m: methods,
            a: audit_id(),
            t: Some(trust.id.clone()),
        };
        self.seal(claims)
    }
}

#[async_trait]
impl TrustBroker for StandaloneIdentity {
    async fn ensure_trust(
        &self,
        trustor: &Identity,
        _token: Option<&str>,
        roles: &[String],
    ) -> Result<Trust, TrustError> {
        let trustee = self.service_user()?.id.clone();
        let project = trustor.project_id.clone();
        let users = self.users();
        let user = users.by_id(&trustor.user_id).ok_or_else(|| {
            TrustError::MissingCredentials(format!(
                "Missing required credentials: user {} is unknown",
                trustor.user_id
            ))
        })?;
        let missing = Self::roles_missing(user, &project, roles);
        if !missing.is_empty() {
            return Err(TrustError::MissingCredentials(format!(
                "Failed to find roles {missing:?} for user {} in project {project}",
                trustor.user_id
            )));
        }
        let wanted: Vec<String> = roles.iter().map(|r| r.to_ascii_lowercase()).collect();
        let existing = self
            .list_trusts(&Scope::Project(project.clone()), |t| {
                t.trustor_user_id == trustor.user_id
                    && t.trustee_user_id == trustee
                    && wanted.iter().all(|r| t.roles.contains(r))
            })
            .await?;
        if let Some(t) = existing.into_iter().next() {
            tracing::debug!(trust_id = t.id, "reusing a trust");
            return Ok(t);
        }
        let trust = self
            .store_trust(Trust {
                id: String::new(),
                trustor_user_id: trustor.user_id.clone(),
                trustee_user_id: trustee,
                project_id: project,
                impersonation: false,
                roles: wanted,
            })
            .await?;
        tracing::info!(
            trust_id = trust.id,
            trustor = trustor.user_name,
            "trust created"
        );
        Ok(trust)
    }

    async fn delete_trust(&self, trust_id: &str, _token: Option<&str>) -> Result<(), TrustError> {
        if self.remove_trust(trust_id).await? {
            tracing::info!(trust_id, "trust deleted");
        }
        Ok(())
    }
}

/// A trust's JSON for the HTTP routes, with Keystone's `links`.
pub(crate) fn trust_json(trust: &Trust, base: &str) -> Value {
    let mut v = trust.to_keystone();
    v["links"] =
        serde_json::json!({"self": format!("{base}/identity/v3/OS-TRUST/trusts/{}", trust.id)});
    v
}
