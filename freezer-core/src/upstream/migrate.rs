//! Migration: every backup of upstream's `tar` layout copied into a native repository as a
//! snapshot of its own, keeping its host, backup name, time and level, so that an operator
//! moves years of backups and keeps restoring each of them (`freezer copy` from an upstream
//! container).
//!
//! Each backup is restored (its levels 0..L, [`super::tar::restore`]) into a private staging
//! folder, then backed up with the native engine at the backup's time, with the previous
//! migrated snapshot of the chain as its parent: unchanged files are not read twice and
//! nothing is stored twice. A backup whose snapshot (same host, name and time) is already in
//! the repository is skipped, so an interrupted migration is run again safely.
//!
//! Costs and limits (docs/COMPAT.md): a backup of level L applies L+1 levels, so a chain of
//! n levels applies n(n+1)/2 in all; the staging folder needs the space of one restored tree;
//! `N` is split into host and name at its first `_` (a host name never holds one; upstream
//! joins them without escaping).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;

use super::layout;
use super::tar::TarRestoreOptions;
use crate::engine::{BackupOptions, NoProgress};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::{Actor, Repository};
use crate::sink::Sink;
use crate::source::fs::{FsOptions, FsSource};

/// What to migrate.
#[derive(Clone)]
pub struct MigrateOptions {
    /// The passphrase of encrypted upstream backups (the pass file's first line).
    pub passphrase: Option<Vec<u8>>,
    /// Only backups of this host (the part of `N` before its first `_`).
    pub hostname: Option<String>,
    /// Only backups of this backup name (the part of `N` after its first `_`).
    pub backup_name: Option<String>,
    /// Where the staging folders are made (default: the system's temporary folder).
    pub staging: Option<PathBuf>,
    /// Who migrates (recorded in the snapshots).
    pub actor: Actor,
}

impl std::fmt::Debug for MigrateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrateOptions")
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<set>"))
            .field("hostname", &self.hostname)
            .field("backup_name", &self.backup_name)
            .field("staging", &self.staging)
            .finish()
    }
}

impl MigrateOptions {
    /// Every backup, no passphrase, staged in the system's temporary folder.
    pub fn new(actor: Actor) -> Self {
        MigrateOptions {
            passphrase: None,
            hostname: None,
            backup_name: None,
            staging: None,
            actor,
        }
    }
}

/// One upstream backup and the snapshot it became.
#[derive(Clone, Debug, Serialize)]
pub struct MigratedBackup {
    /// Its `data` object.
    pub data_key: String,
    /// The host.
    pub hostname: String,
    /// The backup name.
    pub backup_name: String,
    /// Its level.
    pub level: u32,
    /// Its time (Unix seconds), the snapshot's time.
    pub time_stamp: i64,
    /// The native snapshot.
    pub snapshot_id: Id,
    /// Whether it was there already (an earlier run migrated it).
    pub existed: bool,
}

/// What [`migrate`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MigrateReport {
    /// Every backup, oldest first within each series.
    pub backups: Vec<MigratedBackup>,
    /// Objects skipped while listing upstream's layout.
    pub warnings: Vec<String>,
}

/// Splits upstream's `N` into host and backup name at the first `_`.
pub fn split_name(n: &str) -> (String, String) {
    match n.split_once('_') {
        Some((h, b)) if !h.is_empty() && !b.is_empty() => (h.to_string(), b.to_string()),
        _ => (n.to_string(), n.to_string()),
    }
}

/// Migrates the upstream backups on `source` (rooted at upstream's container) into `target`.
pub async fn migrate(
    source: Arc<dyn Sink>,
    target: &mut Repository,
    opts: &MigrateOptions,
) -> Result<MigrateReport> {
    let listing = layout::list(&*source, None).await?;
    let mut report = MigrateReport {
        warnings: listing.warnings.clone(),
        ..MigrateReport::default()
    };
    if listing.chains.is_empty() {
        return Err(Error::not_found(format!(
            "upstream tar backups on {} (metadata/tar/<host>_<name>/...)",
            source.describe()
        )));
    }
    let existing = target.snapshots().await?.0;
    let staging_root = opts.staging.clone().unwrap_or_else(std::env::temp_dir);
    let mut chains = listing.chains.clone();
    chains.sort_by(|a, b| (&a.name, a.t0).cmp(&(&b.name, b.t0)));
    for chain in &chains {
        let (hostname, backup_name) = split_name(&chain.name);
        if opts.hostname.as_ref().is_some_and(|h| *h != hostname)
            || opts.backup_name.as_ref().is_some_and(|b| *b != backup_name)
        {
            continue;
        }
        let all = listing.chains_of(&chain.name);
        let mut backups = chain.backups.clone();
        backups.sort_by_key(|b| (b.t, b.level));
        let mut parent: Option<Id> = None;
        for b in &backups {
            let time = Timestamp::from_second(b.t)
                .map_err(|e| Error::corrupt(b.metadata_key(), format!("its time: {e}")))?;
            if let Some((id, _)) = existing.iter().find(|(_, s)| {
                s.hostname == hostname && s.backup_name == backup_name && s.time == time
            }) {
                parent = Some(*id);
                report.backups.push(MigratedBackup {
                    data_key: b.data_key(),
                    hostname: hostname.clone(),
                    backup_name: backup_name.clone(),
                    level: b.level,
                    time_stamp: b.t,
                    snapshot_id: *id,
                    existed: true,
                });
                continue;
            }
            // The tree as upstream's restore with --restore-from-date T gives it.
            let levels = layout::select_for_restore(&all, Some(time))?;
            if levels.last().map(|l| (l.t0, l.level, l.t)) != Some((b.t0, b.level, b.t)) {
                report.warnings.push(format!(
                    "{}: skipped: a restore at its time gives another backup (an always-level duplicate of the same second?)",
                    b.data_key()
                ));
                continue;
            }
            let staging = tempfile::Builder::new()
                .prefix(".freezer-migrate-")
                .tempdir_in(&staging_root)
                .map_err(|e| Error::io(staging_root.display(), e))?;
            let dest = staging.path().join("tree");
            let mut ro = TarRestoreOptions::new(&dest);
            ro.restore_from_date = Some(time);
            ro.passphrase = opts.passphrase.clone();
            super::tar::restore(source.clone(), &chain.name, &ro)
                .await
                .map_err(|e| e.context(format!("migrating {}", b.data_key())))?;
            let id = backup_tree(target, &dest, b, &hostname, &backup_name, parent, opts).await?;
            parent = Some(id);
            report.backups.push(MigratedBackup {
                data_key: b.data_key(),
                hostname: hostname.clone(),
                backup_name: backup_name.clone(),
                level: b.level,
                time_stamp: b.t,
                snapshot_id: id,
                existed: false,
            });
        }
    }
    Ok(report)
}

async fn backup_tree(
    target: &mut Repository,
    tree: &Path,
    b: &layout::TarBackup,
    hostname: &str,
    backup_name: &str,
    parent: Option<Id>,
    opts: &MigrateOptions,
) -> Result<Id> {
    let fs = FsSource::new(tree, &FsOptions::default())?;
    // Recorded as the upstream backup it came from, not the staging folder.
    let recorded = PathBuf::from(format!("upstream-tar/{}", b.data_key()));
    let source = Arc::new(crate::source::lvm::SnapshotView::new(fs, recorded));
    let mut bo = BackupOptions::new(hostname, backup_name, opts.actor.clone());
    bo.level = b.level;
    bo.parent = parent;
    bo.time = Some(
        Timestamp::from_second(b.t)
            .map_err(|e| Error::corrupt(b.metadata_key(), format!("its time: {e}")))?,
    );
    let r = crate::engine::backup(target, source, &bo, Arc::new(NoProgress)).await?;
    if !r.is_complete() {
        return Err(Error::io(
            format!("migrating {}", b.data_key()),
            std::io::Error::other(format!("the native backup is incomplete: {:?}", r.warnings)),
        ));
    }
    r.snapshot_id.ok_or_else(|| {
        Error::io(
            format!("migrating {}", b.data_key()),
            std::io::Error::other("no snapshot was written"),
        )
    })
}
