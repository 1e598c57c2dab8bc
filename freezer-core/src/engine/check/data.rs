//! Reading packs whole: which ones ([`ReadData`]) and what makes one intact ([`verify_pack`]).
//!
//! A pack read is verified as a stranger would: its bytes must hash to its name, its header
//! must decode and tile the pack, every blob must decode and match its id, and every entry the
//! index gives for the pack must be in the header. Memory is bounded by a byte budget shared by
//! the reads in flight; hashing and decoding run on the blocking pool.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;

use super::{CheckReport, Problems, StorageView};
use crate::crypto::Crypto;
use crate::engine::Progress;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::damaged::PackDamage;
use crate::repo::pack::{self, BlobType, PackedBlob};
use crate::repo::{BlobReader, pack_key};
use crate::sink::SinkExt;

/// Packs read at once.
const PARALLEL_READS: usize = 8;
/// Bytes of packs held in memory at once, in MiB (a larger pack takes the whole budget).
const READ_BUDGET_MIB: u32 = 256;
/// Packs whose index entries are gathered in one pass over the index.
const PACKS_PER_PASS: usize = 1024;

/// Which packs `check` reads whole and verifies byte by byte.
///
/// Parsed from `none`, `all`, `n/m` or `x%`. The choice depends only on the pack's id (its
/// first 8 bytes as a big-endian number), so it is the same from run to run, and subsets `1/m`
/// to `m/m` together read every pack exactly once: a large repository can be verified a slice
/// a night.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum ReadData {
    /// No pack is read: only the structure is checked.
    #[default]
    None,
    /// Every pack.
    All,
    /// Slice `n` of `m`: the packs whose number is `n - 1` modulo `m`.
    Subset {
        /// Which slice, from 1 to `m`.
        n: u64,
        /// How many slices.
        m: u64,
    },
    /// About this percentage of the packs (more than 0, at most 100): those whose number is
    /// below that share of the range of numbers.
    Percent(f64),
}

impl ReadData {
    /// Refuses a subset outside `1 <= n <= m` and a percentage outside `0 < x <= 100`.
    pub fn validate(&self) -> Result<()> {
        match *self {
            ReadData::Subset { n, m } if n == 0 || m == 0 || n > m => Err(Error::bad_input(
                "read_data",
                format!("subset {n}/{m}: n/m needs 1 <= n <= m"),
            )),
            ReadData::Percent(x) if !(x > 0.0 && x <= 100.0) => Err(Error::bad_input(
                "read_data",
                format!("{x}%: the percentage must be more than 0 and at most 100"),
            )),
            _ => Ok(()),
        }
    }

    /// Whether the pack named `pack` is read.
    pub fn selects(&self, pack: &Id) -> bool {
        let number = u64::from_be_bytes(pack.0[..8].try_into().expect("8 bytes"));
        match *self {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Subset { n, m } => m > 0 && n > 0 && number % m == n - 1,
            ReadData::Percent(x) => x >= 100.0 || (number as f64) < x / 100.0 * 2f64.powi(64),
        }
    }
}

impl fmt::Display for ReadData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadData::None => f.write_str("none"),
            ReadData::All => f.write_str("all"),
            ReadData::Subset { n, m } => write!(f, "{n}/{m}"),
            ReadData::Percent(x) => write!(f, "{x}%"),
        }
    }
}

impl FromStr for ReadData {
    type Err = Error;

    /// `none`, `all`, `n/m` (1 <= n <= m) or `x%` (0 < x <= 100).
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        let parsed = if t.eq_ignore_ascii_case("none") {
            ReadData::None
        } else if t.eq_ignore_ascii_case("all") {
            ReadData::All
        } else if let Some(x) = t.strip_suffix('%') {
            match x.trim().parse::<f64>() {
                Ok(x) if x.is_finite() => ReadData::Percent(x),
                _ => {
                    return Err(Error::bad_input(
                        "read_data",
                        format!("{s:?}: the percentage must be a number, like 10%"),
                    ));
                }
            }
        } else if let Some((n, m)) = t.split_once('/') {
            match (n.trim().parse::<u64>(), m.trim().parse::<u64>()) {
                (Ok(n), Ok(m)) => ReadData::Subset { n, m },
                _ => {
                    return Err(Error::bad_input(
                        "read_data",
                        format!("{s:?}: n/m needs two whole numbers, like 1/5"),
                    ));
                }
            }
        } else {
            return Err(Error::bad_input(
                "read_data",
                format!("{s:?} is not n/m (a subset, like 1/5), x% (like 10%), all or none"),
            ));
        };
        parsed
            .validate()
            .map_err(|_| match parsed {
                ReadData::Subset { n, m } => Error::bad_input(
                    "read_data",
                    format!("{s:?}: n/m needs 1 <= n <= m, not n = {n} and m = {m}"),
                ),
                _ => Error::bad_input(
                    "read_data",
                    format!("{s:?}: the percentage must be more than 0 and at most 100"),
                ),
            })
            .map(|()| parsed)
    }
}

/// What reading one pack whole found.
#[derive(Debug, Default)]
pub(super) struct PackVerdict {
    /// What is wrong, in the order found.
    pub errors: Vec<String>,
    /// The blobs found damaged. Empty while `errors` is not: the whole pack is unusable.
    pub bad_blobs: Vec<Id>,
}

impl PackVerdict {
    /// The errors as one message.
    fn summary(&self) -> String {
        const SHOWN: usize = 3;
        let mut s = self.errors[..self.errors.len().min(SHOWN)].join("; ");
        if self.errors.len() > SHOWN {
            s.push_str(&format!(" (and {} more)", self.errors.len() - SHOWN));
        }
        s
    }
}

/// Verifies the bytes `data` of pack `id`, which the storage listed at `listed` bytes and
/// for which the index gives the entries `claimed`.
pub(super) fn verify_pack(
    crypto: &Crypto,
    id: &Id,
    data: &[u8],
    listed: u64,
    claimed: &[PackedBlob],
) -> PackVerdict {
    let mut v = PackVerdict::default();
    if data.len() as u64 != listed {
        v.errors
            .push(format!("{} bytes read, {listed} listed", data.len()));
    }
    if Id::of_stored(data) != *id {
        v.errors.push("content does not match its name".into());
    }
    let header = match pack::decode_header(crypto, data, data.len() as u64, "pack") {
        Ok(h) => h,
        Err(e) => {
            v.errors.push(e.to_string());
            return v;
        }
    };
    let mut scratch = pack::DecodeScratch::default();
    for b in &header {
        let stored = &data[b.offset as usize..b.offset as usize + b.length as usize];
        let what = format_args!("blob {} at offset {}", b.id, b.offset);
        if let Err(e) = pack::decode_blob_with(crypto, &mut scratch, stored, b, &what) {
            v.errors.push(e.to_string());
            v.bad_blobs.push(b.id);
        }
    }
    type Entry = (Id, u32, u32, u32, BlobType);
    let entry = |b: &PackedBlob| -> Entry { (b.id, b.offset, b.length, b.ulen, b.kind) };
    let in_header: HashSet<Entry> = header.iter().map(entry).collect();
    for c in claimed {
        if !in_header.contains(&entry(c)) {
            v.errors.push(format!(
                "the index lists blob {} at offset {} ({} bytes), its header does not",
                c.id, c.offset, c.length
            ));
            if !v.bad_blobs.contains(&c.id) {
                v.bad_blobs.push(c.id);
            }
        }
    }
    v
}

/// Reads the packs `read_data` selects, from every storage whose index lists them, and
/// records what is wrong with each.
pub(super) async fn read_packs(
    reader: &BlobReader,
    views: &[StorageView],
    read_data: ReadData,
    problems: &mut Problems,
    report: &mut CheckReport,
    progress: &dyn Progress,
) {
    let index = reader.index();
    // (view, pack position, pack id, size); grouped by pack.
    let mut jobs: Vec<(usize, u32, Id, u64)> = Vec::new();
    for (v, view) in views.iter().enumerate() {
        for id in view.claims.keys() {
            if view.broken.contains(id) || !read_data.selects(id) {
                continue;
            }
            if let (Some(&size), Some(pos)) = (view.present.get(id), index.pack_pos(id)) {
                jobs.push((v, pos, *id, size));
            }
        }
    }
    jobs.sort_by_key(|j| (j.1, j.0));
    progress.set_total(jobs.iter().map(|j| j.3).sum());
    let budget = Arc::new(tokio::sync::Semaphore::new(READ_BUDGET_MIB as usize));
    for chunk in jobs.chunks(PACKS_PER_PASS) {
        // What the index says each of these packs holds: one pass over the index.
        let wanted: HashSet<u32> = chunk.iter().map(|j| j.1).collect();
        let mut claimed: HashMap<u32, Vec<PackedBlob>> = HashMap::new();
        for (blob, locs) in index.blobs() {
            for l in locs.iter().filter(|l| wanted.contains(&l.pack)) {
                claimed.entry(l.pack).or_default().push(l.packed(blob));
            }
        }
        let claimed = Arc::new(claimed);
        let mut results = futures::stream::iter(chunk.iter().copied())
            .map(|(v, pos, id, size)| {
                let member = reader.tee().member(views[v].member).clone();
                let (crypto, claimed, budget) =
                    (reader.crypto().clone(), claimed.clone(), budget.clone());
                async move {
                    let mib = size.div_ceil(1 << 20).clamp(1, u64::from(READ_BUDGET_MIB)) as u32;
                    let _permit = budget.acquire_many_owned(mib).await.expect("never closed");
                    let (read, verdict) = match member.get_bytes(&pack_key(&id)).await {
                        Ok(data) => (
                            true,
                            verify_off_runtime(crypto, id, data, size, claimed, pos).await,
                        ),
                        Err(e) => (
                            // Gone since the listing: missing, as damaged as can be.
                            matches!(e, Error::NotFound { .. }),
                            (
                                0,
                                PackVerdict {
                                    errors: vec![format!("cannot be read: {e}")],
                                    bad_blobs: vec![],
                                },
                            ),
                        ),
                    };
                    (v, pos, id, read, verdict)
                }
            })
            .buffer_unordered(PARALLEL_READS);
        while let Some((v, pos, id, read, (n, verdict))) = results.next().await {
            report.packs_read += 1;
            report.bytes_read += n;
            progress.add_bytes(n);
            let view = &views[v];
            if verdict.errors.is_empty() {
                problems.intact.insert((view.member, id));
                continue;
            }
            // What could not be read for another reason (a dropped connection) is not known
            // to be damaged: backups keep trusting it.
            if read {
                let damage = if verdict.bad_blobs.is_empty() {
                    PackDamage::Whole
                } else {
                    PackDamage::Blobs(verdict.bad_blobs.iter().copied().collect())
                };
                problems
                    .records
                    .entry(view.member)
                    .or_default()
                    .add(id, damage);
            }
            let p = problems.add(
                format!("pack {id} on {}", view.name),
                verdict.summary(),
                view.bit(),
            );
            if verdict.bad_blobs.is_empty() {
                problems.touch_pack(p, pos);
            }
            for b in verdict.bad_blobs {
                problems.touch_blob(p, b);
            }
        }
    }
}

/// Runs [`verify_pack`] on the blocking pool; returns the bytes read and the verdict.
async fn verify_off_runtime(
    crypto: Crypto,
    id: Id,
    data: Bytes,
    listed: u64,
    claimed: Arc<HashMap<u32, Vec<PackedBlob>>>,
    pos: u32,
) -> (u64, PackVerdict) {
    let n = data.len() as u64;
    let verdict = tokio::task::spawn_blocking(move || {
        let claimed = claimed.get(&pos).map(Vec::as_slice).unwrap_or_default();
        verify_pack(&crypto, &id, &data, listed, claimed)
    })
    .await
    .unwrap_or_else(|e| PackVerdict {
        errors: vec![format!("verification failed: {e}")],
        bad_blobs: vec![],
    });
    (n, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::repo::pack::{BlobEncoder, PackWriter};

    #[test]
    fn read_data_parses_subsets_percentages_and_names() {
        assert_eq!("all".parse::<ReadData>().unwrap(), ReadData::All);
        assert_eq!("None".parse::<ReadData>().unwrap(), ReadData::None);
        assert_eq!(
            " 2/7 ".parse::<ReadData>().unwrap(),
            ReadData::Subset { n: 2, m: 7 }
        );
        assert_eq!(
            "1/1".parse::<ReadData>().unwrap(),
            ReadData::Subset { n: 1, m: 1 }
        );
        assert_eq!(
            "12.5%".parse::<ReadData>().unwrap(),
            ReadData::Percent(12.5)
        );
        assert_eq!(
            "100%".parse::<ReadData>().unwrap(),
            ReadData::Percent(100.0)
        );
        for s in ["2/7", "12.5%", "all", "none"] {
            assert_eq!(s.parse::<ReadData>().unwrap().to_string(), s);
        }
        let err = |s: &str| s.parse::<ReadData>().unwrap_err().to_string();
        assert!(err("0/5").contains("1 <= n <= m"), "{}", err("0/5"));
        assert!(err("6/5").contains("n = 6 and m = 5"), "{}", err("6/5"));
        assert!(err("1/0").contains("1 <= n <= m"));
        assert!(err("a/5").contains("two whole numbers"));
        assert!(err("-1/5").contains("two whole numbers"));
        assert!(err("0%").contains("more than 0"));
        assert!(err("101%").contains("at most 100"));
        assert!(err("-3%").contains("more than 0"));
        assert!(err("NaN%").contains("must be a number"));
        assert!(err("x%").contains("must be a number"));
        assert!(err("half").contains("is not n/m"));
        assert!(err("half").starts_with("read_data:"));
        assert!(ReadData::Subset { n: 0, m: 3 }.validate().is_err());
        assert!(ReadData::Percent(0.0).validate().is_err());
        assert!(ReadData::Percent(50.0).validate().is_ok());
    }

    fn ids(count: u32) -> Vec<Id> {
        (0..count)
            .map(|i| Id::of_stored(&i.to_le_bytes()))
            .collect()
    }

    #[test]
    fn subsets_partition_the_packs() {
        let ids = ids(1000);
        for m in [1u64, 2, 3, 7] {
            let mut seen = vec![0u32; ids.len()];
            for n in 1..=m {
                let sel = ReadData::Subset { n, m };
                let mut count = 0;
                for (i, id) in ids.iter().enumerate() {
                    if sel.selects(id) {
                        seen[i] += 1;
                        count += 1;
                    }
                }
                // Each slice holds its share of the packs, give or take.
                let share = ids.len() as u64 / m;
                assert!(count as u64 > share * 2 / 3, "{n}/{m}: {count}");
            }
            assert!(seen.iter().all(|&s| s == 1), "1/{m} .. {m}/{m} cover once");
        }
    }

    #[test]
    fn percentages_grow_and_are_roughly_right() {
        let ids = ids(2000);
        let count = |x: f64| {
            ids.iter()
                .filter(|id| ReadData::Percent(x).selects(id))
                .count()
        };
        assert_eq!(count(100.0), ids.len());
        let (ten, fifty) = (count(10.0), count(50.0));
        assert!((120..=280).contains(&ten), "{ten}");
        assert!((850..=1150).contains(&fifty), "{fifty}");
        for id in &ids {
            if ReadData::Percent(10.0).selects(id) {
                assert!(ReadData::Percent(50.0).selects(id));
            }
        }
        assert!(ReadData::Percent(100.0).selects(&Id([0xff; 32])));
        assert!(!ReadData::None.selects(&ids[0]));
        assert!(ReadData::All.selects(&ids[0]));
    }

    fn sample_pack(crypto: &Crypto) -> pack::FinishedPack {
        let mut enc = BlobEncoder::new(crypto.clone(), Some(1));
        let mut w = PackWriter::default();
        for i in 0..4u8 {
            let data = Bytes::from(vec![i; 3000 + usize::from(i)]);
            w.add(&enc.encode(
                crypto.blob_id(&[&data]),
                BlobType::Data,
                std::slice::from_ref(&data),
            ));
        }
        w.finish(crypto)
    }

    #[test]
    fn an_intact_pack_passes_and_each_kind_of_damage_is_named() {
        for encrypted in [false, true] {
            let crypto = Crypto::new(&MasterKey::generate(encrypted));
            let pack = sample_pack(&crypto);
            let bytes = pack.payload.to_bytes().to_vec();
            let n = bytes.len() as u64;
            let ok = verify_pack(&crypto, &pack.id, &bytes, n, &pack.blobs);
            assert!(ok.errors.is_empty(), "{:?}", ok.errors);

            // One flipped byte in blob 2: that blob, and the name no longer matches.
            let b = pack.blobs[2];
            let mut bad = bytes.clone();
            bad[(b.offset + b.length / 2) as usize] ^= 1;
            let v = verify_pack(&crypto, &pack.id, &bad, n, &pack.blobs);
            assert_eq!(v.bad_blobs, [b.id]);
            assert!(
                v.summary().contains("does not match its name"),
                "{}",
                v.summary()
            );
            assert!(
                v.summary().contains(&format!("blob {}", b.id)),
                "{}",
                v.summary()
            );

            // A damaged header: the whole pack.
            let mut bad = bytes.clone();
            let len = bad.len();
            let hlen = u32::from_le_bytes(bytes[len - 4..].try_into().unwrap()) as usize;
            bad[len - 4 - hlen] ^= 1;
            let v = verify_pack(&crypto, &pack.id, &bad, n, &pack.blobs);
            assert!(!v.errors.is_empty() && v.bad_blobs.is_empty(), "{v:?}");

            // Truncated: the whole pack, and the size disagrees with the listing.
            let v = verify_pack(&crypto, &pack.id, &bytes[..len - 100], n, &pack.blobs);
            assert!(v.errors[0].contains("listed"), "{v:?}");
            assert!(v.bad_blobs.is_empty());

            // An index entry the header does not confirm.
            let mut lying = pack.blobs.clone();
            lying[1].offset += 1;
            let v = verify_pack(&crypto, &pack.id, &bytes, n, &lying);
            assert_eq!(v.bad_blobs, [lying[1].id]);
            assert!(
                v.summary().contains("its header does not"),
                "{}",
                v.summary()
            );
        }
    }
}
