//! Authentication to Swift: Keystone v3 (password or token, with the `object-store` endpoint
//! taken from the catalog), TempAuth v1, or a token given outright. One token at a time is
//! shared by every call of a sink; it is obtained on first use and again when Swift refuses it.
//! Passwords, keys and tokens never appear in `Debug` output or error messages.

use std::fmt;
use std::sync::Arc;

use reqwest::{StatusCode, Url};
use tokio::sync::Mutex;

use super::{header, short, transport};
use crate::error::{Error, Result};
use crate::keystone;

/// How to authenticate to Swift.
#[derive(Clone)]
pub enum SwiftAuth {
    /// Keystone v3 (upstream's `OS_*` variables).
    Keystone(Box<KeystoneAuth>),
    /// Swift's TempAuth v1 (python-swiftclient's `ST_AUTH`, `ST_USER`, `ST_KEY`).
    TempAuth {
        /// The auth URL, `http://host:8080/auth/v1.0`.
        url: String,
        /// `account:user`.
        user: String,
        /// The user's key.
        key: String,
    },
    /// A token obtained elsewhere (`OS_AUTH_TOKEN`); needs [`SwiftOptions::storage_url`](super::SwiftOptions::storage_url). It
    /// cannot be renewed: when it expires, requests fail with `Permission`.
    Token(String),
}

impl fmt::Debug for SwiftAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwiftAuth::Keystone(k) => k.fmt(f),
            SwiftAuth::TempAuth { url, user, .. } => f
                .debug_struct("TempAuth")
                .field("url", url)
                .field("user", user)
                .field("key", &"<redacted>")
                .finish(),
            SwiftAuth::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// Keystone v3 credentials, by upstream's variable names.
#[derive(Clone, Default)]
pub struct KeystoneAuth {
    /// `OS_AUTH_URL`: `http://keystone:5000/v3` (`/v3` is added when missing).
    pub auth_url: String,
    /// `OS_USERNAME`.
    pub username: Option<String>,
    /// `OS_USER_ID` (instead of a name and domain).
    pub user_id: Option<String>,
    /// `OS_PASSWORD`.
    pub password: Option<String>,
    /// `OS_AUTH_TOKEN`: authenticate with an existing token instead of a password.
    pub token: Option<String>,
    /// `OS_USER_DOMAIN_NAME` (`Default` when neither it nor the id is given).
    pub user_domain_name: Option<String>,
    /// `OS_USER_DOMAIN_ID`.
    pub user_domain_id: Option<String>,
    /// `OS_PROJECT_NAME` (or the older `OS_TENANT_NAME`).
    pub project_name: Option<String>,
    /// `OS_PROJECT_ID` (or the older `OS_TENANT_ID`).
    pub project_id: Option<String>,
    /// `OS_PROJECT_DOMAIN_NAME` (`Default` when neither it nor the id is given).
    pub project_domain_name: Option<String>,
    /// `OS_PROJECT_DOMAIN_ID`.
    pub project_domain_id: Option<String>,
    /// `OS_REGION_NAME`: the catalog's region; any region when absent.
    pub region: Option<String>,
    /// `OS_INTERFACE`: `public` (default), `internal` or `admin`.
    pub interface: Option<String>,
}

impl fmt::Debug for KeystoneAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeystoneAuth")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("user_id", &self.user_id)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("project_name", &self.project_name)
            .field("project_id", &self.project_id)
            .field("region", &self.region)
            .field("interface", &self.interface)
            .finish_non_exhaustive()
    }
}

/// A token and the account URL it opens.
pub(super) struct Session {
    pub(super) token: String,
    pub(super) storage_url: Url,
}

/// Obtains and caches the token of one sink.
pub(super) struct Authenticator {
    client: reqwest::Client,
    auth: SwiftAuth,
    /// The storage URL given in the options, replacing the one authentication returns.
    storage_url: Option<Url>,
    session: Mutex<Option<Arc<Session>>>,
}

impl Authenticator {
    /// Checks the credentials are complete; nothing is sent yet.
    pub(super) fn new(
        client: reqwest::Client,
        auth: SwiftAuth,
        storage_url: Option<&str>,
    ) -> Result<Self> {
        let storage_url = storage_url
            .map(|u| {
                Url::parse(u).map_err(|e| Error::bad_input("OS_STORAGE_URL", format!("{u:?}: {e}")))
            })
            .transpose()?;
        match &auth {
            SwiftAuth::Token(_) if storage_url.is_none() => {
                return Err(Error::bad_input(
                    "OS_STORAGE_URL",
                    "a token given outright (OS_AUTH_TOKEN without OS_AUTH_URL) needs the storage URL",
                ));
            }
            SwiftAuth::Keystone(k) => {
                keystone_tokens_url(&k.auth_url)?;
                if k.password.is_none() && k.token.is_none() {
                    return Err(Error::bad_input(
                        "OS_PASSWORD",
                        "Keystone authentication needs a password (OS_PASSWORD) or a token (OS_AUTH_TOKEN)",
                    ));
                }
                if k.password.is_some() && k.username.is_none() && k.user_id.is_none() {
                    return Err(Error::bad_input(
                        "OS_USERNAME",
                        "Keystone password authentication needs a user (OS_USERNAME or OS_USER_ID)",
                    ));
                }
            }
            SwiftAuth::TempAuth { url, user, .. } => {
                Url::parse(url)
                    .map_err(|e| Error::bad_input("ST_AUTH", format!("{url:?}: {e}")))?;
                if user.is_empty() {
                    return Err(Error::bad_input("ST_USER", "TempAuth needs a user"));
                }
            }
            SwiftAuth::Token(_) => {}
        }
        Ok(Authenticator {
            client,
            auth,
            storage_url,
            session: Mutex::new(None),
        })
    }

    /// Whether a refused token can be replaced by authenticating again.
    pub(super) fn renewable(&self) -> bool {
        !matches!(self.auth, SwiftAuth::Token(_))
    }

    /// What to check when credentials are refused.
    pub(super) fn credential_hint(&self) -> &'static str {
        match &self.auth {
            SwiftAuth::Keystone(k) if k.password.is_some() => {
                "check OS_USERNAME, OS_PASSWORD, OS_USER_DOMAIN_NAME, OS_PROJECT_NAME or OS_PROJECT_ID, OS_PROJECT_DOMAIN_NAME"
            }
            SwiftAuth::Keystone(_) => "check OS_AUTH_TOKEN (it may have expired) and OS_AUTH_URL",
            SwiftAuth::TempAuth { .. } => "check ST_USER and ST_KEY",
            SwiftAuth::Token(_) => {
                "check OS_AUTH_TOKEN (it may have expired; a token given outright cannot be renewed) and OS_STORAGE_URL"
            }
        }
    }

    /// The current session, authenticating when there is none. One authentication at a
    /// time: concurrent callers wait for it and share its token.
    pub(super) async fn session(&self) -> Result<Arc<Session>> {
        let mut slot = self.session.lock().await;
        if let Some(s) = &*slot {
            return Ok(s.clone());
        }
        let s = Arc::new(self.authenticate().await?);
        *slot = Some(s.clone());
        Ok(s)
    }

    /// Forgets `old` (a refused token), unless another call already replaced it.
    pub(super) async fn forget(&self, old: &Arc<Session>) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, old)) {
            *slot = None;
        }
    }

    async fn authenticate(&self) -> Result<Session> {
        match &self.auth {
            SwiftAuth::Token(token) => Ok(Session {
                token: token.clone(),
                storage_url: self
                    .storage_url
                    .clone()
                    .ok_or_else(|| Error::bad_input("OS_STORAGE_URL", "missing"))?,
            }),
            SwiftAuth::TempAuth { url, user, key } => {
                let what = format!("swift TempAuth at {url} as {user}");
                let resp = self
                    .client
                    .get(url)
                    .header("X-Auth-User", user)
                    .header("X-Auth-Key", key)
                    .send()
                    .await
                    .map_err(|e| transport(&what, e))?;
                let status = resp.status();
                if !status.is_success() {
                    let body = resp.text().await.unwrap_or_default();
                    return Err(self.auth_error(&what, status, &short(&body)));
                }
                let h = resp.headers();
                let token = header(h, "x-auth-token")
                    .or_else(|| header(h, "x-storage-token"))
                    .ok_or_else(|| Error::Io {
                        what: what.clone(),
                        source: std::io::Error::other("the answer has no X-Auth-Token"),
                    })?;
                let storage_url = match self.storage_url.clone() {
                    Some(u) => u,
                    None => {
                        let u = header(h, "x-storage-url").ok_or_else(|| Error::Io {
                            what: what.clone(),
                            source: std::io::Error::other("the answer has no X-Storage-Url"),
                        })?;
                        Url::parse(&u).map_err(|e| Error::Io {
                            what: what.clone(),
                            source: std::io::Error::other(format!("X-Storage-Url {u:?}: {e}")),
                        })?
                    }
                };
                Ok(Session { token, storage_url })
            }
            SwiftAuth::Keystone(k) => self.keystone(k).await,
        }
    }

    async fn keystone(&self, k: &KeystoneAuth) -> Result<Session> {
        let url = keystone_tokens_url(&k.auth_url)?;
        let who = k
            .username
            .as_deref()
            .or(k.user_id.as_deref())
            .unwrap_or("a token");
        let what = format!("Keystone at {} as {who}", k.auth_url);
        let domain = |name: &Option<String>, id: &Option<String>| match (name, id) {
            (_, Some(id)) => serde_json::json!({ "id": id }),
            (Some(name), None) => serde_json::json!({ "name": name }),
            (None, None) => serde_json::json!({ "name": "Default" }),
        };
        let identity = match (&k.password, &k.token) {
            (Some(password), _) => {
                let user = match (&k.user_id, &k.username) {
                    (Some(id), _) => serde_json::json!({ "id": id, "password": password }),
                    (None, name) => serde_json::json!({
                        "name": name,
                        "domain": domain(&k.user_domain_name, &k.user_domain_id),
                        "password": password,
                    }),
                };
                serde_json::json!({ "methods": ["password"], "password": { "user": user } })
            }
            (None, Some(token)) => {
                serde_json::json!({ "methods": ["token"], "token": { "id": token } })
            }
            (None, None) => {
                return Err(Error::bad_input(
                    "OS_PASSWORD",
                    "Keystone authentication needs OS_PASSWORD or OS_AUTH_TOKEN",
                ));
            }
        };
        let mut auth = serde_json::json!({ "identity": identity });
        match (&k.project_id, &k.project_name) {
            (Some(id), _) => auth["scope"] = serde_json::json!({ "project": { "id": id } }),
            (None, Some(name)) => {
                auth["scope"] = serde_json::json!({ "project": {
                    "name": name,
                    "domain": domain(&k.project_domain_name, &k.project_domain_id),
                }})
            }
            (None, None) => {}
        }
        let body = serde_json::to_vec(&serde_json::json!({ "auth": auth }))
            .map_err(|e| Error::bad_input("keystone", e))?;
        let resp = self
            .client
            .post(url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| transport(&what, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| transport(&what, e))?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| short(&text));
            if status == StatusCode::NOT_FOUND {
                return Err(Error::bad_input(
                    "OS_AUTH_URL",
                    format!(
                        "{}: no Keystone v3 token service there (HTTP 404)",
                        k.auth_url
                    ),
                ));
            }
            return Err(self.auth_error(&what, status, &message));
        }
        let token = header(&headers, "x-subject-token").ok_or_else(|| Error::Io {
            what: what.clone(),
            source: std::io::Error::other("the answer has no X-Subject-Token"),
        })?;
        if let Some(u) = self.storage_url.clone() {
            return Ok(Session {
                token,
                storage_url: u,
            });
        }
        let doc: keystone::TokenDoc = serde_json::from_str(&text).map_err(|e| Error::Io {
            what: what.clone(),
            source: std::io::Error::other(format!("the token document does not parse: {e}")),
        })?;
        let storage_url = pick_endpoint(&doc.token.catalog, k)?;
        Ok(Session { token, storage_url })
    }

    fn auth_error(&self, what: &str, status: StatusCode, message: &str) -> Error {
        let what = what.to_string();
        let source = std::io::Error::other(format!("HTTP {}: {message}", status.as_u16()));
        match status.as_u16() {
            401 | 403 => Error::Permission {
                what: format!(
                    "{what}: the credentials were refused ({})",
                    self.credential_hint()
                ),
                source,
            },
            408 | 429 | 500..=599 => Error::Transient { what, source },
            _ => Error::Io { what, source },
        }
    }
}

/// `{OS_AUTH_URL}/auth/tokens`, adding `/v3` when the URL names no version.
fn keystone_tokens_url(auth_url: &str) -> Result<Url> {
    let full = keystone::tokens_url(auth_url).map_err(|e| Error::bad_input("OS_AUTH_URL", e))?;
    Url::parse(&full).map_err(|e| Error::bad_input("OS_AUTH_URL", format!("{auth_url:?}: {e}")))
}

/// The `object-store` endpoint of the catalog for the region and interface asked for.
fn pick_endpoint(catalog: &[keystone::CatalogService], k: &KeystoneAuth) -> Result<Url> {
    let region = k.region.as_deref();
    let e = match keystone::find_endpoint(catalog, "object-store", region, k.interface.as_deref()) {
        Ok(e) => e,
        Err(keystone::NoEndpoint::NoService) => {
            return Err(Error::bad_input(
                "OS_STORAGE_URL",
                "the Keystone catalog has no object-store service (set OS_STORAGE_URL)",
            ));
        }
        Err(keystone::NoEndpoint::NoMatch { interface, offered }) => {
            return Err(Error::bad_input(
                "OS_REGION_NAME",
                format!(
                    "no object-store endpoint for region {} and interface {interface} in the catalog (it has {}; set OS_REGION_NAME and OS_INTERFACE, or OS_STORAGE_URL)",
                    region.filter(|r| !r.is_empty()).unwrap_or("(any)"),
                    offered.join(", ")
                ),
            ));
        }
    };
    Url::parse(&e.url).map_err(|err| {
        Error::bad_input(
            "OS_STORAGE_URL",
            format!("the catalog's object-store URL {:?}: {err}", e.url),
        )
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Keystone credentials for unit tests (the password is `hunter2`).
    pub(in crate::sink::swift) fn keystone() -> KeystoneAuth {
        KeystoneAuth {
            auth_url: "http://k:5000/v3".into(),
            username: Some("u".into()),
            password: Some("hunter2".into()),
            project_name: Some("p".into()),
            ..Default::default()
        }
    }

    #[test]
    fn auth_urls_get_the_v3_path() {
        for (given, want) in [
            ("http://k:5000/v3", "http://k:5000/v3/auth/tokens"),
            ("http://k:5000/v3/", "http://k:5000/v3/auth/tokens"),
            ("http://k:5000", "http://k:5000/v3/auth/tokens"),
            ("https://k/identity/v3", "https://k/identity/v3/auth/tokens"),
        ] {
            assert_eq!(keystone_tokens_url(given).unwrap().as_str(), want);
        }
        assert!(keystone_tokens_url("http://k:5000/v2.0").is_err());
        assert!(keystone_tokens_url("not a url").is_err());
    }

    #[test]
    fn the_catalog_is_read_by_region_and_interface() {
        use keystone::{CatalogEndpoint, CatalogService};
        let ep = |region: &str, interface: &str, url: &str| CatalogEndpoint {
            interface: interface.into(),
            region: Some(region.into()),
            region_id: Some(region.into()),
            url: url.into(),
        };
        let catalog = vec![
            CatalogService {
                kind: "identity".into(),
                endpoints: vec![ep("R1", "public", "http://k/v3")],
            },
            CatalogService {
                kind: "object-store".into(),
                endpoints: vec![
                    ep("R1", "public", "http://r1/v1/AUTH_p"),
                    ep("R1", "internal", "http://r1-int/v1/AUTH_p"),
                    ep("R2", "public", "http://r2/v1/AUTH_p"),
                ],
            },
        ];
        let mut k = keystone();
        assert_eq!(
            pick_endpoint(&catalog, &k).unwrap().as_str(),
            "http://r1/v1/AUTH_p"
        );
        k.region = Some("R2".into());
        assert_eq!(
            pick_endpoint(&catalog, &k).unwrap().as_str(),
            "http://r2/v1/AUTH_p"
        );
        k.interface = Some("internalURL".into());
        let e = pick_endpoint(&catalog, &k).unwrap_err().to_string();
        assert!(
            e.contains("OS_REGION_NAME") && e.contains("R1/internal"),
            "{e}"
        );
        k.region = Some("R1".into());
        assert_eq!(
            pick_endpoint(&catalog, &k).unwrap().as_str(),
            "http://r1-int/v1/AUTH_p"
        );
        assert!(pick_endpoint(&catalog[..1], &k).is_err());
    }
}
