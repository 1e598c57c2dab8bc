//! The one public error type of freezer-core.
//!
//! Variants are sorted by what a caller does about them, not by where they came from: a
//! missing thing, a thing that already exists, a wrong key, corrupt data, bad input, a
//! permission problem, a transient fault worth a retry, a full disk, a lock held by someone
//! else, something unsupported. Every message names the object, path or field concerned.
//! This module must never hide the cause: the source error stays attached.

use std::fmt;
use std::io;

/// The result type of freezer-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, sorted by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A repository, object, snapshot, key or path does not exist.
    #[error("{what} not found")]
    NotFound {
        /// The missing thing, named for a human.
        what: String,
    },
    /// Something that must be created already exists.
    #[error("{what} already exists")]
    AlreadyExists {
        /// The existing thing.
        what: String,
    },
    /// No key of the repository opens with the passphrase given, or one is missing.
    #[error("{what}")]
    WrongKey {
        /// What could not be opened and why.
        what: String,
    },
    /// Stored data failed authentication, did not decode or did not match its id.
    #[error("{what} is corrupt: {detail}")]
    Corrupt {
        /// The damaged object.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An option, argument or document is invalid.
    #[error("{field}: {detail}")]
    BadInput {
        /// The option, field or argument at fault.
        field: String,
        /// What is wrong and, where possible, what is expected.
        detail: String,
    },
    /// The operating system or the storage refused access.
    #[error("{what}: permission denied: {source}")]
    Permission {
        /// The object or path refused.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A fault that may go away by itself: a dropped connection, a timeout, a busy server.
    #[error("{what}: {source} (transient, worth a retry)")]
    Transient {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The storage or the restore target is full.
    #[error("{what}: no space left on device")]
    NoSpace {
        /// The object or path being written.
        what: String,
    },
    /// Another process holds a lock that conflicts with this operation.
    #[error("{what}")]
    Locked {
        /// Who holds the lock and since when.
        what: String,
    },
    /// The repository or the request needs something this build does not do.
    #[error("{what} is not supported")]
    Unsupported {
        /// The unsupported thing.
        what: String,
    },
    /// Any other I/O error, with the path or object it concerns.
    #[error("{what}: {source}")]
    Io {
        /// The object or path.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The operation was cancelled by its caller.
    #[error("cancelled")]
    Cancelled,
    /// The operation ran to its end but left part of its work undone (a restore that left
    /// damaged files behind); callers that accept partial results ask for the report instead
    /// (`RestoreOptions::accept_partial`).
    #[error("{what}")]
    Incomplete {
        /// What was left undone, naming the first things concerned.
        what: String,
    },
}

/// The category of an [`Error`], stable for bindings (C result codes, Python exceptions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::NotFound`].
    NotFound,
    /// See [`Error::AlreadyExists`].
    AlreadyExists,
    /// See [`Error::WrongKey`].
    WrongKey,
    /// See [`Error::Corrupt`].
    Corrupt,
    /// See [`Error::BadInput`].
    BadInput,
    /// See [`Error::Permission`].
    Permission,
    /// See [`Error::Transient`].
    Transient,
    /// See [`Error::NoSpace`].
    NoSpace,
    /// See [`Error::Locked`].
    Locked,
    /// See [`Error::Unsupported`].
    Unsupported,
    /// See [`Error::Io`].
    Io,
    /// See [`Error::Cancelled`].
    Cancelled,
    /// See [`Error::Incomplete`].
    Incomplete,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::WrongKey => "wrong key",
            ErrorKind::Corrupt => "corrupt data",
            ErrorKind::BadInput => "bad input",
            ErrorKind::Permission => "permission denied",
            ErrorKind::Transient => "transient error",
            ErrorKind::NoSpace => "no space left",
            ErrorKind::Locked => "locked",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Io => "I/O error",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Incomplete => "incomplete",
        };
        f.write_str(s)
    }
}

impl Error {
    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::WrongKey { .. } => ErrorKind::WrongKey,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::BadInput { .. } => ErrorKind::BadInput,
            Error::Permission { .. } => ErrorKind::Permission,
            Error::Transient { .. } => ErrorKind::Transient,
            Error::NoSpace { .. } => ErrorKind::NoSpace,
            Error::Locked { .. } => ErrorKind::Locked,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Io { .. } => ErrorKind::Io,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Incomplete { .. } => ErrorKind::Incomplete,
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient { .. })
    }

    /// Classifies an I/O error concerning `what` (a path or object name).
    pub fn io(what: impl fmt::Display, source: io::Error) -> Self {
        let what = what.to_string();
        match source.kind() {
            io::ErrorKind::NotFound => Error::NotFound { what },
            io::ErrorKind::AlreadyExists => Error::AlreadyExists { what },
            // A read-only file system refuses writes as a permission would.
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                Error::Permission { what, source }
            }
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Error::NoSpace { what },
            io::ErrorKind::Interrupted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::UnexpectedEof => Error::Transient { what, source },
            _ => Error::Io { what, source },
        }
    }

    /// A corrupt object.
    pub fn corrupt(what: impl fmt::Display, detail: impl fmt::Display) -> Self {
        Error::Corrupt {
            what: what.to_string(),
            detail: detail.to_string(),
        }
    }

    /// Invalid input in the named field.
    pub fn bad_input(field: impl fmt::Display, detail: impl fmt::Display) -> Self {
        Error::BadInput {
            field: field.to_string(),
            detail: detail.to_string(),
        }
    }

    /// A missing thing.
    pub fn not_found(what: impl fmt::Display) -> Self {
        Error::NotFound {
            what: what.to_string(),
        }
    }

    /// Something this build does not do.
    pub fn unsupported(what: impl fmt::Display) -> Self {
        Error::Unsupported {
            what: what.to_string(),
        }
    }

    /// Adds context in front of the message, keeping the category.
    pub fn context(self, prefix: impl fmt::Display) -> Self {
        let p = |s: String| format!("{prefix}: {s}");
        match self {
            Error::NotFound { what } => Error::NotFound { what: p(what) },
            Error::AlreadyExists { what } => Error::AlreadyExists { what: p(what) },
            Error::WrongKey { what } => Error::WrongKey { what: p(what) },
            Error::Corrupt { what, detail } => Error::Corrupt {
                what: p(what),
                detail,
            },
            Error::BadInput { field, detail } => Error::BadInput {
                field: p(field),
                detail,
            },
            Error::Permission { what, source } => Error::Permission {
                what: p(what),
                source,
            },
            Error::Transient { what, source } => Error::Transient {
                what: p(what),
                source,
            },
            Error::NoSpace { what } => Error::NoSpace { what: p(what) },
            Error::Locked { what } => Error::Locked { what: p(what) },
            Error::Unsupported { what } => Error::Unsupported { what: p(what) },
            Error::Io { what, source } => Error::Io {
                what: p(what),
                source,
            },
            Error::Cancelled => Error::Cancelled,
            Error::Incomplete { what } => Error::Incomplete { what: p(what) },
        }
    }
}

/// Attaches a path or object name to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(what, e))
    }
}

impl<T> IoContext<T> for std::result::Result<T, rustix::io::Errno> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(what, io::Error::from(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_sorted_by_what_the_caller_does() {
        let e = Error::io("data/ab/cd", io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.to_string(), "data/ab/cd not found");
        let e = Error::io("x", io::Error::from_raw_os_error(libc_enospc()));
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        let e = Error::io(
            "x",
            io::Error::from_raw_os_error(rustix::io::Errno::ROFS.raw_os_error()),
        );
        assert_eq!(e.kind(), ErrorKind::Permission, "a read-only file system");
        let e = Error::io("x", io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(e.is_transient());
    }

    #[test]
    fn context_keeps_the_kind() {
        let e = Error::corrupt("pack 1234", "bad tag").context("repository /r");
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(
            e.to_string(),
            "repository /r: pack 1234 is corrupt: bad tag"
        );
    }

    fn libc_enospc() -> i32 {
        rustix::io::Errno::NOSPC.raw_os_error()
    }
}
