//! A client of freezer-api v2 (ours or upstream's): what the scheduler, and any Rust caller,
//! uses to reach the service.
//!
//! It authenticates against Keystone v3 (password or token, from explicit [`ClientSettings`]:
//! the front-end maps `OS_*`; this module reads no environment), finds the API in the catalog
//! (service type `backup`) unless a URL is given, re-issues its token before it expires and
//! once when the API answers 401, and builds URLs as python-freezerclient does (a base
//! holding `/v2` is used as is, otherwise `<base>/v2/<project_id>`). Errors carry the HTTP
//! status and upstream's `description`. It never logs or shows a token or a password.

use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::error::Error;
use crate::job::Secret;
use crate::keystone;

/// How to reach and authenticate to a freezer-api. Front-ends fill it from `OS_AUTH_URL`,
/// `OS_USERNAME`, `OS_PASSWORD`, `OS_PROJECT_NAME`/`OS_PROJECT_ID`, `OS_USER_DOMAIN_NAME`,
/// `OS_PROJECT_DOMAIN_NAME`, `OS_AUTH_TOKEN`, `OS_REGION_NAME`, `OS_BACKUP_URL`.
#[derive(Clone, Debug, Default)]
pub struct ClientSettings {
    /// Keystone v3 (`http://host:5000/v3`; `/v3` is added when missing). Without it, `token`
    /// and `backup_url` are used as given and the token cannot be renewed.
    pub auth_url: Option<String>,
    /// The user name (password authentication).
    pub username: Option<String>,
    /// The password.
    pub password: Option<Secret>,
    /// The user's domain (default `Default`).
    pub user_domain_name: Option<String>,
    /// The project, by name ...
    pub project_name: Option<String>,
    /// ... or by id (wins over the name).
    pub project_id: Option<String>,
    /// The project's domain (default `Default`).
    pub project_domain_name: Option<String>,
    /// A token: exchanged for a scoped one with Keystone, or used as is without `auth_url`.
    pub token: Option<Secret>,
    /// The region of the catalog endpoint (any when not given).
    pub region_name: Option<String>,
    /// The catalog interface (default `public`).
    pub interface: Option<String>,
    /// The API's URL (`--api`, `OS_BACKUP_URL`), instead of the catalog's.
    pub backup_url: Option<String>,
    /// How long one request may take (default 30 s).
    pub timeout: Option<Duration>,
    /// A Keystone trust to scope the token to (`{"OS-TRUST:trust": {"id": ...}}`) instead of
    /// a project: the token acts in the trustor's project (a centralized scheduler's per-job
    /// client, see [`Client::for_trust`]).
    pub trust_id: Option<String>,
    /// Trust roots (PEM) added to the system's, for an API and a Keystone whose certificates
    /// a private CA signed (`OS_CACERT`).
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification of the API and Keystone (`OS_INSECURE`): anyone on the
    /// path can then read the credentials. Logged as a warning.
    pub insecure: bool,
    /// A client certificate (PEM) for servers that ask for one (`OS_CERT`) ...
    pub client_cert: Option<PathBuf>,
    /// ... and its private key (`OS_KEY`; default: the certificate's file).
    pub client_key: Option<PathBuf>,
}

/// An error of an API call: what was asked, the HTTP status (none when the API could not
/// be reached) and the API's `description`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("freezer-api {method} {path}: {}{description}", .status.map(|s| format!("{s}: ")).unwrap_or_default())]
pub struct ApiError {
    /// The method.
    pub method: String,
    /// The path, relative to the project's base (`/jobs/J`), or the Keystone URL.
    pub path: String,
    /// The HTTP status, `None` when no answer came (connection refused, timeout).
    pub status: Option<u16>,
    /// Upstream's `description` (or the reason, or the transport error).
    pub description: String,
}

impl ApiError {
    /// Whether the API (or Keystone) could not be reached, or answered that it is
    /// unavailable: what an outage looks like, worth a later retry.
    pub fn is_unreachable(&self) -> bool {
        matches!(self.status, None | Some(500 | 502 | 503 | 504))
    }
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Error {
        let what = e.to_string();
        match e.status {
            Some(404) => Error::NotFound { what },
            Some(409) => Error::AlreadyExists { what },
            Some(401 | 403) => Error::Permission {
                what,
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            },
            Some(400 | 405 | 422) | Some(753) => Error::BadInput {
                field: format!("freezer-api {} {}", e.method, e.path),
                detail: e.description,
            },
            _ => Error::Transient {
                what,
                source: std::io::Error::other(e.description),
            },
        }
    }
}

/// What [`Client::register_client`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// The client was registered (or re-registered, updating its capabilities).
    Registered,
    /// The API answered 409: a client of that id exists (upstream's scheduler goes on).
    AlreadyRegistered,
}

/// The answer to a session `start` or `end`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct SessionReply {
    /// `success`, `hold-off` or `out-of-sync`.
    pub result: String,
    /// The session's tag after the call.
    #[serde(default)]
    pub session_tag: i64,
}

/// What the scheduler writes back to a job (upstream PATCHes exactly these).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobPatch {
    /// The whole `job_schedule` (upstream's SQL store replaces it wholesale).
    pub job_schedule: Value,
    /// The session the job belongs to (`""` for none).
    pub session_id: String,
    /// The job's session tag.
    pub session_tag: i64,
}

/// Page size of [`Client::list_all_jobs`], as upstream's scheduler pages.
pub const JOB_PAGE: usize = 10;

/// Renew a token this long before it expires.
const RENEW_BEFORE: i64 = 120;

/// A token and where it leads.
struct Session {
    token: Secret,
    expires_at: Option<Timestamp>,
    /// `.../v2/<project>` (no trailing slash).
    base: String,
}

/// A freezer-api v2 client. Cheap to share behind an `Arc`; one authentication at a time.
pub struct Client {
    http: reqwest::Client,
    settings: ClientSettings,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("auth_url", &self.settings.auth_url)
            .field("backup_url", &self.settings.backup_url)
            .field("username", &self.settings.username)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Checks the settings; nothing is sent until the first call.
    pub fn new(settings: ClientSettings) -> crate::Result<Client> {
        match (&settings.auth_url, &settings.token, &settings.password) {
            (None, None, _) => {
                return Err(Error::bad_input(
                    "OS_AUTH_URL",
                    "the API needs Keystone credentials (OS_AUTH_URL with OS_USERNAME and OS_PASSWORD, or OS_AUTH_TOKEN) or a token and its URL",
                ));
            }
            (None, Some(_), _) if settings.backup_url.is_none() => {
                return Err(Error::bad_input(
                    "OS_BACKUP_URL",
                    "a token used without Keystone (no OS_AUTH_URL) needs the API's URL",
                ));
            }
            (Some(_), None, None) => {
                return Err(Error::bad_input(
                    "OS_PASSWORD",
                    "Keystone authentication needs a password (OS_PASSWORD) or a token (OS_AUTH_TOKEN)",
                ));
            }
            (Some(_), _, Some(_)) if settings.username.is_none() => {
                return Err(Error::bad_input(
                    "OS_USERNAME",
                    "password authentication needs a user name",
                ));
            }
            _ => {}
        }
        if let Some(u) = &settings.auth_url {
            Url::parse(u).map_err(|e| Error::bad_input("OS_AUTH_URL", format!("{u:?}: {e}")))?;
            keystone::tokens_url(u).map_err(|e| Error::bad_input("OS_AUTH_URL", e))?;
        }
        if let Some(u) = &settings.backup_url {
            Url::parse(u).map_err(|e| Error::bad_input("OS_BACKUP_URL", format!("{u:?}: {e}")))?;
        }
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(settings.timeout.unwrap_or(Duration::from_secs(30)))
            .pool_idle_timeout(Duration::from_secs(30));
        let http = crate::tls::reqwest_tls(
            builder,
            &crate::tls::ClientTls {
                ca_file: settings.ca_file.as_deref(),
                insecure: settings.insecure,
                cert: settings.client_cert.as_deref(),
                key: settings.client_key.as_deref(),
                fields: ["OS_CACERT", "OS_CERT", "OS_KEY"],
                what: "freezer-api and its Keystone",
            },
        )?
        .build()
        .map_err(|e| Error::bad_input("freezer-api client", transport_error(&e)))?;
        Ok(Client {
            http,
            settings,
            session: Mutex::new(None),
        })
    }

    /// The project's base URL (`.../v2/<project_id>`), authenticating when needed.
    pub async fn base_url(&self) -> Result<String, ApiError> {
        let mut slot = self.session.lock().await;
        Ok(self.current(&mut slot).await?.base.clone())
    }

    /// Registers this client (the bare `client_info`: `client_id`, `hostname`,
    /// `supported_*`, ...). 409 means it exists, which is not an error.
    pub async fn register_client(&self, client_info: &Value) -> Result<Registration, ApiError> {
        match self
            .call(Method::POST, "/clients/", &[], Some(client_info))
            .await
        {
            Ok((StatusCode::CREATED | StatusCode::OK, _)) => Ok(Registration::Registered),
            Ok((StatusCode::CONFLICT, _)) => Ok(Registration::AlreadyRegistered),
            Ok((s, body)) => Err(self.unexpected("POST", "/clients/", s, &body)),
            Err(e) => Err(e),
        }
    }

    /// The same credentials, with tokens scoped to Keystone trust `trust_id` (a centralized
    /// scheduler acting for a job's creator, in their project). Needs Keystone (`auth_url`).
    pub fn for_trust(&self, trust_id: &str) -> crate::Result<Client> {
        if self.settings.auth_url.is_none() {
            return Err(Error::bad_input(
                "OS_AUTH_URL",
                "a trust-scoped token comes from Keystone: the centralized scheduler needs OS_AUTH_URL",
            ));
        }
        Client::new(ClientSettings {
            trust_id: Some(trust_id.to_string()),
            project_id: None,
            project_name: None,
            ..self.settings.clone()
        })
    }

    /// One page of jobs matching `search` (`{"match":[...],"match_not":[...]}`, sent as the
    /// GET body as upstream's client does).
    pub async fn list_jobs(
        &self,
        search: &Value,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Value>, ApiError> {
        self.jobs_page(search, offset, limit, false).await
    }

    /// Every project's jobs matching `search` (`?all_projects=true`, upstream's
    /// `jobs:get_all_projects`: an admin or service user; a centralized scheduler), paging
    /// by [`JOB_PAGE`].
    pub async fn list_all_projects_jobs(&self, search: &Value) -> Result<Vec<Value>, ApiError> {
        let mut all = Vec::new();
        loop {
            let page = self.jobs_page(search, all.len(), JOB_PAGE, true).await?;
            let n = page.len();
            all.extend(page);
            if n < JOB_PAGE || all.len() >= 100_000 {
                return Ok(all);
            }
        }
    }

    async fn jobs_page(
        &self,
        search: &Value,
        offset: usize,
        limit: usize,
        all_projects: bool,
    ) -> Result<Vec<Value>, ApiError> {
        let mut q = vec![("limit", limit.to_string()), ("offset", offset.to_string())];
        if all_projects {
            q.push(("all_projects", "true".to_string()));
        }
        let body = self
            .expect(Method::GET, "/jobs/", &q, Some(search), StatusCode::OK)
            .await?;
        match body.get("jobs") {
            Some(Value::Array(a)) => Ok(a.clone()),
            _ => Err(ApiError {
                method: "GET".into(),
                path: "/jobs/".into(),
                status: Some(200),
                description: "the answer has no \"jobs\" list".into(),
            }),
        }
    }

    /// Every job matching `search`, paging by [`JOB_PAGE`] until a page is short.
    pub async fn list_all_jobs(&self, search: &Value) -> Result<Vec<Value>, ApiError> {
        let mut all = Vec::new();
        loop {
            let page = self.list_jobs(search, all.len(), JOB_PAGE).await?;
            let n = page.len();
            all.extend(page);
            // A bound on a misbehaving API that ignores `offset`.
            if n < JOB_PAGE || all.len() >= 100_000 {
                return Ok(all);
            }
        }
    }

    /// One job, `None` when the API has none of that id (404).
    pub async fn get_job(&self, job_id: &str) -> Result<Option<Value>, ApiError> {
        let path = format!("/jobs/{}", segment(job_id));
        match self.call(Method::GET, &path, &[], None).await? {
            (StatusCode::OK, body) => Ok(Some(parse_body(&body))),
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (s, body) => Err(self.unexpected("GET", &path, s, &body)),
        }
    }

    /// Writes the scheduler's view of a job back (`job_schedule`, `session_id`,
    /// `session_tag`).
    pub async fn patch_job(&self, job_id: &str, patch: &JobPatch) -> Result<(), ApiError> {
        let path = format!("/jobs/{}", segment(job_id));
        let body = serde_json::to_value(patch).expect("a patch serializes");
        self.expect(Method::PATCH, &path, &[], Some(&body), StatusCode::OK)
            .await
            .map(drop)
    }

    /// Asks to start `job_id` of a session at `current_tag`.
    pub async fn start_session(
        &self,
        session_id: &str,
        job_id: &str,
        current_tag: i64,
    ) -> Result<SessionReply, ApiError> {
        let body = json!({"start": {"job_id": job_id, "current_tag": current_tag}});
        self.session_action(session_id, &body).await
    }

    /// Tells a session that `job_id` ended with `result` (`success`, `fail`, `aborted`).
    pub async fn end_session(
        &self,
        session_id: &str,
        job_id: &str,
        current_tag: i64,
        result: &str,
    ) -> Result<SessionReply, ApiError> {
        let body = json!({"end": {"job_id": job_id, "current_tag": current_tag, "result": result}});
        self.session_action(session_id, &body).await
    }

    async fn session_action(
        &self,
        session_id: &str,
        body: &Value,
    ) -> Result<SessionReply, ApiError> {
        let path = format!("/sessions/{}/action", segment(session_id));
        let v = self
            .expect(Method::POST, &path, &[], Some(body), StatusCode::ACCEPTED)
            .await?;
        serde_json::from_value(v).map_err(|e| ApiError {
            method: "POST".into(),
            path,
            status: Some(202),
            description: format!("unexpected answer: {e}"),
        })
    }

    /// Stores a backup's metadata; returns its `backup_id`.
    pub async fn post_backup(&self, metadata: &Value) -> Result<String, ApiError> {
        let v = self
            .expect(
                Method::POST,
                "/backups/",
                &[],
                Some(metadata),
                StatusCode::CREATED,
            )
            .await?;
        v.get("backup_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ApiError {
                method: "POST".into(),
                path: "/backups/".into(),
                status: Some(201),
                description: "the answer has no backup_id".into(),
            })
    }

    /// Calls and requires `want`; returns the JSON body (`{}` when empty).
    async fn expect(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        want: StatusCode,
    ) -> Result<Value, ApiError> {
        let m = method.to_string();
        let (status, bytes) = self.call(method, path, query, body).await?;
        if status != want {
            return Err(self.unexpected(&m, path, status, &bytes));
        }
        Ok(parse_body(&bytes))
    }

    fn unexpected(&self, method: &str, path: &str, status: StatusCode, body: &[u8]) -> ApiError {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let description = v
            .get("description")
            .or_else(|| v.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("unexpected status")
                    .to_string()
            });
        ApiError {
            method: method.to_string(),
            path: path.to_string(),
            status: Some(status.as_u16()),
            description,
        }
    }

    /// Sends one request with the current token; on 401 authenticates again (when it can)
    /// and sends it once more.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let mut retried = false;
        loop {
            let (token, base) = {
                let mut slot = self.session.lock().await;
                let s = self.current(&mut slot).await?;
                (s.token.clone(), s.base.clone())
            };
            // Query values are numbers: nothing to escape.
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let url = if q.is_empty() {
                format!("{base}{path}")
            } else {
                format!("{base}{path}?{}", q.join("&"))
            };
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("X-Auth-Token", &token.0)
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .header(
                    "User-Agent",
                    concat!("freezer-rs/", env!("CARGO_PKG_VERSION")),
                );
            if let Some(b) = body {
                req = req.body(b.to_string());
            }
            let transport = |e: reqwest::Error| ApiError {
                method: method.to_string(),
                path: path.to_string(),
                status: None,
                description: transport_error(&e),
            };
            let resp = req.send().await.map_err(transport)?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(transport)?.to_vec();
            if status == StatusCode::UNAUTHORIZED && !retried && self.settings.auth_url.is_some() {
                tracing::info!(path, "freezer-api refused the token; authenticating again");
                *self.session.lock().await = None;
                retried = true;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED {
                return Err(self.unexpected(method.as_str(), path, status, &bytes));
            }
            return Ok((status, bytes));
        }
    }

    /// The session in `slot`, authenticating when there is none or it expires soon.
    async fn current<'a>(&self, slot: &'a mut Option<Session>) -> Result<&'a Session, ApiError> {
        let fresh = slot.as_ref().is_some_and(|s| {
            s.expires_at
                .is_none_or(|e| e.as_second() - crate::time::now().as_second() > RENEW_BEFORE)
        });
        if !fresh {
            *slot = Some(self.authenticate().await?);
        }
        Ok(slot.as_ref().expect("set above"))
    }

    async fn authenticate(&self) -> Result<Session, ApiError> {
        let s = &self.settings;
        let Some(auth_url) = &s.auth_url else {
            // A token and a URL given outright.
            let base = api_base(
                s.backup_url.as_deref().expect("checked in new"),
                s.project_id.as_deref(),
            )
            .map_err(|d| keystone_error("", None, d))?;
            return Ok(Session {
                token: s.token.clone().expect("checked in new"),
                expires_at: None,
                base,
            });
        };
        let url = keystone::tokens_url(auth_url).map_err(|d| keystone_error("", None, d))?;
        let identity = match (&s.password, &s.token) {
            (Some(p), _) => json!({
                "methods": ["password"],
                "password": {"user": {
                    "name": s.username,
                    "domain": {"name": s.user_domain_name.as_deref().unwrap_or("Default")},
                    "password": p.0,
                }}
            }),
            (None, Some(t)) => json!({"methods": ["token"], "token": {"id": t.0}}),
            (None, None) => unreachable!("checked in new"),
        };
        let scope = match (&s.project_id, &s.project_name) {
            _ if s.trust_id.is_some() => json!({"OS-TRUST:trust": {"id": s.trust_id}}),
            (Some(id), _) => json!({"project": {"id": id}}),
            (None, Some(name)) => json!({"project": {
                "name": name,
                "domain": {"name": s.project_domain_name.as_deref().unwrap_or("Default")},
            }}),
            (None, None) => Value::Null,
        };
        let mut auth = json!({"auth": {"identity": identity}});
        if !scope.is_null() {
            auth["auth"]["scope"] = scope;
        }
        let resp = self
            .http
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(auth.to_string())
            .send()
            .await
            .map_err(|e| keystone_error(&url, None, transport_error(&e)))?;
        let status = resp.status();
        let token = resp
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .bytes()
            .await
            .map_err(|e| keystone_error(&url, None, transport_error(&e)))?;
        if !status.is_success() {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let msg = v["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| status.to_string());
            return Err(keystone_error(
                &url,
                Some(status.as_u16()),
                format!(
                    "authentication refused: {msg} (check OS_USERNAME, OS_PASSWORD or OS_AUTH_TOKEN, OS_USER_DOMAIN_NAME, OS_PROJECT_NAME or OS_PROJECT_ID, OS_PROJECT_DOMAIN_NAME)"
                ),
            ));
        }
        let token = token.ok_or_else(|| {
            keystone_error(
                &url,
                Some(status.as_u16()),
                "no X-Subject-Token in the answer".into(),
            )
        })?;
        let doc: keystone::TokenDoc = serde_json::from_slice(&body).map_err(|e| {
            keystone_error(
                &url,
                Some(status.as_u16()),
                format!("unexpected token document: {e}"),
            )
        })?;
        let expires_at =
            doc.token.expires_at.as_deref().and_then(|e| {
                crate::time::parse_date(e, "expires_at", &jiff::tz::TimeZone::UTC).ok()
            });
        let project = s.project_id.clone().or(doc.token.project.map(|p| p.id));
        let base_url = match &s.backup_url {
            Some(u) => u.clone(),
            None => keystone::find_endpoint(
                &doc.token.catalog,
                "backup",
                s.region_name.as_deref(),
                s.interface.as_deref(),
            )
            .map(|e| e.url.clone())
            .map_err(|_| {
                keystone_error(
                    &url,
                    Some(status.as_u16()),
                    "the catalog has no `backup` endpoint for this interface and region; give the API's URL (--api or OS_BACKUP_URL)".into(),
                )
            })?,
        };
        let base = api_base(&base_url, project.as_deref())
            .map_err(|d| keystone_error(&url, Some(status.as_u16()), d))?;
        tracing::debug!(base, "authenticated to freezer-api");
        Ok(Session {
            token: Secret(token),
            expires_at,
            base,
        })
    }
}

/// `<url>` when it holds `/v2`, else `<url>/v2/<project>`; no trailing slash.
fn api_base(url: &str, project: Option<&str>) -> Result<String, String> {
    let u = url.trim_end_matches('/');
    if u.contains("/v2") {
        return Ok(u.to_string());
    }
    let p = project.ok_or_else(|| {
        format!(
            "{u}: the API URL has no /v2/<project_id> and no project is known (give OS_PROJECT_ID)"
        )
    })?;
    Ok(format!("{u}/v2/{}", segment(p)))
}

/// A path segment: ids are `[\w-]+` upstream, anything else is escaped.
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_body(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return json!({});
    }
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

fn keystone_error(url: &str, status: Option<u16>, description: String) -> ApiError {
    ApiError {
        method: "POST".into(),
        path: url.to_string(),
        status,
        description,
    }
}

/// The transport error and its causes, on one line (never a header, so never a token); a
/// certificate that did not verify says what to give.
fn transport_error(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    match crate::tls::certificate_hint(&s, "OS_CACERT (--os-cacert)") {
        Some(hint) => format!("{s} ({hint})"),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_as_freezerclient_builds_them() {
        assert_eq!(
            api_base("http://h:9090/", Some("p1")).unwrap(),
            "http://h:9090/v2/p1"
        );
        assert_eq!(
            api_base("http://h:9090/v2/p9", Some("p1")).unwrap(),
            "http://h:9090/v2/p9"
        );
        assert!(
            api_base("http://h:9090", None)
                .unwrap_err()
                .contains("OS_PROJECT_ID")
        );
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn settings_are_checked_and_secrets_never_shown() {
        let e = Client::new(ClientSettings::default()).unwrap_err();
        assert!(e.to_string().starts_with("OS_AUTH_URL:"), "{e}");
        let e = Client::new(ClientSettings {
            token: Some(Secret("t0ken".into())),
            ..ClientSettings::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("OS_BACKUP_URL:"), "{e}");
        let e = Client::new(ClientSettings {
            auth_url: Some("http://k/v3".into()),
            password: Some(Secret("pw".into())),
            ..ClientSettings::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("OS_USERNAME:"), "{e}");
        let e = Client::new(ClientSettings {
            auth_url: Some("http://k:5000/v2.0".into()),
            username: Some("u".into()),
            password: Some(Secret("pw".into())),
            ..ClientSettings::default()
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("OS_AUTH_URL:") && e.to_string().contains("v2"),
            "{e}"
        );
        let c = Client::new(ClientSettings {
            auth_url: Some("http://k/v3".into()),
            username: Some("u".into()),
            password: Some(Secret("hunter2".into())),
            ..ClientSettings::default()
        })
        .unwrap();
        let shown = format!("{c:?} {:?}", c.settings);
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn errors_map_to_what_a_caller_does() {
        let e = |status| ApiError {
            method: "GET".into(),
            path: "/jobs/x".into(),
            status,
            description: "d".into(),
        };
        assert!(matches!(Error::from(e(Some(404))), Error::NotFound { .. }));
        assert!(matches!(
            Error::from(e(Some(409))),
            Error::AlreadyExists { .. }
        ));
        assert!(matches!(Error::from(e(Some(400))), Error::BadInput { .. }));
        assert!(matches!(Error::from(e(None)), Error::Transient { .. }));
        assert!(e(None).is_unreachable() && e(Some(503)).is_unreachable());
        assert!(!e(Some(404)).is_unreachable());
        assert_eq!(e(Some(404)).to_string(), "freezer-api GET /jobs/x: 404: d");
    }
}
