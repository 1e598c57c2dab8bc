//! FTP replies and errors: sorting a failure by what the caller does about it, and sending
//! the password without suppaftp's command trace ever holding it.

use std::fmt;

use suppaftp::{Encoding, FtpError, Utf8Encoding};

use super::tls;
use crate::error::Error;

/// Sends the password in place of a placeholder, so that suppaftp's trace of the command
/// line shows the placeholder only.
pub(super) struct LoginEncoding {
    pub(super) password: String,
}

/// What suppaftp is given, and traces, as the password.
pub(super) const PLACEHOLDER: &str = "<password>";

impl fmt::Debug for LoginEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginEncoding(<redacted>)")
    }
}

impl Encoding for LoginEncoding {
    fn decode(&self, bytes: &[u8]) -> String {
        Utf8Encoding.decode(bytes)
    }

    fn encode(&self, text: &str) -> std::io::Result<Vec<u8>> {
        let pass = text
            .strip_prefix("PASS ")
            .and_then(|t| t.strip_suffix("\r\n"));
        if pass == Some(PLACEHOLDER) {
            Ok(format!("PASS {}\r\n", self.password).into_bytes())
        } else {
            Utf8Encoding.encode(text)
        }
    }
}

/// The reply code of a refused command (suppaftp maps codes it does not know to 0).
pub(super) fn reply_code(e: &FtpError) -> Option<u32> {
    match e {
        FtpError::UnexpectedResponse(r) => r
            .body
            .get(..3)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse().ok())
            .or(Some(r.status.code())),
        _ => None,
    }
}

pub(super) fn reply_text(e: &FtpError) -> String {
    match e {
        FtpError::UnexpectedResponse(r) => String::from_utf8_lossy(&r.body).trim_end().to_string(),
        other => other.to_string(),
    }
}

/// Sorts an FTP failure by what the caller does about it.
pub(super) fn ftp_err(e: FtpError, what: &str) -> Error {
    let what = what.to_string();
    let other = |text: String| std::io::Error::other(text);
    match e {
        FtpError::ConnectionError(io) if io.kind() == std::io::ErrorKind::InvalidInput => {
            Error::bad_input("object key", format!("{what}: {io}"))
        }
        // TLS 1.3 reports a refused client certificate after the handshake, on the first read.
        FtpError::ConnectionError(io) => match tls::certificate_problem(&io.to_string()) {
            Some(why) => Error::Permission {
                what,
                source: other(why),
            },
            None => Error::Transient { what, source: io },
        },
        FtpError::SecureError(text) => match tls::certificate_problem(&text) {
            Some(why) => Error::Permission {
                what,
                source: other(why),
            },
            None => Error::Transient {
                what,
                source: other(format!("TLS: {text}")),
            },
        },
        ref e @ FtpError::UnexpectedResponse(_) => {
            let text = reply_text(e);
            match reply_code(e).unwrap_or(0) {
                421 | 425 | 426 | 450 | 451 => Error::Transient {
                    what,
                    source: other(text),
                },
                452 | 552 => Error::NoSpace { what },
                530 | 532 => Error::Permission {
                    what,
                    source: other(text),
                },
                500 | 502 | 504 => Error::Unsupported {
                    what: format!("{what}: the server answered {text}"),
                },
                _ => Error::Io {
                    what,
                    source: other(text),
                },
            }
        }
        other_err => Error::Io {
            what,
            source: other(other_err.to_string()),
        },
    }
}

pub(super) fn is_550(e: &FtpError) -> bool {
    reply_code(e) == Some(550)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_only_in_the_encoded_line() {
        let enc = LoginEncoding {
            password: "hunter2".into(),
        };
        assert_eq!(
            enc.encode(&format!("PASS {PLACEHOLDER}\r\n")).unwrap(),
            b"PASS hunter2\r\n"
        );
        assert_eq!(enc.encode("USER me\r\n").unwrap(), b"USER me\r\n");
        assert!(!format!("{enc:?}").contains("hunter2"));
    }

    #[test]
    fn reply_codes_sort_errors() {
        let reply = |text: &str| {
            FtpError::UnexpectedResponse(suppaftp::types::Response::new(
                suppaftp::Status::from(text[..3].parse::<u32>().unwrap()),
                text.as_bytes().to_vec(),
            ))
        };
        assert!(matches!(
            ftp_err(reply("530 Login incorrect.\r\n"), "x"),
            Error::Permission { .. }
        ));
        assert!(ftp_err(reply("421 Timeout.\r\n"), "x").is_transient());
        assert!(ftp_err(reply("426 Failure writing network stream.\r\n"), "x").is_transient());
        assert!(matches!(
            ftp_err(reply("552 Quota exceeded.\r\n"), "x"),
            Error::NoSpace { .. }
        ));
        assert_eq!(
            reply_code(&reply("534 Policy requires SSL.\r\n")),
            Some(534)
        );
        assert!(
            ftp_err(
                FtpError::ConnectionError(std::io::ErrorKind::ConnectionReset.into()),
                "x"
            )
            .is_transient()
        );
    }
}
