//! The index: where every blob lives, and which storages hold each pack.
//!
//! On storage, index files (`index/<id>`) list packs and their blobs:
//!
//! ```text
//! "FRZI" || 0x01 || uvar(packs) || packs * (id[32] || uvar(blobs) ||
//!                                           blobs * (u8 type || uvar(offset) || uvar(length) || uvar(ulen) || id[32]))
//! ```
//!
//! wrapped as every small object is (see [`super::object`]). In memory, one [`Index`] merges the
//! index files of every storage of a tee and remembers, per pack, the storages that listed it:
//! deduplication is then decided per storage, never assumed.
//!
//! Memory: 48 bytes a blob location (the id and the four numbers of [`Location`], the type in
//! the pack number's top bit) in one array sorted by id, plus a fan-out table of half a byte a
//! blob; locations added since the last sort wait in a short tail, sorted in when it grows
//! past an eighth of the whole (or at [`Index::seal`]). Per pack: about 80 bytes. No hash
//! table, no allocation per blob: at two million blobs the index takes 97 MB.

use std::collections::HashMap;

use smallvec::SmallVec;

use super::pack::{BlobType, PackedBlob};
use super::wire::{Put, Reader};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::sink::SinkMask;

/// Where one copy of a blob lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Position of the pack in [`Index::pack`].
    pub pack: u32,
    /// Offset, stored length and uncompressed length (0: stored uncompressed).
    pub offset: u32,
    /// Stored length.
    pub length: u32,
    /// Length before compression, 0 if stored uncompressed.
    pub ulen: u32,
    /// Data or tree.
    pub kind: BlobType,
}

impl Location {
    /// The blob's length in plaintext.
    pub fn plain_len(&self, overhead: usize) -> u64 {
        if self.ulen > 0 {
            u64::from(self.ulen)
        } else {
            u64::from(self.length).saturating_sub(overhead as u64)
        }
    }

    /// This location as a packed-blob record for blob `id`.
    pub fn packed(&self, id: Id) -> PackedBlob {
        PackedBlob {
            kind: self.kind,
            id,
            offset: self.offset,
            length: self.length,
            ulen: self.ulen,
        }
    }
}

/// A pack the index knows, and the storages that hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackRef {
    /// The pack's id.
    pub id: Id,
    /// The storages whose index lists it.
    pub sinks: SinkMask,
}

/// The locations of one blob (rarely more than one).
pub type Locations = SmallVec<[Location; 2]>;

/// One location of one blob, as the index holds it: 48 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    id: Id,
    /// The pack's position, and the blob type in the top bit ([`TREE_BIT`]).
    pack: u32,
    offset: u32,
    length: u32,
    ulen: u32,
}

/// Set in [`Slot::pack`] for a tree blob.
const TREE_BIT: u32 = 1 << 31;

impl Slot {
    fn key(&self) -> (&Id, u32) {
        (&self.id, self.pack)
    }

    fn location(&self) -> Location {
        Location {
            pack: self.pack & !TREE_BIT,
            offset: self.offset,
            length: self.length,
            ulen: self.ulen,
            kind: if self.pack & TREE_BIT != 0 {
                BlobType::Tree
            } else {
                BlobType::Data
            },
        }
    }
}

/// The blobs' locations: `slots[..sorted]` sorted by (id, pack position), the rest in the
/// order added; `fanout[p]` is where ids whose first `bits` bits are `p` start among the sorted.
#[derive(Debug, Default, Clone)]
struct Slots {
    slots: Vec<Slot>,
    sorted: usize,
    bits: u32,
    fanout: Vec<u32>,
    /// Distinct ids among the sorted.
    distinct: usize,
}

/// The tail is sorted in once it is longer than this or an eighth of the sorted part.
const TAIL_MIN: usize = 4096;

impl Slots {
    fn prefix(&self, id: &Id) -> usize {
        if self.bits == 0 {
            0
        } else {
            (u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]) >> (32 - self.bits)) as usize
        }
    }

    /// The sorted slots of `id`.
    fn sorted_of(&self, id: &Id) -> &[Slot] {
        let sorted = &self.slots[..self.sorted];
        let (lo, hi) = match self.fanout.len() {
            0 => (0, sorted.len()),
            _ => {
                let p = self.prefix(id);
                (self.fanout[p] as usize, self.fanout[p + 1] as usize)
            }
        };
        let part = &sorted[lo..hi];
        let start = part.partition_point(|s| s.id < *id);
        let end = start + part[start..].partition_point(|s| s.id == *id);
        &part[start..end]
    }

    fn each(&self, id: &Id, mut f: impl FnMut(&Slot)) {
        self.sorted_of(id).iter().for_each(&mut f);
        self.slots[self.sorted..]
            .iter()
            .filter(|s| s.id == *id)
            .for_each(f);
    }

    fn push(&mut self, slot: Slot) {
        self.slots.push(slot);
        if self.slots.len() - self.sorted > TAIL_MIN.max(self.sorted / 8) {
            self.seal();
        }
    }

    /// Sorts the tail in: sorts it, then merges it with the sorted part from the back, in
    /// place (only the tail is copied aside).
    fn seal(&mut self) {
        if self.sorted == self.slots.len() {
            return;
        }
        let mut tail = self.slots.split_off(self.sorted);
        tail.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
        tail.dedup();
        let (n, m) = (self.slots.len(), tail.len());
        self.slots.reserve_exact(m);
        self.slots.resize(n + m, tail[0]);
        let (mut i, mut j, mut k) = (n, m, n + m);
        while j > 0 {
            if i > 0 && self.slots[i - 1].key() > tail[j - 1].key() {
                self.slots[k - 1] = self.slots[i - 1];
                i -= 1;
            } else {
                self.slots[k - 1] = tail[j - 1];
                j -= 1;
            }
            k -= 1;
        }
        drop(tail);
        // An exact duplicate (the same pack listed twice) is one location.
        self.slots.dedup();
        self.sorted = self.slots.len();
        self.distinct = self.slots.chunk_by(|a, b| a.id == b.id).count();
        // About eight slots per fan-out bucket.
        let n = self.slots.len();
        self.bits = (usize::BITS - (n / 8).leading_zeros()).min(24);
        self.fanout.clear();
        if self.bits > 0 {
            let buckets = 1usize << self.bits;
            self.fanout.reserve_exact(buckets + 1);
            let mut at = 0;
            for p in 0..buckets {
                while at < n && self.prefix(&self.slots[at].id) < p {
                    at += 1;
                }
                self.fanout.push(at as u32);
            }
            self.fanout.push(n as u32);
        }
    }
}

/// The merged index of one repository (on one or several storages).
#[derive(Debug, Default, Clone)]
pub struct Index {
    packs: Vec<PackRef>,
    pack_pos: HashMap<Id, u32>,
    blobs: Slots,
    /// Copies not to be trusted: (blob, pack position) and the storages whose copy is damaged.
    distrusted: HashMap<(Id, u32), SinkMask>,
}

/// The packs and blobs of one index file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexFile {
    /// Each pack with its blobs.
    pub packs: Vec<(Id, Vec<PackedBlob>)>,
}

/// Blobs one index file lists at most (a pack is never split across files), so that no index
/// file, nor the memory to decode one, grows with the repository.
pub const INDEX_FILE_BLOBS: usize = 50_000;

/// Gathers packs, one at a time, into index files of at most [`INDEX_FILE_BLOBS`] blobs.
#[derive(Debug, Default)]
pub struct IndexFileSplitter {
    file: IndexFile,
    blobs: usize,
}

impl IndexFileSplitter {
    /// Adds a pack; returns the file it completes when the pack does not fit in it.
    pub fn push(&mut self, pack: Id, blobs: Vec<PackedBlob>) -> Option<IndexFile> {
        let full = (self.blobs > 0 && self.blobs + blobs.len() > INDEX_FILE_BLOBS).then(|| {
            self.blobs = 0;
            std::mem::take(&mut self.file)
        });
        self.blobs += blobs.len();
        self.file.packs.push((pack, blobs));
        full
    }

    /// The last file, when it lists a pack.
    pub fn finish(self) -> Option<IndexFile> {
        (!self.file.packs.is_empty()).then_some(self.file)
    }
}

impl IndexFile {
    /// Splits into files of at most [`INDEX_FILE_BLOBS`] blobs (none when empty).
    pub fn split(self) -> Vec<IndexFile> {
        let mut splitter = IndexFileSplitter::default();
        let mut out: Vec<IndexFile> = self
            .packs
            .into_iter()
            .filter_map(|(pack, blobs)| splitter.push(pack, blobs))
            .collect();
        out.extend(splitter.finish());
        out
    }

    /// Encodes the plaintext of an index file.
    pub fn encode(&self) -> Vec<u8> {
        let n: usize = self.packs.iter().map(|(_, b)| b.len()).sum();
        let mut out = Vec::with_capacity(16 + self.packs.len() * 40 + n * 48);
        out.extend_from_slice(b"FRZI");
        out.put_u8(1);
        out.put_uvar(self.packs.len() as u64);
        for (id, blobs) in &self.packs {
            out.put_id(id);
            out.put_uvar(blobs.len() as u64);
            for b in blobs {
                out.put_u8(match b.kind {
                    BlobType::Data => 0,
                    BlobType::Tree => 1,
                });
                out.put_uvar(u64::from(b.offset));
                out.put_uvar(u64::from(b.length));
                out.put_uvar(u64::from(b.ulen));
                out.put_id(&b.id);
            }
        }
        out
    }

    /// Decodes the plaintext of an index file.
    pub fn decode(data: &[u8], what: &str) -> Result<IndexFile> {
        let mut r = Reader::new(data, what);
        r.expect_magic(b"FRZI", 1)?;
        let np = r.count(33)?;
        let mut packs = Vec::with_capacity(np);
        for _ in 0..np {
            let pack = r.id()?;
            let nb = r.count(36)?;
            let mut blobs = Vec::with_capacity(nb);
            for _ in 0..nb {
                let kind = match r.u8()? {
                    0 => BlobType::Data,
                    1 => BlobType::Tree,
                    k => return Err(r.err(format!("unknown blob type {k}"))),
                };
                let mut small = || -> Result<u32> {
                    let v = r.uvar()?;
                    u32::try_from(v)
                        .map_err(|_| Error::corrupt(what, format!("{v} exceeds 32 bits")))
                };
                let offset = small()?;
                let length = small()?;
                let ulen = small()?;
                let id = r.id()?;
                if u64::from(offset) + u64::from(length) > u64::from(u32::MAX) {
                    return Err(r.err("blob extends past 4 GiB"));
                }
                blobs.push(PackedBlob {
                    kind,
                    id,
                    offset,
                    length,
                    ulen,
                });
            }
            packs.push((pack, blobs));
        }
        r.finish()?;
        Ok(IndexFile { packs })
    }
}

impl Index {
    /// Records that the storages in `sinks` hold pack `pack` with `blobs`.
    pub fn add_pack(&mut self, pack: Id, sinks: SinkMask, blobs: &[PackedBlob]) {
        if let Some(&pos) = self.pack_pos.get(&pack) {
            self.packs[pos as usize].sinks |= sinks;
            return;
        }
        let pos = self.packs.len() as u32;
        self.packs.push(PackRef { id: pack, sinks });
        self.pack_pos.insert(pack, pos);
        let kind_bit = |k: BlobType| match k {
            BlobType::Data => 0,
            BlobType::Tree => TREE_BIT,
        };
        for b in blobs {
            self.blobs.push(Slot {
                id: b.id,
                pack: pos | kind_bit(b.kind),
                offset: b.offset,
                length: b.length,
                ulen: b.ulen,
            });
        }
    }

    /// Sorts in what was added since the last sort, so that every lookup is a search of one
    /// sorted array (lookups are right either way; this makes them fast). Called once a load
    /// or a backup has added all it adds.
    pub fn seal(&mut self) {
        self.blobs.seal();
    }

    /// Adds every pack of an index file, held by `sinks`.
    pub fn add_file(&mut self, file: &IndexFile, sinks: SinkMask) {
        for (pack, blobs) in &file.packs {
            self.add_pack(*pack, sinks, blobs);
        }
    }

    /// The storages that hold blob `id` in at least one pack (leaving out the copies
    /// [`Index::distrust_blob`] and [`Index::distrust_pack`] named).
    pub fn sinks_of(&self, id: &Id) -> SinkMask {
        let mut m = 0;
        self.blobs.each(id, |s| {
            let pack = s.pack & !TREE_BIT;
            let bad = if self.distrusted.is_empty() {
                0
            } else {
                self.distrusted.get(&(*id, pack)).copied().unwrap_or(0)
            };
            m |= self.packs[pack as usize].sinks & !bad;
        });
        m
    }

    /// Counts pack number `pos` as absent from the storages in `sinks` (it is missing or
    /// damaged there): none of its blobs is found there any more.
    pub fn distrust_pack(&mut self, pos: u32, sinks: SinkMask) {
        if let Some(p) = self.packs.get_mut(pos as usize) {
            p.sinks &= !sinks;
        }
    }

    /// Counts the copy of blob `id` in pack number `pos` as absent from the storages in
    /// `sinks` (it is damaged there), for [`Index::sinks_of`].
    pub fn distrust_blob(&mut self, id: &Id, pos: u32, sinks: SinkMask) {
        *self.distrusted.entry((*id, pos)).or_default() |= sinks;
    }

    /// Every known location of blob `id`, in the order their packs were added.
    pub fn locations(&self, id: &Id) -> Locations {
        let mut out = Locations::new();
        self.blobs.each(id, |s| out.push(s.location()));
        if self.blobs.sorted < self.blobs.slots.len() {
            out.sort_by_key(|l| l.pack);
            out.dedup();
        }
        out
    }

    /// The first location of blob `id`.
    pub fn get(&self, id: &Id) -> Option<Location> {
        let mut first: Option<Location> = None;
        self.blobs.each(id, |s| {
            if first.is_none_or(|f| s.pack & !TREE_BIT < f.pack) {
                first = Some(s.location());
            }
        });
        first
    }

    /// Pack number `pos`.
    pub fn pack(&self, pos: u32) -> &PackRef {
        &self.packs[pos as usize]
    }

    /// The position of pack `id`, if known.
    pub fn pack_pos(&self, id: &Id) -> Option<u32> {
        self.pack_pos.get(id).copied()
    }

    /// Every pack.
    pub fn packs(&self) -> &[PackRef] {
        &self.packs
    }

    /// The number of distinct blobs.
    pub fn blob_count(&self) -> usize {
        let tail = &self.blobs.slots[self.blobs.sorted..];
        if tail.is_empty() {
            return self.blobs.distinct;
        }
        let mut new: Vec<&Id> = tail
            .iter()
            .map(|s| &s.id)
            .filter(|id| self.blobs.sorted_of(id).is_empty())
            .collect();
        new.sort_unstable();
        new.dedup();
        self.blobs.distinct + new.len()
    }

    /// Every blob, in the order of their ids, with its locations.
    pub fn blobs(&self) -> impl Iterator<Item = (Id, Locations)> + '_ {
        let sorted = &self.blobs.slots[..self.blobs.sorted];
        let mut tail = self.blobs.slots[self.blobs.sorted..].to_vec();
        tail.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
        let (mut i, mut j) = (0, 0);
        std::iter::from_fn(move || {
            let id = match (sorted.get(i), tail.get(j)) {
                (None, None) => return None,
                (Some(a), None) => a.id,
                (None, Some(b)) => b.id,
                (Some(a), Some(b)) => a.id.min(b.id),
            };
            let mut locs = Locations::new();
            while let Some(s) = sorted.get(i).filter(|s| s.id == id) {
                locs.push(s.location());
                i += 1;
            }
            while let Some(s) = tail.get(j).filter(|s| s.id == id) {
                if !locs.contains(&s.location()) {
                    locs.push(s.location());
                }
                j += 1;
            }
            Some((id, locs))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8, offset: u32) -> PackedBlob {
        PackedBlob {
            kind: BlobType::Data,
            id: Id([n; 32]),
            offset,
            length: 10,
            ulen: 0,
        }
    }

    #[test]
    fn index_files_round_trip() {
        let f = IndexFile {
            packs: vec![
                (Id([9; 32]), vec![blob(1, 0), blob(2, 10)]),
                (Id([8; 32]), vec![]),
            ],
        };
        let enc = f.encode();
        assert_eq!(IndexFile::decode(&enc, "index").unwrap(), f);
        assert!(IndexFile::decode(&enc[..enc.len() - 1], "index").is_err());
        let mut bad = enc.clone();
        bad[0] = b'X';
        assert!(IndexFile::decode(&bad, "index").is_err());
    }

    #[test]
    fn big_index_files_split_between_packs() {
        let many: Vec<PackedBlob> = (0..INDEX_FILE_BLOBS as u32 / 2 + 1)
            .map(|i| blob(1, i))
            .collect();
        let f = IndexFile {
            packs: (0..5).map(|p| (Id([p; 32]), many.clone())).collect(),
        };
        let parts = f.clone().split();
        assert_eq!(parts.len(), 5, "two half-full packs never share a file");
        assert_eq!(
            parts.into_iter().flat_map(|p| p.packs).collect::<Vec<_>>(),
            f.packs
        );
        let small = IndexFile {
            packs: vec![(Id([1; 32]), vec![blob(1, 0)]), (Id([2; 32]), vec![])],
        };
        assert_eq!(small.clone().split(), [small]);
        assert!(IndexFile::default().split().is_empty());
    }

    #[test]
    fn storages_are_tracked_per_pack() {
        let mut ix = Index::default();
        ix.add_pack(Id([9; 32]), 0b01, &[blob(1, 0)]);
        ix.add_pack(Id([9; 32]), 0b10, &[blob(1, 0)]);
        ix.add_pack(Id([7; 32]), 0b100, &[blob(1, 0), blob(2, 10)]);
        assert_eq!(ix.sinks_of(&Id([1; 32])), 0b111);
        assert_eq!(ix.sinks_of(&Id([2; 32])), 0b100);
        assert_eq!(ix.sinks_of(&Id([3; 32])), 0);
        assert_eq!(ix.locations(&Id([1; 32])).len(), 2);
        // A damaged copy on one storage counts as absent there only.
        ix.distrust_blob(&Id([2; 32]), 1, 0b100);
        assert_eq!(ix.sinks_of(&Id([2; 32])), 0);
        ix.distrust_pack(0, 0b01);
        assert_eq!(ix.sinks_of(&Id([1; 32])), 0b110);
        ix.distrust_blob(&Id([1; 32]), 1, 0b100);
        assert_eq!(ix.sinks_of(&Id([1; 32])), 0b10);
    }

    /// Lookups agree with a plain map of every location, whether the tail is sorted in or
    /// not, across the automatic sorts; a blob in several packs keeps its packs' order.
    #[test]
    fn lookups_agree_with_a_map_before_and_after_sealing() {
        assert_eq!(std::mem::size_of::<Slot>(), 48);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ids: Vec<Id> = (0..20_000)
            .map(|_| {
                let mut id = [0u8; 32];
                id.chunks_mut(8)
                    .for_each(|c| c.copy_from_slice(&next().to_le_bytes()));
                Id(id)
            })
            .collect();
        // A few ids that sort at the very ends.
        ids.extend([Id([0; 32]), Id([0xff; 32])]);
        let mut ix = Index::default();
        let mut model: HashMap<Id, Vec<Location>> = HashMap::new();
        let mut pack_no = 0u8;
        let check = |ix: &Index, model: &HashMap<Id, Vec<Location>>| {
            for (id, want) in model {
                assert_eq!(ix.locations(id).as_slice(), want.as_slice());
                assert_eq!(ix.get(id), want.first().copied());
                assert_ne!(ix.sinks_of(id), 0);
            }
            assert!(ix.locations(&Id([7; 32])).is_empty());
            assert_eq!(ix.blob_count(), model.len());
            let listed: Vec<(Id, Locations)> = ix.blobs().collect();
            assert_eq!(listed.len(), model.len());
            assert!(listed.windows(2).all(|w| w[0].0 < w[1].0));
            for (id, locs) in listed {
                assert_eq!(locs.as_slice(), model[&id].as_slice());
            }
        };
        for round in 0..6 {
            // Packs of 700 blobs; every third blob of a round appears again in a later pack.
            for chunk in ids.chunks(700) {
                let pos = ix.packs().len() as u32;
                let blobs: Vec<PackedBlob> = chunk
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| round == 0 || i % 3 == round % 3)
                    .map(|(i, id)| PackedBlob {
                        kind: if i % 5 == 0 {
                            BlobType::Tree
                        } else {
                            BlobType::Data
                        },
                        id: *id,
                        offset: i as u32 * 100,
                        length: 100,
                        ulen: round as u32,
                    })
                    .collect();
                for b in &blobs {
                    model.entry(b.id).or_default().push(Location {
                        pack: pos,
                        offset: b.offset,
                        length: b.length,
                        ulen: b.ulen,
                        kind: b.kind,
                    });
                }
                pack_no = pack_no.wrapping_add(1);
                let mut pack_id = [pack_no; 32];
                pack_id[0] = round as u8;
                ix.add_file(
                    &IndexFile {
                        packs: vec![(Id(pack_id), blobs)],
                    },
                    1,
                );
            }
            if round % 2 == 0 {
                check(&ix, &model);
            }
            ix.seal();
            check(&ix, &model);
        }
        // The same pack again only adds a storage.
        let (first, _) = ix.packs().first().map(|p| (p.id, p.sinks)).unwrap();
        ix.add_pack(first, 0b10, &[]);
        assert_eq!(ix.pack(0).sinks, 0b11);
        check(&ix, &model);
    }
}
