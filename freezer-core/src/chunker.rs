//! Content-defined chunking: FastCDC with normalized chunking (level 2) over a gear hash whose
//! table is derived from the repository's secret seed, so chunk boundaries do not reveal
//! contents across repositories.
//!
//! The chunker is resumable: it keeps its state between calls, so a stream read in blocks
//! is cut without copying blocks together. It never allocates per byte and never reads ahead.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Chunk size limits, stored in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// No chunk is smaller, except the last of a stream.
    pub min_size: u32,
    /// The target average; a power of two.
    pub avg_size: u32,
    /// No chunk is larger.
    pub max_size: u32,
}

impl Default for ChunkerParams {
    /// 512 KiB / 1 MiB / 8 MiB.
    fn default() -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Checks the limits are usable: `64 <= min < avg < max <= 64 MiB`, `avg` a power of two.
    pub fn validate(&self) -> Result<()> {
        let ok = self.min_size >= 64
            && self.min_size < self.avg_size
            && self.avg_size < self.max_size
            && self.max_size <= 64 * 1024 * 1024
            && self.avg_size.is_power_of_two()
            && self.avg_size >= 256;
        if ok {
            Ok(())
        } else {
            Err(Error::bad_input(
                "chunker",
                format!(
                    "sizes {}/{}/{} must satisfy 64 <= min < avg < max <= 64 MiB with avg a power of two",
                    self.min_size, self.avg_size, self.max_size
                ),
            ))
        }
    }
}

/// A content-defined chunker for one repository.
#[derive(Clone)]
pub struct Chunker {
    gear: Box<[u64; 256]>,
    min: usize,
    avg: usize,
    max: usize,
    mask_small: u64,
    mask_large: u64,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("min", &self.min)
            .field("avg", &self.avg)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// Where the chunker stands inside the current chunk.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChunkState {
    len: usize,
    hash: u64,
}

impl ChunkState {
    /// Bytes consumed into the current, unfinished chunk.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte has been consumed since the last cut.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Chunker {
    /// A chunker with the given limits and a gear table derived from `seed`.
    pub fn new(params: ChunkerParams, seed: &[u8; 32]) -> Result<Self> {
        params.validate()?;
        let mut raw = [0u8; 256 * 8];
        let mut h = blake3::Hasher::new_keyed(seed);
        h.update(b"freezer-rs gear table v1");
        h.finalize_xof().fill(&mut raw);
        let mut gear = Box::new([0u64; 256]);
        for (i, g) in gear.iter_mut().enumerate() {
            *g = u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        let bits = params.avg_size.trailing_zeros();
        // The top bits of a gear hash depend on the last 64 bytes; the low bits on only a few.
        let top = |n: u32| !0u64 << (64 - n);
        Ok(Chunker {
            gear,
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            mask_small: top(bits + 2),
            mask_large: top(bits.saturating_sub(2).max(1)),
        })
    }

    /// The largest chunk this chunker makes.
    pub fn max_size(&self) -> usize {
        self.max
    }

    /// The smallest chunk this chunker makes (but the last of a stream).
    pub fn min_size(&self) -> usize {
        self.min
    }

    /// Consumes `data` into the chunk described by `state`. Returns the offset in `data` just
    /// past a cut point and resets `state`, or `None` when all of `data` belongs to the chunk.
    pub fn next_cut(&self, state: &mut ChunkState, data: &[u8]) -> Option<usize> {
        let mut i = 0usize;
        let mut len = state.len;
        if len < self.min {
            let skip = (self.min - len).min(data.len());
            len += skip;
            i = skip;
            if len < self.min {
                state.len = len;
                return None;
            }
        }
        let mut h = state.hash;
        // Below the average size, the stricter mask makes cuts rarer (normalized chunking).
        if len < self.avg {
            let n = (self.avg - len).min(data.len() - i);
            let end = i + n;
            while i < end {
                h = (h << 1).wrapping_add(self.gear[data[i] as usize]);
                i += 1;
                if h & self.mask_small == 0 {
                    *state = ChunkState::default();
                    return Some(i);
                }
            }
            len += n;
        }
        if len >= self.avg {
            let n = (self.max - len).min(data.len() - i);
            let end = i + n;
            while i < end {
                h = (h << 1).wrapping_add(self.gear[data[i] as usize]);
                i += 1;
                if h & self.mask_large == 0 {
                    *state = ChunkState::default();
                    return Some(i);
                }
            }
            len += n;
            if len >= self.max {
                *state = ChunkState::default();
                return Some(i);
            }
        }
        state.len = len;
        state.hash = h;
        None
    }

    /// Cuts a whole buffer at once; the lengths of its chunks, in order.
    pub fn chunk_lengths(&self, data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut state = ChunkState::default();
        let mut at = 0;
        while at < data.len() {
            match self.next_cut(&mut state, &data[at..]) {
                Some(n) => {
                    out.push(n);
                    at += n;
                }
                None => {
                    out.push(data.len() - at);
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            min_size: 2048,
            avg_size: 8192,
            max_size: 65536,
        }
    }

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn limits_hold_and_lengths_cover_the_input() {
        let c = Chunker::new(small(), &[7; 32]).unwrap();
        let d = data(1 << 20, 1);
        let lens = c.chunk_lengths(&d);
        assert_eq!(lens.iter().sum::<usize>(), d.len());
        for l in &lens[..lens.len() - 1] {
            assert!((2048..=65536).contains(l), "{l}");
        }
        let avg = d.len() / lens.len();
        assert!((4096..=24576).contains(&avg), "average {avg}");
    }

    #[test]
    fn cuts_do_not_depend_on_how_the_stream_is_split() {
        let c = Chunker::new(small(), &[1; 32]).unwrap();
        let d = data(300_000, 2);
        let whole = c.chunk_lengths(&d);
        for block in [1usize, 7, 4096, 10_000] {
            let mut lens = Vec::new();
            let mut state = ChunkState::default();
            let mut cur = 0;
            for piece in d.chunks(block) {
                let mut at = 0;
                while let Some(n) = c.next_cut(&mut state, &piece[at..]) {
                    lens.push(cur + n);
                    cur = 0;
                    at += n;
                }
                cur += piece.len() - at;
            }
            if cur > 0 {
                lens.push(cur);
            }
            assert_eq!(lens, whole, "block size {block}");
        }
    }

    #[test]
    fn an_insertion_only_changes_nearby_chunks() {
        let c = Chunker::new(small(), &[3; 32]).unwrap();
        let d = data(1 << 20, 3);
        let mut e = d.clone();
        e.splice(500_000..500_000, b"inserted bytes".iter().copied());
        let ends = |v: &[usize]| {
            v.iter()
                .scan(0, |s, l| {
                    *s += l;
                    Some(*s)
                })
                .collect::<Vec<_>>()
        };
        let a = ends(&c.chunk_lengths(&d));
        let b: Vec<usize> = ends(&c.chunk_lengths(&e))
            .into_iter()
            .map(|x| if x > 500_000 { x - 14 } else { x })
            .collect();
        let common = a.iter().filter(|x| b.contains(x)).count();
        assert!(
            common + 4 >= a.len(),
            "{common} of {} boundaries kept",
            a.len()
        );
    }

    #[test]
    fn the_seed_changes_the_boundaries() {
        let d = data(1 << 20, 4);
        let a = Chunker::new(small(), &[1; 32]).unwrap().chunk_lengths(&d);
        let b = Chunker::new(small(), &[2; 32]).unwrap().chunk_lengths(&d);
        assert_ne!(a, b);
    }

    #[test]
    fn bad_params_are_refused() {
        let p = ChunkerParams {
            min_size: 100,
            avg_size: 3000,
            max_size: 9000,
        };
        assert!(Chunker::new(p, &[0; 32]).is_err());
    }
}
