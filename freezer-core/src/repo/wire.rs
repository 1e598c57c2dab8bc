//! The byte-level codec of binary repository objects: LEB128 unsigned varints, zigzag signed
//! varints, length-prefixed byte strings and raw 32-byte ids. Decoding never panics and never
//! allocates more than the input could hold: every length is checked against what remains.

use crate::error::{Error, Result};
use crate::id::Id;

/// Appends encodings to a `Vec<u8>`.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_uvar(&mut self, v: u64);
    fn put_ivar(&mut self, v: i64);
    fn put_bytes(&mut self, b: &[u8]);
    fn put_id(&mut self, id: &Id);
    fn put_u32le(&mut self, v: u32);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }

    fn put_uvar(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
    }

    fn put_ivar(&mut self, v: i64) {
        self.put_uvar(((v << 1) ^ (v >> 63)) as u64);
    }

    fn put_bytes(&mut self, b: &[u8]) {
        self.put_uvar(b.len() as u64);
        self.extend_from_slice(b);
    }

    fn put_id(&mut self, id: &Id) {
        self.extend_from_slice(&id.0);
    }

    fn put_u32le(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
}

/// Reads encodings from a byte slice; every error names the object being decoded.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'a str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'a str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub(crate) fn err(&self, detail: impl std::fmt::Display) -> Error {
        Error::corrupt(self.what, format!("{detail} (at byte {})", self.pos))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!("needs {n} more bytes, {} left", self.remaining())));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn uvar(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    pub(crate) fn ivar(&mut self) -> Result<i64> {
        let u = self.uvar()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A varint that must fit `usize` and be at most `max`.
    pub(crate) fn len(&mut self, max: usize) -> Result<usize> {
        let v = self.uvar()?;
        if v > max as u64 {
            return Err(self.err(format!("length {v} exceeds {max}")));
        }
        Ok(v as usize)
    }

    /// A count of items that each take at least `min_item` bytes: bounded by what remains.
    pub(crate) fn count(&mut self, min_item: usize) -> Result<usize> {
        let max = self.remaining() / min_item.max(1);
        self.len(max)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len(self.remaining())?;
        self.take(n)
    }

    pub(crate) fn id(&mut self) -> Result<Id> {
        Ok(Id::from_slice(self.take(32)?).expect("32 bytes"))
    }

    pub(crate) fn expect_magic(&mut self, magic: &[u8; 4], version: u8) -> Result<()> {
        let m = self.take(4)?;
        if m != magic {
            return Err(self.err(format!(
                "magic {m:02x?} is not {:?}",
                String::from_utf8_lossy(magic)
            )));
        }
        let v = self.u8()?;
        if v != version {
            return Err(Error::unsupported(format!(
                "{} of version {v} (this build reads {version})",
                self.what
            )));
        }
        Ok(())
    }

    pub(crate) fn finish(&self) -> Result<()> {
        if !self.is_empty() {
            return Err(self.err(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        let mut v = Vec::new();
        let us = [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX];
        let is = [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX];
        for u in us {
            v.put_uvar(u);
        }
        for i in is {
            v.put_ivar(i);
        }
        v.put_bytes(b"abc");
        let mut r = Reader::new(&v, "test");
        for u in us {
            assert_eq!(r.uvar().unwrap(), u);
        }
        for i in is {
            assert_eq!(r.ivar().unwrap(), i);
        }
        assert_eq!(r.bytes().unwrap(), b"abc");
        r.finish().unwrap();
    }

    #[test]
    fn hostile_lengths_are_refused() {
        let mut v = Vec::new();
        v.put_uvar(1 << 40);
        let mut r = Reader::new(&v, "tree 1");
        let e = r.bytes().unwrap_err();
        assert!(e.to_string().contains("tree 1"), "{e}");
        assert!(Reader::new(&[0xff; 11], "x").uvar().is_err());
        assert!(
            Reader::new(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                "x"
            )
            .uvar()
            .is_err()
        );
    }
}
