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

/// The folder of the built library, with the name its SONAME gives programs linked with it
/// (`libfreezer.so.0`, which `make install` makes) beside it.
fn lib_dir() -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let link = dir.join("libfreezer.so.0");
    if std::fs::symlink_metadata(&link).is_err() {
        // Tests run in parallel: another may make it first.
        let _ = std::os::unix::fs::symlink("libfreezer_ffi.so", &link);
    }
    dir
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

/// `cmd`'s output, failing with its stderr.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_library_has_a_soname_and_exports_only_its_abi() {
    let so = lib_dir().join("libfreezer_ffi.so");
    let dynamic = run(Command::new("readelf").arg("-d").arg(&so));
    assert!(
        dynamic.contains("Library soname: [libfreezer.so.0]"),
        "{dynamic}"
    );
    let syms = run(Command::new("readelf")
        .args(["--dyn-syms", "--wide"])
        .arg(&so));
    let exported: Vec<&str> = syms
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Num: Value Size Type Bind Vis Ndx Name
            (f.len() >= 8 && f[4] == "GLOBAL" && f[6] != "UND").then(|| f[7])
        })
        .collect();
    assert!(
        exported.contains(&"freezer_repository_open"),
        "{exported:?}"
    );
    let foreign: Vec<_> = exported
        .iter()
        .filter(|s| !s.starts_with("freezer_"))
        .collect();
    assert!(foreign.is_empty(), "exported besides the ABI: {foreign:?}");
}

/// The README's way: the library, header and pkg-config file installed by `make install`,
/// the example built with `cc example.c $(pkg-config --cflags --libs freezer)`, run with and
/// without a passphrase, and under valgrind: no leak, no invalid access.
#[test]
fn the_example_builds_against_the_installed_library_and_runs_clean_under_valgrind() {
    let lib = lib_dir();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    run(Command::new("make")
        .arg("-C")
        .arg(crate_dir())
        .arg("install")
        .arg(format!("PREFIX={}", prefix.display()))
        .arg(format!("LIBSRC={}", lib.display())));
    let pc = prefix.join("lib/pkgconfig");
    let flags = run(Command::new("pkg-config")
        .args(["--cflags", "--libs", "freezer"])
        .env("PKG_CONFIG_PATH", &pc));
    let exe = tmp.path().join("backup");
    run(Command::new("cc")
        .arg(crate_dir().join("examples/backup.c"))
        .args(flags.split_whitespace())
        .args(["-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe));
    // The installed shared library is stripped; the static one has no debug sections.
    let installed = prefix.join("lib/libfreezer.so.0");
    let sections = run(Command::new("readelf").arg("-S").arg(&installed));
    assert!(
        !sections.contains(".debug_") && !sections.contains(".symtab"),
        "{sections}"
    );
    let archive = run(Command::new("readelf")
        .arg("-S")
        .arg(prefix.join("lib/libfreezer.a")));
    assert!(
        !archive.contains(".debug_") && !archive.contains(".llvmbc"),
        "the static library keeps debug sections or bitcode"
    );
    // Linked statically: the archive and the private libraries the pkg-config file names.
    let private = run(Command::new("pkg-config")
        .args(["--static", "--libs-only-l", "freezer"])
        .env("PKG_CONFIG_PATH", &pc));
    let static_exe = tmp.path().join("backup-static");
    run(Command::new("cc")
        .arg(crate_dir().join("examples/backup.c"))
        .arg("-I")
        .arg(prefix.join("include"))
        .arg(prefix.join("lib/libfreezer.a"))
        .args(private.split_whitespace().filter(|l| *l != "-lfreezer"))
        .arg("-o")
        .arg(&static_exe));
    let needed = run(Command::new("readelf").arg("-d").arg(&static_exe));
    assert!(!needed.contains("libfreezer"), "{needed}");
    eprintln!(
        "installed sizes: libfreezer.so {} bytes, libfreezer.a {} bytes (debug profile)",
        std::fs::metadata(&installed).unwrap().len(),
        std::fs::metadata(prefix.join("lib/libfreezer.a"))
            .unwrap()
            .len()
    );

    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/a.txt"), "from the C example\n").unwrap();
    std::fs::write(data.join("b.bin"), vec![7u8; 300_000]).unwrap();
    let example = |repo: &str, out: &str, pass: Option<&str>, valgrind: bool| {
        let mut cmd = if valgrind {
            let mut c = Command::new("valgrind");
            c.args([
                "--quiet",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite,indirect",
                "--show-leak-kinds=definite,indirect",
                "--error-exitcode=99",
            ])
            .arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.arg(&data)
            .arg(tmp.path().join(repo))
            .arg(tmp.path().join(out))
            .env("LD_LIBRARY_PATH", prefix.join("lib"))
            .env_remove("FREEZER_PASSPHRASE");
        if let Some(p) = pass {
            cmd.env("FREEZER_PASSPHRASE", p);
        }
        let stdout = run(&mut cmd);
        assert_eq!(
            std::fs::read(tmp.path().join(out).join("b.bin")).unwrap(),
            vec![7u8; 300_000]
        );
        stdout
    };
    let encrypted = example("enc", "out-enc", Some("c secret"), false);
    assert!(encrypted.contains("backed up: level 0"), "{encrypted}");
    assert!(encrypted.contains("restored: whole"), "{encrypted}");
    assert!(
        encrypted.contains("opened again with a wrong passphrase: result 3"),
        "{encrypted}"
    );
    assert!(
        encrypted.contains("opened the data folder: result 1, repository at"),
        "{encrypted}"
    );
    let linked = run(Command::new(&static_exe)
        .arg(&data)
        .arg(tmp.path().join("static-repo"))
        .arg(tmp.path().join("static-out"))
        .env_remove("FREEZER_PASSPHRASE"));
    assert!(linked.contains("restored: whole"), "{linked}");
    // Valgrind's run: without a passphrase (Argon2id under valgrind takes minutes).
    let checked = example("plain", "out-plain", None, true);
    assert!(checked.contains("restored: whole"), "{checked}");
}

#[test]
fn a_c_program_uses_the_handles_and_their_bad_cases() {
    let lib = lib_dir();
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("handles");
    compile_c(&lib, "handles", &[], &exe);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f.txt"), "handles from C\n").unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let out = Command::new(&exe)
        .arg(&data)
        .arg(&work)
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "handles: ok\n");
    // Nothing was made where the refused calls pointed.
    assert!(!work.join("missing").exists());
}
