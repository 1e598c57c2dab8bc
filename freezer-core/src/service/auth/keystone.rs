//! Validating tokens against a real Keystone v3, as keystonemiddleware's `auth_token` does.
//!
//! A service user logs in (`POST /v3/auth/tokens`, password method, project scope) and its
//! token validates each caller's (`GET /v3/auth/tokens` with `X-Auth-Token` and
//! `X-Subject-Token`). The service user logs in again when its token nears expiry or Keystone
//! refuses it. Validated tokens are remembered for a short while (a bounded cache keyed by a
//! hash of the token, never the token). Neither the service user's password nor any token is
//! ever logged or put in an error.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use reqwest::StatusCode;
use serde::Deserialize;

use super::{AuthError, Authenticator, Identity};
use crate::Error;

/// The settings of [`KeystoneAuthenticator`] (`freezer api serve --keystone-url ...`).
#[derive(Clone)]
pub struct KeystoneConfig {
    /// Keystone's URL: `http://HOST:5000`, `http://HOST:5000/v3` or `http://HOST/identity/v3`
    /// (`/v3` is added when missing).
    pub url: String,
    /// The service user's name.
    pub username: String,
    /// The service user's password (read from a file or the environment, never argv).
    pub password: String,
    /// The service user's project.
    pub project_name: String,
    /// The service user's domain (by name; Keystone's default is `Default`).
    pub user_domain_name: String,
    /// The service project's domain (by name).
    pub project_domain_name: String,
    /// How long a validated token is trusted without asking Keystone again (at most its
    /// expiry). keystonemiddleware's `token_cache_time` is 300 s; 60 s here.
    pub cache_ttl: Duration,
    /// How many validated tokens are remembered at most.
    pub cache_capacity: usize,
    /// The timeout of each request to Keystone.
    pub timeout: Duration,
}

impl std::fmt::Debug for KeystoneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("project_name", &self.project_name)
            .field("user_domain_name", &self.user_domain_name)
            .field("project_domain_name", &self.project_domain_name)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_capacity", &self.cache_capacity)
            .finish_non_exhaustive()
    }
}

impl KeystoneConfig {
    /// Settings with the usual defaults: domains `Default`, a 60 s cache of 10,000 tokens,
    /// a 10 s timeout.
    pub fn new(
        url: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
        project_name: impl Into<String>,
    ) -> KeystoneConfig {
        KeystoneConfig {
            url: url.into(),
            username: username.into(),
            password: password.into(),
            project_name: project_name.into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
            cache_ttl: Duration::from_secs(60),
            cache_capacity: 10_000,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A service token and when to stop using it.
struct ServiceToken {
    token: String,
    renew_after: Timestamp,
}

/// A remembered answer about a token.
struct Cached {
    result: Result<Identity, ()>,
    until: Instant,
}

/// Validates tokens against Keystone. Share it in an `Arc`.
pub struct KeystoneAuthenticator {
    config: KeystoneConfig,
    /// Keystone's v3 root, without a trailing `/`.
    pub(super) base: String,
    pub(super) http: reqwest::Client,
    service: tokio::sync::Mutex<Option<ServiceToken>>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

impl std::fmt::Debug for KeystoneAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneAuthenticator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenDoc {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: String,
    user: Named,
    #[serde(default)]
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    id: String,
    #[serde(default)]
    name: String,
}

/// Keystone's `expires_at` (`2026-01-01T00:00:00.000000Z`).
fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse::<Timestamp>().ok()
}

fn cache_key(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// A refused validation: an invalid token is remembered this long at most.
const NEGATIVE_TTL: Duration = Duration::from_secs(10);

impl KeystoneAuthenticator {
    /// An authenticator for `config`; it does not contact Keystone until the first token.
    pub fn new(config: KeystoneConfig) -> Result<KeystoneAuthenticator, Error> {
        let url = config.url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::bad_input(
                "--keystone-url",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        for (field, value) in [
            ("the Keystone service user's name", &config.username),
            ("the Keystone service user's password", &config.password),
            ("the Keystone service user's project", &config.project_name),
        ] {
            if value.is_empty() {
                return Err(Error::bad_input(field, "is empty"));
            }
        }
        let base = if url.ends_with("/v3") {
            url.to_string()
        } else {
            format!("{url}/v3")
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| Error::bad_input("--keystone-url", format!("HTTP client: {e}")))?;
        Ok(KeystoneAuthenticator {
            config,
            base,
            http,
            service: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Keystone's v3 root this authenticator talks to.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// A service token: the remembered one, or a new one when there is none, it nears its
    /// expiry, or `stale` is the one Keystone just refused.
    pub(super) async fn service_token(&self, stale: Option<&str>) -> Result<String, AuthError> {
        let mut slot = self.service.lock().await;
        if let Some(t) = slot.as_ref()
            && Some(t.token.as_str()) != stale
            && Timestamp::now() < t.renew_after
        {
            return Ok(t.token.clone());
        }
        *slot = None;
        let c = &self.config;
        let body = serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"name": c.user_domain_name},
                "password": c.password}}},
            "scope": {"project": {"name": c.project_name,
                "domain": {"name": c.project_domain_name}}}}});
        let response = self
            .http
            .post(format!("{}/auth/tokens?nocatalog", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| unavailable("the service user's login", &e))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(AuthError::Unavailable(format!(
                "Keystone refused the service user {:?}'s login ({status}): check \
                 --keystone-user, --keystone-password-file and --keystone-project",
                c.username
            )));
        }
        if !status.is_success() {
            return Err(AuthError::Unavailable(format!(
                "Keystone answered the service user {:?}'s login with {status}",
                c.username
            )));
        }
        let token = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                AuthError::Unavailable("Keystone's login answer has no X-Subject-Token".into())
            })?;
        let doc: TokenDoc = read_json(response).await?;
        let expires = parse_time(&doc.token.expires_at).ok_or_else(|| {
            AuthError::Unavailable("Keystone's service token has no valid expires_at".into())
        })?;
        // Renew a minute early (or halfway through a very short life).
        let now = Timestamp::now();
        let life = expires.duration_since(now);
        let margin = jiff::SignedDuration::from_secs(60).min(life / 2);
        let renew_after = expires.checked_sub(margin).unwrap_or(now);
        *slot = Some(ServiceToken {
            token: token.clone(),
            renew_after,
        });
        Ok(token)
    }

    /// One `GET /v3/auth/tokens`: the status and body.
    async fn ask(
        &self,
        service: &str,
        token: &str,
        allow_expired: bool,
    ) -> Result<(StatusCode, reqwest::Response), AuthError> {
        let query = if allow_expired {
            "?nocatalog&allow_expired=1"
        } else {
            "?nocatalog"
        };
        let response = self
            .http
            .get(format!("{}/auth/tokens{query}", self.base))
            .header("x-auth-token", service)
            .header("x-subject-token", token)
            .send()
            .await
            .map_err(|e| unavailable("token validation", &e))?;
        Ok((response.status(), response))
    }

    /// Asks Keystone about `token`, logging the service user in again once if its own token
    /// is refused.
    async fn ask_keystone(&self, token: &str) -> Result<Identity, AuthError> {
        let mut service = self.service_token(None).await?;
        let mut retried = false;
        let response = loop {
            let (status, response) = self.ask(&service, token, false).await?;
            if status == StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                service = self.service_token(Some(&service)).await?;
                continue;
            }
            break response;
        };
        match response.status() {
            s if s.is_success() => {
                let doc: TokenDoc = read_json(response).await?;
                let identity = to_identity(doc.token)?;
                if identity.expires_at <= Timestamp::now() {
                    return Err(AuthError::Expired(identity.expires_at));
                }
                Ok(identity)
            }
            StatusCode::NOT_FOUND => {
                // Keystone says 404 for an expired token too: ask again allowing expired
                // tokens, to tell the caller which it is.
                let (status, response) = self.ask(&service, token, true).await?;
                if status.is_success()
                    && let Ok(doc) = read_json::<TokenDoc>(response).await
                    && let Some(at) = parse_time(&doc.token.expires_at)
                    && at <= Timestamp::now()
                {
                    return Err(AuthError::Expired(at));
                }
                Err(AuthError::Invalid)
            }
            StatusCode::UNAUTHORIZED => Err(AuthError::Unavailable(
                "Keystone refused the service user's token twice".into(),
            )),
            StatusCode::FORBIDDEN => Err(AuthError::Unavailable(format!(
                "the service user {:?} (--keystone-user) may not validate tokens (give it \
                 the service or admin role)",
                self.config.username
            ))),
            s if s.is_server_error() => {
                Err(AuthError::Unavailable(format!("Keystone answered {s}")))
            }
            // 400 and other refusals concern the token given (malformed).
            _ => Err(AuthError::Invalid),
        }
    }

    fn remember(&self, key: [u8; 32], result: &Result<Identity, AuthError>) {
        let now = Instant::now();
        let until = match result {
            Ok(identity) => {
                let left = identity.expires_at.duration_since(Timestamp::now());
                let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
                now + self.config.cache_ttl.min(left)
            }
            Err(AuthError::Invalid) => now + self.config.cache_ttl.min(NEGATIVE_TTL),
            // Expired stays expired without a cache; an outage must not be remembered.
            Err(_) => return,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.config.cache_capacity {
            cache.retain(|_, c| c.until > now);
            while cache.len() >= self.config.cache_capacity.max(1) {
                let Some(k) = cache.keys().next().copied() else {
                    break;
                };
                cache.remove(&k);
            }
        }
        if self.config.cache_capacity > 0 {
            let result = result.as_ref().cloned().map_err(|_| ());
            cache.insert(key, Cached { result, until });
        }
    }

    fn recall(&self, key: &[u8; 32]) -> Option<Result<Identity, AuthError>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let cached = cache.get(key)?;
        if cached.until <= Instant::now() {
            cache.remove(key);
            return None;
        }
        Some(match &cached.result {
            Ok(identity) if identity.expires_at <= Timestamp::now() => {
                Err(AuthError::Expired(identity.expires_at))
            }
            Ok(identity) => Ok(identity.clone()),
            Err(()) => Err(AuthError::Invalid),
        })
    }

    /// Logs the service user in now (a server checks its settings at start): an error
    /// names the flag to fix, never the password.
    pub async fn check_service_user(&self) -> Result<(), AuthError> {
        self.service_token(None).await.map(drop)
    }

    /// Forgets every remembered validation (a revocation then takes effect at once).
    pub fn clear_cache(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

fn to_identity(token: TokenInfo) -> Result<Identity, AuthError> {
    let expires_at = parse_time(&token.expires_at)
        .ok_or_else(|| AuthError::Unavailable("Keystone's token has no valid expires_at".into()))?;
    // A token scoped to no project (unscoped, domain or system scope) reaches no project's
    // documents here.
    let project = token.project.ok_or(AuthError::Invalid)?;
    Ok(Identity {
        user_id: token.user.id,
        user_name: token.user.name,
        project_id: project.id,
        roles: token
            .roles
            .into_iter()
            .map(|r| r.name.to_ascii_lowercase())
            .collect(),
        expires_at,
    })
}

async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, AuthError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| unavailable("reading Keystone's answer", &e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| AuthError::Unavailable(format!("Keystone's answer is not as expected: {e}")))
}

/// An outage, described without the URL's query or any header.
fn unavailable(what: &str, e: &reqwest::Error) -> AuthError {
    AuthError::Unavailable(outage(what, e))
}

/// What failed at Keystone and how, without the URL's query or any header.
pub(super) fn outage(what: &str, e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    format!("{what} at Keystone {kind}")
}

#[async_trait]
impl Authenticator for KeystoneAuthenticator {
    async fn validate(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        // A header value that is not a token (too long, or bytes HTTP refuses) is invalid
        // without asking Keystone.
        if token.len() > 8192 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::Invalid);
        }
        let key = cache_key(token);
        if let Some(result) = self.recall(&key) {
            return result;
        }
        let result = self.ask_keystone(token).await;
        self.remember(key, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(capacity: usize) -> KeystoneAuthenticator {
        let mut config =
            KeystoneConfig::new("http://127.0.0.1:1/", "svc", "svc-pw-secret", "service");
        config.cache_capacity = capacity;
        KeystoneAuthenticator::new(config).unwrap()
    }

    fn identity(expires_in: i64) -> Identity {
        Identity {
            user_id: "u".into(),
            user_name: "user".into(),
            project_id: "p".into(),
            roles: vec!["member".into()],
            expires_at: Timestamp::now() + jiff::SignedDuration::from_secs(expires_in),
        }
    }

    #[test]
    fn settings_are_checked_and_the_password_hidden() {
        let a = authenticator(10);
        assert_eq!(a.url(), "http://127.0.0.1:1/v3");
        assert!(!format!("{a:?}").contains("svc-pw-secret"));
        let mut c = KeystoneConfig::new("http://h:5000/v3/", "svc", "pw", "service");
        assert_eq!(
            KeystoneAuthenticator::new(c.clone()).unwrap().url(),
            "http://h:5000/v3"
        );
        c.url = "h:5000".into();
        let e = KeystoneAuthenticator::new(c.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--keystone-url"), "{e}");
        c.url = "http://h".into();
        c.password = String::new();
        let e = KeystoneAuthenticator::new(c).unwrap_err().to_string();
        assert!(e.contains("password") && e.contains("empty"), "{e}");
    }

    #[test]
    fn the_cache_is_bounded_and_never_outlives_a_token() {
        let a = authenticator(2);
        let (k1, k2, k3) = (cache_key("t1"), cache_key("t2"), cache_key("t3"));
        a.remember(k1, &Ok(identity(3600)));
        assert!(matches!(a.recall(&k1), Some(Ok(_))));
        // An identity at its expiry is not remembered past it.
        a.remember(k2, &Ok(identity(0)));
        assert!(a.recall(&k2).is_none());
        // Refusals are remembered, outages and expiries are not.
        a.remember(k2, &Err(AuthError::Invalid));
        assert!(matches!(a.recall(&k2), Some(Err(AuthError::Invalid))));
        a.remember(k3, &Err(AuthError::Unavailable("down".into())));
        assert!(a.recall(&k3).is_none());
        a.remember(k3, &Err(AuthError::Expired(Timestamp::now())));
        assert!(a.recall(&k3).is_none());
        // At most `cache_capacity` entries.
        a.remember(k3, &Ok(identity(3600)));
        assert!(a.cache.lock().unwrap().len() <= 2);
        assert!(matches!(a.recall(&k3), Some(Ok(_))));
        a.clear_cache();
        assert!(a.recall(&k3).is_none());
        // No cache at all.
        let none = authenticator(0);
        none.remember(k1, &Ok(identity(3600)));
        assert!(none.recall(&k1).is_none());
    }

    #[test]
    fn keystone_tokens_become_identities() {
        let doc: TokenDoc = serde_json::from_str(
            r#"{"token": {"expires_at": "2030-01-01T00:00:00.000000Z",
                "user": {"id": "u1", "name": "freezer"},
                "project": {"id": "p1", "name": "demo"},
                "roles": [{"id": "r1", "name": "Member"}, {"id": "r2", "name": "reader"}],
                "methods": ["password"]}}"#,
        )
        .unwrap();
        let who = to_identity(doc.token).unwrap();
        assert_eq!(
            (who.user_id.as_str(), who.project_id.as_str()),
            ("u1", "p1")
        );
        assert_eq!(who.roles, ["member", "reader"]);
        let unscoped: TokenDoc = serde_json::from_str(
            r#"{"token": {"expires_at": "2030-01-01T00:00:00Z", "user": {"id": "u1"}}}"#,
        )
        .unwrap();
        assert!(matches!(
            to_identity(unscoped.token),
            Err(AuthError::Invalid)
        ));
    }
}
