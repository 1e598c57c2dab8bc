//! Restore's content stage: fetch each needed pack (only the byte runs needed) from the first
//! storage that answers, verify every chunk against its id, and write it at its offsets; a
//! chunk that fails is sought in its other copies before it is reported. A file whose last
//! chunk is written is renamed from its temporary name to its own at once.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustix::fs::OFlags;
use rustix::io::Errno;

use super::{Entry, lossy, open_beneath};
use crate::engine::Progress;
use crate::error::Error;
use crate::id::Id;
use crate::repo::index::Location;
use crate::repo::{BlobReader, pack, pack_key};
use crate::sink::SinkExt;

/// Runs of needed bytes closer than this are fetched in one request...
const MERGE_GAP: u64 = 1024 * 1024;
/// ...as long as the run stays below this size (each run in flight leases it from the budget).
const MAX_RUN: u64 = 8 * 1024 * 1024;

pub(super) struct PackCtx {
    pub reader: BlobReader,
    pub entries: Arc<Vec<Entry>>,
    pub targets: Arc<HashMap<Id, Vec<(u32, u64)>>>,
    pub root: Option<Arc<OwnedFd>>,
    pub failed: Arc<Mutex<Vec<(Id, Error)>>>,
    pub bytes: Arc<std::sync::atomic::AtomicU64>,
    pub progress: Arc<dyn Progress>,
    pub cancel: crate::CancelToken,
    pub memory: Arc<crate::memory::Budget>,
    /// Decompression contexts and their piece buffers, one per run being decoded, kept for
    /// the next run (a blob's plaintext is written in pieces, never held whole).
    pub scratches: Arc<Mutex<Vec<pack::DecodeScratch>>>,
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
pub(super) async fn restore_pack(ctx: &PackCtx, pack_pos: u32, blobs: Vec<(Id, Location)>) {
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
        // The run's bytes, and its largest blob's decrypted bytes (its stored length); the
        // plaintext is written a piece at a time.
        let largest = blobs
            .iter()
            .map(|(_, l)| l.length as usize)
            .max()
            .unwrap_or(0)
            + pack::DECODE_PIECE;
        let _lease = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return,
            l = ctx.memory.acquire_async((end - start) as usize + largest) => l,
        };
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
                // A storage that failed outranks one that lacks the pack or holds it damaged: the
                // file may still be whole once it answers, so it stays unfinished, not damaged.
                Ok(_) => {
                    if fetch_err
                        .as_ref()
                        .is_none_or(|f| matches!(f, Error::NotFound { .. }))
                    {
                        fetch_err = Some(Error::corrupt(format!("pack {}", pack.id), "truncated"));
                    }
                }
                Err(e) => {
                    if fetch_err
                        .as_ref()
                        .is_none_or(|f| matches!(f, Error::NotFound { .. } | Error::Corrupt { .. }))
                    {
                        fetch_err = Some(e);
                    }
                }
            }
        }
        let retry: Vec<(Id, Location)> = match data {
            Some(data) => {
                let ids: Vec<Id> = blobs.iter().map(|(id, _)| *id).collect();
                let crypto = ctx.reader.crypto().clone();
                let work = WriteWork::from(ctx);
                let scratches = ctx.scratches.clone();
                match tokio::task::spawn_blocking(move || {
                    let mut scratch = scratches
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .pop()
                        .unwrap_or_default();
                    let mut retry = Vec::new();
                    for (id, l) in blobs {
                        let from = (u64::from(l.offset) - start) as usize;
                        let stored = &data[from..from + l.length as usize];
                        let what = format!("blob {} in pack {}", id.short(), pack.id);
                        let mut writing = work.begin(id);
                        match pack::decode_blob_pieces(
                            &crypto,
                            &mut scratch,
                            stored,
                            &l.packed(id),
                            &what,
                            |at, piece| writing.write(at, piece),
                        ) {
                            Ok(()) => writing.finish(),
                            Err(e) => retry.push((id, l, e)),
                        }
                    }
                    scratches
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(scratch);
                    retry
                })
                .await
                {
                    Ok(v) => v
                        .into_iter()
                        .map(|(id, l, e)| {
                            tracing::warn!("{e}; trying other copies");
                            (id, l)
                        })
                        .collect(),
                    // A writer that panicked: its blobs' files are left unfinished, never put
                    // in place as if whole.
                    Err(e) => {
                        for id in ids {
                            ctx.fail(id, worker_failed(&e));
                        }
                        Vec::new()
                    }
                }
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
                    if let Err(e) =
                        tokio::task::spawn_blocking(move || work.write(id, &plain)).await
                    {
                        ctx.fail(id, worker_failed(&e));
                    }
                }
                Err(e) => {
                    let e = match &fetch_err {
                        // A pack gone from every storage: damage, not a failure to retry.
                        Some(f @ Error::NotFound { .. }) if !matches!(e, Error::Corrupt { .. }) => {
                            Error::not_found(format!("pack {} at {} ({f})", pack.id, l.offset))
                        }
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

/// The failure of a writer task that did not end (it panicked): not damage, the file is left
/// unfinished.
fn worker_failed(e: &tokio::task::JoinError) -> Error {
    Error::io("restore writer", std::io::Error::other(e.to_string()))
}

/// What a blocking writer needs.
struct WriteWork {
    pub entries: Arc<Vec<Entry>>,
    pub targets: Arc<HashMap<Id, Vec<(u32, u64)>>>,
    pub root: Option<Arc<OwnedFd>>,
    pub failed: Arc<Mutex<Vec<(Id, Error)>>>,
    pub bytes: Arc<std::sync::atomic::AtomicU64>,
    pub progress: Arc<dyn Progress>,
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
    /// Writes a whole blob to every place it goes.
    fn write(&self, id: Id, plain: &[u8]) {
        let mut writing = self.begin(id);
        writing.write(0, plain);
        writing.finish();
    }

    /// Starts writing blob `id` to every place it goes, piece by piece.
    fn begin(&self, id: Id) -> Writing<'_> {
        let places: Vec<Place> = self
            .targets
            .get(&id)
            .into_iter()
            .flatten()
            .map(|&(entry, offset)| Place {
                entry,
                offset,
                fd: None,
                failed: false,
            })
            .collect();
        Writing {
            work: self,
            id,
            keep_open: places.len() <= KEEP_OPEN,
            places,
            len: 0,
        }
    }

    fn write_failed(&self, id: Id, e: &Entry, err: std::io::Error) {
        let err = Error::io(lossy(&e.rel), err);
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, err));
    }
}

/// A blob's places whose files stay open between its pieces, at most: a chunk shared by
/// thousands of files (the same file in many folders) opens each for every piece instead of
/// holding thousands of descriptors at once.
const KEEP_OPEN: usize = 16;

/// Where a blob goes: the entry, the blob's offset in it, the open file (between pieces), and
/// whether a write there failed (reported; the place is left alone).
struct Place {
    entry: u32,
    offset: u64,
    fd: Option<OwnedFd>,
    failed: bool,
}

/// One blob being written to the places it goes.
struct Writing<'a> {
    work: &'a WriteWork,
    id: Id,
    places: Vec<Place>,
    keep_open: bool,
    len: u64,
}

impl Writing<'_> {
    /// Writes the blob's bytes at `at`; a place whose write fails is reported and left.
    fn write(&mut self, at: u64, piece: &[u8]) {
        self.len = self.len.max(at + piece.len() as u64);
        let Some(root) = &self.work.root else { return };
        for p in &mut self.places {
            if p.failed {
                continue;
            }
            let e = &self.work.entries[p.entry as usize];
            let res = match p.fd.take() {
                Some(fd) => Ok(fd),
                None => open_beneath(root, e.writing(), OFlags::WRONLY),
            }
            .and_then(|fd| write_all_at(&fd, piece, p.offset + at).map(|()| fd));
            match res {
                Ok(fd) if self.keep_open => p.fd = Some(fd),
                Ok(_) => {}
                Err(err) => {
                    self.work.write_failed(self.id, e, err);
                    p.failed = true;
                }
            }
        }
    }

    /// The blob is whole and verified: it is counted, and each file it completes takes its
    /// name at once (should that fail, the last stage tries again and says why). Dropping a
    /// `Writing` instead leaves its files unfinished, for another copy of the blob to mend.
    fn finish(self) {
        for p in self.places {
            self.work.bytes.fetch_add(self.len, Ordering::Relaxed);
            self.work.progress.add_bytes(self.len);
            let Some(root) = &self.work.root else {
                continue;
            };
            if p.failed {
                continue;
            }
            drop(p.fd);
            let e = &self.work.entries[p.entry as usize];
            if e.left.fetch_sub(1, Ordering::AcqRel) == 1 {
                let _ = e.put_in_place(root);
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
