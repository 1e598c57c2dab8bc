//! Restoring upstream Freezer's `tar` engine backups from any sink (docs/UPSTREAM-TAR.md,
//! docs/COMPAT.md *Upstream's tar backups*).
//!
//! [`restore`] lists the name's chains ([`super::layout::list`]), picks the levels as
//! upstream's `--restore-from-date` does ([`super::layout::select_for_restore`]) and applies
//! levels 0..L in order into one folder, each as GNU tar `--incremental --extract --overwrite`
//! would. Per level, three stages run at once: the sink's stream (async) → decryption and
//! decompression (one thread) → extraction (another thread), joined by bounded channels.
//!
//! This module only reads storage; it never writes files outside the restore folder, never
//! follows a symlink it finds there, and never prints.
//!
//! Writing: [`write::write_level`] makes one level's `data` (a GNU tar `--listed-incremental`
//! archive, compressed in parallel blocks, encrypted as `openssl enc`) and its
//! `engine_metadata` ([`snar`], GNU tar's snapshot file); [`crate::upstream::run`] stores them
//! in upstream's layout.

mod extract;
mod read;
pub mod snar;
#[cfg(test)]
mod tests;
pub mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use jiff::Timestamp;

pub use extract::ExtractStats;
pub use read::open_data;

use super::layout::{self, TarBackup};
use super::openssl::KeyDigest;
use crate::error::{Error, ErrorKind, Result};
use crate::sink::Sink;
use extract::{Extractor, LevelError};

/// How to restore.
#[derive(Clone)]
pub struct TarRestoreOptions {
    /// The restore folder (upstream's `restore_abs_path`): created when missing.
    pub dest: PathBuf,
    /// Restore the newest backup at or before this date (`restore_from_date`); the newest
    /// backup without it.
    pub restore_from_date: Option<Timestamp>,
    /// The passphrase of encrypted backups: the first line of upstream's `encrypt_pass_file`
    /// ([`super::openssl::passphrase_of_file`]). Ignored for unencrypted backups.
    pub passphrase: Option<Vec<u8>>,
    /// Restore into a folder that is not empty (upstream's `--overwrite`). Without it such a
    /// folder is refused. With it, as GNU tar does, each directory the archive describes ends
    /// up holding only what the backup holds: other entries in it are removed.
    pub overwrite: bool,
    /// Restore owners (uid/gid, by name first). `None`: when running as root, as GNU tar.
    pub owners: Option<bool>,
}

impl std::fmt::Debug for TarRestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarRestoreOptions")
            .field("dest", &self.dest)
            .field("restore_from_date", &self.restore_from_date)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<set>"))
            .field("overwrite", &self.overwrite)
            .field("owners", &self.owners)
            .finish()
    }
}

impl TarRestoreOptions {
    /// The newest backup into `dest`, no passphrase, no overwrite.
    pub fn new(dest: impl Into<PathBuf>) -> Self {
        TarRestoreOptions {
            dest: dest.into(),
            restore_from_date: None,
            passphrase: None,
            overwrite: false,
            owners: None,
        }
    }
}

/// One level applied by [`restore`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RestoredLevel {
    /// The backup (its keys: [`TarBackup::data_key`] and the others).
    pub backup: TarBackup,
    /// For encrypted backups, the key derivation that decrypted it (MD5: made with OpenSSL
    /// before 1.1).
    pub key_digest: Option<KeyDigest>,
    /// What this level did.
    pub stats: ExtractStats,
}

/// What [`restore`] did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TarRestoreReport {
    /// `N`: `<hostname>_<backup_name>`.
    pub name: String,
    /// The levels applied, 0 first.
    pub levels: Vec<RestoredLevel>,
    /// Totals over the levels.
    pub totals: ExtractStats,
    /// Storage objects skipped while listing ([`layout::TarListing::warnings`]).
    pub warnings: Vec<String>,
}

/// Restores upstream backup `name` (`<hostname>_<backup_name>`, [`layout::backup_name`]) from
/// `sink` (rooted at upstream's container) into `opts.dest`.
///
/// Errors name what is wrong: no backup (`NotFound`), a missing level or data object
/// (`NotFound`, naming the key), an encrypted backup without a passphrase or a wrong
/// passphrase (`WrongKey`, naming the data key), a truncated or damaged data object
/// (`Corrupt`, naming the key), a hostile member (`Corrupt`, naming the member), a restore
/// folder that is not empty without `overwrite` (`AlreadyExists`). Levels applied before a
/// failure stay applied.
pub async fn restore(
    sink: Arc<dyn Sink>,
    name: &str,
    opts: &TarRestoreOptions,
) -> Result<TarRestoreReport> {
    let listing = layout::list(&*sink, Some(name)).await?;
    let chains = listing.chains_of(name);
    let levels = layout::select_for_restore(&chains, opts.restore_from_date).map_err(|e| {
        if listing.warnings.is_empty() || e.kind() != ErrorKind::NotFound {
            e
        } else {
            e.context(format!(
                "skipped while listing: {}",
                listing.warnings.join("; ")
            ))
        }
    })?;
    if opts.passphrase.is_none()
        && let Some(b) = levels.iter().find(|b| b.metadata.encryption)
    {
        return Err(Error::WrongKey {
            what: format!(
                "Cannot restore encrypted backup without key: {} is encrypted (its metadata says \"encryption\": true); give its passphrase (encrypt_pass_file)",
                b.data_key()
            ),
        });
    }
    prepare_dest(&opts.dest, opts.overwrite).await?;
    let owners = opts
        .owners
        .unwrap_or_else(|| rustix::process::geteuid().is_root());
    let dest = opts.dest.clone();
    let mut ex = tokio::task::spawn_blocking(move || Extractor::new(&dest, owners))
        .await
        .map_err(|e| Error::io("the restore task", std::io::Error::other(e.to_string())))??;
    let mut report = TarRestoreReport {
        name: name.to_string(),
        levels: Vec::new(),
        totals: ExtractStats::default(),
        warnings: listing.warnings,
    };
    for backup in levels {
        let before = ex.stats.clone();
        let (back, digest) = restore_level(&sink, ex, &backup, opts.passphrase.clone()).await?;
        ex = back;
        report.levels.push(RestoredLevel {
            backup,
            key_digest: digest,
            stats: diff(&ex.stats, &before),
        });
    }
    report.totals = ex.stats.clone();
    Ok(report)
}

fn diff(a: &ExtractStats, b: &ExtractStats) -> ExtractStats {
    ExtractStats {
        files: a.files - b.files,
        bytes: a.bytes - b.bytes,
        dirs: a.dirs - b.dirs,
        symlinks: a.symlinks - b.symlinks,
        hard_links: a.hard_links - b.hard_links,
        specials: a.specials - b.specials,
        removed: a.removed - b.removed,
        renamed: a.renamed - b.renamed,
    }
}

/// Creates the restore folder, or checks that it is empty (unless `overwrite`).
async fn prepare_dest(dest: &Path, overwrite: bool) -> Result<()> {
    let d = dest.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<()> {
        match std::fs::read_dir(&d) {
            Ok(mut it) => {
                if !overwrite && it.next().is_some() {
                    return Err(Error::AlreadyExists {
                        what: format!(
                            "Restore dir is not empty: {} (restore into an empty folder, or set overwrite: then, as GNU tar does, every directory the backup describes is left with only what the backup holds)",
                            d.display()
                        ),
                    });
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&d).map_err(|e| Error::io(d.display(), e))
            }
            Err(e) => Err(Error::io(d.display(), e)),
        }
    })
    .await
    .map_err(|e| Error::io("the restore task", std::io::Error::other(e.to_string())))?
}

/// Applies one level: streams its data object through the decoder thread into the extractor.
async fn restore_level(
    sink: &Arc<dyn Sink>,
    mut ex: Extractor,
    backup: &TarBackup,
    passphrase: Option<Vec<u8>>,
) -> Result<(Extractor, Option<KeyDigest>)> {
    let key = backup.data_key();
    let body = sink.get(&key, None).await.map_err(|e| match e {
        Error::NotFound { .. } => Error::not_found(format!(
            "the data object {key} of level {} (its metadata {} exists)",
            backup.level,
            backup.metadata_key()
        )),
        e => e.context(format!("reading {key}")),
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let pump = async move {
        let mut s = body.into_stream();
        while let Some(item) = s.next().await {
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    };
    let metadata = backup.metadata.clone();
    let k = key.clone();
    let work = tokio::task::spawn_blocking(move || {
        let sink_error = Arc::new(Mutex::new(None));
        let raw = read::SinkReader {
            rx,
            cur: bytes::Bytes::new(),
            error: sink_error.clone(),
        };
        let r = run_level(
            &mut ex,
            raw,
            &metadata,
            passphrase.as_deref(),
            &k,
            &sink_error,
        );
        (ex, r)
    });
    let ((), joined) = tokio::join!(pump, work);
    let (ex, r) =
        joined.map_err(|e| Error::io("the restore task", std::io::Error::other(e.to_string())))?;
    Ok((ex, r?))
}

fn run_level(
    ex: &mut Extractor,
    raw: read::SinkReader,
    metadata: &layout::TarMetadata,
    passphrase: Option<&[u8]>,
    key: &str,
    sink_error: &Mutex<Option<Error>>,
) -> Result<Option<KeyDigest>> {
    let (plain, digest) = match open_data(raw, metadata, passphrase, key) {
        Ok(x) => x,
        Err(e) => {
            // A sink failure while reading the header is the sink's error.
            if let Some(s) = sink_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(s.context(format!("reading {key}")));
            }
            return Err(e);
        }
    };
    let (tx, rx) = crossbeam_channel::bounded(read::DEPTH);
    let (free_tx, free_rx) = crossbeam_channel::bounded(read::DEPTH + 2);
    std::thread::scope(|s| {
        let decoder = s.spawn(move || read::decode_level(plain, tx, free_rx, key, sink_error));
        let reader = read::ChunkReader {
            rx,
            free: free_tx,
            cur: Vec::new(),
            at: 0,
        };
        let extracted = ex.extract_level(reader, key);
        let decoded = decoder.join().unwrap_or_else(|_| {
            Err(Error::io(
                key,
                std::io::Error::other("the decoder thread panicked"),
            ))
        });
        // The decoder's failure is the cause of anything the extractor saw.
        decoded?;
        match extracted {
            Ok(()) => Ok(digest),
            Err(LevelError::Stream(e)) => Err(read::stream_error(key, e, sink_error)),
            Err(LevelError::Other(e)) => Err(e),
        }
    })
}
