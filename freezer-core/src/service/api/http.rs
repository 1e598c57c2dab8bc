//! The HTTP face of the API (axum): routes, authentication of each request, bodies, error
//! responses, request ids. Handlers only map a request to one [`Documents`] call and its
//! result to upstream's status code and body; the semantics live in `documents`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde_json::{Value, json};

use super::documents::{Caller, Documents, new_id};
use super::error::ApiError;
use super::search::Page;
use crate::service::auth::trusts::TrustPolicy;
use crate::service::auth::{AuthError, Authenticator, Identity};
use crate::service::store::Store;

/// The largest request body accepted, by default (1 MiB: a job with many actions is a few
/// KiB).
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// How much of a body over the limit is read and dropped before the 413 is sent (more is cut
/// off with the connection).
const DRAIN_LIMIT: usize = 16 << 20;

/// What the API serves from: the store, who checks tokens, and optionally the standalone
/// identity endpoint to answer at `/identity`.
#[derive(Clone)]
pub struct ApiState {
    /// The documents.
    pub store: Arc<dyn Store>,
    /// Validates each request's `X-Auth-Token`.
    pub authenticator: Arc<dyn Authenticator>,
    /// Served at `/identity` (no token needed there), when set.
    pub identity: Option<Router>,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Trusts for the centralized scheduler (`None`: the feature is off).
    pub trusts: Option<TrustPolicy>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("store", &self.store)
            .field("authenticator", &self.authenticator)
            .field("identity", &self.identity.is_some())
            .field("body_limit", &self.body_limit)
            .field("trusts", &self.trusts)
            .finish()
    }
}

impl ApiState {
    /// An API over `store`, checking tokens with `authenticator`.
    pub fn new(store: Arc<dyn Store>, authenticator: Arc<dyn Authenticator>) -> Self {
        ApiState {
            store,
            authenticator,
            identity: None,
            body_limit: DEFAULT_BODY_LIMIT,
            trusts: None,
        }
    }

    /// Makes trusts for the jobs of central clients (upstream's centralized scheduler).
    pub fn with_trusts(mut self, trusts: TrustPolicy) -> Self {
        self.trusts = Some(trusts);
        self
    }

    /// Also answers `identity` at `/identity` (the standalone Keystone v3).
    pub fn with_identity(mut self, identity: Router) -> Self {
        self.identity = Some(identity);
        self
    }
}

#[derive(Clone)]
struct App {
    docs: Documents,
    auth: Arc<dyn Authenticator>,
    body_limit: usize,
}

/// The whole API: `GET /` (versions, 300), `GET /v2` (JSON home), `/healthcheck`, every
/// v2 route under `/v2/{project_id}` (with and without a trailing slash), and `/identity`
/// when the state has it. Every response carries `x-openstack-request-id`.
pub fn router(state: ApiState) -> Router {
    let mut docs = Documents::new(state.store);
    if let Some(t) = state.trusts {
        docs = docs.with_trusts(t);
    }
    let app = App {
        docs,
        auth: state.authenticator,
        body_limit: state.body_limit,
    };
    let v2 = [
        ("/", get(versions)),
        ("/v2", get(home)),
        ("/v2/{project_id}/jobs", get(list_jobs).post(create_job)),
        (
            "/v2/{project_id}/jobs/{job_id}",
            get(get_job)
                .patch(patch_job)
                .post(replace_job)
                .delete(delete_job),
        ),
        (
            "/v2/{project_id}/jobs/{job_id}/event",
            axum::routing::post(job_event),
        ),
        (
            "/v2/{project_id}/actions",
            get(list_actions).post(create_action),
        ),
        (
            "/v2/{project_id}/actions/{action_id}",
            get(get_action)
                .patch(patch_action)
                .post(replace_action)
                .delete(delete_action),
        ),
        (
            "/v2/{project_id}/sessions",
            get(list_sessions).post(create_session),
        ),
        (
            "/v2/{project_id}/sessions/{session_id}",
            get(get_session)
                .patch(patch_session)
                .post(replace_session)
                .delete(delete_session),
        ),
        (
            "/v2/{project_id}/sessions/{session_id}/action",
            axum::routing::post(session_action),
        ),
        (
            "/v2/{project_id}/sessions/{session_id}/jobs/{job_id}",
            axum::routing::put(add_session_job).delete(remove_session_job),
        ),
        (
            "/v2/{project_id}/clients",
            get(list_clients).post(register_client),
        ),
        (
            "/v2/{project_id}/clients/{client_id}",
            get(get_client).delete(delete_client),
        ),
        (
            "/v2/{project_id}/backups",
            get(list_backups).post(create_backup),
        ),
        (
            "/v2/{project_id}/backups/{backup_id}",
            get(get_backup).patch(patch_backup).delete(delete_backup),
        ),
    ]
    .into_iter()
    .fold(Router::new(), |r, (path, m): (&str, MethodRouter<App>)| {
        let r = r.route(path, m.clone());
        if path == "/" {
            r
        } else {
            r.route(&format!("{path}/"), m)
        }
    })
    .method_not_allowed_fallback(method_not_allowed)
    .layer(middleware::from_fn(require_json))
    .with_state(app);
    let mut r = Router::new()
        .route("/healthcheck", get(healthcheck))
        .merge(v2);
    if let Some(identity) = state.identity {
        r = r.nest("/identity", identity);
    }
    r.fallback(not_found).layer(middleware::from_fn(request_id))
}

/// Serves `app` on `listener` until `shutdown` completes, then finishes the requests under
/// way.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The detail of an internal error, handed from the response to the request log.
#[derive(Clone, Debug)]
struct InternalDetail(String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"title": self.kind.title(), "description": self.description});
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(d) = self.detail {
            resp.extensions_mut().insert(InternalDetail(d));
        }
        resp
    }
}

/// Names the request (`x-openstack-request-id: req-<uuid>`, or the caller's if it gave a
/// well-formed one), logs it, and logs an internal error's detail with it.
async fn request_id(req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get("x-openstack-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            v.starts_with("req-")
                && v.len() <= 64
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .map(str::to_string);
    let id = given.unwrap_or_else(|| {
        let h = new_id();
        format!(
            "req-{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    });
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(InternalDetail(detail)) = resp.extensions_mut().remove::<InternalDetail>() {
        tracing::error!(request_id = %id, %method, %path, status, %detail, "request failed");
    } else {
        tracing::info!(request_id = %id, %method, %path, status, elapsed_ms, "request");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-openstack-request-id", v);
    }
    resp
}

/// Upstream's `RequireJSON`: 406 unless `Accept` allows JSON (no `Accept` does).
async fn require_json(req: Request, next: Next) -> Response {
    if let Some(accept) = req.headers().get(header::ACCEPT)
        && !accepts_json(accept.to_str().unwrap_or(""))
    {
        return ApiError::not_acceptable().into_response();
    }
    next.run(req).await
}

fn accepts_json(accept: &str) -> bool {
    if accept.trim().is_empty() {
        return true;
    }
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q=").map(str::to_string))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        q > 0.0
            && matches!(
                media.as_str(),
                "application/json" | "application/json-home" | "application/*" | "*/*"
            )
    })
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("resource {}", req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::bad_method(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
}

async fn healthcheck() -> &'static str {
    "OK"
}

/// The identity of a request's `X-Auth-Token`, and the token (never logged).
struct Authed(Identity, crate::job::Secret);

impl FromRequestParts<App> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(ApiError::unauthorized(AuthError::Missing.to_string()));
        };
        match app.auth.validate(token).await {
            Ok(identity) => Ok(Authed(identity, crate::job::Secret(token.to_string()))),
            Err(e @ AuthError::Unavailable(_)) => Err(ApiError::unavailable(
                "the identity service could not validate the token",
            )
            .with_detail(e.to_string())),
            Err(e) => Err(ApiError::unauthorized(e.to_string())),
        }
    }
}

/// An authenticated request: its caller, path parameters and query.
struct Ctx {
    caller: Caller,
    path: HashMap<String, String>,
    query: HashMap<String, String>,
}

impl FromRequestParts<App> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let Authed(identity, token) = Authed::from_request_parts(parts, app).await?;
        let Path(path) = Path::<HashMap<String, String>>::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let query = parts
            .uri
            .query()
            .map(|q| {
                axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
                    .map(|axum::extract::Query(v)| v.into_iter().collect())
                    .map_err(|e| ApiError::bad_request(format!("query {q:?}: {}", e.body_text())))
            })
            .transpose()?
            .unwrap_or_default();
        let project = path.get("project_id").cloned().unwrap_or_default();
        Ok(Ctx {
            caller: Caller::new(identity, project).with_token(token.0),
            path,
            query,
        })
    }
}

impl Ctx {
    fn id(&self, name: &str) -> &str {
        self.path.get(name).map(String::as_str).unwrap_or_default()
    }

    fn page(&self) -> Result<Page, ApiError> {
        Page::from_query(
            self.query.get("limit").map(String::as_str),
            self.query.get("offset").map(String::as_str),
        )
    }

    fn flag(&self, name: &str) -> bool {
        self.query
            .get(name)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"))
    }
}

/// A JSON request body (also on GET: the search). Empty is `{}`; malformed is a 400 naming
/// the line and column; larger than the limit is 413.
struct Body(Value);

impl FromRequest<App> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, ApiError> {
        let limit = app.body_limit;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|&n| n > limit as u64) {
            // Read and drop what the client is still sending (up to a bound), so that it reads
            // the 413 instead of a connection reset in the middle of its upload.
            if n <= DRAIN_LIMIT as u64 {
                let _ = axum::body::to_bytes(req.into_body(), DRAIN_LIMIT).await;
            }
            return Err(ApiError::too_large(limit));
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| ApiError::too_large(limit))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(json!({})));
        }
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON in the request body: {e}")))
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

type Reply = Result<Response, ApiError>;

async fn versions(headers: axum::http::HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    reply(
        StatusCode::MULTIPLE_CHOICES,
        json!({"versions": [{
            "id": "v2",
            "status": "CURRENT",
            "updated": "2018-02-21T13:30:00",
            "links": [{"href": format!("{proto}://{host}/v2/"), "rel": "self"}],
        }]}),
    )
}

async fn home(Authed(..): Authed) -> Response {
    let formats = json!({"application/json": {}});
    let body = json!({"resources": {
        "rel/backups": {
            "href-template": "/v2/{project_id}/backups/{backup_id}",
            "href-vars": {"project_id": "param/project_id", "backup_id": "param/backup_id"},
            "hints": {"allow": ["GET"], "formats": formats},
        },
        "rel/jobs": {
            "href-template": "/v2/{project_id}/jobs{?all_projects,offset,limit}",
            "href-vars": {"project_id": "param/project_id", "all_projects": "param/all_projects",
                "offset": "param/offset", "limit": "param/limit"},
            "hints": {"allow": ["GET", "POST"], "formats": formats},
        },
        "rel/job": {
            "href-template": "/v2/{project_id}/jobs/{job_id}",
            "href-vars": {"project_id": "param/project_id", "job_id": "param/job_id"},
            "hints": {"allow": ["GET", "PATCH", "POST", "DELETE"], "formats": formats},
        },
    }});
    let mut resp = reply(StatusCode::OK, body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json-home"),
    );
    resp
}

// Jobs.

async fn list_jobs(State(app): State<App>, ctx: Ctx, Body(search): Body) -> Reply {
    let jobs = app
        .docs
        .list_jobs(&ctx.caller, ctx.page()?, ctx.flag("all_projects"), &search)
        .await?;
    Ok(reply(StatusCode::OK, json!({ "jobs": jobs })))
}

async fn create_job(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let id = app.docs.create_job(&ctx.caller, b).await?;
    Ok(reply(StatusCode::CREATED, json!({ "job_id": id })))
}

async fn get_job(State(app): State<App>, ctx: Ctx) -> Reply {
    let job = app.docs.get_job(&ctx.caller, ctx.id("job_id")).await?;
    Ok(reply(StatusCode::OK, job))
}

async fn patch_job(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let (id, v) = app.docs.patch_job(&ctx.caller, ctx.id("job_id"), b).await?;
    Ok(reply(StatusCode::OK, json!({"job_id": id, "version": v})))
}

async fn replace_job(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let (id, v) = app
        .docs
        .replace_job(&ctx.caller, ctx.id("job_id"), b)
        .await?;
    Ok(reply(
        StatusCode::CREATED,
        json!({"job_id": id, "version": v}),
    ))
}

async fn delete_job(State(app): State<App>, ctx: Ctx) -> Reply {
    app.docs.delete_job(&ctx.caller, ctx.id("job_id")).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn job_event(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let result = app.docs.job_event(&ctx.caller, ctx.id("job_id"), b).await?;
    Ok(reply(StatusCode::ACCEPTED, json!({ "result": result })))
}

// Actions.

async fn list_actions(State(app): State<App>, ctx: Ctx, Body(search): Body) -> Reply {
    let actions = app
        .docs
        .list_actions(&ctx.caller, ctx.page()?, &search)
        .await?;
    Ok(reply(StatusCode::OK, json!({ "actions": actions })))
}

async fn create_action(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let id = app.docs.create_action(&ctx.caller, b).await?;
    Ok(reply(StatusCode::CREATED, json!({ "action_id": id })))
}

async fn get_action(State(app): State<App>, ctx: Ctx) -> Reply {
    let a = app
        .docs
        .get_action(&ctx.caller, ctx.id("action_id"))
        .await?;
    Ok(reply(StatusCode::OK, a))
}

async fn patch_action(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let (id, v) = app
        .docs
        .patch_action(&ctx.caller, ctx.id("action_id"), b)
        .await?;
    Ok(reply(
        StatusCode::OK,
        json!({"action_id": id, "version": v}),
    ))
}

async fn replace_action(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let (id, v) = app
        .docs
        .replace_action(&ctx.caller, ctx.id("action_id"), b)
        .await?;
    Ok(reply(
        StatusCode::CREATED,
        json!({"action_id": id, "version": v}),
    ))
}

async fn delete_action(State(app): State<App>, ctx: Ctx) -> Reply {
    app.docs
        .delete_action(&ctx.caller, ctx.id("action_id"))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// Sessions.

async fn list_sessions(State(app): State<App>, ctx: Ctx, Body(search): Body) -> Reply {
    let sessions = app
        .docs
        .list_sessions(&ctx.caller, ctx.page()?, &search)
        .await?;
    Ok(reply(StatusCode::OK, json!({ "sessions": sessions })))
}

async fn create_session(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let id = app.docs.create_session(&ctx.caller, b).await?;
    Ok(reply(StatusCode::CREATED, json!({ "session_id": id })))
}

async fn get_session(State(app): State<App>, ctx: Ctx) -> Reply {
    let s = app
        .docs
        .get_session(&ctx.caller, ctx.id("session_id"))
        .await?;
    Ok(reply(StatusCode::OK, s))
}

async fn patch_session(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let (id, v) = app
        .docs
        .patch_session(&ctx.caller, ctx.id("session_id"), b)
        .await?;
    Ok(reply(
        StatusCode::OK,
        json!({"session_id": id, "version": v}),
    ))
}

async fn replace_session(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let (id, v) = app
        .docs
        .replace_session(&ctx.caller, ctx.id("session_id"), b)
        .await?;
    Ok(reply(
        StatusCode::CREATED,
        json!({"session_id": id, "version": v}),
    ))
}

async fn delete_session(State(app): State<App>, ctx: Ctx) -> Reply {
    app.docs
        .delete_session(&ctx.caller, ctx.id("session_id"))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn session_action(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let r = app
        .docs
        .session_action(&ctx.caller, ctx.id("session_id"), b)
        .await?;
    Ok(reply(
        StatusCode::ACCEPTED,
        json!({"result": r.result, "session_tag": r.session_tag}),
    ))
}

async fn add_session_job(State(app): State<App>, ctx: Ctx) -> Reply {
    app.docs
        .add_session_job(&ctx.caller, ctx.id("session_id"), ctx.id("job_id"))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_session_job(State(app): State<App>, ctx: Ctx) -> Reply {
    app.docs
        .remove_session_job(&ctx.caller, ctx.id("session_id"), ctx.id("job_id"))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// Clients.

async fn list_clients(State(app): State<App>, ctx: Ctx, Body(search): Body) -> Reply {
    let clients = app
        .docs
        .list_clients(&ctx.caller, ctx.page()?, &search)
        .await?;
    Ok(reply(StatusCode::OK, json!({ "clients": clients })))
}

async fn register_client(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let id = app.docs.register_client(&ctx.caller, b).await?;
    Ok(reply(StatusCode::CREATED, json!({ "client_id": id })))
}

async fn get_client(State(app): State<App>, ctx: Ctx) -> Reply {
    let c = app
        .docs
        .get_client(&ctx.caller, ctx.id("client_id"))
        .await?;
    Ok(reply(StatusCode::OK, c))
}

async fn delete_client(State(app): State<App>, ctx: Ctx) -> Reply {
    app.docs
        .delete_client(&ctx.caller, ctx.id("client_id"))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// Backups.

async fn list_backups(State(app): State<App>, ctx: Ctx, Body(search): Body) -> Reply {
    let backups = app
        .docs
        .list_backups(&ctx.caller, ctx.page()?, &search)
        .await?;
    Ok(reply(StatusCode::OK, json!({ "backups": backups })))
}

async fn create_backup(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let id = app.docs.create_backup(&ctx.caller, b).await?;
    Ok(reply(StatusCode::CREATED, json!({ "backup_id": id })))
}

async fn get_backup(State(app): State<App>, ctx: Ctx) -> Reply {
    let b = app
        .docs
        .get_backup(&ctx.caller, ctx.id("backup_id"))
        .await?;
    Ok(reply(StatusCode::OK, b))
}

async fn patch_backup(State(app): State<App>, ctx: Ctx, Body(b): Body) -> Reply {
    let doc = app
        .docs
        .patch_backup(&ctx.caller, ctx.id("backup_id"), b)
        .await?;
    Ok(reply(StatusCode::OK, doc))
}

async fn delete_backup(State(app): State<App>, ctx: Ctx) -> Reply {
    app.docs
        .delete_backup(&ctx.caller, ctx.id("backup_id"))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_headers() {
        use super::accepts_json;
        for ok in [
            "",
            "application/json",
            "*/*",
            "text/html, application/json;q=0.5",
            "application/*",
            "application/json-home",
        ] {
            assert!(accepts_json(ok), "{ok}");
        }
        for bad in [
            "text/html",
            "application/xml",
            "application/json;q=0",
            "text/*",
        ] {
            assert!(!accepts_json(bad), "{bad}");
        }
    }
}
