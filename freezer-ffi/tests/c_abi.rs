//! The C ABI from C: the committed header is current, and a C program that includes it and
//! links the library backs up and restores a folder, and streams through descriptors and
//! callbacks.

use std::path::PathBuf;
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_committed_header_is_current() {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .unwrap()
        .write(&mut out);
    let committed = dir.join("include/freezer.h");
    if std::env::var_os("FREEZER_BLESS").is_some() {
        std::fs::write(&committed, &out).unwrap();
    }
    let current = std::fs::read(&committed).unwrap_or_default();
    assert!(
        current == out,
        "include/freezer.h is out of date: run FREEZER_BLESS=1 cargo test -p freezer-ffi and commit it"
    );
}

/// The folder holding the cdylib that `cargo test` built with this test: target/<profile>/deps,
/// beside the test binary (`cargo build` also copies it to target/<profile>).
/// Compiles `tests/c/<name>.c` against the header and the library in `lib` into `exe`,
/// warnings as errors.
fn compile_c(lib: &std::path::Path, name: &str, extra: &[&str], exe: &std::path::Path) {
    let st = Command::new("gcc")
        .arg(crate_dir().join(format!("tests/c/{name}.c")))
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg("-L")
        .arg(lib)
        .arg("-lfreezer_ffi")
        .args(extra)
        .args(["-Wall", "-Werror", "-o"])
        .arg(exe)
        .status()
        .expect("gcc runs");
    assert!(st.success(), "the C test {name}.c does not compile");
}

fn lib_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn a_c_program_backs_up_and_restores() {
    let lib = lib_dir();
    assert!(
        lib.join("libfreezer_ffi.so").exists(),
        "no libfreezer_ffi.so beside the test binary in {}",
        lib.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("smoke");
    compile_c(&lib, "smoke", &[], &exe);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/hello.txt"), "hello from C\n").unwrap();
    let (repo, target) = (tmp.path().join("repo"), tmp.path().join("out"));
    let out = Command::new(&exe)
        .arg(&data)
        .arg(&repo)
        .arg(&target)
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("sub/hello.txt")).unwrap(),
        "hello from C\n"
    );
    // The refused backup into the data folder left it as it was.
    let names: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["sub"]);
    // The action with a misspelt option made no repository.
    assert!(!target.join("typo").exists());
}

#[test]
fn a_c_program_runs_job_documents() {
    let lib = lib_dir();
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("jobs");
    compile_c(&lib, "jobs", &[], &exe);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f.txt"), "job from C\n").unwrap();
    let repo = tmp.path().join("repo");
    let out = Command::new(&exe)
        .arg(&data)
        .arg(&repo)
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(repo.join("config").exists());
}

#[test]
fn a_c_program_streams_through_descriptors_and_callbacks() {
    let lib = lib_dir();
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("streams");
    compile_c(&lib, "streams", &["-pthread"], &exe);
    let repo = tmp.path().join("repo");
    let out = Command::new(&exe)
        .arg(&repo)
        .arg(tmp.path().join("restored.bin"))
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "streams: ok\n");
    assert_eq!(
        std::fs::metadata(tmp.path().join("restored.bin"))
            .unwrap()
            .len(),
        6 << 20
    );
}
