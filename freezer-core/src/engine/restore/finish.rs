//! Restore's last stage: files put in place (those not renamed as their last chunk was
//! written: damaged ones, empty ones), then hard links, then metadata (owners when root, modes,
//! xattrs, times), children first so a folder's time is set after its content. A file that an
//! interrupted fetch left unfinished keeps its temporary name and gets no metadata.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;

use rustix::fs::{AtFlags, Mode, OFlags, Timestamps};
use rustix::io::Errno;

use super::{Entry, lossy, open_beneath, parent_and_name};
use crate::repo::tree::NodeKind;

/// A window's files in place, hard links, then metadata, in the window's order (a folder after
/// everything below it); `marker` (a file at the top of the target) is taken and removed
/// before the top folder's metadata is set. Entries in `unfinished` stay as they are. Returns
/// warnings.
pub(super) fn finish_entries(
    root: &OwnedFd,
    entries: &[Entry],
    owners: bool,
    unfinished: &HashSet<u32>,
    marker: &mut Option<&str>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.tmp.is_none() || e.is_placed() || unfinished.contains(&(i as u32)) {
            continue;
        }
        // Its chunks did not all come (it is damaged): it keeps its size, with holes.
        if e.node.size > 0
            && let Some(tmp) = &e.tmp
            && let Err(err) = open_beneath(root, tmp, OFlags::WRONLY)
                .and_then(|f| Ok(rustix::fs::ftruncate(&f, e.node.size)?))
        {
            warnings.push(format!("{}: size not restored: {err}", lossy(&e.rel)));
        }
        if let Err(err) = e.put_in_place(root) {
            warnings.push(format!("{}: not restored: {err}", lossy(&e.rel)));
            if let Some(tmp) = &e.tmp {
                let _ =
                    open_beneath(root, parent_and_name(tmp).0, OFlags::DIRECTORY).and_then(|dir| {
                        let name = OsStr::from_bytes(parent_and_name(tmp).1);
                        Ok(rustix::fs::unlinkat(&dir, name, AtFlags::empty())?)
                    });
            }
        }
    }
    // Later names of a hard-linked file, in this window or a later one, are made if it is.
    for e in entries {
        if let Some(first) = &e.first_of {
            first.placed.store(e.is_placed(), Ordering::Release);
        }
    }
    let remove_marker = |marker: &mut Option<&str>| {
        if let Some(m) = marker.take()
            && let Err(e) = rustix::fs::unlinkat(root, m, AtFlags::empty())
        {
            tracing::warn!("{m}: not removed: {e}");
        }
    };
    let mut dirs = DirCache::new(root);
    for e in entries {
        let Some(first) = &e.link_to else { continue };
        if !first.placed.load(Ordering::Acquire) {
            // Reported with the file it shares.
            continue;
        }
        let res = (|| -> std::io::Result<()> {
            let from_dir = dirs.parent(&first.rel)?.try_clone()?;
            let to_dir = dirs.parent(&e.rel)?;
            let (_, from) = parent_and_name(&first.rel);
            let (_, to) = parent_and_name(&e.rel);
            match rustix::fs::linkat(
                &from_dir,
                OsStr::from_bytes(from),
                to_dir,
                OsStr::from_bytes(to),
                AtFlags::empty(),
            ) {
                Err(Errno::EXIST) => {
                    rustix::fs::unlinkat(to_dir, OsStr::from_bytes(to), AtFlags::empty())?;
                    rustix::fs::linkat(
                        &from_dir,
                        OsStr::from_bytes(from),
                        to_dir,
                        OsStr::from_bytes(to),
                        AtFlags::empty(),
                    )?;
                }
                r => r?,
            }
            Ok(())
        })();
        if let Err(err) = res {
            warnings.push(format!("{}: hard link not restored: {err}", lossy(&e.rel)));
        }
    }
    for e in entries {
        if !e.is_placed() || e.link_to.is_some() {
            continue;
        }
        if e.rel.is_empty() {
            remove_marker(marker);
        }
        if let Err(err) = set_metadata(root, e, owners, &mut dirs) {
            warnings.push(format!(
                "{}: metadata not restored: {err}",
                if e.rel.is_empty() {
                    ".".into()
                } else {
                    lossy(&e.rel)
                }
            ));
        }
    }
    warnings
}

/// The folders of a window's entries, open, a few hundred at most: the entries of a folder come
/// together, so each is opened about once.
struct DirCache<'a> {
    root: &'a OwnedFd,
    open: HashMap<Vec<u8>, OwnedFd>,
}

impl<'a> DirCache<'a> {
    fn new(root: &'a OwnedFd) -> Self {
        DirCache {
            root,
            open: HashMap::new(),
        }
    }

    /// The folder `rel` is in.
    fn parent(&mut self, rel: &[u8]) -> std::io::Result<&OwnedFd> {
        let (p, _) = parent_and_name(rel);
        if !self.open.contains_key(p) {
            if self.open.len() >= 256 {
                self.open.clear();
            }
            // A path descriptor: a folder finished in an earlier window may have a mode that
            // refuses reading (0o300), and its names are still linked to.
            let fd = open_beneath(self.root, p, OFlags::DIRECTORY | OFlags::PATH)?;
            self.open.insert(p.to_vec(), fd);
        }
        Ok(&self.open[p])
    }
}

fn set_metadata(
    root: &OwnedFd,
    e: &Entry,
    owners: bool,
    dirs: &mut DirCache<'_>,
) -> std::io::Result<()> {
    let n = &e.node;
    let kind = n.kind();
    let times = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: n.mtime,
            tv_nsec: n.mtime_ns as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: n.mtime,
            tv_nsec: n.mtime_ns as _,
        },
    };
    if e.rel.is_empty() {
        // The target itself.
        if owners {
            rustix::fs::fchown(
                root,
                Some(rustix::fs::Uid::from_raw(n.uid)),
                Some(rustix::fs::Gid::from_raw(n.gid)),
            )?;
        }
        rustix::fs::fchmod(root, Mode::from_raw_mode(n.mode))?;
        for (k, v) in &n.xattrs {
            set_xattr(root.as_fd(), k, v)?;
        }
        rustix::fs::futimens(root, &times)?;
        return Ok(());
    }
    let dir = dirs.parent(&e.rel)?;
    let (_, name) = parent_and_name(&e.rel);
    let name = OsStr::from_bytes(name);
    if owners {
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(n.uid)),
            Some(rustix::fs::Gid::from_raw(n.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    if kind != NodeKind::Symlink {
        rustix::fs::chmodat(dir, name, Mode::from_raw_mode(n.mode), AtFlags::empty())?;
    }
    if !n.xattrs.is_empty() && matches!(kind, NodeKind::File | NodeKind::Dir) {
        let flags = if kind == NodeKind::Dir {
            OFlags::DIRECTORY | OFlags::RDONLY
        } else {
            OFlags::RDONLY
        };
        let fd = rustix::fs::openat(
            dir,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        for (k, v) in &n.xattrs {
            set_xattr(fd.as_fd(), k, v)?;
        }
    }
    rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

fn set_xattr(fd: std::os::fd::BorrowedFd<'_>, name: &[u8], value: &[u8]) -> std::io::Result<()> {
    rustix::fs::fsetxattr(
        fd,
        OsStr::from_bytes(name),
        value,
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(|e| {
        std::io::Error::new(
            std::io::Error::from(e).kind(),
            format!("xattr {}: {e}", lossy(name)),
        )
    })
}
