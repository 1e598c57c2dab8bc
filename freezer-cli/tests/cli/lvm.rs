//! SIGTERM during an LVM snapshot backup (`freezer backup --snapshot`), against stand-in
//! `lvcreate`, `lvremove`, `mount` and `umount` programs (no device-mapper here; see
//! freezer-core/tests/it/lvm.rs and docs/COMPAT.md): the backup stops, the snapshot is
//! unmounted and removed, and no snapshot is committed.

use std::os::unix::fs::PermissionsExt;

use super::*;

#[test]
fn sigterm_during_a_snapshot_backup_releases_the_snapshot() {
    let e = Env::new();
    let bin = e.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, body) in [
        ("lvcreate", ":"),
        ("lvremove", ":"),
        ("lvs", "echo '  vg0|data'"),
        (
            "mount",
            r#"for a; do dir="$a"; done; cp -a "$(dirname "$0")/../volume/." "$dir/""#,
        ),
        ("umount", r#"find "$1" -mindepth 1 -delete"#),
    ] {
        let p = bin.join(name);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho \"{name} $*\" >> \"$(dirname \"$0\")/calls.log\"\n{body}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::create_dir_all(e.path("live/data")).unwrap();
    // The CLI reads /proc/self/mounts: the volume is given explicitly, and the frozen view
    // holds live/data at its place below this machine's mount point of live/.
    let live = std::fs::canonicalize(e.path("live/data")).unwrap();
    let table =
        freezer_core::source::lvm::read_mount_table(std::path::Path::new("/proc/self/mounts"))
            .unwrap();
    let (_, rel) = freezer_core::source::lvm::mount_of(&live, &table).unwrap();
    let view = e.path("volume").join(rel);
    std::fs::create_dir_all(&view).unwrap();
    std::fs::write(view.join("big.bin"), support::pseudo_random(160 << 20, 9)).unwrap();
    e.ok(&["init", "--repo", "repo"]);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let dirmount = e.path("snapmnt");
    let child = e
        .cmd(&[
            "backup",
            "--repo",
            "repo",
            "-N",
            "vol",
            "--path-to-backup",
            live.to_str().unwrap(),
            "--snapshot",
            "--lvm-srcvol",
            "/dev/vg0/data",
            "--lvm-volgroup",
            "vg0",
            "--lvm-snapname",
            "snap1",
            "--lvm-dirmount",
            dirmount.to_str().unwrap(),
        ])
        .env("PATH", path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = bin.join("calls.log");
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("mount -o")
    {
        assert!(
            start.elapsed().as_secs() < 60,
            "the snapshot was never mounted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Then the first pack the backup writes: the signal comes while it reads the frozen
    // view (a fixed delay raced a fast backup of the whole file).
    let packs = e.path("repo/data");
    let wrote_a_pack = || {
        std::fs::read_dir(&packs).is_ok_and(|d| {
            d.flatten()
                .any(|sub| std::fs::read_dir(sub.path()).is_ok_and(|mut f| f.next().is_some()))
        })
    };
    while !wrote_a_pack() {
        assert!(
            start.elapsed().as_secs() < 60,
            "the backup never wrote a pack"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("SIGTERM") && err.contains("cancelled"),
        "{err}"
    );
    let calls: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(calls, ["lvcreate", "mount", "umount", "lvremove"]);
    assert!(!dirmount.exists(), "the mount folder is removed");
    let list = e.json(&["snapshots", "--repo", "repo"]);
    assert_eq!(
        list["snapshots"].as_array().unwrap().len(),
        0,
        "nothing committed"
    );
}
