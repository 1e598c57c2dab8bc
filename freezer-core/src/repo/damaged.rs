//! Damage records (`damaged/<id>`): what `check` found unusable in the packs of one storage,
//! so that backups store those blobs again instead of deduplicating against them, until
//! `repair packs` drops them from the index and removes the records.
//!
//! A record lives on the storage whose copies it describes and is sealed like every small
//! object (see [`super::object`]), so an encrypted repository says nothing about which blobs
//! are damaged:
//!
//! ```text
//! record = "FRZD" || 0x01 || uvar(p) || p * ( pack_id[32] || u8 whole || uvar(b) || b * blob_id[32] )
//! ```
//!
//! `whole = 1`: every blob of the pack is unusable (missing, truncated, header damaged) and
//! `b = 0`; `whole = 0`: the `b` blobs listed are. This module also finds, without reading a
//! pack, the packs a storage lacks or holds too short ([`Repository::unusable_packs`]). It
//! never deletes a pack nor rewrites an index file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Repository;
use super::index::Index;
use super::wire::{Put, Reader};
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::sink::{Payload, PutMode, SinkMask};

/// The folder of damage records.
pub const DAMAGED_DIR: &str = "damaged/";

/// What is unusable in one pack of one storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackDamage {
    /// Every blob of it.
    Whole,
    /// These blobs.
    Blobs(BTreeSet<Id>),
}

impl PackDamage {
    /// Adds what `other` makes unusable.
    pub fn merge(&mut self, other: PackDamage) {
        match (self, other) {
            (PackDamage::Whole, _) => {}
            (s, PackDamage::Whole) => *s = PackDamage::Whole,
            (PackDamage::Blobs(a), PackDamage::Blobs(b)) => a.extend(b),
        }
    }

    /// Whether blob `id` is unusable.
    pub fn covers(&self, id: &Id) -> bool {
        match self {
            PackDamage::Whole => true,
            PackDamage::Blobs(b) => b.contains(id),
        }
    }
}

/// The content of a damage record: damaged packs of one storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DamageRecord {
    /// Each damaged pack and what is unusable in it.
    pub packs: BTreeMap<Id, PackDamage>,
}

impl DamageRecord {
    /// Records that `damage` is unusable in `pack`.
    pub fn add(&mut self, pack: Id, damage: PackDamage) {
        match self.packs.get_mut(&pack) {
            Some(d) => d.merge(damage),
            None => {
                self.packs.insert(pack, damage);
            }
        }
    }

    /// Adds every entry of `other`.
    pub fn extend(&mut self, other: DamageRecord) {
        for (pack, d) in other.packs {
            self.add(pack, d);
        }
    }

    /// Encodes the plaintext of a record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"FRZD");
        out.put_u8(1);
        out.put_uvar(self.packs.len() as u64);
        for (pack, d) in &self.packs {
            out.put_id(pack);
            match d {
                PackDamage::Whole => {
                    out.put_u8(1);
                    out.put_uvar(0);
                }
                PackDamage::Blobs(b) => {
                    out.put_u8(0);
                    out.put_uvar(b.len() as u64);
                    for id in b {
                        out.put_id(id);
                    }
                }
            }
        }
        out
    }

    /// Decodes the plaintext of a record.
    pub fn decode(data: &[u8], what: &str) -> Result<DamageRecord> {
        let mut r = Reader::new(data, what);
        r.expect_magic(b"FRZD", 1)?;
        let n = r.count(34)?;
        let mut rec = DamageRecord::default();
        for _ in 0..n {
            let pack = r.id()?;
            let whole = r.u8()?;
            let b = r.count(32)?;
            let damage = match (whole, b) {
                (1, 0) => PackDamage::Whole,
                (0, b) if b > 0 => {
                    let mut blobs = BTreeSet::new();
                    for _ in 0..b {
                        blobs.insert(r.id()?);
                    }
                    PackDamage::Blobs(blobs)
                }
                (w, b) => {
                    return Err(r.err(format!(
                        "pack {pack}: whole = {w} with {b} blob(s) (1 with none, or 0 with some)"
                    )));
                }
            };
            rec.add(pack, damage);
        }
        r.finish()?;
        Ok(rec)
    }
}

/// The fewest bytes a pack can have whose index lists `blobs` blobs ending at `end`: the
/// blobs, a header of at least 6 + 35 bytes a blob, sealed, and its 4-byte length.
pub fn min_pack_size(end: u64, blobs: usize, crypto: &Crypto) -> u64 {
    end + 4 + crypto.overhead() as u64 + 6 + 35 * blobs as u64
}

/// Where each pack of `index` must reach at least, by position: see [`min_pack_size`].
pub fn min_pack_sizes(index: &Index, crypto: &Crypto) -> Vec<u64> {
    let mut ends = vec![(0u64, 0usize); index.packs().len()];
    for (_, locs) in index.blobs() {
        for l in locs {
            let e = &mut ends[l.pack as usize];
            e.0 = e.0.max(u64::from(l.offset) + u64::from(l.length));
            e.1 += 1;
        }
    }
    ends.into_iter()
        .map(|(end, n)| min_pack_size(end, n, crypto))
        .collect()
}

/// Packs of one storage found unusable before a backup, and why.
#[derive(Clone, Debug, Default)]
pub struct UnusablePacks {
    /// Per storage (position in the tee): each unusable pack and what is unusable in it.
    pub by_storage: BTreeMap<usize, DamageRecord>,
    /// One line per pack, naming it, its storage and why (for reports).
    pub notes: Vec<String>,
}

impl Repository {
    /// The damage records on storage `i`, with their keys. A record that cannot be decoded is
    /// skipped with a note (it is rewritten by the next `check` that finds the damage).
    pub async fn damage_records(
        &self,
        i: usize,
    ) -> Result<(Vec<(String, DamageRecord)>, Vec<String>)> {
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        for meta in self.tee.member(i).list(DAMAGED_DIR).await? {
            let res = self
                .read_object(&meta.key, 1 << i)
                .await
                .and_then(|p| DamageRecord::decode(&p, &meta.key));
            match res {
                Ok(rec) => out.push((meta.key, rec)),
                // Removed since the listing (by a `repair packs` or a `check`).
                Err(Error::NotFound { .. }) => {}
                Err(e @ Error::Corrupt { .. }) => notes.push(format!("damage record skipped: {e}")),
                Err(e) => return Err(e),
            }
        }
        Ok((out, notes))
    }

    /// Writes a damage record to storage `i`; returns its key.
    pub async fn write_damage_record(&self, rec: &DamageRecord, i: usize) -> Result<String> {
        let stored = super::object::encode(&self.crypto, &rec.encode());
        let key = format!("{DAMAGED_DIR}{}", Id::of_stored(&stored));
        self.tee
            .member(i)
            .put(&key, Payload::from(stored), PutMode::Overwrite)
            .await?;
        Ok(key)
    }

    /// The packs of the loaded index that each live storage cannot be trusted with: missing
    /// from its listing of `data/`, shorter than its blobs and a header need, or named by one
    /// of its damage records. One listing per storage; no pack is read. A storage that cannot
    /// be listed is dropped from the run.
    pub async fn unusable_packs(&self) -> Result<UnusablePacks> {
        let mut out = UnusablePacks::default();
        let min = min_pack_sizes(&self.index, &self.crypto);
        for i in 0..self.tee.len() {
            let bit: SinkMask = 1 << i;
            if self.tee.live() & bit == 0 {
                continue;
            }
            let member = self.tee.member(i).clone();
            let name = member.describe();
            let listed = match member.list("data/").await {
                Ok(l) => l,
                Err(e) => {
                    self.tee.fail(i, &e);
                    continue;
                }
            };
            let sizes: HashMap<&str, u64> =
                listed.iter().map(|m| (m.key.as_str(), m.size)).collect();
            let mut rec = DamageRecord::default();
            for (pos, pack) in self.index.packs().iter().enumerate() {
                if pack.sinks & bit == 0 {
                    continue;
                }
                let why = match sizes.get(super::pack_key(&pack.id).as_str()) {
                    None => "missing".to_string(),
                    Some(&size) if size < min[pos] => {
                        format!(
                            "truncated ({size} bytes, its index needs at least {})",
                            min[pos]
                        )
                    }
                    Some(_) => continue,
                };
                out.notes
                    .push(format!("pack {} on {name} is {why}", pack.id));
                rec.add(pack.id, PackDamage::Whole);
            }
            let (records, skipped) = match self.damage_records(i).await {
                Ok(r) => r,
                Err(e) => {
                    self.tee.fail(i, &e);
                    continue;
                }
            };
            out.notes.extend(skipped);
            for (key, r) in records {
                for (pack, d) in r.packs {
                    let Some(pos) = self.index.pack_pos(&pack) else {
                        continue;
                    };
                    if self.index.pack(pos).sinks & bit == 0 || rec.packs.contains_key(&pack) {
                        continue;
                    }
                    let what = match &d {
                        PackDamage::Whole => "is damaged".to_string(),
                        PackDamage::Blobs(b) => format!("holds {} damaged blob(s)", b.len()),
                    };
                    out.notes
                        .push(format!("pack {pack} on {name} {what} (recorded in {key})"));
                    rec.add(pack, d);
                }
            }
            if !rec.packs.is_empty() {
                out.by_storage.insert(i, rec);
            }
        }
        Ok(out)
    }

    /// Makes the blobs `unusable` names absent from the loaded index on their storages, so
    /// that a backup stores them again.
    pub fn distrust(&mut self, unusable: &UnusablePacks) {
        if unusable.by_storage.is_empty() {
            return;
        }
        let index = std::sync::Arc::make_mut(&mut self.index);
        for (&i, rec) in &unusable.by_storage {
            for (pack, d) in &rec.packs {
                let Some(pos) = index.pack_pos(pack) else {
                    continue;
                };
                match d {
                    PackDamage::Whole => index.distrust_pack(pos, 1 << i),
                    PackDamage::Blobs(blobs) => {
                        for b in blobs {
                            index.distrust_blob(b, pos, 1 << i);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_nonsense() {
        let mut rec = DamageRecord::default();
        rec.add(Id([1; 32]), PackDamage::Whole);
        rec.add(Id([2; 32]), PackDamage::Blobs([Id([5; 32])].into()));
        rec.add(Id([2; 32]), PackDamage::Blobs([Id([6; 32])].into()));
        rec.add(Id([3; 32]), PackDamage::Blobs([Id([7; 32])].into()));
        rec.add(Id([3; 32]), PackDamage::Whole);
        let enc = rec.encode();
        let back = DamageRecord::decode(&enc, "damaged/x").unwrap();
        assert_eq!(back, rec);
        assert_eq!(
            back.packs[&Id([2; 32])],
            PackDamage::Blobs([Id([5; 32]), Id([6; 32])].into())
        );
        assert_eq!(back.packs[&Id([3; 32])], PackDamage::Whole);
        assert!(DamageRecord::decode(&enc[..enc.len() - 1], "r").is_err());
        // "Whole" with blobs listed is refused.
        let mut bad = b"FRZD\x01\x01".to_vec();
        bad.extend_from_slice(&[9; 32]);
        bad.extend_from_slice(&[1, 1]);
        bad.extend_from_slice(&[4; 32]);
        let e = DamageRecord::decode(&bad, "r").unwrap_err().to_string();
        assert!(e.contains("whole = 1 with 1 blob"), "{e}");
        assert!(DamageRecord::decode(b"FRZI\x01\x00", "r").is_err());
    }
}
