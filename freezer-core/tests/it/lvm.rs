//! LVM snapshot backups (`snapshot`, `lvm_*`), orchestrated against stand-in `lvcreate`,
//! `lvremove`, `lvs`, `mount` and `umount` programs: this machine's kernel has no
//! device-mapper, so no real snapshot can be made here or in CI (docs/COMPAT.md names the
//! stand-ins). Each stand-in is a shell script the test writes into a temp `bin` folder put
//! first in the `PATH` the library's commands get; it logs its call and fails when a marker
//! file `fail-<name>` exists. The `mount` stand-in "mounts" by copying a prepared folder (the
//! frozen view) into the mount point, and `umount` empties it, so the backup really reads the
//! snapshot's files, which differ from the live ones. Every path, failures and cancel
//! included, must leave nothing mounted or created. `real_lvm_snapshot` runs the real path
//! where device-mapper exists, and says plainly that it did not run where it does not.

use std::path::{Path, PathBuf};

use freezer_core::job::{ActionOutcome, FreezerAction, RunContext, exec_environment, run_action};
use freezer_core::source::lvm::{SnapshotPlan, guess_volume};
use freezer_core::{Error, ErrorKind};

use crate::support::*;

struct Stand {
    tmp: tempfile::TempDir,
}

const STANDINS: &[&str] = &["lvcreate", "lvremove", "lvs", "mount", "umount"];

impl Stand {
    async fn new() -> Stand {
        let tmp = tempfile::tempdir().unwrap();
        let s = Stand { tmp };
        std::fs::create_dir_all(s.bin()).unwrap();
        for name in STANDINS {
            let body = match *name {
                // mount -o OPTS [-t TYPE] DEV DIR: copy the frozen view into DIR.
                "mount" => {
                    r#"for a; do dir="$a"; done; cp -a "$(dirname "$0")/../volume/." "$dir/""#
                }
                "umount" => r#"find "$1" -mindepth 1 -delete"#,
                "lvs" => r#"echo "  vg0|data""#,
                _ => ":",
            };
            let script = format!(
                "#!/bin/sh\nd=\"$(dirname \"$0\")\"\necho \"{name} $*\" >> \"$d/calls.log\"\nif [ -e \"$d/fail-{name}\" ]; then echo \"{name}: $(cat \"$d/fail-{name}\")\" >&2; exit 5; fi\nif [ -e \"$d/slow-{name}\" ]; then sleep \"$(cat \"$d/slow-{name}\")\"; fi\n{body}\n"
            );
            let p = s.bin().join(name);
            std::fs::write(&p, script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // The live files, on a "volume" mounted at live/ (per the fake mount table), and
        // the snapshot's frozen view of the same volume, which differs.
        std::fs::create_dir_all(s.path("live/data/sub")).unwrap();
        std::fs::write(s.path("live/data/a.txt"), "live a").unwrap();
        std::fs::write(s.path("live/data/new.txt"), "written after the snapshot").unwrap();
        std::fs::create_dir_all(s.path("volume/data/sub")).unwrap();
        std::fs::write(s.path("volume/data/a.txt"), "frozen a").unwrap();
        std::fs::write(s.path("volume/data/sub/b.txt"), "frozen b").unwrap();
        std::fs::write(s.path("volume/other.txt"), "outside path_to_backup").unwrap();
        s.set_mounts("/dev/mapper/vg0-data", "xfs");
        init(vec![local(&s.path("repo"))], None).await;
        s
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn bin(&self) -> PathBuf {
        self.path("bin")
    }

    fn set_mounts(&self, device: &str, fs_type: &str) {
        let live = std::fs::canonicalize(self.path("live")).unwrap();
        std::fs::write(
            self.path("mounts"),
            format!(
                "/dev/sda1 / ext4 rw 0 0\n{device} {} {fs_type} rw,relatime 0 0\n",
                live.display()
            ),
        )
        .unwrap();
    }

    fn fail(&self, name: &str, why: &str) {
        std::fs::write(self.bin().join(format!("fail-{name}")), why).unwrap();
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.bin().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn programs(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| c.split(' ').next().unwrap().to_string())
            .collect()
    }

    fn ctx(&self) -> RunContext {
        let mut c = RunContext::current();
        c.actor = actor();
        c.exec_env = exec_environment(std::env::vars());
        let path = format!(
            "{}:{}",
            self.bin().display(),
            c.exec_env.get("PATH").cloned().unwrap_or_default()
        );
        c.exec_env.insert("PATH".into(), path);
        c.mount_table = self.path("mounts");
        c
    }

    fn dirmount(&self) -> PathBuf {
        self.path("snapmnt")
    }

    fn action(&self, extra: &str) -> FreezerAction {
        FreezerAction::from_json(&format!(
            r#"{{"action":"backup","container":{},"backup_name":"vol","hostname":"test-host",
                "path_to_backup":{},"snapshot":"True","lvm_snapname":"snap1",
                "lvm_dirmount":{}{extra}}}"#,
            serde_json::json!(self.path("repo")),
            serde_json::json!(self.path("live/data")),
            serde_json::json!(self.dirmount()),
        ))
        .unwrap()
    }

    async fn backup(&self, extra: &str) -> freezer_core::Result<ActionOutcome> {
        run_action(&self.action(extra), &self.ctx()).await
    }

    /// Nothing mounted, the mount folder gone, every created volume removed.
    fn assert_nothing_left(&self) {
        assert!(
            !self.dirmount().exists(),
            "the mount folder made is removed"
        );
        let p = self.programs();
        let created = p.iter().filter(|c| *c == "lvcreate").count();
        let mounted = p.iter().filter(|c| *c == "mount").count();
        let umounted = p.iter().filter(|c| *c == "umount").count();
        let removed = p.iter().filter(|c| *c == "lvremove").count();
        let lvcreate_failed = self.bin().join("fail-lvcreate").exists();
        let mount_failed = self.bin().join("fail-mount").exists();
        assert_eq!(removed, if lvcreate_failed { 0 } else { created }, "{p:?}");
        assert_eq!(umounted, if mount_failed { 0 } else { mounted }, "{p:?}");
    }

    async fn snapshots(&self) -> usize {
        let repo = open(&[&self.path("repo")], None).await;
        repo.snapshots().await.unwrap().0.len()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_backup_reads_the_frozen_view_records_the_path_and_leaves_nothing() {
    let s = Stand::new().await;
    let r = match s.backup("").await.unwrap() {
        ActionOutcome::Backup(b) => b,
        o => panic!("{o:?}"),
    };
    assert!(r.is_complete(), "{r:?}");
    let live = std::fs::canonicalize(s.path("live/data")).unwrap();
    assert_eq!(r.snapshot.path_to_backup, live.display().to_string());
    let m = s.dirmount().display().to_string();
    assert_eq!(
        s.calls(),
        [
            "lvcreate --size 1G --snapshot --permission r --name snap1 /dev/vg0/data".to_string(),
            format!("mount -o ro,nouuid,norecovery -t xfs /dev/vg0/snap1 {m}"),
            format!("umount {m}"),
            "lvremove -f /dev/vg0/snap1".to_string(),
        ],
        "the volume is guessed from /dev/mapper, xfs gets nouuid,norecovery, calls in order"
    );
    s.assert_nothing_left();
    // The restore holds the frozen files, not the live ones.
    let out = s.path("out");
    let a = FreezerAction::from_json(&format!(
        r#"{{"action":"restore","container":{},"backup_name":"vol","hostname":"test-host","restore_abs_path":{}}}"#,
        serde_json::json!(s.path("repo")),
        serde_json::json!(out)
    ))
    .unwrap();
    run_action(&a, &s.ctx()).await.unwrap();
    assert_same_tree(&s.path("volume/data"), &out, false);
    assert!(!out.join("new.txt").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn ext4_extents_rw_and_a_volume_named_by_lvs() {
    let s = Stand::new().await;
    s.set_mounts("/dev/dm-7", "ext4");
    s.backup(r#","lvm_snapsize":"80%FREE","lvm_snapperm":"rw""#)
        .await
        .unwrap();
    let m = s.dirmount().display().to_string();
    assert_eq!(
        s.calls(),
        [
            "lvs --noheadings --separator | -o vg_name,lv_name /dev/dm-7".to_string(),
            "lvcreate --extents 80%FREE --snapshot --permission rw --name snap1 /dev/vg0/data"
                .to_string(),
            format!("mount -o rw -t ext4 /dev/vg0/snap1 {m}"),
            format!("umount {m}"),
            "lvremove -f /dev/vg0/snap1".to_string(),
        ]
    );
    s.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn guessing_the_volume_from_a_mount_table() {
    let s = Stand::new().await;
    let env = s.ctx().exec_env;
    let live = std::fs::canonicalize(s.path("live/data/sub")).unwrap();
    s.set_mounts("/dev/mapper/my--vg-var--lib", "xfs");
    let g = guess_volume(&live, &s.path("mounts"), &env).unwrap();
    assert_eq!(
        (g.volgroup.as_str(), g.srcvol.as_str(), g.fs_type.as_str()),
        ("my-vg", "/dev/my-vg/var-lib", "xfs")
    );
    assert_eq!(g.relative, Path::new("data/sub"));
    assert!(s.calls().is_empty(), "a /dev/mapper name needs no lvs");
    // A device lvs does not know: the error names it and what to give instead.
    s.set_mounts("/dev/sdb1", "ext4");
    s.fail("lvs", "Failed to find logical volume \"/dev/sdb1\"");
    let e = guess_volume(&live, &s.path("mounts"), &env).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("/dev/sdb1")
            && m.contains("not an LVM logical volume")
            && m.contains("lvm_srcvol"),
        "{m}"
    );
    // Given explicitly, nothing is guessed; an XFS superblock on the volume gives the type.
    let dev = s.path("fake-xfs-volume");
    std::fs::write(&dev, b"XFSB\0\0\0\0").unwrap();
    let a = s.action(&format!(
        r#","lvm_srcvol":{},"lvm_volgroup":"vgx""#,
        serde_json::json!(dev)
    ));
    let plan = SnapshotPlan::resolve(&a, &s.path("mounts"), &env).unwrap();
    assert_eq!(plan.fs_type.as_deref(), Some("xfs"));
    assert_eq!(plan.device(), "/dev/vgx/snap1");
    assert!(plan.mount().contains(&"ro,nouuid,norecovery".to_string()));
    // A missing mount table is named.
    let e = guess_volume(&live, &s.path("no-such-mounts"), &env).unwrap_err();
    assert!(e.to_string().contains("no-such-mounts"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_lvcreate_leaves_nothing_and_says_why() {
    let s = Stand::new().await;
    s.fail(
        "lvcreate",
        "Failure to communicate with kernel device-mapper driver.",
    );
    let e = s.backup("").await.unwrap_err().to_string();
    assert!(
        e.contains("creating the LVM snapshot") && e.contains("device-mapper"),
        "{e}"
    );
    assert_eq!(s.programs(), ["lvcreate"]);
    s.assert_nothing_left();
    assert_eq!(s.snapshots().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_mount_still_removes_the_volume() {
    let s = Stand::new().await;
    s.fail("mount", "wrong fs type, bad option, bad superblock");
    let e = s.backup("").await.unwrap_err().to_string();
    assert!(
        e.contains("mounting the LVM snapshot") && e.contains("bad superblock"),
        "{e}"
    );
    assert_eq!(s.programs(), ["lvcreate", "mount", "lvremove"]);
    s.assert_nothing_left();
    assert_eq!(s.snapshots().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_backup_releases_the_snapshot() {
    let s = Stand::new().await;
    // The repository is not encrypted: a passphrase file that does not exist fails the
    // backup after the snapshot is taken.
    let e = s
        .backup(&format!(
            r#","encrypt_pass_file":{}"#,
            serde_json::json!(s.path("no-such-pass"))
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no-such-pass"), "{e}");
    assert_eq!(s.programs(), ["lvcreate", "mount", "umount", "lvremove"]);
    s.assert_nothing_left();
    assert_eq!(s.snapshots().await, 0);
    assert!(!has_lock(&s.path("repo")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_umount_names_what_is_left() {
    let s = Stand::new().await;
    s.fail("umount", "target is busy.");
    let e = s.backup("").await.unwrap_err();
    let m = e.to_string();
    let dir = s.dirmount().display().to_string();
    assert!(m.contains("the backup is stored"), "{m}");
    assert!(
        m.contains(&format!("/dev/vg0/snap1 mounted on {dir}")),
        "{m}"
    );
    assert!(m.contains("lvremove -f /dev/vg0/snap1"), "{m}");
    assert!(m.contains(&format!("rmdir {dir}")), "{m}");
    // A volume that did not unmount is never removed under its mount.
    assert!(
        !s.programs().contains(&"lvremove".to_string()),
        "{:?}",
        s.calls()
    );
    assert_eq!(s.snapshots().await, 1, "the backup itself completed");
    // A failing lvremove is named too.
    let s = Stand::new().await;
    s.fail("lvremove", "Logical volume vg0/snap1 not found");
    let m = s.backup("").await.unwrap_err().to_string();
    assert!(
        m.contains("left behind") && m.contains("lvremove -f /dev/vg0/snap1"),
        "{m}"
    );
    assert!(!s.dirmount().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_during_the_backup_releases_the_snapshot_and_commits_nothing() {
    let s = Stand::new().await;
    // Enough data that the backup is still reading when the cancel comes.
    std::fs::write(s.path("volume/data/big.bin"), pseudo_random(96 << 20, 3)).unwrap();
    // The cancel comes with the first bytes the backup reads from the mounted snapshot:
    // while the backup runs, whatever the machine's speed (a timer raced a fast backup).
    struct CancelOnRead(freezer_core::CancelToken);
    impl freezer_core::engine::Progress for CancelOnRead {
        fn add_bytes(&self, _bytes: u64) {
            self.0.cancel();
        }
    }
    let mut ctx = s.ctx();
    ctx.progress = std::sync::Arc::new(CancelOnRead(ctx.cancel.clone()));
    let e = run_action(&s.action(""), &ctx).await.unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert_eq!(s.programs(), ["lvcreate", "mount", "umount", "lvremove"]);
    s.assert_nothing_left();
    assert_eq!(s.snapshots().await, 0, "no snapshot committed");
    assert!(!has_lock(&s.path("repo")));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_snapshot_options_and_windows_features_are_refused() {
    let s = Stand::new().await;
    for (extra, field) in [
        (r#","lvm_snapperm":"rx""#, "lvm_snapperm"),
        (r#","lvm_snapsize":"1G --yes""#, "lvm_snapsize"),
        (r#","lvm_volgroup":"a/b""#, "lvm_volgroup"),
        (r#","mode":"stdin""#, "snapshot"),
    ] {
        let e = s.backup(extra).await.unwrap_err();
        assert!(e.to_string().starts_with(field), "{extra}: {e}");
    }
    // A folder that is not empty is not mounted over.
    std::fs::create_dir_all(s.dirmount()).unwrap();
    std::fs::write(s.dirmount().join("x"), "").unwrap();
    let e = s.backup("").await.unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
    std::fs::remove_file(s.dirmount().join("x")).unwrap();
    std::fs::remove_dir(s.dirmount()).unwrap();
    // A tool missing from PATH is named.
    std::fs::remove_file(s.bin().join("lvcreate")).unwrap();
    let mut ctx = s.ctx();
    ctx.exec_env
        .insert("PATH".into(), s.bin().display().to_string());
    let e = run_action(&s.action(""), &ctx).await.unwrap_err();
    assert!(
        e.to_string().contains("`lvcreate` not found in PATH"),
        "{e}"
    );
    s.assert_nothing_left();
    for json in [
        r#"{"action":"backup","mode":"sqlserver","container":"/x","backup_name":"b"}"#,
        r#"{"action":"backup","path_to_backup":"C:\\data","snapshot":"True","container":"/x","backup_name":"b"}"#,
        r#"{"action":"backup","path_to_backup":"/d","vssadmin":"True","container":"/x","backup_name":"b"}"#,
    ] {
        let e = run_action(&FreezerAction::from_json(json).unwrap(), &s.ctx())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{json}: {e}");
        assert!(e.to_string().contains("Windows"), "{e}");
    }
    assert_eq!(s.snapshots().await, 0);
}

/// The real path: a loop device made a physical volume, a volume group, an xfs logical
/// volume, a real `lvcreate --snapshot`, mount and backup. It needs device-mapper in the
/// kernel; where there is none (this machine, CI) it says so and returns.
#[tokio::test(flavor = "multi_thread")]
async fn real_lvm_snapshot() {
    let dm = Path::new("/sys/module/dm_mod").exists()
        || std::process::Command::new("dmsetup")
            .arg("version")
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Driver version")
            });
    if !dm {
        eprintln!("device-mapper not present: the real LVM path did not run here");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sh = |script: &str| {
        let o = std::process::Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    sh("truncate -s 600M disk.img").to_string();
    let loopdev = sh("losetup --find --show disk.img");
    let vg = format!("freezertest{}", std::process::id());
    let cleanup = format!(
        "umount {mnt} 2>/dev/null || true; vgremove -f {vg} 2>/dev/null || true; pvremove -f {loopdev} 2>/dev/null || true; losetup -d {loopdev}",
        mnt = tmp.path().join("mnt").display()
    );
    let result = std::panic::AssertUnwindSafe(async {
        sh(&format!(
            "pvcreate -f {loopdev} && vgcreate {vg} {loopdev} && lvcreate -y -L 300M -n data {vg} && mkfs.xfs -q /dev/{vg}/data && mkdir -p mnt && mount /dev/{vg}/data mnt && mkdir mnt/d && echo frozen > mnt/d/f"
        ));
        init(vec![local(&tmp.path().join("repo"))], None).await;
        let mut ctx = RunContext::current();
        ctx.exec_env = exec_environment(std::env::vars());
        let a = FreezerAction::from_json(&format!(
            r#"{{"action":"backup","container":{},"backup_name":"real","path_to_backup":{},"snapshot":"True","lvm_snapsize":"100M"}}"#,
            serde_json::json!(tmp.path().join("repo")),
            serde_json::json!(tmp.path().join("mnt/d"))
        ))
        .unwrap();
        let r = run_action(&a, &ctx).await.unwrap();
        assert!(r.is_complete());
        let lvs = sh(&format!("lvs --noheadings -o lv_name {vg}"));
        assert_eq!(lvs.trim(), "data", "the snapshot volume is removed");
    });
    let out = futures::FutureExt::catch_unwind(result).await;
    sh(&cleanup);
    if let Err(p) = out {
        std::panic::resume_unwind(p);
    }
}
