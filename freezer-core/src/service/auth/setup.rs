//! What `freezer api serve`'s authentication flags become: one call turns them into the
//! [`Authenticator`] the API validates with and, standalone, the `/identity` routes to mount.
//! The front-end only reads its flags and environment and forwards them here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::keystone::{KeystoneAuthenticator, KeystoneConfig};
use super::standalone::{StandaloneConfig, StandaloneIdentity};
use super::trusts::{TrustBroker, TrustPolicy};
use super::{Authenticator, token::TokenKey, users::Users};
use crate::Error;

/// The Keystone service user of `--keystone-url` (`--keystone-user`, `--keystone-project`,
/// `--keystone-user-domain`, `--keystone-project-domain`; the password from
/// `--keystone-password-file` or the environment, see [`read_secret_file`]).
#[derive(Clone)]
pub struct KeystoneOptions {
    /// `--keystone-url`.
    pub url: String,
    /// `--keystone-user`.
    pub username: String,
    /// The service user's password.
    pub password: String,
    /// `--keystone-project` (default `service`).
    pub project_name: String,
    /// `--keystone-user-domain` (default `Default`).
    pub user_domain_name: String,
    /// `--keystone-project-domain` (default `Default`).
    pub project_domain_name: String,
}

impl std::fmt::Debug for KeystoneOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneOptions")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("project_name", &self.project_name)
            .finish_non_exhaustive()
    }
}

/// The authentication flags of `freezer api serve`.
#[derive(Clone, Debug)]
pub struct AuthOptions {
    /// A real Keystone to validate tokens against; `None`: the standalone identity.
    pub keystone: Option<KeystoneOptions>,
    /// `--users FILE` (standalone: required).
    pub users_file: Option<PathBuf>,
    /// `--token-key FILE` (standalone): created `0600` when missing. The front-end's default
    /// is `token.key` in the state folder ([`default_token_key_file`]).
    pub token_key_file: PathBuf,
    /// `--token-ttl` (standalone): how long a token lives. Default one hour.
    pub token_ttl: Duration,
    /// `--public-url`: the URL clients reach the API at (the catalog's `backup` endpoint).
    /// The front-end's default is `http://<--listen>`.
    pub public_url: String,
}

/// The authentication of a running API: what validates tokens, and whether the server also
/// answers the identity service itself.
#[derive(Debug, Clone)]
pub enum AuthSetup {
    /// Tokens are validated against a real Keystone.
    Keystone(Arc<KeystoneAuthenticator>),
    /// The server is its own identity service (mount [`AuthSetup::identity_router`] at
    /// `/identity`).
    Standalone(Arc<StandaloneIdentity>),
}

impl AuthSetup {
    /// Builds the authentication `options` ask for: loads and checks the users file and the
    /// token key (standalone), or checks the Keystone settings (without contacting Keystone).
    pub fn from_options(options: &AuthOptions) -> Result<AuthSetup, Error> {
        if let Some(k) = &options.keystone {
            if options.users_file.is_some() {
                return Err(Error::bad_input(
                    "--users",
                    "is for the standalone identity: drop it or --keystone-url",
                ));
            }
            let mut config = KeystoneConfig::new(&k.url, &k.username, &k.password, &k.project_name);
            config.user_domain_name = k.user_domain_name.clone();
            config.project_domain_name = k.project_domain_name.clone();
            return Ok(AuthSetup::Keystone(Arc::new(KeystoneAuthenticator::new(
                config,
            )?)));
        }
        let users_file = options.users_file.as_deref().ok_or_else(|| {
            Error::bad_input(
                "--users",
                "the standalone identity needs a users file (--users FILE), or give \
                 --keystone-url to use a Keystone",
            )
        })?;
        let public_url = parse_public_url(&options.public_url)?;
        let identity = StandaloneIdentity::new(
            Users::load(users_file)?,
            TokenKey::load_or_create(&options.token_key_file)?,
            StandaloneConfig {
                public_url,
                token_ttl: options.token_ttl,
                ..StandaloneConfig::default()
            },
        );
        Ok(AuthSetup::Standalone(Arc::new(identity)))
    }

    /// Standalone: reads the users file of `options` again and puts its users in place of the
    /// old ones (an operator's reload, on SIGHUP), returning how many there are now. A file
    /// that cannot be read or is refused changes nothing. With a Keystone there is no users
    /// file: `None`. Hashing plaintext passwords takes a while: call it off the runtime.
    pub fn reload_users(&self, options: &AuthOptions) -> Result<Option<usize>, Error> {
        match (self, options.users_file.as_deref()) {
            (AuthSetup::Standalone(s), Some(file)) => {
                let users = Users::load(file)?;
                let n = users.len();
                s.replace_users(users);
                Ok(Some(n))
            }
            _ => Ok(None),
        }
    }

    /// What the API validates every request's `X-Auth-Token` with.
    pub fn authenticator(&self) -> Arc<dyn Authenticator> {
        match self {
            AuthSetup::Keystone(k) => Arc::clone(k) as Arc<dyn Authenticator>,
            AuthSetup::Standalone(s) => Arc::clone(s) as Arc<dyn Authenticator>,
        }
    }

    /// Standalone: keeps token revocations in the API's `store`, so every server on the same
    /// database refuses a revoked token within [`super::revocations::REFRESH_EVERY`], and a
    /// restarted one from its first request. Nothing to do with a Keystone (which keeps its
    /// own).
    pub async fn share_revocations(
        &self,
        store: Arc<dyn crate::service::store::Store>,
    ) -> Result<(), crate::service::store::StoreError> {
        match self {
            AuthSetup::Keystone(_) => Ok(()),
            AuthSetup::Standalone(s) => {
                s.share_revocations(store, super::revocations::REFRESH_EVERY)
                    .await
            }
        }
    }

    /// Upstream's `[centralized_scheduler]`: the trusts the API makes for the jobs of central
    /// clients (every job with `enforce`), delegating `delegated_roles`. The trustee is the
    /// Keystone service user (`--keystone-user`), or, standalone, `service_user`
    /// (`--service-user`), whose trusts are kept in `store`.
    pub fn trust_policy(
        &self,
        store: Arc<dyn crate::service::store::Store>,
        service_user: Option<&str>,
        enforce: bool,
        delegated_roles: Vec<String>,
    ) -> Result<TrustPolicy, Error> {
        if delegated_roles.iter().any(|r| r.trim().is_empty()) {
            return Err(Error::bad_input(
                "--trusts-delegated-roles",
                "a role name is empty",
            ));
        }
        let delegated_roles = delegated_roles
            .into_iter()
            .map(|r| r.trim().to_ascii_lowercase())
            .collect();
        let broker: Arc<dyn TrustBroker> = match self {
            AuthSetup::Keystone(k) => {
                if service_user.is_some() {
                    return Err(Error::bad_input(
                        "--service-user",
                        "is for the standalone identity: with --keystone-url the trustee is \
                         the --keystone-user",
                    ));
                }
                Arc::clone(k) as Arc<dyn TrustBroker>
            }
            AuthSetup::Standalone(s) => {
                // Without a service user, a job that needs a trust is refused (422) with
                // a message naming --service-user.
                s.enable_trusts(store, service_user)?;
                Arc::clone(s) as Arc<dyn TrustBroker>
            }
        };
        Ok(TrustPolicy {
            broker,
            enforce,
            delegated_roles,
        })
    }

    /// Standalone: the identity routes, to mount with `Router::nest("/identity", ...)`.
    pub fn identity_router(&self) -> Option<axum::Router> {
        match self {
            AuthSetup::Keystone(_) => None,
            AuthSetup::Standalone(s) => Some(super::standalone::router(Arc::clone(s))),
        }
    }
}

/// The token key file's default place: `token.key` in the state folder.
pub fn default_token_key_file(state_dir: &Path) -> PathBuf {
    state_dir.join("token.key")
}

/// Parses `--token-ttl`: seconds (`3600`) or a duration (`1h`, `30m`, `1h30m`), at least one
/// second and at most 30 days.
pub fn parse_token_ttl(text: &str) -> Result<Duration, Error> {
    let text = text.trim();
    let secs = match text.parse::<u64>() {
        Ok(s) => s,
        Err(_) => {
            let d: jiff::SignedDuration = text.parse().map_err(|_| {
                Error::bad_input(
                    "--token-ttl",
                    format!("{text:?} is not a duration (3600, 90m, 1h)"),
                )
            })?;
            u64::try_from(d.as_secs()).unwrap_or(0)
        }
    };
    if !(1..=30 * 86_400).contains(&secs) {
        return Err(Error::bad_input(
            "--token-ttl",
            format!("{text:?} must be between 1 second and 30 days"),
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// Checks `--public-url` (`http://HOST:PORT`, optionally with a path): returns it without a
/// trailing `/`.
pub fn parse_public_url(text: &str) -> Result<String, Error> {
    let url = text.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            Error::bad_input(
                "--public-url",
                format!("{text:?} is not an http:// or https:// URL"),
            )
        })?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
        return Err(Error::bad_input(
            "--public-url",
            format!("{text:?} has no host, or has a query, fragment or space"),
        ));
    }
    Ok(url.to_string())
}

/// The public URL a server listening on `listen` (`127.0.0.1:9090`, `[::1]:9090`,
/// `0.0.0.0:9090`) is reached at when `--public-url` is not given: its address, with an
/// unspecified address replaced by loopback.
pub fn default_public_url(listen: &std::net::SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, listen.port()))
}

/// Reads a secret (a password) from a file: its first line without the line end. Refuses a
/// file group or others may read, and an empty secret. `what` names the flag in errors.
pub fn read_secret_file(path: &Path, what: &str) -> Result<String, Error> {
    use std::os::unix::fs::PermissionsExt;
    let label = format!("{what} {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| Error::io(&label, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::bad_input(
            &label,
            format!(
                "group or others may read it: run `chmod 600 {}`",
                path.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(&label, e))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(Error::bad_input(&label, "is empty"));
    }
    Ok(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ttl() {
        assert_eq!(parse_token_ttl("3600").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_token_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_token_ttl("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_token_ttl("1h 30m").unwrap(),
            Duration::from_secs(5400)
        );
        for bad in ["0", "", "soon", "-5", "31d", "-1h"] {
            let e = parse_token_ttl(bad).unwrap_err().to_string();
            assert!(e.contains("--token-ttl"), "{bad}: {e}");
        }
    }

    #[test]
    fn public_url() {
        assert_eq!(parse_public_url("http://h:9090/").unwrap(), "http://h:9090");
        assert_eq!(
            parse_public_url("https://h/freezer").unwrap(),
            "https://h/freezer"
        );
        for bad in ["h:9090", "ftp://h", "http://", "http:///x", "http://h?x=1"] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
        let listen = |s: &str| default_public_url(&s.parse().unwrap());
        assert_eq!(listen("0.0.0.0:9090"), "http://127.0.0.1:9090");
        assert_eq!(listen("10.1.2.3:80"), "http://10.1.2.3:80");
        assert_eq!(listen("[::]:9090"), "http://[::1]:9090");
    }

    #[test]
    fn secret_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\nignored\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_secret_file(&path, "--keystone-password-file").unwrap(),
            "s3cret"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret_file(&path, "--keystone-password-file")
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod 600") && !e.contains("s3cret"), "{e}");
        std::fs::write(&path, "\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_secret_file(&path, "x").is_err());
    }

    fn options(dir: &Path) -> AuthOptions {
        AuthOptions {
            keystone: None,
            users_file: Some(dir.join("users.json")),
            token_key_file: default_token_key_file(&dir.join("state")),
            token_ttl: Duration::from_secs(60),
            public_url: "http://127.0.0.1:9090/".into(),
        }
    }

    #[tokio::test]
    async fn standalone_and_keystone_setups() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.json");
        std::fs::write(
            &users,
            r#"[{"user":"a","password":"pw","project":"p","roles":["member"]}]"#,
        )
        .unwrap();
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
        let opts = options(dir.path());
        let setup = AuthSetup::from_options(&opts).unwrap();
        assert!(setup.identity_router().is_some());
        let AuthSetup::Standalone(id) = &setup else {
            panic!("standalone expected")
        };
        assert_eq!(id.config().public_url, "http://127.0.0.1:9090");
        let token = id.login("a", "pw").await.unwrap();
        assert_eq!(
            setup
                .authenticator()
                .validate(&token)
                .await
                .unwrap()
                .user_name,
            "a"
        );
        // A second server on the same key file accepts the token (a restart, another node).
        let again = AuthSetup::from_options(&opts).unwrap();
        assert!(again.authenticator().validate(&token).await.is_ok());
        // No users file: a clear error.
        let e = AuthSetup::from_options(&AuthOptions {
            users_file: None,
            ..opts.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--users"), "{e}");
        // Keystone: checked without contacting it; --users alongside is refused.
        let keystone = KeystoneOptions {
            url: "http://127.0.0.1:1/v3".into(),
            username: "freezer".into(),
            password: "pw".into(),
            project_name: "service".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
        };
        assert!(!format!("{keystone:?}").contains("pw\""));
        let e = AuthSetup::from_options(&AuthOptions {
            keystone: Some(keystone.clone()),
            ..opts.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--users"), "{e}");
        let setup = AuthSetup::from_options(&AuthOptions {
            keystone: Some(keystone.clone()),
            users_file: None,
            ..opts.clone()
        })
        .unwrap();
        assert!(setup.identity_router().is_none());
        let e = AuthSetup::from_options(&AuthOptions {
            keystone: Some(KeystoneOptions {
                url: "keystone:5000".into(),
                ..keystone
            }),
            users_file: None,
            ..opts
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--keystone-url"), "{e}");
    }
}
