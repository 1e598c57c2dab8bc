//! Copying snapshots from one repository to another.
//!
//! The repositories may differ in everything: storages, keys, chunking and pack sizes. Each
//! snapshot of the source is backed up into the target with the source snapshot as the source
//! ([`SnapshotSource`]): every chunk is verified on the way out of the source and deduplicated
//! on the way in, so the target receives only the data it lacks. The copy keeps the snapshot's
//! series, time, level, path and exclusions; its parent is the target's newest earlier copy of
//! the series, so a file whose recorded metadata did not change since that copy is not even
//! read from the source.
//!
//! A snapshot is already in the target when the target holds one of the same series, path and
//! time; those are skipped, which makes a copy safe to repeat or resume.

use std::sync::Arc;

use super::{BackupOptions, BackupResult, Progress, backup};
use crate::error::Result;
use crate::id::Id;
use crate::repo::snapshot::Snapshot;
use crate::repo::{Actor, Repository};
use crate::source::snapshot::SnapshotSource;

/// What to copy.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Source snapshots to copy (ids); empty copies every snapshot.
    pub snapshots: Vec<Id>,
    /// Only snapshots of this host.
    pub hostname: Option<String>,
    /// Only snapshots of this series.
    pub backup_name: Option<String>,
    /// Who runs the copy (for the target's lock).
    pub actor: Actor,
}

impl CopyOptions {
    /// Copy everything.
    pub fn new(actor: Actor) -> Self {
        CopyOptions {
            snapshots: vec![],
            hostname: None,
            backup_name: None,
            actor,
        }
    }
}

/// One copied snapshot.
#[derive(Debug, serde::Serialize)]
pub struct CopiedSnapshot {
    /// Its id in the source.
    pub source: Id,
    /// The backup into the target (its new id and each storage's outcome).
    pub result: BackupResult,
}

/// What a copy did.
#[derive(Debug, Default, serde::Serialize)]
pub struct CopyReport {
    /// Snapshots copied, oldest first.
    pub copied: Vec<CopiedSnapshot>,
    /// Source snapshots the target already held.
    pub skipped: Vec<Id>,
    /// Source snapshots that could not be read, with why (they were not copied).
    pub unreadable: Vec<String>,
}

impl CopyReport {
    /// Whether every selected snapshot is now complete on every storage of the target.
    pub fn is_complete(&self) -> bool {
        self.unreadable.is_empty() && self.copied.iter().all(|c| c.result.is_complete())
    }
}

fn same_snapshot(a: &Snapshot, b: &Snapshot) -> bool {
    a.time == b.time
        && a.hostname == b.hostname
        && a.backup_name == b.backup_name
        && a.path_to_backup == b.path_to_backup
        && a.mode == b.mode
}

/// Copies the selected snapshots of `source` into `target`, oldest first.
pub async fn copy(
    source: &mut Repository,
    target: &mut Repository,
    opts: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<CopyReport> {
    let lock = source.lock_to_read("copy", &opts.actor).await?;
    lock.log_notes();
    source.load_index().await?;
    let (mut wanted, unreadable) = source.snapshots().await?;
    wanted.retain(|(id, s)| {
        (opts.snapshots.is_empty() || opts.snapshots.contains(id))
            && opts.hostname.as_ref().is_none_or(|h| *h == s.hostname)
            && opts
                .backup_name
                .as_ref()
                .is_none_or(|n| *n == s.backup_name)
    });
    wanted.sort_by_key(|(_, s)| s.time);
    let mut report = CopyReport {
        unreadable,
        ..CopyReport::default()
    };
    let mut have = target.snapshots().await?.0;
    for (id, snap) in wanted {
        if have.iter().any(|(_, t)| same_snapshot(t, &snap)) {
            report.skipped.push(id);
            continue;
        }
        // The parent: the target's newest earlier snapshot of the series.
        let parent = have
            .iter()
            .filter(|(_, t)| {
                t.hostname == snap.hostname
                    && t.backup_name == snap.backup_name
                    && t.path_to_backup == snap.path_to_backup
                    && t.time < snap.time
            })
            .max_by_key(|(_, t)| t.time)
            .map(|(id, _)| *id);
        // A snapshot whose top tree is gone cannot be copied; the others still can.
        if let Err(e) = source.read_tree(&snap.tree).await {
            report
                .unreadable
                .push(format!("snapshot {}: {e}", id.short()));
            continue;
        }
        let mut o = BackupOptions::new(&snap.hostname, &snap.backup_name, opts.actor.clone());
        o.time = Some(snap.time);
        o.level = snap.level;
        o.parent = parent;
        o.excludes = snap.excludes.clone();
        let src = SnapshotSource::new(
            source.reader(),
            snap.clone(),
            tokio::runtime::Handle::current(),
        );
        let result = backup(target, src, &o, progress.clone())
            .await
            .map_err(|e| e.context(format!("copying snapshot {}", id.short())))?;
        if let Some(new_id) = result.snapshot_id {
            have.push((new_id, result.snapshot.clone()));
        }
        report.copied.push(CopiedSnapshot { source: id, result });
    }
    Ok(report)
}
