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
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sink::{
    FtpOptions, FtpSink, LocalSink, RetryPolicy, Retrying, S3Options, S3Sink, Sink, Throttled,
    parse_rate,
};

/// Environment variables, as a front-end chooses to pass them (the library never reads the
/// process environment itself).
pub type Environment = BTreeMap<String, String>;

/// The variables storages read credentials and endpoints from: upstream's `ACCESS_KEY`,
/// `SECRET_KEY` and `ENDPOINT`, then the usual AWS ones, and `FTP_PASSWORD`. Front-ends pass
/// these through [`RunContext::env`](super::RunContext::env).
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
];

/// A secret value: serialized as itself, never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One storage: upstream's `storage` and `container`, and how to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageSpec {
    /// `local`, `s3`, `ftp` or `ftps` (more storages come with later releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Where in the storage: a folder for `local`, `bucket[/prefix]` for `s3`, a folder on the
    /// server for `ftp` (absolute, or relative to the login folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// S3: the endpoint URL (upstream's `endpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3: the region (an extension; default `us-east-1`).
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
    /// FTP: upstream's `ftp_host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ftp_host: Option<String>,
    /// FTP: upstream's `ftp_port` (21).
    #[serde(
        default,
        deserialize_with = "lenient_port",
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

/// Reads a port given as a number or a string (upstream writes both).
pub(crate) fn lenient_port<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u16>, D::Error> {
    use serde::de::Error as _;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("{n} is not a port number"))),
        serde_json::Value::String(s) if s.trim().is_empty() => Ok(None),
        serde_json::Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{s:?} is not a port number"))),
        other => Err(D::Error::custom(format!("{other} is not a port number"))),
    }
}

/// Reads `ftp[s]://USER@HOST[:PORT]/PATH[?ca_file=..&certfile=..&keyfile=..]`.
fn ftp_url(url: &str, scheme: &str, rest: &str) -> Result<StorageSpec> {
    let bad = |why: &str| Error::bad_input("repository", format!("{url:?}: {why}"));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let Some((user, hostport)) = authority.rsplit_once('@') else {
        return Err(bad("no user name: write ftp://USER@HOST/PATH"));
    };
    if user.contains(':') {
        return Err(bad(
            "a password does not belong in a URL: use FTP_PASSWORD, or ftp_password in a job",
        ));
    }
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
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| bad(&format!("{p:?} is not a port number")))
        })
        .transpose()?;
    if host.is_empty() || user.is_empty() {
        return Err(bad("no host or no user name"));
    }
    // `/~/rel` is relative to the login folder (as `describe` writes it); anything else is absolute.
    let path = percent_decode(path);
    let container = match path.strip_prefix("/~") {
        Some(rel) => rel.trim_start_matches('/').to_string(),
        None if path.is_empty() => String::new(),
        None => path,
    };
    let mut spec = StorageSpec {
        storage: Some(scheme.to_string()),
        container: Some(container),
        ftp_host: Some(host.to_string()),
        ftp_port: port,
        ftp_username: Some(percent_decode(user)),
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
    /// Reads a storage URL: a path or `file://PATH`, or
    /// `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&style=virtual]`.
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
            "ftp" | "ftps" => ftp_url(url, scheme, rest),
            "swift" | "ssh" | "sftp" => Err(Error::unsupported(format!(
                "{scheme}:// storages in this release"
            ))),
            other => Err(bad(&format!("unknown scheme {other}://"))),
        }
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
            "local" | "s3" => Ok(()),
            other => Err(Error::unsupported(format!(
                "storage {other:?} in this release (local, s3, ftp, ftps)"
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
            StorageSpec::from_url("swift://c"),
            Err(Error::Unsupported { .. })
        ));
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
