//! The `fs` source: a folder (or one file) of the local file system.
//!
//! It records files, folders, symlinks, hard links (by inode), devices and pipes, with
//! permissions, owners, nanosecond times and extended attributes; finds the data extents of
//! sparse files so holes are neither read nor stored; applies `--exclude` globs; can stay on
//! one file system; and follows symlinks as upstream's `dereference_symlink` asks. It opens
//! files with `O_NOFOLLOW` (a file swapped for a symlink after listing is not followed) and
//! `O_NOATIME` where allowed. It never writes to the source.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rustix::fs::{OFlags, SeekFrom};

use super::{ContentReader, Listing, Source, SourceEntry, SourceInfo};
use crate::error::{Error, IoContext, Result};
use crate::repo::tree::{Node, NodeKind};

/// Upstream's `dereference_symlink`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dereference {
    /// Store symlinks as symlinks and hard links as links (the default).
    #[default]
    None,
    /// Follow symlinks: store what they point to (tar `--dereference`).
    Soft,
    /// Store each hard link as a file of its own (tar `--hard-dereference`).
    Hard,
    /// Both.
    All,
}

impl Dereference {
    fn soft(self) -> bool {
        matches!(self, Dereference::Soft | Dereference::All)
    }

    fn hard(self) -> bool {
        matches!(self, Dereference::Hard | Dereference::All)
    }
}

/// Options of the `fs` source.
#[derive(Clone, Debug, Default)]
pub struct FsOptions {
    /// Glob patterns of entries to leave out. A pattern without `/` matches an entry's name at
    /// any depth (`*.log`); one with a `/` (a leading one included: `/cache`) matches its path
    /// from the top of the backup (`var/cache/*`). An excluded folder is left out whole.
    pub excludes: Vec<String>,
    /// Do not go inside folders on other file systems (they are stored empty).
    pub one_file_system: bool,
    /// How to treat symlinks and hard links.
    pub dereference: Dereference,
}

/// A folder or file of the local file system.
#[derive(Debug)]
pub struct FsSource {
    root: PathBuf,
    name_globs: GlobSet,
    path_globs: GlobSet,
    one_file_system: bool,
    root_dev: u64,
    dereference: Dereference,
    seen_dirs: Mutex<HashSet<(u64, u64)>>,
}

fn compile(patterns: &[String]) -> Result<(GlobSet, GlobSet)> {
    let mut names = GlobSetBuilder::new();
    let mut paths = GlobSetBuilder::new();
    for p in patterns {
        let trimmed = p
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(Error::bad_input(
                "exclude",
                format!("{p:?} is an empty pattern"),
            ));
        }
        let glob = GlobBuilder::new(trimmed)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::bad_input("exclude", format!("{p:?}: {e}")))?;
        let anchored = p.starts_with('/') || p.starts_with("./");
        if anchored || trimmed.contains('/') {
            paths.add(glob);
        } else {
            names.add(glob);
        }
    }
    let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::bad_input("exclude", e));
    Ok((build(names)?, build(paths)?))
}

impl FsSource {
    /// A source reading `root` (a folder or a file), which must exist.
    pub fn new(root: impl AsRef<Path>, opts: &FsOptions) -> Result<Self> {
        let given = root.as_ref();
        let root = std::path::absolute(given).ctx(format!("path_to_backup {}", given.display()))?;
        let md = std::fs::metadata(&root).ctx(format!("path_to_backup {}", root.display()))?;
        let (name_globs, path_globs) = compile(&opts.excludes)?;
        Ok(FsSource {
            root,
            name_globs,
            path_globs,
            one_file_system: opts.one_file_system,
            root_dev: md.dev(),
            dereference: opts.dereference,
            seen_dirs: Mutex::new(HashSet::new()),
        })
    }

    fn excluded(&self, path: &Path, name: &OsStr) -> bool {
        if self.name_globs.is_match(Path::new(name)) {
            return true;
        }
        if self.path_globs.is_empty() {
            return false;
        }
        path.strip_prefix(&self.root)
            .is_ok_and(|rel| self.path_globs.is_match(rel))
    }

    fn describe(&self, path: PathBuf, name: &OsStr, md: &Metadata) -> Result<SourceEntry> {
        let ft = md.file_type();
        let kind = if ft.is_file() {
            NodeKind::File
        } else if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_symlink() {
            NodeKind::Symlink
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else if ft.is_char_device() {
            NodeKind::CharDev
        } else if ft.is_block_device() {
            NodeKind::BlockDev
        } else {
            NodeKind::Socket
        };
        let mut node = node_of(name, md, kind);
        if self.dereference.hard() {
            node.links = 1;
        }
        if kind == NodeKind::Symlink {
            node.target = std::fs::read_link(&path)
                .ctx(path.display())?
                .into_os_string()
                .into_vec();
        }
        let mut descend = kind == NodeKind::Dir;
        if descend && self.one_file_system && md.dev() != self.root_dev {
            descend = false;
        }
        if descend && self.dereference.soft() {
            // Following symlinks can reach a folder twice, or loop: enter each folder once.
            let mut seen = self.seen_dirs.lock().unwrap_or_else(|e| e.into_inner());
            descend = seen.insert((md.dev(), md.ino()));
        }
        Ok(SourceEntry {
            path,
            node,
            descend,
            stream: false,
        })
    }

    fn stat(&self, path: &Path) -> std::io::Result<Metadata> {
        let lstat = std::fs::symlink_metadata(path)?;
        if self.dereference.soft() && lstat.file_type().is_symlink() {
            // A dangling symlink stays a symlink.
            return Ok(std::fs::metadata(path).unwrap_or(lstat));
        }
        Ok(lstat)
    }
}

use std::os::unix::ffi::OsStringExt;

fn node_of(name: &OsStr, md: &Metadata, kind: NodeKind) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind: Some(kind),
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_ns: md.mtime_nsec() as u32,
        ctime: md.ctime(),
        ctime_ns: md.ctime_nsec() as u32,
        inode: md.ino(),
        device: md.dev(),
        links: md.nlink(),
        size: if kind == NodeKind::File { md.len() } else { 0 },
        rdev: if matches!(kind, NodeKind::CharDev | NodeKind::BlockDev) {
            md.rdev()
        } else {
            0
        },
        ..Node::default()
    }
}

impl Source for FsSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            mode: "fs".into(),
            path: self.root.to_string_lossy().into_owned(),
            command: None,
        }
    }

    fn root(&self) -> Result<SourceEntry> {
        let md = std::fs::metadata(&self.root).ctx(self.root.display())?;
        let name = self
            .root
            .file_name()
            .unwrap_or(OsStr::new("root"))
            .to_owned();
        let mut e = self.describe(self.root.clone(), &name, &md)?;
        e.descend = md.is_dir();
        if md.is_dir() {
            self.seen_dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((md.dev(), md.ino()));
        }
        Ok(e)
    }

    fn list(&self, dir: &SourceEntry) -> Result<Listing> {
        let mut out = Listing::default();
        let rd = std::fs::read_dir(&dir.path).ctx(dir.path.display())?;
        for entry in rd {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    out.errors
                        .push((dir.path.display().to_string(), e.to_string()));
                    continue;
                }
            };
            let name = entry.file_name();
            let path = entry.path();
            if self.excluded(&path, &name) {
                continue;
            }
            let described = self
                .stat(&path)
                .map_err(|e| Error::io(path.display(), e))
                .and_then(|md| self.describe(path.clone(), &name, &md));
            match described {
                Ok(e) => out.entries.push(e),
                // Vanished between listing and stat: not an error, just not there any more.
                Err(Error::NotFound { .. }) => {}
                Err(e) => out.errors.push((path.display().to_string(), e.to_string())),
            }
        }
        out.entries.sort_by(|a, b| a.node.name.cmp(&b.node.name));
        Ok(out)
    }

    fn xattrs(&self, entry: &SourceEntry) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        read_xattrs(&entry.path, self.dereference.soft()).ctx(entry.path.display())
    }

    fn open(&self, entry: &SourceEntry) -> Result<Box<dyn ContentReader>> {
        let mut flags = OFlags::NOATIME;
        if !self.dereference.soft() {
            flags |= OFlags::NOFOLLOW;
        }
        let open = |flags: OFlags| {
            OpenOptions::new()
                .read(true)
                .custom_flags(flags.bits() as i32)
                .open(&entry.path)
        };
        // O_NOATIME is refused on files the caller does not own (unless root).
        let file = match open(flags) {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
                open(flags - OFlags::NOATIME)
            }
            r => r,
        }
        .ctx(entry.path.display())?;
        let md = file.metadata().ctx(entry.path.display())?;
        if !md.is_file() {
            return Err(Error::io(
                entry.path.display(),
                std::io::Error::other("is no longer a regular file"),
            ));
        }
        Ok(Box::new(FsReader {
            before: Fingerprint::of(&md),
            sparse_hint: md.blocks() * 512 < md.len(),
            size: md.len(),
            file,
        }))
    }
}

#[derive(PartialEq, Eq, Debug)]
struct Fingerprint {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

impl Fingerprint {
    fn of(md: &Metadata) -> Self {
        Fingerprint {
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
        }
    }
}

struct FsReader {
    file: File,
    size: u64,
    before: Fingerprint,
    sparse_hint: bool,
}

impl ContentReader for FsReader {
    fn data_extents(&mut self) -> Result<Option<Vec<(u64, u64)>>> {
        if !self.sparse_hint || self.size == 0 {
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut at = 0u64;
        while at < self.size {
            let data = match rustix::fs::seek(&self.file, SeekFrom::Data(at)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => break,
                // A file system without SEEK_DATA: read it all.
                Err(_) => return Ok(None),
            };
            if data >= self.size {
                break;
            }
            let hole = match rustix::fs::seek(&self.file, SeekFrom::Hole(data)) {
                Ok(h) => h.min(self.size),
                Err(_) => return Ok(None),
            };
            out.push((data, hole - data));
            at = hole;
        }
        if out.len() == 1 && out[0] == (0, self.size) {
            return Ok(None);
        }
        Ok(Some(out))
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r.map_err(|e| Error::io("read", e)),
            }
        }
    }

    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn finish(&mut self) -> Result<bool> {
        let md = self.file.metadata().map_err(|e| Error::io("fstat", e))?;
        Ok(Fingerprint::of(&md) != self.before)
    }
}

fn is_unsupported(e: &rustix::io::Errno) -> bool {
    *e == rustix::io::Errno::NOTSUP || *e == rustix::io::Errno::NODATA
}

/// Reads every extended attribute of `path` (of the link itself unless `follow`).
pub(crate) fn read_xattrs(path: &Path, follow: bool) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let list = |buf: &mut [u8]| {
        if follow {
            rustix::fs::listxattr(path, buf)
        } else {
            rustix::fs::llistxattr(path, buf)
        }
    };
    let mut names = vec![0u8; 256];
    let n = loop {
        match list(&mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(e) if is_unsupported(&e) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        }
        if names.len() > 1 << 24 {
            return Err(std::io::Error::other("extended attribute list too long"));
        }
    };
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let get = |buf: &mut [u8]| {
            let name = OsStr::from_bytes(name);
            if follow {
                rustix::fs::getxattr(path, name, buf)
            } else {
                rustix::fs::lgetxattr(path, name, buf)
            }
        };
        let mut value = vec![0u8; 256];
        let n = loop {
            match get(&mut value) {
                Ok(n) => break Some(n),
                Err(rustix::io::Errno::RANGE) if value.len() < 1 << 24 => {
                    value.resize(value.len() * 4, 0)
                }
                // Removed between listing and reading.
                Err(e) if is_unsupported(&e) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(n) = n {
            value.truncate(n);
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_match_names_anywhere_and_paths_from_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in ["a/x.log", "a/keep.txt", "cache/z/y.txt", "b/cache/keep.txt"] {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x").unwrap();
        }
        let opts = FsOptions {
            excludes: vec!["*.log".into(), "/cache".into()],
            ..FsOptions::default()
        };
        let src = FsSource::new(root, &opts).unwrap();
        let rootent = src.root().unwrap();
        let names = |e: &SourceEntry| -> Vec<String> {
            src.list(e)
                .unwrap()
                .entries
                .iter()
                .map(|e| e.node.name_lossy())
                .collect()
        };
        assert_eq!(names(&rootent), ["a", "b"]);
        let a = src.list(&rootent).unwrap().entries.remove(0);
        assert_eq!(names(&a), ["keep.txt"]);
        let b = src.list(&rootent).unwrap().entries.remove(1);
        assert_eq!(
            names(&b),
            ["cache"],
            "a path pattern only matches from the top"
        );
        assert!(
            FsSource::new(
                root,
                &FsOptions {
                    excludes: vec!["[".into()],
                    ..FsOptions::default()
                }
            )
            .is_err()
        );
    }

    #[test]
    fn sparse_files_report_their_data_extents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let f = File::create(&p).unwrap();
        f.write_all_at(&[1u8; 8192], 1 << 20).unwrap();
        f.set_len(4 << 20).unwrap();
        drop(f);
        let src = FsSource::new(dir.path(), &FsOptions::default()).unwrap();
        let root = src.root().unwrap();
        let entry = src.list(&root).unwrap().entries.remove(0);
        let mut r = src.open(&entry).unwrap();
        let ext = r.data_extents().unwrap().expect("sparse");
        assert_eq!(ext.len(), 1);
        assert!(
            ext[0].0 <= 1 << 20 && ext[0].0 + ext[0].1 >= (1 << 20) + 8192,
            "{ext:?}"
        );
        assert!(!r.finish().unwrap());
    }
}
