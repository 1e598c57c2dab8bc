//! Fuzzes the tree decoder (the plaintext of a tree blob: one directory).
//!
//! Properties: `Tree::decode` never panics, and a tree it accepts encodes to bytes that decode
//! back to an equal tree.

#![no_main]

use freezer_core::repo::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = Tree::decode(data, "tree fuzz") else {
        return;
    };
    let nodes = tree.nodes.clone();
    let encoded = Tree { nodes }.encode();
    match Tree::decode(&encoded, "tree fuzz (re-encoded)") {
        Ok(back) => assert_eq!(back, tree, "a decoded tree changed in a round trip"),
        Err(e) => panic!("a decoded tree does not decode after encoding: {e}"),
    }
});
