//! Large I/O buffers.
//!
//! Buffers of a quarter megabyte or more that live for a moment (a block read from a file, a
//! range read from a pack, a blob being decrypted) are anonymous memory maps, not heap
//! allocations. With the heap, glibc raises its mmap threshold after the first such free and
//! keeps later buffers in per-thread arenas: a pipeline of a dozen threads then holds hundreds
//! of megabytes it no longer uses. The common sizes ([`CLASSES`]: powers of two from 1 to
//! 8 MiB, which hold the blocks a backup reads, the runs a restore fetches and the blobs it
//! decrypts) come from small pools and go back to them when the last `Bytes` slice of them is
//! dropped, so their pages are faulted in and zeroed once, not once per buffer. The pools keep
//! at most [`FREE_MAX`] bytes of free maps between them, so what a process holds beyond the
//! buffers in use is bounded whatever the mix of sizes. Other buffers are maps or heap blocks
//! of their own size, so a small file never pins a big map.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

/// Buffers at least this large are mapped; smaller ones use the heap.
const MAP_FROM: usize = 256 * 1024;
/// The sizes of pooled maps: the blocks a backup reads files in (1 MiB), up to the largest
/// runs a restore fetches and the largest chunks (8 MiB). A request of half a class up to the
/// class takes a map of the class.
pub(crate) const CLASSES: [usize; 4] = [1 << 20, 2 << 20, 4 << 20, 8 << 20];
/// Bytes of free maps the pools keep for reuse, all classes together.
pub(crate) const FREE_MAX: usize = 8 << 20;

/// Bytes of free maps in the pools.
static FREE_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Pool {
    size: usize,
    free: Mutex<Vec<memmap2::MmapMut>>,
}

fn pools() -> &'static [Pool; CLASSES.len()] {
    static POOLS: OnceLock<[Pool; CLASSES.len()]> = OnceLock::new();
    POOLS.get_or_init(|| {
        CLASSES.map(|size| Pool {
            size,
            free: Mutex::default(),
        })
    })
}

fn pool_for(len: usize) -> Option<&'static Pool> {
    pools()
        .iter()
        .find(|p| (p.size / 2..=p.size).contains(&len))
}

impl Pool {
    fn take(&self) -> Option<memmap2::MmapMut> {
        if let Some(m) = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            FREE_BYTES.fetch_sub(self.size, Ordering::Relaxed);
            return Some(m);
        }
        memmap2::MmapOptions::new().len(self.size).map_anon().ok()
    }

    /// Keeps `m` for reuse while the pools hold less than [`FREE_MAX`]; unmaps it otherwise.
    fn give(&self, m: memmap2::MmapMut) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let room = FREE_BYTES.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            (held + self.size <= FREE_MAX).then_some(held + self.size)
        });
        if room.is_ok() {
            free.push(m);
        }
    }
}

/// A pooled map; returns to its pool when dropped.
struct Pooled(Option<memmap2::MmapMut>, &'static Pool);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            self.1.give(m);
        }
    }
}

/// A buffer of `len` bytes to fill, then to freeze into `Bytes`. Its content is unspecified
/// until written (a pooled map holds what its last user left): fill it before reading it.
pub(crate) struct IoBuf(Kind);

enum Kind {
    Heap(Vec<u8>),
    Pooled(Pooled, usize),
    Map(memmap2::MmapMut),
}

impl IoBuf {
    pub(crate) fn new(len: usize) -> IoBuf {
        if let Some(pool) = pool_for(len)
            && let Some(m) = pool.take()
        {
            return IoBuf(Kind::Pooled(Pooled(Some(m), pool), len));
        }
        if len >= MAP_FROM
            && let Ok(m) = memmap2::MmapOptions::new().len(len).map_anon()
        {
            return IoBuf(Kind::Map(m));
        }
        IoBuf(Kind::Heap(vec![0u8; len]))
    }

    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            Kind::Heap(v) => v,
            Kind::Pooled(p, len) => &mut p.0.as_deref_mut().expect("a pooled map")[..*len],
            Kind::Map(m) => m,
        }
    }

    /// [`IoBuf::freeze`], holding `lease` until the last slice of it is dropped.
    pub(crate) fn freeze_leased(self, len: usize, lease: crate::memory::Lease) -> Bytes {
        let bytes = self.freeze(len);
        Bytes::from_owner(Leased {
            bytes,
            _lease: lease,
        })
    }

    /// The first `len` bytes, as `Bytes` that own the buffer.
    pub(crate) fn freeze(self, len: usize) -> Bytes {
        match self.0 {
            Kind::Heap(mut v) => {
                v.truncate(len);
                Bytes::from(v)
            }
            Kind::Pooled(p, cap) => Bytes::from_owner(p).slice(..len.min(cap)),
            Kind::Map(m) => Bytes::from_owner(m).slice(..len),
        }
    }
}

/// Bytes and the budget they hold.
struct Leased {
    bytes: Bytes,
    _lease: crate::memory::Lease,
}

impl AsRef<[u8]> for Leased {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_freezes_to_its_prefix_and_pooled_maps_come_back() {
        for n in [10, 300 << 10, 1 << 20, CLASSES[1] / 2, CLASSES[1] + 1] {
            let mut b = IoBuf::new(n);
            assert_eq!(b.as_mut().len(), n);
            b.as_mut()[..3].copy_from_slice(b"abc");
            b.as_mut()[3..5].fill(0);
            let f = b.freeze(5);
            assert_eq!(&f[..], b"abc\0\0");
        }
        let b = IoBuf::new(CLASSES[3]).freeze(1);
        let slice = b.slice(..);
        drop(b);
        drop(slice);
        // Other tests share the pools: what holds whatever they do is the bound.
        let held: Vec<Bytes> = (0..2 * FREE_MAX / CLASSES[0])
            .map(|_| IoBuf::new(CLASSES[0]).freeze(1))
            .collect();
        drop(held);
        assert!(FREE_BYTES.load(Ordering::Relaxed) <= FREE_MAX);
        let counted: usize = pools()
            .iter()
            .map(|p| p.free.lock().unwrap().len() * p.size)
            .sum();
        assert!(counted <= FREE_MAX);
    }
}
