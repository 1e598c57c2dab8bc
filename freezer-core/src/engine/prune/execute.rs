//! Carrying out the plan of one storage, in the order that keeps every used blob covered by
//! the index files on storage: first what no index file lists (orphan packs, stale temporary
//! files), which frees space on a full storage before anything is written; then new packs, new
//! index files, removal of the old index files, deletion of the packs that went. Each step that
//! fails stops the storage's prune before the next one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;

use super::PruneStats;
use super::plan::{Action, PackPlan, StoragePlan, slot};
use crate::engine::{Progress, storage_failed};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::index::{IndexFile, IndexFileSplitter};
use crate::repo::pack::{self, DecodeScratch, EncodedBlob, PackWriter, PackedBlob};
use crate::repo::{Repository, object, pack_key};
use crate::sink::{Sink, SinkExt};

/// Deletions in flight at once.
const DELETE_CONCURRENCY: usize = 16;

/// Why a pack is deleted.
#[derive(Clone, Copy, Debug)]
enum Gone {
    /// No used blob in it.
    Unused,
    /// Its used blobs are in new packs.
    Repacked,
}

/// Carries out `plan`, recording in `stats` what was done, even when it fails part way.
pub(super) async fn execute(
    repo: &Repository,
    plan: &StoragePlan,
    used: &HashSet<Id>,
    progress: &dyn Progress,
    stats: &mut PruneStats,
    lock: Option<&crate::repo::lock::LockGuard>,
) -> Result<()> {
    // Deleting is only safe while the exclusive lock certainly stands.
    let held = || lock.map_or(Ok(()), |l| l.ensure_held("prune"));
    let member = repo.tee().member(plan.member).clone();
    let bit = plan.bit();
    for (_, p) in plan.packs_with(Action::Keep) {
        stats.packs_kept += 1;
        stats.unused_bytes_kept += p.usage.total - p.usage.used;
    }

    // 0. What no index file lists: deleting it changes nothing any snapshot needs, and frees
    // space for what the next steps write.
    held()?;
    let mut freed = 0;
    let mut failed = Vec::new();
    let early: Vec<(String, u64, bool)> = plan
        .orphans
        .iter()
        .map(|(id, size)| (pack_key(id), *size, true))
        .chain(
            plan.temporaries
                .iter()
                .map(|(k, size)| (k.clone(), *size, false)),
        )
        .collect();
    let results = delete_all(&member, early.iter().map(|(k, ..)| k.clone()).collect()).await;
    let sizes: HashMap<&str, (u64, bool)> = early
        .iter()
        .map(|(k, size, orphan)| (k.as_str(), (*size, *orphan)))
        .collect();
    for (key, r) in results {
        let (size, orphan) = sizes[key.as_str()];
        match r {
            Ok(()) => {
                freed += size;
                *if orphan {
                    &mut stats.orphan_packs
                } else {
                    &mut stats.temporaries_deleted
                } += 1;
            }
            Err(e) => failed.push(e.context(&key)),
        }
    }
    stats.bytes_freed = freed;

    // 1. New packs with the used blobs of the packs to repack.
    let mut repacker = Repacker {
        repo,
        plan,
        writers: [PackWriter::default(), PackWriter::default()],
        scratch: DecodeScratch::default(),
        new_packs: Vec::new(),
        written: 0,
        stats,
    };
    let repacked = async {
        for (pos, p) in plan.packs_with(Action::Repack) {
            repacker.repack(pos, p, used, progress).await?;
        }
        repacker.finish().await
    };
    let (new_packs, written) = repacked.await.map_err(|e| {
        e.context("repacking; no pack an index file lists was deleted on this storage")
    })?;
    // A new pack may have the bytes, and so the name, of a pack that goes: it stays.
    let fresh: HashSet<String> = new_packs.iter().map(|(id, _)| pack_key(id)).collect();

    // 1b. On a full storage (`--no-lock`, nothing to repack) the new index files may not fit
    // until something is deleted: the packs no snapshot uses go first. Should prune stop
    // before the index is rewritten, the old index lists packs that are gone but that nothing
    // needs: a backup does not trust a missing pack, and `repair index` rewrites the index.
    let mut early_gone: HashSet<String> = HashSet::new();
    if repo.no_lock() && new_packs.is_empty() && plan.packs_with(Action::Repack).next().is_none() {
        let unused: Vec<(String, u64)> = plan
            .packs_with(Action::Delete)
            .map(|(_, p)| (pack_key(&p.id), p.size))
            .collect();
        let sizes: HashMap<&str, u64> = unused.iter().map(|(k, s)| (k.as_str(), *s)).collect();
        let results = delete_all(&member, unused.iter().map(|(k, _)| k.clone()).collect()).await;
        for (key, r) in results {
            match r {
                Ok(()) => {
                    freed += sizes[key.as_str()];
                    stats.packs_deleted += 1;
                    early_gone.insert(key);
                }
                Err(e) => failed.push(e.context(&key)),
            }
        }
        stats.bytes_freed = freed;
    }

    // 2. New index files listing every kept and new pack, then the old ones removed.
    if plan.rewrites_index() {
        let mut listed: HashSet<Id> = HashSet::new();
        let mut new_keys: HashSet<String> = HashSet::new();
        let mut files = IndexFileSplitter::default();
        let flush = |file: IndexFile| async move {
            let (id, _) = repo.write_index(&file, bit).await?;
            Ok::<String, Error>(format!("index/{id}"))
        };
        for key in &plan.index_files {
            let old = read_index_file(repo, key, plan.member).await?;
            for (pack, packed) in old.packs {
                let keep = repo
                    .index()
                    .pack_pos(&pack)
                    .and_then(|pos| plan.action(pos))
                    == Some(Action::Keep);
                if keep
                    && listed.insert(pack)
                    && let Some(full) = files.push(pack, packed)
                {
                    new_keys.insert(flush(full).await?);
                    stats.index_files_written += 1;
                }
            }
        }
        if listed.len() as u64 != stats.packs_kept {
            return Err(Error::corrupt(
                format!("index of {}", member.describe()),
                format!(
                    "its files list {} of the {} packs to keep; changed while pruning? Old index files and packs are left in place",
                    listed.len(),
                    stats.packs_kept
                ),
            ));
        }
        for (pack, packed) in new_packs {
            if listed.insert(pack)
                && let Some(full) = files.push(pack, packed)
            {
                new_keys.insert(flush(full).await?);
                stats.index_files_written += 1;
            }
        }
        if let Some(last) = files.finish() {
            new_keys.insert(flush(last).await?);
            stats.index_files_written += 1;
        }
        let old: Vec<String> = plan
            .index_files
            .iter()
            .filter(|k| !new_keys.contains(*k))
            .cloned()
            .collect();
        held()?;
        let results = delete_all(&member, old).await;
        stats.index_files_removed += results.iter().filter(|(_, r)| r.is_ok()).count() as u64;
        if let Some((key, Err(e))) = results.into_iter().find(|(_, r)| r.is_err()) {
            // The packs stay: an index file that is left may list them.
            return Err(e.context(format!(
                "removing the old index file {key}; no pack was deleted"
            )));
        }
        for (_, p) in plan.packs_with(Action::Delete) {
            stats.blobs_removed += p.usage.blobs;
        }
        for (_, p) in plan.packs_with(Action::Repack) {
            stats.blobs_removed += p.usage.blobs - p.usage.copy_blobs;
        }
    }

    // 3. The packs that went.
    let mut doomed: HashMap<String, (Gone, u64)> = HashMap::new();
    for (action, why) in [
        (Action::Delete, Gone::Unused),
        (Action::Repack, Gone::Repacked),
    ] {
        for (_, p) in plan.packs_with(action) {
            doomed.insert(pack_key(&p.id), (why, p.size));
        }
    }
    doomed.retain(|key, _| !fresh.contains(key) && !early_gone.contains(key));
    held()?;
    let results = delete_all(&member, doomed.keys().cloned().collect()).await;
    for (key, r) in results {
        let (why, size) = doomed[&key];
        match r {
            Ok(()) => {
                freed += size;
                *match why {
                    Gone::Unused => &mut stats.packs_deleted,
                    Gone::Repacked => &mut stats.packs_repacked,
                } += 1;
            }
            Err(e) => failed.push(e.context(&key)),
        }
    }
    stats.bytes_freed = freed.saturating_sub(written);
    match failed.into_iter().next() {
        None => Ok(()),
        Some(first) => Err(first.context(
            "some packs could not be deleted (the index no longer lists them: the next prune removes them)",
        )),
    }
}

/// Copies used blobs out of the packs to repack into new packs of the repository's size,
/// data and trees apart.
struct Repacker<'a> {
    repo: &'a Repository,
    plan: &'a StoragePlan,
    /// The open new packs: data, trees.
    writers: [PackWriter; 2],
    scratch: DecodeScratch,
    /// The new packs written, with their blobs.
    new_packs: Vec<(Id, Vec<PackedBlob>)>,
    /// Their bytes.
    written: u64,
    stats: &'a mut PruneStats,
}

impl Repacker<'_> {
    /// Reads pack `p` (at index position `pos`) whole, verifies it, and copies the blobs to
    /// keep out of it.
    async fn repack(
        &mut self,
        pos: u32,
        p: &PackPlan,
        used: &HashSet<Id>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let (repo, plan) = (self.repo, self.plan);
        let member = repo.tee().member(plan.member);
        let crypto = repo.crypto();
        let key = pack_key(&p.id);
        let what = format!("{}/{key}", member.describe());
        let bytes = member.get_bytes(&key).await?;
        if Id::of_stored(&bytes) != p.id {
            return Err(Error::corrupt(&what, "content does not match its name"));
        }
        let header = pack::decode_header(crypto, &bytes, bytes.len() as u64, &what)?;
        let mut copied = 0;
        for b in &header {
            if !used.contains(&b.id) {
                continue;
            }
            let Some(loc) = plan.must_copy(&repo.index().locations(&b.id)) else {
                continue;
            };
            if loc.pack != pos || loc.offset != b.offset {
                continue;
            }
            if loc.packed(b.id) != *b {
                return Err(Error::corrupt(
                    &what,
                    format!("its header and the index disagree about blob {}", b.id),
                ));
            }
            // `decode_header` checked that every blob lies inside the pack.
            let stored = &bytes[b.offset as usize..(b.offset + b.length) as usize];
            let plain_len = pack::decode_blob_with(
                crypto,
                &mut self.scratch,
                stored,
                b,
                &format_args!("blob {} in {what}", b.id),
            )?
            .len();
            // A copy of its own, so that the old pack's buffer goes when this pack is done.
            let blob = EncodedBlob {
                id: b.id,
                kind: b.kind,
                data: Bytes::copy_from_slice(stored),
                ulen: b.ulen,
                plain_len: plain_len as u32,
            };
            let w = &mut self.writers[slot(b.kind)];
            w.add(&blob);
            copied += 1;
            self.stats.blobs_repacked += 1;
            self.stats.bytes_repacked += u64::from(b.length);
            progress.add_bytes(u64::from(b.length));
            if w.size() >= repo.config().pack_size as usize {
                self.flush(slot(b.kind)).await?;
            }
        }
        if copied != p.usage.copy_blobs {
            return Err(Error::corrupt(
                &what,
                format!(
                    "holds {copied} of the {} used blobs the index places in it",
                    p.usage.copy_blobs
                ),
            ));
        }
        Ok(())
    }

    /// Finishes the open pack `slot` and writes it to the plan's storage.
    async fn flush(&mut self, slot: usize) -> Result<()> {
        let pack = std::mem::take(&mut self.writers[slot]).finish(self.repo.crypto());
        let bit = self.plan.bit();
        if self.repo.write_pack(&pack, bit).await & bit == 0 {
            return Err(storage_failed(
                self.repo,
                self.plan.member,
                &format!("writing new pack {}", pack.id),
            ));
        }
        self.written += pack.payload.len() as u64;
        self.stats.packs_written += 1;
        self.new_packs.push((pack.id, pack.blobs));
        Ok(())
    }

    /// Writes the packs still open; returns every new pack and their total size.
    async fn finish(mut self) -> Result<(Vec<(Id, Vec<PackedBlob>)>, u64)> {
        for slot in 0..self.writers.len() {
            if self.writers[slot].count() > 0 {
                self.flush(slot).await?;
            }
        }
        Ok((self.new_packs, self.written))
    }
}

/// Reads index file `key`, from storage `first` or, failing that, from another live storage
/// (the same name means the same bytes).
async fn read_index_file(repo: &Repository, key: &str, first: usize) -> Result<IndexFile> {
    let tee = repo.tee();
    let expected = key.rsplit('/').next().and_then(|h| Id::from_hex(h).ok());
    let others = (0..tee.len()).filter(|&j| j != first && tee.live() & (1 << j) != 0);
    let mut first_err = None;
    for j in std::iter::once(first).chain(others) {
        let member = tee.member(j);
        let what = format!("{}/{key}", member.describe());
        let res = member.get_bytes(key).await.and_then(|data| {
            if expected.is_some_and(|id| Id::of_stored(&data) != id) {
                return Err(Error::corrupt(&what, "content does not match its name"));
            }
            let plain = object::decode(repo.crypto(), &data, &what)?;
            IndexFile::decode(&plain, &what)
        });
        match res {
            Ok(f) => return Ok(f),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| Error::not_found(key)))
}

/// Deletes `keys` from `sink`, several at a time; returns each key's outcome.
async fn delete_all(sink: &Arc<dyn Sink>, keys: Vec<String>) -> Vec<(String, Result<()>)> {
    futures::stream::iter(keys)
        .map(|key| async move {
            let r = sink.delete(&key).await;
            (key, r)
        })
        .buffer_unordered(DELETE_CONCURRENCY)
        .collect()
        .await
}
