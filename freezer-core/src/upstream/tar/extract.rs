//! Extraction of one level's tar archive into the restore folder with GNU tar's
//! `--incremental --overwrite` semantics (docs/UPSTREAM-TAR.md §4).
//!
//! * A `D` member (GNU dumpdir) creates its directory, applies the renames of its dumpdir
//!   (`R`/`T`, `X` for a temporary name), then removes every entry of the directory its
//!   dumpdir does not name (`Y`, `N`, `D`): that is how deletions are restored. Its attributes
//!   are applied at the end of the level, deepest directory first.
//! * Regular files, hard links (to a name already restored), symlinks, fifos and devices replace
//!   whatever is at their name; mode (with setuid, setgid, sticky), owner (by name, then number;
//!   only as root) and mtime (symlinks not followed) are restored.
//!
//! It must never write, remove or rename anything outside the restore folder: member names and
//! dumpdir entries that are absolute or contain `..` are refused, every directory is opened
//! relative to the restore folder with `O_NOFOLLOW` one component at a time (a symlink in the
//! way is refused, never followed), and removals never follow symlinks. Refusals name the
//! member and the data object.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// Counts of what a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExtractStats {
    /// Regular files written.
    pub files: u64,
    /// Bytes written into them.
    pub bytes: u64,
    /// Directory members (`D`, or plain directories).
    pub dirs: u64,
    /// Symlinks made.
    pub symlinks: u64,
    /// Hard links made.
    pub hard_links: u64,
    /// Fifos and device nodes made.
    pub specials: u64,
    /// Entries removed because a dumpdir did not name them (deletions between levels, or
    /// files that were in the restore folder before).
    pub removed: u64,
    /// Directory renames applied (`R`/`T` in a dumpdir).
    pub renamed: u64,
}

/// Why a member name is refused.
fn check_name(raw: &[u8]) -> std::result::Result<Vec<u8>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("an absolute name");
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("a `..` component"),
            p => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(p);
            }
        }
    }
    Ok(out)
}

fn split_parent(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Failures inside the extractor, before they get the data key and the member.
enum Fail {
    /// The member is refused (hostile or unsupported): the reason.
    Refused(String),
    /// A file-system call failed on the named path (relative to the restore folder).
    Io(Vec<u8>, io::Error),
    /// Reading the archive failed (truncated or damaged stream).
    Stream(io::Error),
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Self {
        Fail::Io(Vec::new(), e.into())
    }
}

type R<T> = std::result::Result<T, Fail>;

fn at(path: &[u8]) -> impl FnOnce(Errno) -> Fail + '_ {
    move |e| Fail::Io(path.to_vec(), e.into())
}

/// Owner names from `/etc/passwd` and `/etc/group`, loaded when first needed.
#[derive(Debug, Default)]
struct Ids {
    users: HashMap<Vec<u8>, u32>,
    groups: HashMap<Vec<u8>, u32>,
}

impl Ids {
    fn load() -> Ids {
        let read = |p: &str| {
            let mut m = HashMap::new();
            if let Ok(text) = std::fs::read(p) {
                for line in text.split(|b| *b == b'\n') {
                    let mut f = line.split(|b| *b == b':');
                    if let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next())
                        && let Ok(id) = std::str::from_utf8(id).unwrap_or("x").parse::<u32>()
                    {
                        m.entry(name.to_vec()).or_insert(id);
                    }
                }
            }
            m
        };
        Ids {
            users: read("/etc/passwd"),
            groups: read("/etc/group"),
        }
    }
}

/// A directory's attributes, applied at the end of its level.
struct DirAttrs {
    rel: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// Writes members into the restore folder. One per restore: levels are applied in order.
#[derive(Debug)]
pub(crate) struct Extractor {
    root: Arc<OwnedFd>,
    dest: PathBuf,
    owners: bool,
    ids: Option<Ids>,
    /// The directory last written into, open: members come directory by directory.
    cached: Option<(Vec<u8>, Arc<OwnedFd>)>,
    pub stats: ExtractStats,
}

impl std::fmt::Debug for DirAttrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirAttrs")
            .field("rel", &show(&self.rel))
            .finish()
    }
}

impl Extractor {
    /// Opens the restore folder `dest` (which must exist). `owners`: restore owners (root).
    pub fn new(dest: &Path, owners: bool) -> Result<Self> {
        let root = rustix::fs::open(
            dest,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(dest.display(), e.into()))?;
        Ok(Extractor {
            root: Arc::new(root),
            dest: dest.to_path_buf(),
            owners,
            ids: None,
            cached: None,
            stats: ExtractStats::default(),
        })
    }

    /// Extracts one level's archive from `reader` (`key` names its data object in errors).
    /// A read error is returned as such: the caller decides whether the decoder or the sink
    /// caused it.
    pub fn extract_level(
        &mut self,
        reader: impl Read,
        key: &str,
    ) -> std::result::Result<(), LevelError> {
        let mut ar = ::tar::Archive::new(reader);
        // upstream restores with --ignore-zeros; it also reads the stream to its end, so that
        // the compressed stream's own checks (CRC, sizes) run.
        ar.set_ignore_zeros(true);
        let mut dirs: Vec<DirAttrs> = Vec::new();
        let mut buf = vec![0u8; super::read::CHUNK];
        let entries = ar.entries().map_err(LevelError::Stream)?;
        for entry in entries {
            let mut entry = entry.map_err(LevelError::Stream)?;
            let raw = entry.path_bytes().into_owned();
            let r = self.member(&mut entry, &raw, &mut dirs, &mut buf);
            match r {
                Ok(()) => {}
                Err(Fail::Stream(e)) => return Err(LevelError::Stream(e)),
                Err(Fail::Refused(why)) => {
                    return Err(LevelError::Other(Error::corrupt(
                        format!("member {:?} of {key}", show(&raw)),
                        format!("refused: {why}"),
                    )));
                }
                Err(Fail::Io(path, e)) => {
                    let p = if path.is_empty() { raw.clone() } else { path };
                    return Err(LevelError::Other(Error::io(
                        format!(
                            "restoring member {:?} of {key} to {}",
                            show(&raw),
                            self.dest.join(os(&p)).display()
                        ),
                        e,
                    )));
                }
            }
        }
        // Directory attributes last, deepest first (so that setting a child's mtime does not
        // bump its parent's, and read-only directories are filled before).
        dirs.sort_by_key(|d| {
            std::cmp::Reverse(
                d.rel.iter().filter(|b| **b == b'/').count() + usize::from(!d.rel.is_empty()),
            )
        });
        for d in &dirs {
            self.dir_attrs(d).map_err(|e| {
                let (p, e) = match e {
                    Fail::Io(p, e) => (p, e),
                    Fail::Refused(w) => (d.rel.clone(), io::Error::other(w)),
                    Fail::Stream(e) => (d.rel.clone(), e),
                };
                LevelError::Other(Error::io(
                    format!(
                        "setting the attributes of {}",
                        self.dest.join(os(&p)).display()
                    ),
                    e,
                ))
            })?;
        }
        Ok(())
    }

    fn member<T: Read>(
        &mut self,
        entry: &mut ::tar::Entry<'_, T>,
        raw: &[u8],
        dirs: &mut Vec<DirAttrs>,
        buf: &mut [u8],
    ) -> R<()> {
        let rel = check_name(raw).map_err(|w| Fail::Refused(w.into()))?;
        let h = entry.header();
        let kind = h.entry_type();
        let mode = h.mode().map_err(Fail::Stream)? & 0o7777;
        let mtime = h.mtime().map_err(Fail::Stream)? as i64;
        let (uid, gid) = self.owner_of(h).map_err(Fail::Stream)?;
        use ::tar::EntryType as E;
        match kind {
            _ if kind.as_byte() == b'D' || kind == E::Directory => {
                let mut dumpdir = Vec::new();
                if kind.as_byte() == b'D' {
                    entry.read_to_end(&mut dumpdir).map_err(Fail::Stream)?;
                }
                self.directory(&rel, (kind.as_byte() == b'D').then_some(&dumpdir[..]))?;
                dirs.push(DirAttrs {
                    rel,
                    mode,
                    uid,
                    gid,
                    mtime,
                });
                self.stats.dirs += 1;
            }
            E::Regular | E::Continuous | E::GNUSparse => {
                let (dir, name) = self.parent_of(&rel)?;
                let fd = self.create(&dir, &rel, name, |d, n| {
                    rustix::fs::openat(
                        d,
                        os(n),
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                })?;
                let mut f = File::from(fd);
                loop {
                    let n = match entry.read(buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(Fail::Stream(e)),
                    };
                    f.write_all(&buf[..n])
                        .map_err(|e| Fail::Io(rel.clone(), e))?;
                    self.stats.bytes += n as u64;
                }
                let fd = f.as_fd();
                if self.owners {
                    rustix::fs::fchown(fd, Some(uid_of(uid)), Some(gid_of(gid)))
                        .map_err(at(&rel))?;
                }
                rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(at(&rel))?;
                rustix::fs::futimens(fd, &times(mtime)).map_err(at(&rel))?;
                self.stats.files += 1;
            }
            E::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Fail::Refused("a hard link without a target".into()))?
                    .into_owned();
                let trel = check_name(&target)
                    .map_err(|w| Fail::Refused(format!("a hard link to {w}")))?;
                if trel.is_empty() {
                    return Err(Fail::Refused("a hard link to the restore folder".into()));
                }
                let (tparent, tname) = split_parent(&trel);
                let tdir = self.open_dir(tparent, false).map_err(|f| match f {
                    Fail::Refused(w) => Fail::Refused(format!("its link target: {w}")),
                    o => o,
                })?;
                let (dir, name) = self.parent_of(&rel)?;
                self.create(&dir, &rel, name, |d, n| {
                    rustix::fs::linkat(&tdir, os(tname), d, os(n), AtFlags::empty())
                })
                .map_err(|f| match f {
                    Fail::Io(p, e) if e.kind() == io::ErrorKind::NotFound => Fail::Io(
                        p,
                        io::Error::new(
                            e.kind(),
                            format!("the hard link's target {:?} is not there", show(&trel)),
                        ),
                    ),
                    o => o,
                })?;
                self.stats.hard_links += 1;
            }
            E::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Fail::Refused("a symlink without a target".into()))?
                    .into_owned();
                if rel.is_empty() {
                    return Err(Fail::Refused(
                        "a symlink in place of the restore folder".into(),
                    ));
                }
                let (dir, name) = self.parent_of(&rel)?;
                self.create(&dir, &rel, name, |d, n| {
                    rustix::fs::symlinkat(os(&target), d, os(n))
                })?;
                if self.owners {
                    rustix::fs::chownat(
                        &*dir,
                        os(name),
                        Some(uid_of(uid)),
                        Some(gid_of(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(at(&rel))?;
                }
                rustix::fs::utimensat(&*dir, os(name), &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(at(&rel))?;
                self.stats.symlinks += 1;
            }
            E::Fifo | E::Char | E::Block => {
                let ft = match kind {
                    E::Fifo => FileType::Fifo,
                    E::Char => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                // A FIFO has no device numbers: some writers leave the fields empty.
                let number = |n: std::io::Result<Option<u32>>| match (kind, n) {
                    (E::Fifo, _) => Ok(0),
                    (_, n) => n.map(|n| n.unwrap_or(0)).map_err(Fail::Stream),
                };
                let major = number(entry.header().device_major())?;
                let minor = number(entry.header().device_minor())?;
                let dev = rustix::fs::makedev(major, minor);
                if rel.is_empty() {
                    return Err(Fail::Refused(
                        "a special file in place of the restore folder".into(),
                    ));
                }
                let (dir, name) = self.parent_of(&rel)?;
                self.create(&dir, &rel, name, |d, n| {
                    rustix::fs::mknodat(d, os(n), ft, Mode::from_raw_mode(0o600), dev)
                })?;
                if self.owners {
                    rustix::fs::chownat(
                        &*dir,
                        os(name),
                        Some(uid_of(uid)),
                        Some(gid_of(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(at(&rel))?;
                }
                rustix::fs::chmodat(&*dir, os(name), Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(at(&rel))?;
                rustix::fs::utimensat(&*dir, os(name), &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(at(&rel))?;
                self.stats.specials += 1;
            }
            // A GNU volume label: nothing to restore.
            _ if kind.as_byte() == b'V' => {}
            other => {
                return Err(Fail::Refused(format!(
                    "unsupported member type {:?} ({:?})",
                    other.as_byte() as char,
                    other
                )));
            }
        }
        Ok(())
    }

    /// The owner to restore: by name when the name exists here, else by number (GNU tar as
    /// root). Not read unless restoring owners.
    fn owner_of(&mut self, h: &::tar::Header) -> io::Result<(u32, u32)> {
        if !self.owners {
            return Ok((0, 0));
        }
        let ids = self.ids.get_or_insert_with(Ids::load);
        let uid = match h.username_bytes().and_then(|n| ids.users.get(n)) {
            Some(u) => *u,
            None => h.uid()? as u32,
        };
        let gid = match h.groupname_bytes().and_then(|n| ids.groups.get(n)) {
            Some(g) => *g,
            None => h.gid()? as u32,
        };
        Ok((uid, gid))
    }

    /// Creates `name` in `dir` with `make`; what is in the way (a file, a symlink, a whole
    /// directory) is removed first, as `tar --overwrite` does.
    fn create<T>(
        &mut self,
        dir: &OwnedFd,
        rel: &[u8],
        name: &[u8],
        make: impl Fn(&OwnedFd, &[u8]) -> rustix::io::Result<T>,
    ) -> R<T> {
        if name.is_empty() {
            return Err(Fail::Refused("an empty name".into()));
        }
        match make(dir, name) {
            Ok(t) => Ok(t),
            Err(Errno::EXIST) => {
                self.remove_entry(dir, rel, name)?;
                make(dir, name).map_err(at(rel))
            }
            Err(e) => Err(at(rel)(e)),
        }
    }

    /// Removes `name` from `dir`, recursively for a directory, never following a symlink.
    fn remove_entry(&mut self, dir: &OwnedFd, rel: &[u8], name: &[u8]) -> R<()> {
        let st = match rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(at(rel)(e)),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            self.forget_under(rel);
            remove_tree(dir, name).map_err(|e| Fail::Io(rel.to_vec(), e))?;
        } else {
            rustix::fs::unlinkat(dir, os(name), AtFlags::empty()).map_err(at(rel))?;
        }
        Ok(())
    }

    fn forget_under(&mut self, rel: &[u8]) {
        if let Some((c, _)) = &self.cached {
            let under = rel.is_empty()
                || c == rel
                || (c.starts_with(rel) && c.get(rel.len()) == Some(&b'/'));
            if under {
                self.cached = None;
            }
        }
    }

    /// The open parent directory of `rel` and its last component.
    fn parent_of<'a>(&mut self, rel: &'a [u8]) -> R<(Arc<OwnedFd>, &'a [u8])> {
        let (parent, name) = split_parent(rel);
        if let Some((c, fd)) = &self.cached
            && c == parent
        {
            return Ok((fd.clone(), name));
        }
        let fd = Arc::new(self.open_dir(parent, true)?);
        self.cached = Some((parent.to_vec(), fd.clone()));
        Ok((fd, name))
    }

    /// Opens the directory `rel` one component at a time from the restore folder, never
    /// following a symlink; missing directories are created when `create` (as tar does for a
    /// member whose folder has no member of its own).
    fn open_dir(&self, rel: &[u8], create: bool) -> R<OwnedFd> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut fd = rustix::fs::openat(&*self.root, ".", flags, Mode::empty()).map_err(at(b""))?;
        if rel.is_empty() {
            return Ok(fd);
        }
        let mut end = 0;
        for part in rel.split(|b| *b == b'/') {
            end += part.len() + usize::from(end > 0);
            let here = &rel[..end];
            let next = match rustix::fs::openat(&fd, os(part), flags, Mode::empty()) {
                Ok(f) => f,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&fd, os(part), Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(at(here)(e)),
                    }
                    rustix::fs::openat(&fd, os(part), flags, Mode::empty()).map_err(at(here))?
                }
                Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                    let st = rustix::fs::statat(&fd, os(part), AtFlags::SYMLINK_NOFOLLOW);
                    if st.is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink) {
                        return Err(Fail::Refused(format!(
                            "its path goes through the symlink {:?} in the restore folder, which is never followed",
                            show(here)
                        )));
                    }
                    return Err(at(here)(e));
                }
                Err(e) => return Err(at(here)(e)),
            };
            fd = next;
        }
        Ok(fd)
    }

    /// A directory member: make it, then (for a GNU dumpdir) apply its renames and purge what
    /// it does not name.
    fn directory(&mut self, rel: &[u8], dumpdir: Option<&[u8]>) -> R<()> {
        if !rel.is_empty() {
            let (dir, name) = self.parent_of(rel)?;
            match rustix::fs::statat(&*dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                Ok(_) => {
                    rustix::fs::unlinkat(&*dir, os(name), AtFlags::empty()).map_err(at(rel))?;
                    rustix::fs::mkdirat(&*dir, os(name), Mode::from_raw_mode(0o700))
                        .map_err(at(rel))?;
                }
                Err(Errno::NOENT) => {
                    rustix::fs::mkdirat(&*dir, os(name), Mode::from_raw_mode(0o700))
                        .map_err(at(rel))?;
                }
                Err(e) => return Err(at(rel)(e)),
            }
        }
        let Some(dumpdir) = dumpdir else {
            return Ok(());
        };
        let entries = parse_dumpdir(dumpdir)?;
        // Renames first (GNU tar's try_purge_directory), then the purge.
        let mut temp: Option<Vec<u8>> = None;
        let mut i = 0;
        while i < entries.len() {
            let (code, name) = entries[i];
            match code {
                b'X' => {
                    let base = check_name(name)
                        .map_err(|w| Fail::Refused(format!("dumpdir entry X with {w}")))?;
                    let mut t = base.clone();
                    if !t.is_empty() {
                        t.push(b'/');
                    }
                    t.extend_from_slice(
                        format!("tar.{:08x}", std::process::id() ^ i as u32).as_bytes(),
                    );
                    let d = self.open_dir(&base, true)?;
                    let (_, tname) = split_parent(&t);
                    rustix::fs::mkdirat(&d, os(tname), Mode::from_raw_mode(0o700))
                        .map_err(at(&t))?;
                    temp = Some(t);
                }
                b'R' => {
                    let Some((b'T', dst)) = entries.get(i + 1).copied() else {
                        return Err(Fail::Refused(
                            "a dumpdir rename R not followed by its T".into(),
                        ));
                    };
                    i += 1;
                    let mut src = check_name(name)
                        .map_err(|w| Fail::Refused(format!("dumpdir rename source with {w}")))?;
                    let mut dst = check_name(dst)
                        .map_err(|w| Fail::Refused(format!("dumpdir rename target with {w}")))?;
                    if name.is_empty() {
                        src = temp.clone().ok_or_else(|| {
                            Fail::Refused("a dumpdir rename from a temporary name without X".into())
                        })?;
                    } else if dst.is_empty() {
                        dst = temp.clone().ok_or_else(|| {
                            Fail::Refused("a dumpdir rename to a temporary name without X".into())
                        })?;
                    }
                    if src.is_empty() || dst.is_empty() {
                        return Err(Fail::Refused(
                            "a dumpdir rename of the restore folder itself".into(),
                        ));
                    }
                    self.rename(&src, &dst)?;
                }
                b'T' => return Err(Fail::Refused("a dumpdir rename T without its R".into())),
                _ => {}
            }
            i += 1;
        }
        let keep: HashSet<&[u8]> = entries
            .iter()
            .filter(|(c, _)| matches!(c, b'Y' | b'N' | b'D'))
            .map(|(_, n)| *n)
            .collect();
        let d = self.open_dir(rel, false)?;
        let mut listing = rustix::fs::Dir::read_from(&d).map_err(at(rel))?;
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        while let Some(e) = listing.read() {
            let e = e.map_err(at(rel))?;
            let n = e.file_name().to_bytes();
            if n == b"." || n == b".." || keep.contains(n) {
                continue;
            }
            doomed.push(n.to_vec());
        }
        for n in doomed {
            let mut crel = rel.to_vec();
            if !crel.is_empty() {
                crel.push(b'/');
            }
            crel.extend_from_slice(&n);
            self.remove_entry(&d, &crel, &n)?;
            self.stats.removed += 1;
        }
        Ok(())
    }

    fn rename(&mut self, src: &[u8], dst: &[u8]) -> R<()> {
        let (sp, sn) = split_parent(src);
        let (dp, dn) = split_parent(dst);
        let sdir = self.open_dir(sp, false);
        let sdir = match sdir {
            Ok(d) => d,
            // Nothing to rename (a restore that did not start from this chain's level 0).
            Err(Fail::Io(_, e)) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(f) => return Err(f),
        };
        let ddir = self.open_dir(dp, true)?;
        self.cached = None;
        match rustix::fs::renameat(&sdir, os(sn), &ddir, os(dn)) {
            Ok(()) => {
                self.stats.renamed += 1;
                Ok(())
            }
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(at(src)(e)),
        }
    }

    fn dir_attrs(&mut self, d: &DirAttrs) -> R<()> {
        let fd = match self.open_dir(&d.rel, false) {
            Ok(fd) => fd,
            // Removed since (a later member replaced it): nothing to set.
            Err(Fail::Io(_, e)) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(f) => return Err(f),
        };
        if self.owners {
            rustix::fs::fchown(&fd, Some(uid_of(d.uid)), Some(gid_of(d.gid)))
                .map_err(at(&d.rel))?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode)).map_err(at(&d.rel))?;
        rustix::fs::futimens(&fd, &times(d.mtime)).map_err(at(&d.rel))?;
        Ok(())
    }
}

/// What went wrong in a level, before the caller names the data object.
#[derive(Debug)]
pub(crate) enum LevelError {
    /// The archive could not be read (the decoder or sink has the reason).
    Stream(io::Error),
    /// Anything else, already named.
    Other(Error),
}

/// A dumpdir's entries: `(code, name)`, up to the terminating empty entry. Names of `Y`, `N`
/// and `D` entries are single components; anything else is refused.
fn parse_dumpdir(d: &[u8]) -> R<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    for e in d.split(|b| *b == 0) {
        let Some((&code, name)) = e.split_first() else {
            break;
        };
        match code {
            b'Y' | b'N' | b'D' => {
                if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
                    return Err(Fail::Refused(format!(
                        "dumpdir entry {:?} is not a plain name",
                        show(e)
                    )));
                }
            }
            b'R' | b'T' | b'X' => {}
            other => {
                return Err(Fail::Refused(format!(
                    "unknown dumpdir code {:?} in entry {:?}",
                    other as char,
                    show(e)
                )));
            }
        }
        out.push((code, name));
    }
    Ok(out)
}

/// Removes `name` under `dir` and everything below it, opening each directory with
/// `O_NOFOLLOW` relative to its parent: a symlink is removed, never followed.
fn remove_tree(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::unlinkat(dir, os(name), AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::NOTEMPTY | Errno::EXIST) => {}
        Err(Errno::NOTDIR) => return Ok(rustix::fs::unlinkat(dir, os(name), AtFlags::empty())?),
        Err(e) => return Err(e.into()),
    }
    let sub = rustix::fs::openat(dir, os(name), flags, Mode::empty())?;
    let mut names = Vec::new();
    let mut listing = rustix::fs::Dir::read_from(&sub)?;
    while let Some(e) = listing.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push((n.to_vec(), e.file_type() == FileType::Directory));
        }
    }
    for (n, is_dir) in names {
        if is_dir {
            remove_tree(&sub, &n)?;
        } else {
            match rustix::fs::unlinkat(&sub, os(&n), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                // d_type unknown on some file systems: try as a directory.
                Err(Errno::ISDIR | Errno::PERM) => remove_tree(&sub, &n)?,
                Err(e) => return Err(e.into()),
            }
        }
    }
    rustix::fs::unlinkat(dir, os(name), AtFlags::REMOVEDIR)?;
    Ok(())
}

fn uid_of(u: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(u)
}

fn gid_of(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g)
}

fn times(mtime: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        last_modification: Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    }
}

#[cfg(test)]
pub(crate) fn check_name_for_tests(raw: &[u8]) -> std::result::Result<Vec<u8>, &'static str> {
    check_name(raw)
}
