//! Links the cdylib as a shared library should be on Linux: with a SONAME (`libfreezer.so.0`,
//! the name `make install` gives it; the 0 changes when the ABI breaks) and a version script
//! exporting only the C ABI (`freezer_*`), none of the dependencies' `#[no_mangle]` symbols.

fn main() {
    println!("cargo:rerun-if-changed=freezer.map");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libfreezer.so.0");
        println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/freezer.map");
        // Dependencies' `#[no_mangle]` functions (crc-fast's C API) are listed as global by
        // rustc's own version script; symbols from archives are not exported at all this way.
        println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs,ALL");
    }
}
