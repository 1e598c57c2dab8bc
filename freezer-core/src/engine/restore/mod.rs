//! Restore: a snapshot (or a path inside it) into a folder; or a snapshot of one file (a
//! stream) to a writer or into a command's stdin ([`stream`]).
//!
//! 0. target ([`target`]): a symlink at the top is followed; a folder it creates is removed
//!    again if the restore fails; a marker says a restore is under way;
//! 1. plan ([`plan`]): walk the snapshot's trees, create folders, files under temporary names
//!    (`.freezer-tmp-<snapshot>-<n>`, at their size: holes stay holes), symlinks, pipes and
//!    devices, and note where every chunk goes;
//! 2. content ([`fetch`]): fetch each needed pack (only the byte runs needed) from the first
//!    storage that answers, verify every chunk against its id, and write it at its offsets,
//!    several packs at once; a chunk that fails is sought in its other copies before it is
//!    reported; a file whose every chunk is written takes its name at once;
//! 3. finish ([`finish`]): hard links, then metadata (owners when root, modes, xattrs, times),
//!    children first so a folder's time is set after its content.
//!
//! The plan is made a window at a time ([`PLAN_WINDOW`] entries and chunk places), on its own
//! thread while the window before it is fetched and finished: what a restore holds per file is
//! two windows' worth and the folders it is in, not the snapshot's million files. A folder
//! joins the window in which the last entry below it is planned, so its metadata is still set
//! after its content's; a hard link's later names, in whatever window, are linked to its first.
//!
//! So a file under its own name holds its whole content (or the damage report names it), and
//! an interrupted restore (killed, or a storage lost on the way) leaves only temporary names
//! and the marker: run again, it keeps the files in place, fetches the rest, and removes the
//! leftovers. Sockets are not restored (no one can make one but its program): the result names
//! them.
//!
//! Every path is opened beneath the target with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! and every entry is created with `O_NOFOLLOW`-style calls relative to its folder: nothing a
//! snapshot holds, nor anything already in the target, can make a restore write outside it.

mod fetch;
mod finish;
mod image;
mod plan;
mod stream;
mod target;

pub use image::restore_image;
pub use stream::{StreamOutput, StreamTarget, restore_stream, restore_stream_entry};

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::Progress;
use super::inspect::Damage;
use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::index::Location;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind, valid_name};

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
    /// The workers and the memory budget: runs of packs fetched and decoded at once (twice
    /// `threads`, at least 4), each leasing its bytes and its plaintext from `memory` first.
    pub resources: crate::memory::Resources,
    /// Stops the restore between folders of the plan and between runs of a pack: files not
    /// finished keep their temporary names (the same restore run again finishes them), a
    /// folder the restore created is removed, and it fails with [`Error::Cancelled`].
    pub cancel: crate::CancelToken,
    /// Whether a restore that leaves damaged files behind (an object of the snapshot is
    /// missing or corrupt) returns its [`RestoreResult`], whose `damaged` names them, rather
    /// than failing with [`Error::Incomplete`]. Default off: a caller who does not look at the
    /// result is never told that a restore with holes succeeded.
    pub accept_partial: bool,
    /// Entries and chunk places planned, fetched and finished at a time (0: [`PLAN_WINDOW`]):
    /// what a restore holds per file is two windows' worth, whatever the snapshot's size.
    pub plan_window: usize,
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
            resources: crate::memory::Resources::default(),
            cancel: crate::CancelToken::new(),
            accept_partial: false,
            plan_window: 0,
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
    /// Entries that could not be fully restored (metadata refused, unfinished files...).
    pub warnings: Vec<String>,
    /// Entries that no restore can make (sockets), with why; they leave the result complete.
    pub skipped: Vec<String>,
    /// Unreadable snapshots passed over to choose this one (asked for with `newest_readable`).
    pub passed_over: Vec<String>,
    /// The memory budget and what the run took of it.
    pub memory: crate::memory::MemoryUse,
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
    /// For a hard link to an earlier entry: that entry's name.
    link_to: Option<Arc<FirstLink>>,
    /// For the first name of a hard-linked file: what its later names need to know.
    first_of: Option<Arc<FirstLink>>,
    created: bool,
    /// For a file written under a temporary name: that path, relative to the target.
    tmp: Option<Vec<u8>>,
    /// Chunk writes still to come before the file is whole.
    left: AtomicU32,
    /// The file is under its own name.
    in_place: AtomicBool,
}

/// The first name of a hard-linked file, which its later names (perhaps in a later window of
/// the plan) are linked to once it is restored.
struct FirstLink {
    rel: Vec<u8>,
    /// Its window is done: it is under its own name, whole.
    placed: AtomicBool,
    /// Its window is done: it is damaged (the report names it).
    damaged: AtomicBool,
}

impl FirstLink {
    fn new(rel: Vec<u8>) -> Self {
        FirstLink {
            rel,
            placed: AtomicBool::new(false),
            damaged: AtomicBool::new(false),
        }
    }
}

impl Entry {
    fn new(rel: Vec<u8>, node: Node, link_to: Option<Arc<FirstLink>>, created: bool) -> Self {
        Entry {
            rel,
            node,
            link_to,
            first_of: None,
            created,
            tmp: None,
            left: AtomicU32::new(0),
            in_place: AtomicBool::new(false),
        }
    }

    /// Where its content is written.
    fn writing(&self) -> &[u8] {
        self.tmp.as_deref().unwrap_or(&self.rel)
    }

    /// Marks a file as under its own name.
    fn placed(&mut self) {
        *self.in_place.get_mut() = true;
    }

    /// Whether it was made and is under its own name.
    fn is_placed(&self) -> bool {
        self.created && (self.tmp.is_none() || self.in_place.load(Ordering::Acquire))
    }

    /// Renames a file from its temporary name to its own (replacing what is there, except a
    /// folder).
    fn put_in_place(&self, root: &OwnedFd) -> std::io::Result<()> {
        let Some(tmp) = &self.tmp else { return Ok(()) };
        if self.in_place.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (dir, from) = parent_and_name(tmp);
        let (_, to) = parent_and_name(&self.rel);
        let res = open_beneath(root, dir, OFlags::DIRECTORY | OFlags::RDONLY).and_then(|fd| {
            Ok(rustix::fs::renameat(
                &fd,
                OsStr::from_bytes(from),
                &fd,
                OsStr::from_bytes(to),
            )?)
        });
        if res.is_err() {
            self.in_place.store(false, Ordering::Release);
        }
        res
    }
}

/// A window of the plan: entries made (files under temporary names), in the order their
/// metadata is set (a folder after everything below it), and where their chunks go. A restore
/// fetches and finishes one window while the next is planned, so what it holds is two windows,
/// not the snapshot.
#[derive(Default)]
struct Window {
    entries: Vec<Entry>,
    /// For each blob, where it goes: (entry, offset).
    targets: HashMap<Id, Vec<(u32, u64)>>,
    /// Chunk places in `targets`.
    places: usize,
    /// Bytes of the files whose content the window fetches.
    planned_bytes: u64,
    damaged: Vec<Damage>,
    warnings: Vec<String>,
    skipped: Vec<String>,
}

/// Entries and chunk places a window of the plan holds (about 0.6 KiB each): a million-file
/// restore holds two windows of them, not a million.
pub const PLAN_WINDOW: usize = 16384;

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
    let prepared = if opts.dry_run {
        None
    } else {
        Some(target::prepare(
            &opts.target,
            opts.overwrite,
            snapshot_id,
            opts.sub_path.as_deref(),
        )?)
    };
    let resume = prepared.as_ref().is_some_and(|p| p.resume);
    let res = restore_prepared(repo, snapshot_id, snapshot, opts, resume, progress).await;
    if res.is_err()
        && let Some(p) = &prepared
    {
        p.abandon(&opts.target);
    }
    res
}

async fn restore_prepared(
    repo: &Repository,
    snapshot_id: Id,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    resume: bool,
    progress: Arc<dyn Progress>,
) -> Result<RestoreResult> {
    let started = std::time::Instant::now();
    let reader = repo.reader();
    let root_fd = if opts.dry_run {
        None
    } else {
        Some(Arc::new(
            rustix::fs::open(
                &opts.target,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ctx(format!("restore_abs_path {}", opts.target.display()))?,
        ))
    };
    // The plan is made a window at a time on its own thread, the next window while this one's
    // content is fetched (creating files is the slow part of a restore of many small ones).
    // `Ok(None)` says the walk is over: a planner that stopped without it (a panic) fails the
    // restore rather than ending it early.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Option<Window>>>(1);
    let planner = {
        let reader = reader.clone();
        let rt = tokio::runtime::Handle::current();
        let root_fd = root_fd.clone();
        let root_tree = snapshot.tree;
        let popts = plan::PlanOptions {
            sub_path: opts.sub_path.clone(),
            overwrite: opts.overwrite,
            resume,
            tmp_token: snapshot_id.to_hex()[..8].to_string(),
            cancel: opts.cancel.clone(),
        };
        let window = match opts.plan_window {
            0 => PLAN_WINDOW,
            n => n,
        };
        tokio::task::spawn_blocking(move || {
            let planner =
                plan::Planner::new(&reader, &rt, root_tree, root_fd.as_deref(), &popts, window);
            let mut planner = match planner {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            loop {
                let next = planner.next_window();
                let more = matches!(next, Ok(Some(_)));
                if tx.blocking_send(next).is_err() || !more {
                    return;
                }
            }
        })
    };
    let res = restore_windows(
        &reader,
        snapshot_id,
        snapshot,
        opts,
        root_fd,
        &mut rx,
        progress,
    )
    .await;
    // The planner stops at its next window once no one takes it; it is awaited, so that
    // nothing is made in the target after the restore returns.
    drop(rx);
    planner
        .await
        .map_err(|e| Error::io("restore planner", std::io::Error::other(e)))?;
    tracing::info!(elapsed = ?started.elapsed(), "restore: done");
    res
}

/// What a restore gathers from its windows.
#[derive(Default)]
struct Gathered {
    result: RestoreResult,
    /// Damage found while planning (a tree unreadable, a chunk in no index), in plan order.
    planned_damage: Vec<Damage>,
    /// Damage found while fetching, by object.
    fetch_damage: HashMap<String, Damage>,
    /// Files left unfinished (under temporary names) by a failure that may pass.
    unfinished: Vec<String>,
}

impl Gathered {
    /// Adds `name`, a later name of the damaged file `first`, to every damage naming `first`.
    fn link_damaged(&mut self, first: &[u8], name: &[u8]) {
        let (first, name) = (lossy(first), lossy(name));
        for d in self
            .planned_damage
            .iter_mut()
            .chain(self.fetch_damage.values_mut())
        {
            if d.files.contains(&first) && !d.files.contains(&name) {
                d.files.push(name.clone());
            }
        }
    }
}

async fn restore_windows(
    reader: &crate::repo::BlobReader,
    snapshot_id: Id,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    root_fd: Option<Arc<OwnedFd>>,
    windows: &mut tokio::sync::mpsc::Receiver<Result<Option<Window>>>,
    progress: Arc<dyn Progress>,
) -> Result<RestoreResult> {
    let mut g = Gathered::default();
    g.result.snapshot_id = snapshot_id;
    // The whole snapshot's bytes are known from its statistics (which count a hard-linked
    // file's size for each name: the total is set again, exactly, at the end); a part's grow
    // as it is planned.
    let whole = opts.sub_path.is_none() && snapshot.stats.bytes > 0;
    if whole {
        progress.set_total(snapshot.stats.bytes);
    }
    let mut total = 0u64;
    let bytes_written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let scratches: Arc<Mutex<Vec<crate::repo::pack::DecodeScratch>>> = Arc::default();
    let owners = opts
        .owners
        .unwrap_or_else(|| rustix::process::geteuid().is_root());
    let mut marker = Some(target::MARKER);
    let mut walked = false;
    while let Some(window) = windows.recv().await {
        let Some(window) = window? else {
            walked = true;
            break;
        };
        let Window {
            mut entries,
            targets,
            places: _,
            planned_bytes,
            damaged,
            warnings,
            skipped,
        } = window;
        total += planned_bytes;
        if !whole {
            progress.set_total(total);
        }
        g.planned_damage.extend(damaged);
        g.result.warnings.extend(warnings);
        g.result.skipped.extend(skipped);
        // A file is whole once every chunk write meant for it is done.
        for places in targets.values() {
            for (e, _) in places {
                *entries[*e as usize].left.get_mut() += 1;
            }
        }
        let entries = Arc::new(entries);
        let targets = Arc::new(targets);
        let failed = fetch_window(
            reader,
            opts,
            &entries,
            &targets,
            &root_fd,
            &bytes_written,
            &progress,
            &scratches,
        )
        .await?;
        opts.cancel.check()?;

        // Blobs that failed: name the object and the files.
        let mut unfinished: HashSet<u32> = HashSet::new();
        for (id, err) in failed {
            if !matches!(err, Error::Corrupt { .. } | Error::NotFound { .. }) {
                for (e, _) in targets.get(&id).into_iter().flatten() {
                    unfinished.insert(*e);
                }
            }
            let object = match reader.index().get(&id) {
                Some(l) => format!("pack {}", reader.index().pack(l.pack).id),
                None => format!("blob {id}"),
            };
            let d = g
                .fetch_damage
                .entry(object.clone())
                .or_insert_with(|| Damage {
                    object,
                    error: err.to_string(),
                    files: vec![],
                });
            for (e, _) in targets.get(&id).into_iter().flatten() {
                let e = &entries[*e as usize];
                let path = lossy(&e.rel);
                if !d.files.contains(&path) {
                    d.files.push(path);
                }
                if let Some(first) = &e.first_of {
                    first.damaged.store(true, Ordering::Release);
                }
            }
        }
        // The other names of a hard-linked file share its damage.
        for e in entries.iter() {
            if let Some(first) = &e.link_to
                && first.damaged.load(Ordering::Acquire)
            {
                g.link_damaged(&first.rel, &e.rel);
            }
        }
        g.unfinished
            .extend(unfinished.iter().map(|e| lossy(&entries[*e as usize].rel)));
        match &root_fd {
            Some(root_fd) => {
                let root_fd = root_fd.clone();
                let entries = entries.clone();
                let unfinished = unfinished.clone();
                // The marker stays while a file is unfinished: the next run resumes.
                let keep_marker = !g.unfinished.is_empty();
                let (meta_warnings, marker_left) = tokio::task::spawn_blocking(move || {
                    let mut marker = marker.filter(|_| !keep_marker);
                    let w = finish::finish_entries(
                        &root_fd,
                        &entries,
                        owners,
                        &unfinished,
                        &mut marker,
                    );
                    (w, marker)
                })
                .await
                .map_err(|e| Error::io("restore metadata", std::io::Error::other(e)))?;
                if marker_left.is_none() && !keep_marker {
                    marker = None;
                }
                g.result.warnings.extend(meta_warnings);
            }
            None => {
                for e in entries.iter() {
                    if let Some(first) = &e.first_of {
                        first.placed.store(e.created, Ordering::Release);
                    }
                }
            }
        }
        for (i, e) in entries.iter().enumerate() {
            let restored = if opts.dry_run {
                e.created
            } else {
                match &e.link_to {
                    Some(first) => first.placed.load(Ordering::Acquire),
                    None => e.is_placed(),
                }
            };
            if !restored || unfinished.contains(&(i as u32)) {
                continue;
            }
            match e.node.kind() {
                NodeKind::File => g.result.files += 1,
                NodeKind::Dir => g.result.dirs += 1,
                _ => g.result.others += 1,
            }
        }
    }
    if !walked {
        return Err(Error::io(
            "restore planner",
            std::io::Error::other("it stopped before the end of the snapshot"),
        ));
    }
    // A cancel after the last window was finished changes nothing: the restore is whole.
    progress.set_total(total);
    // A restore of one file has no folder of its own: the marker goes at the end.
    if let (Some(m), Some(root_fd)) = (marker, &root_fd)
        && g.unfinished.is_empty()
        && let Err(e) = rustix::fs::unlinkat(&**root_fd, m, rustix::fs::AtFlags::empty())
        && e != Errno::NOENT
    {
        tracing::warn!("{m}: not removed: {e}");
    }

    let Gathered {
        mut result,
        planned_damage: mut damaged,
        fetch_damage,
        mut unfinished,
    } = g;
    let mut extra: Vec<Damage> = fetch_damage.into_values().collect();
    extra.iter_mut().for_each(|d| d.files.sort());
    extra.sort_by(|a, b| a.object.cmp(&b.object));
    damaged.extend(extra);
    result.bytes = bytes_written.load(Ordering::Relaxed);
    result.memory = crate::memory::MemoryUse::of(&opts.resources.memory);
    if !unfinished.is_empty() {
        unfinished.sort();
        result.warnings.push(format!(
            "{} file(s) not finished, left under temporary names (.freezer-tmp-*): {}; run the same restore again to finish them",
            unfinished.len(),
            unfinished.join(", ")
        ));
    }
    if !damaged.is_empty() && !opts.accept_partial {
        return Err(partial_restore(&result.snapshot_id, &opts.target, &damaged));
    }
    result.damaged = damaged;
    Ok(result)
}

/// Fetches the chunks of a window's files, several packs at once, and writes them; returns the
/// chunks that failed, with why.
#[allow(clippy::too_many_arguments)]
async fn fetch_window(
    reader: &crate::repo::BlobReader,
    opts: &RestoreOptions,
    entries: &Arc<Vec<Entry>>,
    targets: &Arc<HashMap<Id, Vec<(u32, u64)>>>,
    root_fd: &Option<Arc<OwnedFd>>,
    bytes_written: &Arc<std::sync::atomic::AtomicU64>,
    progress: &Arc<dyn Progress>,
    scratches: &Arc<Mutex<Vec<crate::repo::pack::DecodeScratch>>>,
) -> Result<Vec<(Id, Error)>> {
    // Group chunks by pack, choosing for each chunk a copy on a live storage.
    let live = reader.tee().live();
    let mut by_pack: HashMap<u32, Vec<(Id, Location)>> = HashMap::new();
    let failed: Arc<Mutex<Vec<(Id, Error)>>> = Arc::default();
    for id in targets.keys() {
        let locs = reader.index().locations(id);
        match locs
            .iter()
            .find(|l| reader.index().pack(l.pack).sinks & live != 0)
            .or(locs.first())
        {
            Some(l) => by_pack.entry(l.pack).or_default().push((*id, *l)),
            None => failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((*id, Error::not_found(format!("blob {id} (in no index)")))),
        }
    }
    let concurrency = (opts.resources.workers() * 2).max(4);
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut packs: Vec<(u32, Vec<(Id, Location)>)> = by_pack.into_iter().collect();
    packs.sort_by_key(|(p, _)| *p);
    for (pack_pos, mut blobs) in packs {
        blobs.sort_by_key(|(_, l)| l.offset);
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => p.expect("semaphore open"),
            _ = opts.cancel.cancelled() => break,
        };
        let ctx = fetch::PackCtx {
            reader: reader.clone(),
            entries: entries.clone(),
            targets: targets.clone(),
            root: root_fd.clone(),
            failed: failed.clone(),
            bytes: bytes_written.clone(),
            progress: progress.clone(),
            cancel: opts.cancel.clone(),
            memory: opts.resources.memory.clone(),
            scratches: Arc::clone(scratches),
        };
        tasks.spawn(async move {
            fetch::restore_pack(&ctx, pack_pos, blobs).await;
            drop(permit);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| Error::io("restore worker", std::io::Error::other(e)))?;
    }
    Ok(std::mem::take(
        &mut *failed.lock().unwrap_or_else(|e| e.into_inner()),
    ))
}

/// The error of a restore of `snapshot` into `target` that left the files of `damaged`
/// incomplete, naming the first of them.
fn partial_restore(snapshot: &Id, target: &std::path::Path, damaged: &[Damage]) -> Error {
    let files: Vec<&str> = damaged
        .iter()
        .flat_map(|d| d.files.iter().map(String::as_str))
        .collect();
    let first: Vec<&str> = files.iter().take(3).copied().collect();
    let more = files.len().saturating_sub(first.len());
    let object = &damaged[0];
    Error::Incomplete {
        what: format!(
            "the restore of snapshot {snapshot} into {} is incomplete: {} damaged ({}), {} file(s) incomplete: {}{} (restore with accept_partial to keep what could be restored)",
            target.display(),
            object.object,
            object.error,
            files.len(),
            first.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
        ),
    }
}
