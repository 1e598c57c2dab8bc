//! The `tar` engine in the job runner: an action with `engine_name: tar` backs up into,
//! restores from, lists and applies retention to upstream Freezer's own layout
//! (docs/UPSTREAM-TAR.md), so that upstream's agent restores what this release writes and
//! this release restores what upstream wrote. Every front-end reaches it through
//! [`crate::job::run_action`].
//!
//! Upstream's semantics are kept where an operator meets them: `incremental` is off unless
//! asked (every backup a new level 0), levels follow upstream's `previous_backup`, dates
//! without a zone are UTC. Where upstream loses data, this does not (docs/COMPAT.md):
//! retention keeps a chain while any of its backups is newer than the cutoff, a storage that
//! fails is reported, and two backups of one name in the same second never overwrite each
//! other.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use jiff::Timestamp;
use serde::Serialize;

use super::layout::{self, Compression, TarBackup, TarMetadata};
use super::tar::write::{TarWriteOptions, write_level};
use super::tar::{TarRestoreOptions, TarRestoreReport};
use crate::error::{Error, Result};
use crate::job::{Action, FreezerAction, RunContext, SourceMode};
use crate::sink::{PutMode, Sink};

/// How one storage fared in a `tar` backup.
#[derive(Clone, Debug, Serialize)]
pub struct TarStorageResult {
    /// The storage, described without secrets.
    pub storage: String,
    /// Whether it holds the whole backup (`data`, `engine_metadata`, then `metadata`).
    pub complete: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a `tar` backup did.
#[derive(Clone, Debug, Serialize)]
pub struct TarBackupResult {
    /// `<hostname>_<backup_name>`, the folder of the series on storage.
    pub name: String,
    /// The host.
    pub hostname: String,
    /// The backup name.
    pub backup_name: String,
    /// The level (0: a full backup).
    pub level: u32,
    /// The chain's level-0 time (Unix seconds): the `T0` folder.
    pub level_zero_timestamp: i64,
    /// This backup's time (Unix seconds): the `T` of `L_T`.
    pub time_stamp: i64,
    /// The `data` object's key.
    pub data_key: String,
    /// `gzip`, `bzip2`, `xz` (or `zstd`, this release's extension).
    pub compression: String,
    /// Whether `data` is encrypted.
    pub encrypted: bool,
    /// Files, symlinks and links written.
    pub files: u64,
    /// Directories described.
    pub directories: u64,
    /// Bytes of file content read.
    pub bytes: u64,
    /// Bytes of `data` written (compressed, encrypted).
    pub data_bytes: u64,
    /// The checksum of the files backed up (`consistency_check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency_checksum: Option<String>,
    /// Each storage.
    pub storages: Vec<TarStorageResult>,
    /// Files that could not be read (skipped), and other notes.
    pub warnings: Vec<String>,
}

impl TarBackupResult {
    /// Whether every storage holds the backup and every file was read.
    pub fn is_complete(&self) -> bool {
        self.storages.iter().all(|s| s.complete) && self.warnings.is_empty()
    }
}

/// One backup of upstream's layout, for a listing.
#[derive(Clone, Debug, Serialize)]
pub struct TarBackupSummary {
    /// `<hostname>_<backup_name>`.
    pub name: String,
    /// The chain's level-0 time (Unix seconds).
    pub level_zero_timestamp: i64,
    /// The level.
    pub level: u32,
    /// The backup's time (Unix seconds).
    pub time_stamp: i64,
    /// The same, as a date (UTC).
    pub time: String,
    /// Its compression.
    pub compression: String,
    /// Whether it is encrypted.
    pub encrypted: bool,
}

impl From<&TarBackup> for TarBackupSummary {
    fn from(b: &TarBackup) -> Self {
        TarBackupSummary {
            name: b.name.clone(),
            level_zero_timestamp: b.t0,
            level: b.level,
            time_stamp: b.t,
            time: Timestamp::from_second(b.t)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            compression: b.metadata.compression.as_str().to_string(),
            encrypted: b.metadata.encryption,
        }
    }
}

/// What a `tar` retention (`admin`) did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TarRetentionResult {
    /// The backups removed (every level of each chain removed).
    pub removed: Vec<TarBackupSummary>,
    /// Chains kept although their level 0 is older than the cutoff, because a later level is
    /// not (upstream removes them whole).
    pub kept_for_newer_levels: Vec<TarBackupSummary>,
    /// Nothing was deleted (`dry_run`).
    pub dry_run: bool,
}

/// The passphrase upstream's `openssl enc -pass file:F` uses: the context's
/// ([`RunContext::passphrase`]) when a binding gave one, else the first line of
/// `encrypt_pass_file`.
fn passphrase(action: &FreezerAction, ctx: &RunContext) -> Result<Option<Vec<u8>>> {
    if let Some(p) = &ctx.passphrase {
        return Ok(Some(p.as_bytes().to_vec()));
    }
    let Some(path) = action
        .encrypt_pass_file
        .as_deref()
        .filter(|p| !p.is_empty())
    else {
        return Ok(None);
    };
    let content =
        std::fs::read(path).map_err(|e| Error::io(format!("encrypt_pass_file {path}"), e))?;
    let pass = super::openssl::passphrase_of_file(&content);
    if pass.is_empty() {
        return Err(Error::bad_input(
            "encrypt_pass_file",
            format!("{path}: its first line is empty"),
        ));
    }
    Ok(Some(pass.to_vec()))
}

fn names(action: &FreezerAction, ctx: &RunContext) -> Result<(String, String, String)> {
    let hostname = action
        .hostname_given()
        .unwrap_or_else(|| ctx.actor.hostname.clone());
    let backup_name = action
        .backup_name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::bad_input("backup_name", "engine tar needs backup_name"))?;
    for (field, v) in [("hostname", &hostname), ("backup_name", &backup_name)] {
        if v.contains('/') || v.contains('\0') || v == "." || v == ".." {
            return Err(Error::bad_input(
                field,
                format!("{v:?}: a / or NUL would make folders of upstream's layout"),
            ));
        }
    }
    let name = layout::backup_name(&hostname, &backup_name);
    Ok((hostname, backup_name, name))
}

fn restore_date(action: &FreezerAction) -> Result<Option<Timestamp>> {
    // Upstream reads a date without a zone as UTC (oslo's parse_isotime).
    action
        .restore_from_date
        .as_deref()
        .filter(|d| !d.trim().is_empty())
        .map(|d| crate::time::parse_date(d, "restore_from_date", &jiff::tz::TimeZone::UTC))
        .transpose()
}

/// Runs a `tar` engine action.
pub(crate) async fn run(
    action: &FreezerAction,
    ctx: &RunContext,
) -> Result<crate::job::ActionOutcome> {
    use crate::job::ActionOutcome;
    let sinks = crate::job::sinks_of(action, &ctx.env)?;
    if sinks.is_empty() {
        return Err(Error::bad_input(
            "container",
            "no storage given: set container (a folder for storage local, bucket[/prefix] for s3)",
        ));
    }
    match action.action() {
        Action::Backup => Ok(ActionOutcome::TarBackup(Box::new(
            backup(action, ctx, sinks).await?,
        ))),
        Action::Restore => Ok(ActionOutcome::TarRestore(Box::new(
            restore(action, ctx, sinks).await?,
        ))),
        Action::Info => {
            let name = match action.backup_name.as_deref().filter(|n| !n.is_empty()) {
                Some(_) => Some(names(action, ctx)?.2),
                None => None,
            };
            let listing = layout::list(&*sinks[0], name.as_deref()).await?;
            let mut backups: Vec<TarBackupSummary> = listing
                .chains
                .iter()
                .flat_map(|c| c.backups.iter().map(TarBackupSummary::from))
                .collect();
            backups.sort_by(|a, b| (a.time_stamp, &a.name).cmp(&(b.time_stamp, &b.name)));
            Ok(ActionOutcome::TarInfo {
                backups,
                warnings: listing.warnings,
            })
        }
        Action::Admin => Ok(ActionOutcome::TarAdmin(Box::new(
            retention(action, ctx, &sinks).await?,
        ))),
        other => Err(Error::unsupported(format!(
            "action {} with engine tar (upstream's format has no index to check or prune; use the native engine)",
            format!("{other:?}").to_lowercase()
        ))),
    }
}

/// Sends the bytes a blocking writer produces to one async stream per storage, in pieces of
/// about 1 MiB; a storage whose stream was dropped (its upload failed) is left out, and the
/// writer fails only when every storage is gone.
struct FanOut {
    senders: Vec<Option<tokio::sync::mpsc::Sender<Result<Bytes>>>>,
    buf: Vec<u8>,
}

const PIECE: usize = 1 << 20;

impl FanOut {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        for s in &mut self.senders {
            if let Some(tx) = s
                && tx.blocking_send(Ok(piece.clone())).is_err()
            {
                *s = None;
            }
        }
        if self.senders.iter().all(Option::is_none) {
            return Err(std::io::Error::other("every storage failed"));
        }
        Ok(())
    }
}

impl Write for FanOut {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let take = b.len().min(PIECE - self.buf.len());
        self.buf.extend_from_slice(&b[..take]);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

async fn backup(
    action: &FreezerAction,
    ctx: &RunContext,
    sinks: Vec<Arc<dyn Sink>>,
) -> Result<TarBackupResult> {
    if action.source_mode()? != SourceMode::Fs {
        return Err(Error::unsupported(format!(
            "mode {} with engine tar: upstream's tar engine backs up folders (mode fs); use the native engine",
            action.mode()
        )));
    }
    if action.dry_run {
        return Err(Error::unsupported(
            "dry_run with engine tar (upstream's agent writes local backups even in a dry run; this release refuses rather than pretend)",
        ));
    }
    let (hostname, backup_name, name) = names(action, ctx)?;
    let pass = passphrase(action, ctx)?;
    let compression = Compression::parse(action.compression.as_deref().unwrap_or("gzip"))?;
    let src: PathBuf = match &action.snapshot.read_from {
        Some(view) => view.clone(),
        None => PathBuf::from(action.path_to_backup.as_deref().unwrap_or_default()),
    };
    if (action.max_level.is_some() || action.always_level.is_some())
        && action.incremental != Some(true)
    {
        return Err(Error::bad_input(
            if action.max_level.is_some() {
                "max_level"
            } else {
                "always_level"
            },
            "backup-level options require the incremental option (engine tar follows upstream: incremental is off unless set)",
        ));
    }
    for s in &sinks {
        s.prepare().await?;
    }
    let listing = layout::list(&*sinks[0], Some(&name)).await?;
    let chains = listing.chains_of(&name);
    let now = ctx.now.unwrap_or_else(crate::time::now);
    let next = layout::previous_backup(
        &chains,
        action.incremental == Some(true) && !action.no_incremental,
        action.max_level,
        action.always_level,
        action.restart_always_level,
        now,
    );
    let parent_snapshot = match &next.parent {
        Some(p) => Some(
            crate::sink::SinkExt::get_bytes(&*sinks[0], &p.engine_metadata_key())
                .await
                .map_err(|e| {
                    e.context(format!(
                        "the parent backup's engine_metadata ({})",
                        p.engine_metadata_key()
                    ))
                })?,
        ),
        None => None,
    };
    // One second resolution: never the time of an existing backup of this name.
    let newest = chains
        .iter()
        .flat_map(|c| c.backups.iter().map(|b| b.t))
        .max();
    let mut t = now.as_second();
    if let Some(n) = newest
        && t <= n
    {
        t = n + 1;
    }
    let t0 = next.parent.as_ref().map_or(t, |p| p.t0);
    let level = next.level;
    let data_key = layout::data_key(&name, t0, level, t);
    let consistency_checksum = if action.consistency_check {
        let source = crate::source::lvm::fs_source(
            action,
            &crate::source::fs::FsOptions {
                excludes: action.exclude.clone(),
                one_file_system: true,
                dereference: action.dereference_symlink.unwrap_or_default(),
            },
        )?;
        Some(
            tokio::task::spawn_blocking(move || {
                crate::source::checksum::consistency_checksum(&*source)
            })
            .await
            .map_err(|e| Error::io("consistency checksum", std::io::Error::other(e)))??,
        )
    } else {
        None
    };

    let opts = TarWriteOptions {
        compression,
        encrypt_pass: pass.clone(),
        exclude: action.exclude.clone(),
        dereference: action.dereference_symlink.unwrap_or_default(),
        threads: action.threads.unwrap_or(0) as usize,
        ..TarWriteOptions::default()
    };
    let mut senders = Vec::new();
    let mut uploads = Vec::new();
    for s in &sinks {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(4);
        senders.push(Some(tx));
        let (s, key) = (s.clone(), data_key.clone());
        uploads.push(tokio::spawn(async move {
            let stream =
                futures::StreamExt::boxed(futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                }));
            s.put_stream(&key, stream, PutMode::Create).await
        }));
    }
    let cancel = ctx.cancel.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = FanOut {
            senders,
            buf: Vec::with_capacity(PIECE),
        };
        let r = write_level(&src, parent_snapshot.as_deref(), &opts, &mut out);
        let r = r.and_then(|rep| {
            out.flush()
                .map(|()| rep)
                .map_err(|e| Error::io("the data stream", e))
        });
        if r.is_err() || cancel.is_cancelled() {
            // Make every upload fail: nothing half-written is placed.
            for tx in out.senders.iter().flatten() {
                let _ = tx.blocking_send(Err(Error::io(
                    "the data stream",
                    std::io::Error::other("the backup failed"),
                )));
            }
        }
        r
    });
    let written = writer
        .await
        .map_err(|e| Error::io("tar writer", std::io::Error::other(e)))?;
    let mut storages = Vec::new();
    let mut ok_sinks = Vec::new();
    for (s, up) in sinks.iter().zip(uploads) {
        let r = up
            .await
            .map_err(|e| Error::io("upload", std::io::Error::other(e)))?;
        match (&written, r) {
            (Ok(_), Ok(_)) => ok_sinks.push(s.clone()),
            (_, Err(e)) => storages.push(TarStorageResult {
                storage: s.describe(),
                complete: false,
                error: Some(e.to_string()),
            }),
            (Err(_), Ok(_)) => {
                // The writer failed after the stream ended: the object is whole but wrong.
                let _ = s.delete(&data_key).await;
            }
        }
    }
    let report = written?;
    ctx.cancel.check()?;
    let meta = TarMetadata {
        engine_name: layout::ENGINE.to_string(),
        compression,
        encryption: pass.is_some(),
    };
    for s in ok_sinks {
        let r: Result<()> = async {
            s.put(
                &layout::engine_metadata_key(&name, t0, level, t),
                report.snapshot.clone().into(),
                PutMode::Create,
            )
            .await?;
            s.put(
                &layout::metadata_key(&name, t0, level, t),
                meta.to_line().into_bytes().into(),
                PutMode::Create,
            )
            .await
        }
        .await;
        storages.push(TarStorageResult {
            storage: s.describe(),
            complete: r.is_ok(),
            error: r.err().map(|e| e.to_string()),
        });
    }
    if storages.iter().all(|s| !s.complete) {
        let why: Vec<String> = storages
            .iter()
            .map(|s| format!("{}: {}", s.storage, s.error.as_deref().unwrap_or("?")))
            .collect();
        return Err(Error::io(
            "the tar backup",
            std::io::Error::other(why.join("; ")),
        ));
    }
    Ok(TarBackupResult {
        name,
        hostname,
        backup_name,
        level,
        level_zero_timestamp: t0,
        time_stamp: t,
        data_key,
        compression: compression.as_str().to_string(),
        encrypted: pass.is_some(),
        files: report.files,
        directories: report.directories,
        bytes: report.bytes,
        data_bytes: report.written_bytes,
        consistency_checksum,
        storages,
        warnings: report.warnings,
    })
}

async fn restore(
    action: &FreezerAction,
    ctx: &RunContext,
    sinks: Vec<Arc<dyn Sink>>,
) -> Result<TarRestoreReport> {
    let (_, _, name) = names(action, ctx)?;
    let dest = action
        .restore_abs_path
        .clone()
        .filter(|p| !p.is_empty() && p != "-")
        .ok_or_else(|| Error::bad_input("restore_abs_path", "engine tar restores into a folder"))?;
    let mut opts = TarRestoreOptions::new(&dest);
    opts.restore_from_date = restore_date(action)?;
    opts.passphrase = passphrase(action, ctx)?;
    opts.overwrite = action.overwrite;
    // The first storage that holds the name; the others are replicas.
    let mut last = None;
    for s in &sinks {
        match super::tar::restore(s.clone(), &name, &opts).await {
            Err(e @ Error::NotFound { .. }) if sinks.len() > 1 => last = Some(e),
            r => {
                let r = r?;
                if let Some(want) = action.consistency_checksum.as_deref() {
                    crate::job::verify_checksum(action, want).await?;
                }
                return Ok(r);
            }
        }
    }
    Err(last.expect("at least one storage"))
}

async fn retention(
    action: &FreezerAction,
    ctx: &RunContext,
    sinks: &[Arc<dyn Sink>],
) -> Result<TarRetentionResult> {
    let (_, _, name) = names(action, ctx)?;
    let now = ctx.now.unwrap_or_else(crate::time::now);
    let cutoff = match (action.remove_older_than, action.remove_from_date.as_deref()) {
        (Some(days), _) => now.as_second() - (days * 86_400.0) as i64,
        (None, Some(d)) => crate::time::parse_date(d, "remove_from_date", &ctx.tz)?.as_second(),
        (None, None) => {
            return Err(Error::bad_input(
                "remove_older_than",
                "engine tar retention needs remove_older_than or remove_from_date (upstream's)",
            ));
        }
    };
    let mut out = TarRetentionResult {
        dry_run: action.dry_run,
        ..Default::default()
    };
    for s in sinks {
        let listing = layout::list(&**s, Some(&name)).await?;
        for chain in listing.chains_of(&name) {
            if chain.t0 > cutoff {
                continue;
            }
            let newest = chain.backups.iter().map(|b| b.t).max().unwrap_or(chain.t0);
            if newest > cutoff {
                out.kept_for_newer_levels
                    .extend(chain.backups.iter().map(TarBackupSummary::from));
                continue;
            }
            for b in &chain.backups {
                if !action.dry_run {
                    // The metadata first: a backup without it is invisible, never half there.
                    s.delete(&b.metadata_key()).await?;
                    s.delete(&b.data_key()).await?;
                    s.delete(&b.engine_metadata_key()).await?;
                }
                out.removed.push(TarBackupSummary::from(b));
            }
        }
    }
    Ok(out)
}

/// Upstream's backup metadata document for a `tar` backup (the keys of
/// [`crate::job::backup_metadata`]).
pub fn backup_metadata(
    action: &FreezerAction,
    r: &TarBackupResult,
    ctx: &RunContext,
) -> serde_json::Value {
    let s = |v: Option<&str>| serde_json::Value::String(v.unwrap_or("").to_string());
    let level = |v: Option<u32>| v.map(serde_json::Value::from).unwrap_or_else(|| "".into());
    let mut doc = serde_json::json!({
        "action": "backup",
        "backup_name": r.backup_name,
        "hostname": r.hostname,
        "container": s(action.container.as_deref()),
        "storage": action.storage.as_deref().unwrap_or("local"),
        "mode": action.mode(),
        "path_to_backup": s(action.path_to_backup.as_deref()),
        "fs_real_path": s(action.path_to_backup.as_deref()),
        "level": r.level,
        "curr_backup_level": r.level,
        "max_level": level(action.max_level),
        "always_level": level(action.always_level),
        "time_stamp": r.time_stamp,
        "engine_name": "tar",
        "compression": r.compression,
        "encrypted": r.encrypted,
        "dry_run": "",
        "total_fs_files": r.files,
        "total_directories": r.directories,
        "total_broken_links": 0,
        "backup_size_uncompressed": r.bytes,
        "backup_size_compressed": r.data_bytes,
        "consistency_checksum": s(r.consistency_checksum.as_deref()),
        "client_version": format!("freezer-rs {}", env!("CARGO_PKG_VERSION")),
        "client_os": std::env::consts::OS,
        "complete": r.is_complete(),
    });
    if let Some(id) = ctx.job_id.as_deref().filter(|i| !i.is_empty()) {
        doc["job_id"] = serde_json::Value::from(id);
    }
    doc
}
