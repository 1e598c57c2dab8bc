//! The restore plan: walk the snapshot's trees, create folders, files (under temporary names,
//! at their size: holes stay holes), symlinks, pipes and devices, and note where every chunk
//! goes. When resuming an interrupted restore, a file already in place with the right content
//! is kept and not fetched again.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{Entry, Plan, join, lossy};
use crate::engine::inspect::Damage;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::BlobReader;
use crate::repo::tree::{Node, NodeKind, valid_name};

/// How to plan.
pub(super) struct PlanOptions<'a> {
    /// Restore only this path inside the snapshot.
    pub sub_path: Option<&'a str>,
    /// Replace what is in the way.
    pub overwrite: bool,
    /// Resuming an interrupted restore: keep the files already in place with the right content.
    pub resume: bool,
    /// Part of every temporary name: the same for the same snapshot, so a resumed restore
    /// reuses the names an interrupted one left.
    pub tmp_token: String,
    /// Checked before each folder.
    pub cancel: crate::CancelToken,
}

pub(super) fn make_plan(
    reader: &BlobReader,
    rt: &tokio::runtime::Handle,
    root_tree: Id,
    root_fd: Option<&OwnedFd>,
    opts: &PlanOptions<'_>,
) -> Result<Plan> {
    let sub_path = opts.sub_path;
    let read_tree = |id: &Id| rt.block_on(reader.read_tree(id));
    let top = read_tree(&root_tree).map_err(|e| e.context("the snapshot's top tree"))?;
    let mut node = top
        .nodes
        .into_iter()
        .next()
        .ok_or_else(|| Error::corrupt(format!("tree {root_tree}"), "the top tree is empty"))?;
    if let Some(sub) = sub_path {
        for part in sub.split('/').filter(|p| !p.is_empty() && *p != ".") {
            let sub_tree = match (node.kind(), node.subtree) {
                (NodeKind::Dir, Some(id)) => read_tree(&id)?,
                _ => {
                    return Err(Error::not_found(format!(
                        "{sub} in the snapshot ({} is not a folder)",
                        node.name_lossy()
                    )));
                }
            };
            node = sub_tree
                .nodes
                .into_iter()
                .find(|n| n.name == part.as_bytes())
                .ok_or_else(|| Error::not_found(format!("{sub} in the snapshot")))?;
        }
    }
    // Every tree below, fetched many at a time: one request after another would make the
    // plan as slow as the storage's latency times the number of folders.
    let cache = std::cell::RefCell::new(match node.subtree {
        Some(id) if node.kind() == NodeKind::Dir => {
            rt.block_on(crate::engine::prefetch_trees(reader, id))
        }
        _ => HashMap::new(),
    });
    let read_tree = |id: &Id| match cache.borrow_mut().remove(id) {
        Some(t) => Ok(t),
        None => read_tree(id),
    };
    let mut planner = Planner {
        reader,
        read_tree: &read_tree,
        plan: Plan::default(),
        first_links: HashMap::new(),
        overwrite: opts.overwrite || opts.resume,
        resume: opts.resume,
        tmp_token: &opts.tmp_token,
        cancel: &opts.cancel,
    };
    match node.kind() {
        NodeKind::Dir => {
            let subtree = node.subtree;
            planner
                .plan
                .entries
                .push(Entry::new(vec![], node, None, root_fd.is_some()));
            if let Some(id) = subtree {
                planner.dir(root_fd, vec![], &id)?;
            }
        }
        _ => planner.entry(root_fd, b"", node)?,
    }
    Ok(planner.plan)
}

struct Planner<'a> {
    reader: &'a BlobReader,
    read_tree: &'a dyn Fn(&Id) -> Result<crate::repo::tree::Tree>,
    plan: Plan,
    first_links: HashMap<(u64, u64), u32>,
    overwrite: bool,
    resume: bool,
    tmp_token: &'a str,
    cancel: &'a crate::CancelToken,
}

impl Planner<'_> {
    fn dir(&mut self, fd: Option<&OwnedFd>, rel: Vec<u8>, tree: &Id) -> Result<()> {
        self.cancel.check()?;
        let t = match (self.read_tree)(tree) {
            Ok(t) => t,
            Err(e) => {
                self.plan.damaged.push(Damage {
                    object: format!("tree {tree}"),
                    error: e.to_string(),
                    files: vec![if rel.is_empty() {
                        ".".into()
                    } else {
                        lossy(&rel)
                    }],
                });
                return Ok(());
            }
        };
        for node in t.nodes {
            self.entry(fd, &rel, node)?;
        }
        Ok(())
    }

    fn warn(&mut self, rel: &[u8], msg: impl std::fmt::Display) {
        self.plan.warnings.push(format!("{}: {msg}", lossy(rel)));
    }

    fn entry(&mut self, dir_fd: Option<&OwnedFd>, dir_rel: &[u8], node: Node) -> Result<()> {
        // Trees are validated when decoded; check again, this is the last line of defence.
        if !valid_name(&node.name) {
            return Err(Error::corrupt(
                "tree",
                format!("invalid entry name {:?}", node.name_lossy()),
            ));
        }
        let rel = join(dir_rel, &node.name);
        let name = OsStr::from_bytes(&node.name).to_owned();
        let idx = self.plan.entries.len() as u32;
        let kind = node.kind();
        let mut link_to = None;
        if kind == NodeKind::File && node.links > 1 {
            match self.first_links.get(&(node.device, node.inode)) {
                Some(first) => link_to = Some(*first),
                None => {
                    self.first_links.insert((node.device, node.inode), idx);
                }
            }
        }
        if kind == NodeKind::Socket {
            // A socket is made by the program that listens on it; no restore can make one.
            self.plan.skipped.push(format!(
                "{}: a socket, not restored (the program that listens on it makes it again)",
                lossy(&rel)
            ));
            return Ok(());
        }
        let mut created = false;
        let mut tmp = None;
        let mut in_place = false;
        if let Some(fd) = dir_fd {
            let res = match (kind, link_to) {
                (_, Some(_)) => Ok(()),
                (NodeKind::Dir, _) => self.make_dir(fd, &name),
                (NodeKind::File, _) if self.resume && self.already_restored(fd, &name, &node) => {
                    in_place = true;
                    Ok(())
                }
                (NodeKind::File, _) => {
                    let t = format!(".freezer-tmp-{}-{idx}", self.tmp_token);
                    let r = self.make_file(fd, &name, OsStr::new(&t), node.size);
                    tmp = Some(join(dir_rel, t.as_bytes()));
                    r
                }
                (NodeKind::Symlink, _) => self.replace(fd, &name, |fd, n| {
                    rustix::fs::symlinkat(OsStr::from_bytes(&node.target), fd, n)
                }),
                (NodeKind::Fifo, _) => self.replace(fd, &name, |fd, n| {
                    rustix::fs::mknodat(fd, n, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                }),
                (NodeKind::CharDev, _) => self.replace(fd, &name, |fd, n| {
                    rustix::fs::mknodat(
                        fd,
                        n,
                        FileType::CharacterDevice,
                        Mode::from_raw_mode(0o600),
                        node.rdev,
                    )
                }),
                (NodeKind::BlockDev, _) => self.replace(fd, &name, |fd, n| {
                    rustix::fs::mknodat(
                        fd,
                        n,
                        FileType::BlockDevice,
                        Mode::from_raw_mode(0o600),
                        node.rdev,
                    )
                }),
                (NodeKind::Socket, _) => Err(Errno::OPNOTSUPP),
            };
            match res {
                Ok(()) => created = true,
                Err(e) => {
                    tmp = None;
                    self.warn(&rel, format!("not restored: {}", std::io::Error::from(e)))
                }
            }
        } else {
            created = true;
        }
        if kind == NodeKind::File && link_to.is_none() && created && !in_place {
            self.place_chunks(idx, &rel, &node);
        }
        let subtree = node.subtree;
        let mut node = node;
        node.content = Vec::new();
        let mut entry = Entry::new(rel.clone(), node, link_to, created);
        entry.tmp = tmp;
        if in_place {
            entry.placed();
        }
        self.plan.entries.push(entry);
        if kind == NodeKind::Dir
            && created
            && let Some(id) = subtree
        {
            match dir_fd {
                Some(fd) => match rustix::fs::openat(
                    fd,
                    &name,
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
                    Mode::empty(),
                ) {
                    Ok(child) => self.dir(Some(&child), rel, &id)?,
                    Err(e) => self.warn(&rel, format!("not entered: {}", std::io::Error::from(e))),
                },
                None => self.dir(None, rel, &id)?,
            }
        }
        Ok(())
    }

    /// Records where each chunk of a file goes.
    fn place_chunks(&mut self, idx: u32, rel: &[u8], node: &Node) {
        let overhead = self.reader.crypto().overhead();
        let extents = if node.extents.is_empty() {
            vec![(0, node.size)]
        } else {
            node.extents.clone()
        };
        let mut ext = extents.into_iter();
        let (mut pos, mut left) = ext.next().unwrap_or((0, 0));
        for id in &node.content {
            while left == 0 {
                match ext.next() {
                    Some((o, l)) => (pos, left) = (o, l),
                    None => break,
                }
            }
            let len = match self.reader.index().get(id) {
                Some(l) => l.plain_len(overhead),
                None => {
                    // Without its length, where the chunks after it go is unknown: the file
                    // is damaged from here on, and nothing more is placed in it.
                    self.plan.damaged.push(Damage {
                        object: format!("blob {id}"),
                        error: "in no index".into(),
                        files: vec![lossy(rel)],
                    });
                    return;
                }
            };
            if len > left {
                self.plan.damaged.push(Damage {
                    object: format!("file entry {}", lossy(rel)),
                    error: "its chunks do not match its size".into(),
                    files: vec![lossy(rel)],
                });
                return;
            }
            self.plan.targets.entry(*id).or_default().push((idx, pos));
            pos += len;
            left -= len;
        }
    }

    /// Creates an entry with `make`; with overwrite, replaces what is in the way (never a
    /// folder with content).
    fn replace(
        &self,
        fd: &OwnedFd,
        name: &OsStr,
        make: impl Fn(&OwnedFd, &OsStr) -> rustix::io::Result<()>,
    ) -> rustix::io::Result<()> {
        match make(fd, name) {
            Err(Errno::EXIST) if self.overwrite => {
                remove_in_the_way(fd, name)?;
                make(fd, name)
            }
            r => r,
        }
    }

    fn make_dir(&self, fd: &OwnedFd, name: &OsStr) -> rustix::io::Result<()> {
        match rustix::fs::mkdirat(fd, name, Mode::from_raw_mode(0o700)) {
            Err(Errno::EXIST) if self.overwrite => {
                let st = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Ok(());
                }
                rustix::fs::unlinkat(fd, name, AtFlags::empty())?;
                rustix::fs::mkdirat(fd, name, Mode::from_raw_mode(0o700))
            }
            r => r,
        }
    }

    /// Creates file `name` as `tmp`, of `size` bytes, to be renamed `name` once written.
    fn make_file(
        &self,
        fd: &OwnedFd,
        name: &OsStr,
        tmp: &OsStr,
        size: u64,
    ) -> rustix::io::Result<()> {
        if self.overwrite {
            // A file or symlink in the way is replaced by the rename; an empty folder must go.
            match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    rustix::fs::unlinkat(fd, name, AtFlags::REMOVEDIR)?
                }
                _ => {}
            }
        }
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let open = || rustix::fs::openat(fd, tmp, flags, Mode::from_raw_mode(0o600));
        let f = match open() {
            // What an interrupted restore or someone else left under the temporary name.
            Err(Errno::LOOP | Errno::ISDIR | Errno::NXIO | Errno::TXTBSY) => {
                remove_in_the_way(fd, tmp)?;
                open()?
            }
            r => r?,
        };
        rustix::fs::ftruncate(&f, size)
    }

    /// Whether the regular file `name` already holds `node`'s content (a restore that was
    /// interrupted after writing it): same size, every chunk read back matches its id. Sparse
    /// files are written again (their holes would need checking too).
    fn already_restored(&self, fd: &OwnedFd, name: &OsStr, node: &Node) -> bool {
        if !node.extents.is_empty() {
            return false;
        }
        let Ok(f) = rustix::fs::openat(
            fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        ) else {
            return false;
        };
        match rustix::fs::fstat(&f) {
            Ok(st)
                if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                    && st.st_size as u64 == node.size => {}
            _ => return false,
        }
        let overhead = self.reader.crypto().overhead();
        let mut buf = Vec::new();
        let mut pos = 0u64;
        for id in &node.content {
            let Some(l) = self.reader.index().get(id) else {
                return false;
            };
            let len = l.plain_len(overhead) as usize;
            buf.resize(len, 0);
            if read_all_at(&f, &mut buf, pos).is_err()
                || self.reader.crypto().blob_id(&[&buf]) != *id
            {
                return false;
            }
            pos += len as u64;
        }
        pos == node.size
    }
}

/// Removes the entry `name` of `fd` (an empty folder included; a folder with content is
/// refused by the system, and the entry is then reported as not restored).
fn remove_in_the_way(fd: &OwnedFd, name: &OsStr) -> rustix::io::Result<()> {
    let st = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
    rustix::fs::unlinkat(
        fd,
        name,
        if dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        },
    )
}

fn read_all_at(fd: &OwnedFd, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::pread(fd, &mut *buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
