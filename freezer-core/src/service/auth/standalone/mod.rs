//! The standalone identity: the Keystone v3 subset this server answers itself at
//! `/identity/v3` when no Keystone is configured, for the users of a users file.
//!
//! [`StandaloneIdentity`] issues, validates and revokes tokens (see [`TokenKey`] for their
//! format) and implements [`Authenticator`], so the API validates its requests with it;
//! [`router`] serves it over HTTP as Keystone does, so keystoneauth1, python-freezerclient and
//! upstream's scheduler log in with `OS_AUTH_URL=http://HOST:PORT/identity/v3`.
//! It never logs a password or a token.

mod http;
mod trusts;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

pub use self::http::router;
use super::revocations::Revocations;
use super::token::{Claims, TokenKey, audit_id};
use super::users::{User, Users};
use super::{AuthError, Authenticator, Identity};
use crate::Error;
use crate::service::store::{Store, StoreError};

/// The settings of the standalone identity.
#[derive(Clone, Debug)]
pub struct StandaloneConfig {
    /// The API's public URL (`http://127.0.0.1:9090`): the catalog's `backup` endpoints point
    /// at it, and its `identity` entry at `<public_url>/identity`.
    pub public_url: String,
    /// How long a token lives (Keystone's default: one hour).
    pub token_ttl: Duration,
    /// The region of the catalog's endpoints.
    pub region: String,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        StandaloneConfig {
            public_url: "http://127.0.0.1:9090".into(),
            token_ttl: Duration::from_secs(3600),
            region: "RegionOne".into(),
        }
    }
}

/// Which project a login asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ProjectScope {
    /// No scope: the user's project.
    Default,
    /// By id.
    Id(String),
    /// By name, in the `Default` domain.
    Name(String),
    /// A trust (`{"OS-TRUST:trust": {"id": ...}}`): the trustor's project, for the trustee.
    Trust(String),
}

/// A token just issued and what it says.
#[derive(Debug)]
pub(crate) struct Issued {
    pub token: String,
    pub claims: Claims,
}

/// The identity service of a server without Keystone. Share it in an `Arc`.
pub struct StandaloneIdentity {
    /// The users, replaced whole by [`StandaloneIdentity::replace_users`].
    users: std::sync::RwLock<Arc<Users>>,
    key: TokenKey,
    config: StandaloneConfig,
    /// Audit ids of revoked tokens, shared through the store once attached.
    revoked: Revocations,
    /// Password checks running at once, each holding the memory of its hash (7 MiB for the hashes made here): one per core.
    login_slots: tokio::sync::Semaphore,
    /// Where trusts are kept (the API's document store), once attached.
    store: OnceLock<Arc<dyn Store>>,
    /// The user trusts delegate to (`--service-user`), once set.
    service_user: OnceLock<String>,
}

impl std::fmt::Debug for StandaloneIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandaloneIdentity")
            .field("users", &self.users().len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The roles a role implies, as Keystone's bootstrap sets them up: `admin` implies `member`,
/// which implies `reader`.
fn with_implied(roles: &[String]) -> Vec<String> {
    let mut out: Vec<String> = roles.to_vec();
    for (role, implied) in [("admin", "member"), ("member", "reader")] {
        if out.iter().any(|r| r == role) && !out.iter().any(|r| r == implied) {
            out.push(implied.to_string());
        }
    }
    out
}

impl StandaloneIdentity {
    /// An identity service for `users`, sealing tokens with `key`.
    pub fn new(users: Users, key: TokenKey, config: StandaloneConfig) -> StandaloneIdentity {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        StandaloneIdentity {
            users: std::sync::RwLock::new(Arc::new(users)),
            key,
            config: StandaloneConfig {
                public_url: config.public_url.trim_end_matches('/').to_string(),
                ..config
            },
            revoked: Revocations::default(),
            login_slots: tokio::sync::Semaphore::new(cores),
            store: OnceLock::new(),
            service_user: OnceLock::new(),
        }
    }

    /// Enables trusts: kept in `store` (the API's, so that API servers sharing a database
    /// share them), delegating to `service_user` (`--service-user`: a user of the users file
    /// with the `service` or `admin` role, which the central scheduler runs as; without one,
    /// a job needing a trust is refused). Without this call no trust is made or used. The
    /// first settings given stay.
    pub fn enable_trusts(
        &self,
        store: Arc<dyn Store>,
        service_user: Option<&str>,
    ) -> Result<(), Error> {
        let _ = self.store.set(store);
        let Some(service_user) = service_user else {
            return Ok(());
        };
        let users = self.users();
        let user = users.by_name(service_user).ok_or_else(|| {
            Error::bad_input(
                "--service-user",
                format!("{service_user:?} is not a user of the users file"),
            )
        })?;
        if !user.roles.iter().any(|r| r == "service" || r == "admin") {
            return Err(Error::bad_input(
                "--service-user",
                format!(
                    "user {service_user:?} has neither the service nor the admin role: a \
                     central scheduler running as it could not list every project's jobs"
                ),
            ));
        }
        let _ = self.service_user.set(service_user.to_string());
        Ok(())
    }

    /// Its settings (the public URL without a trailing `/`).
    pub fn config(&self) -> &StandaloneConfig {
        &self.config
    }

    /// Its users, as they are now.
    pub fn users(&self) -> Arc<Users> {
        Arc::clone(&self.users.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the users (a users file read again, on SIGHUP): from the next request on, a
    /// new user can log in, a removed user's tokens are refused, and changed roles and
    /// passwords hold. Trusts of a removed trustor or trustee stop working.
    pub fn replace_users(&self, users: Users) {
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
    }

    /// Checks a password (off the async runtime, a bounded number at a time): the user when
    /// `name` (or the user's id, when `by_id`) and `password` match. Unknown user and wrong
    /// password are the same `None`, after the same work.
    pub(crate) async fn check_password(
        self: &Arc<Self>,
        name_or_id: &str,
        by_id: bool,
        password: String,
    ) -> Option<User> {
        let _slot = self.login_slots.acquire().await.ok()?;
        let this = Arc::clone(self);
        let key = name_or_id.to_string();
        tokio::task::spawn_blocking(move || {
            let users = this.users();
            let user = if by_id {
                users.by_id(&key)
            } else {
                users.by_name(&key)
            };
            users.check_password(user, &password).cloned()
        })
        .await
        .ok()
        .flatten()
    }

    /// Whether `scope` names `user`'s project.
    pub(crate) fn scope_allows(user: &User, scope: &ProjectScope) -> bool {
        match scope {
            ProjectScope::Default => true,
            ProjectScope::Id(id) => *id == user.project_id,
            ProjectScope::Name(name) => *name == user.project_name,
            ProjectScope::Trust(_) => false,
        }
    }

    /// Issues a token for `user` in their project, living `token_ttl` but never past
    /// `not_after` (a rescoped token keeps its parent's expiry), with the `methods` given.
    pub(crate) fn issue(
        &self,
        user: &User,
        methods: Vec<String>,
        not_after: Option<i64>,
        audit: Option<String>,
    ) -> Issued {
        let (now, expires) = self.lifetime(not_after);
        let claims = Claims {
            u: user.id.clone(),
            p: user.project_id.clone(),
            r: with_implied(&user.roles),
            i: now,
            e: expires,
            m: methods,
            a: audit.unwrap_or_else(audit_id),
            t: None,
        };
        self.seal(claims)
    }

    /// Now, and when a token issued now expires: after `token_ttl`, but never past
    /// `not_after`.
    fn lifetime(&self, not_after: Option<i64>) -> (i64, i64) {
        let now = Timestamp::now().as_second();
        let ttl = i64::try_from(self.config.token_ttl.as_secs()).unwrap_or(i64::MAX / 4);
        let expires = now.saturating_add(ttl);
        (now, not_after.map_or(expires, |limit| expires.min(limit)))
    }

    /// The token that carries `claims`.
    fn seal(&self, claims: Claims) -> Issued {
        Issued {
            token: self.key.seal(&claims),
            claims,
        }
    }

    /// Opens and checks a token: its claims and its user, or why it is refused. An expired
    /// token is [`AuthError::Expired`] unless `allow_expired`.
    pub(crate) fn check(
        &self,
        token: &str,
        allow_expired: bool,
    ) -> Result<(Claims, User), AuthError> {
        let claims = self.key.open(token).ok_or(AuthError::Invalid)?;
        let user = self
            .users()
            .by_id(&claims.u)
            .cloned()
            .ok_or(AuthError::Invalid)?;
        // A trust-scoped token is in the trustor's project (checked with its trust).
        if claims.t.is_none() && user.project_id != claims.p {
            return Err(AuthError::Invalid);
        }
        if self.is_revoked(&claims.a) {
            return Err(AuthError::Invalid);
        }
        if !allow_expired && claims.e <= Timestamp::now().as_second() {
            let at = Timestamp::from_second(claims.e).unwrap_or(Timestamp::UNIX_EPOCH);
            return Err(AuthError::Expired(at));
        }
        Ok((claims, user.clone()))
    }

    /// The identity a checked token stands for: the roles it was issued with that the user
    /// still holds (a role taken away in the users file takes effect at the next restart).
    /// A trust-scoped token has its trust's roles (checked against the trustor by
    /// [`StandaloneIdentity::check_trust_token`]).
    pub(crate) fn identity_of(claims: &Claims, user: &User) -> Identity {
        let held = if claims.t.is_some() {
            claims.r.clone()
        } else {
            with_implied(&user.roles)
        };
        Identity {
            user_id: user.id.clone(),
            user_name: user.name.clone(),
            project_id: claims.p.clone(),
            roles: claims
                .r
                .iter()
                .filter(|r| held.contains(r))
                .cloned()
                .collect(),
            expires_at: Timestamp::from_second(claims.e).unwrap_or(Timestamp::UNIX_EPOCH),
        }
    }

    fn is_revoked(&self, audit: &str) -> bool {
        self.revoked.is_revoked(audit)
    }

    /// Revokes `token` and every token rescoped from it (they share its audit id) until they
    /// expire: on every server sharing the store once [`StandaloneIdentity::share_revocations`]
    /// was called, else on this server only. A revoked, expired or invalid token is an error.
    pub async fn revoke(&self, token: &str) -> Result<(), AuthError> {
        let (claims, _) = self.check(token, false)?;
        self.revoked.revoke(&claims.a, claims.e).await
    }

    /// Keeps revocations in `store`, shared with every server on the same database and kept
    /// across restarts: reads the ones recorded, then polls for new ones every `every` (see
    /// [`super::revocations`] for the bound this gives).
    pub async fn share_revocations(
        &self,
        store: Arc<dyn Store>,
        every: Duration,
    ) -> Result<(), StoreError> {
        self.revoked.attach(store, every).await
    }

    /// Logs `user_name` in with `password` (in the `Default` domain) and returns a token
    /// scoped to their project: what `POST /identity/v3/auth/tokens` does, for callers in
    /// process (tests, the benchmark). A wrong password and an unknown user are both
    /// [`AuthError::Invalid`].
    pub async fn login(
        self: &Arc<Self>,
        user_name: &str,
        password: &str,
    ) -> Result<String, AuthError> {
        let user = self
            .check_password(user_name, false, password.to_string())
            .await
            .ok_or(AuthError::Invalid)?;
        Ok(self.issue(&user, vec!["password".into()], None, None).token)
    }

    /// Builds an identity service from the files of `freezer api serve`: the users file and
    /// the token key file (created `0600` when missing).
    pub fn from_files(
        users_file: &std::path::Path,
        token_key_file: &std::path::Path,
        config: StandaloneConfig,
    ) -> Result<StandaloneIdentity, Error> {
        let users = Users::load(users_file)?;
        let key = TokenKey::load_or_create(token_key_file)?;
        Ok(StandaloneIdentity::new(users, key, config))
    }
}

#[async_trait]
impl Authenticator for StandaloneIdentity {
    async fn validate(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let (claims, user) = self.check(token, false)?;
        self.check_trust_token(&claims).await?;
        Ok(StandaloneIdentity::identity_of(&claims, &user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ttl: Duration) -> Arc<StandaloneIdentity> {
        let users = Users::from_json(
            r#"[{"user":"alice","password":"pw","project":"demo","roles":["admin"]},
                {"user":"rita","password":"pw2","project":"demo","roles":["reader"]}]"#,
        )
        .unwrap();
        Arc::new(StandaloneIdentity::new(
            users,
            TokenKey::random().unwrap(),
            StandaloneConfig {
                token_ttl: ttl,
                public_url: "http://x:1/".into(),
                ..Default::default()
            },
        ))
    }

    #[tokio::test]
    async fn login_validate_revoke() {
        let id = service(Duration::from_secs(60));
        assert_eq!(id.config().public_url, "http://x:1");
        let token = id.login("alice", "pw").await.unwrap();
        let who = id.validate(&token).await.unwrap();
        assert_eq!(who.user_name, "alice");
        assert_eq!(who.roles, ["admin", "member", "reader"]);
        assert_eq!(
            who.project_id,
            id.users().by_name("alice").unwrap().project_id
        );
        assert!(matches!(
            id.login("alice", "nope").await,
            Err(AuthError::Invalid)
        ));
        assert!(matches!(
            id.login("nobody", "pw").await,
            Err(AuthError::Invalid)
        ));
        assert!(matches!(id.validate("").await, Err(AuthError::Missing)));
        assert!(matches!(id.validate("junk").await, Err(AuthError::Invalid)));
        let reader = id.login("rita", "pw2").await.unwrap();
        assert_eq!(id.validate(&reader).await.unwrap().roles, ["reader"]);
        id.revoke(&token).await.unwrap();
        assert!(matches!(id.validate(&token).await, Err(AuthError::Invalid)));
        assert!(matches!(id.revoke(&token).await, Err(AuthError::Invalid)));
        // Another token of the same user is untouched.
        assert!(
            id.validate(&id.login("alice", "pw").await.unwrap())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn tokens_expire() {
        let id = service(Duration::ZERO);
        let token = id.login("alice", "pw").await.unwrap();
        assert!(matches!(
            id.validate(&token).await,
            Err(AuthError::Expired(_))
        ));
    }

    #[test]
    fn implied_roles() {
        let r = |v: &[&str]| with_implied(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(r(&["service"]), ["service"]);
        assert_eq!(r(&["member"]), ["member", "reader"]);
        assert_eq!(r(&["reader", "admin"]), ["reader", "admin", "member"]);
    }
}
