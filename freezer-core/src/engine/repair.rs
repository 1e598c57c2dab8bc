//! Rebuilding the index from the packs: [`repair_index`].
//!
//! For each live storage it reads the header of every pack from the pack's tail (ranged reads:
//! the last 4 bytes give the sealed header's length), writes new index files for that storage
//! listing every pack whose header decodes, and only then deletes that storage's old index
//! files. A pack whose header is damaged is reported. When an old index file that still decodes
//! lists it, each blob it locates there is read and verified against its id, and the blobs that
//! verify (salvaged) are copied as they are into a new pack, which the new index lists instead:
//! the repository is whole again, for `check --read-data`, `prune` and later repairs alike.
//! The damaged pack is deleted after the old index files when nothing in it can have been
//! missed: every located blob verified, together they fill the pack from its start without a
//! gap, and every old index file decoded. Otherwise it is left in place, outside the index;
//! `prune` deletes it once no snapshot needs a blob that was lost with it. A damaged pack that
//! no old index file locates is left in place. An old index file that cannot be read (damaged,
//! or sealed under another key) is not deleted but moved to `quarantine/index/<id>`. Repair
//! takes an exclusive lock; besides index files it writes only the new packs and what it moves
//! to quarantine, and it deletes only damaged packs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt as _;

use super::check::detail;
use super::{Progress, storage_failed};
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::index::{IndexFile, IndexFileSplitter};
use crate::repo::pack::{self, EncodedBlob, PackWriter, PackedBlob};
use crate::repo::recover::QUARANTINE_PREFIX;
use crate::repo::{Actor, Repository, pack_key};
use crate::sink::{Payload, PutMode, Sink, SinkExt};

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
    /// Blobs of it that an old index file located and that verified: copied into `new_pack`.
    pub salvaged_blobs: u64,
    /// Blobs an old index file listed in it that did not verify: lost.
    pub lost_blobs: u64,
    /// The new pack that holds the salvaged blobs.
    pub new_pack: Option<String>,
    /// Whether the damaged pack was deleted: nothing in it can have been missed (see the module
    /// documentation).
    pub deleted: bool,
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
    /// Packs left out because their header is damaged, and what was salvaged of them.
    pub damaged_packs: Vec<DamagedPack>,
    /// New index files written.
    pub index_files_written: u64,
    /// Old index files removed.
    pub index_files_removed: u64,
    /// Old index files that could not be read (damaged, or sealed under another key): moved
    /// aside to `quarantine/<their key>` instead of deleted, by their new keys.
    pub quarantined: Vec<String>,
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
        if crate::repo::is_upstream_key(&meta.key) {
            continue; // upstream's backups, beside the repository
        }
        match meta.key.rsplit('/').next().map(Id::from_hex) {
            Some(Ok(id)) if pack_key(&id) == meta.key => packs.push((id, meta.size)),
            _ => out.damaged_packs.push(DamagedPack {
                object: meta.key,
                error: "not a pack: packs are named data/<first 2 hex digits>/<id>".into(),
                salvaged_blobs: 0,
                lost_blobs: 0,
                new_pack: None,
                deleted: false,
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
    // The packs the new index files list.
    let mut indexed: HashSet<Id> = HashSet::new();
    // Packs whose header is damaged, with their sizes and what is wrong.
    let mut damaged: Vec<(Id, u64, String)> = Vec::new();
    while let Some((id, res)) = headers.next().await {
        progress.add_entries(1);
        match res {
            Ok(blobs) => {
                out.packs_indexed += 1;
                out.blobs += blobs.len() as u64;
                indexed.insert(id);
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
    let (located, undecodable) = located_by_old_index(repo, i, &old, &damaged).await?;
    // Damaged packs whose blobs were salvaged, finished once the old index files are gone.
    let mut salvaged_packs = Vec::new();
    for (id, size, error) in damaged {
        let object = format!("pack {id}");
        let Some(listed) = located.get(&id) else {
            out.damaged_packs.push(DamagedPack {
                object,
                error,
                salvaged_blobs: 0,
                lost_blobs: 0,
                new_pack: None,
                deleted: false,
            });
            continue;
        };
        let found = salvage(member.as_ref(), &crypto, &id, size, listed).await?;
        let (salvaged, lost) = (found.blobs.len() as u64, found.lost);
        let error = format!(
            "{error}; an old index file located {} blob(s) in it: {salvaged} verified, {lost} did not",
            salvaged + lost
        );
        if found.blobs.is_empty() {
            out.damaged_packs.push(DamagedPack {
                object,
                error: format!("{error}; it was left in place"),
                salvaged_blobs: 0,
                lost_blobs: lost,
                new_pack: None,
                deleted: false,
            });
            continue;
        }
        let mut writer = PackWriter::default();
        for blob in &found.blobs {
            writer.add(blob);
        }
        let pack = writer.finish(&crypto);
        if repo.write_pack(&pack, 1 << i).await & (1 << i) == 0 {
            return Err(storage_failed(
                repo,
                i,
                &format!(
                    "writing a new pack for the blobs salvaged from pack {id}; the old index files were left in place"
                ),
            ));
        }
        out.packs_indexed += 1;
        out.blobs += salvaged;
        indexed.insert(pack.id);
        // Nothing of it can have been missed: it may go once no index file lists it.
        let whole = lost == 0 && found.fills_from_start && undecodable.is_empty();
        salvaged_packs.push((out.damaged_packs.len(), id, pack.id, whole));
        out.damaged_packs.push(DamagedPack {
            object,
            error,
            salvaged_blobs: salvaged,
            lost_blobs: lost,
            new_pack: Some(pack.id.to_string()),
            deleted: false,
        });
        if let Some(full) = files.push(pack.id, pack.blobs) {
            write(repo, i, full, &mut written, out).await?;
        }
    }
    if let Some(last) = files.finish() {
        write(repo, i, last, &mut written, out).await?;
    }
    // Only now that the new index is complete: the old one goes, but what could not be read
    // is moved aside, never deleted.
    for key in old {
        if written.contains(&key) {
            continue;
        }
        if undecodable.contains(&key) {
            out.quarantined
                .push(quarantine(member.as_ref(), &key).await?);
        } else {
            member.delete(&key).await?;
        }
        out.index_files_removed += 1;
    }
    // Then the damaged packs that no index lists any more and that hold nothing else. Without
    // encryption a pack rebuilt whole has the damaged pack's name: it was written over it.
    for (d, id, new, whole) in salvaged_packs {
        let damaged = &mut out.damaged_packs[d];
        let fate = if indexed.contains(&id) {
            "they were written again as the whole pack, under its name".to_string()
        } else if !whole {
            format!(
                "those that verified were copied to new pack {new}; the damaged pack stays, outside the index, in case it holds more"
            )
        } else {
            match member.delete(&pack_key(&id)).await {
                Ok(()) => {
                    damaged.deleted = true;
                    format!("they were copied to new pack {new} and the damaged pack deleted")
                }
                Err(e) => format!(
                    "they were copied to new pack {new}; deleting the damaged pack failed ({e}), so it stays, outside the index"
                ),
            }
        };
        damaged.error = format!("{}; {fate}", damaged.error);
    }
    Ok(())
}

/// What the old index files of storage `i` (those that still decode, one at a time) say the
/// `damaged` packs hold, and which old index files did not decode. A file that cannot be
/// read (not a damaged one) stops the repair: it may be the only record of where a damaged
/// pack's blobs are, and it is deleted next.
async fn located_by_old_index(
    repo: &Repository,
    i: usize,
    old: &[String],
    damaged: &[(Id, u64, String)],
) -> Result<(HashMap<Id, Vec<PackedBlob>>, HashSet<String>)> {
    let mut located: HashMap<Id, Vec<PackedBlob>> = HashMap::new();
    let mut undecodable = HashSet::new();
    let wanted: HashSet<Id> = damaged.iter().map(|(id, _, _)| *id).collect();
    for key in old {
        let file = match repo.read_object(key, 1 << i).await {
            Ok(plain) => IndexFile::decode(&plain, key),
            Err(e) => Err(e),
        };
        let file = match file {
            Ok(f) => f,
            Err(Error::Corrupt { .. }) => {
                undecodable.insert(key.clone());
                continue;
            }
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
    Ok((located, undecodable))
}

/// Moves `key` of `sink` to `quarantine/<key>`: copied byte for byte, then deleted. Returns
/// the new key.
pub(crate) async fn quarantine(sink: &dyn Sink, key: &str) -> Result<String> {
    let aside = format!("{QUARANTINE_PREFIX}{key}");
    let data = sink.get_bytes(key).await?;
    sink.put(&aside, Payload::from(data.to_vec()), PutMode::Overwrite)
        .await?;
    let back = sink.get_bytes(&aside).await?;
    if back != data {
        return Err(Error::corrupt(
            format!("{}/{aside}", sink.describe()),
            format!("differs from {key} once written; {key} was left in place"),
        ));
    }
    sink.delete(key).await?;
    Ok(aside)
}

/// What [`salvage`] found in a damaged pack.
struct Salvaged {
    /// The blobs that verify, in pack order, one per id, ready to be packed again as they are.
    blobs: Vec<EncodedBlob>,
    /// Blobs (by id) located there of which no copy verified.
    lost: u64,
    /// Whether the located blobs fill the pack from its first byte without a gap.
    fills_from_start: bool,
}

/// Reads pack `id` (`size` bytes) whole and verifies each blob `listed` locates in it against
/// its id.
async fn salvage(
    sink: &dyn Sink,
    crypto: &Crypto,
    id: &Id,
    size: u64,
    listed: &[PackedBlob],
) -> Result<Salvaged> {
    let data = sink.get_bytes(&pack_key(id)).await?;
    let mut scratch = pack::DecodeScratch::default();
    let ids: HashSet<Id> = listed.iter().map(|b| b.id).collect();
    let mut listed = listed.to_vec();
    listed.sort_by_key(|b| b.offset);
    let (mut blobs, mut seen) = (Vec::new(), HashSet::new());
    let held = size.min(data.len() as u64);
    let (mut fills_from_start, mut next) = (true, 0u64);
    for b in listed {
        let (start, end) = (
            u64::from(b.offset),
            u64::from(b.offset) + u64::from(b.length),
        );
        fills_from_start &= start <= next;
        next = next.max(end);
        if seen.contains(&b.id) || end > held {
            continue;
        }
        let what = format!("blob {} in pack {id}", b.id);
        let stored = data.slice(start as usize..end as usize);
        if let Ok(plain) = pack::decode_blob_with(crypto, &mut scratch, &stored, &b, &what) {
            seen.insert(b.id);
            blobs.push(EncodedBlob {
                id: b.id,
                kind: b.kind,
                ulen: b.ulen,
                plain_len: plain.len() as u32,
                data: stored,
            });
        }
    }
    Ok(Salvaged {
        blobs,
        lost: ids.difference(&seen).count() as u64,
        fills_from_start,
    })
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
