//! `ftp` and `ftps`: a folder on an FTP server (suppaftp), in passive mode, optionally over
//! explicit TLS.
//!
//! * Connections: an FTP control connection carries one transfer at a time, so the sink keeps
//!   a small pool (at most [`FtpOptions::max_connections`], 4 by default), opened lazily and
//!   reused. A connection that fails with a transient error (dropped, reset, timed out) is
//!   thrown away together with every idle one, so the next call connects again and
//!   [`Retrying`](super::Retrying) rides over a restart of the server. An idle connection is
//!   checked with `NOOP` before reuse.
//! * Passive mode only: `EPSV` when the server lists it in `FEAT`, else `PASV` (connecting to
//!   the control connection's address, not the one the server reports, which NAT gets wrong).
//!   Upstream falls back to active mode; this sink never opens a port for the server.
//! * Binary type (`TYPE I`) for every transfer and for `SIZE`.
//! * `ftps`: explicit TLS (`AUTH TLS`, `PBSZ 0`, `PROT P`: commands and data encrypted). The
//!   server's certificate is verified against the system's roots or, when given,
//!   [`FtpOptions::ca_file`]; a certificate that does not verify is refused, never accepted
//!   silently. Upstream's `ftp_certfile`/`ftp_keyfile` (which upstream stores but never uses)
//!   are a client certificate here.
//! * Atomic visibility: a put stores `.tmp-<random>` in the target's folder (`STOR`), then
//!   renames it into place (`RNFR`/`RNTO`); folders are made level by level (`MKD`). Readers
//!   never see a partial object, and listings skip `.tmp-` names.
//! * Create-only puts: FTP has no atomic "create if absent". The sink checks that the target is
//!   absent (`SIZE`) before the rename; two writers racing on the same new key may both
//!   succeed, the last rename winning. The repository puts create-only only `config` at
//!   `init` (two `init`s racing on one folder could both succeed, as on S3) and randomly named
//!   key files.
//! * A put cut off by a dropped connection can leave its `.tmp-` file on the server (never
//!   listed, never read; the connection that could remove it is gone).
//! * Durability: FTP has no fsync; an object is as durable as the server makes it before
//!   answering `226` to the upload.
//! * Ranged gets: `REST` + `RETR` from the range's start. When at most 1 MiB follows the range,
//!   the rest is read and dropped so that the connection stays usable; otherwise the
//!   connection is closed rather than aborted (`ABOR` races the server's own end of transfer,
//!   and the replies that follow cannot be told apart safely). Sizes come from `SIZE`;
//!   listings from `MLSD` when the server offers it, else from parsing `LIST`.
//! * Errors: `530` at login is [`Error::Permission`] naming `ftp_username`/`ftp_password`;
//!   `550` on a read is [`Error::NotFound`]; `452`/`552` are [`Error::NoSpace`]; refused, reset
//!   or timed-out connections and `421`/`425`/`426`/`450`/`451` are [`Error::Transient`].
//! * Secrets: the password never appears in `Debug`, errors or logs. suppaftp traces every
//!   command it sends, so the password is sent as a placeholder that only the encoder of the
//!   command line (which is not traced) replaces.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use suppaftp::FtpError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::{ByteStream, GetBody, ObjectMeta, Payload, PutMode, Sink, check_key, clamp};
use crate::error::{Error, Result};

mod listing;
mod pool;
mod reply;
mod tls;

use listing::parse_listing;
use pool::Conn;
use reply::{ftp_err, is_550, reply_code, reply_text};

/// How to reach a folder on an FTP server.
#[derive(Clone)]
pub struct FtpOptions {
    /// Upstream's `ftp_host`.
    pub host: String,
    /// Upstream's `ftp_port` (21).
    pub port: u16,
    /// Upstream's `ftp_username`.
    pub username: String,
    /// Upstream's `ftp_password`.
    pub password: String,
    /// The folder on the server (absolute, or relative to the login folder).
    pub path: String,
    /// `ftps`: explicit TLS (`AUTH TLS`) on the control and data connections.
    pub tls: bool,
    /// `ftps`: trust these CA certificates (PEM) instead of the system's roots (an extension,
    /// `ftp_ca_file`), for servers with a private CA or a self-signed certificate.
    pub ca_file: Option<PathBuf>,
    /// `ftps`: a client certificate chain (PEM), upstream's `ftp_certfile`; it may hold the key.
    pub cert_file: Option<PathBuf>,
    /// `ftps`: the client certificate's private key (PEM), upstream's `ftp_keyfile`.
    pub key_file: Option<PathBuf>,
    /// At most this many connections at once (4).
    pub max_connections: usize,
    /// How long one command, or one step of a transfer, may take before the connection is
    /// given up as transient (60 s).
    pub timeout: Duration,
}

impl Default for FtpOptions {
    fn default() -> Self {
        FtpOptions {
            host: String::new(),
            port: 21,
            username: String::new(),
            password: String::new(),
            path: String::new(),
            tls: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            max_connections: 4,
            timeout: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for FtpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FtpOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("path", &self.path)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// A repository in a folder on an FTP or FTPS server.
pub struct FtpSink {
    opts: FtpOptions,
    tls: Option<Arc<rustls::ClientConfig>>,
    idle: std::sync::Mutex<Vec<Conn>>,
    slots: Arc<Semaphore>,
}

impl fmt::Debug for FtpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FtpSink({})", self.describe())
    }
}

/// A ranged read reads and drops at most this many bytes after its range to keep the
/// connection; past it, the connection is closed instead.
const DRAIN_UP_TO: u64 = 1 << 20;

/// Joins folder and name with one `/`.
fn join(dir: &str, name: &str) -> String {
    match (dir, name) {
        ("", n) => n.to_string(),
        (d, "") => d.to_string(),
        (d, n) if d.ends_with('/') => format!("{d}{n}"),
        (d, n) => format!("{d}/{n}"),
    }
}

impl FtpSink {
    /// A sink; it connects on first use. Bad TLS files are reported here, naming the option.
    pub fn new(opts: FtpOptions) -> Result<Self> {
        if opts.host.is_empty() {
            return Err(Error::bad_input("ftp_host", "an ftp storage needs a host"));
        }
        if opts.username.is_empty() {
            return Err(Error::bad_input(
                "ftp_username",
                "an ftp storage needs a user name (anonymous for anonymous FTP)",
            ));
        }
        if opts.password.contains(['\r', '\n']) {
            return Err(Error::bad_input(
                "ftp_password",
                "a password cannot hold a line break",
            ));
        }
        let tls = if opts.tls {
            Some(tls::config(&opts)?)
        } else {
            if opts.ca_file.is_some() || opts.cert_file.is_some() || opts.key_file.is_some() {
                tracing::warn!(
                    host = %opts.host,
                    "ftp_ca_file, ftp_certfile and ftp_keyfile only apply to ftps: ignored for plain ftp"
                );
            }
            None
        };
        let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
        Ok(FtpSink {
            opts,
            tls,
            idle: std::sync::Mutex::new(Vec::new()),
            slots,
        })
    }

    fn scheme(&self) -> &'static str {
        if self.opts.tls { "ftps" } else { "ftp" }
    }

    fn endpoint(&self) -> String {
        format!(
            "{}://{}@{}:{}",
            self.scheme(),
            self.opts.username,
            self.opts.host,
            self.opts.port
        )
    }

    fn what(&self, key: &str) -> String {
        format!("{}/{key}", self.describe())
    }

    /// The sink's folder on the server, absolute.
    fn root(&self, c: &Conn) -> String {
        let path = self.opts.path.trim_end_matches('/');
        if path.starts_with('/') {
            path.to_string()
        } else if self.opts.path.starts_with('/') {
            "/".to_string()
        } else {
            join(&c.home, path)
        }
    }

    fn check(&self, key: &str) -> Result<()> {
        check_key(key)?;
        if key.contains(['\r', '\n']) {
            return Err(Error::bad_input(
                "object key",
                format!("{key:?}: FTP cannot carry line breaks in names"),
            ));
        }
        Ok(())
    }

    /// Makes `dir` and its parents, level by level; levels that exist are fine.
    async fn mkdirs(&self, c: &mut Conn, dir: &str) -> Result<()> {
        let mut at = String::new();
        for part in dir.split('/') {
            if part.is_empty() {
                if at.is_empty() {
                    at.push('/');
                }
                continue;
            }
            at = join(&at, part);
            // A refusal (the folder exists, or may not be made) is checked below; a dropped
            // connection is not.
            if let Err(e) = self.t(c.ftp.mkdir(&at)).await
                && reply_code(&e).is_none()
            {
                return Err(ftp_err(e, &at));
            }
        }
        // Whatever MKD said, the folder must now be there.
        let what = format!("{}{dir}", self.endpoint());
        self.t(c.ftp.cwd(dir)).await.map_err(|e| {
            if is_550(&e) {
                Error::Permission {
                    what,
                    source: std::io::Error::other(format!(
                        "the folder cannot be made or entered ({})",
                        reply_text(&e)
                    )),
                }
            } else {
                ftp_err(e, &what)
            }
        })
    }

    async fn size_of(&self, c: &mut Conn, path: &str, what: &str) -> Result<Option<u64>> {
        match self.t(c.ftp.size(path)).await {
            Ok(n) => Ok(Some(n as u64)),
            Err(e) if is_550(&e) => Ok(None),
            Err(e) => Err(ftp_err(e, what)),
        }
    }

    /// Sends `body` into a temporary file while it is read, then renames it into place.
    /// Returns the size.
    async fn put_on(
        &self,
        c: &mut Conn,
        key: &str,
        mut body: ByteStream,
        mode: PutMode,
    ) -> Result<u64> {
        let what = self.what(key);
        let target = join(&self.root(c), key);
        let dir = target.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let dir = if dir.is_empty() { "/" } else { dir }.to_string();
        if mode == PutMode::Create && self.size_of(c, &target, &what).await?.is_some() {
            return Err(Error::AlreadyExists { what });
        }
        let mut suffix = [0u8; 8];
        crate::crypto::random_bytes(&mut suffix);
        let tmp = join(&dir, &format!(".tmp-{}", hex::encode(suffix)));
        let mut upload = match self.t(c.ftp.put_with_stream(&tmp)).await {
            Ok(u) => u,
            Err(e) if reply_code(&e).is_some_and(|c| c == 550 || c == 553) => {
                self.mkdirs(c, &dir).await?;
                self.t(c.ftp.put_with_stream(&tmp))
                    .await
                    .map_err(|e| ftp_err(e, &what))?
            }
            Err(e) => return Err(ftp_err(e, &what)),
        };
        let mut len = 0u64;
        // An error of the body itself (not of the connection): the transfer is ended cleanly,
        // so that the connection stays usable, and the temporary file removed.
        let mut body_failed = None;
        let sent: Result<()> = async {
            while let Some(part) = body.next().await {
                let part = match part {
                    Ok(p) => p,
                    Err(e) => {
                        body_failed = Some(e);
                        break;
                    }
                };
                len += part.len() as u64;
                for piece in part.chunks(1 << 20) {
                    match tokio::time::timeout(self.opts.timeout, upload.write_all(piece)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(ftp_err(FtpError::ConnectionError(e), &what)),
                        Err(_) => {
                            return Err(ftp_err(
                                FtpError::ConnectionError(std::io::ErrorKind::TimedOut.into()),
                                &what,
                            ));
                        }
                    }
                }
            }
            let _ = upload.flush().await;
            self.t(upload.finish()).await.map_err(|e| ftp_err(e, &what))
        }
        .await;
        let sent = match (sent, body_failed) {
            (Ok(()), Some(e)) => Err(e),
            (sent, _) => sent,
        };
        let placed = match sent {
            Err(e) => Err(e),
            Ok(()) => {
                if mode == PutMode::Create && self.size_of(c, &target, &what).await?.is_some() {
                    Err(Error::AlreadyExists { what: what.clone() })
                } else {
                    match self.t(c.ftp.rename(&tmp, &target)).await {
                        Ok(()) => Ok(()),
                        // Servers whose rename does not replace: remove, then rename. The
                        // object is absent for a moment, never partial.
                        Err(e) if reply_code(&e).is_some() && mode == PutMode::Overwrite => {
                            let _ = self.t(c.ftp.rm(&target)).await;
                            self.t(c.ftp.rename(&tmp, &target))
                                .await
                                .map_err(|e| ftp_err(e, &what))
                        }
                        Err(e) => Err(ftp_err(e, &what)),
                    }
                }
            }
        };
        if placed.is_err() && !matches!(placed, Err(Error::Transient { .. })) {
            let _ = self.t(c.ftp.rm(&tmp)).await;
        }
        placed.map(|()| len)
    }

    async fn get_on(&self, c: &mut Conn, key: &str, range: Option<Range<u64>>) -> Result<GetBody> {
        let what = self.what(key);
        let path = join(&self.root(c), key);
        let Some(size) = self.size_of(c, &path, &what).await? else {
            return Err(Error::not_found(what));
        };
        let r = clamp(range, size);
        let len = (r.end - r.start) as usize;
        if len == 0 {
            return Ok(GetBody::Bytes(bytes::Bytes::new()));
        }
        if r.start > 0 {
            self.t(c.ftp.resume_transfer(r.start as usize))
                .await
                .map_err(|e| ftp_err(e, &what))?;
        }
        let mut download = match self.t(c.ftp.retr_as_stream(&path)).await {
            Ok(d) => d,
            Err(e) if is_550(&e) => return Err(Error::not_found(what)),
            Err(e) => return Err(ftp_err(e, &what)),
        };
        let mut buf = crate::buffer::IoBuf::new(len);
        let mut filled = 0;
        while filled < len {
            let end = (filled + (1 << 20)).min(len);
            match tokio::time::timeout(
                self.opts.timeout,
                download.read(&mut buf.as_mut()[filled..end]),
            )
            .await
            {
                Ok(Ok(0)) => {
                    // The object shrank (replaced) between SIZE and RETR.
                    return Err(Error::Transient {
                        what,
                        source: std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the object changed while it was read",
                        ),
                    });
                }
                Ok(Ok(n)) => filled += n,
                Ok(Err(e)) => return Err(ftp_err(FtpError::ConnectionError(e), &what)),
                Err(_) => {
                    return Err(ftp_err(
                        FtpError::ConnectionError(std::io::ErrorKind::TimedOut.into()),
                        &what,
                    ));
                }
            }
        }
        // The rest of the object: read and dropped when short, else the connection is closed
        // (ABOR races the server's end of transfer: its replies cannot be told apart safely).
        let rest = size - r.end;
        let done = if rest == 0 {
            self.t(download.finish()).await.is_ok()
        } else if rest <= DRAIN_UP_TO {
            let drained = tokio::time::timeout(
                self.opts.timeout,
                tokio::io::copy(&mut download, &mut tokio::io::sink()),
            )
            .await;
            matches!(drained, Ok(Ok(_))) && self.t(download.finish()).await.is_ok()
        } else {
            false
        };
        if !done {
            // The bytes are complete; only the connection's state is unknown.
            c.broken = true;
        }
        Ok(GetBody::Bytes(buf.freeze(len)))
    }

    /// The entries of one folder: `(name, is_dir, size)`, or `None` if it does not exist.
    async fn read_dir(
        &self,
        c: &mut Conn,
        dir: &str,
        what: &str,
    ) -> Result<Option<Vec<(String, bool, u64)>>> {
        match self.t(c.ftp.cwd(dir)).await {
            Ok(()) => {}
            Err(e) if is_550(&e) => return Ok(None),
            Err(e) => return Err(ftp_err(e, what)),
        }
        let lines = if c.mlsd {
            self.t(c.ftp.mlsd(None)).await
        } else {
            self.t(c.ftp.list(None)).await
        }
        .map_err(|e| ftp_err(e, what))?;
        let mut out = Vec::with_capacity(lines.len());
        for line in lines {
            if let Some(entry) = parse_listing(&line, c.mlsd).map_err(|why| Error::Io {
                what: what.to_string(),
                source: std::io::Error::other(format!("{why}: {line:?}")),
            })? {
                out.push(entry);
            }
        }
        Ok(Some(out))
    }

    async fn list_on(&self, c: &mut Conn, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let what = self.what(prefix);
        let root = self.root(c);
        let base = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let mut out = Vec::new();
        let mut stack = vec![base.to_string()];
        while let Some(dir) = stack.pop() {
            let Some(entries) = self.read_dir(c, &join(&root, &dir), &what).await? else {
                continue;
            };
            for (name, is_dir, size) in entries {
                if name.starts_with(".tmp-") || name == "." || name == ".." {
                    continue;
                }
                let key = join(&dir, &name);
                if is_dir {
                    if key.starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                        stack.push(key);
                    }
                } else if key.starts_with(prefix) {
                    out.push(ObjectMeta { key, size });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete_on(&self, c: &mut Conn, key: &str) -> Result<()> {
        let what = self.what(key);
        let path = join(&self.root(c), key);
        match self.t(c.ftp.rm(&path)).await {
            Ok(()) => Ok(()),
            // 550 is both "no such file" and "not allowed": missing is fine, refused is not.
            Err(e) if is_550(&e) => match self.size_of(c, &path, &what).await? {
                None => Ok(()),
                Some(_) => Err(Error::Permission {
                    what,
                    source: std::io::Error::other(reply_text(&e)),
                }),
            },
            Err(e) => Err(ftp_err(e, &what)),
        }
    }

    async fn head_on(&self, c: &mut Conn, key: &str) -> Result<ObjectMeta> {
        let what = self.what(key);
        let path = join(&self.root(c), key);
        match self.size_of(c, &path, &what).await? {
            Some(size) => Ok(ObjectMeta {
                key: key.to_string(),
                size,
            }),
            None => Err(Error::not_found(what)),
        }
    }
}

#[async_trait]
impl Sink for FtpSink {
    fn describe(&self) -> String {
        let root = self.opts.path.trim_end_matches('/');
        match (self.opts.path.starts_with('/'), root.is_empty()) {
            (true, true) => format!("{}/", self.endpoint()),
            (true, false) => format!("{}{root}", self.endpoint()),
            (false, _) => format!("{}/~/{root}", self.endpoint()),
        }
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<()> {
        let parts = payload.parts().to_vec();
        let body = futures::stream::iter(parts.into_iter().map(Ok)).boxed();
        self.put_stream(key, body, mode).await.map(|_| ())
    }

    /// Sent while the body is read: nothing of it is held beyond the piece in hand.
    async fn put_stream(&self, key: &str, body: ByteStream, mode: PutMode) -> Result<u64> {
        self.check(key)?;
        let mut lease = self.lease().await?;
        let res = self.put_on(&mut lease.conn, key, body, mode).await;
        self.give_back(lease, &res);
        res
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetBody> {
        self.check(key)?;
        let mut lease = self.lease().await?;
        let res = self.get_on(&mut lease.conn, key, range).await;
        self.give_back(lease, &res);
        res
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        if prefix.contains(['\r', '\n']) {
            return Ok(Vec::new());
        }
        let mut lease = self.lease().await?;
        let res = self.list_on(&mut lease.conn, prefix).await;
        self.give_back(lease, &res);
        res
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.check(key)?;
        let mut lease = self.lease().await?;
        let res = self.delete_on(&mut lease.conn, key).await;
        self.give_back(lease, &res);
        res
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.check(key)?;
        let mut lease = self.lease().await?;
        let res = self.head_on(&mut lease.conn, key).await;
        self.give_back(lease, &res);
        res
    }

    async fn prepare(&self) -> Result<()> {
        let mut lease = self.lease().await?;
        let root = self.root(&lease.conn);
        let res = self.mkdirs(&mut lease.conn, &root).await;
        self.give_back(lease, &res);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let opts = FtpOptions {
            host: "h".into(),
            username: "u".into(),
            password: "hunter2".into(),
            ..FtpOptions::default()
        };
        let sink = FtpSink::new(opts.clone()).unwrap();
        assert!(!format!("{opts:?} {sink:?} {}", sink.describe()).contains("hunter2"));
        assert_eq!(sink.describe(), "ftp://u@h:21/~/");
        for (path, shown) in [
            ("/", "ftp://u@h:21/"),
            ("/a/b/", "ftp://u@h:21/a/b"),
            ("r", "ftp://u@h:21/~/r"),
        ] {
            let o = FtpOptions {
                path: path.into(),
                ..opts.clone()
            };
            assert_eq!(FtpSink::new(o).unwrap().describe(), shown);
        }
    }

    #[test]
    fn options_are_checked() {
        let ok = FtpOptions {
            host: "h".into(),
            username: "u".into(),
            ..FtpOptions::default()
        };
        assert!(
            FtpSink::new(FtpOptions {
                host: String::new(),
                ..ok.clone()
            })
            .is_err()
        );
        let e = FtpSink::new(FtpOptions {
            username: String::new(),
            ..ok.clone()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("ftp_username"), "{e}");
        let e = FtpSink::new(FtpOptions {
            tls: true,
            ca_file: Some("/no/such/ca.pem".into()),
            ..ok.clone()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("ftp_ca_file"), "{e}");
        let e = FtpSink::new(FtpOptions {
            tls: true,
            key_file: Some("/no/such/key.pem".into()),
            ..ok
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("ftp_certfile"), "{e}");
    }
}
