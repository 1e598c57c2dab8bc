//! Rebuilding the index from the packs: [`repair_index`].
//!
//! For each live storage it reads the header of every pack from the pack's tail (ranged reads:
//! the last 4 bytes give the sealed header's length), writes new index files for that storage
//! listing every pack whose header decodes, and only then deletes that storage's old index
//! files. A pack whose header is damaged is reported and left in place; when an old index file
//! that still decodes lists it, each blob it locates there is read and verified against its
//! id, and the blobs that verify are indexed again (salvaged). It takes an exclusive lock, and
//! writes and deletes nothing but index files (and its lock).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt as _;

use super::Progress;
use super::check::detail;
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::index::{IndexFile, IndexFileSplitter};
use crate::repo::pack::{self, PackedBlob};
use crate::repo::{Actor, Repository, pack_key};
use crate::sink::{Sink, SinkExt};

/// Pack headers read at once from one storage.
const PARALLEL_HEADER_READS: usize = 16;
/// Blobs a pack's header may list and still come with the first read of its tail; a larger
/// header takes a second read.
const TAIL_GUESS_BLOBS: usize = 256;

/// A pack (or a stray object under `data/`) left out of the new index.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DamagedPack {
    /// `pack <id>`, or the key of an object under `data/` that is not named as a pack.
    pub object: String,
    /// Why it was left out, and what was salvaged of it.
    pub error: String,
    /// Blobs of it that an old index file located and that verified: indexed again.
    pub salvaged_blobs: u64,
    /// Blobs an old index file listed in it that did not verify: lost.
    pub lost_blobs: u64,
}

/// What `repair_index` did on one storage.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StorageRepair {
    /// The storage.
    pub storage: String,
    /// Packs listed by the new index files.
    pub packs_indexed: u64,
    /// Blobs listed by the new index files.
    pub blobs: u64,
    /// Packs left out because their header is damaged; they are left in place.
    pub damaged_packs: Vec<DamagedPack>,
    /// New index files written.
    pub index_files_written: u64,
    /// Old index files removed.
    pub index_files_removed: u64,
    /// Why the storage could not be repaired (or only partly: old index files are only
    /// removed once every new one is written, so the storage keeps a usable index).
    pub error: Option<String>,
}

/// What `repair_index` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairReport {
    /// One entry per storage, in tee order.
    pub storages: Vec<StorageRepair>,
    /// Problems that are no failure of the repair: stale locks removed on the way in, a lock
    /// that could not be removed.
    pub warnings: Vec<String>,
}

impl RepairReport {
    /// Whether every storage was repaired (damaged packs left out do not count).
    pub fn is_complete(&self) -> bool {
        self.storages.iter().all(|s| s.error.is_none())
    }
}

/// Rebuilds the index of every live storage from its packs' headers; see the module
/// documentation. The repository's index is reloaded afterwards.
pub async fn repair_index(
    repo: &mut Repository,
    actor: &Actor,
    progress: Arc<dyn Progress>,
) -> Result<RepairReport> {
    let lock = repo.lock(true, "repair-index", actor).await?;
    let tee = repo.tee().clone();
    let mut report = RepairReport {
        warnings: lock.notes.clone(),
        ..RepairReport::default()
    };
    for (i, status) in tee.status().into_iter().enumerate() {
        let mut done = StorageRepair {
            storage: status.sink,
            ..StorageRepair::default()
        };
        if let Some(why) = status.error {
            done.error = Some(format!("not repaired: {why}"));
        } else if let Err(e) = repair_storage(repo, i, &mut done, progress.as_ref()).await {
            tee.fail(i, &e);
            done.error = Some(e.to_string());
        }
        report.storages.push(done);
    }
    let loaded = repo.load_index().await;
    let released = lock.release().await;
    loaded?;
    if let Err(e) = released {
        report
            .warnings
            .push(format!("could not remove the lock: {e}"));
    }
    Ok(report)
}

/// Rebuilds the index of storage `i`.
async fn repair_storage(
    repo: &Repository,
    i: usize,
    out: &mut StorageRepair,
    progress: &dyn Progress,
) -> Result<()> {
    let member = repo.tee().member(i).clone();
    let old: Vec<String> = member
        .list("index/")
        .await?
        .into_iter()
        .map(|m| m.key)
        .collect();
    let mut packs = Vec::new();
    for meta in member.list("data/").await? {
        match meta.key.rsplit('/').next().map(Id::from_hex) {
            Some(Ok(id)) if pack_key(&id) == meta.key => packs.push((id, meta.size)),
            _ => out.damaged_packs.push(DamagedPack {
                object: meta.key,
                error: "not a pack: packs are named data/<first 2 hex digits>/<id>".into(),
                salvaged_blobs: 0,
                lost_blobs: 0,
            }),
        }
    }
    packs.sort_unstable();
    let sizes: HashMap<Id, u64> = packs.iter().copied().collect();
    let crypto = repo.crypto().clone();
    // In order, so that the same packs give the same index files.
    let mut headers = futures::stream::iter(packs)
        .map(|(id, size)| {
            let (member, crypto) = (member.clone(), crypto.clone());
            async move { (id, read_header(member.as_ref(), &crypto, &id, size).await) }
        })
        .buffered(PARALLEL_HEADER_READS);
    let mut written: HashSet<String> = HashSet::new();
    let mut files = IndexFileSplitter::default();
    // Packs whose header is damaged, with their sizes and what is wrong.
    let mut damaged: Vec<(Id, u64, String)> = Vec::new();
    while let Some((id, res)) = headers.next().await {
        progress.add_entries(1);
        match res {
            Ok(blobs) => {
                out.packs_indexed += 1;
                out.blobs += blobs.len() as u64;
                if let Some(full) = files.push(id, blobs) {
                    write(repo, i, full, &mut written, out).await?;
                }
            }
            Err(e @ Error::Corrupt { .. }) => {
                let size = sizes.get(&id).copied().unwrap_or_default();
                damaged.push((id, size, detail(&e, &format!("pack {id}"))));
            }
            // A pack that could not be read (a dropped connection...) is not damaged: leaving
            // it out of the new index would orphan its blobs. Stop before deleting anything.
            Err(e) => {
                return Err(e.context(format!(
                    "reading the header of pack {id}; the old index files were left in place"
                )));
            }
        }
    }
    let located = located_by_old_index(repo, i, &old, &damaged).await?;
    for (id, size, error) in damaged {
        let object = format!("pack {id}");
        let Some(listed) = located.get(&id) else {
            out.damaged_packs.push(DamagedPack {
                object,
                error,
                salvaged_blobs: 0,
                lost_blobs: 0,
            });
            continue;
        };
        let (good, lost) = salvage(member.as_ref(), &crypto, &id, size, listed).await?;
        let salvaged = good.len() as u64;
        out.damaged_packs.push(DamagedPack {
            object,
            error: format!(
                "{error}; an old index file located {} blob(s) in it: {salvaged} verified and are indexed again, {lost} did not",
                salvaged + lost
            ),
            salvaged_blobs: salvaged,
            lost_blobs: lost,
        });
        if !good.is_empty() {
            out.packs_indexed += 1;
            out.blobs += salvaged;
            if let Some(full) = files.push(id, good) {
                write(repo, i, full, &mut written, out).await?;
            }
        }
    }
    if let Some(last) = files.finish() {
        write(repo, i, last, &mut written, out).await?;
    }
    // Only now that the new index is complete: the old one goes.
    for key in old {
        if !written.contains(&key) {
            member.delete(&key).await?;
            out.index_files_removed += 1;
        }
    }
    Ok(())
}

/// What the old index files of storage `i` (those that still decode, one at a time) say the
/// `damaged` packs hold. A file that cannot be read (not a damaged one) stops the repair: it
/// may be the only record of where a damaged pack's blobs are, and it is deleted next.
async fn located_by_old_index(
    repo: &Repository,
    i: usize,
    old: &[String],
    damaged: &[(Id, u64, String)],
) -> Result<HashMap<Id, Vec<PackedBlob>>> {
    let mut located: HashMap<Id, Vec<PackedBlob>> = HashMap::new();
    if damaged.is_empty() {
        return Ok(located);
    }
    let wanted: HashSet<Id> = damaged.iter().map(|(id, _, _)| *id).collect();
    for key in old {
        let file = match repo.read_object(key, 1 << i).await {
            Ok(plain) => IndexFile::decode(&plain, key),
            Err(e) => Err(e),
        };
        let file = match file {
            Ok(f) => f,
            Err(Error::Corrupt { .. }) => continue,
            Err(e) => {
                return Err(e.context(format!(
                    "reading old index file {key} to salvage damaged packs; the old index files were left in place"
                )));
            }
        };
        for (pack, blobs) in file.packs {
            if wanted.contains(&pack) {
                let known = located.entry(pack).or_default();
                for b in blobs {
                    if !known.iter().any(|k| k.id == b.id && k.offset == b.offset) {
                        known.push(b);
                    }
                }
            }
        }
    }
    Ok(located)
}

/// Reads pack `id` (`size` bytes) whole and verifies each blob `listed` locates in it against
/// its id: returns the blobs that verify (in pack order, one per id) and how many did not.
async fn salvage(
    sink: &dyn Sink,
    crypto: &Crypto,
    id: &Id,
    size: u64,
    listed: &[PackedBlob],
) -> Result<(Vec<PackedBlob>, u64)> {
    let data = sink.get_bytes(&pack_key(id)).await?;
    let mut scratch = pack::DecodeScratch::default();
    let ids: HashSet<Id> = listed.iter().map(|b| b.id).collect();
    let mut listed = listed.to_vec();
    listed.sort_by_key(|b| b.offset);
    let (mut good, mut seen) = (Vec::new(), HashSet::new());
    let held = size.min(data.len() as u64);
    for b in listed {
        if seen.contains(&b.id) {
            continue;
        }
        let (start, end) = (
            u64::from(b.offset),
            u64::from(b.offset) + u64::from(b.length),
        );
        let what = format!("blob {} in pack {id}", b.id);
        let verified = end <= held
            && pack::decode_blob_with(
                crypto,
                &mut scratch,
                &data[start as usize..end as usize],
                &b,
                &what,
            )
            .is_ok();
        if verified {
            seen.insert(b.id);
            good.push(b);
        }
    }
    // Blobs (by id) located there of which no copy verified.
    let lost = ids.difference(&seen).count() as u64;
    Ok((good, lost))
}

/// Writes one new index file to storage `i`.
async fn write(
    repo: &Repository,
    i: usize,
    file: IndexFile,
    written: &mut HashSet<String>,
    out: &mut StorageRepair,
) -> Result<()> {
    let (id, held) = repo.write_index(&file, 1 << i).await?;
    if held & (1 << i) == 0 {
        return Err(Error::io(
            format!("index/{id} on {}", out.storage),
            std::io::Error::other("not written"),
        ));
    }
    written.insert(format!("index/{id}"));
    out.index_files_written += 1;
    Ok(())
}

/// Reads and decodes the header of pack `id` (`size` bytes as listed) from its tail: one
/// ranged read, or two when the header is larger than guessed.
async fn read_header(
    sink: &dyn Sink,
    crypto: &Crypto,
    id: &Id,
    size: u64,
) -> Result<Vec<PackedBlob>> {
    let key = pack_key(id);
    let what = format!("pack {id}");
    let read = |len: u64| {
        let key = &key;
        let what = &what;
        async move {
            let tail = sink.get_range(key, size - len..size).await?;
            if tail.len() as u64 != len {
                return Err(Error::corrupt(
                    what,
                    format!(
                        "{} bytes at its end, where the listing promised {len}",
                        tail.len()
                    ),
                ));
            }
            Ok(tail)
        }
    };
    if size < 4 {
        return Err(Error::corrupt(
            &what,
            format!("{size} bytes: too short for a pack"),
        ));
    }
    let mut tail = read(pack::header_read_hint(TAIL_GUESS_BLOBS, crypto).min(size)).await?;
    let hlen = u64::from(u32::from_le_bytes(
        tail[tail.len() - 4..].try_into().expect("4 bytes"),
    ));
    if hlen + 4 > tail.len() as u64 && hlen + 4 <= size {
        tail = read(hlen + 4).await?;
    }
    pack::decode_header(crypto, &tail, size, &what)
}
