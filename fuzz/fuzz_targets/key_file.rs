//! Fuzzes the key file decoder (`keys/<id>`, JSON, read before the passphrase is checked).
//!
//! Properties: `KeyFile::decode` never panics; a key file that decodes and whose Argon2id
//! costs are tiny is also unwrapped with a fixed passphrase, which must not panic either
//! (costlier key files are skipped so that each run stays fast). Seeds are wrapped with the
//! passphrase `x`, so the seeds themselves reach the master key's own decoding.

#![no_main]

use std::sync::LazyLock;

use freezer_core::Passphrase;
use freezer_core::repo::config::KeyFile;
use libfuzzer_sys::fuzz_target;

/// The passphrase every seed is wrapped with (see `examples/make_seeds.rs`).
static PASSPHRASE: LazyLock<Passphrase> =
    LazyLock::new(|| Passphrase::new("x").expect("a non-empty passphrase"));

fuzz_target!(|data: &[u8]| {
    let Ok(key) = KeyFile::decode(data, "keys/fuzz") else {
        return;
    };
    let params = &key.kdf.params;
    if params.memory_kib <= 64 && params.iterations <= 2 {
        let _ = key.unwrap(&PASSPHRASE, "keys/fuzz");
    }
});
