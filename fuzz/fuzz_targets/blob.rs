//! `decode_blob_with`: a stored blob (sealed, maybe a zstd frame) with the index's claims about
//! it. The first 4 input bytes are the claimed uncompressed length (little endian, 0 = stored
//! raw); the rest is the stored blob. Decoding must refuse lies, never panic or over-allocate.
#![no_main]

use std::sync::LazyLock;

use freezer_core::repo::pack::{BlobType, DecodeScratch, PackedBlob, decode_blob_with};
use freezer_core::{Crypto, Id, MasterKey};
use libfuzzer_sys::fuzz_target;

static CRYPTO: LazyLock<Crypto> = LazyLock::new(|| Crypto::new(&MasterKey::generate(false)));

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let ulen = u32::from_le_bytes(data[..4].try_into().unwrap());
    let stored = &data[4..];
    let blob = PackedBlob {
        kind: BlobType::Data,
        id: Id([0; 32]),
        offset: 0,
        length: stored.len() as u32,
        ulen,
    };
    let mut scratch = DecodeScratch::default();
    let _ = decode_blob_with(&CRYPTO, &mut scratch, stored, &blob, &"blob");
});
