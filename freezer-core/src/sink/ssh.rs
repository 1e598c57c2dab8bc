//! `ssh`: a folder on a remote host, over SFTP (russh).
//!
//! * The host key is checked against a known_hosts file; a host that is not in it is refused
//!   unless [`SshOptions::accept_new_host_key`] is set (then its key is learned); a changed key
//!   is always refused. Upstream's agent accepts every key silently.
//! * Authentication by key file (upstream's `ssh_key`, default `~/.ssh/id_rsa`) or password.
//! * Puts write `.tmp-*` beside the target, fsync it (`fsync@openssh.com`), close it, then
//!   rename it into place; a create-only put hard-links it instead (`hardlink@openssh.com`),
//!   which fails if the target exists. Readers never see a partial object.
//! * Keepalives every 15 s; a dropped connection is reported as transient and the next call
//!   connects again, so [`Retrying`](super::Retrying) rides over a restart of the server.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{OpenFlags, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

use super::{ByteStream, GetBody, ObjectMeta, Payload, PutMode, Sink, Temporary, check_key, clamp};
use crate::error::{Error, Result};

/// How to reach a folder over SSH.
#[derive(Clone, Default)]
pub struct SshOptions {
    /// Upstream's `ssh_host`.
    pub host: String,
    /// Upstream's `ssh_port` (22).
    pub port: u16,
    /// Upstream's `ssh_username`.
    pub username: String,
    /// Upstream's `ssh_key`: a private key file (OpenSSH format).
    pub key_file: Option<PathBuf>,
    /// Upstream's `ssh_password`, used when no key file is given.
    pub password: Option<String>,
    /// The folder on the remote host (absolute, or relative to the login folder).
    pub path: String,
    /// The known_hosts file (`~/.ssh/known_hosts`, resolved by the front-end).
    pub known_hosts: PathBuf,
    /// Accept and remember a host key that known_hosts does not hold (never a changed one).
    pub accept_new_host_key: bool,
}

impl fmt::Debug for SshOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("key_file", &self.key_file)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

struct Checker {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    accept_new: bool,
    /// Why the key was refused, for the error message.
    refusal: Arc<std::sync::Mutex<Option<String>>>,
    /// Told when the connection ends.
    closed: tokio::sync::watch::Sender<bool>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> std::result::Result<(), Self::Error> {
        let _ = self.closed.send(true);
        match reason {
            client::DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            client::DisconnectReason::Error(e) => Err(e),
        }
    }

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        // Host certificates are checked by the key they certify, like OpenSSH without a CA.
        let key = &offered.public_key();
        let refuse = |why: String| {
            *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            Ok(false)
        };
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => Ok(true),
            Ok(false) if self.accept_new => {
                if let Some(dir) = self.known_hosts.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                match russh::keys::known_hosts::learn_known_hosts_path(
                    &self.host,
                    self.port,
                    key,
                    &self.known_hosts,
                ) {
                    Ok(()) => {
                        tracing::warn!(host = %self.host, "accepted a new host key and added it to {}", self.known_hosts.display());
                        Ok(true)
                    }
                    Err(e) => refuse(format!(
                        "could not record the new host key in {}: {e}",
                        self.known_hosts.display()
                    )),
                }
            }
            Ok(false) => refuse(format!(
                "the host key of {}:{} is not in {} (add it, e.g. with ssh-keyscan, or accept it once with --accept-new-host-key or ssh_accept_new_host_key)",
                self.host,
                self.port,
                self.known_hosts.display()
            )),
            Err(russh::keys::Error::KeyChanged { line }) => refuse(format!(
                "the host key of {}:{} CHANGED (known_hosts line {line}): someone may be impersonating the host",
                self.host, self.port
            )),
            Err(e) => refuse(format!("known_hosts {}: {e}", self.known_hosts.display())),
        }
    }
}

struct Conn {
    _session: client::Handle<Checker>,
    sftp: SftpSession,
    /// Becomes true when the connection ends: requests in flight then fail at once instead
    /// of waiting for their timeout.
    closed: tokio::sync::watch::Receiver<bool>,
}

/// A repository in a folder on a remote host, over SFTP.
pub struct SshSink {
    opts: SshOptions,
    /// A few connections used in turn: one SSH connection encrypts on one core and carries
    /// one flow-controlled channel, several spread the work.
    conns: Vec<Mutex<Option<Arc<Conn>>>>,
    next: std::sync::atomic::AtomicUsize,
    /// Held while connecting when a new host key may be learned: learned once, not per
    /// connection.
    learning: Mutex<()>,
}

impl fmt::Debug for SshSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SshSink({})", self.describe())
    }
}

fn sftp_err(e: SftpError, what: &str) -> Error {
    let what = what.to_string();
    match e {
        SftpError::Status(s) => match s.status_code {
            StatusCode::NoSuchFile => Error::NotFound { what },
            StatusCode::PermissionDenied => Error::Permission {
                what,
                source: std::io::Error::other(s.error_message),
            },
            StatusCode::NoConnection | StatusCode::ConnectionLost => Error::Transient {
                what,
                source: std::io::Error::other(s.error_message),
            },
            StatusCode::OpUnsupported => Error::Unsupported {
                what: format!("{what}: {}", s.error_message),
            },
            _ => Error::Io {
                what,
                source: std::io::Error::other(format!("{}: {}", s.status_code, s.error_message)),
            },
        },
        other => Error::Transient {
            what,
            source: std::io::Error::other(other.to_string()),
        },
    }
}

fn io_err(e: std::io::Error, what: &str) -> Error {
    let text = e.to_string().to_ascii_lowercase();
    if text.contains("no such file") {
        return Error::not_found(what);
    }
    if text.contains("permission denied") {
        return Error::Permission {
            what: what.to_string(),
            source: e,
        };
    }
    if text.contains("failure") || text.contains("bad message") {
        return Error::io(what, e);
    }
    Error::Transient {
        what: what.to_string(),
        source: e,
    }
}

/// Connections per sink.
const CONNECTIONS: usize = 4;

impl SshSink {
    /// A sink; it connects on first use.
    pub fn new(opts: SshOptions) -> Result<Self> {
        if opts.host.is_empty() {
            return Err(Error::bad_input("ssh_host", "an ssh storage needs a host"));
        }
        if opts.username.is_empty() {
            return Err(Error::bad_input(
                "ssh_username",
                "an ssh storage needs a user name",
            ));
        }
        if opts.key_file.is_none() && opts.password.is_none() {
            return Err(Error::bad_input(
                "ssh_key",
                "give a key file (ssh_key) or a password (ssh_password)",
            ));
        }
        Ok(SshSink {
            opts,
            conns: (0..CONNECTIONS).map(|_| Mutex::new(None)).collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
            learning: Mutex::new(()),
        })
    }

    /// Every file under `prefix` with its size and modification time: the objects, or with
    /// `temporaries` the `.tmp-*` leftovers instead, sorted by key.
    async fn walk(
        &self,
        prefix: &str,
        temporaries: bool,
    ) -> Result<Vec<(String, u64, Option<u32>)>> {
        let base = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let root = self.opts.path.trim_end_matches('/').to_string();
        let what = self.what(prefix);
        let prefix = prefix.to_string();
        let base = base.to_string();
        self.with(|c| async move {
            let mut out = Vec::new();
            let mut stack = vec![base];
            while let Some(dir) = stack.pop() {
                let remote = match (root.is_empty(), dir.is_empty()) {
                    (true, true) => ".".to_string(),
                    (true, false) => dir.clone(),
                    (false, true) => root.clone(),
                    (false, false) => format!("{root}/{dir}"),
                };
                let entries = match c.sftp.read_dir(remote).await {
                    Ok(e) => e,
                    Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {
                        continue;
                    }
                    Err(e) => return Err(sftp_err(e, &what)),
                };
                for entry in entries {
                    let name = entry.file_name();
                    if name == "." || name == ".." {
                        continue;
                    }
                    let is_tmp = name.starts_with(".tmp-");
                    let key = if dir.is_empty() {
                        name.clone()
                    } else {
                        format!("{dir}/{name}")
                    };
                    let meta = entry.metadata();
                    if meta.is_dir() {
                        if key.starts_with(&prefix) || prefix.starts_with(&format!("{key}/")) {
                            stack.push(key);
                        }
                    } else if is_tmp == temporaries && key.starts_with(&prefix) {
                        out.push((key, meta.size.unwrap_or(0), meta.mtime));
                    }
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
        .await
    }

    fn what(&self, key: &str) -> String {
        format!("{}/{key}", self.describe())
    }

    fn remote(&self, key: &str) -> Result<String> {
        check_key(key)?;
        let root = self.opts.path.trim_end_matches('/');
        Ok(if root.is_empty() {
            key.to_string()
        } else {
            format!("{root}/{key}")
        })
    }

    async fn connect(&self) -> Result<Conn> {
        let what = format!(
            "ssh {}@{}:{}",
            self.opts.username, self.opts.host, self.opts.port
        );
        let refusal = Arc::new(std::sync::Mutex::new(None));
        let (closed_tx, closed) = tokio::sync::watch::channel(false);
        let checker = Checker {
            closed: closed_tx,
            host: self.opts.host.clone(),
            port: self.opts.port,
            known_hosts: self.opts.known_hosts.clone(),
            accept_new: self.opts.accept_new_host_key,
            refusal: refusal.clone(),
        };
        let config = Arc::new(client::Config {
            // AES-GCM first: with AES instructions it costs a fraction of ChaCha20-Poly1305.
            preferred: russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(&[
                    russh::cipher::AES_256_GCM,
                    russh::cipher::AES_128_GCM,
                    russh::cipher::CHACHA20_POLY1305,
                    russh::cipher::AES_256_CTR,
                ]),
                ..Default::default()
            },
            window_size: 16 << 20,
            maximum_packet_size: 256 << 10,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            inactivity_timeout: Some(Duration::from_secs(300)),
            ..Default::default()
        });
        let mut session =
            match client::connect(config, (self.opts.host.as_str(), self.opts.port), checker).await
            {
                Ok(s) => s,
                Err(e) => {
                    if let Some(why) = refusal.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        return Err(Error::Permission {
                            what,
                            source: std::io::Error::other(why),
                        });
                    }
                    return Err(Error::Transient {
                        what,
                        source: std::io::Error::other(e.to_string()),
                    });
                }
            };
        let user = self.opts.username.clone();
        let ok = if let Some(path) = &self.opts.key_file {
            let key = russh::keys::load_secret_key(path, None)
                .map_err(|e| Error::bad_input("ssh_key", format!("{}: {e}", path.display())))?;
            let hash = session
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten();
            session
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                .await
                .map_err(|e| Error::Transient {
                    what: what.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?
                .success()
        } else {
            let password = self.opts.password.clone().unwrap_or_default();
            session
                .authenticate_password(user, password)
                .await
                .map_err(|e| Error::Transient {
                    what: what.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?
                .success()
        };
        if !ok {
            return Err(Error::Permission {
                what,
                source: std::io::Error::other(
                    "authentication refused (check ssh_username and ssh_key or ssh_password)",
                ),
            });
        }
        let transient = |e: russh::Error| Error::Transient {
            what: what.clone(),
            source: std::io::Error::other(e.to_string()),
        };
        let channel = session.channel_open_session().await.map_err(transient)?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(transient)?;
        let sftp = SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| sftp_err(e, &what))?;
        sftp.set_timeout(120);
        Ok(Conn {
            _session: session,
            sftp,
            closed,
        })
    }

    /// The live connection of `slot`, connecting when there is none.
    async fn conn(&self, slot: usize) -> Result<Arc<Conn>> {
        let mut guard = self.conns[slot].lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let _learning = if self.opts.accept_new_host_key {
            Some(self.learning.lock().await)
        } else {
            None
        };
        let c = Arc::new(self.connect().await?);
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Runs `op` on the connection; a transient failure drops the connection so that the
    /// next call connects again.
    async fn with<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let slot = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.conns.len();
        let conn = self.conn(slot).await?;
        let mut closed = conn.closed.clone();
        let res = tokio::select! {
            res = op(conn.clone()) => res,
            _ = closed.wait_for(|c| *c) => Err(Error::Transient {
                what: self.describe(),
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the connection dropped",
                ),
            }),
        };
        if matches!(res, Err(Error::Transient { .. })) {
            let mut guard = self.conns[slot].lock().await;
            if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                *guard = None;
            }
        }
        res
    }

    async fn mkdirs(sftp: &SftpSession, dir: &str) -> Result<()> {
        let mut at = String::new();
        for part in dir.split('/') {
            if part.is_empty() {
                at.push('/');
                continue;
            }
            if !at.is_empty() && !at.ends_with('/') {
                at.push('/');
            }
            at.push_str(part);
            match sftp.create_dir(at.clone()).await {
                Ok(()) => {}
                Err(e) => {
                    // Exists already (the server says "failure"): fine if it is a folder.
                    match sftp.metadata(at.clone()).await {
                        Ok(m) if m.is_dir() => {}
                        _ => return Err(sftp_err(e, &at)),
                    }
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for SshSink {
    fn describe(&self) -> String {
        let root = self.opts.path.trim_end_matches('/');
        let sep = if root.starts_with('/') { "" } else { "/~/" };
        format!(
            "ssh://{}@{}:{}{sep}{root}",
            self.opts.username, self.opts.host, self.opts.port
        )
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<()> {
        let parts = payload.parts().to_vec();
        let body = futures::stream::iter(parts.into_iter().map(Ok)).boxed();
        self.put_stream(key, body, mode).await.map(|_| ())
    }

    /// Written into a temporary file while the body is read, then renamed (or linked, for a
    /// create-only put) into place; nothing of the body is held beyond the piece in hand.
    async fn put_stream(&self, key: &str, mut body: ByteStream, mode: PutMode) -> Result<u64> {
        let target = self.remote(key)?;
        let what = self.what(key);
        self.with(|c| async move {
            let dir = target
                .rsplit_once('/')
                .map(|(d, _)| d.to_string())
                .unwrap_or_default();
            let mut suffix = [0u8; 8];
            crate::crypto::random_bytes(&mut suffix);
            let tmp = if dir.is_empty() {
                format!(".tmp-{}", hex::encode(suffix))
            } else {
                format!("{dir}/.tmp-{}", hex::encode(suffix))
            };
            let flags =
                OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE | OpenFlags::EXCLUDE;
            let mut file = match c.sftp.open_with_flags(tmp.clone(), flags).await {
                Ok(f) => f,
                Err(SftpError::Status(s))
                    if s.status_code == StatusCode::NoSuchFile && !dir.is_empty() =>
                {
                    Self::mkdirs(&c.sftp, &dir).await?;
                    c.sftp
                        .open_with_flags(tmp.clone(), flags)
                        .await
                        .map_err(|e| sftp_err(e, &what))?
                }
                Err(e) => return Err(sftp_err(e, &what)),
            };
            let mut len = 0u64;
            let written: Result<()> = async {
                while let Some(piece) = body.next().await {
                    let piece = piece?;
                    file.write_all(&piece).await.map_err(|e| io_err(e, &what))?;
                    len += piece.len() as u64;
                }
                file.flush().await.map_err(|e| io_err(e, &what))?;
                file.sync_all().await.map_err(|e| sftp_err(e, &what))?;
                file.shutdown().await.map_err(|e| io_err(e, &what))
            }
            .await;
            let placed = match written {
                Err(e) => Err(e),
                Ok(()) => match mode {
                    PutMode::Create => match c.sftp.hardlink(tmp.clone(), target.clone()).await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(Error::unsupported(format!(
                            "{what}: the server lacks hardlink@openssh.com"
                        ))),
                        Err(e) => match c.sftp.metadata(target.clone()).await {
                            Ok(_) => Err(Error::AlreadyExists { what: what.clone() }),
                            Err(_) => Err(sftp_err(e, &what)),
                        },
                    },
                    PutMode::Overwrite => match c.sftp.rename(tmp.clone(), target.clone()).await {
                        Ok(()) => Ok(()),
                        // SFTP's rename does not replace (OpenSSH): remove, then rename. The
                        // object is absent for a moment, never partial.
                        Err(_) if c.sftp.metadata(target.clone()).await.is_ok() => {
                            c.sftp
                                .remove_file(target.clone())
                                .await
                                .map_err(|e| sftp_err(e, &what))?;
                            c.sftp
                                .rename(tmp.clone(), target.clone())
                                .await
                                .map_err(|e| sftp_err(e, &what))
                        }
                        Err(e) => Err(sftp_err(e, &what)),
                    },
                },
            };
            if placed.is_err() || mode == PutMode::Create {
                let _ = c.sftp.remove_file(tmp).await;
            }
            placed.map(|()| len)
        })
        .await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetBody> {
        let path = self.remote(key)?;
        let what = self.what(key);
        self.with(|c| async move {
            let mut file = c.sftp.open(path).await.map_err(|e| sftp_err(e, &what))?;
            let size = file
                .metadata()
                .await
                .map_err(|e| sftp_err(e, &what))?
                .size
                .unwrap_or(0);
            let r = clamp(range, size);
            let len = (r.end - r.start) as usize;
            let mut buf = crate::buffer::IoBuf::new(len);
            if len > 0 {
                file.seek(std::io::SeekFrom::Start(r.start))
                    .await
                    .map_err(|e| io_err(e, &what))?;
                file.read_exact(buf.as_mut())
                    .await
                    .map_err(|e| io_err(e, &what))?;
            }
            let _ = file.shutdown().await;
            Ok(GetBody::Bytes(buf.freeze(len)))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .walk(prefix, false)
            .await?
            .into_iter()
            .map(|(key, size, _)| ObjectMeta { key, size })
            .collect())
    }

    async fn list_temporaries(&self, prefix: &str) -> Result<Vec<Temporary>> {
        let mut out = Vec::new();
        for (key, size, mtime) in self.walk(prefix, true).await? {
            // Without a modification time its age is unknown: it may be a live write's.
            let Some(mtime) = mtime else { continue };
            let modified = jiff::Timestamp::from_second(i64::from(mtime))
                .map_err(|e| Error::io(self.what(&key), std::io::Error::other(e)))?;
            out.push(Temporary {
                key,
                size,
                modified,
            });
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.remote(key)?;
        let what = self.what(key);
        self.with(|c| async move {
            match c.sftp.remove_file(path).await {
                Ok(()) => Ok(()),
                Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(()),
                Err(e) => Err(sftp_err(e, &what)),
            }
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.remote(key)?;
        let what = self.what(key);
        let key = key.to_string();
        self.with(|c| async move {
            let m = c
                .sftp
                .metadata(path)
                .await
                .map_err(|e| sftp_err(e, &what))?;
            if m.is_dir() {
                return Err(Error::not_found(what));
            }
            Ok(ObjectMeta {
                key,
                size: m.size.unwrap_or(0),
            })
        })
        .await
    }

    async fn prepare(&self) -> Result<()> {
        let root = self.opts.path.trim_end_matches('/').to_string();
        if root.is_empty() {
            return Ok(());
        }
        self.with(|c| async move { Self::mkdirs(&c.sftp, &root).await })
            .await
    }
}
