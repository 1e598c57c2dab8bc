//! Upstream Freezer's `tar` engine, written by us and read by upstream (issue 11): levels 0..3
//! of one tree laid out exactly as upstream's local storage does (docs/UPSTREAM-TAR.md §1, §9)
//! for gzip, bzip2, xz and gzip + encryption; upstream's REAL agent (PyPI freezer==19.0.0, in
//! `target/upstream-agent`, made by test.sh) restores them level by level and continues our
//! gzip chain with a level 4 of its own; plain GNU tar extracts our levels with --incremental.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use freezer_core::upstream::tar::write::{Compression, TarWriteOptions, write_level};

const HOST: &str = "tw-host";
const PASS: &str = "tar write pass\n";

/// Upstream's agent, or a failure saying how to install it.
fn agent() -> PathBuf {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/upstream-agent/bin/freezer-agent");
    assert!(
        p.exists(),
        "upstream's agent is missing ({}): install it with `python3 -m venv target/upstream-agent && target/upstream-agent/bin/pip install freezer==19.0.0` (test.sh does)",
        p.display()
    );
    p
}

/// The folder of the nocloud sitecustomize.py, which lets upstream's agent run without a cloud.
fn nocloud() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/upstream/nocloud");
    assert!(
        p.join("sitecustomize.py").exists(),
        "the nocloud sitecustomize.py is missing: {}",
        p.display()
    );
    p
}

fn run_agent(args: &[&str], logdir: &Path) -> String {
    let log = logdir.join(format!("agent-{}.log", std::process::id()));
    let out = Command::new(agent())
        .args(args)
        .arg("--log-file")
        .arg(&log)
        .env("PYTHONPATH", nocloud())
        .current_dir(logdir)
        .output()
        .expect("freezer-agent runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "freezer-agent {args:?} failed ({}):\n{}\nlog:\n{}",
        out.status,
        &text[text.len().saturating_sub(4000)..],
        fs::read_to_string(&log).unwrap_or_default()
    );
    text
}

fn iso(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

// ------------------------------------------------------------------------- the tree and its edits

fn put(root: &Path, rel: &str, data: impl AsRef<[u8]>) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn chmod(root: &Path, rel: &str, mode: u32) {
    fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(root: &Path, rel: &str, sec: i64) {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, utimensat};
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: 0,
    };
    utimensat(
        CWD,
        root.join(rel),
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Deterministic bytes that compress somewhat (several 1 MiB gzip blocks for the big file).
fn blob(seed: u32, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b"abcdefghij \n"[(x % 12) as usize]
        })
        .collect()
}

const LONG: &str = "long_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/name_yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy.txt";

fn level0(root: &Path) {
    fs::create_dir_all(root).unwrap();
    put(root, "a.txt", "alpha\n".repeat(10));
    put(root, "bin.dat", blob(1, 20000));
    put(root, "big.dat", blob(2, 3 << 20));
    put(root, "dir1/b.txt", "bravo\n");
    put(root, "dir1/sub/c.txt", "charlie\n");
    put(root, "deldir/x.txt", "x-ray\n");
    put(root, "deldir/y/z.txt", "zulu\n");
    put(root, "del.txt", "deleted at level 1\n");
    put(root, "mode600.txt", "private\n");
    chmod(root, "mode600.txt", 0o600);
    put(root, "exec.sh", "#!/bin/sh\necho hi\n");
    chmod(root, "exec.sh", 0o755);
    put(root, "setgid.sh", "#!/bin/sh\n");
    chmod(root, "setgid.sh", 0o2755);
    put(root, "old.txt", "old mtime\n");
    set_mtime(root, "old.txt", 1_000_000_000);
    put(
        root,
        "swap",
        "a file at levels 0-1, a symlink from level 2\n",
    );
    put(root, "sp ace \u{fc}\u{e9}.txt", "unicode name\n");
    put(root, LONG, "long path\n");
    fs::create_dir_all(root.join("emptydir")).unwrap();
    fs::create_dir_all(root.join("sticky")).unwrap();
    chmod(root, "sticky", 0o1777);
    symlink("a.txt", root.join("link_rel")).unwrap();
    symlink("does/not/exist", root.join("link_dangling")).unwrap();
    fs::hard_link(root.join("exec.sh"), root.join("hard_exec.sh")).unwrap();
    if rustix::process::geteuid().is_root() {
        put(root, "owned.txt", "odd owner\n");
        std::os::unix::fs::chown(root.join("owned.txt"), Some(1234), Some(5678)).unwrap();
    }
}

fn level1(root: &Path) {
    fs::OpenOptions::new()
        .append(true)
        .open(root.join("a.txt"))
        .unwrap()
        .write_all(b"appended at level 1\n")
        .unwrap();
    put(root, "new1.txt", "new at level 1\n");
    fs::remove_file(root.join("del.txt")).unwrap();
    chmod(root, "mode600.txt", 0o640);
    // New content, same size, an OLD mtime: found by its ctime.
    put(root, "bin.dat", blob(3, 20000));
    set_mtime(root, "bin.dat", 1_100_000_000);
    put(root, "dir1/sub/c2.txt", "new in an old dir\n");
}

fn level2(root: &Path) {
    fs::remove_dir_all(root.join("deldir")).unwrap();
    put(root, "newdir/deeper/m.txt", "deeper\n");
    chmod(root, "newdir/deeper/m.txt", 0o604);
    fs::remove_file(root.join("link_rel")).unwrap();
    symlink("dir1/b.txt", root.join("link_rel")).unwrap();
    fs::remove_file(root.join("swap")).unwrap();
    symlink("a.txt", root.join("swap")).unwrap();
    put(root, "dir1/b.txt", "bravo edited at level 2\n");
    fs::OpenOptions::new()
        .append(true)
        .open(root.join("exec.sh"))
        .unwrap()
        .write_all(b"echo level 2\n")
        .unwrap();
}

fn level3(root: &Path) {
    put(root, "bin.dat", b"");
    fs::rename(root.join("dir1/sub"), root.join("dir1/sub2")).unwrap();
    put(root, "emptydir/now_full.txt", "level 3\n");
    fs::remove_file(root.join("new1.txt")).unwrap();
    set_mtime(root, "old.txt", 1_900_000_000);
}

/// Upstream's own level 4, over our level 3.
fn level4(root: &Path) {
    fs::OpenOptions::new()
        .append(true)
        .open(root.join("a.txt"))
        .unwrap()
        .write_all(b"appended at level 4\n")
        .unwrap();
    put(root, "up4/n4.txt", "new dir at level 4\n");
    fs::remove_file(root.join("setgid.sh")).unwrap();
}

/// The tree as a restore must reproduce it: path -> kind, mode, owner, mtime, content or target.
type Tree = BTreeMap<String, String>;

fn tree_of(root: &Path) -> Tree {
    fn walk(root: &Path, rel: &str, out: &mut Tree) {
        let p = if rel == "." {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let m = fs::symlink_metadata(&p).unwrap();
        let what = if m.file_type().is_symlink() {
            format!("link {}", fs::read_link(&p).unwrap().display())
        } else if m.is_dir() {
            "dir".to_string()
        } else {
            let mut data = Vec::new();
            fs::File::open(&p).unwrap().read_to_end(&mut data).unwrap();
            format!("file {} {}", data.len(), blake3::hash(&data).to_hex())
        };
        out.insert(
            rel.to_string(),
            format!(
                "{what} mode {:o} owner {}:{} mtime {}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                m.mtime()
            ),
        );
        if m.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            for n in names {
                let child = if rel == "." { n } else { format!("{rel}/{n}") };
                walk(root, &child, out);
            }
        }
    }
    let mut out = Tree::new();
    walk(root, ".", &mut out);
    out
}

fn assert_same(want: &Tree, got: &Tree, what: &str) {
    let mut problems = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => problems.push(format!("missing {k}: {v}")),
            Some(g) if g != v => problems.push(format!("{k}: want {v}, got {g}")),
            _ => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        problems.push(format!("unexpected {k}: {}", got[k]));
    }
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
}

// ------------------------------------------------------------------------- writing chains

/// One chain of ours in upstream's local layout.
struct Chain {
    name: String,
    compression: Compression,
    encrypted: bool,
    t0: i64,
    snapshot: Option<Vec<u8>>,
}

impl Chain {
    fn rel(&self, level: u32, t: i64) -> String {
        format!("tar/{HOST}_{}/{}/{level}_{t}", self.name, self.t0)
    }

    /// Writes level `level` at time `t`: data and engine_metadata, then metadata.
    fn write(&mut self, container: &Path, src: &Path, level: u32, t: i64) {
        if level == 0 {
            self.t0 = t;
        }
        let rel = self.rel(level, t);
        let data_dir = container.join("data").join(&rel);
        fs::create_dir_all(&data_dir).unwrap();
        let opts = TarWriteOptions {
            compression: self.compression,
            encrypt_pass: self.encrypted.then(|| {
                freezer_core::upstream::openssl::passphrase_of_file(PASS.as_bytes()).to_vec()
            }),
            ..Default::default()
        };
        let out = BufWriter::new(fs::File::create(data_dir.join("data")).unwrap());
        let r = write_level(src, self.snapshot.as_deref(), &opts, out).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(
            r.written_bytes,
            fs::metadata(data_dir.join("data")).unwrap().len()
        );
        fs::write(data_dir.join("engine_metadata"), &r.snapshot).unwrap();
        let meta_dir = container.join("metadata").join(&rel);
        fs::create_dir_all(&meta_dir).unwrap();
        fs::write(
            meta_dir.join("metadata"),
            format!(
                r#"{{"engine_name": "tar", "compression": "{}", "encryption": {}}}"#,
                self.compression.as_str(),
                self.encrypted
            ),
        )
        .unwrap();
        self.snapshot = Some(r.snapshot);
    }
}

/// Past level times, one per level, strictly increasing.
fn level_times() -> [i64; 4] {
    let now = jiff::Timestamp::now().as_second();
    [now - 400, now - 300, now - 200, now - 100]
}

fn settle() {
    // Past the writer's start-time margin and the file system's coarse clock.
    std::thread::sleep(Duration::from_millis(60));
}

/// Builds the tree and writes levels 0..3 of every chain; the trees expected at each level.
fn make_chains(dir: &Path, chains: &mut [Chain], times: [i64; 4]) -> (PathBuf, PathBuf, Vec<Tree>) {
    let src = dir.join("src");
    let container = dir.join("storage");
    let edits: [fn(&Path); 4] = [level0, level1, level2, level3];
    let mut expected = Vec::new();
    for (level, edit) in edits.iter().enumerate() {
        edit(&src);
        settle();
        for c in chains.iter_mut() {
            c.write(&container, &src, level as u32, times[level]);
        }
        expected.push(tree_of(&src));
        settle();
    }
    (src, container, expected)
}

fn chain(name: &str, compression: Compression, encrypted: bool) -> Chain {
    Chain {
        name: name.into(),
        compression,
        encrypted,
        t0: 0,
        snapshot: None,
    }
}

/// Restores `name` as of `t` with upstream's agent into a new folder.
fn agent_restore(
    dir: &Path,
    container: &Path,
    name: &str,
    t: i64,
    encrypted: bool,
    tag: &str,
) -> Tree {
    let dest = dir.join("restore").join(format!("{name}-{tag}"));
    let pass = dir.join("pass");
    fs::write(&pass, PASS).unwrap();
    let mut args = vec![
        "--action".to_string(),
        "restore".into(),
        "--storage".into(),
        "local".into(),
        "--container".into(),
        container.display().to_string(),
        "--backup-name".into(),
        name.into(),
        "--hostname".into(),
        HOST.into(),
        "--restore-abs-path".into(),
        dest.display().to_string(),
        "--restore-from-date".into(),
        iso(t),
    ];
    if encrypted {
        args.push("--encrypt-pass-file".into());
        args.push(pass.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_agent(&args, dir);
    tree_of(&dest)
}

/// Upstream's agent restores each of our levels (gzip: all four; bzip2, xz and gzip with
/// encryption: level 3, which applies 0..3 in order), then makes a level 4 of its own from our
/// level 3's engine_metadata, holding only what changed, and restores it.
#[test]
fn upstream_agent_restores_our_levels_and_continues_our_chain() {
    agent();
    let dir = tempfile::tempdir().unwrap();
    let times = level_times();
    let mut chains = vec![
        chain("gzip", Compression::Gzip, false),
        chain("bzip2", Compression::Bzip2, false),
        chain("xz", Compression::Xz, false),
        chain("gzip-enc", Compression::Gzip, true),
    ];
    let (src, container, expected) = make_chains(dir.path(), &mut chains, times);
    // The layout, exactly: three files per level.
    let gz = &chains[0];
    for (level, t) in times.iter().enumerate() {
        let rel = gz.rel(level as u32, *t);
        for f in ["data", "engine_metadata"] {
            assert!(
                container.join("data").join(&rel).join(f).is_file(),
                "{rel}/{f}"
            );
        }
        assert_eq!(
            fs::read_to_string(container.join("metadata").join(&rel).join("metadata")).unwrap(),
            r#"{"engine_name": "tar", "compression": "gzip", "encryption": false}"#
        );
    }
    // The big file spans several independent gzip members: upstream reads them as one stream.
    let data0 = fs::read(
        container
            .join("data")
            .join(gz.rel(0, times[0]))
            .join("data"),
    )
    .unwrap();
    assert!(
        data0
            .windows(4)
            .filter(|w| *w == [0x1f, 0x8b, 8, 0])
            .count()
            >= 3,
        "several gzip members"
    );
    for level in 0..4 {
        let got = agent_restore(
            dir.path(),
            &container,
            "gzip",
            times[level],
            false,
            &level.to_string(),
        );
        assert_same(&expected[level], &got, &format!("gzip level {level}"));
    }
    for c in &chains[1..] {
        let got = agent_restore(dir.path(), &container, &c.name, times[3], c.encrypted, "3");
        assert_same(&expected[3], &got, &format!("{} level 3", c.name));
    }

    // Upstream continues our gzip chain: its tar reads our level 3's engine_metadata.
    level4(&src);
    settle();
    let t_before = jiff::Timestamp::now().as_second();
    run_agent(
        &[
            "--action",
            "backup",
            "--mode",
            "fs",
            "--storage",
            "local",
            "--container",
            &container.display().to_string(),
            "--hostname",
            HOST,
            "--backup-name",
            "gzip",
            "--path-to-backup",
            &src.display().to_string(),
            "--compression",
            "gzip",
            "--incremental",
            "--max-level",
            "5",
        ],
        dir.path(),
    );
    let expected4 = tree_of(&src);
    let chain_dir = container
        .join("metadata/tar")
        .join(format!("{HOST}_gzip"))
        .join(times[0].to_string());
    let mut levels: Vec<String> = fs::read_dir(&chain_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    levels.sort();
    let l4 = levels
        .iter()
        .find(|l| l.starts_with("4_"))
        .unwrap_or_else(|| panic!("upstream made no level 4 in our chain: {levels:?}"));
    let t4: i64 = l4[2..].parse().unwrap();
    assert!(t4 >= t_before);
    // Only what changed is in upstream's level 4: our snapshot was read, not ignored.
    let data4 = fs::read(
        container
            .join("data/tar")
            .join(format!("{HOST}_gzip"))
            .join(times[0].to_string())
            .join(l4)
            .join("data"),
    )
    .unwrap();
    let mut files = Vec::new();
    let mut a = tar::Archive::new(flate2::read::MultiGzDecoder::new(&data4[..]));
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.header().entry_type().as_byte() != b'D' {
            files.push(String::from_utf8(e.path_bytes().to_vec()).unwrap());
        }
    }
    files.sort();
    assert_eq!(
        files,
        // old.txt's mtime is in the future (2030): GNU tar dumps it at every level.
        ["./a.txt", "./old.txt", "./up4/n4.txt"],
        "upstream's level 4 members"
    );
    let got = agent_restore(dir.path(), &container, "gzip", t4, false, "4");
    assert_same(&expected4, &got, "upstream's level 4 over ours");
}

/// Plain GNU tar extracts our levels in order with --incremental (deleting what each level
/// no longer lists), as upstream's restore runs it.
#[test]
fn gnu_tar_extracts_our_levels_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let times = level_times();
    let mut chains = vec![chain("gzip", Compression::Gzip, false)];
    let (_, container, expected) = make_chains(dir.path(), &mut chains, times);
    let dest = dir.path().join("extract");
    fs::create_dir_all(&dest).unwrap();
    for (level, t) in times.iter().enumerate() {
        let data = container
            .join("data")
            .join(chains[0].rel(level as u32, *t))
            .join("data");
        let out = Command::new("tar")
            .args([
                "-z",
                "--incremental",
                "--extract",
                "--ignore-zeros",
                "--warning=none",
                "--overwrite",
            ])
            .arg("--file")
            .arg(&data)
            .arg("--directory")
            .arg(&dest)
            .output()
            .expect("GNU tar (Debian package tar) is needed by this test");
        assert!(
            out.status.success(),
            "tar level {level}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same(
            &expected[level],
            &tree_of(&dest),
            &format!("tar --incremental level {level}"),
        );
    }
}
