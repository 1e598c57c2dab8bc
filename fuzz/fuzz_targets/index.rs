//! Fuzzes the index file decoder (the plaintext of `index/<id>`).
//!
//! Properties: `IndexFile::decode` never panics, and whatever it accepts can be merged into
//! an in-memory `Index` without panicking.

#![no_main]

use freezer_core::repo::index::{Index, IndexFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = IndexFile::decode(data, "index/fuzz") {
        Index::default().add_file(&file, 1);
    }
});
