//! The standalone identity over HTTP: Keystone v3's version discovery and `/v3/auth/tokens`
//! (issue with the password and token methods, validate, revoke), with Keystone's bodies,
//! headers and status codes. Handlers only map HTTP to [`StandaloneIdentity`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::trusts::trust_json;
use super::{Issued, ProjectScope, StandaloneIdentity};
use crate::service::auth::token::Claims;
use crate::service::auth::trusts::{Trust, TrustError};
use crate::service::auth::users::{User, derived_id};
use crate::service::auth::{AuthError, policy};
use crate::service::store::Scope as StoreScope;

type Shared = Arc<StandaloneIdentity>;

/// The routes of the identity service, relative to where the API mounts them
/// (`/identity`): `/` (multiple choice), `/v3` (version), `/v3/auth/tokens`, and the
/// `OS-TRUST` subset: `/v3/OS-TRUST/trusts` (create, list) and `/v3/OS-TRUST/trusts/{id}`
/// (get, delete).
pub fn router(identity: Arc<StandaloneIdentity>) -> Router {
    Router::new()
        .route("/", get(versions))
        .route("/v3", get(version))
        .route("/v3/", get(version))
        .route("/v3/auth/tokens", get(validate).post(issue).delete(revoke))
        .route("/v3/OS-TRUST/trusts", get(list_trusts).post(create_trust))
        .route(
            "/v3/OS-TRUST/trusts/{trust_id}",
            get(get_trust).delete(delete_trust),
        )
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

fn token_body(
    id: &StandaloneIdentity,
    claims: &Claims,
    user: &User,
    trust: Option<&Trust>,
    with_catalog: bool,
) -> Value {
    let domain = json!({"id": "default", "name": "Default"});
    let roles: Vec<Value> = claims
        .r
        .iter()
        .map(|r| json!({"id": derived_id("role", r), "name": r}))
        .collect();
    let users = id.users();
    let project_name = if claims.p == user.project_id {
        user.project_name.as_str()
    } else {
        users.project_name(&claims.p).unwrap_or(claims.p.as_str())
    };
    let mut token = json!({
        "methods": claims.m,
        "user": {"id": user.id, "name": user.name, "domain": domain, "password_expires_at": null},
        "project": {"id": claims.p, "name": project_name, "domain": domain},
        "is_domain": false,
        "roles": roles,
        "audit_ids": [claims.a],
        "expires_at": keystone_time(claims.e),
        "issued_at": keystone_time(claims.i),
    });
    if let Some(t) = trust {
        token["OS-TRUST:trust"] = t.token_section();
    }
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
    #[serde(rename = "OS-TRUST:trust")]
    Trust(TrustRef),
}

#[derive(Deserialize)]
struct TrustRef {
    id: String,
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
        Scope::Trust(t) => Ok(ProjectScope::Trust(t.id)),
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
            if let ProjectScope::Trust(trust_id) = &scope {
                return trust_scoped(&id, &user, trust_id, vec!["password".into()], None, &q).await;
            }
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
            if claims.t.is_some() {
                // Keystone: a trust-scoped token is not rescoped.
                return error(
                    StatusCode::FORBIDDEN,
                    "You are not authorized to perform the requested action: a trust-scoped \
                     token cannot be rescoped.",
                    &id,
                );
            }
            if let ProjectScope::Trust(trust_id) = &scope {
                let mut methods = claims.m.clone();
                if !methods.iter().any(|m| m == "token") {
                    methods.insert(0, "token".into());
                }
                return trust_scoped(&id, &user, trust_id, methods, Some(claims.e), &q).await;
            }
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
    let users = id.users();
    let Some(user) = users.by_id(&issued.claims.u) else {
        return unauthorized(&id);
    };
    let body = token_body(&id, &issued.claims, user, None, !q.nocatalog());
    with_subject(
        (StatusCode::CREATED, axum::Json(body)).into_response(),
        &issued.token,
    )
}

fn trust_error(e: TrustError, id: &StandaloneIdentity) -> Response {
    match e {
        TrustError::Unavailable(m) => error(StatusCode::SERVICE_UNAVAILABLE, &m, id),
        TrustError::Refused(m) => error(StatusCode::FORBIDDEN, &m, id),
        TrustError::MissingCredentials(m) => error(StatusCode::FORBIDDEN, &m, id),
    }
}

fn trust_not_found(trust_id: &str, id: &StandaloneIdentity) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("Could not find trust: {trust_id}."),
        id,
    )
}

/// A token for `user` (just authenticated) scoped to trust `trust_id`: 404 when there is no
/// such trust, 403 when `user` is not its trustee, 401 when it no longer holds.
async fn trust_scoped(
    id: &Shared,
    user: &User,
    trust_id: &str,
    methods: Vec<String>,
    not_after: Option<i64>,
    q: &Flags,
) -> Response {
    let trust = match id.find_trust(trust_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return trust_not_found(trust_id, id),
        Err(e) => return trust_error(e, id),
    };
    if trust.trustee_user_id != user.id {
        return error(
            StatusCode::FORBIDDEN,
            &format!("User {} is not a trustee of trust {trust_id}.", user.id),
            id,
        );
    }
    if !id.trust_holds(&trust) {
        return unauthorized(id);
    }
    let issued = id.issue_for_trust(user, &trust, methods, not_after);
    let body = token_body(id, &issued.claims, user, Some(&trust), !q.nocatalog());
    with_subject(
        (StatusCode::CREATED, axum::Json(body)).into_response(),
        &issued.token,
    )
}

/// The caller of an `OS-TRUST` request (`X-Auth-Token`): a valid token that is not itself
/// trust-scoped.
#[allow(clippy::result_large_err)] // the refusal is the response, built once
async fn trust_caller(
    id: &StandaloneIdentity,
    headers: &HeaderMap,
) -> Result<crate::service::auth::Identity, Response> {
    let token = headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized(id))?;
    let (claims, user) = id.check(token, false).map_err(|_| unauthorized(id))?;
    if claims.t.is_some() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "You are not authorized to perform the requested action: a trust-scoped token \
             cannot manage trusts.",
            id,
        ));
    }
    Ok(StandaloneIdentity::identity_of(&claims, &user))
}

fn forbidden_trust(action: &str, id: &StandaloneIdentity) -> Response {
    error(
        StatusCode::FORBIDDEN,
        &format!("You are not authorized to perform the requested action: identity:{action}."),
        id,
    )
}

#[derive(Deserialize)]
struct TrustRequest {
    trust: NewTrust,
}

#[derive(Deserialize)]
struct NewTrust {
    trustor_user_id: String,
    trustee_user_id: String,
    project_id: String,
    #[serde(default)]
    impersonation: bool,
    #[serde(default)]
    roles: Vec<RoleRef>,
}

#[derive(Deserialize)]
struct RoleRef {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

/// `POST /v3/OS-TRUST/trusts`: the trustor (the caller) delegates roles it holds in its
/// project to a trustee.
async fn create_trust(State(id): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let caller = match trust_caller(&id, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let request: TrustRequest = match serde_json::from_slice::<Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|v| serde_path_to_error::deserialize(v).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => return bad_request(format!("Invalid input for field: {e}"), &id),
    };
    let t = request.trust;
    if t.trustor_user_id != caller.user_id {
        return forbidden_trust("create_trust", &id);
    }
    if t.impersonation {
        return bad_request(
            "impersonation is not supported by this identity service (upstream freezer-api              creates trusts without it)"
                .into(),
            &id,
        );
    }
    if id.users().by_id(&t.trustee_user_id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            &format!("Could not find user: {}.", t.trustee_user_id),
            &id,
        );
    }
    let mut roles = Vec::new();
    for r in &t.roles {
        let name = match (&r.name, &r.id) {
            (Some(n), _) => n.to_ascii_lowercase(),
            (None, Some(rid)) => {
                match ["admin", "member", "reader", "service"]
                    .iter()
                    .find(|n| derived_id("role", n) == *rid)
                {
                    Some(n) => n.to_string(),
                    None => {
                        return error(
                            StatusCode::NOT_FOUND,
                            &format!("Could not find role: {rid}."),
                            &id,
                        );
                    }
                }
            }
            (None, None) => {
                return bad_request("Expecting to find id or name in role.".into(), &id);
            }
        };
        roles.push(name);
    }
    if roles.is_empty() {
        return bad_request("At least one role should be specified.".into(), &id);
    }
    let users = id.users();
    let Some(trustor) = users.by_id(&caller.user_id) else {
        return unauthorized(&id);
    };
    let missing = StandaloneIdentity::roles_missing(trustor, &t.project_id, &roles);
    if let Some(r) = missing.first() {
        return error(
            StatusCode::NOT_FOUND,
            &format!("Could not find role: {r}."),
            &id,
        );
    }
    let trust = Trust {
        id: String::new(),
        trustor_user_id: t.trustor_user_id,
        trustee_user_id: t.trustee_user_id,
        project_id: t.project_id,
        impersonation: false,
        roles,
    };
    match id.store_trust(trust).await {
        Ok(trust) => (
            StatusCode::CREATED,
            axum::Json(json!({"trust": trust_json(&trust, &id.config().public_url)})),
        )
            .into_response(),
        Err(e) => trust_error(e, &id),
    }
}

#[derive(Deserialize, Default)]
struct TrustFilter {
    #[serde(default)]
    trustor_user_id: Option<String>,
    #[serde(default)]
    trustee_user_id: Option<String>,
}

/// `GET /v3/OS-TRUST/trusts`: an admin lists any; another user only their own (as trustor
/// or trustee, named in the filter, as Keystone's policy asks).
async fn list_trusts(
    State(id): State<Shared>,
    Query(f): Query<TrustFilter>,
    headers: HeaderMap,
) -> Response {
    let caller = match trust_caller(&id, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let own = f.trustor_user_id.as_deref() == Some(caller.user_id.as_str())
        || f.trustee_user_id.as_deref() == Some(caller.user_id.as_str());
    if !own && !caller.is_admin() {
        return forbidden_trust("list_trusts", &id);
    }
    let found = id
        .list_trusts(&StoreScope::All, |t| {
            f.trustor_user_id
                .as_deref()
                .is_none_or(|u| u == t.trustor_user_id)
                && f.trustee_user_id
                    .as_deref()
                    .is_none_or(|u| u == t.trustee_user_id)
        })
        .await;
    match found {
        Ok(trusts) => {
            let base = &id.config().public_url;
            let list: Vec<Value> = trusts.iter().map(|t| trust_json(t, base)).collect();
            axum::Json(json!({
                "trusts": list,
                "links": {"self": format!("{base}/identity/v3/OS-TRUST/trusts"), "next": null, "previous": null},
            }))
            .into_response()
        }
        Err(e) => trust_error(e, &id),
    }
}

/// The trust of a `/v3/OS-TRUST/trusts/{id}` request, if the caller is its trustor,
/// trustee or an admin.
async fn visible_trust(
    id: &Shared,
    headers: &HeaderMap,
    trust_id: &str,
    action: &str,
) -> Result<(crate::service::auth::Identity, Trust), Response> {
    let caller = trust_caller(id, headers).await?;
    let trust = match id.find_trust(trust_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return Err(trust_not_found(trust_id, id)),
        Err(e) => return Err(trust_error(e, id)),
    };
    let party = caller.user_id == trust.trustor_user_id || caller.user_id == trust.trustee_user_id;
    if !party && !caller.is_admin() {
        return Err(forbidden_trust(action, id));
    }
    Ok((caller, trust))
}

async fn get_trust(
    State(id): State<Shared>,
    Path(trust_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match visible_trust(&id, &headers, &trust_id, "get_trust").await {
        Ok((_, t)) => {
            axum::Json(json!({"trust": trust_json(&t, &id.config().public_url)})).into_response()
        }
        Err(r) => r,
    }
}

/// `DELETE /v3/OS-TRUST/trusts/{id}`: the trustor or an admin; its tokens end at once.
async fn delete_trust(
    State(id): State<Shared>,
    Path(trust_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (caller, trust) = match visible_trust(&id, &headers, &trust_id, "delete_trust").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if caller.user_id != trust.trustor_user_id && !caller.is_admin() {
        return forbidden_trust("delete_trust", &id);
    }
    match id.remove_trust(&trust_id).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => trust_error(e, &id),
    }
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
        Ok((claims, user)) => {
            let trust = match &claims.t {
                None => None,
                Some(t) => {
                    if let Err(e) = id.check_trust_token(&claims).await {
                        return match e {
                            AuthError::Unavailable(m) => {
                                error(StatusCode::SERVICE_UNAVAILABLE, &m, &id)
                            }
                            _ => not_found(&id),
                        };
                    }
                    match id.find_trust(t).await {
                        Ok(t) => t,
                        Err(e) => return trust_error(e, &id),
                    }
                }
            };
            with_subject(
                axum::Json(token_body(
                    &id,
                    &claims,
                    &user,
                    trust.as_ref(),
                    !q.nocatalog(),
                ))
                .into_response(),
                subject,
            )
        }
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
