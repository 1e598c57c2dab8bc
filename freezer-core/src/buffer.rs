//! Large I/O buffers.
//!
//! Buffers of a megabyte or more that live for a moment (a block read from a file, a range
//! read from a pack) are anonymous memory maps of their own, not heap allocations: freeing
//! one returns it to the system at once. With the heap, glibc raises its mmap threshold after
//! the first such free and keeps later buffers in per-thread arenas, and a pipeline of a
//! dozen threads then holds hundreds of megabytes it no longer uses.

use bytes::Bytes;

/// Buffers at least this large are mapped; smaller ones use the heap.
const MAP_FROM: usize = 256 * 1024;

/// A zeroed buffer of `len` bytes to fill, then to freeze into `Bytes`.
pub(crate) enum IoBuf {
    Heap(Vec<u8>),
    Map(memmap2::MmapMut),
}

impl IoBuf {
    pub(crate) fn zeroed(len: usize) -> IoBuf {
        if len >= MAP_FROM
            && let Ok(m) = memmap2::MmapOptions::new().len(len).map_anon()
        {
            return IoBuf::Map(m);
        }
        IoBuf::Heap(vec![0u8; len])
    }

    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        match self {
            IoBuf::Heap(v) => v,
            IoBuf::Map(m) => m,
        }
    }

    /// The first `len` bytes, as `Bytes` that own the buffer.
    pub(crate) fn freeze(self, len: usize) -> Bytes {
        match self {
            IoBuf::Heap(mut v) => {
                v.truncate(len);
                Bytes::from(v)
            }
            IoBuf::Map(m) => Bytes::from_owner(m).slice(..len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_freeze_to_their_prefix() {
        for n in [10, 1 << 20] {
            let mut b = IoBuf::zeroed(n);
            b.as_mut()[..3].copy_from_slice(b"abc");
            let f = b.freeze(5);
            assert_eq!(&f[..], b"abc\0\0");
        }
    }
}
