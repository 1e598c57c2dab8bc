//! Restore: a snapshot (or a path inside it) into a folder.
//!
//! 1. plan: walk the snapshot's trees, create folders, empty files of the right size (holes
//!    stay holes), symlinks, pipes and devices, and note where every chunk goes;
//! 2. content: fetch each needed pack (only the byte runs needed) from the first storage that
//!    answers, verify every chunk against its id, and write it at its offsets, several packs
//!    at once; a chunk that fails is sought in its other copies before it is reported;
//! 3. hard links, then metadata (owners when root, modes, xattrs, times), children first so a
//!    folder's time is set after its content.
//!
//! Every path is opened beneath the target with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! and every entry is created with `O_NOFOLLOW`-style calls relative to its folder: nothing a
//! snapshot holds, nor anything already in the target, can make a restore write outside it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps};
use rustix::io::Errno;

use super::Progress;
use super::inspect::Damage;
use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::repo::index::Location;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind, valid_name};
use crate::repo::{BlobReader, Repository, pack, pack_key};
use crate::sink::SinkExt;

/// Runs of needed bytes closer than this are fetched in one request...
const MERGE_GAP: u64 = 1024 * 1024;
/// ...as long as the run stays below this size (memory is runs in flight times this).
const MAX_RUN: u64 = 8 * 1024 * 1024;

thread_local! {
    /// Decoding buffers of each worker thread, reused from blob to blob.
    static SCRATCH: std::cell::RefCell<pack::DecodeScratch> = std::cell::RefCell::default();
}

/// Where and how to restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Upstream's `restore_abs_path`: the folder to restore into (created if missing).
    pub target: PathBuf,
    /// Upstream's `overwrite`: restore into a folder that is not empty, replacing entries.
    pub overwrite: bool,
    /// Restore only this path inside the snapshot (relative to what was backed up).
    pub sub_path: Option<String>,
    /// Read and verify everything, write nothing.
    pub dry_run: bool,
    /// Restore owners; `None` does when running as root.
    pub owners: Option<bool>,
    /// Packs processed at once; 0 picks from the number of cores.
    pub concurrency: usize,
}

impl RestoreOptions {
    /// Options to restore into `target`.
    pub fn new(target: impl Into<PathBuf>) -> Self {
        RestoreOptions {
            target: target.into(),
            overwrite: false,
            sub_path: None,
            dry_run: false,
            owners: None,
            concurrency: 0,
        }
    }
}

/// What a restore did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreResult {
    /// The snapshot restored.
    pub snapshot_id: Id,
    /// Files restored.
    pub files: u64,
    /// Folders restored.
    pub dirs: u64,
    /// Other entries restored.
    pub others: u64,
    /// Bytes of file content written (or verified, for a dry run).
    pub bytes: u64,
    /// Damaged objects and the files they touch; those files are incomplete.
    pub damaged: Vec<Damage>,
    /// Entries that could not be fully restored (metadata refused, unsupported kinds...).
    pub warnings: Vec<String>,
}

impl RestoreResult {
    /// Whether everything was restored as it was backed up.
    pub fn is_complete(&self) -> bool {
        self.damaged.is_empty() && self.warnings.is_empty()
    }
}

struct Entry {
    /// Path relative to the target; empty for the target itself.
    rel: Vec<u8>,
    node: Node,
    /// For a hard link to an earlier entry: that entry.
    link_to: Option<u32>,
    created: bool,
}

#[derive(Default)]
struct Plan {
    entries: Vec<Entry>,
    /// For each blob, where it goes: (entry, offset).
    targets: HashMap<Id, Vec<(u32, u64)>>,
    damaged: Vec<Damage>,
    warnings: Vec<String>,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Opens `rel` beneath `root` without following any symlink, and without ever leaving `root`.
fn open_beneath(root: &OwnedFd, rel: &[u8], flags: OFlags) -> std::io::Result<OwnedFd> {
    if rel.is_empty() {
        return Ok(rustix::fs::openat(
            root,
            ".",
            flags | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(
        root,
        OsStr::from_bytes(rel),
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        resolve,
    ) {
        Err(Errno::NOSYS) => {
            // Kernels before 5.6: walk one component at a time, refusing symlinks.
            let mut fd = rustix::fs::openat(
                root,
                ".",
                OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let parts: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
            for (i, part) in parts.iter().enumerate() {
                if !valid_name(part) {
                    return Err(std::io::Error::other("invalid path component"));
                }
                let last = i + 1 == parts.len();
                let f = if last { flags } else { OFlags::DIRECTORY };
                fd = rustix::fs::openat(
                    &fd,
                    OsStr::from_bytes(part),
                    f | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
            }
            Ok(fd)
        }
        r => Ok(r?),
    }
}

fn parent_and_name(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

/// Restores the selected snapshot. Damaged objects do not stop it: every file that does not
/// depend on them is restored, and the result names the damage and the files it touches.
pub async fn restore(
    repo: &Repository,
    snapshot_id: Id,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreResult> {
    let started = std::time::Instant::now();
    let target = opts.target.clone();
    if !opts.dry_run {
        prepare_target(&target, opts.overwrite)?;
    }
    let reader = repo.reader();
    let rt = tokio::runtime::Handle::current();
    let root_id = snapshot.tree;
    let sub_path = opts.sub_path.clone();
    let dry_run = opts.dry_run;
    let overwrite = opts.overwrite;
    let (root_fd, plan) = {
        let reader = reader.clone();
        let target = target.clone();
        tokio::task::spawn_blocking(move || -> Result<(Option<Arc<OwnedFd>>, Plan)> {
            let root_fd = if dry_run {
                None
            } else {
                Some(Arc::new(
                    rustix::fs::open(
                        &target,
                        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .ctx(format!("restore_abs_path {}", target.display()))?,
                ))
            };
            let plan = make_plan(
                &reader,
                &rt,
                root_id,
                sub_path.as_deref(),
                root_fd.as_deref(),
                overwrite,
            )?;
            Ok((root_fd, plan))
        })
        .await
        .map_err(|e| Error::io("restore planner", std::io::Error::other(e)))??
    };
    let total: u64 = plan
        .entries
        .iter()
        .filter(|e| e.link_to.is_none())
        .map(|e| e.node.size)
        .sum();
    progress.set_total(total);
    tracing::info!(elapsed = ?started.elapsed(), entries = plan.entries.len(), chunks = plan.targets.len(), "restore: planned");

    let Plan {
        entries,
        targets,
        mut damaged,
        mut warnings,
    } = plan;
    let entries = Arc::new(entries);
    let bytes_written = Arc::new(std::sync::atomic::AtomicU64::new(0));

    // Group chunks by pack, choosing for each chunk a copy on a live storage.
    let live = reader.tee().live();
    let mut by_pack: HashMap<u32, Vec<(Id, Location)>> = HashMap::new();
    let mut missing: Vec<Id> = Vec::new();
    for id in targets.keys() {
        let locs = reader.index().locations(id);
        match locs
            .iter()
            .find(|l| reader.index().pack(l.pack).sinks & live != 0)
            .or(locs.first())
        {
            Some(l) => by_pack.entry(l.pack).or_default().push((*id, *l)),
            None => missing.push(*id),
        }
    }
    let targets = Arc::new(targets);
    let failed: Arc<Mutex<Vec<(Id, Error)>>> = Arc::default();
    for id in missing {
        failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, Error::not_found(format!("blob {id} (in no index)"))));
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let concurrency = if opts.concurrency > 0 {
        opts.concurrency
    } else {
        (cores * 2).max(4)
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut packs: Vec<(u32, Vec<(Id, Location)>)> = by_pack.into_iter().collect();
    packs.sort_by_key(|(p, _)| *p);
    for (pack_pos, mut blobs) in packs {
        blobs.sort_by_key(|(_, l)| l.offset);
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        let ctx = PackCtx {
            reader: reader.clone(),
            entries: entries.clone(),
            targets: targets.clone(),
            root: root_fd.clone(),
            failed: failed.clone(),
            bytes: bytes_written.clone(),
            progress: progress.clone(),
        };
        tasks.spawn(async move {
            restore_pack(&ctx, pack_pos, blobs).await;
            drop(permit);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| Error::io("restore worker", std::io::Error::other(e)))?;
    }
    tracing::info!(elapsed = ?started.elapsed(), "restore: data written");

    // Blobs that failed: name the object and the files.
    let failed = std::mem::take(&mut *failed.lock().unwrap_or_else(|e| e.into_inner()));
    // The other names of a hard-linked file share its damage.
    let mut links: HashMap<u32, Vec<u32>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some(first) = e.link_to {
            links.entry(first).or_default().push(i as u32);
        }
    }
    let mut by_object: HashMap<String, Damage> = HashMap::new();
    for (id, err) in failed {
        let object = match reader.index().get(&id) {
            Some(l) => format!("pack {}", reader.index().pack(l.pack).id),
            None => format!("blob {id}"),
        };
        let d = by_object.entry(object.clone()).or_insert_with(|| Damage {
            object,
            error: err.to_string(),
            files: vec![],
        });
        for (e, _) in targets.get(&id).into_iter().flatten() {
            for i in std::iter::once(e).chain(links.get(e).into_iter().flatten()) {
                let path = lossy(&entries[*i as usize].rel);
                if !d.files.contains(&path) {
                    d.files.push(path);
                }
            }
        }
    }
    let mut extra: Vec<Damage> = by_object.into_values().collect();
    extra.iter_mut().for_each(|d| d.files.sort());
    extra.sort_by(|a, b| a.object.cmp(&b.object));
    damaged.extend(extra);

    let mut result = RestoreResult {
        snapshot_id,
        bytes: bytes_written.load(std::sync::atomic::Ordering::Relaxed),
        ..RestoreResult::default()
    };
    for e in entries.iter() {
        match e.node.kind() {
            NodeKind::File => result.files += 1,
            NodeKind::Dir => result.dirs += 1,
            _ => result.others += 1,
        }
    }
    if let Some(root_fd) = root_fd {
        let owners = opts
            .owners
            .unwrap_or_else(|| rustix::process::geteuid().is_root());
        let entries = entries.clone();
        let meta_warnings =
            tokio::task::spawn_blocking(move || finish_entries(&root_fd, &entries, owners))
                .await
                .map_err(|e| Error::io("restore metadata", std::io::Error::other(e)))?;
        warnings.extend(meta_warnings);
    }
    result.damaged = damaged;
    result.warnings = warnings;
    Ok(result)
}

fn prepare_target(target: &Path, overwrite: bool) -> Result<()> {
    let what = format!("restore_abs_path {}", target.display());
    match std::fs::symlink_metadata(target) {
        Ok(md) if md.is_dir() => {
            let mut rd = std::fs::read_dir(target).ctx(&what)?;
            if rd.next().is_some() && !overwrite {
                return Err(Error::bad_input(
                    "restore_abs_path",
                    format!(
                        "Restore dir is not empty: {}; give --overwrite to restore into it",
                        target.display()
                    ),
                ));
            }
            Ok(())
        }
        Ok(_) => Err(Error::bad_input(
            "restore_abs_path",
            format!("{} exists and is not a folder", target.display()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .create(target)
            .ctx(&what),
        Err(e) => Err(Error::io(what, e)),
    }
}

fn make_plan(
    reader: &BlobReader,
    rt: &tokio::runtime::Handle,
    root_tree: Id,
    sub_path: Option<&str>,
    root_fd: Option<&OwnedFd>,
    overwrite: bool,
) -> Result<Plan> {
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
        Some(id) if node.kind() == NodeKind::Dir => rt.block_on(super::prefetch_trees(reader, id)),
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
        overwrite,
    };
    match node.kind() {
        NodeKind::Dir => {
            let subtree = node.subtree;
            planner.plan.entries.push(Entry {
                rel: vec![],
                node,
                link_to: None,
                created: root_fd.is_some(),
            });
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
}

impl Planner<'_> {
    fn dir(&mut self, fd: Option<&OwnedFd>, rel: Vec<u8>, tree: &Id) -> Result<()> {
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
        let mut created = false;
        if let Some(fd) = dir_fd {
            let res = match (kind, link_to) {
                (_, Some(_)) => Ok(()),
                (NodeKind::Dir, _) => self.make_dir(fd, &name),
                (NodeKind::File, _) => self.make_file(fd, &name, node.size),
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
                Err(Errno::OPNOTSUPP) if kind == NodeKind::Socket => {}
                Err(e) => self.warn(&rel, format!("not restored: {}", std::io::Error::from(e))),
            }
        } else {
            created = true;
        }
        if kind == NodeKind::File && link_to.is_none() && created {
            self.place_chunks(idx, &rel, &node);
        }
        let subtree = node.subtree;
        let mut node = node;
        node.content = Vec::new();
        self.plan.entries.push(Entry {
            rel: rel.clone(),
            node,
            link_to,
            created,
        });
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
                    self.plan.targets.entry(*id).or_default().push((idx, pos));
                    continue;
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

    fn make_file(&self, fd: &OwnedFd, name: &OsStr, size: u64) -> rustix::io::Result<()> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let open = || rustix::fs::openat(fd, name, flags, Mode::from_raw_mode(0o600));
        let f = match open() {
            // A symlink (ELOOP) or something else in the way.
            Err(Errno::LOOP | Errno::ISDIR | Errno::NXIO | Errno::TXTBSY) if self.overwrite => {
                remove_in_the_way(fd, name)?;
                open()?
            }
            r => r?,
        };
        rustix::fs::ftruncate(&f, size)
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

struct PackCtx {
    reader: BlobReader,
    entries: Arc<Vec<Entry>>,
    targets: Arc<HashMap<Id, Vec<(u32, u64)>>>,
    root: Option<Arc<OwnedFd>>,
    failed: Arc<Mutex<Vec<(Id, Error)>>>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
    progress: Arc<dyn Progress>,
}

impl PackCtx {
    fn fail(&self, id: Id, e: Error) {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, e));
    }
}

/// Fetches the runs of a pack that hold `blobs`, then decodes and writes them.
async fn restore_pack(ctx: &PackCtx, pack_pos: u32, blobs: Vec<(Id, Location)>) {
    let pack = *ctx.reader.index().pack(pack_pos);
    let key = pack_key(&pack.id);
    // Merge neighbouring blobs into runs fetched with one request each.
    struct Run {
        start: u64,
        end: u64,
        blobs: Vec<(Id, Location)>,
    }
    let mut runs: Vec<Run> = Vec::new();
    for (id, l) in blobs {
        let (start, end) = (
            u64::from(l.offset),
            u64::from(l.offset) + u64::from(l.length),
        );
        match runs.last_mut() {
            Some(run) if start <= run.end + MERGE_GAP && end - run.start <= MAX_RUN => {
                run.end = run.end.max(end);
                run.blobs.push((id, l));
            }
            _ => runs.push(Run {
                start,
                end,
                blobs: vec![(id, l)],
            }),
        }
    }
    let tee = ctx.reader.tee().clone();
    for Run { start, end, blobs } in runs {
        let mut data: Option<Bytes> = None;
        let mut fetch_err = None;
        for i in 0..tee.len() {
            if pack.sinks & tee.live() & (1 << i) == 0 {
                continue;
            }
            match tee.member(i).get_range(&key, start..end).await {
                Ok(b) if b.len() as u64 == end - start => {
                    data = Some(b);
                    break;
                }
                Ok(_) => fetch_err = Some(Error::corrupt(format!("pack {}", pack.id), "truncated")),
                Err(e) => fetch_err = Some(e),
            }
        }
        let retry: Vec<(Id, Location)> = match data {
            Some(data) => {
                let crypto = ctx.reader.crypto().clone();
                let work = WriteWork::from(ctx);
                tokio::task::spawn_blocking(move || {
                    SCRATCH.with_borrow_mut(|scratch| {
                        let mut retry = Vec::new();
                        for (id, l) in blobs {
                            let from = (u64::from(l.offset) - start) as usize;
                            let stored = &data[from..from + l.length as usize];
                            let what = format!("blob {} in pack {}", id.short(), pack.id);
                            match pack::decode_blob_with(
                                &crypto,
                                scratch,
                                stored,
                                &l.packed(id),
                                &what,
                            ) {
                                Ok(plain) => work.write(id, plain),
                                Err(e) => retry.push((id, l, e)),
                            }
                        }
                        retry
                    })
                })
                .await
                .map(|v| {
                    v.into_iter()
                        .map(|(id, l, e)| {
                            tracing::warn!("{e}; trying other copies");
                            (id, l)
                        })
                        .collect()
                })
                .unwrap_or_default()
            }
            None => {
                if let Some(e) = &fetch_err {
                    tracing::warn!("pack {}: {e}; trying other copies", pack.id);
                }
                blobs
            }
        };
        // Other copies (another pack, another storage), one blob at a time.
        for (id, l) in retry {
            match ctx.reader.read_blob(&id).await {
                Ok(plain) => {
                    let work = WriteWork::from(ctx);
                    let _ = tokio::task::spawn_blocking(move || work.write(id, &plain)).await;
                }
                Err(e) => {
                    let e = match &fetch_err {
                        Some(f) if !matches!(e, Error::Corrupt { .. }) => Error::io(
                            format!("pack {} at {}", pack.id, l.offset),
                            std::io::Error::other(f.to_string()),
                        ),
                        _ => e,
                    };
                    ctx.fail(id, e);
                }
            }
        }
    }
}

/// What a blocking writer needs.
struct WriteWork {
    entries: Arc<Vec<Entry>>,
    targets: Arc<HashMap<Id, Vec<(u32, u64)>>>,
    root: Option<Arc<OwnedFd>>,
    failed: Arc<Mutex<Vec<(Id, Error)>>>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
    progress: Arc<dyn Progress>,
}

impl From<&PackCtx> for WriteWork {
    fn from(c: &PackCtx) -> Self {
        WriteWork {
            entries: c.entries.clone(),
            targets: c.targets.clone(),
            root: c.root.clone(),
            failed: c.failed.clone(),
            bytes: c.bytes.clone(),
            progress: c.progress.clone(),
        }
    }
}

impl WriteWork {
    fn write(&self, id: Id, plain: &[u8]) {
        for &(entry, offset) in self.targets.get(&id).into_iter().flatten() {
            let n = plain.len() as u64;
            self.bytes
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            self.progress.add_bytes(n);
            let Some(root) = &self.root else { continue };
            let rel = &self.entries[entry as usize].rel;
            let res = open_beneath(root, rel, OFlags::WRONLY)
                .and_then(|fd| write_all_at(&fd, plain, offset));
            if let Err(e) = res {
                let e = Error::io(lossy(rel), e);
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((id, e));
            }
        }
    }
}

fn write_all_at(fd: &OwnedFd, mut data: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !data.is_empty() {
        match rustix::io::pwrite(fd, data, offset) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Hard links, then metadata, children before their folder. Returns warnings.
fn finish_entries(root: &OwnedFd, entries: &[Entry], owners: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut dirs: HashMap<Vec<u8>, OwnedFd> = HashMap::new();
    let parent = |rel: &[u8], dirs: &mut HashMap<Vec<u8>, OwnedFd>| -> std::io::Result<OwnedFd> {
        let (p, _) = parent_and_name(rel);
        if let Some(fd) = dirs.get(p) {
            return fd.try_clone();
        }
        if dirs.len() > 256 {
            dirs.clear();
        }
        let fd = open_beneath(root, p, OFlags::DIRECTORY | OFlags::RDONLY)?;
        dirs.insert(p.to_vec(), fd.try_clone()?);
        Ok(fd)
    };
    for e in entries {
        let Some(first) = e.link_to else { continue };
        let first = &entries[first as usize];
        let res = (|| -> std::io::Result<()> {
            let from_dir = parent(&first.rel, &mut dirs)?;
            let to_dir = parent(&e.rel, &mut dirs)?;
            let (_, from) = parent_and_name(&first.rel);
            let (_, to) = parent_and_name(&e.rel);
            match rustix::fs::linkat(
                &from_dir,
                OsStr::from_bytes(from),
                &to_dir,
                OsStr::from_bytes(to),
                AtFlags::empty(),
            ) {
                Err(Errno::EXIST) => {
                    rustix::fs::unlinkat(&to_dir, OsStr::from_bytes(to), AtFlags::empty())?;
                    rustix::fs::linkat(
                        &from_dir,
                        OsStr::from_bytes(from),
                        &to_dir,
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
    for e in entries.iter().rev() {
        if !e.created || e.link_to.is_some() {
            continue;
        }
        if let Err(err) = set_metadata(root, e, owners, &mut |rel| parent(rel, &mut dirs)) {
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

fn set_metadata(
    root: &OwnedFd,
    e: &Entry,
    owners: bool,
    parent: &mut dyn FnMut(&[u8]) -> std::io::Result<OwnedFd>,
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
    let dir = parent(&e.rel)?;
    let (_, name) = parent_and_name(&e.rel);
    let name = OsStr::from_bytes(name);
    if owners {
        rustix::fs::chownat(
            &dir,
            name,
            Some(rustix::fs::Uid::from_raw(n.uid)),
            Some(rustix::fs::Gid::from_raw(n.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    if kind != NodeKind::Symlink {
        rustix::fs::chmodat(&dir, name, Mode::from_raw_mode(n.mode), AtFlags::empty())?;
    }
    if !n.xattrs.is_empty() && matches!(kind, NodeKind::File | NodeKind::Dir) {
        let flags = if kind == NodeKind::Dir {
            OFlags::DIRECTORY | OFlags::RDONLY
        } else {
            OFlags::RDONLY
        };
        let fd = rustix::fs::openat(
            &dir,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        for (k, v) in &n.xattrs {
            set_xattr(fd.as_fd(), k, v)?;
        }
    }
    rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
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
