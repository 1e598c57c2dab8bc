//! Upstream Freezer's own formats (issue 11, docs/UPSTREAM-TAR.md): its `tar` engine's backups.
//!
//! * [`openssl`]: the encryption layer (`openssl enc -aes-256-cfb`), both ways.
//! * [`layout`]: the storage layout (`metadata/tar/N/T0/L_T/metadata`, `data/…/data`,
//!   `data/…/engine_metadata`) over any [`crate::sink::Sink`]: listing chains, choosing the
//!   levels of a restore (`restore_from_date`) and the parent of the next backup.
//! * [`tar`]: restoring a chain: decryption, decompression (gzip, bzip2, xz; zstd as our
//!   extension) and GNU tar `--incremental` extraction, never outside the restore folder.
//!
//! Nothing here prints or reads the environment; the job runner and the CLI call
//! [`tar::restore`] (docs/COMPAT.md, *Upstream's tar backups*).

pub mod layout;
pub mod openssl;
pub mod tar;
