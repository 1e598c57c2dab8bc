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
//! ## Using it
//!
//! ```toml
//! [dependencies]
//! freezer-core = "0.1"
//! # The library is async: its calls need a tokio runtime with several threads.
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! One import brings what most programs need: `use freezer_core::prelude::*;`. The library
//! runs on the caller's tokio runtime (`#[tokio::main]`, or `Runtime::block_on` from
//! synchronous code); CPU work goes to tokio's blocking pool, so the runtime must be the
//! multi-thread one.
//!
//! ## Back up a folder and restore it
//!
//! ```
//! use freezer_core::prelude::*;
//! use std::sync::Arc;
//!
//! #[tokio::main]
//! async fn main() -> freezer_core::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let data = tmp.path().join("data");
//! # std::fs::create_dir(&data).unwrap();
//! # std::fs::write(data.join("hello.txt"), "hello").unwrap();
//! # let repo_url = tmp.path().join("repo").display().to_string();
//! # let target = tmp.path().join("restored");
//!     // A folder, or a storage URL: s3://bucket/prefix, swift://container, ssh://host/path...
//!     let storage = StorageSpec::from_url(&repo_url)?;
//!     // S3, Swift and FTP credentials come from these variables (ACCESS_KEY, OS_PASSWORD...).
//!     let env = credential_environment(std::env::vars_os());
//!     let sinks = vec![storage.open(&env, (None, None))?];
//!     let pass = Passphrase::new("correct horse battery staple")?;
//!     let actor = Actor::current();
//!     let mut init = InitOptions::new(Some(pass.clone()), actor.clone());
//! #   init.kdf = KdfParams::insecure_fast(); // keeps the doc-test fast; never do this for real
//!     Repository::init(sinks.clone(), init).await?;
//!
//!     let mut repo = Repository::open(sinks, Some(&pass)).await?;
//!     let source = Arc::new(FsSource::new(&data, &FsOptions::default())?);
//!     let opts = BackupOptions::new(&actor.hostname, "web", actor.clone());
//!     let done = backup(&mut repo, source, &opts, Arc::new(NoProgress)).await?;
//!     assert_eq!(done.snapshot.stats.files, 1);
//!
//!     let snaps = repo.snapshots().await?.0;
//!     let latest = SnapshotSelector::Latest {
//!         hostname: actor.hostname.clone(),
//!         backup_name: "web".into(),
//!     };
//!     let (id, snap) = select(&snaps, &latest)?;
//!     // A snapshot with damaged objects fails with ErrorKind::Incomplete, naming the files,
//!     // unless `accept_partial` is set: then `damaged` in the result lists them.
//!     restore(&repo, *id, snap, &RestoreOptions::new(&target), Arc::new(NoProgress)).await?;
//!     assert_eq!(std::fs::read_to_string(target.join("hello.txt")).unwrap(), "hello");
//!     Ok(())
//! }
//! ```
//!
//! ## Run an upstream `freezer_action`
//!
//! The options upstream's agent takes, as a JSON document (what a job's `freezer_action`
//! holds), run as upstream's agent would run them:
//!
//! ```no_run
//! use freezer_core::prelude::*;
//!
//! # async fn f() -> freezer_core::Result<()> {
//! let action = FreezerAction::from_json(
//!     r#"{"action": "backup", "path_to_backup": "/etc", "backup_name": "etc",
//!         "storage": "s3", "container": "backups/node1"}"#,
//! )?;
//! let mut ctx = RunContext::current();
//! ctx.env = credential_environment(std::env::vars_os());
//! let outcome = run_action(&action, &ctx).await?;
//! println!("{}", outcome.to_document(&action, &ctx, Vec::new()));
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
pub mod memory;
pub mod policy;
mod process;
pub mod repo;
pub mod runtime;
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
pub use repo::Repository;
pub use time::{local_display, now, now_rfc3339, parse_date};

/// Re-exported: the timestamp type of snapshots and dates.
pub use jiff::Timestamp;
/// Re-exported: time zones for dates given in local time.
pub use jiff::tz::TimeZone;

/// The names most programs need, in one import: `use freezer_core::prelude::*;`.
pub mod prelude {
    pub use crate::engine::{
        BackupOptions, BackupResult, CheckOptions, CheckReport, CopyOptions, ForgetOptions,
        NoProgress, Progress, PruneOptions, RestoreOptions, RestoreResult, backup, check, copy,
        forget, prune, repair_index, restore,
    };
    pub use crate::job::{
        ActionOutcome, FreezerAction, RepositoryOptions, RunContext, StorageSpec,
        credential_environment, run_action, run_job_document,
    };
    pub use crate::repo::snapshot::{Snapshot, SnapshotSelector, select};
    pub use crate::repo::{Actor, InitOptions, Repository};
    pub use crate::sink::{LocalSink, Sink};
    pub use crate::source::fs::{FsOptions, FsSource};
    pub use crate::{CancelToken, Error, ErrorKind, Id, KdfParams, Passphrase, Result};
}
