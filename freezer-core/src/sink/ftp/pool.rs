//! The connection pool: at most `max_connections` logged-in control connections, opened
//! lazily, reused while healthy, and all thrown away after a transient failure so that the
//! next call connects again.

use std::time::{Duration, Instant};

use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode, Utf8Encoding};
use tokio::sync::OwnedSemaphorePermit;

use super::reply::{LoginEncoding, PLACEHOLDER, ftp_err, reply_code, reply_text};
use super::{FtpSink, tls};
use crate::error::{Error, Result};

type Ftp = AsyncRustlsFtpStream;

/// One logged-in control connection.
pub(super) struct Conn {
    pub(super) ftp: Ftp,
    /// The login folder (`PWD`), for relative paths.
    pub(super) home: String,
    /// The server offers `MLSD`.
    pub(super) mlsd: bool,
    pub(super) idle_since: Instant,
    /// Set when the connection is in an unknown state (a ranged read left a transfer
    /// unfinished): never reused.
    pub(super) broken: bool,
}

/// A borrowed connection and its slot in the pool.
pub(super) struct Lease {
    pub(super) conn: Conn,
    _permit: OwnedSemaphorePermit,
}

impl FtpSink {
    /// Runs one command under the timeout; running out of time is a dropped connection.
    pub(super) async fn t<T>(
        &self,
        fut: impl Future<Output = suppaftp::FtpResult<T>>,
    ) -> suppaftp::FtpResult<T> {
        match tokio::time::timeout(self.opts.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(FtpError::ConnectionError(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {:?}", self.opts.timeout),
            ))),
        }
    }

    /// Connects, secures (ftps), logs in, selects binary type and passive mode.
    async fn connect(&self) -> Result<Conn> {
        let what = self.endpoint();
        let addr = (self.opts.host.as_str(), self.opts.port);
        let tcp =
            match tokio::time::timeout(self.opts.timeout, tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(Error::Transient { what, source: e }),
                Err(_) => {
                    return Err(Error::Transient {
                        what,
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connect timed out",
                        ),
                    });
                }
            };
        let _ = tcp.set_nodelay(true);
        let mut ftp = self
            .t(Ftp::connect_with_stream(tcp))
            .await
            .map_err(|e| ftp_err(e, &what))?;
        if let Some(tls) = &self.tls {
            let connector = AsyncRustlsConnector::from(tls::connector(tls));
            ftp = self
                .t(ftp.into_secure(connector, &self.opts.host))
                .await
                .map_err(|e| match reply_code(&e) {
                    Some(c) if c >= 500 => Error::Unsupported {
                        what: format!(
                            "{what}: the server refused TLS ({}); is it an ftp:// server?",
                            reply_text(&e)
                        ),
                    },
                    _ => ftp_err(e, &what),
                })?;
        }
        ftp.set_encoding(LoginEncoding {
            password: self.opts.password.clone(),
        })
        .await;
        let login = self
            .t(ftp.login(self.opts.username.as_str(), PLACEHOLDER))
            .await;
        ftp.set_encoding(Utf8Encoding).await;
        if let Err(e) = login {
            return Err(match reply_code(&e) {
                Some(530) | Some(331) | Some(332) => Error::Permission {
                    what,
                    source: std::io::Error::other(format!(
                        "login refused ({}): check ftp_username and ftp_password",
                        reply_text(&e)
                    )),
                },
                _ => ftp_err(e, &what),
            });
        }
        self.t(ftp.transfer_type(FileType::Binary))
            .await
            .map_err(|e| ftp_err(e, &what))?;
        let features = self.t(ftp.feat()).await.unwrap_or_default();
        let has = |name: &str| features.keys().any(|k| k.eq_ignore_ascii_case(name));
        ftp.set_mode(if has("EPSV") {
            Mode::ExtendedPassive
        } else {
            Mode::Passive
        });
        ftp.set_passive_nat_workaround(true);
        if has("UTF8") {
            let _ = self.t(ftp.opts("UTF8", Some("ON"))).await;
        }
        let home = self.t(ftp.pwd()).await.unwrap_or_else(|_| "/".into());
        Ok(Conn {
            ftp,
            home,
            mlsd: has("MLST"),
            idle_since: Instant::now(),
            broken: false,
        })
    }

    /// A connection of the pool, connecting when none is idle.
    pub(super) async fn lease(&self) -> Result<Lease> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Cancelled)?;
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(mut conn) = idle else {
                let conn = self.connect().await?;
                return Ok(Lease {
                    conn,
                    _permit: permit,
                });
            };
            if conn.idle_since.elapsed() > Duration::from_secs(10)
                && self.t(conn.ftp.noop()).await.is_err()
            {
                continue;
            }
            return Ok(Lease {
                conn,
                _permit: permit,
            });
        }
    }

    /// Hands a connection back after an operation: kept when it is healthy, dropped (with
    /// every idle one) after a transient failure.
    pub(super) fn give_back<T>(&self, mut lease: Lease, res: &Result<T>) {
        if matches!(res, Err(Error::Transient { .. })) {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
            return;
        }
        if lease.conn.broken {
            return;
        }
        lease.conn.idle_since = Instant::now();
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lease.conn);
    }
}
