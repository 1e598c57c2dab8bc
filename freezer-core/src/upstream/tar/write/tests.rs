use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::{Command, Stdio};

use super::*;
use crate::upstream::tar::snar::decode_dumpdir;

/// One member of an archive, long names folded in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    name: String,
    kind: u8,
    mode: u32,
    size: u64,
    link: String,
    data: Vec<u8>,
    owner: (u64, u64, String, String),
    mtime: u64,
}

fn members(archive: &[u8]) -> Vec<Member> {
    assert_eq!(archive.len() % 10240, 0, "padded to whole records");
    let mut a = tar::Archive::new(archive);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Member {
            name: String::from_utf8(e.path_bytes().to_vec()).unwrap(),
            kind: h.entry_type().as_byte(),
            mode: h.mode().unwrap(),
            size: h.size().unwrap(),
            link: e
                .link_name_bytes()
                .map(|l| String::from_utf8(l.to_vec()).unwrap())
                .unwrap_or_default(),
            data,
            owner: (
                h.uid().unwrap(),
                h.gid().unwrap(),
                String::from_utf8_lossy(h.username_bytes().unwrap_or_default()).into(),
                String::from_utf8_lossy(h.groupname_bytes().unwrap_or_default()).into(),
            ),
            mtime: h.mtime().unwrap(),
        });
    }
    out
}

fn dumpdir(m: &Member) -> Vec<String> {
    assert_eq!(m.kind, b'D', "{}", m.name);
    decode_dumpdir(&m.data)
        .unwrap()
        .into_iter()
        .map(|e| format!("{}{}", e.code as char, String::from_utf8(e.name).unwrap()))
        .collect()
}

fn level(
    src: &Path,
    parent: Option<&[u8]>,
    opts: &TarWriteOptions,
) -> (Vec<Member>, TarWriteReport) {
    let mut out = Vec::new();
    let r = write_archive(src, parent, opts, &mut out).unwrap();
    (members(&out), r)
}

fn names(ms: &[Member]) -> Vec<String> {
    ms.iter()
        .map(|m| format!("{} {}", m.kind as char, m.name))
        .collect()
}

fn tick() {
    // The next level's changes must be newer than the snapshot's start (nanoseconds).
    std::thread::sleep(std::time::Duration::from_millis(30));
}

fn tree(root: &Path) {
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::create_dir_all(root.join("gone/inner")).unwrap();
    fs::create_dir_all(root.join("a-b")).unwrap();
    fs::write(root.join("a.txt"), "alpha").unwrap();
    fs::write(root.join("del.txt"), "to delete").unwrap();
    fs::write(root.join("dir/b.txt"), "beta").unwrap();
    fs::write(root.join("dir/sub/c.txt"), "gamma").unwrap();
    fs::write(root.join("gone/inner/x"), "x").unwrap();
    fs::write(root.join("a-b/y"), "y").unwrap();
    symlink("a.txt", root.join("link")).unwrap();
    tick();
}

#[test]
fn level_zero_lists_every_directory_first_then_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let (ms, r) = level(&src, None, &TarWriteOptions::default());
    assert_eq!(
        names(&ms),
        [
            "D ./",
            "D ./a-b/",
            "D ./dir/",
            "D ./dir/sub/",
            "D ./gone/",
            "D ./gone/inner/",
            "0 ./a.txt",
            "0 ./del.txt",
            "2 ./link",
            "0 ./a-b/y",
            "0 ./dir/b.txt",
            "0 ./dir/sub/c.txt",
            "0 ./gone/inner/x",
        ]
    );
    assert_eq!(
        dumpdir(&ms[0]),
        ["Da-b", "Ya.txt", "Ydel.txt", "Ddir", "Dgone", "Ylink"]
    );
    assert_eq!(ms[8].link, "a.txt");
    assert_eq!(ms[6].data, b"alpha");
    assert_eq!(
        (r.files, r.directories, r.bytes),
        (7, 6, 5 + 9 + 1 + 4 + 5 + 1)
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let snap = Snapshot::parse(&r.snapshot).unwrap().unwrap();
    let root = snap.dirs.iter().find(|d| d.name == b".").unwrap();
    assert_eq!(root.entries.len(), 6);
    assert_eq!(snap.dirs.len(), 6);
}

#[test]
fn level_one_dumps_changes_and_lists_deletions_by_absence() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    // An old mtime on a file that is not touched: still unchanged at level 1.
    let (_, r0) = level(&src, None, &TarWriteOptions::default());
    tick();
    fs::remove_file(src.join("del.txt")).unwrap();
    fs::remove_dir_all(src.join("gone")).unwrap();
    fs::write(src.join("dir/new.txt"), "new").unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(src.join("a.txt"))
        .unwrap()
        .write_all(b"+")
        .unwrap();
    // chmod only: ctime changes.
    fs::set_permissions(src.join("dir/b.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(src.join("dir/fresh")).unwrap();
    fs::write(src.join("dir/fresh/f"), "f").unwrap();
    // Out of the start time's margin, so that level 2 sees them as older.
    tick();
    let (ms, r1) = level(&src, Some(&r0.snapshot), &TarWriteOptions::default());
    assert_eq!(
        names(&ms),
        [
            "D ./",
            "D ./a-b/",
            "D ./dir/",
            "D ./dir/fresh/",
            "D ./dir/sub/",
            "0 ./a.txt",
            "0 ./dir/b.txt",
            "0 ./dir/new.txt",
            "0 ./dir/fresh/f",
        ]
    );
    assert_eq!(dumpdir(&ms[0]), ["Da-b", "Ya.txt", "Ddir", "Nlink"]);
    assert_eq!(dumpdir(&ms[2]), ["Yb.txt", "Dfresh", "Ynew.txt", "Dsub"]);
    assert_eq!(dumpdir(&ms[3]), ["Yf"]);
    assert_eq!(dumpdir(&ms[4]), ["Nc.txt"]);
    assert_eq!(ms[6].mode, 0o600);
    // Level 2 with nothing changed: only directories.
    tick();
    let (ms, _) = level(&src, Some(&r1.snapshot), &TarWriteOptions::default());
    assert!(ms.iter().all(|m| m.kind == b'D'), "{:?}", names(&ms));
}

#[test]
fn a_directory_replaced_under_the_same_name_is_dumped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let (_, r0) = level(&src, None, &TarWriteOptions::default());
    tick();
    // dir/sub renamed away and another folder made under its name: a new inode.
    fs::rename(src.join("dir/sub"), src.join("dir/sub2")).unwrap();
    fs::create_dir(src.join("dir/sub")).unwrap();
    let (ms, _) = level(&src, Some(&r0.snapshot), &TarWriteOptions::default());
    let ns = names(&ms);
    // The renamed one is new by name: dumped whole (rename = delete + new).
    assert!(ns.contains(&"0 ./dir/sub2/c.txt".to_string()), "{ns:?}");
    let sub = ms.iter().find(|m| m.name == "./dir/sub/").unwrap();
    assert!(dumpdir(sub).is_empty());
}

#[test]
fn excludes_are_listed_unchanged_and_not_descended() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    fs::write(src.join("dir/skip.log"), "log").unwrap();
    let opts = TarWriteOptions {
        exclude: vec!["*.log".into(), "gone".into(), "dir/sub".into()],
        ..Default::default()
    };
    let (ms, _) = level(&src, None, &opts);
    let ns = names(&ms);
    assert!(
        !ns.iter()
            .any(|n| n.contains("skip.log") || n.contains("gone") || n.contains("sub")),
        "{ns:?}"
    );
    assert_eq!(
        dumpdir(&ms[0]),
        ["Da-b", "Ya.txt", "Ydel.txt", "Ddir", "Ngone", "Ylink"]
    );
    let d = ms.iter().find(|m| m.name == "./dir/").unwrap();
    assert_eq!(dumpdir(d), ["Yb.txt", "Nskip.log", "Nsub"]);
    let e = write_archive(
        &src,
        None,
        &TarWriteOptions {
            exclude: vec!["[".into()],
            ..Default::default()
        },
        Vec::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("exclude"), "{e}");
}

#[test]
fn hard_links_point_to_the_first_member_unless_dereferenced() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/orig"), "shared").unwrap();
    fs::hard_link(src.join("d/orig"), src.join("a_link")).unwrap();
    fs::hard_link(src.join("d/orig"), src.join("d/z_link")).unwrap();
    let (ms, r) = level(&src, None, &TarWriteOptions::default());
    assert_eq!(
        names(&ms),
        ["D ./", "D ./d/", "0 ./a_link", "1 ./d/orig", "1 ./d/z_link"]
    );
    assert_eq!(
        (ms[3].link.as_str(), ms[4].link.as_str()),
        ("./a_link", "./a_link")
    );
    assert_eq!((ms[3].size, r.bytes), (0, 6));
    for deref in [Dereference::Hard, Dereference::All] {
        let opts = TarWriteOptions {
            dereference: deref,
            ..Default::default()
        };
        let (ms, _) = level(&src, None, &opts);
        assert!(
            ms.iter().all(|m| m.kind != b'1'),
            "{deref:?}: {:?}",
            names(&ms)
        );
    }
}

#[test]
fn symlinks_are_followed_with_dereference_soft() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("real")).unwrap();
    fs::write(src.join("real/f"), "f").unwrap();
    symlink("real", src.join("dirlink")).unwrap();
    symlink("real/f", src.join("filelink")).unwrap();
    symlink("nowhere", src.join("dangling")).unwrap();
    let opts = TarWriteOptions {
        dereference: Dereference::Soft,
        ..Default::default()
    };
    let (ms, r) = level(&src, None, &opts);
    assert_eq!(
        names(&ms),
        [
            "D ./",
            "D ./dirlink/",
            "D ./real/",
            "0 ./filelink",
            "0 ./dirlink/f",
            "0 ./real/f"
        ]
    );
    assert_eq!(
        dumpdir(&ms[0]),
        ["Ndangling", "Ddirlink", "Yfilelink", "Dreal"]
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("dangling")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn long_and_unicode_names_use_gnu_long_name_members() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let long_dir = "d".repeat(60);
    let long_file = format!("{}-\u{e9}\u{fc}.txt", "f".repeat(80));
    fs::create_dir_all(src.join(&long_dir)).unwrap();
    fs::write(src.join(&long_dir).join(&long_file), "long").unwrap();
    fs::write(src.join("sp ace \u{fc}\u{e9}.txt"), "u").unwrap();
    symlink(
        format!("{long_dir}/{long_file}"),
        src.join(format!("{}-target", "k".repeat(99))),
    )
    .unwrap();
    let mut out = Vec::new();
    write_archive(&src, None, &TarWriteOptions::default(), &mut out).unwrap();
    let ms = members(&out);
    let want = format!("./{long_dir}/{long_file}");
    assert!(want.len() > 100);
    let m = ms.iter().find(|m| m.name == want).unwrap();
    assert_eq!(m.data, b"long");
    let l = ms.iter().find(|m| m.kind == b'2').unwrap();
    assert_eq!(l.link, format!("{long_dir}/{long_file}"));
    assert!(ms.iter().any(|m| m.name == "./sp ace \u{fc}\u{e9}.txt"));
    // GNU L and K members are in the raw bytes, named ././@LongLink.
    let raw = String::from_utf8_lossy(&out);
    assert!(raw.matches("././@LongLink").count() >= 3);
    // GNU tar lists the same names.
    let listed = run_tar(&["-tf", "-"], &out, None);
    assert!(
        String::from_utf8_lossy(&listed).lines().any(|l| l == want),
        "tar -t"
    );
}

#[test]
fn a_single_file_is_one_member_named_by_its_basename() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("onefile");
    fs::write(&f, "one").unwrap();
    tick();
    let (ms, r0) = level(&f, None, &TarWriteOptions::default());
    assert_eq!(names(&ms), ["0 onefile"]);
    let snap = Snapshot::parse(&r0.snapshot).unwrap().unwrap();
    assert!(snap.dirs.is_empty());
    tick();
    let (ms, r1) = level(&f, Some(&r0.snapshot), &TarWriteOptions::default());
    assert!(ms.is_empty(), "unchanged: an empty archive");
    tick();
    fs::write(&f, "two").unwrap();
    let (ms, _) = level(&f, Some(&r1.snapshot), &TarWriteOptions::default());
    assert_eq!(names(&ms), ["0 onefile"]);
    assert_eq!(ms[0].data, b"two");
}

#[test]
fn unreadable_files_are_skipped_with_a_warning() {
    if rustix::process::geteuid().is_root() {
        // Root reads everything: make the read fail another way (a FIFO is not waited on, but
        // a file removed between the scan and the dump is reported the same way).
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a"), "a").unwrap();
        let opts = TarWriteOptions::default();
        let plan = Plan::new(&src, None, &opts).unwrap();
        fs::remove_file(src.join("a")).unwrap();
        let mut out = Vec::new();
        let r = plan.write(&mut out).unwrap();
        assert_eq!(r.files, 0);
        assert!(r.warnings[0].contains("removed"), "{:?}", r.warnings);
        assert_eq!(r.warning_count, 1);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("secret"), "s").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    let (ms, r) = level(&src, None, &TarWriteOptions::default());
    assert_eq!(names(&ms), ["D ./"]);
    assert!(r.warnings[0].contains("secret"), "{:?}", r.warnings);
}

fn run_tar(args: &[&str], input: &[u8], dir: Option<&Path>) -> Vec<u8> {
    let mut c = Command::new("tar");
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let mut child = c
        .spawn()
        .expect("GNU tar (Debian package tar) is needed by this test");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let t = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    t.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// What GNU tar makes of the tree, from the same parent snapshot.
fn gnu_tar_level(src: &Path, snar: Option<&[u8]>, scratch: &Path) -> (Vec<u8>, Vec<u8>) {
    let snar_path = scratch.join("snar");
    let _ = fs::remove_file(&snar_path);
    if let Some(s) = snar {
        fs::write(&snar_path, s).unwrap();
    }
    let out = Command::new("tar")
        .current_dir(src)
        .args([
            "--create",
            "--no-check-device",
            "--one-file-system",
            "--ignore-failed-read",
        ])
        .arg(format!("--listed-incremental={}", snar_path.display()))
        .args(["--warning=none", "-f", "-", "."])
        .output()
        .expect("GNU tar (Debian package tar) is needed by this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.stdout, fs::read(&snar_path).unwrap())
}

type Comparable = (
    String,
    u8,
    u32,
    u64,
    String,
    Vec<u8>,
    (u64, u64, String, String),
    u64,
);

/// Everything but atime and ctime (reading a file may change its atime between two runs).
/// The members as compared. Rename records (`R`/`T`/`X`) are left out of dumpdirs: GNU tar
/// writes one when a new folder got the inode of a removed one (the kernel reuses inodes), where
/// we write a removal and a new folder (docs/UPSTREAM-TAR.md §4.5); both restore the same tree.
fn comparable(ms: &[Member]) -> Vec<Comparable> {
    ms.iter()
        .map(|m| {
            let (size, data) = if m.kind == b'D' {
                let kept: Vec<u8> = m
                    .data
                    .split_inclusive(|b| *b == 0)
                    .filter(|e| !matches!(e.first(), Some(b'R' | b'T' | b'X')))
                    .flatten()
                    .copied()
                    .collect();
                (kept.len() as u64, kept)
            } else {
                (m.size, m.data.clone())
            };
            (
                m.name.clone(),
                m.kind,
                m.mode,
                size,
                m.link.clone(),
                data,
                m.owner.clone(),
                m.mtime,
            )
        })
        .collect()
}

/// Our archive and GNU tar's, of the same tree from the same snapshot, hold the same members
/// in the same order with the same headers (times aside) and data; our snapshot holds the
/// same directories and dumpdirs as tar's.
#[test]
fn matches_gnu_tar_member_for_member() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("dir/ab"), "x").unwrap();
    fs::write(src.join("dir/ba"), "x").unwrap();
    fs::write(src.join("dir/B"), "x").unwrap();
    fs::hard_link(src.join("dir/b.txt"), src.join("hard")).unwrap();
    fs::write(src.join(format!("{}.txt", "l".repeat(120))), "long").unwrap();
    fs::set_permissions(src.join("a.txt"), fs::Permissions::from_mode(0o4755)).unwrap();
    let scratch = dir.path();
    let (gnu0, gsnar0) = gnu_tar_level(&src, None, scratch);
    let (ours0, r0) = level(&src, None, &TarWriteOptions::default());
    assert_eq!(comparable(&members(&gnu0)), comparable(&ours0));
    assert_eq!(
        gnu0.len() as u64,
        r0.archive_bytes,
        "same length, padded alike"
    );
    let same_dirs = |a: &[u8], b: &[u8]| {
        let key = |s: &[u8]| {
            let s = Snapshot::parse(s).unwrap().unwrap();
            s.dirs
                .into_iter()
                .map(|d| (d.name.clone(), (d.ino, d.entries)))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(key(a), key(b));
    };
    same_dirs(&gsnar0, &r0.snapshot);
    tick();
    fs::remove_file(src.join("del.txt")).unwrap();
    fs::remove_dir_all(src.join("gone")).unwrap();
    fs::write(src.join("dir/new.txt"), "new").unwrap();
    fs::write(src.join("dir/b.txt"), "beta2").unwrap();
    fs::set_permissions(src.join("dir/ab"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::create_dir_all(src.join("fresh/deeper")).unwrap();
    fs::write(src.join("fresh/deeper/f"), "f").unwrap();
    fs::remove_file(src.join("link")).unwrap();
    symlink("dir/b.txt", src.join("link")).unwrap();
    // Both continue from GNU tar's level 0 snapshot.
    let (gnu1, gsnar1) = gnu_tar_level(&src, Some(&gsnar0), scratch);
    let (ours1, r1) = level(&src, Some(&gsnar0), &TarWriteOptions::default());
    assert_eq!(comparable(&members(&gnu1)), comparable(&ours1));
    same_dirs(&gsnar1, &r1.snapshot);
    // GNU tar continues from ours: level 2 with nothing changed but one file.
    tick();
    fs::write(src.join("a.txt"), "changed").unwrap();
    let (gnu2, _) = gnu_tar_level(&src, Some(&r1.snapshot), scratch);
    let (ours2, _) = level(&src, Some(&r1.snapshot), &TarWriteOptions::default());
    assert_eq!(comparable(&members(&gnu2)), comparable(&ours2));
}

#[test]
fn every_compression_decompresses_with_the_standard_tools() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    // Enough data for several blocks of 64 KiB.
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    fs::write(src.join("big.bin"), &big).unwrap();
    let mut plain = Vec::new();
    write_archive(&src, None, &TarWriteOptions::default(), &mut plain).unwrap();
    let want = comparable(&members(&plain));
    for (comp, tool) in [
        (Compression::Gzip, "gzip"),
        (Compression::Bzip2, "bzip2"),
        (Compression::Xz, "xz"),
        (Compression::Zstd, "zstd"),
    ] {
        for block_size in [0, 65536] {
            let opts = TarWriteOptions {
                compression: comp,
                block_size,
                threads: 3,
                ..Default::default()
            };
            let mut out = Vec::new();
            let r = write_level(&src, None, &opts, &mut out).unwrap();
            assert_eq!(r.written_bytes, out.len() as u64);
            let mut c = Command::new(tool);
            c.args(["-d", "-c"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped());
            let mut child = c
                .spawn()
                .unwrap_or_else(|e| panic!("{tool} is needed by this test: {e}"));
            let mut stdin = child.stdin.take().unwrap();
            let t = std::thread::spawn(move || stdin.write_all(&out));
            let o = child.wait_with_output().unwrap();
            t.join().unwrap().unwrap();
            assert!(o.status.success(), "{tool} -d");
            assert_eq!(o.stdout.len() as u64, r.archive_bytes, "{tool}");
            assert_eq!(comparable(&members(&o.stdout)), want, "{tool} {block_size}");
        }
    }
    let e = write_level(
        &src,
        None,
        &TarWriteOptions {
            compression_level: Some(10),
            ..Default::default()
        },
        Vec::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("compression_level"), "{e}");
}

#[test]
fn encrypted_output_decrypts_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let pass = dir.path().join("pass");
    fs::write(&pass, "tar pass\n").unwrap();
    let opts = TarWriteOptions {
        encrypt_pass: Some(b"tar pass".to_vec()),
        ..Default::default()
    };
    let mut out = Vec::new();
    write_level(&src, None, &opts, &mut out).unwrap();
    assert!(out.starts_with(b"Salted__"));
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl enc -d -aes-256-cfb -pass file:{} | gzip -dc",
            pass.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .and_then(|mut c| {
            let mut i = c.stdin.take().unwrap();
            let t = std::thread::spawn(move || i.write_all(&out));
            let o = c.wait_with_output();
            t.join().unwrap().unwrap();
            o
        })
        .expect("openssl and gzip are needed by this test");
    assert!(o.status.success());
    assert_eq!(names(&members(&o.stdout))[0], "D ./");
    assert!(
        !format!("{opts:?}").contains("tar pass"),
        "the passphrase stays out of Debug"
    );
}

#[test]
fn a_failing_output_stops_the_backup_with_an_error() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let big = vec![7u8; 3 << 20];
    fs::write(src.join("big"), big).unwrap();
    let opts = TarWriteOptions {
        block_size: 4096,
        ..Default::default()
    };
    let e = write_level(&src, None, &opts, Broken).unwrap_err();
    assert!(e.to_string().contains("disk on fire"), "{e}");
    let e = write_level(&dir.path().join("missing"), None, &opts, Vec::new()).unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::NotFound, "{e}");
}
