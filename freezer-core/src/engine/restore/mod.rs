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
    /// For a hard link to an earlier entry: that entry.
    link_to: Option<u32>,
    created: bool,
    /// For a file written under a temporary name: that path, relative to the target.
    tmp: Option<Vec<u8>>,
    /// Chunk writes still to come before the file is whole.
    left: AtomicU32,
    /// The file is under its own name.
    in_place: AtomicBool,
}

impl Entry {
    fn new(rel: Vec<u8>, node: Node, link_to: Option<u32>, created: bool) -> Self {
        Entry {
            rel,
            node,
            link_to,
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

#[derive(Default)]
struct Plan {
    entries: Vec<Entry>,
    /// For each blob, where it goes: (entry, offset).
    targets: HashMap<Id, Vec<(u32, u64)>>,
    damaged: Vec<Damage>,
    warnings: Vec<String>,
    skipped: Vec<String>,
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
    let target = opts.target.clone();
    let reader = repo.reader();
    let rt = tokio::runtime::Handle::current();
    let root_id = snapshot.tree;
    let sub_path = opts.sub_path.clone();
    let dry_run = opts.dry_run;
    let overwrite = opts.overwrite;
    let cancel = opts.cancel.clone();
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
            let popts = plan::PlanOptions {
                sub_path: sub_path.as_deref(),
                overwrite,
                resume,
                tmp_token: snapshot_id.to_hex()[..8].to_string(),
                cancel,
            };
            let plan = plan::make_plan(&reader, &rt, root_id, root_fd.as_deref(), &popts)?;
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
        mut entries,
        targets,
        mut damaged,
        mut warnings,
        skipped,
    } = plan;
    // A file is whole once every chunk write meant for it is done.
    for places in targets.values() {
        for (e, _) in places {
            *entries[*e as usize].left.get_mut() += 1;
        }
    }
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
    let concurrency = (opts.resources.workers() * 2).max(4);
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let scratches = Arc::default();
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
            scratches: Arc::clone(&scratches),
        };
        tasks.spawn(async move {
            fetch::restore_pack(&ctx, pack_pos, blobs).await;
            drop(permit);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| Error::io("restore worker", std::io::Error::other(e)))?;
    }
    opts.cancel.check()?;
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
    // Files a failure that may pass (a storage out of reach, a write refused) left unfinished:
    // they keep their temporary names, for the same restore run again to finish.
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
        bytes: bytes_written.load(Ordering::Relaxed),
        memory: crate::memory::MemoryUse::of(&opts.resources.memory),
        ..RestoreResult::default()
    };
    if !unfinished.is_empty() {
        let mut names: Vec<String> = unfinished
            .iter()
            .map(|e| lossy(&entries[*e as usize].rel))
            .collect();
        names.sort();
        warnings.push(format!(
            "{} file(s) not finished, left under temporary names (.freezer-tmp-*): {}; run the same restore again to finish them",
            names.len(),
            names.join(", ")
        ));
    }
    if let Some(root_fd) = root_fd {
        let owners = opts
            .owners
            .unwrap_or_else(|| rustix::process::geteuid().is_root());
        let entries = entries.clone();
        let unfinished = unfinished.clone();
        let meta_warnings = tokio::task::spawn_blocking(move || {
            // The marker stays while a file is unfinished: the next run resumes.
            let marker = unfinished.is_empty().then_some(target::MARKER);
            finish::finish_entries(&root_fd, &entries, owners, &unfinished, marker)
        })
        .await
        .map_err(|e| Error::io("restore metadata", std::io::Error::other(e)))?;
        warnings.extend(meta_warnings);
    }
    for (i, e) in entries.iter().enumerate() {
        let restored = if opts.dry_run {
            e.created
        } else {
            match e.link_to {
                Some(first) => entries[first as usize].is_placed(),
                None => e.is_placed(),
            }
        };
        if !restored || unfinished.contains(&(i as u32)) {
            continue;
        }
        match e.node.kind() {
            NodeKind::File => result.files += 1,
            NodeKind::Dir => result.dirs += 1,
            _ => result.others += 1,
        }
    }
    if !damaged.is_empty() && !opts.accept_partial {
        return Err(partial_restore(&result.snapshot_id, &opts.target, &damaged));
    }
    result.damaged = damaged;
    result.warnings = warnings;
    result.skipped = skipped;
    Ok(result)
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
