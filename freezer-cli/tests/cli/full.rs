//! A full or read-only storage as its owner meets it: restore and check go on without a lock,
//! backup fails cleanly naming the storage, and `forget --no-lock` then `prune --no-lock`
//! free space with zero bytes free; leftovers of killed writes are reported and removed.

use std::path::{Path, PathBuf};

use super::{Env, stderr};
use crate::support::{self, assert_same_tree};

/// A tmpfs mounted for the length of a test.
pub(super) struct Mount(PathBuf);

impl Mount {
    pub(super) fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            st.success(),
            "this test needs to mount a small tmpfs (root, CAP_SYS_ADMIN) to fill a disk"
        );
        Mount(at.to_path_buf())
    }

    fn remount(&self, how: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {how}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Bytes free on the file system holding `p`.
pub(super) fn free_bytes(p: &Path) -> u64 {
    let s = rustix::fs::statvfs(p).unwrap();
    s.f_bavail * s.f_frsize
}

/// Writes `file` until the disk is full: zero bytes free.
pub(super) fn fill(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).unwrap();
    let block = vec![0x5au8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => break,
            Err(e) => panic!("filling {}: {e}", file.display()),
        }
    }
    let _ = f.sync_all();
}

/// The command `cmd` with the repository arguments `base` after its name.
fn with<'a>(base: &[&'a str], cmd: &[&'a str]) -> Vec<&'a str> {
    [&cmd[..1], base, &cmd[1..]].concat()
}

/// Every `.tmp-` file under `dir`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_full_storage_keeps_its_owner_in() {
    let e = Env::new();
    let p = e.pass();
    let disk = e.path("disk");
    let m = Mount::tmpfs(&disk, "8m");
    let repo = disk.join("repo");
    let r = repo.to_str().unwrap();
    std::fs::create_dir_all(e.path("small")).unwrap();
    std::fs::write(e.path("small/a.txt"), b"kept\n").unwrap();
    std::fs::create_dir_all(e.path("big")).unwrap();
    std::fs::write(e.path("big/b.bin"), support::pseudo_random(3 << 20, 5)).unwrap();
    let base = ["--repo", r, "--encrypt-pass-file", p, "--lock-wait", "0"];
    e.ok(&["init", "--repo", r, "--encrypt-pass-file", p]);
    e.json(&with(
        &base,
        &["backup", "--path-to-backup", "small", "-N", "small"],
    ));
    e.json(&with(
        &base,
        &["backup", "--path-to-backup", "big", "-N", "big"],
    ));
    fill(&disk.join("filler"));
    assert_eq!(free_bytes(&disk), 0, "the disk is full");

    // Check and restore work, each with one warning naming the storage and why.
    let o = e.run(&with(&base, &["check"]));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "continuing without a lock on local:{r}: it is full"
        )),
        "{err}"
    );
    assert_eq!(err.matches("continuing without a lock").count(), 1, "{err}");
    let out = e.path("out");
    let o = e.run(&with(
        &base,
        &[
            "restore",
            "-N",
            "small",
            "--restore-abs-path",
            out.to_str().unwrap(),
        ],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("continuing without a lock"),
        "{}",
        stderr(&o)
    );
    assert_same_tree(&e.path("small"), &out, true);

    // A backup fails at once, naming the storage, saying how to free space, leaving nothing.
    std::fs::write(e.path("small/new.bin"), support::pseudo_random(1 << 20, 6)).unwrap();
    let o = e.run(&with(
        &base,
        &["backup", "--path-to-backup", "small", "-N", "small"],
    ));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no space left") && err.contains(r), "{err}");
    assert!(
        err.contains("`freezer prune --no-lock --max-unused 100%`"),
        "{err}"
    );
    assert!(temporaries(&repo).is_empty(), "{:?}", temporaries(&repo));
    assert!(!support::has_lock(&repo));
    // So does a prune that takes its lock.
    let o = e.run(&with(&base, &["prune"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no space left"), "{}", stderr(&o));

    // A read-only storage: check goes on without a lock too.
    m.remount("ro");
    let o = e.run(&with(&base, &["check"]));
    m.remount("rw");
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("continuing without a lock") && err.contains("read-only"),
        "{err}"
    );

    // The documented path: forget and prune without a lock free the space.
    let o = e.run(&with(
        &base,
        &[
            "forget",
            "--no-lock",
            "-N",
            "big",
            "--remove-before-date",
            "4102444800",
        ],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let pruned = e.json(&with(&base, &["prune", "--no-lock"]));
    assert!(
        pruned["total"]["packs_deleted"].as_u64().unwrap() >= 1,
        "{pruned}"
    );
    assert!(
        free_bytes(&disk) > 3 << 20,
        "{} bytes free",
        free_bytes(&disk)
    );
    let b = e.json(&with(
        &base,
        &["backup", "--path-to-backup", "small", "-N", "small"],
    ));
    assert_eq!(b["complete"], true, "{b}");
    let c = e.json(&with(&base, &["check", "--read-data"]));
    assert_eq!(c["ok"], true, "{c}");
    assert!(c["warnings"].as_array().unwrap().is_empty(), "{c}");
}

#[test]
fn no_lock_is_refused_while_another_operation_runs() {
    let e = Env::new();
    let p = e.pass();
    std::fs::create_dir_all(e.path("src")).unwrap();
    std::fs::write(e.path("src/big"), support::pseudo_random(4 << 20, 3)).unwrap();
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    // 4 MiB at 256 KiB/s: the backup holds its lock for a while.
    let mut child = e
        .cmd(&[
            "backup",
            "--repo",
            "repo",
            "--encrypt-pass-file",
            p,
            "--path-to-backup",
            "src",
            "-N",
            "web",
            "--upload-limit",
            "256K",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !support::has_lock(&e.path("repo")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup took no lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = e.run(&[
        "prune",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--no-lock",
    ]);
    let _ = child.kill();
    let _ = child.wait();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("without a lock refused") && err.contains("backup"),
        "{err}"
    );
}

#[test]
fn check_names_a_damaged_index_first_and_prune_removes_old_leftovers() {
    let e = Env::new();
    let p = e.pass();
    let base = [
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--lock-wait",
        "0",
    ];
    std::fs::create_dir_all(e.path("src")).unwrap();
    for i in 0..60u64 {
        std::fs::write(
            e.path(&format!("src/f{i:02}")),
            support::pseudo_random(2000, i),
        )
        .unwrap();
    }
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    e.json(&with(
        &base,
        &["backup", "--path-to-backup", "src", "-N", "n"],
    ));
    let first_index: Vec<PathBuf> = std::fs::read_dir(e.path("repo/index"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    assert_eq!(first_index.len(), 1);
    // Many clean snapshots, all of which need the blobs the first index file lists.
    for i in 0..8u64 {
        std::fs::write(
            e.path("src/changing"),
            support::pseudo_random(100, 1000 + i),
        )
        .unwrap();
        e.json(&with(
            &base,
            &["backup", "--path-to-backup", "src", "-N", "n"],
        ));
    }
    let mut bytes = std::fs::read(&first_index[0]).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&first_index[0], bytes).unwrap();
    let index_id = first_index[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // Leftovers of writes cut off: one an hour old, one being written now.
    std::fs::create_dir_all(e.path("repo/data/00")).unwrap();
    let old = e.path("repo/data/00/.tmp-0000000000000001");
    std::fs::write(&old, support::pseudo_random(1 << 20, 1)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        .unwrap();
    let fresh = e.path("repo/data/00/.tmp-0000000000000002");
    std::fs::write(&fresh, b"being written").unwrap();

    let o = e.run(&with(&base, &["check"]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines[0].starts_with("DAMAGED: 1 index file"), "{err}");
    assert!(lines[1].contains(&format!("index {index_id}")), "{err}");
    assert!(err.contains("1. `freezer repair index`"), "{err}");
    assert!(
        !err.contains("`freezer prune` removes them\n"),
        "prune refuses while the index is damaged: {err}"
    );
    assert!(lines.len() < 150, "{} lines: {err}", lines.len());
    assert!(err.contains("`--json` lists them all"), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("2 temporary file(s) (1.0 MiB)"), "{out}");
    assert!(
        err.contains("`freezer prune` removes those not written to for 30 minutes"),
        "{err}"
    );

    // Prune refuses, and says what heals; repair index heals; prune removes the old leftover.
    let o = e.run(&with(&base, &["prune"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`freezer repair index`"),
        "{}",
        stderr(&o)
    );
    e.ok(&[&["repair", "index"][..], &base[..]].concat());
    let pruned = e.json(&with(&base, &["prune"]));
    assert_eq!(pruned["total"]["temporaries_deleted"], 1, "{pruned}");
    assert!(!old.exists());
    assert!(
        fresh.exists(),
        "a temporary written to lately may be a live write's"
    );
    let c = e.json(&with(&base, &["check"]));
    assert_eq!(c["ok"], true, "{c}");
    assert_eq!(c["temporary_files"], 1, "{c}");
}
