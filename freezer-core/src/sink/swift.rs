//! `swift`: a container (and prefix) of OpenStack Swift, through its v1 object API (reqwest).
//!
//! * **Authentication**: Keystone v3 password (or token) authentication, with the
//!   `object-store` endpoint taken from the catalog by region and interface; or Swift's
//!   TempAuth v1 (`GET /auth/v1.0`, python-swiftclient's `ST_AUTH`/`ST_USER`/`ST_KEY`); or a
//!   token and storage URL given outright. A storage URL given in the options replaces the one
//!   the catalog names. The token is obtained on first use, shared by every concurrent call
//!   (one authentication at a time), and obtained again once when a request answers 401
//!   (an expired or revoked token); a second 401 is a [`Permission`](crate::Error::Permission)
//!   error naming the variables to check.
//! * **Atomic visibility**: a Swift PUT is atomic. A payload larger than
//!   [`SwiftOptions::segment_size`] is uploaded as segments (slices of the payload's buffers,
//!   no copy) into the container `<container>_segments`, named
//!   `<prefix>/<key>/<upload id>/<00000000>` (python-swiftclient's layout), and then becomes
//!   visible at once as a Static Large Object manifest (`?multipart-manifest=put`). Readers see
//!   nothing until the manifest exists; `head` and `list` report the whole size; `delete`
//!   removes the manifest and its segments (`?multipart-manifest=delete`). Replacing a large
//!   object deletes the old one's segments after the new manifest is in place. An interrupted
//!   large upload deletes the segments it wrote when it still can; segments it could not
//!   delete stay in `<container>_segments`, never visible as objects of the sink.
//! * **Create-only puts** send `If-None-Match: *`, which Swift answers with 412 when the
//!   object exists.
//! * **Errors** are sorted by what the caller does: 404 is `NotFound`; 412 `AlreadyExists`;
//!   401/403 `Permission`, naming what to check; 5xx, 408, 429, refused or dropped
//!   connections and timeouts are `Transient` (wrap the sink in
//!   [`Retrying`](super::Retrying)); 507 `NoSpace`.
//! * **Secrets** (TempAuth key, Keystone password, tokens) never appear in `describe`,
//!   `Debug`, error messages or logs.
//!
//! Container listings are eventually consistent in a Swift cluster under load: an object put
//! a moment ago may be missing from a listing for a while, never from a `get` or `head`.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, HeaderMap};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{GetBody, ObjectMeta, Payload, PutMode, Sink, check_key, clamp};
use crate::error::{Error, Result};

/// The default size above which objects are uploaded as segments (and the size of each).
const SEGMENT_SIZE: usize = 64 * 1024 * 1024;
/// Swift's default `max_manifest_segments`.
const MAX_SEGMENTS: usize = 1000;
/// Gets up to this size are read into one buffer; larger ones are streamed.
const STREAM_FROM: u64 = 4 * 1024 * 1024;
/// Segments uploaded at once.
const PARALLEL_SEGMENTS: usize = 3;

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
    /// A token obtained elsewhere (`OS_AUTH_TOKEN`); needs [`SwiftOptions::storage_url`]. It
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

/// Where a Swift repository is and how to reach it.
#[derive(Clone, Debug)]
pub struct SwiftOptions {
    /// The container (upstream's `container`, before the first `/`).
    pub container: String,
    /// A prefix inside the container, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// How to authenticate.
    pub auth: SwiftAuth,
    /// `OS_STORAGE_URL`: the account's URL (`http://proxy:8080/v1/AUTH_project`), replacing
    /// the one authentication returns.
    pub storage_url: Option<String>,
    /// Objects larger than this are uploaded as segments of this size (default 64 MiB; Swift
    /// needs at least 1 MiB, its `min_segment_size`).
    pub segment_size: usize,
}

impl SwiftOptions {
    /// The default [`SwiftOptions::segment_size`].
    pub const DEFAULT_SEGMENT_SIZE: usize = SEGMENT_SIZE;

    /// Options for `container` (which may hold `container/prefix`), with the default segment
    /// size and no storage URL override.
    pub fn new(container: &str, auth: SwiftAuth) -> Self {
        let container = container.trim_matches('/');
        let (container, prefix) = container.split_once('/').unwrap_or((container, ""));
        SwiftOptions {
            container: container.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            auth,
            storage_url: None,
            segment_size: SEGMENT_SIZE,
        }
    }
}

/// A token and the account URL it opens.
struct Session {
    token: String,
    storage_url: Url,
}

/// A repository in a Swift container.
pub struct SwiftSink {
    opts: SwiftOptions,
    client: reqwest::Client,
    session: Mutex<Option<Arc<Session>>>,
    segments_ready: AtomicBool,
}

impl fmt::Debug for SwiftSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SwiftSink({})", self.describe())
    }
}

/// What a request sends.
enum Body {
    Empty,
    Parts(Vec<Bytes>),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::Parts(p) => p.iter().map(Bytes::len).sum(),
        }
    }

    fn to_reqwest(&self) -> reqwest::Body {
        match self {
            Body::Empty => reqwest::Body::from(Bytes::new()),
            Body::Parts(p) if p.len() == 1 => reqwest::Body::from(p[0].clone()),
            Body::Parts(p) => {
                let parts: Vec<std::result::Result<Bytes, std::io::Error>> =
                    p.iter().cloned().map(Ok).collect();
                reqwest::Body::wrap_stream(futures::stream::iter(parts))
            }
        }
    }
}

/// One request, rebuilt for each attempt (the body's buffers are shared, not copied).
struct Request<'a> {
    method: Method,
    container: &'a str,
    object: Option<&'a str>,
    query: &'a [(&'a str, &'a str)],
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl<'a> Request<'a> {
    fn new(method: Method, container: &'a str, object: Option<&'a str>) -> Self {
        Request {
            method,
            container,
            object,
            query: &[],
            headers: Vec::new(),
            body: Body::Empty,
        }
    }
}

#[derive(Deserialize)]
struct ListEntry {
    name: Option<String>,
    bytes: Option<u64>,
}

#[derive(Deserialize)]
struct ManifestEntry {
    name: String,
}

#[derive(Deserialize)]
struct BulkDelete {
    #[serde(rename = "Response Status", default)]
    status: String,
    #[serde(rename = "Errors", default)]
    errors: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct TokenDoc {
    token: TokenBody,
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default)]
    catalog: Vec<CatalogService>,
}

#[derive(Deserialize)]
struct CatalogService {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    endpoints: Vec<CatalogEndpoint>,
}

#[derive(Deserialize)]
struct CatalogEndpoint {
    interface: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    region_id: Option<String>,
    url: String,
}

fn transport(what: &str, e: reqwest::Error) -> Error {
    Error::Transient {
        what: what.to_string(),
        source: std::io::Error::other(e.without_url().to_string()),
    }
}

/// The first line of an error body, without HTML, short.
fn short(body: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    out.chars().take(200).collect()
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    header(h, CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok())
}

/// A random id for one large upload, so that a new upload never overwrites the segments a
/// reader of the old manifest may be reading.
fn upload_id() -> String {
    let mut r = [0u8; 6];
    getrandom::fill(&mut r).expect("the operating system's random number generator failed");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.{:06}-{}",
        now.as_secs(),
        now.subsec_micros(),
        hex::encode(r)
    )
}

impl SwiftSink {
    /// A sink; it authenticates on first use.
    pub fn new(opts: SwiftOptions) -> Result<Self> {
        if opts.container.is_empty() {
            return Err(Error::bad_input(
                "container",
                "a swift storage needs a container",
            ));
        }
        if opts.container.contains('/') {
            return Err(Error::bad_input(
                "container",
                format!("{:?}: a container name has no '/'", opts.container),
            ));
        }
        if opts.segment_size == 0 {
            return Err(Error::bad_input("segment_size", "must be above 0"));
        }
        if let Some(u) = &opts.storage_url {
            Url::parse(u).map_err(|e| Error::bad_input("OS_STORAGE_URL", format!("{u:?}: {e}")))?;
        }
        match &opts.auth {
            SwiftAuth::Token(_) if opts.storage_url.is_none() => {
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
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::bad_input("swift", e))?;
        let mut opts = opts;
        opts.prefix = opts.prefix.trim_matches('/').to_string();
        Ok(SwiftSink {
            opts,
            client,
            session: Mutex::new(None),
            segments_ready: AtomicBool::new(false),
        })
    }

    fn segments_container(&self) -> String {
        format!("{}_segments", self.opts.container)
    }

    /// The object's name in the container.
    fn name(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(if self.opts.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.opts.prefix)
        })
    }

    fn what(&self, key: &str) -> String {
        format!("{}/{key}", self.location())
    }

    fn location(&self) -> String {
        if self.opts.prefix.is_empty() {
            format!("swift://{}", self.opts.container)
        } else {
            format!("swift://{}/{}", self.opts.container, self.opts.prefix)
        }
    }

    /// What to check when credentials are refused.
    fn credential_hint(&self) -> &'static str {
        match &self.opts.auth {
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
    async fn session(&self) -> Result<Arc<Session>> {
        let mut slot = self.session.lock().await;
        if let Some(s) = &*slot {
            return Ok(s.clone());
        }
        let s = Arc::new(self.authenticate().await?);
        *slot = Some(s.clone());
        Ok(s)
    }

    /// Forgets `old` (a refused token), unless another call already replaced it.
    async fn forget(&self, old: &Arc<Session>) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, old)) {
            *slot = None;
        }
    }

    fn storage_url_override(&self) -> Result<Option<Url>> {
        self.opts
            .storage_url
            .as_deref()
            .map(|u| Url::parse(u).map_err(|e| Error::bad_input("OS_STORAGE_URL", e)))
            .transpose()
    }

    async fn authenticate(&self) -> Result<Session> {
        match &self.opts.auth {
            SwiftAuth::Token(token) => Ok(Session {
                token: token.clone(),
                storage_url: self
                    .storage_url_override()?
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
                let storage_url = match self.storage_url_override()? {
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
        if let Some(u) = self.storage_url_override()? {
            return Ok(Session {
                token,
                storage_url: u,
            });
        }
        let doc: TokenDoc = serde_json::from_str(&text).map_err(|e| Error::Io {
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

    /// Maps an unsuccessful answer to an error about `what`.
    fn status_error(&self, status: StatusCode, body: &str, what: &str) -> Error {
        let source = std::io::Error::other(format!("HTTP {}: {}", status.as_u16(), short(body)));
        let what = what.to_string();
        match status.as_u16() {
            401 => Error::Permission {
                what: match self.opts.auth {
                    SwiftAuth::Token(_) => {
                        format!("{what}: the token was refused ({})", self.credential_hint())
                    }
                    _ => format!(
                        "{what}: the token was refused even after authenticating again ({})",
                        self.credential_hint()
                    ),
                },
                source,
            },
            403 => Error::Permission {
                what: format!(
                    "{what}: access refused (the user may lack a role on the project, or an ACL on container {}; {})",
                    self.opts.container,
                    self.credential_hint()
                ),
                source,
            },
            404 => Error::NotFound { what },
            412 => Error::AlreadyExists { what },
            507 => Error::NoSpace { what },
            408 | 429 | 498 | 500..=599 => Error::Transient { what, source },
            400 | 411 | 413 | 414 | 422 => Error::BadInput {
                field: what,
                detail: source.to_string(),
            },
            _ => Error::Io { what, source },
        }
    }

    fn url(&self, s: &Session, container: &str, object: Option<&str>) -> Result<Url> {
        let mut url = s.storage_url.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| {
                Error::bad_input("OS_STORAGE_URL", "the storage URL cannot take a path")
            })?;
            path.pop_if_empty().push(container);
            if let Some(o) = object {
                path.extend(o.split('/'));
            }
        }
        Ok(url)
    }

    /// Sends a request with the current token; on 401, authenticates again and sends it once
    /// more. Connection failures are `Transient`; other statuses are left to the caller.
    async fn send(&self, req: &Request<'_>, what: &str) -> Result<reqwest::Response> {
        let mut renewed = false;
        loop {
            let session = self.session().await?;
            let mut url = self.url(&session, req.container, req.object)?;
            if !req.query.is_empty() {
                url.query_pairs_mut().extend_pairs(req.query.iter());
            }
            let mut b = self
                .client
                .request(req.method.clone(), url)
                .header("X-Auth-Token", &session.token);
            for (k, v) in &req.headers {
                b = b.header(*k, v);
            }
            if req.method == Method::PUT {
                b = b
                    .header(CONTENT_LENGTH, req.body.len())
                    .body(req.body.to_reqwest());
            }
            let resp = b.send().await.map_err(|e| transport(what, e))?;
            if resp.status() == StatusCode::UNAUTHORIZED
                && !renewed
                && !matches!(self.opts.auth, SwiftAuth::Token(_))
            {
                renewed = true;
                self.forget(&session).await;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Sends a request and fails on any unsuccessful status.
    async fn call(&self, req: &Request<'_>, what: &str) -> Result<reqwest::Response> {
        let resp = self.send(req, what).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(self.status_error(status, &body, what))
    }

    async fn put_container(&self, container: &str) -> Result<()> {
        let what = format!("swift container {container}");
        self.call(&Request::new(Method::PUT, container, None), &what)
            .await?;
        Ok(())
    }

    /// One PUT of a whole object.
    async fn put_object(
        &self,
        container: &str,
        name: &str,
        body: Body,
        create: bool,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<()> {
        let mut req = Request::new(Method::PUT, container, Some(name));
        req.body = body;
        req.query = query;
        if create {
            req.headers.push(("If-None-Match", "*".into()));
        }
        let resp = self.send(&req, what).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(match status {
            StatusCode::NOT_FOUND => Error::NotFound {
                what: format!("{what}: container {container} (run `freezer init` to create it)"),
            },
            StatusCode::PRECONDITION_FAILED => Error::AlreadyExists {
                what: what.to_string(),
            },
            s => self.status_error(s, &text, what),
        })
    }

    /// The segments of the large object `name`, if it is one (`container/object` paths).
    async fn segments_of(&self, name: &str, what: &str) -> Result<Vec<String>> {
        let container = self.opts.container.as_str();
        let resp = self
            .send(&Request::new(Method::HEAD, container, Some(name)), what)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !resp.status().is_success() {
            return Err(self.status_error(resp.status(), "", what));
        }
        if !header(resp.headers(), "x-static-large-object")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Ok(Vec::new());
        }
        let mut req = Request::new(Method::GET, container, Some(name));
        req.query = &[("multipart-manifest", "get")];
        let resp = self.send(&req, what).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !resp.status().is_success() {
            let s = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(self.status_error(s, &body, what));
        }
        let text = resp.bytes().await.map_err(|e| transport(what, e))?;
        let entries: Vec<ManifestEntry> = serde_json::from_slice(&text)
            .map_err(|e| Error::corrupt(format!("{what} (manifest)"), e))?;
        Ok(entries
            .into_iter()
            .map(|e| e.name.trim_start_matches('/').to_string())
            .collect())
    }

    /// Deletes segments (`container/object` paths), best effort.
    async fn delete_segments(&self, paths: &[String]) {
        let what = "swift segments";
        futures::stream::iter(paths.iter())
            .for_each_concurrent(PARALLEL_SEGMENTS, |p| async move {
                let Some((c, o)) = p.split_once('/') else {
                    return;
                };
                let res = self
                    .send(&Request::new(Method::DELETE, c, Some(o)), what)
                    .await;
                match res {
                    Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {}
                    Ok(r) => tracing::warn!(segment = %p, status = %r.status(), "could not delete a segment"),
                    Err(e) => tracing::warn!(segment = %p, error = %e, "could not delete a segment"),
                }
            })
            .await;
    }

    /// A payload above the segment size: segments, then the manifest.
    async fn put_large(
        &self,
        name: &str,
        payload: Payload,
        create: bool,
        what: &str,
    ) -> Result<()> {
        let size = self.opts.segment_size;
        let count = payload.len().div_ceil(size);
        if count > MAX_SEGMENTS {
            return Err(Error::unsupported(format!(
                "{what}: {} bytes in segments of {size} bytes make more than Swift's {MAX_SEGMENTS} segments (raise the segment size)",
                payload.len()
            )));
        }
        if create {
            let resp = self
                .send(
                    &Request::new(Method::HEAD, &self.opts.container, Some(name)),
                    what,
                )
                .await?;
            if resp.status().is_success() {
                return Err(Error::AlreadyExists {
                    what: what.to_string(),
                });
            }
        }
        let seg_container = self.segments_container();
        if !self.segments_ready.load(Ordering::Relaxed) {
            self.put_container(&seg_container).await?;
            self.segments_ready.store(true, Ordering::Relaxed);
        }
        let old = if create {
            Vec::new()
        } else {
            self.segments_of(name, what).await?
        };
        // Slices of the payload's buffers, `size` bytes each.
        let mut segments: Vec<Vec<Bytes>> = Vec::with_capacity(count);
        let mut current: Vec<Bytes> = Vec::new();
        let mut filled = 0;
        for part in payload.parts() {
            let mut b = part.clone();
            while !b.is_empty() {
                let take = (size - filled).min(b.len());
                current.push(b.split_to(take));
                filled += take;
                if filled == size {
                    segments.push(std::mem::take(&mut current));
                    filled = 0;
                }
            }
        }
        if filled > 0 {
            segments.push(current);
        }
        let id = upload_id();
        let names: Vec<String> = (0..segments.len())
            .map(|i| format!("{name}/{id}/{i:08}"))
            .collect();
        let sizes: Vec<usize> = segments
            .iter()
            .map(|s| s.iter().map(Bytes::len).sum())
            .collect();
        // Segments go up a few at a time; the first failure stops the rest, and the segments
        // already written are deleted.
        let written = std::sync::Mutex::new(Vec::with_capacity(names.len()));
        let uploaded = futures::stream::iter(segments.into_iter().enumerate().map(Ok))
            .try_for_each_concurrent(PARALLEL_SEGMENTS, |(i, parts)| {
                let (seg_container, names, written) = (&seg_container, &names, &written);
                async move {
                    let what = format!("{what} (segment {i})");
                    self.put_object(
                        seg_container,
                        &names[i],
                        Body::Parts(parts),
                        false,
                        &[],
                        &what,
                    )
                    .await?;
                    written
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{seg_container}/{}", names[i]));
                    Ok::<(), Error>(())
                }
            })
            .await;
        let written = written.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = uploaded {
            self.delete_segments(&written).await;
            return Err(e);
        }
        let manifest: Vec<serde_json::Value> = names
            .iter()
            .zip(&sizes)
            .map(|(n, s)| {
                serde_json::json!({
                    "path": format!("/{seg_container}/{n}"),
                    "size_bytes": s,
                    "etag": null,
                })
            })
            .collect();
        let body = serde_json::to_vec(&manifest).map_err(|e| Error::bad_input("manifest", e))?;
        let res = self
            .put_object(
                &self.opts.container,
                name,
                Body::Parts(vec![Bytes::from(body)]),
                create,
                &[("multipart-manifest", "put")],
                what,
            )
            .await;
        match res {
            Ok(()) => {
                self.delete_segments(&old).await;
                Ok(())
            }
            Err(e) => {
                // The manifest may have been stored even though its answer was lost: only
                // clean up when it certainly was not.
                if !e.is_transient() {
                    self.delete_segments(&written).await;
                }
                Err(e)
            }
        }
    }
}

/// `{OS_AUTH_URL}/auth/tokens`, adding `/v3` when the URL names no version.
fn keystone_tokens_url(auth_url: &str) -> Result<Url> {
    let base = auth_url.trim_end_matches('/');
    if base.ends_with("/v2.0") || base.ends_with("/v2") {
        return Err(Error::bad_input(
            "OS_AUTH_URL",
            format!("{auth_url}: Keystone v2 is not supported; give the v3 URL"),
        ));
    }
    let full = if base.ends_with("/v3") {
        format!("{base}/auth/tokens")
    } else {
        format!("{base}/v3/auth/tokens")
    };
    Url::parse(&full).map_err(|e| Error::bad_input("OS_AUTH_URL", format!("{auth_url:?}: {e}")))
}

/// The `object-store` endpoint of the catalog for the region and interface asked for.
fn pick_endpoint(catalog: &[CatalogService], k: &KeystoneAuth) -> Result<Url> {
    let interface = match k
        .interface
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("public")
    {
        "publicURL" => "public",
        "internalURL" => "internal",
        "adminURL" => "admin",
        other => other,
    };
    let region = k.region.as_deref().filter(|r| !r.is_empty());
    let stores: Vec<&CatalogEndpoint> = catalog
        .iter()
        .filter(|s| s.kind == "object-store")
        .flat_map(|s| s.endpoints.iter())
        .collect();
    if stores.is_empty() {
        return Err(Error::bad_input(
            "OS_STORAGE_URL",
            "the Keystone catalog has no object-store service (set OS_STORAGE_URL)",
        ));
    }
    let found = stores.iter().find(|e| {
        e.interface == interface
            && region
                .is_none_or(|r| e.region.as_deref() == Some(r) || e.region_id.as_deref() == Some(r))
    });
    let Some(e) = found else {
        let mut offered: Vec<String> = stores
            .iter()
            .map(|e| {
                format!(
                    "{}/{}",
                    e.region
                        .as_deref()
                        .or(e.region_id.as_deref())
                        .unwrap_or("-"),
                    e.interface
                )
            })
            .collect();
        offered.sort();
        offered.dedup();
        return Err(Error::bad_input(
            "OS_REGION_NAME",
            format!(
                "no object-store endpoint for region {} and interface {interface} in the catalog (it has {}; set OS_REGION_NAME and OS_INTERFACE, or OS_STORAGE_URL)",
                region.unwrap_or("(any)"),
                offered.join(", ")
            ),
        ));
    };
    Url::parse(&e.url).map_err(|err| {
        Error::bad_input(
            "OS_STORAGE_URL",
            format!("the catalog's object-store URL {:?}: {err}", e.url),
        )
    })
}

#[async_trait]
impl Sink for SwiftSink {
    fn describe(&self) -> String {
        let at = match (&self.opts.storage_url, &self.opts.auth) {
            (Some(u), _) => u.clone(),
            (None, SwiftAuth::Keystone(k)) => k.auth_url.clone(),
            (None, SwiftAuth::TempAuth { url, .. }) => url.clone(),
            (None, SwiftAuth::Token(_)) => String::new(),
        };
        if at.is_empty() {
            self.location()
        } else {
            format!("{} at {at}", self.location())
        }
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<()> {
        let name = self.name(key)?;
        let what = self.what(key);
        let create = mode == PutMode::Create;
        if payload.len() > self.opts.segment_size {
            return self.put_large(&name, payload, create, &what).await;
        }
        let body = Body::Parts(payload.parts().to_vec());
        self.put_object(&self.opts.container, &name, body, create, &[], &what)
            .await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetBody> {
        let name = self.name(key)?;
        let what = self.what(key);
        if let Some(r) = &range
            && r.start >= r.end
        {
            // An empty range: Swift would refuse it; the answer is known.
            self.head(key).await?;
            return Ok(GetBody::Bytes(Bytes::new()));
        }
        let mut req = Request::new(Method::GET, &self.opts.container, Some(&name));
        if let Some(r) = &range {
            req.headers
                .push(("Range", format!("bytes={}-{}", r.start, r.end - 1)));
        }
        let mut resp = self.send(&req, &what).await?;
        if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            // A range past the end of the object is clamped, as the contract says.
            let size = self.head(key).await?.size;
            let r = clamp(range, size);
            if r.start >= r.end {
                return Ok(GetBody::Bytes(Bytes::new()));
            }
            req.headers = vec![("Range", format!("bytes={}-{}", r.start, r.end - 1))];
            resp = self.send(&req, &what).await?;
        }
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(self.status_error(status, &body, &what));
        }
        match content_length(resp.headers()) {
            Some(n) if n <= STREAM_FROM => Ok(GetBody::Bytes(
                resp.bytes().await.map_err(|e| transport(&what, e))?,
            )),
            _ => Ok(GetBody::Stream(
                resp.bytes_stream()
                    .map_err(move |e| transport(&what, e))
                    .boxed(),
            )),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let full = if self.opts.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.opts.prefix)
        };
        let strip = if self.opts.prefix.is_empty() {
            0
        } else {
            self.opts.prefix.len() + 1
        };
        let what = format!("{}/{prefix}", self.location());
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let query = [
                ("format", "json"),
                ("prefix", full.as_str()),
                ("marker", marker.as_str()),
            ];
            let mut req = Request::new(Method::GET, &self.opts.container, None);
            req.query = &query;
            let resp = self.send(&req, &what).await?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                return Err(Error::NotFound {
                    what: format!(
                        "{}: container {} (run `freezer init` to create it)",
                        self.location(),
                        self.opts.container
                    ),
                });
            }
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                return Err(self.status_error(status, &body, &what));
            }
            if status == StatusCode::NO_CONTENT {
                break;
            }
            let text = resp.bytes().await.map_err(|e| transport(&what, e))?;
            let page: Vec<ListEntry> = serde_json::from_slice(&text).map_err(|e| Error::Io {
                what: what.clone(),
                source: std::io::Error::other(format!("the listing does not parse: {e}")),
            })?;
            let Some(last) = page.iter().rev().find_map(|e| e.name.clone()) else {
                break;
            };
            for e in page {
                let Some(name) = e.name else { continue };
                let Some(key) = name.get(strip..) else {
                    continue;
                };
                if key.starts_with(prefix) {
                    out.push(ObjectMeta {
                        key: key.to_string(),
                        size: e.bytes.unwrap_or(0),
                    });
                }
            }
            marker = last;
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let name = self.name(key)?;
        let what = self.what(key);
        let mut req = Request::new(Method::DELETE, &self.opts.container, Some(&name));
        req.query = &[("multipart-manifest", "delete")];
        req.headers.push(("Accept", "application/json".into()));
        let resp = self.send(&req, &what).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(self.status_error(status, &body, &what));
        }
        // The answer is a report of the manifest and its segments. An object that is not a
        // large one is refused as "Not an SLO manifest": delete it plainly.
        if let Ok(report) = serde_json::from_str::<BulkDelete>(&body) {
            if !report.errors.is_empty()
                && report
                    .errors
                    .iter()
                    .all(|e| e.to_string().contains("Not an SLO manifest"))
            {
                let plain = Request::new(Method::DELETE, &self.opts.container, Some(&name));
                let resp = self.send(&plain, &what).await?;
                let status = resp.status();
                if status.is_success() || status == StatusCode::NOT_FOUND {
                    return Ok(());
                }
                let body = resp.text().await.unwrap_or_default();
                return Err(self.status_error(status, &body, &what));
            }
            let code: u16 = report
                .status
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(200);
            if !(200..300).contains(&code) && code != 404 || !report.errors.is_empty() {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
                let detail = format!("{} {:?}", report.status, report.errors);
                return Err(self.status_error(status, &detail, &what));
            }
        }
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let name = self.name(key)?;
        let what = self.what(key);
        let resp = self
            .call(
                &Request::new(Method::HEAD, &self.opts.container, Some(&name)),
                &what,
            )
            .await?;
        let size = content_length(resp.headers()).ok_or_else(|| Error::Io {
            what: what.clone(),
            source: std::io::Error::other("the answer has no Content-Length"),
        })?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
        })
    }

    async fn prepare(&self) -> Result<()> {
        self.put_container(&self.opts.container).await?;
        self.put_container(&self.segments_container()).await?;
        self.segments_ready.store(true, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keystone() -> KeystoneAuth {
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

    #[test]
    fn secrets_stay_out_of_debug_and_describe() {
        let mut o = SwiftOptions::new("c/p/q", SwiftAuth::Keystone(Box::new(keystone())));
        assert_eq!((o.container.as_str(), o.prefix.as_str()), ("c", "p/q"));
        let s = SwiftSink::new(o.clone()).unwrap();
        let shown = format!("{o:?} {s:?} {}", s.describe());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(s.describe(), "swift://c/p/q at http://k:5000/v3");
        o.auth = SwiftAuth::TempAuth {
            url: "http://s/auth/v1.0".into(),
            user: "a:u".into(),
            key: "hunter2".into(),
        };
        assert!(!format!("{o:?}").contains("hunter2"));
        o.auth = SwiftAuth::Token("hunter2".into());
        assert!(!format!("{o:?}").contains("hunter2"));
        assert!(
            SwiftSink::new(o.clone()).is_err(),
            "a bare token needs a storage URL"
        );
        o.storage_url = Some("http://s/v1/AUTH_a".into());
        assert!(SwiftSink::new(o).is_ok());
    }

    #[test]
    fn object_urls_are_escaped_per_segment() {
        let o = SwiftOptions::new("my c/pre", SwiftAuth::Token("t".into()));
        let mut o2 = o.clone();
        o2.storage_url = Some("http://s:8080/v1/AUTH_a".into());
        let sink = SwiftSink::new(o2).unwrap();
        let s = Session {
            token: "t".into(),
            storage_url: Url::parse("http://s:8080/v1/AUTH_a").unwrap(),
        };
        let name = sink.name("names/ü ✓?#").unwrap();
        let url = sink.url(&s, "my c", Some(&name)).unwrap();
        assert_eq!(
            url.as_str(),
            "http://s:8080/v1/AUTH_a/my%20c/pre/names/%C3%BC%20%E2%9C%93%3F%23"
        );
        assert!(sink.name("../x").is_err());
    }
}
