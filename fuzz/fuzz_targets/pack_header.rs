//! Fuzzes the pack header decoder: the sealed header and length trailer at the end of a pack.
//!
//! Input layout: one control byte, then the pack's tail. The control byte sets the pack size
//! handed to the decoder, so that sizes both consistent and inconsistent with the tail are
//! tried:
//!
//! * `0x00..=0x7f`: the tail is the whole pack (`pack_size = tail.len()`);
//! * `0x80..=0xbf`: the tail misses `c - 0x80` leading bytes of the pack;
//! * `0xc0..=0xdf`: the pack is `c - 0xc0` bytes shorter than the tail (inconsistent);
//! * `0xe0..=0xff`: the next 8 bytes are the pack size (little endian), the rest is the tail.
//!
//! The repository is unencrypted, so the header bytes are parsed directly.
//! Property: `decode_header` never panics.

#![no_main]

use std::sync::LazyLock;

use freezer_core::repo::pack::decode_header;
use freezer_core::{Crypto, MasterKey};
use libfuzzer_sys::fuzz_target;

static CRYPTO: LazyLock<Crypto> = LazyLock::new(|| Crypto::new(&MasterKey::generate(false)));

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (tail, pack_size) = match control {
        0x00..=0x7f => (rest, rest.len() as u64),
        0x80..=0xbf => (rest, rest.len() as u64 + u64::from(control - 0x80)),
        0xc0..=0xdf => (
            rest,
            (rest.len() as u64).saturating_sub(u64::from(control - 0xc0)),
        ),
        0xe0..=0xff => {
            let Some((size, tail)) = rest.split_first_chunk::<8>() else {
                return;
            };
            (tail, u64::from_le_bytes(*size))
        }
    };
    let _ = decode_header(&CRYPTO, tail, pack_size, "pack fuzz");
});
