//! Restores of archives made by the real GNU tar (`--listed-incremental`, as upstream makes
//! them, §3.1) and of hand-made hostile archives.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::sink::{LocalSink, Payload, PutMode};
use crate::upstream::layout::{Compression, TarMetadata};
use crate::upstream::openssl::Encrypt;

const NAME: &str = "host_web";

fn gnu_tar() -> &'static str {
    let ok = Command::new("tar")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar"))
        .unwrap_or(false);
    assert!(ok, "GNU tar is needed by these tests (Debian package tar)");
    "tar"
}

/// `tar --create` with upstream's flags; returns the uncompressed archive.
fn gnu_level(src: &Path, snar: &Path) -> Vec<u8> {
    let out = Command::new(gnu_tar())
        .current_dir(src)
        .args([
            "--create",
            "--warning=none",
            "--no-check-device",
            "--one-file-system",
            "--preserve-permissions",
            "--same-owner",
            "--seek",
            "--ignore-failed-read",
        ])
        .arg(format!("--listed-incremental={}", snar.display()))
        .arg(".")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    let prog = match c {
        Compression::Gzip => "gzip",
        Compression::Bzip2 => "bzip2",
        Compression::Xz => "xz",
        Compression::Zstd => return zstd::encode_all(data, 3).unwrap(),
    };
    let mut child = Command::new(prog)
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{prog} is needed by these tests: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let d = data.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&d));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

struct Store {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    sink: Arc<dyn Sink>,
}

fn store() -> Store {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("storage");
    std::fs::create_dir(&root).unwrap();
    Store {
        sink: Arc::new(LocalSink::new(&root)),
        root,
        _tmp: tmp,
    }
}

async fn put_level(
    s: &Store,
    t0: i64,
    level: u32,
    t: i64,
    c: Compression,
    pass: Option<&[u8]>,
    archive: &[u8],
) -> TarBackup {
    let mut data = compress(archive, c);
    if let Some(p) = pass {
        let mut w = Encrypt::new(Vec::new(), p).unwrap();
        w.write_all(&data).unwrap();
        data = w.finish().unwrap();
    }
    let b = TarBackup {
        name: NAME.into(),
        t0,
        level,
        t,
        metadata: TarMetadata {
            engine_name: "tar".into(),
            compression: c,
            encryption: pass.is_some(),
        },
    };
    s.sink
        .put(&b.data_key(), Payload::from(data), PutMode::Overwrite)
        .await
        .unwrap();
    s.sink
        .put(
            &b.metadata_key(),
            Payload::from(b.metadata.to_line().into_bytes()),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    b
}

/// Path → (kind, mode, size, content or target, mtime for non-dirs).
type Tree = BTreeMap<String, (char, u32, Vec<u8>, i64)>;

fn tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(
                    rel,
                    ('l', 0, t.into_os_string().into_encoded_bytes(), m.mtime()),
                );
            } else if m.is_dir() {
                out.insert(rel, ('d', mode, Vec::new(), m.mtime()));
                walk(root, &p, out);
            } else {
                out.insert(rel, ('f', mode, std::fs::read(&p).unwrap(), m.mtime()));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

fn assert_same(src: &Path, got: &Path) {
    let a = tree(src);
    let b = tree(got);
    let keys_a: Vec<_> = a.keys().collect();
    let keys_b: Vec<_> = b.keys().collect();
    assert_eq!(keys_a, keys_b, "the same names");
    for (k, va) in &a {
        let vb = &b[k];
        assert_eq!(va.0, vb.0, "{k}: kind");
        assert_eq!(va.1, vb.1, "{k}: mode");
        assert!(va.2 == vb.2, "{k}: content or target");
        assert_eq!(va.3, vb.3, "{k}: mtime");
    }
    let m = |p: &Path| std::fs::metadata(p).unwrap();
    assert_eq!(
        m(src).permissions().mode() & 0o7777,
        m(got).permissions().mode() & 0o7777,
        "root mode"
    );
    assert_eq!(m(src).mtime(), m(got).mtime(), "root mtime");
}

fn write(p: &Path, data: &[u8], mode: u32, mtime: i64) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(p);
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(p, mtime);
}

fn set_mtime(p: &Path, t: i64) {
    let f = std::fs::File::open(p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t as u64))
        .unwrap();
}

fn big(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32) as u8
        })
        .collect()
}

/// Level 0 of the source tree used by most tests.
fn tree0(src: &Path) {
    write(&src.join("a.txt"), b"alpha\n", 0o644, 1_000_000_000);
    write(&src.join("big.bin"), &big(3 << 20, 1), 0o600, 1_000_000_001);
    write(&src.join("dir1/b.txt"), b"bravo\n", 0o644, 1_000_000_002);
    write(
        &src.join("dir1/sub/c.txt"),
        b"charlie\n",
        0o4755,
        1_000_000_003,
    );
    write(&src.join("deldir/y/z.txt"), b"zulu\n", 0o644, 1_000_000_004);
    write(&src.join("del.txt"), b"to delete\n", 0o644, 1_000_000_005);
    write(
        &src.join("swap"),
        b"a file, then a symlink\n",
        0o644,
        1_000_000_006,
    );
    let long = format!("{}/{}.txt", "l".repeat(120), "n".repeat(130));
    write(&src.join(long), b"long name\n", 0o644, 1_000_000_007);
    std::os::unix::fs::symlink("a.txt", src.join("link_rel")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();
    std::fs::hard_link(src.join("a.txt"), src.join("hard_a.txt")).unwrap();
    std::fs::create_dir(src.join("sticky")).unwrap();
    std::fs::set_permissions(src.join("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::create_dir(src.join("empty")).unwrap();
}

/// The edits of levels 1, 2 and 3.
fn edit(src: &Path, level: u32) {
    match level {
        1 => {
            std::fs::OpenOptions::new()
                .append(true)
                .open(src.join("a.txt"))
                .unwrap()
                .write_all(b"more\n")
                .unwrap();
            std::fs::remove_file(src.join("del.txt")).unwrap();
            write(&src.join("new1.txt"), b"new\n", 0o640, 1_100_000_000);
            write(&src.join("big.bin"), &big(2 << 20, 7), 0o600, 900_000_000);
        }
        2 => {
            std::fs::remove_dir_all(src.join("deldir")).unwrap();
            std::fs::remove_file(src.join("swap")).unwrap();
            std::os::unix::fs::symlink("dir1", src.join("swap")).unwrap();
            std::fs::remove_file(src.join("link_rel")).unwrap();
            std::os::unix::fs::symlink("new1.txt", src.join("link_rel")).unwrap();
            write(
                &src.join("newdir/deeper/m.txt"),
                b"m\n",
                0o604,
                1_200_000_000,
            );
        }
        3 => {
            std::fs::rename(src.join("dir1/sub"), src.join("dir1/sub2")).unwrap();
            std::fs::remove_file(src.join("new1.txt")).unwrap();
            write(
                &src.join("empty/now.txt"),
                b"not empty\n",
                0o644,
                1_300_000_000,
            );
        }
        _ => unreachable!(),
    }
}

/// Makes a 4-level chain with GNU tar; restores each prefix with `restore_from_date` and
/// compares with the source as it was.
async fn chain_round_trip(c: Compression, pass: Option<&[u8]>) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    tree0(&src);
    let snar = tmp.path().join("snar");
    let s = store();
    let mut copies = Vec::new();
    for level in 0..4u32 {
        if level > 0 {
            // GNU tar's change detection has one-second resolution on ctime.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            edit(&src, level);
        }
        set_mtime(&src, 1_500_000_000 + level as i64);
        let archive = gnu_level(&src, &snar);
        put_level(&s, 1000, level, 1000 + level as i64 * 10, c, pass, &archive).await;
        // Keep the tree as it was at this level.
        let copy = tmp.path().join(format!("copy{level}"));
        let st = Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success());
        copies.push(copy);
    }
    for level in 0..4u32 {
        let dest = tmp.path().join(format!("restore{level}"));
        let mut o = TarRestoreOptions::new(&dest);
        o.restore_from_date = Some(Timestamp::from_second(1000 + level as i64 * 10 + 5).unwrap());
        o.passphrase = pass.map(|p| p.to_vec());
        let r = restore(s.sink.clone(), NAME, &o).await.unwrap();
        assert_eq!(r.levels.len(), level as usize + 1);
        assert_same(&copies[level as usize], &dest);
        if level == 3 {
            assert_eq!(r.levels[3].stats.renamed, 1, "dir1/sub -> dir1/sub2");
            assert!(r.totals.removed >= 3, "{:?}", r.totals);
            // The hard link is one inode.
            let a = std::fs::metadata(dest.join("a.txt")).unwrap();
            let h = std::fs::metadata(dest.join("hard_a.txt")).unwrap();
            assert_eq!(a.ino(), h.ino());
        }
    }
    let _ = &s.root;
}

#[tokio::test(flavor = "multi_thread")]
async fn gnu_tar_chains_restore_in_every_compression() {
    for c in [
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Xz,
        Compression::Zstd,
    ] {
        chain_round_trip(c, None).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_chains_restore_and_keys_are_checked() {
    chain_round_trip(Compression::Gzip, Some(b"fixture pass phrase")).await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    tree0(&src);
    let archive = gnu_level(&src, &tmp.path().join("snar"));
    let s = store();
    let b = put_level(&s, 10, 0, 10, Compression::Xz, Some(b"right"), &archive).await;
    // No passphrase: refused before anything is written.
    let dest = tmp.path().join("r1");
    let e = restore(s.sink.clone(), NAME, &TarRestoreOptions::new(&dest))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey);
    assert!(e.to_string().contains(&b.data_key()), "{e}");
    assert!(!dest.exists());
    // A wrong one: named, with the data key.
    let mut o = TarRestoreOptions::new(&dest);
    o.passphrase = Some(b"wrong".to_vec());
    let e = restore(s.sink.clone(), NAME, &o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey);
    let msg = e.to_string();
    assert!(
        msg.contains("wrong passphrase or unsupported key derivation"),
        "{msg}"
    );
    assert!(
        msg.contains(&b.data_key()) && !msg.contains("wrong\""),
        "{msg}"
    );
    // An unencrypted backup given a passphrase restores (upstream fails, §10.3).
    let s2 = store();
    put_level(&s2, 10, 0, 10, Compression::Gzip, None, &archive).await;
    let dest2 = tmp.path().join("r2");
    let mut o = TarRestoreOptions::new(&dest2);
    o.passphrase = Some(b"unused".to_vec());
    restore(s2.sink.clone(), NAME, &o).await.unwrap();
    assert_same(&src, &dest2);
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_member_streams_read() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    tree0(&src);
    let archive = gnu_level(&src, &tmp.path().join("snar"));
    for c in [
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Xz,
        Compression::Zstd,
    ] {
        // Two members/streams back to back, split inside a file's data (pigz, pxz, cat).
        let cut = archive.len() / 2 + 123;
        let mut data = compress(&archive[..cut], c);
        data.extend(compress(&archive[cut..], c));
        let s = store();
        let b = put_level(&s, 10, 0, 10, c, None, b"").await;
        s.sink
            .put(&b.data_key(), Payload::from(data), PutMode::Overwrite)
            .await
            .unwrap();
        let dest = tmp.path().join(format!("r-{c}"));
        restore(s.sink.clone(), NAME, &TarRestoreOptions::new(&dest))
            .await
            .unwrap_or_else(|e| panic!("{c}: {e}"));
        assert_same(&src, &dest);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_and_missing_objects_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    tree0(&src);
    let archive = gnu_level(&src, &tmp.path().join("snar"));
    for c in [
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Xz,
        Compression::Zstd,
    ] {
        let s = store();
        let b = put_level(&s, 10, 0, 10, c, None, &archive).await;
        let full = std::fs::read(s.root.join(b.data_key())).unwrap();
        std::fs::write(s.root.join(b.data_key()), &full[..full.len() / 2]).unwrap();
        let e = restore(
            s.sink.clone(),
            NAME,
            &TarRestoreOptions::new(tmp.path().join(format!("t-{c}"))),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{c}: {e}");
        assert!(e.to_string().contains(&b.data_key()), "{c}: {e}");
        std::fs::remove_file(s.root.join(b.data_key())).unwrap();
        let e = restore(
            s.sink.clone(),
            NAME,
            &TarRestoreOptions::new(tmp.path().join(format!("m-{c}"))),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{c}: {e}");
        assert!(e.to_string().contains(&b.data_key()), "{c}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_empty_restore_dir_needs_overwrite_and_is_purged_as_gnu_tar_does() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    tree0(&src);
    let archive = gnu_level(&src, &tmp.path().join("snar"));
    let s = store();
    put_level(&s, 10, 0, 10, Compression::Gzip, None, &archive).await;
    let dest = tmp.path().join("dest");
    std::fs::create_dir_all(dest.join("zzz")).unwrap();
    std::fs::write(dest.join("extra.txt"), b"x").unwrap();
    let e = restore(s.sink.clone(), NAME, &TarRestoreOptions::new(&dest))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Restore dir is not empty"), "{e}");
    assert!(dest.join("extra.txt").exists());
    let mut o = TarRestoreOptions::new(&dest);
    o.overwrite = true;
    let r = restore(s.sink.clone(), NAME, &o).await.unwrap();
    assert_eq!(r.totals.removed, 2);
    assert_same(&src, &dest);
}

// ------------------------------------------------------------------ hostile archives

/// A GNU header with a raw name (the tar crate's setters refuse hostile names).
fn raw_member(b: &mut ::tar::Builder<Vec<u8>>, name: &[u8], kind: u8, link: &[u8], data: &[u8]) {
    let mut h = ::tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name);
        g.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(::tar::EntryType::new(kind));
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// A member: name, type, link target, data.
type Member<'a> = (&'a [u8], u8, &'a [u8], &'a [u8]);

async fn restore_hostile(members: &[Member<'_>]) -> (tempfile::TempDir, Error) {
    let mut b = ::tar::Builder::new(Vec::new());
    for (name, kind, link, data) in members {
        raw_member(&mut b, name, *kind, link, data);
    }
    let archive = b.into_inner().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("outside")).unwrap();
    let s = store();
    put_level(&s, 10, 0, 10, Compression::Gzip, None, &archive).await;
    let dest = tmp.path().join("dest");
    let e = restore(s.sink.clone(), NAME, &TarRestoreOptions::new(&dest))
        .await
        .unwrap_err();
    let outside: Vec<_> = std::fs::read_dir(tmp.path().join("outside"))
        .unwrap()
        .collect();
    assert!(outside.is_empty(), "something was written outside: {e}");
    assert!(!tmp.path().join("evil").exists(), "{e}");
    (tmp, e)
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_members_are_refused_and_named() {
    let cases: Vec<(&str, Vec<Member<'_>>, &str)> = vec![
        (
            "absolute",
            vec![(b"/tmp/evil-freezer-test", b'0', b"", b"x")],
            "/tmp/evil-freezer-test",
        ),
        (
            "dotdot",
            vec![(b"./a/../../evil", b'0', b"", b"x")],
            "../../evil",
        ),
        (
            "through a symlink",
            vec![
                (b"./lnk", b'2', b"../outside", b""),
                (b"./lnk/evil", b'0', b"", b"x"),
            ],
            "lnk/evil",
        ),
        (
            "dumpdir entry with a slash",
            vec![(b"./", b'D', b"", b"Ya/b\0\0")],
            "a/b",
        ),
        (
            "dumpdir entry dotdot",
            vec![(b"./", b'D', b"", b"N..\0\0")],
            "..",
        ),
        (
            "rename out",
            vec![
                (b"./", b'D', b"", b"Dx\0\0"),
                (b"./x/", b'D', b"", b"\0"),
                (b"./y/", b'D', b"", b"R./x\0T../outside/x\0\0"),
            ],
            "./y/",
        ),
        (
            "rename from outside",
            vec![(b"./", b'D', b"", b"R/etc\0T./etc\0\0")],
            "./",
        ),
        (
            "hard link out",
            vec![(b"./h", b'1', b"../outside/f", b"")],
            "./h",
        ),
    ];
    for (what, members, named) in cases {
        let (_tmp, e) = restore_hostile(&members).await;
        let msg = e.to_string();
        assert!(msg.contains(named), "{what}: {msg}");
        assert!(
            msg.contains("data/tar/host_web/10/0_10/data"),
            "{what}: {msg}"
        );
        assert!(
            matches!(e.kind(), ErrorKind::Corrupt),
            "{what}: {:?} {msg}",
            e.kind()
        );
    }
}

#[test]
fn member_names_are_normalised_or_refused() {
    use super::extract::check_name_for_tests as c;
    assert_eq!(c(b"./").unwrap(), b"");
    assert_eq!(c(b"./a//b/./c/").unwrap(), b"a/b/c");
    assert_eq!(c(b"onefile").unwrap(), b"onefile");
    assert!(c(b"/etc/passwd").is_err());
    assert!(c(b"a/../b").is_err());
    assert!(c(b"..").is_err());
}
