//! The standalone identity over HTTP: Keystone v3's version discovery and `/v3/auth/tokens`
//! (issue with the password and token methods, validate, revoke), with Keystone's bodies,
//! headers and status codes. Handlers only map HTTP to [`StandaloneIdentity`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Issued, ProjectScope, StandaloneIdentity};
use crate::service::auth::token::Claims;
use crate::service::auth::users::{User, derived_id};
use crate::service::auth::{AuthError, policy};

type Shared = Arc<StandaloneIdentity>;

/// The routes of the identity service, relative to where the API mounts them
/// (`/identity`): `/` (multiple choice), `/v3` (version), `/v3/auth/tokens`.
pub fn router(identity: Arc<StandaloneIdentity>) -> Router {
    Router::new()
        .route("/", get(versions))
        .route("/v3", get(version))
        .route("/v3/", get(version))
        .route("/v3/auth/tokens", get(validate).post(issue).delete(revoke))
        .with_state(identity)
}

/// Keystone's error body.
fn error(status: StatusCode, message: &str, id: &StandaloneIdentity) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = json!({"error": {"code": status.as_u16(), "message": message, "title": title}});
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        let value = format!("Keystone uri=\"{}/identity\"", id.config().public_url);
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    response
}

fn unauthorized(id: &StandaloneIdentity) -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "The request you have made requires authentication.",
        id,
    )
}

fn bad_request(message: String, id: &StandaloneIdentity) -> Response {
    error(StatusCode::BAD_REQUEST, &message, id)
}

fn version_doc(id: &StandaloneIdentity) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{}/identity/v3/", id.config().public_url)}],
        "media-types": [{
            "base": "application/json",
            "type": "application/vnd.openstack.identity-v3+json"
        }]
    })
}

async fn versions(State(id): State<Shared>) -> Response {
    let body = json!({"versions": {"values": [version_doc(&id)]}});
    (StatusCode::MULTIPLE_CHOICES, axum::Json(body)).into_response()
}

async fn version(State(id): State<Shared>) -> Response {
    axum::Json(json!({"version": version_doc(&id)})).into_response()
}

/// Keystone's time format: `2026-01-01T00:00:00.000000Z`.
fn keystone_time(seconds: i64) -> String {
    let t = Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH);
    format!("{}.000000Z", t.strftime("%Y-%m-%dT%H:%M:%S"))
}

fn catalog(id: &StandaloneIdentity) -> Value {
    let config = id.config();
    let entry = |kind: &str, name: &str, url: &str| {
        let endpoints: Vec<Value> = ["public", "internal", "admin"]
            .iter()
            .map(|interface| {
                json!({
                    "id": derived_id("endpoint", &format!("{kind}/{interface}")),
                    "interface": interface,
                    "region": config.region,
                    "region_id": config.region,
                    "url": url,
                })
            })
            .collect();
        json!({"id": derived_id("service", kind), "type": kind, "name": name, "endpoints": endpoints})
    };
    json!([
        entry("backup", "freezer", &config.public_url),
        entry(
            "identity",
            "keystone",
            &format!("{}/identity", config.public_url)
        ),
    ])
}

fn token_body(id: &StandaloneIdentity, claims: &Claims, user: &User, with_catalog: bool) -> Value {
    let domain = json!({"id": "default", "name": "Default"});
    let roles: Vec<Value> = claims
        .r
        .iter()
        .map(|r| json!({"id": derived_id("role", r), "name": r}))
        .collect();
    let mut token = json!({
        "methods": claims.m,
        "user": {"id": user.id, "name": user.name, "domain": domain, "password_expires_at": null},
        "project": {"id": claims.p, "name": user.project_name, "domain": domain},
        "is_domain": false,
        "roles": roles,
        "audit_ids": [claims.a],
        "expires_at": keystone_time(claims.e),
        "issued_at": keystone_time(claims.i),
    });
    if with_catalog {
        token["catalog"] = catalog(id);
    }
    json!({ "token": token })
}

fn with_subject(mut response: Response, token: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(token) {
        response.headers_mut().insert("x-subject-token", v);
    }
    response
}

#[derive(Deserialize)]
struct AuthRequest {
    auth: Auth,
}

#[derive(Deserialize)]
struct Auth {
    identity: IdentityRequest,
    #[serde(default)]
    scope: Option<Value>,
}

#[derive(Deserialize)]
struct IdentityRequest {
    methods: Vec<String>,
    #[serde(default)]
    password: Option<PasswordMethod>,
    #[serde(default)]
    token: Option<TokenMethod>,
}

#[derive(Deserialize)]
struct PasswordMethod {
    user: PasswordUser,
}

#[derive(Deserialize)]
struct PasswordUser {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<Domain>,
    password: String,
}

#[derive(Deserialize)]
struct Domain {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl Domain {
    /// Whether it names the `Default` domain, the only one here.
    fn is_default(&self) -> bool {
        match (&self.id, &self.name) {
            (Some(id), _) => id == "default",
            (None, Some(name)) => name.eq_ignore_ascii_case("default"),
            (None, None) => false,
        }
    }
}

#[derive(Deserialize)]
struct TokenMethod {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Scope {
    Project(ProjectRef),
    Domain(serde::de::IgnoredAny),
    System(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct ProjectRef {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<Domain>,
}

/// What a scope asks for: a project, or a refusal (401: no roles on a domain or the system
/// here; 400: malformed).
fn parse_scope(scope: Option<Value>) -> Result<ProjectScope, Result<String, ()>> {
    let Some(value) = scope else {
        return Ok(ProjectScope::Default);
    };
    if value == json!("unscoped") {
        return Ok(ProjectScope::Default);
    }
    let scope: Scope =
        serde_path_to_error::deserialize(value).map_err(|e| Ok(format!("auth.scope: {e}")))?;
    match scope {
        Scope::Project(p) => match (p.id, p.name, p.domain) {
            (Some(id), _, _) => Ok(ProjectScope::Id(id)),
            (None, Some(name), Some(domain)) if domain.is_default() => Ok(ProjectScope::Name(name)),
            (None, Some(_), Some(_)) => Err(Err(())),
            (None, Some(_), None) => Err(Ok(
                "Expecting to find domain in project. The server could not comply with the \
                 request since it is either malformed or otherwise incorrect."
                    .into(),
            )),
            (None, None, _) => Err(Ok("Expecting to find id or name in project.".into())),
        },
        Scope::Domain(_) | Scope::System(_) => Err(Err(())),
    }
}

async fn issue(State(id): State<Shared>, Query(q): Query<Flags>, body: Bytes) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("The request body is not valid JSON: {e}"), &id),
    };
    let request: AuthRequest = match serde_path_to_error::deserialize(value) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(
                format!("Invalid input for field '{}': {}", e.path(), e.inner()),
                &id,
            );
        }
    };
    let auth = request.auth;
    let scope = match parse_scope(auth.scope) {
        Ok(s) => s,
        Err(Ok(message)) => return bad_request(message, &id),
        Err(Err(())) => return unauthorized(&id),
    };
    let methods = auth.identity.methods;
    let issued: Issued = match methods.as_slice() {
        [m] if m == "password" => {
            let Some(password) = auth.identity.password else {
                return bad_request("Expecting to find password in identity.".into(), &id);
            };
            let user = password.user;
            let found = match (&user.id, &user.name) {
                (Some(user_id), _) => id.check_password(user_id, true, user.password).await,
                (None, Some(name)) => {
                    let Some(domain) = user.domain else {
                        return bad_request("Expecting to find domain in user.".into(), &id);
                    };
                    // Another domain has no users: the same answer as a wrong password,
                    // after the same work.
                    let name = if domain.is_default() {
                        name.as_str()
                    } else {
                        ""
                    };
                    id.check_password(name, false, user.password).await
                }
                (None, None) => {
                    return bad_request("Expecting to find id or name in user.".into(), &id);
                }
            };
            let Some(user) = found else {
                return unauthorized(&id);
            };
            if !StandaloneIdentity::scope_allows(&user, &scope) {
                return unauthorized(&id);
            }
            id.issue(&user, vec!["password".into()], None, None)
        }
        [m] if m == "token" => {
            let Some(token) = auth.identity.token else {
                return bad_request("Expecting to find token in identity.".into(), &id);
            };
            let Ok((claims, user)) = id.check(&token.id, false) else {
                return unauthorized(&id);
            };
            if !StandaloneIdentity::scope_allows(&user, &scope) {
                return unauthorized(&id);
            }
            let mut methods = claims.m.clone();
            if !methods.iter().any(|m| m == "token") {
                methods.insert(0, "token".into());
            }
            id.issue(&user, methods, Some(claims.e), Some(claims.a))
        }
        _ => return unauthorized(&id),
    };
    let Some(user) = id.users().by_id(&issued.claims.u) else {
        return unauthorized(&id);
    };
    let body = token_body(&id, &issued.claims, user, !q.nocatalog());
    with_subject(
        (StatusCode::CREATED, axum::Json(body)).into_response(),
        &issued.token,
    )
}

/// The query flags of `/v3/auth/tokens` (any value but `0`/`false` is true, as Keystone).
#[derive(Deserialize, Default)]
struct Flags {
    #[serde(default)]
    nocatalog: Option<String>,
    #[serde(default)]
    allow_expired: Option<String>,
}

fn flag(v: &Option<String>) -> bool {
    v.as_deref()
        .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no"))
}

impl Flags {
    fn nocatalog(&self) -> bool {
        flag(&self.nocatalog)
    }
}

/// The caller (`X-Auth-Token`) and the subject (`X-Subject-Token`) of a validate or revoke,
/// after Keystone's policy: the caller is an admin, a service, or the subject's own user.
#[allow(clippy::result_large_err)] // the refusal is the response, built once
fn caller_and_subject<'h>(
    id: &StandaloneIdentity,
    headers: &'h HeaderMap,
) -> Result<&'h str, Response> {
    let caller = headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized(id))?;
    let (caller_claims, caller_user) = id.check(caller, false).map_err(|_| unauthorized(id))?;
    let subject = headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            bad_request(
                "Expecting to find X-Subject-Token in the request headers.".into(),
                id,
            )
        })?;
    let caller_identity = StandaloneIdentity::identity_of(&caller_claims, &caller_user);
    let own = id
        .check(subject, true)
        .is_ok_and(|(c, _)| c.u == caller_user.id);
    if !own && !policy::sees_all_projects(&caller_identity) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "You are not authorized to perform the requested action: identity:validate_token.",
            id,
        ));
    }
    Ok(subject)
}

fn not_found(id: &StandaloneIdentity) -> Response {
    error(StatusCode::NOT_FOUND, "Could not find token.", id)
}

async fn validate(
    State(id): State<Shared>,
    Query(q): Query<Flags>,
    headers: HeaderMap,
) -> Response {
    let subject = match caller_and_subject(&id, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match id.check(subject, flag(&q.allow_expired)) {
        Ok((claims, user)) => with_subject(
            axum::Json(token_body(&id, &claims, &user, !q.nocatalog())).into_response(),
            subject,
        ),
        Err(AuthError::Unavailable(m)) => error(StatusCode::SERVICE_UNAVAILABLE, &m, &id),
        Err(_) => not_found(&id),
    }
}

async fn revoke(State(id): State<Shared>, headers: HeaderMap) -> Response {
    let subject = match caller_and_subject(&id, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match id.revoke(subject).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(AuthError::Unavailable(m)) => error(StatusCode::SERVICE_UNAVAILABLE, &m, &id),
        Err(_) => not_found(&id),
    }
}
