//! Restores that must never be taken for what they are not: a corrupt newest snapshot is not
//! silently replaced by an older one, a killed restore leaves no file with wrong content under
//! its final name and resumes when run again, a failed restore leaves no folder behind.

use std::process::Stdio;

use super::{Env, stderr};
use crate::support::{self, assert_same_tree, odd_tree};

/// `freezer <cmd> --repo repo --encrypt-pass-file P <rest>`.
fn args<'a>(e: &'a Env, cmd: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![cmd, "--repo", "repo", "--encrypt-pass-file", e.pass()];
    a.extend_from_slice(rest);
    a
}

fn backup(e: &Env, name: &str) -> String {
    let b = e.json(&args(
        e,
        "backup",
        &["--path-to-backup", "data", "-N", name],
    ));
    b["snapshot_id"].as_str().unwrap().to_string()
}

fn flip_a_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_corrupt_newest_snapshot_fails_the_restore_until_it_is_forgotten() {
    let e = Env::new();
    std::fs::create_dir_all(e.path("data")).unwrap();
    std::fs::write(e.path("data/f"), "old").unwrap();
    e.ok(&args(&e, "init", &[]));
    let old = backup(&e, "web");
    std::fs::write(e.path("data/f"), "new").unwrap();
    let new = backup(&e, "web");
    flip_a_byte(&e.path(&format!("repo/snapshots/{new}")));

    // The newest cannot be read: restoring "the newest" must not quietly take the older one.
    let out = e.path("out");
    let o = e.run(&args(
        &e,
        "restore",
        &["-N", "web", "--restore-abs-path", out.to_str().unwrap()],
    ));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("snapshots/{new}")) && stderr(&o).contains("corrupt"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "nothing restored, no folder left");
    let o = e.run(&args(
        &e,
        "restore",
        &[
            "-N",
            "web",
            "--restore-from-date",
            "2999-01-01T00:00:00",
            "--restore-abs-path",
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    // Asked for by its id, it is corrupt, not "not found".
    let o = e.run(&args(
        &e,
        "restore",
        &[
            "--snapshot",
            &new[..8],
            "--restore-abs-path",
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("corrupt") && !stderr(&o).contains("not found"),
        "{}",
        stderr(&o)
    );

    // Explicitly: the newest readable one, with the corrupt one named.
    let o = e.run(&args(
        &e,
        "restore",
        &[
            "-N",
            "web",
            "--newest-readable",
            "--restore-abs-path",
            out.to_str().unwrap(),
            "--json",
        ],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["snapshot_id"], old.as_str());
    assert!(r["passed_over"].to_string().contains(&new), "{r}");
    assert_eq!(std::fs::read_to_string(out.join("f")).unwrap(), "old");

    // Retention and prune are blocked by the unreadable snapshot...
    let o = e.run(&args(&e, "forget", &["--keep-last", "1"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&new), "{}", stderr(&o));
    let o = e.run(&args(&e, "prune", &[]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // ...until it is forgotten by its id: set aside, not destroyed.
    let o = e.json(&args(&e, "forget", &[&new[..10]]));
    assert!(o["forget"]["quarantined"].to_string().contains(&new), "{o}");
    assert!(!e.path(&format!("repo/snapshots/{new}")).exists());
    assert!(e.path(&format!("repo/quarantine/snapshots/{new}")).exists());
    e.ok(&args(&e, "forget", &["--keep-last", "1"]));
    e.ok(&args(&e, "prune", &[]));
    e.ok(&args(&e, "check", &["--read-data"]));
    let again = e.path("again");
    e.ok(&args(
        &e,
        "restore",
        &["-N", "web", "--restore-abs-path", again.to_str().unwrap()],
    ));
    assert_eq!(std::fs::read_to_string(again.join("f")).unwrap(), "old");
}

#[test]
fn repair_snapshots_sets_every_corrupt_snapshot_aside() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    e.ok(&args(&e, "init", &[]));
    let a = backup(&e, "a");
    let b = backup(&e, "b");
    let c = backup(&e, "c");
    flip_a_byte(&e.path(&format!("repo/snapshots/{a}")));
    flip_a_byte(&e.path(&format!("repo/snapshots/{c}")));
    let o = e.run(&args(&e, "prune", &[]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = e.run(&args(&e, "repair", &[]));
    assert_eq!(o.status.code(), Some(2), "repair needs a subcommand");
    let r = e.json(&[
        "repair",
        "snapshots",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        e.pass(),
    ]);
    let set_aside = r["quarantined"].to_string();
    assert!(set_aside.contains(&a) && set_aside.contains(&c), "{r}");
    assert!(!set_aside.contains(&b), "{r}");
    for id in [&a, &c] {
        assert!(e.path(&format!("repo/quarantine/snapshots/{id}")).exists());
    }
    let p = e.json(&args(&e, "prune", &[]));
    assert_eq!(p["snapshots"], 1, "{p}");
    let out = e.path("out");
    e.ok(&args(
        &e,
        "restore",
        &["-N", "b", "--restore-abs-path", out.to_str().unwrap()],
    ));
    assert_same_tree(&e.path("data"), &out, true);
    // Nothing left to repair: a second run changes nothing.
    let r = e.json(&[
        "repair",
        "snapshots",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        e.pass(),
    ]);
    assert_eq!(r["quarantined"].as_array().unwrap().len(), 0, "{r}");
}

#[test]
fn a_killed_restore_leaves_no_wrong_file_and_resumes() {
    let e = Env::new();
    std::fs::create_dir_all(e.path("data/sub")).unwrap();
    for i in 0..6u64 {
        std::fs::write(
            e.path(&format!("data/sub/f{i}.bin")),
            support::pseudo_random(2 << 20, 40 + i),
        )
        .unwrap();
    }
    std::fs::write(e.path("data/small"), "small").unwrap();
    e.ok(&args(&e, "init", &[]));
    backup(&e, "web");
    let out = e.path("out");
    let restore = args(
        &e,
        "restore",
        &["-N", "web", "--restore-abs-path", out.to_str().unwrap()],
    );
    // 12 MiB at 2 MiB/s: killed while it writes.
    let mut slow = restore.clone();
    slow.extend_from_slice(&["--download-limit", "2M"]);
    let mut child = e
        .cmd(&slow)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !out.join("sub").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the restore never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    let mut unfinished = 0;
    for (path, bytes) in support::all_bytes(&out) {
        let rel = path.strip_prefix(&out).unwrap();
        let name = rel.file_name().unwrap().to_string_lossy();
        if name.starts_with(".freezer-") {
            unfinished += 1;
            continue;
        }
        let want = std::fs::read(e.path("data").join(rel)).unwrap();
        assert!(
            bytes == want,
            "{} is under its final name with wrong content",
            rel.display()
        );
    }
    assert!(unfinished > 0, "the restore was killed before its end");
    // Run again, as it was: it resumes instead of refusing a folder that is not empty.
    let o = e.run(&restore);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(&e.path("data"), &out, true);
}

#[test]
fn a_failed_restore_leaves_no_folder_it_made() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    e.ok(&args(&e, "init", &[]));
    let id = backup(&e, "web");
    // Without the index, the snapshot's top tree cannot be found: the restore fails.
    std::fs::remove_dir_all(e.path("repo/index")).unwrap();
    let new = e.path("new/deeper/target");
    let o = e.run(&args(
        &e,
        "restore",
        &[
            "--snapshot",
            &id,
            "--restore-abs-path",
            new.to_str().unwrap(),
        ],
    ));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!e.path("new").exists(), "the folders it created are gone");
    // A folder that was there stays, as it was.
    std::fs::create_dir(e.path("mine")).unwrap();
    let o = e.run(&args(
        &e,
        "restore",
        &["--snapshot", &id, "--restore-abs-path", "mine"],
    ));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(e.path("mine")).unwrap().count(), 0);
}

#[test]
fn a_symlink_to_a_folder_is_followed_and_a_socket_is_named_as_skipped() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    let _listener = std::os::unix::net::UnixListener::bind(e.path("data/sock")).unwrap();
    e.ok(&args(&e, "init", &[]));
    backup(&e, "web");
    std::fs::create_dir(e.path("real")).unwrap();
    std::os::unix::fs::symlink("real", e.path("link")).unwrap();
    let r = e.json(&args(
        &e,
        "restore",
        &["-N", "web", "--restore-abs-path", "link"],
    ));
    assert_eq!(r["complete"], true, "{r}");
    assert!(r["skipped"].to_string().contains("sock"), "{r}");
    std::fs::remove_file(e.path("data/sock")).unwrap();
    assert_same_tree(&e.path("data"), &e.path("real"), false);
    let others = walk_others(&e.path("real"));
    assert_eq!(r["others"], others, "{r}");
    // A symlink to a file is no folder to restore into.
    std::fs::write(e.path("file"), "x").unwrap();
    std::os::unix::fs::symlink("file", e.path("to-file")).unwrap();
    let o = e.run(&args(
        &e,
        "restore",
        &["-N", "web", "--restore-abs-path", "to-file"],
    ));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a folder"), "{}", stderr(&o));
}

/// Entries that are neither files nor folders below `dir`.
fn walk_others(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            n += walk_others(&e.path());
        } else if !t.is_file() {
            n += 1;
        }
    }
    n
}

#[test]
fn a_file_whose_size_lies_is_read_to_its_end() {
    let e = Env::new();
    e.ok(&args(&e, "init", &[]));
    e.ok(&args(
        &e,
        "backup",
        &["--path-to-backup", "/proc/self/status", "-N", "proc"],
    ));
    let out = e.path("out");
    e.ok(&args(
        &e,
        "restore",
        &["-N", "proc", "--restore-abs-path", out.to_str().unwrap()],
    ));
    let text = std::fs::read_to_string(out.join("status")).unwrap();
    assert!(
        text.starts_with("Name:") && text.contains("\nPid:"),
        "{text:?}"
    );
}

/// One chunk shared by hundreds of files (the same file in many folders), larger than a
/// decoding piece, restores within a small limit of open files: the files are not all held
/// open at once while the chunk is written piece by piece.
#[test]
fn a_chunk_shared_by_hundreds_of_files_restores_with_few_descriptors() {
    let e = Env::new();
    let content: Vec<u8> = (0..700u32 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for d in 0..10 {
        let dir = e.path(&format!("data/d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..30 {
            std::fs::write(dir.join(format!("f{f}")), &content).unwrap();
        }
    }
    e.ok(&args(&e, "init", &[]));
    backup(&e, "web");
    let out = std::process::Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_freezer"))
        .args(args(
            &e,
            "restore",
            &["-N", "web", "--restore-abs-path", "back"],
        ))
        .current_dir(e.path(""))
        .stdin(Stdio::null())
        .output()
        .expect("prlimit (util-linux) runs");
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    assert_same_tree(&e.path("data"), &e.path("back"), false);
}
