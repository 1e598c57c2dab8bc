//! Upstream Freezer's own formats (issue 11, docs/UPSTREAM-TAR.md): so far the encryption
//! layer of its `tar` backups, [`openssl`]. The reader and writer of the `tar` engine's
//! level chains are built on it (not in this release yet: docs/COMPAT.md, *Not yet*).

pub mod openssl;
pub mod tar;
