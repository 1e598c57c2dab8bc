//! # freezer-core
//!
//! Backup and restore as a library: the heart of freezer-rs, a rebuild of OpenStack Freezer.
//! Front-ends (the `freezer` CLI, the scheduler, the REST API, the C ABI, the Python module)
//! turn their input into [`job::FreezerAction`]s, upstream's option maps, and call
//! [`job::run_action`]; or they drive the pieces below directly.
//!
//! * [`source`]: where data comes from ([`source::Source`]; [`source::fs::FsSource`], a folder;
//!   [`source::stream::StreamSource`], a command's stdout or stdin).
//! * [`sink`]: where it goes ([`sink::Sink`]; [`sink::LocalSink`], [`sink::MemorySink`], and
//!   [`sink::Tee`], several sinks written as one).
//! * [`engine`]: the streaming engine: [`engine::backup`], [`engine::restore`],
//!   [`engine::inspect`].
//! * [`repo`]: the native repository format v1 (docs/FORMAT.md): config, keys, packs, index,
//!   trees, snapshots, locks.
//! * [`job`]: the job document, the [`job::JobSpec`] trait and the runner.
//! * `service` (cargo feature `service`): the Freezer service: a freezer-api v2 compatible
//!   REST API over a document store, its authentication, and the scheduler.
//!
//! Features of this release: content-defined chunking with a keyed gear table, keyed BLAKE3
//! chunk ids, per-storage deduplication, zstd, AES-256-GCM, Argon2id-wrapped master keys with
//! several passphrases, packs handed to every storage as clones of the same `Bytes`,
//! bounded memory, parallel reading, compression and restore, sparse files, hard links,
//! xattrs, and restores that never write outside their target.
//!
//! The library never prints, never exits and never reads environment variables: errors come
//! back as [`Error`], progress goes to a [`engine::Progress`] the caller gives.
//!
//! ## Back up a folder and restore it
//!
//! ```
//! use std::sync::Arc;
//! use freezer_core::engine::{backup, restore, BackupOptions, NoProgress, RestoreOptions};
//! use freezer_core::repo::{Actor, InitOptions, Repository};
//! use freezer_core::repo::snapshot::{select, SnapshotSelector};
//! use freezer_core::sink::{LocalSink, Sink};
//! use freezer_core::source::fs::{FsOptions, FsSource};
//! use freezer_core::{KdfParams, Passphrase};
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> freezer_core::Result<()> {
//! let tmp = tempfile::tempdir().unwrap();
//! let data = tmp.path().join("data");
//! std::fs::create_dir(&data).unwrap();
//! std::fs::write(data.join("hello.txt"), "hello").unwrap();
//!
//! let sinks: Vec<Arc<dyn Sink>> = vec![Arc::new(LocalSink::new(tmp.path().join("repo")))];
//! let pass = Passphrase::new("correct horse battery staple")?;
//! let actor = Actor { hostname: "node1".into(), username: "ops".into() };
//! let mut init = InitOptions::new(Some(pass.clone()), actor.clone());
//! init.kdf = KdfParams::insecure_fast(); // keep the doc-test fast; never do this for real
//! Repository::init(sinks.clone(), init).await?;
//!
//! let mut repo = Repository::open(sinks, Some(&pass)).await?;
//! let source = Arc::new(FsSource::new(&data, &FsOptions::default())?);
//! let opts = BackupOptions::new("node1", "web", actor);
//! let done = backup(&mut repo, source, &opts, Arc::new(NoProgress)).await?;
//! assert_eq!(done.snapshot.stats.files, 1);
//!
//! let snaps = repo.snapshots().await?.0;
//! let latest = SnapshotSelector::Latest { hostname: "node1".into(), backup_name: "web".into() };
//! let (id, snap) = select(&snaps, &latest)?;
//! let target = tmp.path().join("restored");
//! restore(&repo, *id, snap, &RestoreOptions::new(&target), Arc::new(NoProgress)).await?;
//! assert_eq!(std::fs::read_to_string(target.join("hello.txt")).unwrap(), "hello");
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod buffer;
mod cancel;
mod chunker;
mod crypto;
pub mod db;
pub mod engine;
mod error;
mod id;
pub mod job;
mod keystone;
pub mod policy;
mod process;
pub mod repo;
#[cfg(feature = "service")]
pub mod service;
pub mod sink;
pub mod source;
mod time;
mod tls;
pub mod upstream;

pub use cancel::CancelToken;
pub use chunker::{ChunkState, Chunker, ChunkerParams};
pub use crypto::{Crypto, KdfParams, MasterKey, Passphrase, SEAL_OVERHEAD};
pub use error::{Error, ErrorKind, Result};
pub use id::Id;
pub use time::{local_display, now, now_rfc3339, parse_date};

/// Re-exported: the timestamp type of snapshots and dates.
pub use jiff::Timestamp;
/// Re-exported: time zones for dates given in local time.
pub use jiff::tz::TimeZone;
