//! Dropping lost blobs from the index: [`repair_packs`].
//!
//! On each live storage, under an exclusive lock, it finds the packs its index files list that
//! are missing, shorter than those files say, or named by a damage record (`damaged/`, written
//! by `check`), and with [`RepairPacksOptions::read_data`] every pack. It reads each one that
//! is there whole: a pack whose bytes match its name is intact (the record was stale).
//! Otherwise each blob the index locates in it is verified against its id; those that verify
//! are copied as they are into a new pack. Then every index file that lists a damaged pack is
//! written again without it (and with the new pack), the old ones are deleted, and last the
//! storage's damage records. The damaged pack itself stays where it is, outside the index
//! (`prune` deletes it); without encryption, a pack rebuilt from all its blobs has the damaged
//! pack's name and is written over it. Nothing else is deleted.
//!
//! Afterwards a blob that was lost is in no index: a backup of the same data stores it again,
//! and every snapshot that shares it is whole again. `check` names the snapshots that still
//! need a lost blob.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::{Progress, storage_failed};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::damaged::{DAMAGED_DIR, PackDamage, min_pack_sizes};
use crate::repo::index::{Index, IndexFile, IndexFileSplitter};
use crate::repo::pack::{self, EncodedBlob, PackWriter, PackedBlob};
use crate::repo::{Actor, Repository, pack_key};
use crate::sink::SinkExt;

/// What `repair packs` reads.
#[derive(Clone, Debug, Default)]
pub struct RepairPacksOptions {
    /// Read every pack, not only those missing, truncated or recorded damaged by `check`.
    pub read_data: bool,
}

/// One damaged pack and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RepairedPack {
    /// `pack <id>`.
    pub object: String,
    /// What is wrong with it, and what was done.
    pub error: String,
    /// Blobs the index located in it that verified: copied into `new_pack`.
    pub kept_blobs: u64,
    /// Blobs the index located in it that are missing or did not verify: dropped from the
    /// index.
    pub lost_blobs: u64,
    /// The pack that holds the blobs kept, now listed instead of it.
    pub new_pack: Option<String>,
}

/// What `repair packs` did on one storage.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StoragePacksRepair {
    /// The storage.
    pub storage: String,
    /// Packs read whole.
    pub packs_read: u64,
    /// Damaged packs and what became of them.
    pub damaged_packs: Vec<RepairedPack>,
    /// Index files written (each replaces one or more that listed a damaged pack).
    pub index_files_written: u64,
    /// Index files removed.
    pub index_files_removed: u64,
    /// Damage records removed.
    pub records_removed: u64,
    /// Why the storage could not be repaired. Old index files go only once every new one is
    /// written, so the storage keeps a usable index.
    pub error: Option<String>,
}

/// What `repair packs` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairPacksReport {
    /// One entry per storage, in tee order.
    pub storages: Vec<StoragePacksRepair>,
    /// Problems that are no failure of the repair: stale locks removed, index files that do
    /// not decode (left alone: `repair index` rebuilds them), a lock that could not be removed.
    pub warnings: Vec<String>,
}

impl RepairPacksReport {
    /// Whether every storage was repaired.
    pub fn is_complete(&self) -> bool {
        self.storages.iter().all(|s| s.error.is_none())
    }

    /// Blobs dropped from the index, on every storage.
    pub fn lost_blobs(&self) -> u64 {
        self.storages
            .iter()
            .flat_map(|s| &s.damaged_packs)
            .map(|p| p.lost_blobs)
            .sum()
    }
}

/// Drops what is lost in damaged packs from the index of every live storage; see the module
/// documentation. The repository's index is reloaded afterwards.
pub async fn repair_packs(
    repo: &mut Repository,
    opts: &RepairPacksOptions,
    actor: &Actor,
    progress: Arc<dyn Progress>,
) -> Result<RepairPacksReport> {
    let lock = repo.lock(true, "repair-packs", actor).await?;
    let tee = repo.tee().clone();
    let mut report = RepairPacksReport {
        warnings: lock.notes.clone(),
        ..RepairPacksReport::default()
    };
    for (i, status) in tee.status().into_iter().enumerate() {
        let mut done = StoragePacksRepair {
            storage: status.sink,
            ..StoragePacksRepair::default()
        };
        if let Some(why) = status.error {
            done.error = Some(format!("not repaired: {why}"));
        } else if let Err(e) = repair_storage(
            repo,
            i,
            opts,
            &mut done,
            &mut report.warnings,
            progress.as_ref(),
        )
        .await
        {
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

/// Repairs storage `i`.
async fn repair_storage(
    repo: &Repository,
    i: usize,
    opts: &RepairPacksOptions,
    out: &mut StoragePacksRepair,
    warnings: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<()> {
    let member = repo.tee().member(i).clone();
    let crypto = repo.crypto().clone();
    // This storage's index files, one at a time, and the index they make together.
    let mut files: Vec<(String, IndexFile)> = Vec::new();
    let mut index = Index::default();
    for meta in member.list("index/").await? {
        let file = match repo.read_object(&meta.key, 1 << i).await {
            Ok(plain) => IndexFile::decode(&plain, &meta.key),
            Err(e) => Err(e),
        };
        match file {
            Ok(f) => {
                index.add_file(&f, 1 << i);
                files.push((meta.key, f));
            }
            Err(e @ Error::Corrupt { .. }) => warnings.push(format!(
                "{}: {e}; left alone (`freezer repair index` rebuilds the index)",
                out.storage
            )),
            Err(e) => return Err(e.context("reading the index; nothing was changed")),
        }
    }
    index.seal();
    let (records, skipped) = repo.damage_records(i).await?;
    warnings.extend(skipped.into_iter().map(|s| format!("{}: {s}", out.storage)));
    let sizes: HashMap<String, u64> = member
        .list("data/")
        .await?
        .into_iter()
        .map(|m| (m.key, m.size))
        .collect();
    let min = min_pack_sizes(&index, &crypto);
    let mut recorded: HashMap<Id, PackDamage> = HashMap::new();
    for (_, rec) in &records {
        for (pack, d) in &rec.packs {
            match recorded.get_mut(pack) {
                Some(have) => have.merge(d.clone()),
                None => {
                    recorded.insert(*pack, d.clone());
                }
            }
        }
    }
    // What the index locates in each pack, by position.
    let mut located: BTreeMap<u32, Vec<PackedBlob>> = BTreeMap::new();
    for (id, locs) in index.blobs() {
        for l in locs {
            located.entry(l.pack).or_default().push(l.packed(id));
        }
    }
    // Damaged packs: id -> (what is wrong, the blobs that verified).
    let mut damaged: BTreeMap<Id, (String, Vec<EncodedBlob>, u64)> = BTreeMap::new();
    for (pos, pack) in index.packs().iter().enumerate() {
        let pos = pos as u32;
        let blobs = located.remove(&pos).unwrap_or_default();
        let size = sizes.get(&pack_key(&pack.id)).copied();
        let short = size.is_some_and(|s| s < min[pos as usize]);
        let why = match (size, recorded.get(&pack.id)) {
            (None, _) => {
                progress.add_entries(1);
                damaged.insert(pack.id, ("missing".into(), vec![], blobs.len() as u64));
                continue;
            }
            (Some(s), _) if short => {
                format!(
                    "truncated ({s} bytes, its index needs at least {})",
                    min[pos as usize]
                )
            }
            (Some(_), Some(_)) => "recorded damaged by `freezer check`".to_string(),
            (Some(_), None) if opts.read_data => String::new(),
            (Some(_), None) => continue,
        };
        progress.add_entries(1);
        let data = member.get_bytes(&pack_key(&pack.id)).await?;
        out.packs_read += 1;
        if Id::of_stored(&data) == pack.id {
            continue;
        }
        let why = if why.is_empty() {
            "content does not match its name".to_string()
        } else if short {
            why
        } else {
            format!("{why}: content does not match its name")
        };
        let (kept, lost) = verify_blobs(&crypto, &pack.id, &data, &blobs);
        damaged.insert(pack.id, (why, kept, lost));
    }
    if damaged.is_empty() {
        return remove_records(repo, i, records.into_iter().map(|(k, _)| k), out).await;
    }

    // New packs for what verified, then the index files that list a damaged pack, rewritten.
    let mut splitter = IndexFileSplitter::default();
    let mut pending = Vec::new();
    let mut rebuilt_in_place = HashSet::new();
    for (id, (why, kept, lost)) in &damaged {
        let mut report = RepairedPack {
            object: format!("pack {id}"),
            error: why.clone(),
            kept_blobs: kept.len() as u64,
            lost_blobs: *lost,
            new_pack: None,
        };
        if !kept.is_empty() {
            let mut writer = PackWriter::default();
            for b in kept {
                writer.add(b);
            }
            let pack = writer.finish(&crypto);
            if repo.write_pack(&pack, 1 << i).await & (1 << i) == 0 {
                return Err(storage_failed(
                    repo,
                    i,
                    &format!(
                        "writing a new pack for the blobs kept from pack {id}; the index was left as it was"
                    ),
                ));
            }
            report.new_pack = Some(pack.id.to_string());
            if pack.id == *id {
                rebuilt_in_place.insert(*id);
            }
            pending.push((pack.id, pack.blobs));
        }
        report.error = match (&report.new_pack, *lost) {
            (_, _) if rebuilt_in_place.contains(id) => format!(
                "{why}; every blob verified and was written again as the whole pack, under its name"
            ),
            (Some(new), 0) => format!(
                "{why}; its {} blob(s) verified and were copied to new pack {new}; the damaged pack stays, outside the index (`freezer prune` deletes it)",
                kept.len()
            ),
            (Some(new), lost) => format!(
                "{why}; {} blob(s) verified and were copied to new pack {new}, {lost} were lost and dropped from the index; the damaged pack stays, outside the index (`freezer prune` deletes it)",
                kept.len()
            ),
            (None, lost) => {
                format!("{why}; its {lost} blob(s) were lost and dropped from the index")
            }
        };
        out.damaged_packs.push(report);
    }
    let mut old = Vec::new();
    for (key, file) in files {
        if !file.packs.iter().any(|(p, _)| damaged.contains_key(p)) {
            continue;
        }
        for (pack, blobs) in file.packs {
            if damaged.contains_key(&pack) {
                continue;
            }
            if let Some(full) = splitter.push(pack, blobs) {
                write(repo, i, full, out).await?;
            }
        }
        old.push(key);
    }
    for (pack, blobs) in pending {
        if let Some(full) = splitter.push(pack, blobs) {
            write(repo, i, full, out).await?;
        }
    }
    if let Some(last) = splitter.finish() {
        write(repo, i, last, out).await?;
    }
    // Only now that the new index files are written: the old ones, then the records.
    for key in old {
        member.delete(&key).await?;
        out.index_files_removed += 1;
    }
    remove_records(repo, i, records.into_iter().map(|(k, _)| k), out).await
}

/// Verifies each of `blobs` in the bytes `data` of pack `id`; returns those that verify, one
/// per id in pack order, and how many ids did not.
fn verify_blobs(
    crypto: &crate::crypto::Crypto,
    id: &Id,
    data: &bytes::Bytes,
    blobs: &[PackedBlob],
) -> (Vec<EncodedBlob>, u64) {
    let mut blobs = blobs.to_vec();
    blobs.sort_by_key(|b| b.offset);
    let mut scratch = pack::DecodeScratch::default();
    let (mut kept, mut seen) = (Vec::new(), HashSet::new());
    let all: HashSet<Id> = blobs.iter().map(|b| b.id).collect();
    for b in blobs {
        let end = u64::from(b.offset) + u64::from(b.length);
        if seen.contains(&b.id) || end > data.len() as u64 {
            continue;
        }
        let stored = data.slice(b.offset as usize..end as usize);
        let what = format!("blob {} in pack {id}", b.id);
        if let Ok(plain) = pack::decode_blob_with(crypto, &mut scratch, &stored, &b, &what) {
            seen.insert(b.id);
            kept.push(EncodedBlob {
                id: b.id,
                kind: b.kind,
                ulen: b.ulen,
                plain_len: plain.len() as u32,
                data: stored,
            });
        }
    }
    let lost = all.len() as u64 - seen.len() as u64;
    (kept, lost)
}

/// Deletes storage `i`'s damage records that were read: what they name is handled.
async fn remove_records(
    repo: &Repository,
    i: usize,
    keys: impl Iterator<Item = String>,
    out: &mut StoragePacksRepair,
) -> Result<()> {
    let member = repo.tee().member(i);
    for key in keys {
        debug_assert!(key.starts_with(DAMAGED_DIR));
        match member.delete(&key).await {
            Ok(()) | Err(Error::NotFound { .. }) => out.records_removed += 1,
            Err(e) => return Err(e.context("removing a damage record")),
        }
    }
    Ok(())
}

/// Writes one new index file to storage `i`.
async fn write(
    repo: &Repository,
    i: usize,
    file: IndexFile,
    out: &mut StoragePacksRepair,
) -> Result<()> {
    let (id, held) = repo.write_index(&file, 1 << i).await?;
    if held & (1 << i) == 0 {
        return Err(Error::io(
            format!("index/{id} on {}", out.storage),
            std::io::Error::other("not written"),
        ));
    }
    out.index_files_written += 1;
    Ok(())
}
