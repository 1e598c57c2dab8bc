//! Blobs and packs.
//!
//! A blob is a chunk of file content or a serialized tree, compressed (zstd, when that saves
//! space) and sealed. A pack is many blobs back to back followed by a sealed header that lists
//! them, and the header's length:
//!
//! ```text
//! blob_0 || blob_1 || ... || blob_n-1 || sealed(header) || u32le(len(sealed(header)))
//! header = "FRZP" || 0x01 || uvar(n) || n * (u8 type || uvar(length) || uvar(ulen) || id[32])
//! ```
//!
//! `length` is the stored size of the blob, `ulen` its size before compression (0 when stored
//! uncompressed); offsets are implicit. Decoding never trusts a length it has not bounded.

use bytes::Bytes;
use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, InBuffer, OutBuffer};

use super::wire::{Put, Reader};
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::sink::Payload;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// File content.
    Data,
    /// A serialized directory.
    Tree,
}

impl BlobType {
    fn code(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// A blob ready to be packed: its id, type, stored bytes and size before compression.
#[derive(Clone, Debug)]
pub struct EncodedBlob {
    /// The keyed hash of the plaintext.
    pub id: Id,
    /// Data or tree.
    pub kind: BlobType,
    /// The stored bytes (compressed and sealed).
    pub data: Bytes,
    /// Length before compression, 0 if stored uncompressed.
    pub ulen: u32,
    /// Length of the plaintext.
    pub plain_len: u32,
}

/// One blob inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedBlob {
    /// Data or tree.
    pub kind: BlobType,
    /// The blob's id.
    pub id: Id,
    /// Byte offset in the pack.
    pub offset: u32,
    /// Stored length.
    pub length: u32,
    /// Length before compression, 0 if stored uncompressed.
    pub ulen: u32,
}

/// Compresses and seals blobs. One per worker thread: it keeps a zstd context and a scratch
/// buffer, so encoding allocates only the stored blob itself, at its exact size.
pub struct BlobEncoder {
    crypto: Crypto,
    level: Option<i32>,
    cctx: CCtx<'static>,
}

impl std::fmt::Debug for BlobEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobEncoder")
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl BlobEncoder {
    /// An encoder; `level` is the zstd level, `None` for no compression.
    pub fn new(crypto: Crypto, level: Option<i32>) -> Self {
        BlobEncoder {
            crypto,
            level,
            cctx: CCtx::create(),
        }
    }

    /// Encodes a blob whose plaintext is the concatenation of `parts`, with id `id`.
    pub fn encode(&mut self, id: Id, kind: BlobType, parts: &[Bytes]) -> EncodedBlob {
        let plain_len: usize = parts.iter().map(Bytes::len).sum();
        let mut blob = EncodedBlob {
            id,
            kind,
            data: Bytes::new(),
            ulen: 0,
            plain_len: plain_len as u32,
        };
        // Compressed (or, when that saves too little, copied) straight into the blob's own
        // buffer after room for the nonce, then sealed in place: no buffer per thread that
        // would keep the largest chunk's size, and the block the chunk was read into goes
        // back as soon as it is hashed and compressed, instead of waiting in a pack.
        let prefix = self.crypto.prefix_len();
        let room = match self.level {
            Some(_) if plain_len >= 64 => zstd_safe::compress_bound(plain_len),
            _ => plain_len,
        }
        .max(plain_len);
        let mut out = Vec::with_capacity(prefix + room + self.crypto.overhead());
        out.resize(prefix, 0);
        if let Some(level) = self.level
            && self.compress(parts, plain_len, level, &mut out).is_some()
        {
            blob.ulen = plain_len as u32;
        } else {
            out.truncate(prefix);
            parts.iter().for_each(|p| out.extend_from_slice(p));
        }
        self.crypto.seal_in_place(&mut out);
        // Well compressed: give back the room (in place: the allocator shrinks, not copies).
        if out.capacity() > out.len() + out.len() / 4 {
            out.shrink_to_fit();
        }
        blob.data = Bytes::from(out);
        blob
    }

    /// Compresses after `out`'s first bytes (its capacity holds the bound); `None` when that
    /// would not save at least 1/32 of the size (incompressible data is stored as it is).
    fn compress(
        &mut self,
        parts: &[Bytes],
        len: usize,
        level: i32,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        if len < 64 {
            return None;
        }
        let start = out.len();
        let limit = len - len / 32;
        self.cctx
            .reset(zstd_safe::ResetDirective::SessionOnly)
            .ok()?;
        self.cctx
            .set_parameter(CParameter::CompressionLevel(level))
            .ok()?;
        self.cctx.set_pledged_src_size(Some(len as u64)).ok()?;
        let mut out = OutBuffer::around_pos(out, start);
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let mut input = InBuffer::around(part);
            let op = if last {
                zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end
            } else {
                zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_continue
            };
            loop {
                let left = self.cctx.compress_stream2(&mut out, &mut input, op).ok()?;
                let done = if last {
                    left == 0
                } else {
                    input.pos() == part.len()
                };
                if done {
                    break;
                }
            }
        }
        (out.pos() - start <= limit).then_some(())
    }
}

/// A zstd frame that says it holds `ulen` bytes, or the error that names `what`.
fn check_frame_size(frame: &[u8], ulen: u32, what: &dyn std::fmt::Display) -> Result<()> {
    match zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n == u64::from(ulen) => Ok(()),
        Ok(other) => Err(Error::corrupt(
            what,
            format!("zstd frame of {other:?} bytes, expected {ulen}"),
        )),
        Err(_) => Err(Error::corrupt(what, "not a zstd frame")),
    }
}

/// Reusable buffers for decoding blobs; keep one per worker thread.
pub struct DecodeScratch {
    opened: Vec<u8>,
    plain: Vec<u8>,
    dctx: DCtx<'static>,
}

impl std::fmt::Debug for DecodeScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecodeScratch")
    }
}

impl Default for DecodeScratch {
    fn default() -> Self {
        DecodeScratch {
            opened: Vec::new(),
            plain: Vec::new(),
            dctx: DCtx::create(),
        }
    }
}

/// Opens, decompresses and verifies one stored blob, using `scratch` for the intermediate
/// and final bytes: no allocation once the scratch buffers have grown. `what` names the blob.
pub fn decode_blob_with<'a>(
    crypto: &Crypto,
    scratch: &'a mut DecodeScratch,
    stored: &'a [u8],
    blob: &PackedBlob,
    what: &dyn std::fmt::Display,
) -> Result<&'a [u8]> {
    let opened: &[u8] = if crypto.is_encrypted() {
        crypto.open_into(stored, &mut scratch.opened, what)?;
        &scratch.opened
    } else {
        stored
    };
    let plain: &[u8] = if blob.ulen > 0 {
        // Check the frame's own size before reserving what the index claims.
        check_frame_size(opened, blob.ulen, what)?;
        scratch.plain.clear();
        scratch.plain.reserve(blob.ulen as usize);
        let n = scratch
            .dctx
            .decompress(&mut scratch.plain, opened)
            .map_err(|code| {
                Error::corrupt(what, format!("zstd: {}", zstd_safe::get_error_name(code)))
            })?;
        if n != blob.ulen as usize {
            return Err(Error::corrupt(
                what,
                format!("decompressed to {n} bytes, expected {}", blob.ulen),
            ));
        }
        &scratch.plain
    } else {
        opened
    };
    if crypto.blob_id(&[plain]) != blob.id {
        return Err(Error::corrupt(what, "content does not match its id"));
    }
    Ok(plain)
}

/// The most plaintext [`decode_blob_pieces`] holds at once.
pub const DECODE_PIECE: usize = 256 * 1024;

/// Opens, decompresses and verifies one stored blob, handing its plaintext to `out` in pieces
/// of at most [`DECODE_PIECE`] bytes with their offsets in the blob: a blob is never held
/// decompressed whole. The opened (decrypted) bytes take a buffer of the stored length; of
/// `scratch`, only its decompression context and a piece's room are used.
///
/// `out` sees the pieces before the whole blob is verified against its id: an `Err` means what
/// `out` was given must not be trusted (a restore writes it again from another copy).
pub fn decode_blob_pieces(
    crypto: &Crypto,
    scratch: &mut DecodeScratch,
    stored: &[u8],
    blob: &PackedBlob,
    what: &dyn std::fmt::Display,
    mut out: impl FnMut(u64, &[u8]),
) -> Result<()> {
    let mut opened_buf;
    let opened: &[u8] = if crypto.is_encrypted() {
        let len = stored.len().checked_sub(crypto.overhead()).ok_or_else(|| {
            Error::corrupt(
                what,
                format!("{} bytes is too short for a sealed object", stored.len()),
            )
        })?;
        opened_buf = crate::buffer::IoBuf::new(len);
        crypto.open_to(stored, opened_buf.as_mut(), what)?;
        opened_buf.as_mut()
    } else {
        stored
    };
    if blob.ulen == 0 {
        if crypto.blob_id(&[opened]) != blob.id {
            return Err(Error::corrupt(what, "content does not match its id"));
        }
        out(0, opened);
        return Ok(());
    }
    check_frame_size(opened, blob.ulen, what)?;
    let zstd_err =
        |code| Error::corrupt(what, format!("zstd: {}", zstd_safe::get_error_name(code)));
    scratch
        .dctx
        .reset(zstd_safe::ResetDirective::SessionOnly)
        .map_err(zstd_err)?;
    let mut hasher = crypto.id_hasher();
    let mut input = InBuffer::around(opened);
    let mut at = 0u64;
    let DecodeScratch { plain, dctx, .. } = scratch;
    if plain.len() < DECODE_PIECE {
        plain.resize(DECODE_PIECE, 0);
    }
    loop {
        let mut output = OutBuffer::around(&mut plain[..DECODE_PIECE]);
        let left = dctx
            .decompress_stream(&mut output, &mut input)
            .map_err(zstd_err)?;
        let n = output.pos();
        let piece = &plain[..n];
        if at + n as u64 > u64::from(blob.ulen) {
            return Err(Error::corrupt(
                what,
                format!("decompresses to more than {} bytes", blob.ulen),
            ));
        }
        hasher.update(piece);
        if n > 0 {
            out(at, piece);
        }
        at += n as u64;
        if left == 0 {
            break;
        }
        if n == 0 && input.pos() == opened.len() {
            return Err(Error::corrupt(what, "zstd frame ends early"));
        }
    }
    if at != u64::from(blob.ulen) || input.pos() != opened.len() {
        return Err(Error::corrupt(
            what,
            format!(
                "decompressed to {at} bytes from {} of {}, expected {} from all",
                input.pos(),
                opened.len(),
                blob.ulen
            ),
        ));
    }
    if Id(*hasher.finalize().as_bytes()) != blob.id {
        return Err(Error::corrupt(what, "content does not match its id"));
    }
    Ok(())
}

/// Opens, decompresses and verifies one stored blob into a buffer of its own (no copy for an
/// uncompressed blob of an unencrypted repository).
pub fn decode_blob(
    crypto: &Crypto,
    scratch: &mut DecodeScratch,
    stored: Bytes,
    blob: &PackedBlob,
    what: &dyn std::fmt::Display,
) -> Result<Bytes> {
    if !crypto.is_encrypted() && blob.ulen == 0 {
        decode_blob_with(crypto, scratch, &stored, blob, what)?;
        return Ok(stored);
    }
    decode_blob_with(crypto, scratch, &stored, blob, what).map(Bytes::copy_from_slice)
}

/// Collects blobs into a pack.
#[derive(Debug, Default)]
pub struct PackWriter {
    parts: Vec<Bytes>,
    blobs: Vec<PackedBlob>,
    size: usize,
}

/// A finished pack: its id, its bytes, and where each blob sits.
#[derive(Debug, Clone)]
pub struct FinishedPack {
    /// Unkeyed BLAKE3 of the pack's bytes.
    pub id: Id,
    /// The pack's bytes.
    pub payload: Payload,
    /// The blobs it holds.
    pub blobs: Vec<PackedBlob>,
}

impl PackWriter {
    /// Bytes so far.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Blobs so far.
    pub fn count(&self) -> usize {
        self.blobs.len()
    }

    /// Appends a blob.
    pub fn add(&mut self, blob: &EncodedBlob) {
        self.blobs.push(PackedBlob {
            kind: blob.kind,
            id: blob.id,
            offset: self.size as u32,
            length: blob.data.len() as u32,
            ulen: blob.ulen,
        });
        self.size += blob.data.len();
        self.parts.push(blob.data.clone());
    }

    /// Writes the header and returns the pack.
    pub fn finish(mut self, crypto: &Crypto) -> FinishedPack {
        let mut header = Vec::with_capacity(8 + self.blobs.len() * 42);
        header.extend_from_slice(b"FRZP");
        header.put_u8(1);
        header.put_uvar(self.blobs.len() as u64);
        for b in &self.blobs {
            header.put_u8(b.kind.code());
            header.put_uvar(u64::from(b.length));
            header.put_uvar(u64::from(b.ulen));
            header.put_id(&b.id);
        }
        let sealed = crypto.seal(&header);
        let mut trailer = Vec::with_capacity(4);
        trailer.put_u32le(sealed.len() as u32);
        self.parts.push(Bytes::from(sealed));
        self.parts.push(Bytes::from(trailer));
        let id = Id::of_stored_parts(&self.parts);
        FinishedPack {
            id,
            payload: Payload::from(self.parts),
            blobs: self.blobs,
        }
    }
}

/// Decodes a pack's header from the pack's last bytes (`tail`, at least the header and
/// trailer), given the pack's total size. Checks that the blobs tile the pack exactly.
pub fn decode_header(
    crypto: &Crypto,
    tail: &[u8],
    pack_size: u64,
    what: &str,
) -> Result<Vec<PackedBlob>> {
    if tail.len() < 4 || pack_size < 4 {
        return Err(Error::corrupt(what, "too short for a pack"));
    }
    let hlen = u32::from_le_bytes(tail[tail.len() - 4..].try_into().expect("4 bytes")) as usize;
    if hlen + 4 > tail.len() || hlen as u64 + 4 > pack_size {
        return Err(Error::corrupt(
            what,
            format!("header length {hlen} exceeds the pack"),
        ));
    }
    let sealed = &tail[tail.len() - 4 - hlen..tail.len() - 4];
    let header = crypto.open(sealed, &format!("{what} header"))?;
    let mut r = Reader::new(&header, what);
    r.expect_magic(b"FRZP", 1)?;
    let n = r.count(34)?;
    let mut blobs = Vec::with_capacity(n);
    let mut offset: u64 = 0;
    let data_end = pack_size - 4 - hlen as u64;
    if data_end > u64::from(u32::MAX) {
        return Err(Error::corrupt(
            what,
            format!("{data_end} bytes of blobs: packs hold at most 4 GiB"),
        ));
    }
    for _ in 0..n {
        let kind = r.u8()?;
        let kind =
            BlobType::from_code(kind).ok_or_else(|| r.err(format!("unknown blob type {kind}")))?;
        let length = r.uvar()?;
        let ulen = r.uvar()?;
        let id = r.id()?;
        if length > u64::from(u32::MAX) || ulen > u64::from(u32::MAX) || offset + length > data_end
        {
            return Err(r.err("blob lies outside the pack"));
        }
        blobs.push(PackedBlob {
            kind,
            id,
            offset: offset as u32,
            length: length as u32,
            ulen: ulen as u32,
        });
        offset += length;
    }
    r.finish()?;
    if offset != data_end {
        return Err(Error::corrupt(
            what,
            format!("blobs cover {offset} bytes of {data_end}"),
        ));
    }
    Ok(blobs)
}

/// How many bytes at the end of a pack to read to be sure to get the header in one request.
pub fn header_read_hint(blob_count: usize, crypto: &Crypto) -> u64 {
    (8 + blob_count * 48 + crypto.overhead() + 4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn roundtrip(encrypted: bool, level: Option<i32>) {
        let crypto = Crypto::new(&MasterKey::generate(encrypted));
        let mut enc = BlobEncoder::new(crypto.clone(), level);
        let text = Bytes::from("backup restore ".repeat(1000));
        let mut x = 0x2545F4914F6CDD1Du64;
        let noise: Bytes = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect::<Vec<_>>()
            .into();
        let a = enc.encode(
            crypto.blob_id(&[&text]),
            BlobType::Data,
            &[text.slice(..7000), text.slice(7000..)],
        );
        let b = enc.encode(
            crypto.blob_id(&[&noise]),
            BlobType::Tree,
            std::slice::from_ref(&noise),
        );
        if level.is_some() {
            assert!(a.ulen > 0 && a.data.len() < 1000, "text compresses");
        }
        assert_eq!(b.ulen, 0, "noise is stored as it is");
        let mut w = PackWriter::default();
        w.add(&a);
        w.add(&b);
        let pack = w.finish(&crypto);
        let bytes = pack.payload.to_bytes();
        assert_eq!(Id::of_stored(&bytes), pack.id);
        let blobs = decode_header(&crypto, &bytes, bytes.len() as u64, "pack").unwrap();
        assert_eq!(blobs, pack.blobs);
        let mut dctx = DecodeScratch::default();
        for (blob, want) in blobs.iter().zip([&text, &noise]) {
            let stored = bytes.slice(blob.offset as usize..(blob.offset + blob.length) as usize);
            assert_eq!(
                &decode_blob(&crypto, &mut dctx, stored, blob, &"blob").unwrap(),
                want
            );
        }
        // The same in pieces, at their offsets.
        let mut pieces = DecodeScratch::default();
        for (blob, want) in blobs.iter().zip([&text, &noise]) {
            let stored = &bytes[blob.offset as usize..(blob.offset + blob.length) as usize];
            let mut got = Vec::new();
            decode_blob_pieces(&crypto, &mut pieces, stored, blob, &"blob", |at, p| {
                assert_eq!(at, got.len() as u64);
                got.extend_from_slice(p);
            })
            .unwrap();
            assert_eq!(&got, want);
        }
        // one flipped byte in a blob is caught, with or without encryption
        let blob = blobs[1];
        let mut damaged = bytes
            .slice(blob.offset as usize..(blob.offset + blob.length) as usize)
            .to_vec();
        damaged[3] ^= 0x40;
        let e = decode_blob_pieces(&crypto, &mut pieces, &damaged, &blob, &"blob", |_, _| {});
        assert!(e.is_err());
        assert!(decode_blob(&crypto, &mut dctx, damaged.into(), &blob, &"blob").is_err());
    }

    /// A blob larger than a piece is handed over in pieces; a damaged or cut frame, or content
    /// of another id, is refused after them (the caller writes it again from another copy).
    #[test]
    fn large_blobs_decode_in_pieces_and_damage_is_caught() {
        for encrypted in [false, true] {
            let crypto = Crypto::new(&MasterKey::generate(encrypted));
            let mut enc = BlobEncoder::new(crypto.clone(), Some(1));
            let plain: Bytes = (0..3 * DECODE_PIECE + 1234)
                .map(|i| (i / 7 % 251) as u8 ^ (i % 3) as u8)
                .collect::<Vec<_>>()
                .into();
            let id = crypto.blob_id(&[&plain]);
            let blob = enc.encode(id, BlobType::Data, std::slice::from_ref(&plain));
            assert!(blob.ulen > 0);
            let packed = PackedBlob {
                kind: BlobType::Data,
                id,
                offset: 0,
                length: blob.data.len() as u32,
                ulen: blob.ulen,
            };
            let mut scratch = DecodeScratch::default();
            let (mut got, mut calls) = (Vec::new(), 0);
            decode_blob_pieces(&crypto, &mut scratch, &blob.data, &packed, &"b", |at, p| {
                assert_eq!(at, got.len() as u64);
                assert!(p.len() <= DECODE_PIECE);
                calls += 1;
                got.extend_from_slice(p);
            })
            .unwrap();
            assert_eq!(got, plain);
            assert!(calls >= 4, "{calls} pieces");

            let other = PackedBlob {
                id: Id([9; 32]),
                ..packed
            };
            let e = decode_blob_pieces(&crypto, &mut scratch, &blob.data, &other, &"b", |_, _| {})
                .unwrap_err();
            assert!(e.to_string().contains("does not match its id"), "{e}");
            if !encrypted {
                let cut = &blob.data[..blob.data.len() / 2];
                let short = PackedBlob {
                    length: cut.len() as u32,
                    ..packed
                };
                let e = decode_blob_pieces(&crypto, &mut scratch, cut, &short, &"b", |_, _| {})
                    .unwrap_err();
                assert!(e.to_string().contains("b"), "{e}");
            } else {
                let mut damaged = blob.data.to_vec();
                damaged[40] ^= 1;
                let e =
                    decode_blob_pieces(&crypto, &mut scratch, &damaged, &packed, &"b", |_, _| {
                        panic!("nothing of a blob that fails authentication is handed over")
                    })
                    .unwrap_err();
                assert!(e.to_string().contains("authentication failed"), "{e}");
            }
        }
    }

    #[test]
    fn packs_round_trip_in_every_mode() {
        roundtrip(true, Some(3));
        roundtrip(false, Some(3));
        roundtrip(true, None);
        roundtrip(false, None);
    }

    /// Found by fuzzing: offsets past 4 GiB used to wrap around silently.
    #[test]
    fn packs_over_4_gib_are_refused() {
        let crypto = Crypto::new(&MasterKey::generate(false));
        let mut header = b"FRZP\x01".to_vec();
        header.put_uvar(3);
        for _ in 0..3 {
            header.put_u8(0);
            header.put_uvar(1 << 31);
            header.put_uvar(0);
            header.put_id(&Id([7; 32]));
        }
        let mut tail = header.clone();
        tail.put_u32le(header.len() as u32);
        let size = 3 * (1u64 << 31) + tail.len() as u64;
        let e = decode_header(&crypto, &tail, size, "pack big").unwrap_err();
        assert!(e.to_string().contains("4 GiB"), "{e}");
    }

    #[test]
    fn a_frame_that_disagrees_with_its_index_entry_is_refused_before_allocating() {
        let crypto = Crypto::new(&MasterKey::generate(false));
        let data = Bytes::from(vec![0u8; 4096]);
        let mut enc = BlobEncoder::new(crypto.clone(), Some(1));
        let blob = enc.encode(
            crypto.blob_id(&[&data]),
            BlobType::Data,
            std::slice::from_ref(&data),
        );
        let mut lying = PackedBlob {
            kind: BlobType::Data,
            id: blob.id,
            offset: 0,
            length: blob.data.len() as u32,
            ulen: u32::MAX,
        };
        let mut scratch = DecodeScratch::default();
        let e = decode_blob(&crypto, &mut scratch, blob.data.clone(), &lying, &"blob").unwrap_err();
        assert!(e.to_string().contains("expected"), "{e}");
        lying.ulen = 4096;
        assert_eq!(
            decode_blob(&crypto, &mut scratch, blob.data, &lying, &"blob").unwrap(),
            data
        );
    }

    #[test]
    fn damaged_headers_are_refused() {
        let crypto = Crypto::new(&MasterKey::generate(true));
        let mut w = PackWriter::default();
        let mut enc = BlobEncoder::new(crypto.clone(), Some(1));
        let data = Bytes::from_static(b"some data");
        w.add(&enc.encode(
            crypto.blob_id(&[&data]),
            BlobType::Data,
            std::slice::from_ref(&data),
        ));
        let bytes = w.finish(&crypto).payload.to_bytes().to_vec();
        let n = bytes.len();
        let mut bad = bytes.clone();
        bad[n - 10] ^= 1;
        assert!(decode_header(&crypto, &bad, n as u64, "pack x").is_err());
        let mut bad = bytes.clone();
        bad[n - 1] = 0xff;
        assert!(decode_header(&crypto, &bad, n as u64, "pack x").is_err());
        assert!(decode_header(&crypto, &bytes[..2], 2, "pack x").is_err());
    }
}
