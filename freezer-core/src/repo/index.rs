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
//! deduplication is then decided per storage, never assumed. Memory is about 60 bytes a blob.

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

/// The merged index of one repository (on one or several storages).
#[derive(Debug, Default, Clone)]
pub struct Index {
    packs: Vec<PackRef>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, SmallVec<[Location; 1]>>,
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
        for b in blobs {
            let loc = Location {
                pack: pos,
                offset: b.offset,
                length: b.length,
                ulen: b.ulen,
                kind: b.kind,
            };
            let locs = self.blobs.entry(b.id).or_default();
            if !locs.contains(&loc) {
                locs.push(loc);
            }
        }
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
        self.blobs
            .get(id)
            .map(|locs| {
                locs.iter().fold(0, |m, l| {
                    let bad = if self.distrusted.is_empty() {
                        0
                    } else {
                        self.distrusted.get(&(*id, l.pack)).copied().unwrap_or(0)
                    };
                    m | (self.packs[l.pack as usize].sinks & !bad)
                })
            })
            .unwrap_or(0)
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

    /// Every known location of blob `id`.
    pub fn locations(&self, id: &Id) -> &[Location] {
        self.blobs.get(id).map(|l| l.as_slice()).unwrap_or(&[])
    }

    /// The first location of blob `id`.
    pub fn get(&self, id: &Id) -> Option<&Location> {
        self.locations(id).first()
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
        self.blobs.len()
    }

    /// Iterates over blobs and their locations.
    pub fn blobs(&self) -> impl Iterator<Item = (&Id, &[Location])> {
        self.blobs.iter().map(|(id, l)| (id, l.as_slice()))
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
}
