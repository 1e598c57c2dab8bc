//! Helpers shared by the integration tests: trees to back up, and a comparison of two trees
//! that checks everything a restore promises (content, kind, mode, owner, nanosecond mtimes,
//! symlink targets, hard links, xattrs, empty folders, sparse holes).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use freezer_core::repo::{Actor, InitOptions, Repository};
use freezer_core::sink::{LocalSink, Sink};
use freezer_core::{KdfParams, Passphrase};

pub fn actor() -> Actor {
    Actor {
        hostname: "test-host".into(),
        username: "tester".into(),
    }
}

pub fn pass(s: &str) -> Passphrase {
    Passphrase::new(s).unwrap()
}

pub fn local(p: &Path) -> Arc<dyn Sink> {
    Arc::new(LocalSink::new(p))
}

pub async fn init(sinks: Vec<Arc<dyn Sink>>, passphrase: Option<&str>) {
    let mut o = InitOptions::new(passphrase.map(pass), actor());
    o.kdf = KdfParams::insecure_fast();
    Repository::init(sinks, o).await.unwrap();
}

/// Runs the benchmark corpus generator into `out`.
pub fn corpus(out: &Path, size_mb: u32, seed: u32) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/corpus.py");
    assert!(
        script.exists(),
        "the corpus generator is missing: {}",
        script.display()
    );
    let st = std::process::Command::new("python3")
        .arg(&script)
        .args(["make", "--out"])
        .arg(out)
        .args([
            "--size-mb",
            &size_mb.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .status()
        .expect("python3 runs");
    assert!(st.success());
}

/// Runs `corpus.py mutate`.
pub fn mutate(out: &Path, percent: u32, seed: u32) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/corpus.py");
    let st = std::process::Command::new("python3")
        .arg(&script)
        .args(["mutate", "--out"])
        .arg(out)
        .args([
            "--percent",
            &percent.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .status()
        .expect("python3 runs");
    assert!(st.success());
}

/// A small tree with every odd corner the fs source handles.
pub fn odd_tree(root: &Path) {
    use std::fs;
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("dir/a.txt"), b"hello\n").unwrap();
    fs::write(root.join("dir/sub/big.bin"), pseudo_random(3 << 20, 7)).unwrap();
    fs::write(root.join("ünïcödé ✓.txt"), b"unicode\n").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(
        root.join("script.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("script.sh", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    fs::hard_link(root.join("script.sh"), root.join("hardlink.sh")).unwrap();
    let f = fs::File::create(root.join("sparse.img")).unwrap();
    f.write_all_at(&pseudo_random(1 << 20, 3), 8 << 20).unwrap();
    f.set_len(32 << 20).unwrap();
    drop(f);
    rustix::fs::setxattr(
        root.join("dir/a.txt").as_path(),
        "user.comment",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        root.join("fifo").as_path(),
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let old = filetime(1_000_000_000, 123_456_789);
    rustix::fs::utimensat(
        rustix::fs::CWD,
        root.join("dir/a.txt").as_path(),
        &old,
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    rustix::fs::utimensat(
        rustix::fs::CWD,
        root.join("link").as_path(),
        &filetime(1_100_000_000, 5),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
    rustix::fs::utimensat(
        rustix::fs::CWD,
        root.join("empty-dir").as_path(),
        &filetime(1_200_000_000, 0),
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
}

fn filetime(s: i64, ns: i64) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}

pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[derive(Debug, PartialEq)]
struct Meta {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    target: Option<PathBuf>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    data_extents: Option<Vec<(u64, u64)>>,
}

fn data_extents(p: &Path, size: u64) -> Vec<(u64, u64)> {
    let f = std::fs::File::open(p).unwrap();
    let mut out = vec![];
    let mut at = 0;
    while at < size {
        let Ok(d) = rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(at)) else {
            break;
        };
        let h = rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(d))
            .unwrap()
            .min(size);
        out.push((d, h - d));
        at = h;
    }
    out
}

fn user_xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(p, &mut names[..]).unwrap_or(0);
    let mut out = vec![];
    for name in names[..n]
        .split(|b| *b == 0)
        .filter(|n| n.starts_with(b"user."))
    {
        let mut v = vec![0u8; 65536];
        let k = rustix::fs::lgetxattr(
            p,
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name),
            &mut v[..],
        )
        .unwrap();
        out.push((name.to_vec(), v[..k].to_vec()));
    }
    out.sort();
    out
}

fn meta(p: &Path) -> Meta {
    let md = std::fs::symlink_metadata(p).unwrap();
    let ft = md.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "other"
    };
    let sparse = ft.is_file() && md.blocks() * 512 < md.len();
    Meta {
        kind,
        mode: if ft.is_symlink() {
            0
        } else {
            md.mode() & 0o7777
        },
        uid: md.uid(),
        gid: md.gid(),
        mtime: (md.mtime(), md.mtime_nsec()),
        size: if ft.is_file() { md.len() } else { 0 },
        target: ft.is_symlink().then(|| std::fs::read_link(p).unwrap()),
        xattrs: if ft.is_symlink() {
            vec![]
        } else {
            user_xattrs(p)
        },
        data_extents: sparse.then(|| data_extents(p, md.len())),
    }
}

fn walk(root: &Path) -> BTreeMap<PathBuf, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().to_path_buf(), p.clone());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// Asserts that `restored` is identical to `source` in everything a restore promises.
/// `with_root` also compares the two top folders' own metadata.
pub fn assert_same_tree(source: &Path, restored: &Path, with_root: bool) {
    let a = walk(source);
    let b = walk(restored);
    let names_a: Vec<_> = a.keys().collect();
    let names_b: Vec<_> = b.keys().collect();
    assert_eq!(names_a, names_b, "the restored tree has other entries");
    let mut links_a: HashMap<(u64, u64), Vec<&PathBuf>> = HashMap::new();
    let mut links_b: HashMap<(u64, u64), Vec<&PathBuf>> = HashMap::new();
    for (rel, pa) in &a {
        let pb = &b[rel];
        let (ma, mb) = (meta(pa), meta(pb));
        assert_eq!(ma, mb, "metadata of {}", rel.display());
        if ma.kind == "file" {
            assert!(same_content(pa, pb), "content of {}", rel.display());
            let (x, y) = (
                std::fs::metadata(pa).unwrap(),
                std::fs::metadata(pb).unwrap(),
            );
            if x.nlink() > 1 {
                links_a.entry((x.dev(), x.ino())).or_default().push(rel);
                links_b.entry((y.dev(), y.ino())).or_default().push(rel);
            }
        }
    }
    let mut ga: Vec<_> = links_a.into_values().collect();
    let mut gb: Vec<_> = links_b.into_values().collect();
    ga.sort();
    gb.sort();
    assert_eq!(ga, gb, "hard link groups differ");
    if with_root {
        assert_eq!(meta(source), meta(restored), "metadata of the top folder");
    }
}

fn same_content(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]).unwrap() {
                0 => break,
                k => n += k,
            }
        }
        n
    }
}

/// Every byte under `dir`, file by file.
pub fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    walk(dir)
        .into_values()
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// Total size of the files under `dir`.
pub fn du(dir: &Path) -> u64 {
    walk(dir)
        .into_values()
        .filter(|p| p.is_file())
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// A source that counts the bytes read through it, and can report chosen files as changed
/// while read or unreadable.
pub struct Counting {
    pub inner: freezer_core::source::fs::FsSource,
    pub bytes: Arc<std::sync::atomic::AtomicU64>,
    pub changing: Vec<String>,
    pub unreadable: Vec<String>,
}

struct CountingReader {
    inner: Box<dyn freezer_core::source::ContentReader>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
    changing: bool,
}

impl freezer_core::source::ContentReader for CountingReader {
    fn data_extents(&mut self) -> freezer_core::Result<Option<Vec<(u64, u64)>>> {
        self.inner.data_extents()
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> freezer_core::Result<usize> {
        let n = self.inner.read_at(buf, offset)?;
        self.bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
    fn size(&self) -> Option<u64> {
        self.inner.size()
    }
    fn finish(&mut self) -> freezer_core::Result<bool> {
        Ok(self.changing || self.inner.finish()?)
    }
}

impl Counting {
    pub fn new(root: &Path) -> Self {
        Counting {
            inner: freezer_core::source::fs::FsSource::new(root, &Default::default()).unwrap(),
            bytes: Arc::default(),
            changing: vec![],
            unreadable: vec![],
        }
    }
}

impl freezer_core::source::Source for Counting {
    fn info(&self) -> freezer_core::source::SourceInfo {
        self.inner.info()
    }
    fn root(&self) -> freezer_core::Result<freezer_core::source::SourceEntry> {
        self.inner.root()
    }
    fn list(
        &self,
        dir: &freezer_core::source::SourceEntry,
    ) -> freezer_core::Result<freezer_core::source::Listing> {
        self.inner.list(dir)
    }
    fn xattrs(
        &self,
        e: &freezer_core::source::SourceEntry,
    ) -> freezer_core::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.xattrs(e)
    }
    fn open(
        &self,
        e: &freezer_core::source::SourceEntry,
    ) -> freezer_core::Result<Box<dyn freezer_core::source::ContentReader>> {
        let name = e.node.name_lossy();
        if self.unreadable.contains(&name) {
            return Err(freezer_core::Error::io(
                e.path.display(),
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            ));
        }
        Ok(Box::new(CountingReader {
            inner: self.inner.open(e)?,
            bytes: self.bytes.clone(),
            changing: self.changing.contains(&name),
        }))
    }
}

/// A sink that forwards to another and starts failing (every call, as a dropped connection
/// would) after `puts_before_failing` puts, or when `down` is set; reads of keys under
/// `reads_fail_under` always fail that way.
#[derive(Debug)]
pub struct Flaky {
    pub inner: Arc<dyn Sink>,
    pub puts_before_failing: std::sync::atomic::AtomicI64,
    pub down: std::sync::atomic::AtomicBool,
    pub reads_fail_under: Option<&'static str>,
}

impl Flaky {
    pub fn new(inner: Arc<dyn Sink>, puts_before_failing: i64) -> Arc<Self> {
        Arc::new(Flaky {
            inner,
            puts_before_failing: puts_before_failing.into(),
            down: false.into(),
            reads_fail_under: None,
        })
    }

    /// A sink whose reads of keys under `prefix` fail, as over a dropped connection.
    pub fn failing_reads_under(inner: Arc<dyn Sink>, prefix: &'static str) -> Arc<Self> {
        Arc::new(Flaky {
            inner,
            puts_before_failing: i64::MAX.into(),
            down: false.into(),
            reads_fail_under: Some(prefix),
        })
    }

    fn check(&self) -> freezer_core::Result<()> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(freezer_core::Error::io(
                self.inner.describe(),
                std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for Flaky {
    fn describe(&self) -> String {
        format!("flaky:{}", self.inner.describe())
    }
    async fn put(
        &self,
        key: &str,
        p: freezer_core::sink::Payload,
        m: freezer_core::sink::PutMode,
    ) -> freezer_core::Result<()> {
        self.check()?;
        if self
            .puts_before_failing
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            <= 0
        {
            self.down.store(true, std::sync::atomic::Ordering::SeqCst);
            self.check()?;
        }
        self.inner.put(key, p, m).await
    }
    async fn get(
        &self,
        key: &str,
        r: Option<std::ops::Range<u64>>,
    ) -> freezer_core::Result<freezer_core::sink::GetBody> {
        self.check()?;
        if self.reads_fail_under.is_some_and(|p| key.starts_with(p)) {
            return Err(freezer_core::Error::io(
                key,
                std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            ));
        }
        self.inner.get(key, r).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> freezer_core::Result<Vec<freezer_core::sink::ObjectMeta>> {
        self.check()?;
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> freezer_core::Result<()> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn head(&self, key: &str) -> freezer_core::Result<freezer_core::sink::ObjectMeta> {
        self.check()?;
        self.inner.head(key).await
    }
}

/// Backs up `data` as series `name` of `test-host`.
pub async fn backup_dir(
    repo: &mut Repository,
    data: &Path,
    name: &str,
) -> freezer_core::engine::BackupResult {
    backup_source(
        repo,
        Arc::new(freezer_core::source::fs::FsSource::new(data, &Default::default()).unwrap()),
        name,
        None,
    )
    .await
}

/// Backs up a source, trusting the latest snapshot of the series as parent.
pub async fn backup_source(
    repo: &mut Repository,
    source: Arc<dyn freezer_core::source::Source>,
    name: &str,
    time: Option<freezer_core::Timestamp>,
) -> freezer_core::engine::BackupResult {
    use freezer_core::repo::snapshot::{SnapshotSelector, select};
    let snaps = repo.snapshots().await.unwrap().0;
    let mut o = freezer_core::engine::BackupOptions::new("test-host", name, actor());
    if let Ok((id, s)) = select(
        &snaps,
        &SnapshotSelector::Latest {
            hostname: "test-host".into(),
            backup_name: name.into(),
        },
    ) {
        o.parent = Some(*id);
        o.level = s.level + 1;
    }
    o.time = time;
    freezer_core::engine::backup(repo, source, &o, Arc::new(freezer_core::engine::NoProgress))
        .await
        .unwrap()
}

/// Restores snapshot `id` into `target`.
pub async fn restore_id(
    repo: &mut Repository,
    id: freezer_core::Id,
    target: &Path,
) -> freezer_core::engine::RestoreResult {
    let mut opts = freezer_core::engine::RestoreOptions::new(target);
    // The tests look at `damaged` themselves.
    opts.accept_partial = true;
    restore_with(repo, id, opts).await
}

pub async fn restore_with(
    repo: &mut Repository,
    id: freezer_core::Id,
    opts: freezer_core::engine::RestoreOptions,
) -> freezer_core::engine::RestoreResult {
    let snaps = repo.snapshots().await.unwrap().0;
    let snap = snaps
        .iter()
        .find(|(i, _)| *i == id)
        .expect("snapshot listed")
        .1
        .clone();
    repo.load_index().await.unwrap();
    freezer_core::engine::restore(
        repo,
        id,
        &snap,
        &opts,
        Arc::new(freezer_core::engine::NoProgress),
    )
    .await
    .unwrap()
}

/// Opens the repository on `dirs`.
pub async fn open(dirs: &[&Path], passphrase: Option<&str>) -> Repository {
    Repository::open(
        dirs.iter().map(|d| local(d)).collect(),
        passphrase.map(pass).as_ref(),
    )
    .await
    .unwrap()
}

/// Files (paths relative to `root`) with their size and a hash of their content.
pub fn fingerprint(root: &Path) -> BTreeMap<PathBuf, (u64, [u8; 32])> {
    walk(root)
        .into_iter()
        .filter(|(_, p)| std::fs::symlink_metadata(p).unwrap().is_file())
        .map(|(rel, p)| {
            let data = std::fs::read(&p).unwrap();
            (rel, (data.len() as u64, *blake3::hash(&data).as_bytes()))
        })
        .collect()
}

/// Creates a repository with 1 MiB packs (many packs from little data).
pub async fn init_small_packs(sinks: Vec<Arc<dyn Sink>>, passphrase: Option<&str>) {
    let mut o = InitOptions::new(passphrase.map(pass), actor());
    o.kdf = KdfParams::insecure_fast();
    o.pack_size = 1 << 20;
    Repository::init(sinks, o).await.unwrap();
}

/// Every pack file under a local repository.
pub fn pack_files(repo: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(&repo.join("data"))
        .into_values()
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Whether a local repository holds a lock (a finished lock file, not one being written).
pub fn has_lock(repo: &Path) -> bool {
    std::fs::read_dir(repo.join("locks")).is_ok_and(|d| {
        d.flatten()
            .any(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
    })
}
