//! The plan of a prune on one storage: which packs stay, go or are repacked, which copy of
//! each used blob stays, and what the repacks will copy. It reads listings only and never
//! changes anything.

use std::collections::HashSet;

use super::PruneStats;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::index::{INDEX_FILE_BLOBS, Location};
use crate::repo::lock::LOCK_LIFETIME;
use crate::repo::pack::BlobType;
use crate::repo::{Repository, pack_key};
use crate::sink::{Sink, SinkMask, Temporary};

/// Header bytes a packed blob costs, about: for the estimates of a dry run.
const HEADER_BYTES_PER_BLOB: u64 = 40;

/// What becomes of a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Keep,
    Delete,
    Repack,
}

/// How much of a pack is used, as the index of one storage says.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PackUse {
    /// Stored bytes of the blobs listed in the pack.
    pub(super) total: u64,
    /// Stored bytes of the used blobs whose kept copy is this one.
    pub(super) used: u64,
    /// Blobs listed.
    pub(super) blobs: u64,
    /// Used blobs whose kept copy is this one.
    pub(super) used_blobs: u64,
    /// Blobs to copy out of it when it is repacked, and their stored bytes.
    pub(super) copy_blobs: u64,
    pub(super) copy_bytes: u64,
}

fn classify(u: &PackUse, max_unused: f64) -> Action {
    if u.used_blobs == 0 {
        Action::Delete
    } else if u.used_blobs == u.blobs {
        Action::Keep
    } else if (u.total - u.used) as f64 > max_unused * u.total as f64 {
        Action::Repack
    } else {
        Action::Keep
    }
}

/// One pack that a storage's index lists.
#[derive(Clone, Debug)]
pub(super) struct PackPlan {
    pub(super) id: Id,
    /// Its size as listed.
    pub(super) size: u64,
    pub(super) usage: PackUse,
    pub(super) action: Action,
}

/// What will be done on one storage.
#[derive(Debug)]
pub(super) struct StoragePlan {
    /// The tee member.
    pub(super) member: usize,
    /// Its index files, sorted.
    pub(super) index_files: Vec<String>,
    /// By position in the index: the packs this storage lists (and holds).
    pub(super) packs: Vec<Option<PackPlan>>,
    /// Packs in `data/` that no index file of the storage lists, with their sizes.
    pub(super) orphans: Vec<(Id, u64)>,
    /// Temporary files that interrupted puts left, not written to for longer than
    /// [`LOCK_LIFETIME`] (no live operation can be writing them), with their sizes.
    pub(super) temporaries: Vec<(String, u64)>,
    /// Stored bytes to copy, data and trees.
    pub(super) copy_bytes: [u64; 2],
}

pub(super) fn slot(kind: BlobType) -> usize {
    match kind {
        BlobType::Data => 0,
        BlobType::Tree => 1,
    }
}

impl StoragePlan {
    pub(super) fn bit(&self) -> SinkMask {
        1 << self.member
    }

    pub(super) fn action(&self, pos: u32) -> Option<Action> {
        self.packs[pos as usize].as_ref().map(|p| p.action)
    }

    /// The copy of a used blob this storage keeps: the first one in a pack it lists.
    fn pick(&self, locs: &[Location]) -> Option<Location> {
        locs.iter()
            .find(|l| self.packs[l.pack as usize].is_some())
            .copied()
    }

    /// Where to copy a used blob from: its pick, when that goes to a repack and no kept pack
    /// holds another copy.
    pub(super) fn must_copy(&self, locs: &[Location]) -> Option<Location> {
        let pick = self.pick(locs)?;
        let kept_elsewhere = locs
            .iter()
            .any(|l| self.action(l.pack) == Some(Action::Keep));
        (self.action(pick.pack) == Some(Action::Repack) && !kept_elsewhere).then_some(pick)
    }

    pub(super) fn packs_with(&self, action: Action) -> impl Iterator<Item = (u32, &PackPlan)> {
        self.packs
            .iter()
            .enumerate()
            .filter_map(move |(pos, p)| match p {
                Some(p) if p.action == action => Some((pos as u32, p)),
                _ => None,
            })
    }

    /// Whether the index files change: some pack they list goes.
    pub(super) fn rewrites_index(&self) -> bool {
        self.packs_with(Action::Delete).next().is_some()
            || self.packs_with(Action::Repack).next().is_some()
    }

    /// What is known without doing it: exact counts, estimated sizes of what would be written.
    pub(super) fn estimate(&self, pack_size: u32) -> PruneStats {
        let mut s = PruneStats {
            orphan_packs: self.orphans.len() as u64,
            temporaries_deleted: self.temporaries.len() as u64,
            ..PruneStats::default()
        };
        let mut freed: u64 = self.orphans.iter().map(|(_, size)| size).sum::<u64>()
            + self.temporaries.iter().map(|(_, size)| size).sum::<u64>();
        let mut listed = 0;
        for p in self.packs.iter().flatten() {
            match p.action {
                Action::Keep => {
                    s.packs_kept += 1;
                    s.unused_bytes_kept += p.usage.total - p.usage.used;
                    listed += p.usage.blobs;
                }
                Action::Delete => {
                    s.packs_deleted += 1;
                    s.blobs_removed += p.usage.blobs;
                    freed += p.size;
                }
                Action::Repack => {
                    s.packs_repacked += 1;
                    s.blobs_removed += p.usage.blobs - p.usage.copy_blobs;
                    s.blobs_repacked += p.usage.copy_blobs;
                    s.bytes_repacked += p.usage.copy_bytes;
                    freed += p.size;
                }
            }
        }
        s.packs_written = self
            .copy_bytes
            .iter()
            .map(|b| b.div_ceil(u64::from(pack_size)))
            .sum();
        s.bytes_freed =
            freed.saturating_sub(s.bytes_repacked + s.blobs_repacked * HEADER_BYTES_PER_BLOB);
        if self.rewrites_index() {
            s.index_files_removed = self.index_files.len() as u64;
            s.index_files_written = (listed + s.blobs_repacked).div_ceil(INDEX_FILE_BLOBS as u64);
        }
        s
    }
}

/// The temporary files of `sink` that nobody wrote to for longer than [`LOCK_LIFETIME`]:
/// left by a process killed while writing (a live one refreshes its lock more often, and
/// writes each temporary in one go). A storage that cannot list them has none to remove:
/// leftovers only waste space, and must not stop a prune.
async fn stale_temporaries(sink: &dyn Sink) -> Vec<(String, u64)> {
    let now = crate::time::now();
    let old =
        |t: &Temporary| now.as_second() - t.modified.as_second() > LOCK_LIFETIME.as_secs() as i64;
    match sink.list_temporaries("").await {
        Ok(list) => list
            .into_iter()
            .filter(old)
            .map(|t| (t.key, t.size))
            .collect(),
        Err(e) => {
            tracing::debug!(sink = %sink.describe(), error = %e, "temporaries not listed");
            vec![]
        }
    }
}

/// Classifies the packs of storage `i`. Reads listings only.
pub(super) async fn plan_storage(
    repo: &Repository,
    i: usize,
    used: &HashSet<Id>,
    holds_all: bool,
    max_unused: f64,
) -> Result<StoragePlan> {
    let member = repo.tee().member(i);
    let index = repo.index();
    let bit: SinkMask = 1 << i;
    let mut index_files: Vec<String> = member
        .list("index/")
        .await?
        .into_iter()
        .map(|m| m.key)
        .collect();
    index_files.sort();
    let mut plan = StoragePlan {
        member: i,
        index_files,
        packs: vec![None; index.packs().len()],
        orphans: vec![],
        temporaries: stale_temporaries(member.as_ref()).await,
        copy_bytes: [0; 2],
    };
    for meta in member.list("data/").await? {
        let Some(Ok(id)) = meta.key.rsplit('/').next().map(Id::from_hex) else {
            continue;
        };
        if pack_key(&id) != meta.key {
            continue; // not a pack: left alone
        }
        match index.pack_pos(&id) {
            Some(pos) if index.pack(pos).sinks & bit != 0 => {
                plan.packs[pos as usize] = Some(PackPlan {
                    id,
                    size: meta.size,
                    usage: PackUse::default(),
                    action: Action::Keep,
                });
            }
            // On a storage missing some snapshots, its own index cannot be checked against
            // what its snapshots use: a pack its index lost would look like an orphan.
            _ if holds_all => plan.orphans.push((id, meta.size)),
            _ => {}
        }
    }
    let missing: Vec<Id> = index
        .packs()
        .iter()
        .enumerate()
        .filter(|(pos, p)| p.sinks & bit != 0 && plan.packs[*pos].is_none())
        .map(|(_, p)| p.id)
        .collect();
    if let Some(first) = missing.first() {
        return Err(Error::corrupt(
            format!("repository at {}", member.describe()),
            format!(
                "{} pack(s) its index lists are missing from data/ (first: {first}); prune stopped before deleting anything (`freezer repair index` drops them from the index; `freezer check` names what is lost)",
                missing.len()
            ),
        ));
    }
    if holds_all {
        // Every snapshot here needs its blobs here: when the index lacks some, an index
        // file was lost, and the packs it listed would look like orphans.
        let mut lacking = used
            .iter()
            .filter(|id| plan.pick(&index.locations(id)).is_none());
        if let Some(first) = lacking.next() {
            return Err(Error::corrupt(
                format!("repository at {}", member.describe()),
                format!(
                    "its index lacks {} blob(s) its snapshots use (first: {first}); prune stopped before deleting anything (`freezer repair index` indexes the packs that hold them; `freezer check` names what is lost)",
                    1 + lacking.count()
                ),
            ));
        }
    }
    // Which copy of each used blob stays, and so how much of each pack is used.
    for (id, locs) in index.blobs() {
        let pick = if used.contains(&id) {
            plan.pick(&locs)
        } else {
            None
        };
        for l in locs {
            let Some(p) = plan.packs[l.pack as usize].as_mut() else {
                continue;
            };
            p.usage.total += u64::from(l.length);
            p.usage.blobs += 1;
            if pick == Some(l) {
                p.usage.used += u64::from(l.length);
                p.usage.used_blobs += 1;
            }
        }
    }
    for p in plan.packs.iter_mut().flatten() {
        p.action = classify(&p.usage, max_unused);
    }
    // What the repacks will copy: a blob a kept pack holds needs no other copy.
    for (id, locs) in index.blobs() {
        if !used.contains(&id) {
            continue;
        }
        if let Some(l) = plan.must_copy(&locs) {
            let p = plan.packs[l.pack as usize]
                .as_mut()
                .expect("a pick is in a listed pack");
            p.usage.copy_blobs += 1;
            p.usage.copy_bytes += u64::from(l.length);
            plan.copy_bytes[slot(l.kind)] += u64::from(l.length);
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(total: u64, used: u64, blobs: u64, used_blobs: u64) -> PackUse {
        PackUse {
            total,
            used,
            blobs,
            used_blobs,
            ..PackUse::default()
        }
    }

    #[test]
    fn packs_are_kept_deleted_or_repacked_by_their_unused_share() {
        assert_eq!(classify(&usage(100, 100, 3, 3), 0.05), Action::Keep);
        assert_eq!(classify(&usage(100, 0, 3, 0), 0.05), Action::Delete);
        assert_eq!(classify(&usage(0, 0, 0, 0), 0.05), Action::Delete);
        // 4% unused: kept at 5%, repacked at 0.
        assert_eq!(classify(&usage(100, 96, 3, 2), 0.05), Action::Keep);
        assert_eq!(classify(&usage(100, 96, 3, 2), 0.0), Action::Repack);
        // 6% unused: repacked at 5%, kept at 1.
        assert_eq!(classify(&usage(100, 94, 3, 2), 0.05), Action::Repack);
        assert_eq!(classify(&usage(100, 6, 3, 1), 1.0), Action::Keep);
    }

    #[test]
    fn a_blob_kept_elsewhere_is_not_copied() {
        let pack = |action| {
            Some(PackPlan {
                id: Id::default(),
                size: 0,
                usage: PackUse::default(),
                action,
            })
        };
        let plan = StoragePlan {
            member: 0,
            index_files: vec![],
            packs: vec![pack(Action::Repack), None, pack(Action::Keep)],
            orphans: vec![],
            temporaries: vec![],
            copy_bytes: [0; 2],
        };
        let loc = |pack| Location {
            pack,
            offset: 0,
            length: 10,
            ulen: 0,
            kind: BlobType::Data,
        };
        // Only in the pack to repack: copied from there.
        assert_eq!(plan.must_copy(&[loc(1), loc(0)]), Some(loc(0)));
        // Also in a kept pack: not copied.
        assert_eq!(plan.must_copy(&[loc(0), loc(2)]), None);
        // Picked in a kept pack, or not on this storage at all: not copied.
        assert_eq!(plan.must_copy(&[loc(2), loc(0)]), None);
        assert_eq!(plan.must_copy(&[loc(1)]), None);
    }
}
