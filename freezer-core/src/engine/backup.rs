//! Backup: walk the source once, cut changed files into chunks, send each chunk that some
//! storage lacks through compression and encryption into packs, and hand every pack to the
//! storages that need it; then write the index and, on the storages that hold everything,
//! the snapshot.
//!
//! ```text
//! walker ──items──▶ tree builder ──tree blobs──┐
//!    │                   ▲ file results        ▼
//!    └─read jobs─▶ readers (chunk + hash) ──blobs──▶ compressors ──▶ packer ──packs──▶ uploader (tokio) ──▶ tee
//! ```
//!
//! Every queue is bounded. A chunk is a list of slices of the buffers it was read into: no
//! byte is copied between the read and the compressor. Deduplication is decided per storage:
//! a chunk goes, in a pack routed by a storage mask, to exactly the storages that lack it.
//! A storage that fails is dropped from the run and gets neither index nor snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, bounded};
use jiff::Timestamp;

use super::{Compression, Progress};
use crate::chunker::ChunkState;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::memory::Lease;
use crate::repo::index::IndexFile;
use crate::repo::pack::{BlobType, EncodedBlob, FinishedPack, PackWriter, PackedBlob};
use crate::repo::snapshot::{SNAPSHOT_VERSION, Snapshot, SnapshotStats};
use crate::repo::tree::{FLAG_CHANGED_WHILE_READ, Node, NodeKind, Tree};
use crate::repo::{Actor, BlobReader, Repository, pack_key};
use crate::sink::{PutMode, SinkMask, Tee};
use crate::source::{Source, SourceEntry};

/// Bytes read from a file at a time (a pooled buffer size, see `buffer`). Small, so that a
/// chunk waiting for its compressor pins little memory besides itself.
const READ_BLOCK: usize = crate::buffer::CLASSES[0];
/// The read past a file's stated size that finds its true end (heap memory, not a map).
const PROBE_BLOCK: u64 = 64 * 1024;

/// What to back up and how.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Upstream's `hostname`: the host the series belongs to.
    pub hostname: String,
    /// Upstream's `backup_name`: the series' name within the host.
    pub backup_name: String,
    /// How blobs are compressed.
    pub compression: Compression,
    /// The snapshot whose metadata may be trusted to skip unchanged files (see levels).
    pub parent: Option<Id>,
    /// The level recorded in the snapshot.
    pub level: u32,
    /// Read and hash everything, store nothing.
    pub dry_run: bool,
    /// The snapshot's time; now when `None` (tests inject a clock here).
    pub time: Option<Timestamp>,
    /// The workers and the memory budget: files read at once (`threads`, at most 8) and
    /// compressors (`threads`; by default one more than the cores); the blocks read, the chunks
    /// waiting for a compressor and the packs being filled and uploaded are leased from
    /// `memory` (readers wait when it is full).
    pub resources: crate::memory::Resources,
    /// Exclusion patterns, recorded in the snapshot.
    pub excludes: Vec<String>,
    /// Who runs the backup.
    pub actor: Actor,
    /// The file-set checksum to record (upstream's `consistency_check`; computed by the caller
    /// with [`crate::source::checksum::consistency_checksum`] before the backup).
    pub consistency_checksum: Option<String>,
    /// Stops the backup: the walk, every reader (between blocks of a file) and the packer see
    /// it; what was uploaded is indexed (the next backup reuses it) but no snapshot is written,
    /// the lock is released, and the backup fails with [`Error::Cancelled`].
    pub cancel: crate::CancelToken,
}

impl BackupOptions {
    /// Options for a series, with defaults for the rest.
    pub fn new(hostname: impl Into<String>, backup_name: impl Into<String>, actor: Actor) -> Self {
        BackupOptions {
            hostname: hostname.into(),
            backup_name: backup_name.into(),
            compression: Compression::default(),
            parent: None,
            level: 0,
            dry_run: false,
            time: None,
            resources: crate::memory::Resources::default(),
            excludes: vec![],
            actor,
            consistency_checksum: None,
            cancel: crate::CancelToken::new(),
        }
    }
}

/// How one storage fared in a backup.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SinkResult {
    /// The storage, described without secrets.
    pub sink: String,
    /// Whether it holds the new snapshot (and so everything the snapshot needs).
    pub holds_snapshot: bool,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// What a backup did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackupResult {
    /// The new snapshot's id (`None` for a dry run).
    pub snapshot_id: Option<Id>,
    /// The snapshot as written.
    pub snapshot: Snapshot,
    /// Each storage's outcome.
    pub sinks: Vec<SinkResult>,
    /// Files that changed while read or could not be read, and packs found missing, truncated
    /// or recorded damaged, whose blobs were stored again (those are not in the snapshot's
    /// warnings: they concern the repository).
    pub warnings: Vec<String>,
    /// Retention applied after the backup, when the job asked for it (upstream's backup
    /// action with `remove_older_than`); the engine itself leaves it `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<super::RetentionResult>,
    /// Storages where this backup created the repository, because they held none (a job's
    /// first backup, as upstream's agent creates its container); the engine leaves it empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub created_repository: Vec<String>,
    /// The memory budget and what the run took of it.
    pub memory: crate::memory::MemoryUse,
}

impl BackupResult {
    /// Whether every storage holds the snapshot, every entry was read cleanly, and retention
    /// (when asked for) finished.
    pub fn is_complete(&self) -> bool {
        self.sinks.iter().all(|s| s.holds_snapshot)
            && self.warnings.is_empty()
            && self.retention.as_ref().is_none_or(|r| r.is_complete())
    }
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    dirs: AtomicU64,
    others: AtomicU64,
    bytes: AtomicU64,
    bytes_read: AtomicU64,
    bytes_added: AtomicU64,
    blobs_added: AtomicU64,
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    changed_while_read: AtomicU64,
    errors: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

struct BlobJob {
    id: Id,
    kind: BlobType,
    parts: Vec<Bytes>,
    need: SinkMask,
}

struct FileResult {
    content: Vec<Id>,
    extents: Vec<(u64, u64)>,
    size: u64,
    changed_while_read: bool,
}

struct ReadJob {
    entry: SourceEntry,
    /// The parent snapshot's node of a stream (an image), whose chunks the reader may take
    /// where the source vouches that nothing changed ([`ContentReader::changed_since`]).
    parent: Option<Node>,
    done: Sender<Result<FileResult>>,
}

enum Content {
    /// Known already (unchanged file, or not a file).
    Ready,
    /// Being read; `true` for a stream, whose failure fails the backup.
    Pending(Receiver<Result<FileResult>>, bool),
    /// A hard link to a file seen earlier in this backup.
    SameAs((u64, u64)),
}

enum Item {
    DirStart(Node),
    DirEnd,
    Leaf(Node, Content),
}

struct Shared {
    source: Arc<dyn Source>,
    reader: BlobReader,
    tee: Arc<Tee>,
    inflight: Mutex<HashMap<Id, SinkMask>>,
    counters: Counters,
    abort: AtomicBool,
    cancel: crate::CancelToken,
    warnings: Mutex<Vec<String>>,
    progress: Arc<dyn Progress>,
    rt: tokio::runtime::Handle,
    /// The parent's trees, read ahead of the walk (a bounded number of nodes at a time).
    parent_trees: Mutex<super::TreesAhead>,
    /// The parent snapshot's source-specific fields (what [`Source::extra`] recorded).
    parent_extra: std::collections::BTreeMap<String, serde_json::Value>,
    level: Option<i32>,
    pack_size: usize,
    dry_run: bool,
    memory: Arc<crate::memory::Budget>,
}

impl Shared {
    /// The parent's tree `id`, read with those of the folders among `next` (what the walk
    /// visits after it).
    fn parent_tree(&self, id: &Id, next: &[Node]) -> Result<crate::repo::tree::Tree> {
        let mut ahead = self.parent_trees.lock().unwrap_or_else(|e| e.into_inner());
        self.rt.block_on(ahead.get(&self.reader, *id, next))
    }

    /// The storages that lack blob `id` and are not being sent it already; marks it as sent.
    fn need(&self, id: &Id) -> SinkMask {
        let live = self.tee.live();
        let have = self.reader.index().sinks_of(id) & live;
        if have == live {
            return 0;
        }
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        let sent = inflight.entry(*id).or_insert(0);
        let need = live & !have & !*sent;
        *sent |= need;
        need
    }

    /// Whether every live storage holds (or is being sent) blob `id`.
    fn everywhere(&self, id: &Id) -> bool {
        let live = self.tee.live();
        let have = self.reader.index().sinks_of(id) & live;
        if have == live {
            return true;
        }
        let inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        (have | (inflight.get(id).copied().unwrap_or(0) & live)) == live
    }

    /// A warning for the report (logged at `info` only: the report's reader shows it).
    fn warn(&self, msg: String) {
        tracing::info!("{msg}");
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg);
    }

    fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed) || self.cancel.is_cancelled()
    }
}

/// Backs up `source` into `repo`. See the module documentation for the pipeline.
pub async fn backup(
    repo: &mut Repository,
    source: Arc<dyn Source>,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupResult> {
    let started = Instant::now();
    let time = opts.time.unwrap_or_else(crate::time::now);
    if opts.hostname.is_empty() || opts.backup_name.is_empty() {
        return Err(Error::bad_input(
            "backup_name",
            "hostname and backup_name must not be empty",
        ));
    }
    opts.cancel.check()?;
    let lock = if opts.dry_run {
        None
    } else {
        tokio::select! {
            l = repo.lock(false, "backup", &opts.actor) => Some(l?),
            _ = opts.cancel.cancelled() => return Err(Error::Cancelled),
        }
    };
    lock.iter()
        .for_each(crate::repo::lock::LockGuard::log_notes);
    repo.load_index().await?;
    // Never deduplicate against a copy that is missing, too short, or known to be damaged:
    // those blobs count as absent on that storage and are stored again.
    let unusable = repo.unusable_packs().await?;
    repo.distrust(&unusable);
    let distrusted: Vec<String> = unusable
        .notes
        .iter()
        .map(|n| {
            format!(
                "{n}: its blobs were stored again; run `freezer check`, then `freezer repair packs`"
            )
        })
        .collect();
    tracing::info!(elapsed = ?started.elapsed(), blobs = repo.index().blob_count(), "backup: index loaded");
    let (parent_root, parent_extra) = match opts.parent {
        Some(id) => {
            let p = repo
                .read_snapshot(&id)
                .await
                .map_err(|e| e.context("parent snapshot"))?;
            (Some(p.tree), p.extra)
        }
        None => (None, Default::default()),
    };
    let shared = Arc::new(Shared {
        parent_trees: Mutex::default(),
        parent_extra,
        source: source.clone(),
        reader: repo.reader(),
        tee: repo.tee().clone(),
        inflight: Mutex::default(),
        counters: Counters::default(),
        abort: AtomicBool::new(false),
        cancel: opts.cancel.clone(),
        warnings: Mutex::default(),
        progress,
        rt: tokio::runtime::Handle::current(),
        level: opts.compression.level(),
        pack_size: repo.config().pack_size as usize,
        dry_run: opts.dry_run,
        memory: opts.resources.memory.clone(),
    });
    let workers = opts.resources.workers();
    let (read_threads, cpu_threads) = if opts.resources.threads > 0 {
        (workers.min(8), workers)
    } else {
        // One compressor more than cores: one blocked on a full queue leaves no core idle.
        (workers.clamp(2, 8), workers + 1)
    };

    let (upload_tx, upload_rx) = tokio::sync::mpsc::channel::<Upload>(1);
    let uploader = tokio::spawn(upload_loop(shared.clone(), upload_rx));
    let chunker = repo.chunker().clone();
    let crypto = repo.crypto().clone();
    let pipeline = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            run_pipeline(
                &shared,
                &chunker,
                &crypto,
                parent_root,
                read_threads,
                cpu_threads,
                upload_tx,
            )
        })
    };
    let root = pipeline
        .await
        .map_err(|e| Error::io("backup pipeline", std::io::Error::other(e)))?;
    let packs = uploader
        .await
        .map_err(|e| Error::io("backup uploader", std::io::Error::other(e)))?;
    // The uploader's error is the cause when the pipeline was cancelled because of it.
    let (root, packs) = match (root, packs) {
        // The uploader ended first (a storage failed, or the cancel reached it): the lock is
        // released before the error returns, never left to a drop that runs later.
        (_, Err(e)) => {
            drop(shared);
            return Err(abandon(repo, &[], lock, opts.dry_run, e).await);
        }
        (_, Ok(p)) if opts.cancel.is_cancelled() => {
            drop(shared);
            return Err(abandon(repo, &p, lock, opts.dry_run, Error::Cancelled).await);
        }
        // A source that failed (a stream that could not be read whole): no snapshot.
        (Err(e), Ok(p)) => {
            drop(shared);
            return Err(abandon(repo, &p, lock, opts.dry_run, e).await);
        }
        (Ok(r), Ok(p)) => (r, p),
    };

    let c = &shared.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut warnings =
        std::mem::take(&mut *shared.warnings.lock().unwrap_or_else(|e| e.into_inner()));
    let info = source.info();
    let mut snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time,
        time_stamp: time.as_second(),
        hostname: opts.hostname.clone(),
        backup_name: opts.backup_name.clone(),
        mode: info.mode,
        level: opts.level,
        parent: opts.parent,
        path_to_backup: info.path,
        tree: root,
        excludes: opts.excludes.clone(),
        program: format!("freezer-rs {}", env!("CARGO_PKG_VERSION")),
        username: opts.actor.username.clone(),
        stats: SnapshotStats {
            files: get(&c.files),
            dirs: get(&c.dirs),
            others: get(&c.others),
            bytes: get(&c.bytes),
            bytes_read: get(&c.bytes_read),
            bytes_added: get(&c.bytes_added),
            blobs_added: get(&c.blobs_added),
            files_new: get(&c.files_new),
            files_changed: get(&c.files_changed),
            files_unmodified: get(&c.files_unmodified),
            files_changed_while_read: get(&c.changed_while_read),
            errors: get(&c.errors),
            duration_secs: 0.0,
        },
        warnings: vec![],
        consistency_checksum: opts.consistency_checksum.clone(),
        command: info.command,
        extra: source.extra(),
    };
    drop(shared);

    if opts.dry_run {
        snapshot.stats.duration_secs = started.elapsed().as_secs_f64();
        snapshot.warnings = warnings.clone();
        let sinks = repo
            .status()
            .into_iter()
            .map(|s| SinkResult {
                sink: s.sink,
                holds_snapshot: false,
                error: s.error,
            })
            .collect();
        warnings.extend(distrusted);
        return Ok(BackupResult {
            snapshot_id: None,
            snapshot,
            sinks,
            warnings,
            retention: None,
            created_repository: Vec::new(),
            memory: crate::memory::MemoryUse::of(&opts.resources.memory),
        });
    }

    // Index first, snapshot last: a snapshot is only ever visible where its data is. And
    // only where the config still names the repository whose keys sealed the data.
    repo.confirm_config().await;
    // The packs' lists of blobs move into the index files rather than being copied (a
    // million new blobs' lists are tens of megabytes).
    repo.add_packs(packs.iter().map(|(id, mask, b)| (*id, *mask, b.as_slice())));
    let pack_count = packs.len();
    let mut by_mask: HashMap<SinkMask, IndexFile> = HashMap::new();
    for (id, mask, blobs) in packs {
        by_mask.entry(mask).or_default().packs.push((id, blobs));
    }
    tracing::info!(elapsed = ?started.elapsed(), packs = pack_count, "backup: data stored");
    for (mask, file) in by_mask {
        for part in file.split() {
            // A storage that fails here is dropped by the tee and gets no snapshot.
            let _ = repo.write_index(&part, mask).await;
        }
    }
    let live = repo.tee().live();
    snapshot.stats.duration_secs = started.elapsed().as_secs_f64();
    snapshot.warnings = warnings.clone();
    tracing::info!(elapsed = ?started.elapsed(), "backup: index written");
    let written = if live != 0 {
        repo.write_snapshot(&snapshot, live).await
    } else {
        Err(Error::io(
            "snapshot",
            std::io::Error::other("no storage left"),
        ))
    };
    if let Some(l) = lock
        && let Err(e) = l.release().await
    {
        warnings.push(format!("could not remove the lock: {e}"));
    }
    let (id, holders) = match written {
        Ok(x) => x,
        Err(_) => {
            let reasons: Vec<String> = repo
                .status()
                .into_iter()
                .map(|s| format!("{}: {}", s.sink, s.error.unwrap_or_else(|| "ok".into())))
                .collect();
            return Err(Error::io(
                "backup",
                std::io::Error::other(format!(
                    "no storage holds the snapshot ({})",
                    reasons.join("; ")
                )),
            ));
        }
    };
    let sinks = repo
        .status()
        .into_iter()
        .enumerate()
        .map(|(i, s)| SinkResult {
            sink: s.sink,
            holds_snapshot: holders & (1 << i) != 0,
            error: s.error,
        })
        .collect();
    // About the repository, not the snapshot: in the result only.
    warnings.extend(distrusted);
    Ok(BackupResult {
        snapshot_id: Some(id),
        snapshot,
        sinks,
        warnings,
        retention: None,
        created_repository: Vec::new(),
        memory: crate::memory::MemoryUse::of(&opts.resources.memory),
    })
}

/// Ends a cancelled or failed backup without a snapshot: indexes the packs it uploaded, so
/// that the next backup sends only the rest (no snapshot references them; `prune` removes
/// them if none ever does), releases the lock, and returns `why`.
async fn abandon(
    repo: &mut Repository,
    packs: &[WrittenPack],
    lock: Option<crate::repo::lock::LockGuard>,
    dry_run: bool,
    why: Error,
) -> Error {
    if !dry_run && !packs.is_empty() {
        repo.confirm_config().await;
        repo.add_packs(packs.iter().map(|(id, mask, b)| (*id, *mask, b.as_slice())));
        let mut by_mask: HashMap<SinkMask, IndexFile> = HashMap::new();
        for (id, mask, blobs) in packs {
            by_mask
                .entry(*mask)
                .or_default()
                .packs
                .push((*id, blobs.clone()));
        }
        for (mask, file) in by_mask {
            for part in file.split() {
                let _ = repo.write_index(&part, mask).await;
            }
        }
    }
    if let Some(l) = lock
        && let Err(e) = l.release().await
    {
        tracing::warn!("abandoned backup: could not remove the lock: {e}");
    }
    tracing::info!(packs = packs.len(), "backup abandoned: {why}");
    why
}

#[allow(clippy::too_many_arguments)]
fn run_pipeline(
    shared: &Arc<Shared>,
    chunker: &crate::chunker::Chunker,
    crypto: &crate::crypto::Crypto,
    parent_root: Option<Id>,
    read_threads: usize,
    cpu_threads: usize,
    upload_tx: tokio::sync::mpsc::Sender<Upload>,
) -> Result<Id> {
    let (item_tx, item_rx) = bounded::<Item>(4096);
    let (read_tx, read_rx) = bounded::<ReadJob>(64);
    let (blob_tx, blob_rx) = bounded::<BlobJob>(cpu_threads * 2);
    // The packer only appends: a short queue keeps it fed and holds little.
    let (pack_tx, pack_rx) = bounded::<(EncodedBlob, SinkMask, Lease)>(4);
    std::thread::scope(|s| {
        let walker = std::thread::Builder::new()
            .name("freezer-walk".into())
            .stack_size(64 << 20)
            .spawn_scoped(s, {
                let read_tx = read_tx.clone();
                move || {
                    let res = walk(shared, parent_root, &item_tx, &read_tx);
                    if res.is_err() {
                        shared.abort.store(true, Ordering::Relaxed);
                    }
                    res
                }
            })
            .expect("spawn walker");
        drop(read_tx);
        for _ in 0..read_threads {
            let (read_rx, blob_tx) = (read_rx.clone(), blob_tx.clone());
            s.spawn(move || {
                for job in read_rx {
                    let res = if shared.aborted() {
                        Err(Error::Cancelled)
                    } else {
                        read_file(
                            shared,
                            chunker,
                            crypto,
                            &job.entry,
                            job.parent.as_ref(),
                            &blob_tx,
                        )
                    };
                    let _ = job.done.send(res);
                }
            });
        }
        drop(read_rx);
        for _ in 0..cpu_threads {
            let (blob_rx, pack_tx) = (blob_rx.clone(), pack_tx.clone());
            let crypto = crypto.clone();
            s.spawn(move || {
                let mut enc = crate::repo::pack::BlobEncoder::new(crypto, shared.level);
                for job in blob_rx {
                    let blob = enc.encode(job.id, job.kind, &job.parts);
                    let lease = shared.memory.charge(blob.data.len());
                    drop(job.parts);
                    if pack_tx.send((blob, job.need, lease)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(blob_rx);
        drop(pack_tx);
        let packer = s.spawn(move || pack_loop(shared, crypto, pack_rx, upload_tx));
        let root = build_trees(shared, crypto, item_rx, blob_tx);
        if root.is_err() {
            shared.abort.store(true, Ordering::Relaxed);
        }
        let walked = walker.join().expect("walker thread");
        packer.join().expect("packer thread");
        // The tree builder's own error is the cause when the walk stopped because of it.
        match (walked, root) {
            (_, Err(e)) if !matches!(e, Error::Cancelled) => Err(e),
            (Err(e), _) => Err(e),
            (Ok(()), root) => root,
        }
    })
}

/// Whether `now` (just listed) can reuse `parent`'s content without reading the file.
fn unchanged(now: &Node, parent: &Node) -> bool {
    parent.kind() == NodeKind::File
        && parent.flags & FLAG_CHANGED_WHILE_READ == 0
        && now.size == parent.size
        && (now.mtime, now.mtime_ns) == (parent.mtime, parent.mtime_ns)
        && (now.ctime, now.ctime_ns) == (parent.ctime, parent.ctime_ns)
        && now.inode == parent.inode
}

fn walk(
    shared: &Shared,
    parent_root: Option<Id>,
    items: &Sender<Item>,
    reads: &Sender<ReadJob>,
) -> Result<()> {
    let root = shared.source.root()?;
    // The parent's top tree holds one node: the parent's root.
    let parent = parent_root.and_then(|id| match shared.parent_tree(&id, &[]) {
        Ok(t) => t.nodes.into_iter().next(),
        Err(e) => {
            shared.warn(format!(
                "parent snapshot unreadable, reading every file: {e}"
            ));
            None
        }
    });
    let mut hardlinks = HashMap::new();
    visit(
        shared,
        root,
        parent.as_ref(),
        &[],
        items,
        reads,
        &mut hardlinks,
    )
}

fn send<T>(tx: &Sender<T>, v: T) -> Result<()> {
    tx.send(v).map_err(|_| Error::Cancelled)
}

/// Visits `entry`, whose node in the parent snapshot is `parent`; `next` are the parent's
/// nodes after it in the same folder (their trees are read ahead with its own).
fn visit(
    shared: &Shared,
    entry: SourceEntry,
    parent: Option<&Node>,
    next: &[Node],
    items: &Sender<Item>,
    reads: &Sender<ReadJob>,
    hardlinks: &mut HashMap<(u64, u64), ()>,
) -> Result<()> {
    if shared.aborted() {
        return Err(Error::Cancelled);
    }
    let c = &shared.counters;
    let mut node = entry.node.clone();
    let parent = parent.filter(|p| p.kind() == node.kind());
    let same_meta = parent
        .is_some_and(|p| (p.ctime, p.ctime_ns, p.inode) == (node.ctime, node.ctime_ns, node.inode));
    // An unchanged ctime means unchanged xattrs: reuse them instead of asking again.
    node.xattrs = match parent {
        Some(p) if same_meta => p.xattrs.clone(),
        _ => shared.source.xattrs(&entry).unwrap_or_else(|e| {
            shared.warn(format!(
                "{}: extended attributes not read: {e}",
                entry.path.display()
            ));
            vec![]
        }),
    };
    shared.progress.add_entries(1);
    match node.kind() {
        NodeKind::Dir => {
            add(&c.dirs, 1);
            send(items, Item::DirStart(node))?;
            if entry.descend {
                let parent_tree = parent.and_then(|p| p.subtree).and_then(|id| {
                    shared
                        .parent_tree(&id, next)
                        .map_err(|e| {
                            shared.warn(format!(
                                "{}: parent tree unreadable, reading again: {e}",
                                entry.path.display()
                            ));
                        })
                        .ok()
                });
                let listing = match shared.source.list(&entry) {
                    Ok(l) => l,
                    Err(e) => {
                        add(&c.errors, 1);
                        shared.warn(format!("{}: not listed: {e}", entry.path.display()));
                        Default::default()
                    }
                };
                for (path, why) in listing.errors {
                    add(&c.errors, 1);
                    shared.warn(format!("{path}: {why}"));
                }
                let pnodes = parent_tree.map(|t| t.nodes).unwrap_or_default();
                let mut pi = 0;
                for child in listing.entries {
                    while pi < pnodes.len() && pnodes[pi].name < child.node.name {
                        pi += 1;
                    }
                    let pnode = pnodes.get(pi).filter(|p| p.name == child.node.name);
                    let next = pnodes.get(pi + 1..).unwrap_or_default();
                    visit(shared, child, pnode, next, items, reads, hardlinks)?;
                }
            }
            send(items, Item::DirEnd)
        }
        NodeKind::File => {
            add(&c.files, 1);
            add(&c.bytes, node.size);
            if node.links > 1 && hardlinks.insert((node.device, node.inode), ()).is_some() {
                let key = (node.device, node.inode);
                return send(items, Item::Leaf(node, Content::SameAs(key)));
            }
            if let Some(p) = parent.filter(|p| !entry.stream && unchanged(&node, p))
                && p.content.iter().all(|id| shared.everywhere(id))
            {
                add(&c.files_unmodified, 1);
                shared.progress.add_bytes(node.size);
                node.content = p.content.clone();
                node.extents = p.extents.clone();
                return send(items, Item::Leaf(node, Content::Ready));
            }
            add(
                if parent.is_some() {
                    &c.files_changed
                } else {
                    &c.files_new
                },
                1,
            );
            let (done, rx) = bounded(1);
            let stream = entry.stream;
            // Only a stream's reader (an image's) can say what did not change in it; a
            // file is reused whole above or read.
            let parent = parent.filter(|_| stream).cloned();
            send(
                reads,
                ReadJob {
                    entry,
                    parent,
                    done,
                },
            )?;
            send(items, Item::Leaf(node, Content::Pending(rx, stream)))
        }
        _ => {
            add(&c.others, 1);
            send(items, Item::Leaf(node, Content::Ready))
        }
    }
}

fn read_file(
    shared: &Shared,
    chunker: &crate::chunker::Chunker,
    crypto: &crate::crypto::Crypto,
    entry: &SourceEntry,
    parent: Option<&Node>,
    blobs: &Sender<BlobJob>,
) -> Result<FileResult> {
    let what = entry.path.display();
    let mut attempt = 0;
    loop {
        let mut reader = shared.source.open(entry).map_err(|e| e.context(&what))?;
        // A stream's size is what is read: read on until its end.
        let size = reader.size().unwrap_or(u64::MAX);
        let extents = reader.data_extents().map_err(|e| e.context(&what))?;
        let ranges = extents.clone().unwrap_or_else(|| vec![(0, size)]);
        let mut reuse = parent.and_then(|p| {
            let changed = reader.changed_since(&shared.parent_extra)?;
            Reuse::new(shared, crypto, p, &changed)
        });
        let mut content = Vec::new();
        let emit = |parts: Vec<Bytes>| -> Result<Id> {
            let len: usize = parts.iter().map(Bytes::len).sum();
            let id = crypto.blob_id(&parts);
            add(&shared.counters.bytes_read, len as u64);
            shared.progress.add_bytes(len as u64);
            let need = shared.need(&id);
            if need != 0 {
                send(
                    blobs,
                    BlobJob {
                        id,
                        kind: BlobType::Data,
                        parts,
                        need,
                    },
                )?;
            }
            Ok(id)
        };
        let mut read_to = 0;
        for (offset, len) in ranges {
            let mut state = ChunkState::default();
            let mut pending: Vec<Bytes> = Vec::new();
            let mut pos = offset;
            let mut end = offset + len;
            if len == 0 && extents.is_none() {
                end = PROBE_BLOCK;
            }
            while pos < end {
                if shared.aborted() {
                    return Err(Error::Cancelled);
                }
                let mut want = ((end - pos) as usize).min(READ_BLOCK);
                if let Some(r) = reuse.as_mut() {
                    // At a cut, a chunk of the parent's that starts here, lies in this
                    // extent and did not change is taken as it is, unread.
                    if pending.is_empty()
                        && state.is_empty()
                        && let Some((id, n)) = r.take(shared, pos, end)
                    {
                        content.push(id);
                        shared.progress.add_bytes(n);
                        pos += n;
                        continue;
                    }
                    // Read no further than the next chunk that may be taken: a cut there
                    // takes it.
                    if let Some(next) = r.next_start(pos) {
                        want = want.min((next - pos) as usize);
                    }
                }
                // Wait for room at a cut only: a reader in the middle of a chunk holds blocks
                // that go nowhere until the chunk is whole, so it takes the next one at once
                // (the budget may be overdrawn by a chunk per reader, no more).
                let lease = if pending.is_empty() {
                    shared
                        .memory
                        .acquire(want, || shared.aborted())
                        .ok_or(Error::Cancelled)?
                } else {
                    shared.memory.charge(want)
                };
                let mut buf = crate::buffer::IoBuf::new(want);
                let mut got = 0;
                while got < want {
                    let n = reader
                        .read_at(&mut buf.as_mut()[got..], pos + got as u64)
                        .map_err(|e| e.context(&what))?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                let block = buf.freeze_leased(got, lease);
                let mut start = 0;
                while let Some(cut) = chunker.next_cut(&mut state, &block[start..]) {
                    pending.push(block.slice(start..start + cut));
                    content.push(emit(std::mem::take(&mut pending))?);
                    start += cut;
                }
                if start < block.len() {
                    pending.push(block.slice(start..));
                }
                pos += got as u64;
                if got < want {
                    break; // the file shrank; `changed` will say so
                }
                if pos == end && extents.is_none() {
                    // A size can lie (procfs says 0, sysfs 4096): read on to the end of the
                    // file, as tar does. One more read finds the end of an honest file.
                    end += if pos > len {
                        READ_BLOCK as u64
                    } else {
                        PROBE_BLOCK
                    };
                }
            }
            read_to = pos;
            if !pending.is_empty() {
                content.push(emit(pending)?);
            }
        }
        let changed = reader.finish().map_err(|e| e.context(&what))?;
        if changed && attempt == 0 && !entry.stream {
            attempt += 1;
            continue;
        }
        return Ok(FileResult {
            content,
            // Without extents, the file is what was read; a sparse file keeps its size.
            size: if extents.is_some() { size } else { read_to },
            extents: extents.unwrap_or_default(),
            changed_while_read: changed,
        });
    }
}

/// The parent's chunks of a file that may be taken without reading: each with the byte
/// range it held, none overlapping a range the source says may have changed.
struct Reuse {
    /// `(offset, length, id)`, by offset.
    chunks: Vec<(u64, u64, Id)>,
    /// The first of `chunks` not behind the reading position.
    next: usize,
}

impl Reuse {
    /// The chunks of `parent` outside `changed` (sorted, disjoint `(offset, length)`);
    /// `None` when the parent's chunks cannot be placed (a blob the index lacks, lengths
    /// that do not add up to its extents).
    fn new(
        shared: &Shared,
        crypto: &crate::crypto::Crypto,
        parent: &Node,
        changed: &[(u64, u64)],
    ) -> Option<Reuse> {
        let index = shared.reader.index();
        let extents = if parent.extents.is_empty() {
            vec![(0, parent.size)]
        } else {
            parent.extents.clone()
        };
        let mut ids = parent.content.iter();
        let mut placed = Vec::with_capacity(parent.content.len());
        for (offset, len) in extents {
            let mut at = offset;
            while at < offset + len {
                let id = ids.next()?;
                let n = index.get(id)?.plain_len(crypto.overhead());
                if n == 0 || at + n > offset + len {
                    return None;
                }
                placed.push((at, n, *id));
                at += n;
            }
        }
        if ids.next().is_some() {
            return None;
        }
        // Both lists are sorted: keep the chunks that no changed range overlaps.
        let mut c = 0;
        placed.retain(|&(at, n, _)| {
            while c < changed.len() && changed[c].0 + changed[c].1 <= at {
                c += 1;
            }
            c == changed.len() || changed[c].0 >= at + n
        });
        Some(Reuse {
            chunks: placed,
            next: 0,
        })
    }

    /// The chunk that starts at `pos` and ends by `end`, when every storage holds it.
    fn take(&mut self, shared: &Shared, pos: u64, end: u64) -> Option<(Id, u64)> {
        while self.next < self.chunks.len() && self.chunks[self.next].0 < pos {
            self.next += 1;
        }
        let &(at, n, id) = self.chunks.get(self.next)?;
        (at == pos && at + n <= end && shared.everywhere(&id)).then(|| {
            self.next += 1;
            (id, n)
        })
    }

    /// Where the next chunk after `pos` starts (those at or before `pos` are passed: reading
    /// goes on from `pos`).
    fn next_start(&mut self, pos: u64) -> Option<u64> {
        while self.next < self.chunks.len() && self.chunks[self.next].0 <= pos {
            self.next += 1;
        }
        self.chunks.get(self.next).map(|c| c.0)
    }
}

fn store_tree(
    shared: &Shared,
    crypto: &crate::crypto::Crypto,
    nodes: Vec<Node>,
    blobs: &Sender<BlobJob>,
) -> Result<Id> {
    let data = Bytes::from(Tree { nodes }.encode());
    let id = crypto.blob_id(&[&data]);
    let need = shared.need(&id);
    if need != 0 {
        send(
            blobs,
            BlobJob {
                id,
                kind: BlobType::Tree,
                parts: vec![data],
                need,
            },
        )?;
    }
    Ok(id)
}

fn build_trees(
    shared: &Shared,
    crypto: &crate::crypto::Crypto,
    items: Receiver<Item>,
    blobs: Sender<BlobJob>,
) -> Result<Id> {
    let c = &shared.counters;
    let mut stack: Vec<(Option<Node>, Vec<Node>)> = vec![(None, Vec::new())];
    // The first node of each hard-linked inode, whose content the other names share.
    let mut linked: HashMap<(u64, u64), Node> = HashMap::new();
    for item in items {
        match item {
            Item::DirStart(node) => stack.push((Some(node), Vec::new())),
            Item::DirEnd => {
                let (node, children) = stack.pop().expect("balanced walk");
                let mut node = node.expect("a directory node");
                node.subtree = Some(store_tree(shared, crypto, children, &blobs)?);
                stack.last_mut().expect("a parent").1.push(node);
            }
            Item::Leaf(mut node, content) => {
                match content {
                    Content::Ready => {}
                    Content::Pending(rx, stream) => {
                        let res = rx.recv().map_err(|_| Error::Cancelled)?;
                        match res {
                            Ok(r) => {
                                if stream {
                                    // Its size is known now, at its end.
                                    add(&c.bytes, r.size);
                                }
                                node.content = r.content;
                                node.extents = r.extents;
                                node.size = r.size;
                                if r.changed_while_read {
                                    node.flags |= FLAG_CHANGED_WHILE_READ;
                                    add(&c.changed_while_read, 1);
                                    shared.warn(format!(
                                        "{}: changed while it was read, twice; stored as read the second time",
                                        String::from_utf8_lossy(&node.name)
                                    ));
                                }
                            }
                            Err(Error::Cancelled) => return Err(Error::Cancelled),
                            // A stream read in part is no backup of it.
                            Err(e) if stream => return Err(e),
                            Err(e) => {
                                add(&c.errors, 1);
                                shared.warn(format!("not backed up: {e}"));
                                continue;
                            }
                        }
                    }
                    Content::SameAs(key) => match linked.get(&key) {
                        Some(first) => {
                            node.content = first.content.clone();
                            node.extents = first.extents.clone();
                            node.size = first.size;
                        }
                        None => {
                            // The first link could not be read: neither can this one.
                            add(&c.errors, 1);
                            continue;
                        }
                    },
                }
                if node.kind() == NodeKind::File && node.links > 1 {
                    linked
                        .entry((node.device, node.inode))
                        .or_insert_with(|| node.clone());
                }
                stack.last_mut().expect("a parent").1.push(node);
            }
        }
    }
    if shared.aborted() && stack.len() != 1 {
        return Err(Error::Cancelled);
    }
    let (_, top) = stack.pop().expect("the top");
    if top.len() != 1 || !stack.is_empty() {
        return Err(Error::Cancelled);
    }
    store_tree(shared, crypto, top, &blobs)
}

/// A pack for the storages of a mask, with the budget its bytes hold until it is stored.
type Upload = (FinishedPack, SinkMask, Vec<Lease>);

fn pack_loop(
    shared: &Shared,
    crypto: &crate::crypto::Crypto,
    blobs: Receiver<(EncodedBlob, SinkMask, Lease)>,
    upload: tokio::sync::mpsc::Sender<Upload>,
) {
    // The blobs' leases go with the pack they were copied into.
    let mut open: HashMap<(SinkMask, BlobType), (PackWriter, Vec<Lease>)> = HashMap::new();
    let flush = |(w, leases): (PackWriter, Vec<Lease>), mask: SinkMask| {
        upload
            .blocking_send((w.finish(crypto), mask, leases))
            .is_ok()
    };
    for (blob, need, lease) in blobs {
        let key = (need, blob.kind);
        let (w, leases) = open.entry(key).or_default();
        w.add(&blob);
        leases.push(lease);
        if w.size() >= shared.pack_size {
            let pack = open.remove(&key).expect("just used");
            if !flush(pack, need) {
                return;
            }
        }
    }
    for ((mask, _), pack) in open {
        if pack.0.count() > 0 && !flush(pack, mask) {
            return;
        }
    }
}

type WrittenPack = (Id, SinkMask, Vec<PackedBlob>);

async fn upload_loop(
    shared: Arc<Shared>,
    mut rx: tokio::sync::mpsc::Receiver<Upload>,
) -> Result<Vec<WrittenPack>> {
    let mut written = Vec::new();
    while let Some((pack, mask, _leases)) = rx.recv().await {
        if shared.cancel.is_cancelled() {
            // Cancelled: what is still in flight is dropped, not stored (nothing refers to it).
            continue;
        }
        let size = pack.payload.len() as u64;
        let ok = if shared.dry_run {
            mask
        } else {
            shared
                .tee
                .put_to(mask, &pack_key(&pack.id), &pack.payload, PutMode::Overwrite)
                .await
                .0
        };
        if ok != 0 {
            add(&shared.counters.bytes_added, size);
            add(&shared.counters.blobs_added, pack.blobs.len() as u64);
            written.push((pack.id, ok, pack.blobs));
        }
        if shared.tee.live() == 0 {
            shared.abort.store(true, Ordering::Relaxed);
            rx.close();
            while rx.recv().await.is_some() {}
            let reasons: Vec<String> = shared
                .tee
                .status()
                .into_iter()
                .filter_map(|s| s.error.map(|e| format!("{}: {e}", s.sink)))
                .collect();
            return Err(Error::io(
                "backup",
                std::io::Error::other(format!("every storage failed: {}", reasons.join("; "))),
            ));
        }
    }
    Ok(written)
}
