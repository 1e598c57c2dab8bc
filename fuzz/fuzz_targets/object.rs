//! Fuzzes the small object decoder (the envelope of index files, snapshots and locks: a flag
//! byte, then the plaintext or one zstd frame of it), in an unencrypted repository so that the
//! envelope is parsed directly.
//!
//! Properties: `object::decode` never panics (it must refuse frames that claim more than
//! 256 MiB), and a plaintext it returns, when small, is encoded back into an object that decodes
//! to the same plaintext.

#![no_main]

use std::sync::LazyLock;

use freezer_core::repo::object;
use freezer_core::{Crypto, MasterKey};
use libfuzzer_sys::fuzz_target;

static CRYPTO: LazyLock<Crypto> = LazyLock::new(|| Crypto::new(&MasterKey::generate(false)));

/// Plaintexts up to this size are round-tripped; larger ones (a frame may legitimately expand
/// to 256 MiB) would make a run slow.
const ROUND_TRIP_MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(plain) = object::decode(&CRYPTO, data, "object fuzz") else {
        return;
    };
    if plain.len() <= ROUND_TRIP_MAX {
        let stored = object::encode(&CRYPTO, &plain);
        match object::decode(&CRYPTO, &stored, "object fuzz (re-encoded)") {
            Ok(back) => assert!(back == plain, "a decoded object changed in a round trip"),
            Err(e) => panic!("an encoded object does not decode: {e}"),
        }
    }
});
