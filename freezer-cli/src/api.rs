//! `freezer api`: serve the freezer-api v2 compatible REST API (`serve`), and hash a
//! password for the standalone users file (`hash-password`).
//!
//! A front-end only: it reads flags, the environment and secret files, opens the store and
//! the authentication freezer-core builds from them, and runs the server until SIGTERM or
//! Ctrl-C. Secrets never come from a plain flag.

use crate::output::outln;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use freezer_core::Error;
use freezer_core::service::api::{ApiState, router, serve, serve_tls, tls_server_config};
use freezer_core::service::auth::setup::{
    AuthOptions, AuthSetup, KeystoneOptions, default_public_url, default_token_key_file,
    parse_token_ttl, read_secret_file,
};
use freezer_core::service::store;

/// The environment variable that may hold the Keystone service user's password.
const KEYSTONE_PASSWORD_VAR: &str = "FREEZER_KEYSTONE_PASSWORD";

#[derive(Subcommand, Debug)]
pub enum ApiCommand {
    /// Serve the freezer-api v2 REST API (python-freezerclient and upstream's scheduler
    /// talk to it unchanged).
    Serve(Box<ServeArgs>),
    /// Read a password on stdin and print its Argon2 hash (PHC string) for the users file.
    HashPassword,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// The database: sqlite:PATH (default: freezer-api.db in the state folder) or
    /// mysql://USER@HOST:PORT/DB (the password from the URL is never logged).
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Standalone identity: the users file (JSON list of {"user", "password", "project",
    /// "roles"}), read again on SIGHUP; the server answers Keystone v3 at /identity/v3.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// Standalone identity: the key tokens are signed with (created 0600 when missing;
    /// default token.key in the state folder).
    #[arg(long, value_name = "FILE")]
    token_key: Option<PathBuf>,
    /// Standalone identity: how long a token lives (3600, 90m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    token_ttl: String,
    /// Serve HTTPS with this certificate (PEM: the server's certificate, then its
    /// intermediates); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, chmod 600); needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The URL clients reach this server at (the catalog's backup endpoint; default
    /// http://<--listen>, https:// with --tls-cert).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Validate tokens against this Keystone (its v3 URL) instead of the standalone identity.
    #[arg(long, value_name = "URL")]
    keystone_url: Option<String>,
    /// The Keystone service user.
    #[arg(long, value_name = "NAME", default_value = "freezer")]
    keystone_user: String,
    /// The service user's project.
    #[arg(long, value_name = "NAME", default_value = "service")]
    keystone_project: String,
    /// The service user's domain.
    #[arg(long, value_name = "NAME", default_value = "Default")]
    keystone_user_domain: String,
    /// The service project's domain.
    #[arg(long, value_name = "NAME", default_value = "Default")]
    keystone_project_domain: String,
    /// A file (0600) whose first line is the service user's password (or set
    /// FREEZER_KEYSTONE_PASSWORD).
    #[arg(long, value_name = "FILE")]
    keystone_password_file: Option<PathBuf>,
    /// Centralized scheduler: turn it off (upstream's `[centralized_scheduler] enabled =
    /// false`): no trust is made, jobs carry no user_credentials.
    #[arg(long)]
    no_centralized_scheduler: bool,
    /// Centralized scheduler: every job gets a trust, not only a central client's
    /// (upstream's `enforce_trusts`).
    #[arg(long)]
    enforce_trusts: bool,
    /// Centralized scheduler: the roles a trust delegates, comma-separated (upstream's
    /// `trusts_delegated_roles`).
    #[arg(
        long,
        value_name = "ROLES",
        value_delimiter = ',',
        default_value = "member"
    )]
    trusts_delegated_roles: Vec<String>,
    /// Standalone identity: the user of the users file that trusts delegate to, which a
    /// central scheduler runs as (needs the service role). Without it, a job for a central
    /// client is refused (422). With --keystone-url the trustee is --keystone-user.
    #[arg(long, value_name = "NAME")]
    service_user: Option<String>,
}

/// Where the API keeps its files when not told: `$XDG_STATE_HOME/freezer`, else
/// `~/.local/state/freezer`.
fn state_dir() -> Result<PathBuf, Error> {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("freezer"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            Error::bad_input(
                "--database",
                "no HOME to keep the state folder in: give --database and --token-key",
            )
        })?;
    Ok(PathBuf::from(home).join(".local/state/freezer"))
}

fn ensure_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))
}

impl ServeArgs {
    fn auth_options(&self) -> Result<AuthOptions, Error> {
        let keystone = match &self.keystone_url {
            None => None,
            Some(url) => {
                let password = match &self.keystone_password_file {
                    Some(f) => read_secret_file(f, "--keystone-password-file")?,
                    None => std::env::var(KEYSTONE_PASSWORD_VAR)
                        .ok()
                        .filter(|p| !p.is_empty())
                        .ok_or_else(|| {
                            Error::bad_input(
                                "--keystone-password-file",
                                format!(
                                    "the Keystone service user needs a password: give --keystone-password-file FILE or set {KEYSTONE_PASSWORD_VAR}"
                                ),
                            )
                        })?,
                };
                Some(KeystoneOptions {
                    url: url.clone(),
                    username: self.keystone_user.clone(),
                    password,
                    project_name: self.keystone_project.clone(),
                    user_domain_name: self.keystone_user_domain.clone(),
                    project_domain_name: self.keystone_project_domain.clone(),
                })
            }
        };
        let token_key_file = match &self.token_key {
            Some(f) => f.clone(),
            None if keystone.is_some() => PathBuf::new(),
            None => {
                let dir = state_dir()?;
                ensure_dir(&dir)?;
                default_token_key_file(&dir)
            }
        };
        Ok(AuthOptions {
            keystone,
            users_file: self.users.clone(),
            token_key_file,
            token_ttl: parse_token_ttl(&self.token_ttl)?,
            public_url: self.public_url.clone().unwrap_or_else(|| {
                let url = default_public_url(&self.listen);
                match &self.tls_cert {
                    Some(_) => url.replacen("http://", "https://", 1),
                    None => url,
                }
            }),
        })
    }

    fn database(&self) -> Result<String, Error> {
        if let Some(d) = &self.database {
            return Ok(d.clone());
        }
        let dir = state_dir()?;
        ensure_dir(&dir)?;
        Ok(format!("sqlite:{}", dir.join("freezer-api.db").display()))
    }
}

/// Runs `freezer api ...`.
pub async fn run(command: ApiCommand) -> freezer_core::Result<bool> {
    match command {
        ApiCommand::HashPassword => {
            let hash =
                freezer_core::service::auth::users::hash_password_from(std::io::stdin().lock())?;
            outln!("{hash}");
            Ok(true)
        }
        ApiCommand::Serve(args) => serve_api(*args).await,
    }
}

async fn serve_api(args: ServeArgs) -> freezer_core::Result<bool> {
    // Checked first: a bad certificate or key stops the start before anything is opened.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_server_config(cert, key)?),
        _ => None,
    };
    let options = args.auth_options()?;
    if tls.is_some() && options.public_url.starts_with("http://") {
        tracing::warn!(
            public_url = options.public_url,
            "the server serves HTTPS but --public-url is http://: clients will be sent there"
        );
    }
    let auth = AuthSetup::from_options(&options)?;
    let database = args.database()?;
    let store = store::open(&database)
        .await
        .map_err(|e| Error::bad_input("--database", e))?;
    auth.share_revocations(Arc::clone(&store))
        .await
        .map_err(|e| Error::bad_input("--database", e))?;
    let mut state = ApiState::new(Arc::clone(&store), auth.authenticator());
    if let Some(identity) = auth.identity_router() {
        state = state.with_identity(identity);
    }
    if !args.no_centralized_scheduler {
        state = state.with_trusts(auth.trust_policy(
            store,
            args.service_user.as_deref(),
            args.enforce_trusts,
            args.trusts_delegated_roles.clone(),
        )?);
    } else if args.enforce_trusts || args.service_user.is_some() {
        return Err(Error::bad_input(
            "--no-centralized-scheduler",
            "turns trusts off: drop --enforce-trusts and --service-user, or this flag",
        ));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Error::io(format!("--listen {}", args.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("--listen", e))?;
    reload_users_on_sighup(auth.clone(), options.clone());
    tracing::info!(
        %addr,
        tls = tls.is_some(),
        standalone_identity = matches!(auth, AuthSetup::Standalone(_)),
        "freezer api listening"
    );
    match tls {
        Some(tls) => serve_tls(listener, tls, router(state), stop_signal()).await,
        None => serve(listener, router(state), stop_signal()).await,
    }
    .map_err(|e| Error::io(format!("serving on {addr}"), e))?;
    tracing::info!("freezer api stopped");
    Ok(true)
}

/// Reads the users file again on each SIGHUP (`systemctl reload`), as Keystone takes new users
/// without a restart. A file that is refused leaves the users as they were, with an error line.
fn reload_users_on_sighup(auth: AuthSetup, options: AuthOptions) {
    if options.users_file.is_none() {
        return;
    }
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("SIGHUP cannot be caught: the users file is read at start only");
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let (auth, options) = (auth.clone(), options.clone());
            match tokio::task::spawn_blocking(move || auth.reload_users(&options)).await {
                Ok(Ok(n)) => tracing::info!(users = n, "SIGHUP: users file read again"),
                Ok(Err(e)) => {
                    tracing::error!(
                        "SIGHUP: the users file was not taken, the users stay as they were: {e}"
                    )
                }
                Err(e) => tracing::error!("SIGHUP: reading the users file failed: {e}"),
            }
        }
    });
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
        () = terminated => tracing::info!("SIGTERM: stopping"),
    }
}
