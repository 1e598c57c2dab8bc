//! The service's authentication over real HTTP: the standalone identity (Keystone v3 at
//! `/identity`, served by axum on loopback, and logged in to with the real keystoneauth1), and
//! the validation of tokens against Debian's real Keystone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use freezer_core::service::auth::keystone::{KeystoneAuthenticator, KeystoneConfig};
use freezer_core::service::auth::setup::{AuthOptions, AuthSetup, KeystoneOptions};
use freezer_core::service::auth::standalone::StandaloneIdentity;
use freezer_core::service::auth::{AuthError, Authenticator, users};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::servers::KeystoneServer;

const ALICE_PW: &str = "alice-pw-do-not-log";
const RITA_PW: &str = "rita-pw-do-not-log";
const ADAM_PW: &str = "adam-pw-do-not-log";

/// A standalone identity served on loopback, mounted at `/identity` as the API mounts it.
struct Standalone {
    url: String,
    setup: AuthSetup,
    key_file: PathBuf,
    dir: PathBuf,
}

impl Standalone {
    fn identity(&self) -> &Arc<StandaloneIdentity> {
        match &self.setup {
            AuthSetup::Standalone(s) => s,
            AuthSetup::Keystone(_) => unreachable!("a standalone setup"),
        }
    }

    fn tokens(&self) -> String {
        format!("{}/identity/v3/auth/tokens", self.url)
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn users_json() -> String {
    let adam = users::hash_password(ADAM_PW).unwrap();
    json!([
        {"user": "alice", "password": ALICE_PW, "project": "demo", "roles": ["Member"]},
        {"user": "rita", "password": RITA_PW, "project": "demo", "roles": ["reader"]},
        {"user": "adam", "password_hash": adam, "project": "ops", "roles": ["admin"],
         "project_id": "ops-project-id", "user_id": "adam-id"},
    ])
    .to_string()
}

/// Starts a standalone identity (its own key file, tokens living `ttl`) on a free port.
fn start_standalone(ttl: Duration) -> Standalone {
    let dir = tempfile::tempdir().unwrap().keep();
    let users_file = dir.join("users.json");
    write_private(&users_file, &users_json());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let key_file = dir.join("state").join("token.key");
    let setup = AuthSetup::from_options(&AuthOptions {
        keystone: None,
        users_file: Some(users_file),
        token_key_file: key_file.clone(),
        token_ttl: ttl,
        public_url: format!("{url}/"),
    })
    .unwrap();
    let app = axum::Router::new().nest("/identity", setup.identity_router().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    Standalone {
        url,
        setup,
        key_file,
        dir,
    }
}

static MAIN: LazyLock<Standalone> = LazyLock::new(|| start_standalone(Duration::from_secs(3600)));
/// Tokens living three seconds, and another key than `MAIN`'s.
static SHORT: LazyLock<Standalone> = LazyLock::new(|| start_standalone(Duration::from_secs(3)));

struct Answer {
    status: StatusCode,
    subject: Option<String>,
    www_authenticate: Option<String>,
    text: String,
    body: Value,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (subject, www_authenticate) = (header("x-subject-token"), header("www-authenticate"));
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        subject,
        www_authenticate,
        text,
        body,
    }
}

async fn post(url: &str, body: &str) -> Answer {
    send(
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

fn password_auth(user: Value, scope: Option<Value>) -> String {
    let mut auth = json!({"identity": {"methods": ["password"], "password": {"user": user}}});
    if let Some(scope) = scope {
        auth["scope"] = scope;
    }
    json!({ "auth": auth }).to_string()
}

fn by_name(name: &str, password: &str) -> Value {
    json!({"name": name, "domain": {"name": "Default"}, "password": password})
}

fn token_auth(token: &str, scope: Option<Value>) -> String {
    let mut auth = json!({"identity": {"methods": ["token"], "token": {"id": token}}});
    if let Some(scope) = scope {
        auth["scope"] = scope;
    }
    json!({ "auth": auth }).to_string()
}

async fn login(s: &Standalone, user: &str, password: &str) -> String {
    let a = post(&s.tokens(), &password_auth(by_name(user, password), None)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    a.subject.unwrap()
}

/// A Keystone error body with `status`, showing none of `secrets`.
fn assert_keystone_error(a: &Answer, status: StatusCode, secrets: &[&str]) {
    assert_eq!(a.status, status, "{}", a.text);
    let e = &a.body["error"];
    assert_eq!(e["code"], status.as_u16(), "{}", a.text);
    assert_eq!(e["title"], status.canonical_reason().unwrap(), "{}", a.text);
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        a.text
    );
    for secret in secrets {
        assert!(!a.text.contains(secret), "{} shows a secret", a.text);
    }
    if status == StatusCode::UNAUTHORIZED {
        let www = a.www_authenticate.as_deref().unwrap_or_default();
        assert!(www.starts_with("Keystone uri="), "{www}");
    }
}

/// A token with one character changed in its middle.
fn tampered(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let at = bytes.len() / 2;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn version_discovery_as_keystoneauth_expects() {
    let s = &*MAIN;
    let a = send(reqwest::Client::new().get(format!("{}/identity", s.url))).await;
    assert_eq!(a.status, StatusCode::MULTIPLE_CHOICES, "{}", a.text);
    let values = a.body["versions"]["values"].as_array().unwrap();
    assert_eq!(values.len(), 1, "{}", a.text);
    let expected_self = format!("{}/identity/v3/", s.url);
    let check = |v: &Value| {
        assert_eq!(v["id"], "v3.14", "{v}");
        assert_eq!(v["status"], "stable", "{v}");
        assert!(v["updated"].as_str().unwrap().ends_with('Z'), "{v}");
        let links = v["links"].as_array().unwrap();
        assert!(
            links
                .iter()
                .any(|l| l["rel"] == "self" && l["href"] == expected_self.as_str()),
            "{v}"
        );
        assert_eq!(
            v["media-types"][0]["type"],
            "application/vnd.openstack.identity-v3+json"
        );
    };
    check(&values[0]);
    for path in ["/identity/v3", "/identity/v3/"] {
        let a = send(reqwest::Client::new().get(format!("{}{path}", s.url))).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
        check(&a.body["version"]);
    }
}

#[tokio::test]
async fn password_login_gives_a_keystone_token_with_a_backup_catalog() {
    let s = &*MAIN;
    let alice = s.identity().users().by_name("alice").unwrap().clone();
    let scope = json!({"project": {"name": "demo", "domain": {"name": "Default"}}});
    let a = post(
        &s.tokens(),
        &password_auth(by_name("alice", ALICE_PW), Some(scope)),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let token = a.subject.clone().unwrap();
    assert!(!a.text.contains(&token), "the token is in the header only");
    let t = &a.body["token"];
    assert_eq!(t["methods"], json!(["password"]));
    assert_eq!(t["user"]["id"], alice.id.as_str());
    assert_eq!(t["user"]["name"], "alice");
    assert_eq!(t["user"]["domain"]["id"], "default");
    assert_eq!(t["project"]["id"], alice.project_id.as_str());
    assert_eq!(t["project"]["name"], "demo");
    let roles: Vec<&str> = t["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["member", "reader"]);
    let expires: jiff::Timestamp = t["expires_at"].as_str().unwrap().parse().unwrap();
    let issued: jiff::Timestamp = t["issued_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires.duration_since(issued).as_secs(), 3600);
    assert!(t["expires_at"].as_str().unwrap().ends_with(".000000Z"));
    assert_eq!(t["audit_ids"].as_array().unwrap().len(), 1);
    let backup = t["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "backup")
        .unwrap_or_else(|| panic!("no backup service in {}", a.text));
    let mut interfaces: Vec<&str> = backup["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["url"], s.url.as_str(), "{e}");
            assert_eq!(e["region"], "RegionOne", "{e}");
            assert_eq!(e["region_id"], "RegionOne", "{e}");
            e["interface"].as_str().unwrap()
        })
        .collect();
    interfaces.sort_unstable();
    assert_eq!(interfaces, ["admin", "internal", "public"]);

    // The API's authenticator accepts it for the same identity.
    let who = s.setup.authenticator().validate(&token).await.unwrap();
    assert_eq!(who.user_id, alice.id);
    assert_eq!(who.project_id, alice.project_id);
    assert_eq!(who.roles, ["member", "reader"]);
    assert_eq!(who.expires_at, expires);

    // Project scope by id, user by id, the domain by id; ?nocatalog.
    let adam = json!({"id": "adam-id", "password": ADAM_PW});
    let scope = json!({"project": {"id": "ops-project-id"}});
    let a = post(
        &format!("{}?nocatalog", s.tokens()),
        &password_auth(adam, Some(scope)),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["token"]["project"]["id"], "ops-project-id");
    assert_eq!(a.body["token"]["user"]["name"], "adam");
    assert!(a.body["token"].get("catalog").is_none(), "{}", a.text);
    let user = json!({"name": "adam", "domain": {"id": "default"}, "password": ADAM_PW});
    let a = post(&s.tokens(), &password_auth(user, None)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let who = s
        .setup
        .authenticator()
        .validate(a.subject.as_deref().unwrap())
        .await
        .unwrap();
    assert!(who.is_admin());
    assert_eq!(who.roles, ["admin", "member", "reader"]);
}

#[tokio::test]
async fn token_method_rescopes_within_the_same_life() {
    let s = &*MAIN;
    let first = login(s, "rita", RITA_PW).await;
    let project_id = s
        .identity()
        .users()
        .by_name("rita")
        .unwrap()
        .project_id
        .clone();
    let scope = json!({"project": {"id": project_id}});
    let a = post(&s.tokens(), &token_auth(&first, Some(scope))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let second = a.subject.clone().unwrap();
    assert_ne!(second, first);
    assert_eq!(a.body["token"]["methods"], json!(["token", "password"]));
    assert_eq!(a.body["token"]["user"]["name"], "rita");
    // The same expiry and audit chain as the first token.
    let v = validate(s, &first, &first).await;
    assert_eq!(a.body["token"]["expires_at"], v.body["token"]["expires_at"]);
    assert_eq!(
        a.body["token"]["audit_ids"][0],
        v.body["token"]["audit_ids"][0]
    );
    let who = s.setup.authenticator().validate(&second).await.unwrap();
    assert_eq!(who.roles, ["reader"]);
    // Another project than the user's is refused.
    let scope = json!({"project": {"name": "ops", "domain": {"name": "Default"}}});
    let a = post(&s.tokens(), &token_auth(&first, Some(scope))).await;
    assert_keystone_error(&a, StatusCode::UNAUTHORIZED, &[&first]);
}

async fn validate(s: &Standalone, caller: &str, subject: &str) -> Answer {
    send(
        reqwest::Client::new()
            .get(s.tokens())
            .header("x-auth-token", caller)
            .header("x-subject-token", subject),
    )
    .await
}

async fn revoke(s: &Standalone, caller: &str, subject: &str) -> Answer {
    send(
        reqwest::Client::new()
            .delete(s.tokens())
            .header("x-auth-token", caller)
            .header("x-subject-token", subject),
    )
    .await
}

#[tokio::test]
async fn validate_and_revoke_over_http() {
    let s = &*MAIN;
    let token = login(s, "alice", ALICE_PW).await;
    let a = validate(s, &token, &token).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.subject.as_deref(), Some(token.as_str()));
    assert_eq!(a.body["token"]["user"]["name"], "alice");
    assert!(a.body["token"]["catalog"].is_array());
    // An admin validates anyone's token; a reader only their own.
    let admin = login(s, "adam", ADAM_PW).await;
    let a = validate(s, &admin, &token).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let reader = login(s, "rita", RITA_PW).await;
    let a = validate(s, &reader, &token).await;
    assert_keystone_error(&a, StatusCode::FORBIDDEN, &[&token, &reader]);
    // No caller token: 401; no subject: 400; an unknown subject: 404.
    let a = send(
        reqwest::Client::new()
            .get(s.tokens())
            .header("x-subject-token", &token),
    )
    .await;
    assert_keystone_error(&a, StatusCode::UNAUTHORIZED, &[&token]);
    let a = send(
        reqwest::Client::new()
            .get(s.tokens())
            .header("x-auth-token", &token),
    )
    .await;
    assert_keystone_error(&a, StatusCode::BAD_REQUEST, &[&token]);
    let a = validate(s, &admin, &tampered(&token)).await;
    assert_keystone_error(&a, StatusCode::NOT_FOUND, &[&token]);

    // A rescoped token shares the audit chain: revoking the first revokes both.
    let rescoped = post(&s.tokens(), &token_auth(&token, None))
        .await
        .subject
        .unwrap();
    let a = revoke(s, &token, &token).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    for t in [&token, &rescoped] {
        assert!(matches!(
            s.setup.authenticator().validate(t).await,
            Err(AuthError::Invalid)
        ));
        assert_eq!(validate(s, &admin, t).await.status, StatusCode::NOT_FOUND);
        let a = validate(s, t, t).await;
        assert_keystone_error(&a, StatusCode::UNAUTHORIZED, &[t]);
        let a = post(&s.tokens(), &token_auth(t, None)).await;
        assert_keystone_error(&a, StatusCode::UNAUTHORIZED, &[t]);
    }
    assert_eq!(
        revoke(s, &admin, &token).await.status,
        StatusCode::NOT_FOUND
    );
    // alice's other tokens live on.
    let other = login(s, "alice", ALICE_PW).await;
    assert!(s.setup.authenticator().validate(&other).await.is_ok());
}

#[tokio::test]
async fn refusals_are_401_with_keystone_error_bodies() {
    let s = &*MAIN;
    let demo = json!({"project": {"name": "demo", "domain": {"name": "Default"}}});
    let cases = [
        ("wrong password", by_name("alice", "not-alice-pw"), None),
        ("unknown user", by_name("mallory", ALICE_PW), None),
        (
            "another domain",
            json!({"name": "alice", "domain": {"name": "Other"}, "password": ALICE_PW}),
            None,
        ),
        (
            "unknown user id",
            json!({"id": "nobody", "password": ALICE_PW}),
            None,
        ),
        (
            "another project",
            by_name("alice", ALICE_PW),
            Some(json!({"project": {"name": "ops", "domain": {"name": "Default"}}})),
        ),
        (
            "another project id",
            by_name("alice", ALICE_PW),
            Some(json!({"project": {"id": "ops-project-id"}})),
        ),
        (
            "a domain scope",
            by_name("alice", ALICE_PW),
            Some(json!({"domain": {"id": "default"}})),
        ),
        (
            "the right user and project",
            by_name("alice", "ALICE-PW-DO-NOT-LOG"),
            Some(demo),
        ),
    ];
    for (what, user, scope) in cases {
        let a = post(&s.tokens(), &password_auth(user, scope)).await;
        assert_keystone_error(&a, StatusCode::UNAUTHORIZED, &[ALICE_PW, "not-alice-pw"]);
        assert!(a.subject.is_none(), "{what}");
    }
    // Unknown methods.
    let body = json!({"auth": {"identity": {"methods": ["totp"], "totp": {}}}}).to_string();
    assert_keystone_error(
        &post(&s.tokens(), &body).await,
        StatusCode::UNAUTHORIZED,
        &[],
    );

    // Tampered tokens, and a token sealed with another key (a valid token of SHORT).
    let good = login(s, "alice", ALICE_PW).await;
    let foreign = login(&SHORT, "alice", ALICE_PW).await;
    for bad in [
        tampered(&good),
        foreign,
        "garbage".to_string(),
        "x".repeat(5000),
    ] {
        let a = post(&s.tokens(), &token_auth(&bad, None)).await;
        assert_keystone_error(&a, StatusCode::UNAUTHORIZED, &[&bad, &good]);
        let a = validate(s, &bad, &good).await;
        assert_keystone_error(&a, StatusCode::UNAUTHORIZED, &[&bad, &good]);
        let e = s.setup.authenticator().validate(&bad).await.unwrap_err();
        assert!(matches!(e, AuthError::Invalid), "{e:?}");
        assert!(!e.to_string().contains(&bad));
    }
    assert!(matches!(
        s.setup.authenticator().validate("").await,
        Err(AuthError::Missing)
    ));
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let s = &*SHORT;
    let token = login(s, "alice", ALICE_PW).await;
    let caller = login(&MAIN, "adam", ADAM_PW).await;
    assert!(s.setup.authenticator().validate(&token).await.is_ok());
    let life = validate(s, &token, &token).await;
    assert_eq!(life.status, StatusCode::OK, "{}", life.text);
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let e = s.setup.authenticator().validate(&token).await.unwrap_err();
    assert!(matches!(e, AuthError::Expired(_)), "{e:?}");
    let a = post(&s.tokens(), &token_auth(&token, None)).await;
    assert_keystone_error(&a, StatusCode::UNAUTHORIZED, &[&token]);
    let a = validate(s, &token, &token).await;
    assert_keystone_error(&a, StatusCode::UNAUTHORIZED, &[&token]);
    // An admin of SHORT sees it as gone, or as expired with ?allow_expired.
    let admin = login(s, "adam", ADAM_PW).await;
    let a = validate(s, &admin, &token).await;
    assert_keystone_error(&a, StatusCode::NOT_FOUND, &[&token]);
    let a = send(
        reqwest::Client::new()
            .get(format!("{}?allow_expired=1", s.tokens()))
            .header("x-auth-token", &admin)
            .header("x-subject-token", &token),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.body["token"]["expires_at"],
        life.body["token"]["expires_at"]
    );
    // MAIN's tokens mean nothing here (another key).
    assert!(matches!(
        s.setup.authenticator().validate(&caller).await,
        Err(AuthError::Invalid)
    ));
}

#[tokio::test]
async fn malformed_requests_are_400_naming_what_is_wrong() {
    let s = &*MAIN;
    let cases: [(&str, String, &str); 9] = [
        ("not JSON", "{\"auth\": ".into(), "JSON"),
        ("not an object", "[1, 2]".into(), ""),
        ("no auth", json!({"oauth": {}}).to_string(), "auth"),
        (
            "no identity",
            json!({"auth": {"scope": "unscoped"}}).to_string(),
            "identity",
        ),
        (
            "methods not a list",
            json!({"auth": {"identity": {"methods": "password"}}}).to_string(),
            "methods",
        ),
        (
            "password method without password",
            json!({"auth": {"identity": {"methods": ["password"]}}}).to_string(),
            "password",
        ),
        (
            "no user name or id",
            password_auth(json!({"password": ALICE_PW}), None),
            "user",
        ),
        (
            "a name without a domain",
            password_auth(json!({"name": "alice", "password": ALICE_PW}), None),
            "domain",
        ),
        (
            "a password not a string",
            password_auth(
                json!({"name": "alice", "domain": {"id": "default"}, "password": 5}),
                None,
            ),
            "password",
        ),
    ];
    for (what, body, names) in cases {
        let a = post(&s.tokens(), &body).await;
        assert_keystone_error(&a, StatusCode::BAD_REQUEST, &[ALICE_PW]);
        let message = a.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{what}: {message}");
    }
    let a = post(
        &s.tokens(),
        &token_auth("x", Some(json!({"project": {"name": "demo"}}))),
    )
    .await;
    assert_keystone_error(&a, StatusCode::BAD_REQUEST, &[]);
    assert!(a.text.contains("domain"), "{}", a.text);
    let a = post(
        &s.tokens(),
        &json!({"auth": {"identity": {"methods": ["token"]}}}).to_string(),
    )
    .await;
    assert_keystone_error(&a, StatusCode::BAD_REQUEST, &[]);
}

#[tokio::test]
async fn key_and_users_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let s = &*MAIN;
    let mode = std::fs::metadata(&s.key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let key_hex = hex::encode(std::fs::read(&s.key_file).unwrap());
    let options = |users: &Path, key: &Path| AuthOptions {
        keystone: None,
        users_file: Some(users.to_path_buf()),
        token_key_file: key.to_path_buf(),
        token_ttl: Duration::from_secs(60),
        public_url: "http://127.0.0.1:9".into(),
    };
    let users_file = s.dir.join("users.json");
    // The same files give a second server that accepts the first one's tokens.
    let again = AuthSetup::from_options(&options(&users_file, &s.key_file)).unwrap();
    let token = login(s, "alice", ALICE_PW).await;
    assert!(again.authenticator().validate(&token).await.is_ok());
    assert!(!format!("{again:?}").contains(&key_hex));
    assert!(!format!("{again:?}").contains(ALICE_PW));
    // A key file group or others may read is refused, naming it and never showing it.
    let dir = tempfile::tempdir().unwrap();
    let shared_key = dir.path().join("shared.key");
    std::fs::copy(&s.key_file, &shared_key).unwrap();
    std::fs::set_permissions(&shared_key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = AuthSetup::from_options(&options(&users_file, &shared_key))
        .unwrap_err()
        .to_string();
    assert!(e.contains("shared.key") && e.contains("chmod 600"), "{e}");
    assert!(!e.contains(&key_hex), "{e}");
    // A users file with plaintext passwords that others may read is refused.
    let shared_users = dir.path().join("users.json");
    std::fs::write(&shared_users, users_json()).unwrap();
    std::fs::set_permissions(&shared_users, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = AuthSetup::from_options(&options(&shared_users, &s.key_file))
        .unwrap_err()
        .to_string();
    assert!(e.contains("users.json") && e.contains("chmod 600"), "{e}");
    assert!(!e.contains(ALICE_PW) && !e.contains(RITA_PW), "{e}");
}

/// The Python of the keystoneauth1 check (`./test.sh` makes it).
fn keystoneauth_python() -> PathBuf {
    let python =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/keystoneauth-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: this test needs the real keystoneauth1. Make it with: python3 -m venv \
         target/keystoneauth-venv && target/keystoneauth-venv/bin/pip install keystoneauth1 \
         (./test.sh does)",
        python.display()
    );
    python
}

#[tokio::test]
async fn keystoneauth1_logs_in_and_finds_the_backup_endpoint() {
    let s = &*MAIN;
    let python = keystoneauth_python();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("keystoneauth_check.py");
    std::fs::write(&script, include_str!("keystoneauth_check.py")).unwrap();
    let auth_url = format!("{}/identity/v3", s.url);
    let out = tokio::process::Command::new(python)
        .arg(&script)
        .args([auth_url.as_str(), "alice", ALICE_PW, "demo"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "keystoneauth1 failed: {stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let alice = s.identity().users().by_name("alice").unwrap().clone();
    assert_eq!(doc["user_id"], alice.id.as_str());
    assert_eq!(doc["project_id"], alice.project_id.as_str());
    assert_eq!(doc["roles"], json!(["member", "reader"]));
    for interface in ["public", "internal", "admin"] {
        assert_eq!(doc["endpoints"][interface], s.url.as_str(), "{doc}");
    }
    let rescoped = doc["rescoped_token"].as_str().unwrap();
    let a = validate(s, rescoped, rescoped).await;
    assert_eq!(
        a.body["token"]["methods"],
        json!(["token", "password"]),
        "{}",
        a.text
    );
    assert_eq!(doc["wrong_password"], "Unauthorized");
    for token in ["token", "rescoped_token"] {
        let who = s
            .setup
            .authenticator()
            .validate(doc[token].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(who.user_name, "alice");
    }
}

// --- Against a real Keystone -------------------------------------------------------------

static KEYSTONE: LazyLock<KeystoneServer> = LazyLock::new(KeystoneServer::start_alone);

pub(crate) async fn keystone() -> &'static KeystoneServer {
    tokio::task::spawn_blocking(|| &*KEYSTONE).await.unwrap()
}

/// A token of `user` from Keystone, scoped to `project` (by name) or unscoped.
async fn keystone_token(url: &str, user: &str, password: &str, project: Option<&str>) -> String {
    let scope = project.map(|p| json!({"project": {"name": p, "domain": {"name": "Default"}}}));
    let a = post(
        &format!("{url}/auth/tokens?nocatalog"),
        &password_auth(by_name(user, password), scope),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    a.subject.unwrap()
}

async fn member_token(ks: &KeystoneServer) -> String {
    keystone_token(&ks.url, "freezer", &ks.user_password, Some("freezer-test")).await
}

async fn keystone_revoke(ks: &KeystoneServer, token: &str) {
    let a = send(
        reqwest::Client::new()
            .delete(format!("{}/auth/tokens", ks.url))
            .header("x-auth-token", token)
            .header("x-subject-token", token),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
}

fn service_user(url: &str, password: &str) -> KeystoneOptions {
    KeystoneOptions {
        url: url.to_string(),
        username: "admin".into(),
        password: password.to_string(),
        project_name: "admin".into(),
        user_domain_name: "Default".into(),
        project_domain_name: "Default".into(),
    }
}

fn keystone_setup(url: &str, password: &str) -> AuthSetup {
    AuthSetup::from_options(&AuthOptions {
        keystone: Some(service_user(url, password)),
        users_file: None,
        token_key_file: PathBuf::from("/nonexistent/unused.key"),
        token_ttl: Duration::from_secs(3600),
        public_url: "http://127.0.0.1:9".into(),
    })
    .unwrap()
}

fn keystone_authenticator(url: &str, password: &str, cache_ttl: Duration) -> KeystoneAuthenticator {
    let mut config = KeystoneConfig::new(url, "admin", password, "admin");
    config.cache_ttl = cache_ttl;
    KeystoneAuthenticator::new(config).unwrap()
}

#[tokio::test]
async fn keystone_validates_a_member_token() {
    let ks = keystone().await;
    let setup = keystone_setup(&ks.url, &ks.admin_password);
    assert!(setup.identity_router().is_none());
    let auth = setup.authenticator();
    let token = member_token(ks).await;
    let who = auth.validate(&token).await.unwrap();
    assert_eq!(who.user_id, ks.user_id);
    assert_eq!(who.user_name, "freezer");
    assert_eq!(who.project_id, ks.project_id);
    assert!(who.has_role("member") && !who.is_admin(), "{who:?}");
    assert!(
        who.roles.iter().all(|r| *r == r.to_ascii_lowercase()),
        "{who:?}"
    );
    assert!(who.expires_at > jiff::Timestamp::now());
    // The second validation is remembered (and still right).
    assert_eq!(auth.validate(&token).await.unwrap(), who);
    // Keystone's base URL with or without /v3.
    let root = ks.url.trim_end_matches("/v3");
    let who2 = keystone_setup(root, &ks.admin_password)
        .authenticator()
        .validate(&token)
        .await
        .unwrap();
    assert_eq!(who2.project_id, ks.project_id);
    // Invalid tokens, and an unscoped one (it reaches no project's documents).
    let unscoped = keystone_token(&ks.url, "freezer", &ks.user_password, None).await;
    for bad in [
        tampered(&token),
        "gAAAAABnot-a-token".to_string(),
        "not a token".to_string(),
        unscoped,
    ] {
        let e = auth.validate(&bad).await.unwrap_err();
        assert!(matches!(e, AuthError::Invalid), "{e:?}");
    }
    assert!(matches!(auth.validate("").await, Err(AuthError::Missing)));
}

#[tokio::test]
async fn keystone_revoked_tokens_are_refused() {
    let ks = keystone().await;
    let auth = keystone_authenticator(&ks.url, &ks.admin_password, Duration::from_secs(60));
    // Revoked before it was ever validated.
    let token = member_token(ks).await;
    keystone_revoke(ks, &token).await;
    assert!(matches!(
        auth.validate(&token).await,
        Err(AuthError::Invalid)
    ));
    // Validated, then revoked: remembered for at most the cache's life (here until cleared).
    let token = member_token(ks).await;
    assert!(auth.validate(&token).await.is_ok());
    keystone_revoke(ks, &token).await;
    assert!(auth.validate(&token).await.is_ok(), "remembered");
    auth.clear_cache();
    assert!(matches!(
        auth.validate(&token).await,
        Err(AuthError::Invalid)
    ));
    // Without a cache, at once.
    let uncached = keystone_authenticator(&ks.url, &ks.admin_password, Duration::ZERO);
    let token = member_token(ks).await;
    assert!(uncached.validate(&token).await.is_ok());
    keystone_revoke(ks, &token).await;
    assert!(matches!(
        uncached.validate(&token).await,
        Err(AuthError::Invalid)
    ));
}

/// A TCP relay to `to` that can be stopped (Keystone going away).
struct Relay {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

async fn relay(to: std::net::SocketAddr) -> Relay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            connections.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Relay { port, task }
}

#[tokio::test]
async fn keystone_unreachable_is_unavailable() {
    let ks = keystone().await;
    let keystone_addr: std::net::SocketAddr = ks
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/v3")
        .parse()
        .unwrap();
    let relay = relay(keystone_addr).await;
    let url = format!("http://127.0.0.1:{}/v3", relay.port);
    let auth = keystone_setup(&url, &ks.admin_password).authenticator();
    let seen = member_token(ks).await;
    assert!(auth.validate(&seen).await.is_ok());
    // Keystone goes away: a token not yet validated cannot be served.
    relay.task.abort();
    let _ = relay.task.await;
    let fresh = member_token(ks).await;
    let e = auth.validate(&fresh).await.unwrap_err();
    assert!(matches!(e, AuthError::Unavailable(_)), "{e:?}");
    let message = e.to_string();
    assert!(
        !message.contains(&fresh) && !message.contains(&ks.admin_password),
        "{message}"
    );
    // A Keystone that never was.
    let closed = format!("http://127.0.0.1:{}/v3", crate::servers::free_port());
    let e = keystone_setup(&closed, &ks.admin_password)
        .authenticator()
        .validate(&fresh)
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("could not connect"), "{e}");
}

#[tokio::test]
async fn keystone_wrong_service_password_names_the_flag() {
    let ks = keystone().await;
    let wrong = "wrong-service-pw-do-not-log";
    let setup = keystone_setup(&ks.url, wrong);
    assert!(!format!("{setup:?}").contains(wrong));
    let token = member_token(ks).await;
    let e = setup.authenticator().validate(&token).await.unwrap_err();
    assert!(matches!(e, AuthError::Unavailable(_)), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains("--keystone-password-file") && message.contains("admin"),
        "{message}"
    );
    assert!(
        !message.contains(wrong) && !message.contains(&token),
        "{message}"
    );
    let AuthSetup::Keystone(k) = &setup else {
        panic!("a Keystone setup")
    };
    let e = k.check_service_user().await.unwrap_err().to_string();
    assert!(
        e.contains("--keystone-password-file") && !e.contains(wrong),
        "{e}"
    );
    let AuthSetup::Keystone(good) = keystone_setup(&ks.url, &ks.admin_password) else {
        panic!("a Keystone setup")
    };
    good.check_service_user().await.unwrap();
}
