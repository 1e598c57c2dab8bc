//! Fuzzes the snapshot decoder (the plaintext of `snapshots/<id>`, JSON).
//!
//! Property: `Snapshot::decode` never panics.

#![no_main]

use freezer_core::repo::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Snapshot::decode(data, "snapshots/fuzz");
});
