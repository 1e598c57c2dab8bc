//! Prune: removes the data that no snapshot references.
//!
//! Prune walks every tree of every snapshot once and keeps the set of blobs they use, then
//! handles each live storage on its own (each holds its own index files and packs):
//!
//! * a pack whose every blob is used is kept; a pack with no used blob is deleted; a partly
//!   used pack is repacked when more than [`PruneOptions::max_unused`] of its blob bytes are
//!   unused, else kept. A blob held by several packs of a storage needs one copy only.
//! * repacking copies the used blobs' stored bytes as they are (each blob is sealed on its
//!   own) into new packs, data and trees apart, one old pack in memory at a time.
//! * packs in `data/` that no index file of the storage lists (left by an interrupted backup)
//!   are orphans, and go too.
//!
//! The order keeps every blob a snapshot needs covered by the index files on storage at every
//! moment: new packs, then new index files listing every kept and new pack, then removal of the
//! old index files, then deletion of the packs that went. A crash leaves at worst packs and
//! index files that a later prune removes.
//!
//! It must never delete when unsure: an unreadable snapshot, tree or index file, a blob that
//! snapshots use but no index lists (or that the index of a storage holding every snapshot
//! lacks), or a pack the index lists but the storage lacks stops it before anything is deleted
//! anywhere. Memory holds the index, the set of used blobs and a
//! few numbers per pack; never more than one old pack and two new ones.

mod execute;
mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::Progress;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeKind;
use crate::repo::{Actor, Repository, TREE_BATCH};

/// How to prune.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// A partly used pack is repacked when more than this fraction of its blob bytes is unused
    /// (0.0 to 1.0): 0 repacks every partly used pack, 1 never repacks. Default 0.05.
    pub max_unused: f64,
    /// Compute and report only: nothing is written or deleted, not even a lock.
    pub dry_run: bool,
}

impl PruneOptions {
    /// Reads a `max_unused` share: a percentage (`5%`) or a fraction (`0.05`), 0 to 1.
    pub fn parse_share(s: &str) -> Result<f64> {
        let t = s.trim();
        let bad = || {
            Error::bad_input(
                "max_unused",
                format!("{t:?} is not a share: give a percentage (5%) or a fraction (0.05)"),
            )
        };
        let v = match t.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
            None => t.parse::<f64>().map_err(|_| bad())?,
        };
        if !(0.0..=1.0).contains(&v) {
            return Err(bad());
        }
        Ok(v)
    }
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.05,
            dry_run: false,
        }
    }
}

/// What prune did (in a dry run: would do) on one storage, or on all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneStats {
    /// Packs left as they are: every blob used, or an unused share within `max_unused`.
    pub packs_kept: u64,
    /// Packs the index listed that held no used blob: deleted.
    pub packs_deleted: u64,
    /// Partly used packs whose used blobs were copied into new packs: deleted.
    pub packs_repacked: u64,
    /// Packs in `data/` that no index file of the storage listed: deleted.
    pub orphan_packs: u64,
    /// Temporary files that interrupted writes left (`.tmp-*` of a killed process), not
    /// written to for longer than [`crate::repo::lock::LOCK_LIFETIME`]: deleted.
    pub temporaries_deleted: u64,
    /// New packs written by repacking (estimated in a dry run).
    pub packs_written: u64,
    /// Blob copies the index no longer lists: unused blobs, and extra copies of used ones.
    pub blobs_removed: u64,
    /// Blobs copied into new packs.
    pub blobs_repacked: u64,
    /// Stored bytes of the blobs copied into new packs.
    pub bytes_repacked: u64,
    /// Listed size of the packs deleted (unused, repacked and orphans) minus the size of the
    /// new packs (in a dry run, estimated from the blobs to copy).
    pub bytes_freed: u64,
    /// Unused blob bytes left in kept packs.
    pub unused_bytes_kept: u64,
    /// Index files written (estimated in a dry run).
    pub index_files_written: u64,
    /// Index files removed.
    pub index_files_removed: u64,
}

impl PruneStats {
    pub(crate) fn add(&mut self, o: &PruneStats) {
        self.packs_kept += o.packs_kept;
        self.packs_deleted += o.packs_deleted;
        self.packs_repacked += o.packs_repacked;
        self.orphan_packs += o.orphan_packs;
        self.temporaries_deleted += o.temporaries_deleted;
        self.packs_written += o.packs_written;
        self.blobs_removed += o.blobs_removed;
        self.blobs_repacked += o.blobs_repacked;
        self.bytes_repacked += o.bytes_repacked;
        self.bytes_freed += o.bytes_freed;
        self.unused_bytes_kept += o.unused_bytes_kept;
        self.index_files_written += o.index_files_written;
        self.index_files_removed += o.index_files_removed;
    }
}

/// How one storage was pruned.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoragePrune {
    /// The storage, described without secrets.
    pub sink: String,
    /// What was done there (up to the failure, if any).
    pub stats: PruneStats,
    /// Why the storage was left alone or not pruned to the end. What was done before the
    /// failure is safe: the next prune finishes it.
    pub error: Option<String>,
}

/// What a prune did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// Whether this was a dry run (nothing changed; the numbers say what would be done).
    pub dry_run: bool,
    /// Snapshots whose data was kept.
    pub snapshots: u64,
    /// Distinct blobs (trees and data) they use.
    pub used_blobs: u64,
    /// Each storage of the repository, in order.
    pub storages: Vec<StoragePrune>,
    /// The sum over the storages.
    pub total: PruneStats,
    /// Problems that did not stop the prune (a lock that could not be removed...).
    pub warnings: Vec<String>,
}

impl PruneReport {
    /// Whether every storage was pruned to the end.
    pub fn is_complete(&self) -> bool {
        self.storages.iter().all(|s| s.error.is_none())
    }
}

/// Removes from `repo` the packs and blobs that no snapshot references. See the module
/// documentation for what is kept, repacked and deleted, and in which order.
///
/// Takes an exclusive lock, except in a dry run. Fails before deleting anything when a
/// snapshot, tree or index file cannot be read; a storage that fails later is reported in its
/// [`StoragePrune::error`] and the others are pruned still.
pub async fn prune(
    repo: &mut Repository,
    opts: &PruneOptions,
    actor: &Actor,
    progress: Arc<dyn Progress>,
) -> Result<PruneReport> {
    if !(0.0..=1.0).contains(&opts.max_unused) {
        return Err(Error::bad_input(
            "max_unused",
            format!("{} is not a fraction between 0 and 1", opts.max_unused),
        ));
    }
    let lock = if opts.dry_run {
        None
    } else {
        Some(repo.lock(true, "prune", actor).await?)
    };
    let mut result = run(repo, opts, progress.as_ref(), lock.as_ref()).await;
    if let (Ok(report), Some(lock)) = (&mut result, &lock) {
        report.warnings.extend(lock.notes.iter().cloned());
    }
    if let Some(lock) = lock {
        let released = lock.release().await;
        if let (Ok(report), Err(e)) = (&mut result, released) {
            report
                .warnings
                .push(format!("could not remove the lock: {e}"));
        }
    }
    result
}

async fn run(
    repo: &mut Repository,
    opts: &PruneOptions,
    progress: &dyn Progress,
    lock: Option<&crate::repo::lock::LockGuard>,
) -> Result<PruneReport> {
    let tee = repo.tee().clone();
    // A storage that cannot list its snapshots is left alone: its snapshots would be unknown.
    let mut listed: Vec<HashSet<String>> = vec![HashSet::new(); tee.len()];
    for (i, keys) in listed.iter_mut().enumerate() {
        if tee.live() & (1 << i) == 0 {
            continue;
        }
        match tee.member(i).list("snapshots/").await {
            Ok(list) => keys.extend(list.into_iter().map(|m| m.key)),
            Err(e) => tee.fail(i, &e),
        }
    }
    let warned = repo.warnings().len();
    repo.load_index().await?;
    if repo.warnings().len() > warned {
        // The packs of an unreadable index file would look like orphans.
        return Err(Error::corrupt(
            "the index",
            format!(
                "{}; prune stopped before deleting anything (`freezer repair index` rebuilds the index from the packs)",
                repo.warnings()[warned..].join("; ")
            ),
        ));
    }
    let (snaps, bad) = repo.snapshots().await?;
    if !bad.is_empty() {
        return Err(Error::corrupt(
            "snapshots",
            format!(
                "{} unreadable ({}); prune stopped before deleting anything (`freezer forget ID` or `freezer repair snapshots` sets an unreadable snapshot aside)",
                bad.len(),
                bad.join("; ")
            ),
        ));
    }
    // Every snapshot a storage listed must be among those read: one missing (a listing that
    // failed the second time) would have its data deleted.
    let read: HashSet<String> = snaps
        .iter()
        .map(|(id, _)| format!("snapshots/{id}"))
        .collect();
    for (i, keys) in listed.iter().enumerate() {
        let is_snapshot = |k: &str| {
            k.rsplit('/')
                .next()
                .is_some_and(|h| Id::from_hex(h).is_ok())
        };
        if let Some(k) = keys.iter().find(|k| is_snapshot(k) && !read.contains(*k)) {
            return Err(Error::io(
                format!("{} on {}", k, tee.member(i).describe()),
                std::io::Error::other(
                    "listed but not read; prune stopped before deleting anything, run it again",
                ),
            ));
        }
    }
    let used = used_blobs(repo, &snaps, progress).await?;

    // Plan every storage before touching any: a storage found inconsistent stops it all.
    let live = tee.live();
    let mut plans = Vec::with_capacity(tee.len());
    for (i, snapshot_keys) in listed.iter().enumerate() {
        plans.push(if live & (1 << i) != 0 {
            // A storage with every snapshot must hold every used blob.
            let holds_all = snaps
                .iter()
                .all(|(id, _)| snapshot_keys.contains(&format!("snapshots/{id}")));
            Some(plan::plan_storage(repo, i, &used, holds_all, opts.max_unused).await?)
        } else {
            None
        });
    }
    progress.set_total(
        plans
            .iter()
            .flatten()
            .map(|p| p.copy_bytes.iter().sum::<u64>())
            .sum(),
    );

    let mut report = PruneReport {
        dry_run: opts.dry_run,
        snapshots: snaps.len() as u64,
        used_blobs: used.len() as u64,
        ..PruneReport::default()
    };
    let status = tee.status();
    for (i, plan) in plans.iter().enumerate() {
        let sink = tee.member(i).describe();
        let entry = match plan {
            None => StoragePrune {
                sink,
                stats: PruneStats::default(),
                error: Some(format!(
                    "left alone: {}",
                    status[i].error.as_deref().unwrap_or("not reachable")
                )),
            },
            Some(plan) if opts.dry_run => StoragePrune {
                sink,
                stats: plan.estimate(repo.config().pack_size),
                error: None,
            },
            Some(plan) => {
                let mut stats = PruneStats::default();
                let done = execute::execute(repo, plan, &used, progress, &mut stats, lock).await;
                StoragePrune {
                    sink,
                    stats,
                    error: done.err().map(|e| e.to_string()),
                }
            }
        };
        report.total.add(&entry.stats);
        report.storages.push(entry);
    }
    if !opts.dry_run {
        // The index in memory described the packs that went.
        repo.load_index().await?;
    }
    Ok(report)
}

/// Walks the trees of every snapshot, a level at a time and a batch of trees per request,
/// and returns every blob they use. Fails on the first tree that cannot be read, and when a
/// used data blob is in no index file.
async fn used_blobs(
    repo: &Repository,
    snaps: &[(Id, Snapshot)],
    progress: &dyn Progress,
) -> Result<HashSet<Id>> {
    let reader = repo.reader();
    let index = repo.index();
    let mut used = HashSet::new();
    // Trees apart from the used set, so that a data blob with the bytes of a tree (a file
    // holding one) never hides that tree's content.
    let mut trees = HashSet::new();
    // Each tree to read with a snapshot that holds it, to name in errors.
    let mut level: Vec<(Id, Id)> = Vec::new();
    for (sid, s) in snaps {
        if trees.insert(s.tree) {
            used.insert(s.tree);
            level.push((s.tree, *sid));
        }
    }
    let mut missing: Option<(Id, Id)> = None;
    let mut missing_count = 0u64;
    while !level.is_empty() {
        let mut next = Vec::new();
        for batch in level.chunks(TREE_BATCH) {
            let owner: HashMap<Id, Id> = batch.iter().copied().collect();
            let ids: Vec<Id> = batch.iter().map(|(t, _)| *t).collect();
            for (id, tree) in reader.read_trees(&ids).await {
                let snap = owner.get(&id).copied().unwrap_or_default();
                let tree = tree.map_err(|e| {
                        e.context(format!(
                            "prune stopped before deleting anything (`freezer check` says more): snapshot {snap}, tree {id}"
                        ))
                    })?;
                progress.add_entries(1);
                for node in &tree.nodes {
                    for blob in &node.content {
                        if used.insert(*blob) && index.get(blob).is_none() {
                            missing_count += 1;
                            missing.get_or_insert((*blob, snap));
                        }
                    }
                    if let (NodeKind::Dir, Some(sub)) = (node.kind(), node.subtree)
                        && trees.insert(sub)
                    {
                        used.insert(sub);
                        next.push((sub, snap));
                    }
                }
            }
        }
        level = next;
    }
    if let Some((blob, snap)) = missing {
        // Its pack may be listed by an index file that is lost: it would look like an orphan.
        return Err(Error::corrupt(
            format!("snapshot {snap}"),
            format!(
                "{missing_count} blob(s) it or other snapshots use are in no index file (first: {blob}); prune stopped before deleting anything (`freezer repair index` indexes the packs that hold them; `freezer check` names what is lost)"
            ),
        ));
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up() {
        let a = PruneStats {
            packs_deleted: 2,
            bytes_freed: 10,
            index_files_written: 1,
            ..PruneStats::default()
        };
        let mut t = PruneStats::default();
        t.add(&a);
        t.add(&a);
        assert_eq!(t.packs_deleted, 4);
        assert_eq!(t.bytes_freed, 20);
        assert_eq!(t.index_files_written, 2);
        assert_eq!(t.packs_kept, 0);
    }
}
