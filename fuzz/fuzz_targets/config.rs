//! Fuzzes the repository config decoder (`config`, JSON, read before any key is known).
//!
//! Property: `Config::decode` returns `Ok` or `Err` for any bytes, and never panics.

#![no_main]

use freezer_core::repo::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Config::decode(data, "config");
});
