//! Upstream Freezer's own formats (issue 11, docs/UPSTREAM-TAR.md): its `tar` engine's backups.
//!
//! * [`openssl`]: the encryption layer (`openssl enc -aes-256-cfb`), both ways.
//! * [`layout`]: the storage layout (`metadata/tar/N/T0/L_T/metadata`, `data/…/data`,
//!   `data/…/engine_metadata`) over any [`crate::sink::Sink`]: listing chains, choosing the
//!   levels of a restore (`restore_from_date`) and the parent of the next backup.
//! * [`tar`]: restoring a chain: decryption, decompression (gzip, bzip2, xz; zstd as our
//!   extension) and GNU tar `--incremental` extraction, never outside the restore folder.
//!
//! * [`migrate`]: every upstream backup into a native repository, as snapshots of their own.
//! * [`run`]: the `tar` engine in the job runner (`engine_name: tar`): backup, restore, info
//!   and retention in upstream's layout, on every storage.
//!
//! Nothing here prints or reads the environment; the job runner calls [`run`], the CLI
//! [`tar::restore`] and [`layout::list`] (docs/COMPAT.md, *Upstream's tar backups*).

pub mod layout;
pub mod migrate;
pub mod openssl;
pub mod run;
pub mod tar;
