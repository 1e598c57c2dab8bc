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

use std::sync::Arc;

use super::{Entry, FirstLink, Window, join, lossy};
use crate::engine::inspect::Damage;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::BlobReader;
use crate::repo::tree::{Node, NodeKind, valid_name};

/// How to plan.
pub(super) struct PlanOptions {
    /// Restore only this path inside the snapshot.
    pub sub_path: Option<String>,
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

/// A folder the walk is in: its descriptor, its path, the entries still to plan, and its own
/// entry, which joins a window once everything below it has (its metadata is set after its
/// content's).
struct Frame {
    fd: Option<OwnedFd>,
    rel: Vec<u8>,
    nodes: std::vec::IntoIter<Node>,
    dir: Option<Entry>,
    /// Its tree could not be read: reported once the folder is done.
    damage: Option<Damage>,
}

/// The plan, made a window at a time: a walk of the snapshot's trees, depth first, that stops
/// once a window holds enough entries and chunk places, and goes on from there for the next.
/// What it holds between windows is the path it is in (a [`Frame`] per level), a few trees
/// read ahead, and the first names of hard-linked files.
pub(super) struct Planner<'a> {
    reader: &'a BlobReader,
    rt: &'a tokio::runtime::Handle,
    state: State<'a>,
    stack: Vec<Frame>,
    /// A plan of one entry (a path inside the snapshot that is not a folder), still to make.
    single: Option<(Option<OwnedFd>, Node)>,
    ahead: crate::engine::TreesAhead,
    /// Entries and chunk places a window holds at most (a little more: a file's places are
    /// never split).
    window: usize,
}

/// What planning an entry changes.
struct State<'a> {
    reader: &'a BlobReader,
    first_links: HashMap<(u64, u64), Arc<FirstLink>>,
    overwrite: bool,
    resume: bool,
    tmp_token: &'a str,
    cancel: &'a crate::CancelToken,
    /// Entries planned in every window so far: numbers the temporary names, the same on a run
    /// resumed.
    count: u64,
}

impl<'a> Planner<'a> {
    /// Reads the snapshot's top tree and finds `opts.sub_path` in it.
    pub(super) fn new(
        reader: &'a BlobReader,
        rt: &'a tokio::runtime::Handle,
        root_tree: Id,
        root_fd: Option<&OwnedFd>,
        opts: &'a PlanOptions,
        window: usize,
    ) -> Result<Planner<'a>> {
        let read_tree = |id: &Id| rt.block_on(reader.read_tree(id));
        let top = read_tree(&root_tree).map_err(|e| e.context("the snapshot's top tree"))?;
        let mut node =
            top.nodes.into_iter().next().ok_or_else(|| {
                Error::corrupt(format!("tree {root_tree}"), "the top tree is empty")
            })?;
        if let Some(sub) = opts.sub_path.as_deref() {
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
        let root_fd = root_fd
            .map(|fd| fd.try_clone())
            .transpose()
            .map_err(|e| Error::io("restore_abs_path", e))?;
        let mut planner = Planner {
            reader,
            rt,
            state: State {
                reader,
                first_links: HashMap::new(),
                overwrite: opts.overwrite || opts.resume,
                resume: opts.resume,
                tmp_token: &opts.tmp_token,
                cancel: &opts.cancel,
                count: 0,
            },
            stack: Vec::new(),
            single: None,
            ahead: Default::default(),
            window: window.max(1),
        };
        match node.kind() {
            NodeKind::Dir => {
                let created = root_fd.is_some();
                let subtree = node.subtree;
                let dir = Entry::new(vec![], node, None, created);
                planner.state.count += 1;
                let (nodes, damage) = match subtree.map(|id| planner.tree(id, &[])) {
                    Some(Ok(t)) => (t.nodes, None),
                    Some(Err(d)) => (Vec::new(), Some(d)),
                    None => (Vec::new(), None),
                };
                planner.stack.push(Frame {
                    fd: root_fd,
                    rel: vec![],
                    nodes: nodes.into_iter(),
                    dir: Some(dir),
                    damage,
                });
            }
            _ => planner.single = Some((root_fd, node)),
        }
        Ok(planner)
    }

    /// The next window of the plan, `None` once the walk is over.
    pub(super) fn next_window(&mut self) -> Result<Option<Window>> {
        let mut w = Window::default();
        if let Some((fd, node)) = self.single.take() {
            self.state.entry(&mut w, fd.as_ref(), b"", node)?;
            return Ok(Some(w));
        }
        if self.stack.is_empty() {
            return Ok(None);
        }
        while w.entries.len() + w.places < self.window {
            let Some(frame) = self.stack.last_mut() else {
                break;
            };
            let Some(node) = frame.nodes.next() else {
                let frame = self.stack.pop().expect("a frame");
                w.damaged.extend(frame.damage);
                w.entries.extend(frame.dir);
                continue;
            };
            let subtree = match (node.kind(), node.subtree) {
                (NodeKind::Dir, Some(id)) => Some(id),
                _ => None,
            };
            let Some(child) = self
                .state
                .entry(&mut w, frame.fd.as_ref(), &frame.rel, node)?
            else {
                continue;
            };
            // A folder made: the walk goes in.
            self.state.cancel.check()?;
            let mut child = child;
            let nodes = match subtree {
                Some(id) => {
                    let read =
                        self.rt
                            .block_on(self.ahead.get(self.reader, id, frame.nodes.as_slice()));
                    match read {
                        Ok(t) => t.nodes,
                        Err(e) => {
                            child.damage = Some(Damage {
                                object: format!("tree {id}"),
                                error: e.to_string(),
                                files: vec![lossy(&child.rel)],
                            });
                            Vec::new()
                        }
                    }
                }
                None => Vec::new(),
            };
            child.nodes = nodes.into_iter();
            self.stack.push(child);
        }
        Ok(Some(w))
    }

    /// The top folder's tree; one that cannot be read is damage, reported with the folder.
    fn tree(
        &mut self,
        id: Id,
        next: &[Node],
    ) -> std::result::Result<crate::repo::tree::Tree, Damage> {
        self.rt
            .block_on(self.ahead.get(self.reader, id, next))
            .map_err(|e| Damage {
                object: format!("tree {id}"),
                error: e.to_string(),
                files: vec![".".into()],
            })
    }
}

impl State<'_> {
    fn warn(&mut self, w: &mut Window, rel: &[u8], msg: impl std::fmt::Display) {
        w.warnings.push(format!("{}: {msg}", lossy(rel)));
    }

    /// Plans `node` of the folder `dir_rel` (open as `dir_fd`): makes it, notes where its
    /// chunks go, and adds its entry to `w`, except a folder made, returned as the frame the
    /// walk goes into.
    fn entry(
        &mut self,
        w: &mut Window,
        dir_fd: Option<&OwnedFd>,
        dir_rel: &[u8],
        node: Node,
    ) -> Result<Option<Frame>> {
        // Trees are validated when decoded; check again, this is the last line of defence.
        if !valid_name(&node.name) {
            return Err(Error::corrupt(
                "tree",
                format!("invalid entry name {:?}", node.name_lossy()),
            ));
        }
        let rel = join(dir_rel, &node.name);
        let name = OsStr::from_bytes(&node.name).to_owned();
        let idx = w.entries.len() as u32;
        let kind = node.kind();
        let mut link_to = None;
        let mut first_of = None;
        if kind == NodeKind::File && node.links > 1 {
            match self.first_links.get(&(node.device, node.inode)) {
                Some(first) => link_to = Some(first.clone()),
                None => {
                    let first = Arc::new(FirstLink::new(rel.clone()));
                    self.first_links
                        .insert((node.device, node.inode), first.clone());
                    first_of = Some(first);
                }
            }
        }
        if kind == NodeKind::Socket {
            // A socket is made by the program that listens on it; no restore can make one.
            w.skipped.push(format!(
                "{}: a socket, not restored (the program that listens on it makes it again)",
                lossy(&rel)
            ));
            return Ok(None);
        }
        let number = self.count;
        self.count += 1;
        let mut created = false;
        let mut tmp = None;
        let mut in_place = false;
        if let Some(fd) = dir_fd {
            let res = match (kind, &link_to) {
                (_, Some(_)) => Ok(()),
                (NodeKind::Dir, _) => self.make_dir(fd, &name),
                (NodeKind::File, _) if self.resume && self.already_restored(fd, &name, &node) => {
                    in_place = true;
                    Ok(())
                }
                (NodeKind::File, _) => {
                    let t = format!(".freezer-tmp-{}-{number}", self.tmp_token);
                    let sparse = (!node.extents.is_empty()).then_some(node.size);
                    let r = self.make_file(fd, &name, OsStr::new(&t), sparse);
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
                    self.warn(
                        w,
                        &rel,
                        format!("not restored: {}", std::io::Error::from(e)),
                    )
                }
            }
        } else {
            created = true;
        }
        // A damaged file is never renamed as its last chunk is written: it is put in place,
        // at its size, at the end.
        let mut whole = true;
        if kind == NodeKind::File && link_to.is_none() && created && !in_place {
            w.planned_bytes += node.size;
            whole = self.place_chunks(w, idx, &rel, &node);
        }
        let subtree = node.subtree;
        let mut node = node;
        node.content = Vec::new();
        let mut entry = Entry::new(rel.clone(), node, link_to, created);
        entry.first_of = first_of;
        entry.tmp = tmp;
        if !whole {
            *entry.left.get_mut() = 1;
            // Its later names share the damage the plan found.
            if let Some(first) = &entry.first_of {
                first
                    .damaged
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
        if in_place {
            entry.placed();
        }
        if kind == NodeKind::Dir && created && subtree.is_some() {
            let child = match dir_fd {
                Some(fd) => match rustix::fs::openat(
                    fd,
                    &name,
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
                    Mode::empty(),
                ) {
                    Ok(child) => Some(Some(child)),
                    Err(e) => {
                        self.warn(w, &rel, format!("not entered: {}", std::io::Error::from(e)));
                        None
                    }
                },
                None => Some(None),
            };
            if let Some(fd) = child {
                return Ok(Some(Frame {
                    fd,
                    rel,
                    nodes: Vec::new().into_iter(),
                    dir: Some(entry),
                    damage: None,
                }));
            }
        }
        w.entries.push(entry);
        Ok(None)
    }

    /// Records where each chunk of a file goes.
    /// Whether every chunk has its place (else the file is damaged, and the report says so).
    fn place_chunks(&mut self, w: &mut Window, idx: u32, rel: &[u8], node: &Node) -> bool {
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
                    w.damaged.push(Damage {
                        object: format!("blob {id}"),
                        error: "in no index".into(),
                        files: vec![lossy(rel)],
                    });
                    return false;
                }
            };
            if len > left {
                w.damaged.push(Damage {
                    object: format!("file entry {}", lossy(rel)),
                    error: "its chunks do not match its size".into(),
                    files: vec![lossy(rel)],
                });
                return false;
            }
            w.targets.entry(*id).or_default().push((idx, pos));
            w.places += 1;
            pos += len;
            left -= len;
        }
        // Chunks that stop short of the size (or of the data the extents say it holds).
        if left > 0 || ext.any(|(_, l)| l > 0) {
            w.damaged.push(Damage {
                object: format!("file entry {}", lossy(rel)),
                error: "its chunks do not match its size".into(),
                files: vec![lossy(rel)],
            });
            return false;
        }
        true
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

    /// Creates file `name` as `tmp`, to be renamed `name` once written; of `size` bytes at
    /// once when given (a sparse file: its holes stay holes), else of the size its chunks give
    /// it (a damaged file is given its size when put in place).
    fn make_file(
        &self,
        fd: &OwnedFd,
        name: &OsStr,
        tmp: &OsStr,
        size: Option<u64>,
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
        match size {
            Some(size) => rustix::fs::ftruncate(&f, size),
            None => Ok(()),
        }
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
