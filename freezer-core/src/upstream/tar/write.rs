//! Writes one level of an upstream Freezer `tar`-engine backup (docs/UPSTREAM-TAR.md §3, §4,
//! §9): the archive `tar --create --no-check-device --one-file-system --ignore-failed-read
//! --listed-incremental=SNAR .` makes in the source folder, compressed (gzip, bzip2, xz, or
//! zstd as this project's extension) and optionally encrypted as `openssl enc -aes-256-cfb`,
//! plus the new snapshot file that upstream stores as the level's `engine_metadata`.
//!
//! [`write_level`] is the whole pipeline; [`write_archive`] writes the uncompressed archive
//! alone. Neither holds a backup in memory: the tree is scanned first (names, like GNU tar
//! does, to write every directory's dumpdir before any file), then files are streamed. The
//! compressors run on worker threads over fixed-size blocks of the archive, each block an
//! independent gzip member / bzip2 stream / xz stream / zstd frame, written in order: the
//! decompressors of `tar -z/-j/-J` read such concatenations as one stream.
//!
//! This module never prints, never reads the environment, and never writes to the source.
//! Files it cannot read are skipped and reported in [`TarWriteReport::warnings`] (upstream's
//! `--ignore-failed-read`), never silently.

mod parallel;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

use super::snar::{DumpdirEntry, Snapshot, SnapshotDir, TarTime, encode_dumpdir};
use crate::error::{Error, Result};

pub use parallel::Compression;

/// How symbolic and hard links are followed: upstream's `--dereference-symlink`, as the
/// native engine reads it.
pub use crate::source::fs::Dereference;

impl Dereference {
    fn follows_symlinks(self) -> bool {
        matches!(self, Dereference::Soft | Dereference::All)
    }

    fn stores_hard_links(self) -> bool {
        matches!(self, Dereference::None | Dereference::Soft)
    }
}

/// What to write and how. `Default` is upstream's default: gzip at level 1 ([`Compression::default_level`]), no encryption,
/// no excludes, `--one-file-system`, as many compression threads as cores.
#[derive(Clone)]
pub struct TarWriteOptions {
    /// The compressor ([`Compression::Gzip`] by default).
    pub compression: Compression,
    /// The compressor's level; `None` for its default ([`Compression::default_level`]).
    pub compression_level: Option<u32>,
    /// The passphrase (the pass file's first line, [`crate::upstream::openssl::passphrase_of_file`])
    /// to encrypt with, as `openssl enc -aes-256-cfb` with SHA-256 key derivation.
    pub encrypt_pass: Option<Vec<u8>>,
    /// GNU tar `--exclude` patterns: shell wildcards (`*` also matches `/`) matched against
    /// each archive name (`./dir/file`) and every tail of it after a `/` (`dir/file`, `file`).
    /// Excluded names are listed as unchanged (`N`) in their directory's dumpdir, as tar does,
    /// so a restore keeps what is already there.
    pub exclude: Vec<String>,
    /// Upstream's `--dereference-symlink`.
    pub dereference: Dereference,
    /// Stay on the source's file system (upstream always passes `--one-file-system`).
    pub one_file_system: bool,
    /// Compression threads; 0 for the number of cores.
    pub threads: usize,
    /// Bytes of archive per compressed block; 0 for the compressor's default
    /// ([`Compression::default_block_size`]).
    pub block_size: usize,
}

impl Default for TarWriteOptions {
    fn default() -> Self {
        TarWriteOptions {
            compression: Compression::Gzip,
            compression_level: None,
            encrypt_pass: None,
            exclude: Vec::new(),
            dereference: Dereference::None,
            one_file_system: true,
            threads: 0,
            block_size: 0,
        }
    }
}

impl std::fmt::Debug for TarWriteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarWriteOptions")
            .field("compression", &self.compression)
            .field("compression_level", &self.compression_level)
            .field("encrypted", &self.encrypt_pass.is_some())
            .field("exclude", &self.exclude)
            .field("dereference", &self.dereference)
            .field("one_file_system", &self.one_file_system)
            .field("threads", &self.threads)
            .field("block_size", &self.block_size)
            .finish()
    }
}

/// The most warnings a report keeps word for word; [`TarWriteReport::warning_count`] counts
/// them all.
pub const MAX_WARNINGS_KEPT: usize = 1000;

/// How much earlier than the clock a level's start time is taken (see [`write_level`]).
const START_MARGIN_NS: i128 = 20_000_000;

/// What a level wrote.
#[derive(Clone, Debug, Default)]
pub struct TarWriteReport {
    /// The new GNU tar snapshot file: store it as the level's `engine_metadata`; it is the
    /// `parent_snapshot` of the next level.
    pub snapshot: Vec<u8>,
    /// Non-directory members written (files, symlinks, hard links, devices, FIFOs).
    pub files: u64,
    /// Directory (`D`) members written: every directory of the tree.
    pub directories: u64,
    /// File content bytes read into the archive.
    pub bytes: u64,
    /// Size of the uncompressed archive.
    pub archive_bytes: u64,
    /// Bytes written to the output (compressed, and encrypted when asked).
    pub written_bytes: u64,
    /// What was skipped or changed while read, each naming the path (the first
    /// [`MAX_WARNINGS_KEPT`]).
    pub warnings: Vec<String>,
    /// How many warnings there were in all.
    pub warning_count: u64,
}

impl TarWriteReport {
    fn warn(&mut self, msg: String) {
        self.warning_count += 1;
        if self.warnings.len() < MAX_WARNINGS_KEPT {
            self.warnings.push(msg);
        }
    }
}

/// Writes one level of `src` to `out`: the archive, compressed as `opts.compression` says and
/// encrypted when `opts.encrypt_pass` is set. `parent_snapshot` is the previous level's
/// `engine_metadata` (`None`, or an empty file, for a level 0). Returns the new snapshot and
/// the counts. `out` receives the `data` object's bytes in order and is flushed at the end.
///
/// A failure of the output, or of the source folder itself, is an error (`out` then holds
/// a partial stream to discard); unreadable files below it are warnings.
pub fn write_level<W: Write>(
    src: &Path,
    parent_snapshot: Option<&[u8]>,
    opts: &TarWriteOptions,
    out: W,
) -> Result<TarWriteReport> {
    let parent = match parent_snapshot {
        Some(b) => Snapshot::parse(b)?,
        None => None,
    };
    let plan = Plan::new(src, parent.as_ref(), opts)?;
    parallel::run(opts, out, |sink| plan.write(sink))
}

/// Writes the uncompressed archive of one level to `out` (what `tar` writes before `-z`):
/// as [`write_level`] without compression or encryption, on the calling thread.
pub fn write_archive<W: Write>(
    src: &Path,
    parent_snapshot: Option<&[u8]>,
    opts: &TarWriteOptions,
    mut out: W,
) -> Result<TarWriteReport> {
    let parent = match parent_snapshot {
        Some(b) => Snapshot::parse(b)?,
        None => None,
    };
    let plan = Plan::new(src, parent.as_ref(), opts)?;
    let mut counted = Counted {
        inner: &mut out,
        n: 0,
    };
    let mut report = plan.write(&mut counted)?;
    report.written_bytes = counted.n;
    out.flush()
        .map_err(|e| Error::io("the archive output", e))?;
    Ok(report)
}

pub(crate) struct Counted<W> {
    pub(crate) inner: W,
    pub(crate) n: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ------------------------------------------------------------------------------ the scan

/// What is known of a file system object, from one `stat`.
#[derive(Clone, Copy, Debug)]
struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: TarTime,
    atime: i64,
    ctime: TarTime,
    dev: u64,
    ino: u64,
    nlink: u64,
    rdev: u64,
}

impl Stat {
    fn of(m: &Metadata) -> Self {
        Stat {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: TarTime::new(m.mtime(), m.mtime_nsec() as u32),
            atime: m.atime(),
            ctime: TarTime::new(m.ctime(), m.ctime_nsec() as u32),
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
            rdev: m.rdev(),
        }
    }

    fn is_dir(&self) -> bool {
        self.mode & libc_mode::S_IFMT == libc_mode::S_IFDIR
    }
}

mod libc_mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFDIR: u32 = 0o040000;
}

/// One directory of the tree: its archive name (`.`, `./a/b`), its stat and its dumpdir.
#[derive(Debug)]
struct Dir {
    name: Vec<u8>,
    stat: Stat,
    entries: Vec<DumpdirEntry>,
}

/// The scanned tree, or the single file, ready to be written.
struct Plan<'a> {
    src: PathBuf,
    opts: &'a TarWriteOptions,
    start: TarTime,
    kind: PlanKind,
    owners: Owners,
    warnings: Vec<String>,
}

enum PlanKind {
    /// A folder: every directory, sorted by name (tar's order).
    Tree(Vec<Dir>),
    /// A single file: its member name and whether it changed since the parent.
    File { name: Vec<u8>, dump: bool },
}

fn exclude_set(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = GlobBuilder::new(p)
            .literal_separator(false)
            .backslash_escape(true)
            .empty_alternates(true)
            .build()
            .map_err(|e| Error::bad_input("exclude", format!("{p:?}: {e}")))?;
        b.add(g);
    }
    b.build()
        .map(Some)
        .map_err(|e| Error::bad_input("exclude", e))
}

/// GNU tar's unanchored `--exclude` match: the whole name, or any part after a `/`.
fn excluded(set: &GlobSet, name: &[u8]) -> bool {
    let mut at = 0;
    loop {
        let tail = &name[at..];
        if set.is_match_candidate(&Candidate::new(Path::new(OsStr::from_bytes(tail)))) {
            return true;
        }
        match tail.iter().position(|b| *b == b'/') {
            Some(i) => at += i + 1,
            None => return false,
        }
    }
}

/// `stat` or `lstat`, as `--dereference` says.
fn stat_path(follow: bool, p: &Path) -> io::Result<Metadata> {
    if follow {
        fs::metadata(p)
    } else {
        fs::symlink_metadata(p)
    }
}

fn join_name(dir: &[u8], entry: &[u8]) -> Vec<u8> {
    let mut n = Vec::with_capacity(dir.len() + 1 + entry.len());
    n.extend_from_slice(dir);
    n.push(b'/');
    n.extend_from_slice(entry);
    n
}

impl<'a> Plan<'a> {
    fn new(src: &Path, parent: Option<&Snapshot>, opts: &'a TarWriteOptions) -> Result<Self> {
        // tar's start time, before anything is read: what changes from now on is newer than
        // the snapshot this level leaves, so the next level takes it. Taken a little early:
        // the kernel stamps files from a coarse clock that lags the precise one by up to a
        // tick, so a file changed just after this point may carry a time just before it. A
        // file changed in that margin before the start is dumped again by the next level.
        let start = {
            let now = TarTime::now();
            let ns = i128::from(now.sec) * 1_000_000_000 + i128::from(now.nsec) - START_MARGIN_NS;
            TarTime::new(
                ns.div_euclid(1_000_000_000) as i64,
                ns.rem_euclid(1_000_000_000) as u32,
            )
        };
        let excludes = exclude_set(&opts.exclude)?;
        let follow = opts.dereference.follows_symlinks();
        let top = stat_path(follow, src)
            .map_err(|e| Error::io(format!("the backup source {}", src.display()), e))?;
        let mut plan = Plan {
            src: src.to_path_buf(),
            opts,
            start,
            kind: PlanKind::Tree(Vec::new()),
            owners: Owners::load(),
            warnings: Vec::new(),
        };
        // A folder given through a symlink is archived as the folder (upstream chdirs into it).
        let top_is_dir = top.is_dir() || fs::metadata(src).map(|m| m.is_dir()).unwrap_or(false);
        if !top_is_dir {
            let name = src
                .file_name()
                .ok_or_else(|| {
                    Error::bad_input("path_to_backup", format!("{}: no file name", src.display()))
                })?
                .as_bytes()
                .to_vec();
            let st = Stat::of(&top);
            let dump = match parent {
                None => true,
                Some(p) => st.mtime >= p.start || st.ctime >= p.start,
            };
            plan.kind = PlanKind::File { name, dump };
            return Ok(plan);
        }
        let top = fs::metadata(src)
            .map_err(|e| Error::io(format!("the backup source {}", src.display()), e))?;
        let parents: HashMap<&[u8], &SnapshotDir> = parent
            .map(|p| p.dirs.iter().map(|d| (d.name.as_slice(), d)).collect())
            .unwrap_or_default();
        let since = parent.map(|p| p.start);
        let root_dev = top.dev();
        let mut dirs = Vec::new();
        // (name, stat, parent dumped whole, (dev, ino) of its ancestors)
        type Todo = (Vec<u8>, Stat, bool, Vec<(u64, u64)>);
        let mut todo: Vec<Todo> = vec![(b".".to_vec(), Stat::of(&top), false, Vec::new())];
        while let Some((name, stat, forced_all, mut ancestors)) = todo.pop() {
            if follow && ancestors.contains(&(stat.dev, stat.ino)) {
                // Only reachable through symlinks followed with --dereference: a loop.
                plan.warn(format!(
                    "{}: a directory loop through symlinks; not descended",
                    String::from_utf8_lossy(&name)
                ));
                continue;
            }
            if follow {
                ancestors.push((stat.dev, stat.ino));
            }
            // procdir: a directory known to the parent by this name and inode is scanned for
            // changes against its old dumpdir; any other is new and dumped whole (a renamed
            // directory counts as deleted + new, docs/UPSTREAM-TAR.md §4.5).
            let old = parents
                .get(name.as_slice())
                .filter(|d| d.ino == stat.ino && !forced_all && since.is_some());
            let all = old.is_none();
            let old_names: std::collections::HashSet<&[u8]> = old
                .map(|o| o.entries.iter().map(|e| e.name.as_slice()).collect())
                .unwrap_or_default();
            let fs_path = plan.fs_path(&name);
            let mut listing: Vec<Vec<u8>> = match fs::read_dir(&fs_path) {
                Ok(rd) => {
                    let mut v = Vec::new();
                    for e in rd {
                        match e {
                            Ok(e) => v.push(e.file_name().as_bytes().to_vec()),
                            Err(e) => {
                                plan.warn(format!(
                                    "{}: reading the directory: {e}",
                                    fs_path.display()
                                ));
                                break;
                            }
                        }
                    }
                    v
                }
                Err(e) => {
                    plan.warn(format!(
                        "{}: cannot read the directory: {e}; its contents are not dumped",
                        fs_path.display()
                    ));
                    Vec::new()
                }
            };
            listing.sort_unstable();
            let mut entries = Vec::with_capacity(listing.len());
            let mut subdirs = Vec::new();
            for entry in listing {
                let full = join_name(&name, &entry);
                let code = if excludes.as_ref().is_some_and(|x| excluded(x, &full)) {
                    b'N'
                } else {
                    let p = plan.fs_path(&full);
                    match stat_path(follow, &p) {
                        Err(e) => {
                            plan.warn(format!("{}: cannot stat: {e}", p.display()));
                            b'N'
                        }
                        Ok(m) => {
                            let st = Stat::of(&m);
                            if opts.one_file_system && st.dev != root_dev {
                                // Another file system: listed, neither dumped nor descended.
                                b'N'
                            } else if st.is_dir() {
                                subdirs.push((full, st, all, ancestors.clone()));
                                b'D'
                            } else if all || !old_names.contains(entry.as_slice()) {
                                b'Y'
                            } else {
                                let t = since.unwrap_or_default();
                                if st.mtime < t && st.ctime < t {
                                    b'N'
                                } else {
                                    b'Y'
                                }
                            }
                        }
                    }
                };
                entries.push(DumpdirEntry::new(code, entry));
            }
            // Depth-first in reverse so that popping visits them in name order (the final
            // order is a sort anyway).
            todo.extend(subdirs.into_iter().rev());
            dirs.push(Dir {
                name,
                stat,
                entries,
            });
        }
        // GNU tar sorts its name list with strcmp: "./a" < "./a-b" < "./a/b".
        dirs.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        plan.kind = PlanKind::Tree(dirs);
        Ok(plan)
    }

    fn warn(&mut self, msg: String) {
        if self.warnings.len() < MAX_WARNINGS_KEPT * 2 {
            self.warnings.push(msg);
        }
    }

    /// The file system path of archive name `./a/b` (or `.`).
    fn fs_path(&self, name: &[u8]) -> PathBuf {
        match name.strip_prefix(b"./") {
            Some(rel) => self.src.join(OsStr::from_bytes(rel)),
            None => self.src.clone(),
        }
    }

    /// Writes the archive to `w` and returns the report with the new snapshot.
    fn write(&self, w: &mut dyn Write) -> Result<TarWriteReport> {
        let mut report = TarWriteReport::default();
        for m in &self.warnings {
            report.warn(m.clone());
        }
        let mut tw = TarOut {
            w,
            n: 0,
            buf: Vec::new(),
        };
        let snapshot = match &self.kind {
            PlanKind::File { name, dump } => {
                if *dump {
                    let mut links = HashMap::new();
                    self.dump_entry(&mut tw, &mut report, &mut links, name, &self.src)?;
                }
                Snapshot::new(self.start)
            }
            PlanKind::Tree(dirs) => {
                for d in dirs {
                    let mut member = d.name.clone();
                    member.push(b'/');
                    let data = encode_dumpdir(&d.entries);
                    let h = self.header(&d.stat, b'D', data.len() as u64);
                    tw.member(h, &member, None, &mut &data[..], data.len() as u64)
                        .map_err(out_err)?;
                    report.directories += 1;
                }
                let mut links = HashMap::new();
                for d in dirs {
                    for e in d.entries.iter().filter(|e| e.code == b'Y') {
                        let full = join_name(&d.name, &e.name);
                        let p = self.fs_path(&full);
                        self.dump_entry(&mut tw, &mut report, &mut links, &full, &p)?;
                    }
                }
                let mut s = Snapshot::new(self.start);
                s.dirs = dirs
                    .iter()
                    .map(|d| SnapshotDir {
                        nfs: false,
                        mtime: d.stat.mtime,
                        dev: d.stat.dev,
                        ino: d.stat.ino,
                        name: d.name.clone(),
                        entries: d.entries.clone(),
                    })
                    .collect();
                s
            }
        };
        tw.finish().map_err(out_err)?;
        report.archive_bytes = tw.n;
        report.snapshot = snapshot.to_bytes();
        Ok(report)
    }

    /// Dumps one non-directory (a `Y` entry) named `name` in the archive.
    fn dump_entry(
        &self,
        tw: &mut TarOut<'_>,
        report: &mut TarWriteReport,
        links: &mut HashMap<(u64, u64), Vec<u8>>,
        name: &[u8],
        p: &Path,
    ) -> Result<()> {
        let follow = self.opts.dereference.follows_symlinks();
        let m = match stat_path(follow, p) {
            Ok(m) => m,
            Err(e) => {
                report.warn(format!(
                    "{}: file removed before we read it: {e}",
                    p.display()
                ));
                return Ok(());
            }
        };
        let mut st = Stat::of(&m);
        let ft = m.file_type();
        if ft.is_dir() {
            report.warn(format!(
                "{}: became a directory while the backup ran; not dumped",
                p.display()
            ));
            return Ok(());
        }
        if ft.is_socket() {
            report.warn(format!("{}: socket ignored", p.display()));
            return Ok(());
        }
        if st.nlink > 1
            && self.opts.dereference.stores_hard_links()
            && let Some(first) = links.get(&(st.dev, st.ino))
        {
            let h = self.header(&st, b'1', 0);
            tw.member(h, name, Some(first.as_slice()), &mut io::empty(), 0)
                .map_err(out_err)?;
            report.files += 1;
            return Ok(());
        }
        if ft.is_symlink() {
            let target = match fs::read_link(p) {
                Ok(t) => t,
                Err(e) => {
                    report.warn(format!("{}: cannot read the link: {e}", p.display()));
                    return Ok(());
                }
            };
            let h = self.header(&st, b'2', 0);
            tw.member(
                h,
                name,
                Some(target.as_os_str().as_bytes()),
                &mut io::empty(),
                0,
            )
            .map_err(out_err)?;
        } else if ft.is_file() {
            let file = match File::open(p) {
                Ok(f) => f,
                Err(e) => {
                    report.warn(format!("{}: cannot open: {e}", p.display()));
                    return Ok(());
                }
            };
            // The size of what was opened (it may have changed since the scan).
            if let Ok(fm) = file.metadata() {
                st = Stat::of(&fm);
            }
            let h = self.header(&st, b'0', st.size);
            let mut exact = Exact {
                file,
                left: st.size,
                short: 0,
                err: None,
            };
            tw.member(h, name, None, &mut exact, st.size)
                .map_err(out_err)?;
            report.bytes += st.size;
            if let Some(e) = exact.err {
                report.warn(format!(
                    "{}: read error: {e}; the rest of its {} bytes are zeros in the archive",
                    p.display(),
                    st.size
                ));
            } else if exact.short > 0 {
                report.warn(format!(
                    "{}: file shrank by {} bytes while read; padded with zeros",
                    p.display(),
                    exact.short
                ));
            }
        } else {
            let (flag, dev) = if ft.is_fifo() {
                (b'6', false)
            } else if ft.is_char_device() {
                (b'3', true)
            } else if ft.is_block_device() {
                (b'4', true)
            } else {
                report.warn(format!("{}: unknown file type; ignored", p.display()));
                return Ok(());
            };
            let mut h = self.header(&st, flag, 0);
            {
                // GNU tar fills both fields for every special file (0 for a FIFO); readers
                // that parse them must not meet empty fields.
                let (major, minor) = if dev {
                    (
                        rustix::fs::major(st.rdev as rustix::fs::Dev),
                        rustix::fs::minor(st.rdev as rustix::fs::Dev),
                    )
                } else {
                    (0, 0)
                };
                if let Some(g) = h.as_gnu_mut() {
                    g.set_device_major(major);
                    g.set_device_minor(minor);
                }
            }
            tw.member(h, name, None, &mut io::empty(), 0)
                .map_err(out_err)?;
        }
        if st.nlink > 1 && self.opts.dereference.stores_hard_links() {
            links.insert((st.dev, st.ino), name.to_vec());
        }
        report.files += 1;
        Ok(())
    }

    /// A GNU header with `st`'s attributes, the type flag and size; the name comes later.
    fn header(&self, st: &Stat, flag: u8, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_mode(st.mode & 0o7777);
        h.set_uid(u64::from(st.uid));
        h.set_gid(u64::from(st.gid));
        h.set_size(size);
        h.set_mtime(st.mtime.sec.max(0) as u64);
        h.set_entry_type(tar::EntryType::new(flag));
        if let Some(g) = h.as_gnu_mut() {
            // GNU tar fills atime and ctime in incremental archives.
            g.set_atime(st.atime.max(0) as u64);
            g.set_ctime(st.ctime.sec.max(0) as u64);
            copy_field(&mut g.uname, self.owners.user(st.uid));
            copy_field(&mut g.gname, self.owners.group(st.gid));
        }
        h
    }
}

fn out_err(e: io::Error) -> Error {
    Error::io("the backup stream", e)
}

fn copy_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Reads exactly `left` bytes of a file: zeros past an early end or a read error (recorded),
/// nothing past `left` (a file that grew is cut at the size in its header).
struct Exact {
    file: File,
    left: u64,
    short: u64,
    err: Option<io::Error>,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = if self.err.is_some() || self.short > 0 {
            0
        } else {
            loop {
                match self.file.read(&mut buf[..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.err = Some(e);
                        break 0;
                    }
                }
            }
        };
        if n == 0 {
            // Early end: zeros for the rest, as GNU tar pads a file that shrank.
            if self.err.is_none() {
                self.short = self.left;
            }
            buf[..want].fill(0);
            self.left -= want as u64;
            return Ok(want);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes members: GNU headers (with `././@LongLink` members for names and link targets of
/// 100 bytes or more, as GNU tar does), data padded to 512 bytes, and the end.
///
/// Names are written as given (`./a/b`): the `tar` crate's path setters would drop the `./`
/// that GNU tar keeps, so the name fields are filled here and the crate's [`tar::Header`]
/// provides the rest of the layout, the numbers and the checksum.
struct TarOut<'w> {
    w: &'w mut dyn Write,
    n: u64,
    buf: Vec<u8>,
}

const BLOCK: u64 = 512;
/// GNU tar's record: 20 blocks; the archive's length is a multiple of it.
const RECORD: u64 = 10240;

impl TarOut<'_> {
    fn raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.n += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = len % BLOCK;
        if rem != 0 {
            self.raw(&[0u8; BLOCK as usize][..(BLOCK - rem) as usize])?;
        }
        Ok(())
    }

    fn long(&mut self, kind: u8, value: &[u8]) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        copy_field(&mut h.as_old_mut().name, b"././@LongLink");
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(value.len() as u64 + 1);
        h.set_entry_type(tar::EntryType::new(kind));
        if let Some(g) = h.as_gnu_mut() {
            copy_field(&mut g.uname, b"root");
            copy_field(&mut g.gname, b"root");
        }
        h.set_cksum();
        self.raw(h.as_bytes())?;
        self.raw(value)?;
        self.raw(&[0])?;
        self.pad(value.len() as u64 + 1)
    }

    fn member(
        &mut self,
        mut h: tar::Header,
        name: &[u8],
        link: Option<&[u8]>,
        data: &mut dyn Read,
        size: u64,
    ) -> io::Result<()> {
        if name.len() >= 100 {
            self.long(b'L', name)?;
        }
        copy_field(&mut h.as_old_mut().name, name);
        if let Some(link) = link {
            if link.len() >= 100 {
                self.long(b'K', link)?;
            }
            copy_field(&mut h.as_old_mut().linkname, link);
        }
        h.set_cksum();
        self.raw(h.as_bytes())?;
        if size > 0 {
            if self.buf.is_empty() {
                self.buf = vec![0u8; 1 << 20];
            }
            let mut left = size;
            while left > 0 {
                let want = self
                    .buf
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = data.read(&mut self.buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "a member's data ended before its size",
                    ));
                }
                self.w.write_all(&self.buf[..n])?;
                self.n += n as u64;
                left -= n as u64;
            }
            self.pad(size)?;
        }
        Ok(())
    }

    /// Two zero blocks, then zeros up to a whole record (`-b20`).
    fn finish(&mut self) -> io::Result<()> {
        self.raw(&[0u8; 2 * BLOCK as usize])?;
        let rem = self.n % RECORD;
        if rem != 0 {
            let zeros = vec![0u8; (RECORD - rem) as usize];
            self.raw(&zeros)?;
        }
        self.w.flush()
    }
}

// ------------------------------------------------------------------------------ owners

/// User and group names by id, from `/etc/passwd` and `/etc/group` (the first entry of an id
/// wins, as `getpwuid` answers). An id without a name gets an empty name field: GNU tar then
/// restores by number.
struct Owners {
    users: HashMap<u32, Vec<u8>>,
    groups: HashMap<u32, Vec<u8>>,
}

impl Owners {
    fn load() -> Self {
        Owners {
            users: Self::table("/etc/passwd"),
            groups: Self::table("/etc/group"),
        }
    }

    fn table(path: &str) -> HashMap<u32, Vec<u8>> {
        let mut map = HashMap::new();
        if let Ok(text) = fs::read(path) {
            for line in text.split(|b| *b == b'\n') {
                let mut f = line.split(|b| *b == b':');
                let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next()) else {
                    continue;
                };
                if let Some(id) = std::str::from_utf8(id).ok().and_then(|s| s.parse().ok()) {
                    map.entry(id).or_insert_with(|| name.to_vec());
                }
            }
        }
        map
    }

    fn user(&self, uid: u32) -> &[u8] {
        self.users.get(&uid).map(Vec::as_slice).unwrap_or_default()
    }

    fn group(&self, gid: u32) -> &[u8] {
        self.groups.get(&gid).map(Vec::as_slice).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
