//! Storages of an action: upstream's `storage` + `container` (+ credentials), storage URLs,
//! and turning them into sinks.
//!
//! Secrets come from options read from job documents or files, or from the environment the
//! front-end passes in ([`Environment`]); a URL never carries one (a URL with a password is
//! refused), and [`Secret`] never shows its value in `Debug`.
//!
//! FTP storages take upstream's `ftp_host`, `ftp_port`, `ftp_username`, `ftp_password`,
//! `ftp_certfile` and `ftp_keyfile`, or a URL `ftp[s]://USER@HOST[:PORT]/PATH` (`/~/PATH`:
//! relative to the login folder) whose password comes from `ftp_password` or `FTP_PASSWORD`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sink::{
    FtpOptions, FtpSink, KeystoneAuth, LocalSink, RetryPolicy, Retrying, S3Options, S3Sink, Sink,
    SshOptions, SshSink, SwiftAuth, SwiftOptions, SwiftSink, Throttled, parse_rate,
};

/// Environment variables, as a front-end chooses to pass them (the library never reads the
/// process environment itself).
pub type Environment = BTreeMap<String, String>;

/// The variables storages read credentials and endpoints from: upstream's `ACCESS_KEY`,
/// `SECRET_KEY` and `ENDPOINT`, then the usual AWS ones; for Swift, upstream's `OS_*`
/// (Keystone v3) and python-swiftclient's `ST_*` (TempAuth); `FTP_PASSWORD`;
/// `FREEZER_SSH_PASSWORD`; `HOME` (for `~/.ssh`) and `USER` (the default SSH user).
/// Front-ends pass these through [`RunContext::env`](super::RunContext::env).
pub const CREDENTIAL_VARIABLES: &[&str] = &[
    "FTP_PASSWORD",
    "ACCESS_KEY",
    "SECRET_KEY",
    "ENDPOINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "FREEZER_SSH_PASSWORD",
    "HOME",
    "USER",
    "OS_AUTH_URL",
    "OS_USERNAME",
    "OS_USER_ID",
    "OS_PASSWORD",
    "OS_AUTH_TOKEN",
    "OS_PROJECT_NAME",
    "OS_PROJECT_ID",
    "OS_TENANT_NAME",
    "OS_TENANT_ID",
    "OS_USER_DOMAIN_NAME",
    "OS_USER_DOMAIN_ID",
    "OS_PROJECT_DOMAIN_NAME",
    "OS_PROJECT_DOMAIN_ID",
    "OS_REGION_NAME",
    "OS_INTERFACE",
    "OS_ENDPOINT_TYPE",
    "OS_STORAGE_URL",
    "OS_AUTH_VERSION",
    "OS_IDENTITY_API_VERSION",
    "ST_AUTH",
    "ST_USER",
    "ST_KEY",
];

/// The credential environment from `vars` (a front-end's `std::env::vars_os()`): the
/// [`CREDENTIAL_VARIABLES`] it holds whose values are UTF-8, nothing else. Every front-end
/// builds its [`RunContext::env`](super::RunContext::env) with this.
pub fn credential_environment(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Environment {
    vars.into_iter()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            CREDENTIAL_VARIABLES
                .contains(&name.as_str())
                .then(|| value.into_string().ok().map(|v| (name, v)))?
        })
        .collect()
}

/// A secret value: serialized as itself, never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads a secret from the first line of a file; `field` names the option in errors.
pub fn read_secret_file(path: &Path, field: &str) -> Result<Secret> {
    use crate::error::IoContext as _;
    let text = std::fs::read_to_string(path).ctx(format!("{field} {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(Error::bad_input(
            field,
            format!("{}: the first line is empty", path.display()),
        ));
    }
    Ok(Secret(line.to_string()))
}

/// One storage: upstream's `storage` and `container`, and how to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageSpec {
    /// `local`, `s3`, `swift`, `ssh`, `ftp` or `ftps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Where in the storage: a folder for `local`, `bucket[/prefix]` for `s3`,
    /// `container[/prefix]` for `swift`, a folder on the server for `ssh`, `ftp` and `ftps`
    /// (absolute, or relative to the login folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// S3: the endpoint URL (upstream's `endpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3: the region (an extension; default `us-east-1`). Swift: the catalog's region
    /// (falls back to `OS_REGION_NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3: virtual-hosted addressing instead of path-style (an extension).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub virtual_hosted: bool,
    /// S3: upstream's `access_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<Secret>,
    /// S3: upstream's `secret_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<Secret>,
    /// SSH: upstream's `ssh_host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_host: Option<String>,
    /// SSH: upstream's `ssh_port` (22).
    #[serde(
        default,
        deserialize_with = "super::options::lenient_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub ssh_port: Option<u16>,
    /// SSH: upstream's `ssh_username` (default `USER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_username: Option<String>,
    /// SSH: upstream's `ssh_key`, a private key file (default the first of `~/.ssh/id_rsa`,
    /// `id_ecdsa`, `id_ed25519` that exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<String>,
    /// SSH: upstream's `ssh_password` (falls back to `FREEZER_SSH_PASSWORD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_password: Option<Secret>,
    /// SSH: the known_hosts file (an extension; default `~/.ssh/known_hosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_known_hosts: Option<String>,
    /// SSH: learn the key of a host known_hosts does not hold yet (an extension; a changed
    /// key is always refused). Upstream accepts every key silently.
    #[serde(
        default,
        deserialize_with = "super::options::lenient_bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub ssh_accept_new_host_key: bool,
    /// Swift: the account's URL, replacing the catalog's (an extension; falls back to
    /// `OS_STORAGE_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_url: Option<String>,
    /// Swift: objects larger than this many bytes are uploaded as segments of this size
    /// (an extension; default 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_size: Option<u64>,
    /// FTP: upstream's `ftp_host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ftp_host: Option<String>,
    /// FTP: upstream's `ftp_port` (21).
    #[serde(
        default,
        deserialize_with = "super::options::lenient_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub ftp_port: Option<u16>,
    /// FTP: upstream's `ftp_username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ftp_username: Option<String>,
    /// FTP: upstream's `ftp_password` (falls back to `FTP_PASSWORD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ftp_password: Option<Secret>,
    /// FTPS: upstream's `ftp_certfile`, a client certificate (PEM; it may hold the key too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ftp_certfile: Option<String>,
    /// FTPS: upstream's `ftp_keyfile`, the client certificate's key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ftp_keyfile: Option<String>,
    /// FTPS: the CA certificates (PEM) to trust instead of the system's (an extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ftp_ca_file: Option<String>,
}

/// The parts of `[USER@]HOST[:PORT]/PATH` in an ssh or ftp URL.
struct RemoteUrl {
    user: Option<String>,
    host: String,
    port: Option<u16>,
    /// `/~/PATH` and `/~` are relative to the login folder (`PATH`, empty), anything else
    /// absolute (`/PATH`); no trailing `/`.
    path: String,
}

/// Reads the part of an ssh or ftp URL after `scheme://`; `passwords` says where a password
/// goes instead of the URL.
fn remote_url(rest: &str, bad: &dyn Fn(&str) -> Error, passwords: &str) -> Result<RemoteUrl> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, _)) if u.contains(':') => {
            return Err(bad(&format!(
                "passwords do not belong in a URL: {passwords}"
            )));
        }
        Some((u, h)) => (Some(percent_decode(u)), h),
        None => (None, authority),
    };
    let (host, port) = match hostport.strip_prefix('[') {
        // [IPv6]:port
        Some(v6) => {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            (h, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| bad(&format!("{p:?} is not a port number")))
        })
        .transpose()?;
    let path = percent_decode(path);
    let path = match path.strip_prefix('~') {
        Some(rel) if rel.is_empty() || rel.starts_with('/') => rel.trim_start_matches('/').into(),
        _ if path.is_empty() => String::new(),
        _ => format!("/{path}"),
    };
    let path = match path.trim_end_matches('/') {
        "" if path.starts_with('/') => "/".to_string(),
        trimmed => trimmed.to_string(),
    };
    Ok(RemoteUrl {
        user,
        host: host.to_string(),
        port,
        path,
    })
}

/// Reads `ftp[s]://USER@HOST[:PORT]/PATH[?ca_file=..&certfile=..&keyfile=..]`.
fn ftp_url(url: &str, scheme: &str, rest: &str) -> Result<StorageSpec> {
    let bad = |why: &str| Error::bad_input("repository", format!("{url:?}: {why}"));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let r = remote_url(rest, &bad, "use FTP_PASSWORD, or ftp_password in a job")?;
    let user = r
        .user
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad("no user name: write ftp://USER@HOST/PATH"))?;
    let mut spec = StorageSpec {
        storage: Some(scheme.to_string()),
        container: Some(r.path),
        ftp_host: Some(r.host),
        ftp_port: r.port,
        ftp_username: Some(user),
        ..Default::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = Some(percent_decode(v));
        match k {
            "ca_file" => spec.ftp_ca_file = v,
            "certfile" => spec.ftp_certfile = v,
            "keyfile" => spec.ftp_keyfile = v,
            "password" | "ftp_password" => {
                return Err(bad("a password does not belong in a URL"));
            }
            other => {
                return Err(bad(&format!(
                    "unknown parameter {other:?} (ca_file, certfile, keyfile)"
                )));
            }
        }
    }
    Ok(spec)
}

impl StorageSpec {
    /// Reads a storage URL: a path or `file://PATH`,
    /// `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&style=virtual]`, or
    /// `swift://CONTAINER[/PREFIX][?region=R&storage_url=URL&segment_size=BYTES]`, or
    /// `ssh://[USER@]HOST[:PORT]/PATH` (`sftp://` too; `/~/PATH` is relative to the login
    /// folder).
    pub fn from_url(url: &str) -> Result<StorageSpec> {
        let bad = |why: &str| Error::bad_input("repository", format!("{url:?}: {why}"));
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(StorageSpec {
                storage: Some("local".into()),
                container: Some(url.to_string()),
                ..Default::default()
            });
        };
        match scheme {
            "file" => Ok(StorageSpec {
                storage: Some("local".into()),
                container: Some(rest.to_string()),
                ..Default::default()
            }),
            "s3" => {
                let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
                if path.contains('@') {
                    return Err(bad(
                        "credentials do not belong in a URL: use ACCESS_KEY/SECRET_KEY (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), or access_key/secret_key in a job",
                    ));
                }
                let path = path.trim_matches('/');
                if path.is_empty() {
                    return Err(bad("no bucket"));
                }
                let mut spec = StorageSpec {
                    storage: Some("s3".into()),
                    container: Some(path.to_string()),
                    ..Default::default()
                };
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let v = percent_decode(v);
                    match k {
                        "endpoint" => spec.endpoint = Some(v),
                        "region" => spec.region = Some(v),
                        "style" if v == "virtual" => spec.virtual_hosted = true,
                        "style" if v == "path" => spec.virtual_hosted = false,
                        "access_key" | "secret_key" | "password" | "token" => {
                            return Err(bad("credentials do not belong in a URL"));
                        }
                        other => {
                            return Err(bad(&format!(
                                "unknown parameter {other:?} (endpoint, region, style)"
                            )));
                        }
                    }
                }
                Ok(spec)
            }
            "ssh" | "sftp" => {
                let r = remote_url(
                    rest,
                    &bad,
                    "use a key (--ssh-key), or ssh_password in a job, or FREEZER_SSH_PASSWORD",
                )?;
                if r.path.is_empty() || r.path == "/" {
                    return Err(bad(
                        "no folder: ssh://HOST/PATH, or ssh://HOST/~/PATH for a folder in the login folder",
                    ));
                }
                Ok(StorageSpec {
                    storage: Some("ssh".into()),
                    container: Some(r.path),
                    ssh_host: Some(r.host),
                    ssh_port: r.port,
                    ssh_username: r.user,
                    ..Default::default()
                })
            }
            "swift" => swift_url(rest).map_err(|why| bad(&why)),
            "ftp" | "ftps" => ftp_url(url, scheme, rest),
            other => Err(bad(&format!("unknown scheme {other}://"))),
        }
    }

    /// The spec with a `container` that is a storage URL (`s3://bucket/node1`,
    /// `swift://c/p`, `ssh://host/path`, `file:///srv`...) read as that storage: its kind
    /// becomes `storage` (a `storage` that names another kind is refused, naming both), and
    /// what the URL says (endpoint, region, host, port, user) fills the options left unset
    /// (one set to another value is refused). A container without `://` is left as it is.
    /// `field` names the storage in errors.
    pub fn resolved(&self, field: &str) -> Result<StorageSpec> {
        let Some(container) = self.container.as_deref().filter(|c| c.contains("://")) else {
            return Ok(self.clone());
        };
        let url = StorageSpec::from_url(container.trim()).map_err(|e| {
            Error::bad_input(
                field,
                format!("container {container:?} is not a storage URL: {e}"),
            )
        })?;
        let kind = url.kind().to_string();
        if let Some(given) = self.storage.as_deref().filter(|s| !s.trim().is_empty())
            && given.trim() != kind
        {
            return Err(Error::bad_input(
                field,
                format!(
                    "container {container:?} is a {kind} storage URL but storage is {given:?}: \
                     leave storage out, or give the container as a {given} storage takes it"
                ),
            ));
        }
        let mut out = self.clone();
        out.storage = Some(kind);
        out.container = url.container;
        fn fill<T: Clone + PartialEq + fmt::Debug>(
            mine: &mut Option<T>,
            theirs: Option<T>,
            name: &str,
            field: &str,
        ) -> Result<()> {
            match (mine.as_ref(), theirs) {
                (_, None) => Ok(()),
                (None, t) => {
                    *mine = t;
                    Ok(())
                }
                (Some(m), Some(t)) if *m == t => Ok(()),
                (Some(m), Some(t)) => Err(Error::bad_input(
                    field,
                    format!("the container's URL gives {name} {t:?} but {name} is {m:?}"),
                )),
            }
        }
        fill(&mut out.endpoint, url.endpoint, "endpoint", field)?;
        fill(&mut out.region, url.region, "region", field)?;
        fill(&mut out.ssh_host, url.ssh_host, "ssh_host", field)?;
        fill(&mut out.ssh_port, url.ssh_port, "ssh_port", field)?;
        fill(
            &mut out.ssh_username,
            url.ssh_username,
            "ssh_username",
            field,
        )?;
        fill(&mut out.storage_url, url.storage_url, "storage_url", field)?;
        fill(
            &mut out.segment_size,
            url.segment_size,
            "segment_size",
            field,
        )?;
        fill(&mut out.ftp_host, url.ftp_host, "ftp_host", field)?;
        fill(&mut out.ftp_port, url.ftp_port, "ftp_port", field)?;
        fill(
            &mut out.ftp_username,
            url.ftp_username,
            "ftp_username",
            field,
        )?;
        out.virtual_hosted |= url.virtual_hosted;
        Ok(out)
    }

    /// The kind, `local` when unset.
    pub fn kind(&self) -> &str {
        self.storage.as_deref().unwrap_or("local")
    }

    /// Checks the spec can make a sink; `field` names it in errors.
    pub fn validate(&self, field: &str) -> Result<()> {
        match self.kind() {
            "ftp" | "ftps" => {
                if self.ftp_host.as_deref().is_none_or(str::is_empty) {
                    return Err(Error::bad_input(
                        "ftp_host",
                        format!("{field}: an {} storage needs ftp_host", self.kind()),
                    ));
                }
                if self.ftp_username.as_deref().is_none_or(str::is_empty) {
                    return Err(Error::bad_input(
                        "ftp_username",
                        format!("{field}: an {} storage needs ftp_username", self.kind()),
                    ));
                }
                Ok(())
            }
            _ if self.container.as_deref().is_none_or(str::is_empty) => {
                Err(Error::bad_input(field, "the storage needs a container"))
            }
            "local" | "s3" | "swift" => Ok(()),
            "ssh" if self.ssh_host.as_deref().is_none_or(str::is_empty) => {
                Err(Error::bad_input(field, "an ssh storage needs ssh_host"))
            }
            "ssh" => Ok(()),
            other => Err(Error::unsupported(format!(
                "storage {other:?} in this release (local, s3, swift, ssh, ftp, ftps)"
            ))),
        }
    }

    /// Opens the storage. Remote storages retry transient failures; `limits` are upstream's
    /// `upload_limit` and `download_limit` in bytes per second.
    pub fn open(
        &self,
        env: &Environment,
        limits: (Option<u64>, Option<u64>),
    ) -> Result<Arc<dyn Sink>> {
        let container = self.container.clone().unwrap_or_default();
        let sink: Arc<dyn Sink> = match self.kind() {
            "local" => {
                let local = LocalSink::new(container);
                return Ok(match limits {
                    (None, None) => Arc::new(local),
                    (up, down) => Arc::new(Throttled::new(local, up, down)),
                });
            }
            "s3" => {
                let (bucket, prefix) = container.split_once('/').unwrap_or((&container, ""));
                let var = |names: &[&str]| {
                    names
                        .iter()
                        .find_map(|n| env.get(*n).filter(|v| !v.is_empty()).cloned())
                };
                let opts = S3Options {
                    bucket: bucket.to_string(),
                    prefix: prefix.to_string(),
                    endpoint: self
                        .endpoint
                        .clone()
                        .or_else(|| var(&["ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])),
                    region: self
                        .region
                        .clone()
                        .or_else(|| var(&["AWS_REGION", "AWS_DEFAULT_REGION"])),
                    access_key: self
                        .access_key
                        .clone()
                        .map(|s| s.0)
                        .or_else(|| var(&["ACCESS_KEY", "AWS_ACCESS_KEY_ID"])),
                    secret_key: self
                        .secret_key
                        .clone()
                        .map(|s| s.0)
                        .or_else(|| var(&["SECRET_KEY", "AWS_SECRET_ACCESS_KEY"])),
                    session_token: var(&["AWS_SESSION_TOKEN"]),
                    virtual_hosted: self.virtual_hosted,
                };
                Arc::new(S3Sink::new(opts)?)
            }
            "ssh" => Arc::new(SshSink::new(self.ssh_options(env)?)?),
            "swift" => Arc::new(SwiftSink::new(self.swift_options(env)?)?),
            "ftp" | "ftps" => {
                self.validate("container")?;
                let username = self.ftp_username.clone().unwrap_or_default();
                let password = match (&self.ftp_password, env.get("FTP_PASSWORD")) {
                    (Some(p), _) => p.0.clone(),
                    (None, Some(p)) if !p.is_empty() => p.clone(),
                    _ if username == "anonymous" || username == "ftp" => "anonymous@".into(),
                    _ => {
                        return Err(Error::bad_input(
                            "ftp_password",
                            "an ftp storage needs a password: ftp_password, or FTP_PASSWORD in the environment",
                        ));
                    }
                };
                let opts = FtpOptions {
                    host: self.ftp_host.clone().unwrap_or_default(),
                    port: self.ftp_port.unwrap_or(21),
                    username,
                    password,
                    path: container,
                    tls: self.kind() == "ftps",
                    ca_file: self.ftp_ca_file.clone().map(Into::into),
                    cert_file: self.ftp_certfile.clone().map(Into::into),
                    key_file: self.ftp_keyfile.clone().map(Into::into),
                    ..FtpOptions::default()
                };
                Arc::new(FtpSink::new(opts)?)
            }
            other => return Err(Error::unsupported(format!("storage {other:?}"))),
        };
        let sink = Retrying::new(sink, RetryPolicy::default());
        Ok(match limits {
            (None, None) => Arc::new(sink),
            (up, down) => Arc::new(Throttled::new(sink, up, down)),
        })
    }
}

impl StorageSpec {
    /// The SSH options, with upstream's defaults resolved against `env` (`HOME`, `USER`,
    /// `FREEZER_SSH_PASSWORD`).
    fn ssh_options(&self, env: &Environment) -> Result<SshOptions> {
        let home = env.get("HOME").filter(|h| !h.is_empty());
        let expand = |p: &str| -> PathBuf {
            match (p.strip_prefix("~/"), home) {
                (Some(rest), Some(h)) => Path::new(h).join(rest),
                _ => PathBuf::from(p),
            }
        };
        let host = self
            .ssh_host
            .clone()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::bad_input("ssh_host", "an ssh storage needs ssh_host"))?;
        let username = self
            .ssh_username
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| env.get("USER").filter(|u| !u.is_empty()).cloned())
            .ok_or_else(|| {
                Error::bad_input("ssh_username", "no ssh_username given and USER is not set")
            })?;
        let password = self
            .ssh_password
            .as_ref()
            .map(|s| s.0.clone())
            .or_else(|| env.get("FREEZER_SSH_PASSWORD").cloned())
            .filter(|p| !p.is_empty());
        let key_file = match self.ssh_key.as_deref().filter(|k| !k.is_empty()) {
            Some(k) => Some(expand(k)),
            // Upstream's default is ~/.ssh/id_rsa; newer keys are as likely.
            None if password.is_none() => {
                let candidates: Vec<PathBuf> = ["id_rsa", "id_ecdsa", "id_ed25519"]
                    .iter()
                    .map(|n| expand(&format!("~/.ssh/{n}")))
                    .collect();
                Some(
                    candidates
                        .iter()
                        .find(|p| p.is_file())
                        .cloned()
                        .ok_or_else(|| {
                            Error::bad_input(
                                "ssh_key",
                                "no key given (ssh_key, --ssh-key) and none of ~/.ssh/id_rsa, id_ecdsa, id_ed25519 exists; or give ssh_password",
                            )
                        })?,
                )
            }
            None => None,
        };
        let known_hosts = match self.ssh_known_hosts.as_deref().filter(|k| !k.is_empty()) {
            Some(k) => expand(k),
            None => expand("~/.ssh/known_hosts"),
        };
        Ok(SshOptions {
            host,
            port: self.ssh_port.unwrap_or(22),
            username,
            key_file,
            password,
            path: self.container.clone().unwrap_or_default(),
            known_hosts,
            accept_new_host_key: self.ssh_accept_new_host_key,
        })
    }
}

impl StorageSpec {
    /// Swift options from the spec and, for credentials, the environment: Keystone v3 when
    /// `OS_AUTH_URL` is set with `OS_PASSWORD` or `OS_AUTH_TOKEN` (TempAuth when it names
    /// version 1), else TempAuth from `ST_AUTH`, `ST_USER`, `ST_KEY`, else a token given
    /// outright (`OS_AUTH_TOKEN` with `OS_STORAGE_URL`).
    pub fn swift_options(&self, env: &Environment) -> Result<SwiftOptions> {
        let var = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        let storage_url = self.storage_url.clone().or_else(|| var("OS_STORAGE_URL"));
        let version_1 = ["OS_AUTH_VERSION", "OS_IDENTITY_API_VERSION"]
            .iter()
            .any(|n| matches!(var(n).as_deref(), Some("1" | "1.0")));
        let auth = match (var("OS_AUTH_URL"), var("ST_AUTH")) {
            (Some(url), _) if version_1 || url.trim_end_matches('/').ends_with("/auth/v1.0") => {
                SwiftAuth::TempAuth {
                    url,
                    user: var("OS_USERNAME").ok_or_else(|| {
                        Error::bad_input("OS_USERNAME", "TempAuth needs the user (account:user)")
                    })?,
                    key: var("OS_PASSWORD").ok_or_else(|| {
                        Error::bad_input("OS_PASSWORD", "TempAuth needs the user's key")
                    })?,
                }
            }
            (Some(url), _) if var("OS_PASSWORD").is_some() || var("OS_AUTH_TOKEN").is_some() => {
                SwiftAuth::Keystone(Box::new(KeystoneAuth {
                    auth_url: url,
                    username: var("OS_USERNAME"),
                    user_id: var("OS_USER_ID"),
                    password: var("OS_PASSWORD"),
                    token: var("OS_AUTH_TOKEN"),
                    user_domain_name: var("OS_USER_DOMAIN_NAME"),
                    user_domain_id: var("OS_USER_DOMAIN_ID"),
                    project_name: var("OS_PROJECT_NAME").or_else(|| var("OS_TENANT_NAME")),
                    project_id: var("OS_PROJECT_ID").or_else(|| var("OS_TENANT_ID")),
                    project_domain_name: var("OS_PROJECT_DOMAIN_NAME"),
                    project_domain_id: var("OS_PROJECT_DOMAIN_ID"),
                    region: self.region.clone().or_else(|| var("OS_REGION_NAME")),
                    interface: var("OS_INTERFACE").or_else(|| var("OS_ENDPOINT_TYPE")),
                }))
            }
            (_, Some(url)) => SwiftAuth::TempAuth {
                url,
                user: var("ST_USER").ok_or_else(|| {
                    Error::bad_input("ST_USER", "TempAuth (ST_AUTH) needs ST_USER")
                })?,
                key: var("ST_KEY")
                    .ok_or_else(|| Error::bad_input("ST_KEY", "TempAuth (ST_AUTH) needs ST_KEY"))?,
            },
            (_, None) if var("OS_AUTH_TOKEN").is_some() && storage_url.is_some() => {
                SwiftAuth::Token(var("OS_AUTH_TOKEN").unwrap_or_default())
            }
            _ => {
                return Err(Error::bad_input(
                    "OS_AUTH_URL",
                    "a swift storage needs credentials: OS_AUTH_URL, OS_USERNAME, OS_PASSWORD and \
                     OS_PROJECT_NAME (Keystone v3), or ST_AUTH, ST_USER and ST_KEY (TempAuth), or \
                     OS_AUTH_TOKEN with OS_STORAGE_URL",
                ));
            }
        };
        let mut opts = SwiftOptions::new(self.container.as_deref().unwrap_or_default(), auth);
        opts.storage_url = storage_url;
        if let Some(n) = self.segment_size {
            opts.segment_size = usize::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::bad_input("segment_size", format!("{n} is out of range")))?;
        }
        Ok(opts)
    }
}

/// The part of a `swift://` URL after the scheme.
fn swift_url(rest: &str) -> std::result::Result<StorageSpec, String> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.contains('@') {
        return Err("credentials do not belong in a URL: use OS_USERNAME/OS_PASSWORD (Keystone) or ST_USER/ST_KEY (TempAuth)".into());
    }
    let path = path.trim_matches('/');
    if path.is_empty() || path.starts_with('/') {
        return Err("no container".into());
    }
    let mut spec = StorageSpec {
        storage: Some("swift".into()),
        container: Some(path.to_string()),
        ..Default::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "region" => spec.region = Some(v),
            "storage_url" => spec.storage_url = Some(v),
            "segment_size" => {
                let n = parse_rate(&v, "segment_size")
                    .ok()
                    .flatten()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("segment_size {v:?} is not a size in bytes"))?;
                spec.segment_size = Some(n);
            }
            "password" | "key" | "token" | "secret_key" | "access_key" => {
                return Err("credentials do not belong in a URL".into());
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?} (region, storage_url, segment_size)"
                ));
            }
        }
    }
    Ok(spec)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads upstream's `upload_limit` / `download_limit` values.
pub(crate) fn limits(up: Option<&str>, down: Option<&str>) -> Result<(Option<u64>, Option<u64>)> {
    Ok((
        up.map(|v| parse_rate(v, "upload_limit"))
            .transpose()?
            .flatten(),
        down.map(|v| parse_rate(v, "download_limit"))
            .transpose()?
            .flatten(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_that_is_a_url_selects_its_storage() {
        let spec = |storage: Option<&str>, container: &str| StorageSpec {
            storage: storage.map(String::from),
            container: Some(container.into()),
            ..Default::default()
        };
        // No storage: the URL's.
        let s = spec(
            None,
            "s3://bucket/node1?endpoint=http%3A%2F%2F127.0.0.1%3A9000",
        )
        .resolved("container")
        .unwrap();
        assert_eq!(s.kind(), "s3");
        assert_eq!(s.container.as_deref(), Some("bucket/node1"));
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        // The same kind: the URL is read; ssh's host, port and user fill the options.
        let s = spec(Some("ssh"), "ssh://backup@nas:2022/srv/freezer")
            .resolved("container")
            .unwrap();
        assert_eq!(
            (s.ssh_host.as_deref(), s.ssh_port, s.ssh_username.as_deref()),
            (Some("nas"), Some(2022), Some("backup"))
        );
        assert_eq!(s.container.as_deref(), Some("/srv/freezer"));
        let s = spec(None, "file:///srv/backups").resolved("c").unwrap();
        assert_eq!(
            (s.kind(), s.container.as_deref()),
            ("local", Some("/srv/backups"))
        );
        // Another kind is refused, naming both; never a local folder named "s3:".
        let e = spec(Some("local"), "s3://bucket/node1")
            .resolved("container")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s3 storage URL") && e.contains("\"local\""),
            "{e}"
        );
        // A URL that contradicts an option is refused, naming it.
        let mut s = spec(None, "s3://b?endpoint=http%3A%2F%2Fa");
        s.endpoint = Some("http://b".into());
        let e = s.resolved("storages[0]").unwrap_err().to_string();
        assert!(e.contains("storages[0]") && e.contains("endpoint"), "{e}");
        // A bad URL is named as the container.
        let e = spec(None, "s3://")
            .resolved("container")
            .unwrap_err()
            .to_string();
        assert!(e.contains("container") && e.contains("no bucket"), "{e}");
        let e = spec(None, "gopher://x")
            .resolved("container")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown scheme"), "{e}");
        // A folder is a folder.
        let s = spec(None, "/srv/backups").resolved("container").unwrap();
        assert_eq!(
            (s.storage, s.container.as_deref()),
            (None, Some("/srv/backups"))
        );
    }

    #[test]
    fn urls_read_as_storages() {
        let s = StorageSpec::from_url(
            "s3://bk/node1/db?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1",
        )
        .unwrap();
        assert_eq!(s.kind(), "s3");
        assert_eq!(s.container.as_deref(), Some("bk/node1/db"));
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            StorageSpec::from_url("/srv/backups").unwrap().kind(),
            "local"
        );
        assert_eq!(
            StorageSpec::from_url("file:///srv/backups")
                .unwrap()
                .container
                .as_deref(),
            Some("/srv/backups")
        );
        for bad in [
            "s3://AK:SK@bucket/x",
            "s3://b?secret_key=x",
            "s3://",
            "gopher://x",
            "s3://b?colour=red",
        ] {
            assert!(StorageSpec::from_url(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            StorageSpec::from_url("gopher://h/c"),
            Err(Error::BadInput { .. })
        ));
    }

    fn env(pairs: &[(&str, &str)]) -> Environment {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn swift_urls_read_as_storages() {
        let s = StorageSpec::from_url(
            "swift://backups/node1/db?region=RegionTwo&storage_url=http%3A%2F%2Fp%3A8080%2Fv1%2FAUTH_x&segment_size=8M",
        )
        .unwrap();
        assert_eq!(s.kind(), "swift");
        s.validate("repository").unwrap();
        assert_eq!(s.container.as_deref(), Some("backups/node1/db"));
        assert_eq!(s.region.as_deref(), Some("RegionTwo"));
        assert_eq!(s.storage_url.as_deref(), Some("http://p:8080/v1/AUTH_x"));
        assert_eq!(s.segment_size, Some(8 << 20));
        let plain = StorageSpec::from_url("swift://c").unwrap();
        assert_eq!(plain.container.as_deref(), Some("c"));
        for bad in [
            "swift://",
            "swift:///",
            "swift://u:pw@c/p",
            "swift://c?password=x",
            "swift://c?token=x",
            "swift://c?colour=red",
            "swift://c?segment_size=lots",
            "swift://c?segment_size=0",
        ] {
            assert!(StorageSpec::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn swift_credentials_come_from_the_environment() {
        let spec = StorageSpec::from_url("swift://c/p?segment_size=2M").unwrap();
        let keystone = env(&[
            ("OS_AUTH_URL", "http://k:5000/v3"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "hunter2"),
            ("OS_PROJECT_NAME", "proj"),
            ("OS_REGION_NAME", "R1"),
            ("OS_INTERFACE", "internal"),
            ("ST_AUTH", "http://ignored/auth/v1.0"),
        ]);
        let o = spec.swift_options(&keystone).unwrap();
        assert_eq!((o.container.as_str(), o.prefix.as_str()), ("c", "p"));
        assert_eq!(o.segment_size, 2 << 20);
        let SwiftAuth::Keystone(k) = &o.auth else {
            panic!("{o:?}")
        };
        assert_eq!(k.project_name.as_deref(), Some("proj"));
        assert_eq!(k.region.as_deref(), Some("R1"));
        assert_eq!(k.interface.as_deref(), Some("internal"));
        assert!(!format!("{o:?}").contains("hunter2"));
        let sink = spec.open(&keystone, (None, None)).unwrap();
        assert!(!format!("{sink:?} {}", sink.describe()).contains("hunter2"));

        let tempauth = env(&[
            ("ST_AUTH", "http://s:8080/auth/v1.0"),
            ("ST_USER", "test:tester"),
            ("ST_KEY", "testing"),
            ("OS_STORAGE_URL", "http://s:8080/v1/AUTH_test"),
        ]);
        let o = spec.swift_options(&tempauth).unwrap();
        assert!(matches!(&o.auth, SwiftAuth::TempAuth { user, .. } if user == "test:tester"));
        assert_eq!(o.storage_url.as_deref(), Some("http://s:8080/v1/AUTH_test"));
        let v1 = env(&[
            ("OS_AUTH_URL", "http://s:8080/auth/v1.0"),
            ("OS_USERNAME", "a:u"),
            ("OS_PASSWORD", "k"),
        ]);
        assert!(matches!(
            spec.swift_options(&v1).unwrap().auth,
            SwiftAuth::TempAuth { .. }
        ));
        let token = env(&[
            ("OS_AUTH_TOKEN", "t"),
            ("OS_STORAGE_URL", "http://s/v1/AUTH_a"),
        ]);
        assert!(matches!(
            spec.swift_options(&token).unwrap().auth,
            SwiftAuth::Token(_)
        ));
        let e = spec.swift_options(&Environment::new()).unwrap_err();
        assert!(e.to_string().contains("ST_AUTH"), "{e}");
        let half = env(&[("ST_AUTH", "http://s:8080/auth/v1.0"), ("ST_USER", "a:u")]);
        assert!(
            spec.swift_options(&half)
                .unwrap_err()
                .to_string()
                .contains("ST_KEY")
        );
    }

    #[test]
    fn ssh_urls_and_defaults() {
        let s = StorageSpec::from_url("ssh://backup@db1.example:2222/srv/freezer/").unwrap();
        assert_eq!(s.kind(), "ssh");
        assert_eq!(s.ssh_host.as_deref(), Some("db1.example"));
        assert_eq!(s.ssh_port, Some(2222));
        assert_eq!(s.ssh_username.as_deref(), Some("backup"));
        assert_eq!(s.container.as_deref(), Some("/srv/freezer"));
        let s = StorageSpec::from_url("sftp://[::1]/~/bk").unwrap();
        assert_eq!((s.ssh_host.as_deref(), s.ssh_port), (Some("::1"), None));
        assert_eq!(s.container.as_deref(), Some("bk"));
        for bad in [
            "ssh://u:pw@h/x",
            "ssh://h",
            "ssh://h/",
            "ssh:///x",
            "ssh://h:port/x",
        ] {
            assert!(StorageSpec::from_url(bad).is_err(), "{bad}");
        }
        let home = tempfile::tempdir().unwrap();
        let env: Environment = [
            ("HOME", home.path().to_str().unwrap()),
            ("USER", "operator"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let spec = StorageSpec::from_url("ssh://h/~/bk").unwrap();
        // No key, no password: named, with what to do.
        let e = spec.ssh_options(&env).unwrap_err();
        assert!(e.to_string().starts_with("ssh_key:"), "{e}");
        std::fs::create_dir(home.path().join(".ssh")).unwrap();
        std::fs::write(home.path().join(".ssh/id_ed25519"), "k").unwrap();
        let o = spec.ssh_options(&env).unwrap();
        assert_eq!(o.username, "operator");
        assert_eq!(o.port, 22);
        assert_eq!(o.key_file, Some(home.path().join(".ssh/id_ed25519")));
        assert_eq!(o.known_hosts, home.path().join(".ssh/known_hosts"));
        assert!(!o.accept_new_host_key);
        // A password alone needs no key.
        let mut env2 = env.clone();
        env2.insert("FREEZER_SSH_PASSWORD".into(), "pw".into());
        std::fs::remove_file(home.path().join(".ssh/id_ed25519")).unwrap();
        let o = spec.ssh_options(&env2).unwrap();
        assert_eq!((o.key_file, o.password.as_deref()), (None, Some("pw")));
        // Upstream's options, as a job writes them.
        let job: StorageSpec = serde_json::from_str(
            r#"{"storage":"ssh","container":"/bk","ssh_host":"h","ssh_port":"2022",
                "ssh_username":"u","ssh_key":"~/k","ssh_accept_new_host_key":"True"}"#,
        )
        .unwrap();
        let o = job.ssh_options(&env).unwrap();
        assert_eq!((o.port, o.path.as_str()), (2022, "/bk"));
        assert_eq!(o.key_file, Some(home.path().join("k")));
        assert!(o.accept_new_host_key);
    }

    #[test]
    fn ftp_urls_read_as_storages() {
        let s = StorageSpec::from_url(
            "ftps://backup@ftp.example.org:2121/srv/bk?ca_file=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(s.kind(), "ftps");
        assert_eq!(s.ftp_host.as_deref(), Some("ftp.example.org"));
        assert_eq!(s.ftp_port, Some(2121));
        assert_eq!(s.ftp_username.as_deref(), Some("backup"));
        assert_eq!(s.container.as_deref(), Some("/srv/bk"));
        assert_eq!(s.ftp_ca_file.as_deref(), Some("/etc/ca.pem"));
        s.validate("repository").unwrap();
        let s = StorageSpec::from_url("ftp://me@[::1]/~/rel/dir").unwrap();
        assert_eq!(s.kind(), "ftp");
        assert_eq!(s.ftp_host.as_deref(), Some("::1"));
        assert_eq!(s.ftp_port, None);
        assert_eq!(s.container.as_deref(), Some("rel/dir"));
        assert_eq!(
            StorageSpec::from_url("ftp://me@h")
                .unwrap()
                .container
                .as_deref(),
            Some("")
        );
        for bad in [
            "ftp://me:secret@h/x",
            "ftp://h/x",
            "ftp://me@h:port/x",
            "ftp://me@h/x?password=1",
            "ftp://me@h/x?colour=red",
            "ftp://me@/x",
        ] {
            let e = StorageSpec::from_url(bad).unwrap_err();
            assert!(!e.to_string().contains("secret") || bad.contains("secret"));
            assert!(matches!(e, Error::BadInput { .. }), "{bad}: {e}");
        }
        let e = StorageSpec::from_url("ftp://me:secret@h/x").unwrap_err();
        assert!(e.to_string().contains("FTP_PASSWORD"), "{e}");
    }

    #[test]
    fn ftp_passwords_come_from_options_then_the_environment() {
        let spec = StorageSpec::from_url("ftp://me@127.0.0.1:2121/bk").unwrap();
        let e = spec.open(&Environment::new(), (None, None)).unwrap_err();
        assert!(e.to_string().starts_with("ftp_password"), "{e}");
        let env: Environment = [("FTP_PASSWORD".to_string(), "from-env".to_string())].into();
        let sink = spec.open(&env, (None, None)).unwrap();
        assert_eq!(sink.describe(), "ftp://me@127.0.0.1:2121/bk");
        assert!(!format!("{sink:?}").contains("from-env"));
        let with_option = StorageSpec {
            ftp_password: Some(Secret("from-option".into())),
            ..spec.clone()
        };
        assert!(!format!("{with_option:?}").contains("from-option"));
        with_option.open(&Environment::new(), (None, None)).unwrap();
        let no_host = StorageSpec {
            ftp_host: None,
            ..spec
        };
        let e = no_host.validate("container").unwrap_err();
        assert!(e.to_string().starts_with("ftp_host"), "{e}");
        let upstream: StorageSpec = serde_json::from_str(
            r#"{"storage":"ftps","container":"/bk","ftp_host":"h","ftp_port":"990","ftp_username":"u","ftp_password":"p"}"#,
        )
        .unwrap();
        assert_eq!(upstream.ftp_port, Some(990));
        assert!(
            upstream
                .open(&Environment::new(), (None, None))
                .unwrap()
                .describe()
                .starts_with("ftps://u@h:990/bk")
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let s = StorageSpec {
            secret_key: Some(Secret("hunter2".into())),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(
            serde_json::to_string(&s).unwrap().contains("hunter2"),
            "a job keeps what it was given"
        );
    }

    #[test]
    fn credentials_come_from_options_then_the_environment() {
        let env: Environment = [
            ("ACCESS_KEY", "ak"),
            ("AWS_SECRET_ACCESS_KEY", "sk"),
            ("ENDPOINT", "http://e:1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let spec = StorageSpec::from_url("s3://b/p").unwrap();
        let sink = spec.open(&env, (None, None)).unwrap();
        assert!(
            sink.describe().contains("http://e:1"),
            "{}",
            sink.describe()
        );
        let half = StorageSpec {
            access_key: Some(Secret("only".into())),
            ..spec
        };
        assert!(half.open(&Environment::new(), (None, None)).is_err());
    }
}
