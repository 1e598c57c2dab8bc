//! Mode `image` through the job API: a sparse raw image is read by its data extents only and
//! restores byte-identical with its holes (checked with `du` and `stat`); a second backup
//! with 1% of the image changed adds about 1%; a qcow2 image is read through the real
//! `qemu-img`; on btrfs, a second backup reads only what the file system says changed (and a
//! NOCOW image, or another file at the same path, is read whole); a loop device backs up and
//! restores; and something that is not an image, a
//! missing file, a missing `qemu-img` and a `qemu-img` that is killed each fail with a clear
//! error, leave no snapshot, no lock, and a repository that checks clean.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use freezer_core::engine::{BackupResult, CheckOptions, NoProgress, ReadData, check};
use freezer_core::job::{ActionOutcome, FreezerAction, RunContext, exec_environment, run_action};

use crate::support::*;

const MIB: u64 = 1 << 20;

fn ctx() -> RunContext {
    let mut c = RunContext::current();
    c.actor = actor();
    c.exec_env = exec_environment(std::env::vars());
    c
}

/// qemu-img must be there: the tests fail loudly, never skip (test.sh installs qemu-utils).
fn need_qemu_img() {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "qemu-img is missing: apt-get install qemu-utils (test.sh does)"
    );
}

struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        need_qemu_img();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("pass"), "pw\n").unwrap();
        let f = Fixture { tmp };
        init(vec![local(&f.repo())], Some("pw")).await;
        f
    }

    fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn action(&self, fields: &str) -> FreezerAction {
        FreezerAction::from_json(&format!(
            r#"{{"container":{},"backup_name":"vm","hostname":"test-host","encrypt_pass_file":{},{fields}}}"#,
            serde_json::json!(self.repo()),
            serde_json::json!(self.path("pass")),
        ))
        .unwrap()
    }

    async fn backup_with(&self, path: &Path, c: &RunContext) -> freezer_core::Result<BackupResult> {
        let a = self.action(&format!(
            r#""action":"backup","mode":"image","path_to_backup":{}"#,
            serde_json::json!(path)
        ));
        match run_action(&a, c).await? {
            ActionOutcome::Backup(b) => Ok(*b),
            other => panic!("{other:?}"),
        }
    }

    async fn backup(&self, path: &Path) -> freezer_core::Result<BackupResult> {
        self.backup_with(path, &ctx()).await
    }

    async fn restore(&self, to: &Path) {
        let a = self.action(&format!(
            r#""action":"restore","restore_abs_path":{}"#,
            serde_json::json!(to)
        ));
        match run_action(&a, &ctx()).await.unwrap() {
            ActionOutcome::Restore(r) => assert!(r.is_complete(), "{r:?}"),
            other => panic!("{other:?}"),
        }
    }

    async fn snapshots(&self) -> usize {
        let repo = open(&[&self.repo()], Some("pw")).await;
        repo.snapshots().await.unwrap().0.len()
    }

    async fn assert_checks_clean(&self) {
        let mut repo = open(&[&self.repo()], Some("pw")).await;
        let mut o = CheckOptions::new(actor());
        o.read_data = ReadData::All;
        let r = check(&mut repo, &o, Arc::new(NoProgress)).await.unwrap();
        assert!(r.is_ok(), "{:?}", r.damaged);
        assert!(!has_lock(&self.repo()), "no lock left behind");
    }
}

/// A sparse raw image of `size` bytes with random data at `extents` (offset, length).
fn sparse_image(path: &Path, size: u64, extents: &[(u64, u64)]) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (i, (off, len)) in extents.iter().enumerate() {
        f.write_all_at(&pseudo_random(*len as usize, 100 + i as u64), *off)
            .unwrap();
    }
    f.sync_all().unwrap();
}

/// `stat -c '%s %b %B'`: the size and the bytes allocated.
fn stat(path: &Path) -> (u64, u64) {
    let o = Command::new("stat")
        .args(["-c", "%s %b %B"])
        .arg(path)
        .output()
        .unwrap();
    let s = String::from_utf8(o.stdout).unwrap();
    let v: Vec<u64> = s.split_whitespace().map(|w| w.parse().unwrap()).collect();
    (v[0], v[1] * v[2])
}

/// `du -B1`: the bytes the file takes on disk.
fn du_bytes(path: &Path) -> u64 {
    let o = Command::new("du").arg("-B1").arg(path).output().unwrap();
    String::from_utf8(o.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn same_content(a: &Path, b: &Path) {
    let o = Command::new("cmp").arg(a).arg(b).output().unwrap();
    assert!(
        o.status.success(),
        "cmp {a:?} {b:?}: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sparse_raw_image_reads_only_its_data_and_restores_with_its_holes() {
    let f = Fixture::new().await;
    let img = f.path("disk.raw");
    let size = 128 * MIB;
    let data = [(0, 4 * MIB), (40 * MIB, MIB), (100 * MIB, 8 * MIB)];
    sparse_image(&img, size, &data);
    // A megabyte of written zeros: allocated, so read, but restored as a hole.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .write_all_at(&vec![0u8; MIB as usize], 60 * MIB)
        .unwrap();
    let b = f.backup(&img).await.unwrap();
    assert!(b.is_complete(), "{b:?}");
    let s = &b.snapshot;
    assert_eq!(s.mode, "image");
    assert_eq!(s.extra.get("image_format"), Some(&serde_json::json!("raw")));
    assert_eq!(
        s.extra.get("image_virtual_size"),
        Some(&serde_json::json!(size))
    );
    assert_eq!(s.stats.bytes, size);
    // Only the data extents are read: 13 MiB of data and the 1 MiB of zeros, not 128 MiB.
    assert_eq!(s.stats.bytes_read, 14 * MIB, "{:?}", s.stats);
    assert!(s.stats.bytes_added < 14 * MIB, "{:?}", s.stats);

    let out = f.path("restored.raw");
    f.restore(&out).await;
    same_content(&img, &out);
    let (src_size, _) = stat(&img);
    let (out_size, out_alloc) = stat(&out);
    assert_eq!(out_size, src_size, "stat: same size");
    // The holes are kept, and the written zeros became one: 13 MiB allocated, not 128.
    assert!(
        out_alloc <= 14 * MIB,
        "restored allocates {out_alloc} bytes"
    );
    assert!(
        du_bytes(&out) <= 14 * MIB && du_bytes(&out) >= 13 * MIB,
        "du {}",
        du_bytes(&out)
    );

    // Restoring again over an existing file replaces it whole.
    std::fs::write(&out, vec![7u8; 200 * MIB as usize]).unwrap();
    f.restore(&out).await;
    same_content(&img, &out);
    assert!(du_bytes(&out) <= 14 * MIB);
    f.assert_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_backup_with_one_percent_changed_adds_about_one_percent() {
    let f = Fixture::new().await;
    let img = f.path("disk.raw");
    let size = 256 * MIB;
    sparse_image(&img, size, &[(0, size)]);
    let first = f.backup(&img).await.unwrap();
    assert!(first.is_complete());
    let first_added = first.snapshot.stats.bytes_added;
    // 1% of the blocks, in two runs.
    let changed = size / 100;
    let file = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    file.write_all_at(&pseudo_random((changed / 2) as usize, 9), 50 * MIB)
        .unwrap();
    file.write_all_at(&pseudo_random((changed / 2) as usize, 10), 180 * MIB)
        .unwrap();
    drop(file);
    let second = f.backup(&img).await.unwrap();
    let st = &second.snapshot.stats;
    eprintln!(
        "image {size} B, {changed} B changed: first added {first_added} B, second read {} B, added {} B ({:.2}%)",
        st.bytes_read,
        st.bytes_added,
        st.bytes_added as f64 * 100.0 / size as f64
    );
    // Each run costs the ~1 MiB chunks it touches and those until the chunker meets the
    // parent's cuts again: 3-6% of this small image (where the cuts fall depends on the
    // repository's chunker key), against 100% without deduplication; 1.4-1.8% of a 4 GiB
    // image with 1% changed in 8 runs (docs/BENCHMARKS.md).
    assert!(
        st.bytes_added < size * 8 / 100,
        "1% changed added {} bytes of {size}",
        st.bytes_added
    );
    assert_eq!(f.snapshots().await, 2);
    let out = f.path("restored.raw");
    f.restore(&out).await;
    same_content(&img, &out);
    f.assert_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_qcow2_image_is_read_through_qemu_img_and_restores_as_raw_with_holes() {
    let f = Fixture::new().await;
    let raw = f.path("base.raw");
    let size = 64 * MIB;
    sparse_image(&raw, size, &[(MIB, 2 * MIB), (30 * MIB, 3 * MIB)]);
    let q = f.path("disk.qcow2");
    let o = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let b = f.backup(&q).await.unwrap();
    assert!(b.is_complete(), "{b:?}");
    let s = &b.snapshot;
    assert_eq!(
        s.extra.get("image_format"),
        Some(&serde_json::json!("qcow2"))
    );
    assert_eq!(
        s.extra.get("image_virtual_size"),
        Some(&serde_json::json!(size))
    );
    assert_eq!(s.stats.bytes, size);
    // Only the allocated data (qemu-img convert allocates the first block of its output).
    assert!(
        (5 * MIB..=5 * MIB + 64 * 1024).contains(&s.stats.bytes_read),
        "only the allocated data: {:?}",
        s.stats
    );
    let out = f.path("restored.raw");
    f.restore(&out).await;
    same_content(&raw, &out);
    assert_eq!(stat(&out).0, size);
    assert!(du_bytes(&out) <= 5 * MIB);
    f.assert_checks_clean().await;
}

/// A loop device over a file, detached when dropped.
struct Loop(String);

impl Loop {
    fn new(file: &Path) -> Loop {
        let o = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .unwrap();
        assert!(o.status.success(), "losetup: {o:?}");
        Loop(String::from_utf8(o.stdout).unwrap().trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_device_backs_up_and_restores_to_a_device_without_truncation() {
    let f = Fixture::new().await;
    let src_file = f.path("src.img");
    sparse_image(&src_file, 16 * MIB, &[(0, MIB), (8 * MIB, 2 * MIB)]);
    let src = Loop::new(&src_file);
    let b = f.backup(Path::new(&src.0)).await.unwrap();
    assert!(b.is_complete(), "{b:?}");
    assert_eq!(b.snapshot.stats.bytes, 16 * MIB);
    assert_eq!(
        b.snapshot.stats.bytes_read,
        16 * MIB,
        "a device is read whole"
    );
    // A larger device, full of old data: the image is written over its start, zeros too,
    // and the rest is left as it was.
    let dst_file = f.path("dst.img");
    std::fs::write(&dst_file, vec![0xAAu8; 20 * MIB as usize]).unwrap();
    let dst = Loop::new(&dst_file);
    f.restore(Path::new(&dst.0)).await;
    drop(dst);
    drop(src);
    let got = std::fs::read(&dst_file).unwrap();
    assert_eq!(got.len() as u64, 20 * MIB, "not truncated");
    assert_eq!(
        &got[..16 * MIB as usize],
        &std::fs::read(&src_file).unwrap()[..]
    );
    assert!(got[16 * MIB as usize..].iter().all(|b| *b == 0xAA));
    // A device smaller than the image is refused before anything is written.
    let small_file = f.path("small.img");
    std::fs::write(&small_file, vec![0x55u8; 8 * MIB as usize]).unwrap();
    let small = Loop::new(&small_file);
    let a = f.action(&format!(
        r#""action":"restore","restore_abs_path":{}"#,
        serde_json::json!(small.0)
    ));
    let e = run_action(&a, &ctx()).await.unwrap_err();
    assert!(e.to_string().contains("too small"), "{e}");
    drop(small);
    assert!(
        std::fs::read(&small_file)
            .unwrap()
            .iter()
            .all(|b| *b == 0x55)
    );
    f.assert_checks_clean().await;
}

/// A btrfs file system in a loop-mounted file, in its own temporary folder; unmounted when
/// dropped. btrfs-progs and root are needed: the tests fail loudly without them (test.sh
/// installs btrfs-progs; CI runs as root).
struct Btrfs {
    dir: tempfile::TempDir,
}

impl Btrfs {
    fn new() -> Btrfs {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("fs.img");
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let o = Command::new("mkfs.btrfs").arg("-q").arg(&backing).output();
        assert!(
            o.as_ref().is_ok_and(|o| o.status.success()),
            "mkfs.btrfs (apt-get install btrfs-progs; test.sh does): {o:?}"
        );
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let o = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&backing)
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mounting a btrfs file needs root and loop devices: {o:?}"
        );
        Btrfs { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join("mnt").join(p)
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let mnt = self.dir.path().join("mnt");
        let ok = Command::new("umount")
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&mnt).status();
        }
    }
}

fn punch_hole(path: &Path, offset: u64, len: u64) {
    let o = Command::new("fallocate")
        .args(["-p", "-o", &offset.to_string(), "-l", &len.to_string()])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "fallocate -p: {o:?}");
}

fn overwrite(path: &Path, at: &[(u64, u64)], seed: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    for (i, (off, len)) in at.iter().enumerate() {
        file.write_all_at(&pseudo_random(*len as usize, seed + i as u64), *off)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_btrfs_a_second_backup_reads_only_what_changed() {
    let f = Fixture::new().await;
    let fs = Btrfs::new();
    let img = fs.path("disk.raw");
    let size = 256 * MIB;
    sparse_image(&img, size, &[(0, size)]);
    // An older image, to be copied over this one later.
    let older = fs.path("older.raw");
    sparse_image(&older, size, &[]);
    overwrite(&older, &[(0, size)], 77);
    let first = f.backup(&img).await.unwrap();
    let st = &first.snapshot.stats;
    assert_eq!(st.bytes_read, size, "the first backup reads it all");
    let marker = first.snapshot.extra.get("image_changes");
    assert!(
        marker
            .and_then(|m| m.pointer("/btrfs/generation"))
            .is_some(),
        "{:?}",
        first.snapshot.extra
    );

    // 1% of the image written, in two runs, and 4 MiB punched out.
    let changed = size / 100;
    overwrite(
        &img,
        &[(50 * MIB, changed / 2), (180 * MIB + 12345, changed / 2)],
        20,
    );
    punch_hole(&img, 100 * MIB, 4 * MIB);
    let second = f.backup(&img).await.unwrap();
    assert!(second.is_complete(), "{second:?}");
    let st = &second.snapshot.stats;
    eprintln!(
        "btrfs image {size} B, {changed} B changed and 4 MiB punched: second backup read {} B ({:.2}%), added {} B ({:.2}%)",
        st.bytes_read,
        st.bytes_read as f64 * 100.0 / size as f64,
        st.bytes_added,
        st.bytes_added as f64 * 100.0 / size as f64
    );
    assert!(
        st.bytes_read >= changed,
        "what changed is read: {}",
        st.bytes_read
    );
    // Each changed run and each edge of the hole costs the chunks around it
    // (1 MiB on average) until the chunker meets the parent's cuts again:
    // 3-7% here, against the whole image without change tracking.
    assert!(
        st.bytes_read < size / 5,
        "far less than the image is read: {} of {size}",
        st.bytes_read
    );
    assert!(st.bytes_added < size / 5, "{st:?}");
    assert_eq!(st.bytes, size);
    let out = f.path("restored.raw");
    f.restore(&out).await;
    same_content(&img, &out);
    assert_eq!(stat(&out).0, size);
    // The file system may spend a block or two on its extent tree.
    assert!(
        du_bytes(&out) <= size - 3 * MIB,
        "the punched hole is a hole: {}",
        du_bytes(&out)
    );

    // Nothing written since: nothing read.
    let third = f.backup(&img).await.unwrap();
    assert_eq!(
        third.snapshot.stats.bytes_read, 0,
        "{:?}",
        third.snapshot.stats
    );
    f.restore(&out).await;
    same_content(&img, &out);

    // The older image copied over it: coreutils clones on btrfs, the inode stays and the
    // cloned extents keep their old generation (find-new lists none of them); the block
    // map moved, so it is read whole.
    let inode = std::fs::metadata(&img).unwrap().ino();
    let o = Command::new("cp")
        .arg("--reflink=always")
        .arg(&older)
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "cp --reflink: {o:?}");
    assert_eq!(std::fs::metadata(&img).unwrap().ino(), inode);
    let cloned = f.backup(&img).await.unwrap();
    assert!(
        cloned.snapshot.stats.bytes_read >= size,
        "read whole: {:?}",
        cloned.snapshot.stats
    );
    f.restore(&out).await;
    same_content(&older, &out);

    // Another file at that path (a new inode, not what the marker names): read whole.
    let copy = fs.path("disk.copy");
    std::fs::copy(&img, &copy).unwrap();
    std::fs::rename(&copy, &img).unwrap();
    let fourth = f.backup(&img).await.unwrap();
    assert!(
        fourth.snapshot.stats.bytes_read >= size - 4 * MIB,
        "read whole: {:?}",
        fourth.snapshot.stats
    );
    assert!(
        fourth.snapshot.stats.bytes_added < MIB,
        "{:?}",
        fourth.snapshot.stats
    );
    f.restore(&out).await;
    same_content(&img, &out);
    assert_eq!(f.snapshots().await, 5);
    f.assert_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_btrfs_a_nocow_image_is_read_whole_every_time() {
    let f = Fixture::new().await;
    let fs = Btrfs::new();
    let img = fs.path("nocow.raw");
    // NOCOW takes effect on an empty file: written in place, btrfs records no new extents.
    std::fs::File::create(&img).unwrap();
    let o = Command::new("chattr").arg("+C").arg(&img).output().unwrap();
    assert!(o.status.success(), "chattr +C: {o:?}");
    let size = 32 * MIB;
    sparse_image(&img, size, &[(0, size)]);
    let first = f.backup(&img).await.unwrap();
    assert!(
        !first.snapshot.extra.contains_key("image_changes"),
        "{:?}",
        first.snapshot.extra
    );
    overwrite(&img, &[(5 * MIB, 100_000)], 30);
    let second = f.backup(&img).await.unwrap();
    assert_eq!(second.snapshot.stats.bytes_read, size, "read whole");
    let out = f.path("restored.raw");
    f.restore(&out).await;
    same_content(&img, &out);
    f.assert_checks_clean().await;
}

/// Each bad case fails naming its cause, and leaves no snapshot and a clean repository.
async fn refused(f: &Fixture, path: &Path, c: &RunContext, want: &str) {
    let e = f.backup_with(path, c).await.unwrap_err();
    assert!(e.to_string().contains(want), "{path:?}: {e}");
    assert_eq!(f.snapshots().await, 0, "{path:?}: no snapshot");
    f.assert_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_not_an_image_or_cannot_be_read_fails_clearly_and_leaves_no_snapshot() {
    let f = Fixture::new().await;
    // A qcow2 whose header is damaged.
    let bad = f.path("bad.qcow2");
    let mut head = b"QFI\xfb\x00\x00\x00\x03".to_vec();
    head.extend(pseudo_random(4096, 3));
    std::fs::write(&bad, &head).unwrap();
    refused(&f, &bad, &ctx(), "not an image").await;
    // A folder, an empty file, a missing file.
    std::fs::create_dir(f.path("dir")).unwrap();
    refused(&f, &f.path("dir"), &ctx(), "is a folder, not an image").await;
    std::fs::write(f.path("empty"), b"").unwrap();
    refused(&f, &f.path("empty"), &ctx(), "is empty, not an image").await;
    refused(&f, &f.path("nothing.raw"), &ctx(), "nothing.raw").await;
    let e = f.backup(&f.path("nothing.raw")).await.unwrap_err();
    assert_eq!(e.kind(), freezer_core::ErrorKind::NotFound, "{e}");

    // An image with a backing file (the backing file would be read too): refused.
    let o = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(f.path("empty"))
        .arg(f.path("overlay.qcow2"))
        .arg("1M")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    refused(&f, &f.path("overlay.qcow2"), &ctx(), "has a backing file").await;

    // qemu-img missing from PATH.
    let img = f.path("disk.qcow2");
    let o = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("16M")
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut c = ctx();
    c.exec_env
        .insert("PATH".into(), f.path("no-bin").display().to_string());
    refused(&f, &img, &c, "needs qemu-img, which was not found").await;

    // qemu-img killed while it converts: a wrapper that runs the real one for `info` and
    // dies by SIGKILL on `convert`.
    let bin = f.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v qemu-img"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = convert ]; then kill -9 $$; fi\nexec {} \"$@\"\n",
        real.trim()
    );
    std::fs::write(bin.join("qemu-img"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("qemu-img"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = ctx();
    c.exec_env
        .insert("PATH".into(), format!("{}:/usr/bin:/bin", bin.display()));
    refused(&f, &img, &c, "killed by signal 9").await;
}
