//! Restore of one stream: the content of a snapshot that holds one file (mode `command` or
//! `stdin`, or `fs` of one file), written in order to a writer (a front-end's stdout) or
//! into a command's stdin.
//!
//! Chunks are fetched a batch at a time (a batch ahead of the writer, so memory stays a few
//! batches whatever the stream's size), each verified against its id; a chunk that cannot be
//! read fails the restore, since a stream cannot be written with a gap. Holes of a sparse
//! file are written as zeros. Writing runs on its own thread. A command is run as the
//! `exec` action runs one, and a restore into it fails when it exits non-zero, is killed,
//! or stops reading before the end.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;

use super::RestoreResult;
use crate::engine::Progress;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::process::Child;
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeKind;
use crate::source::stream::StreamCommand;

/// A writer a stream restore writes to (a front-end's stdout).
pub type StreamOutput = Box<dyn Write + Send>;

/// Where a stream restore writes.
pub enum StreamTarget {
    /// To this writer (flushed at the end).
    Writer(StreamOutput),
    /// Into this command's stdin.
    Command(StreamCommand),
}

impl std::fmt::Debug for StreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamTarget::Writer(_) => f.write_str("Writer"),
            StreamTarget::Command(c) => f.debug_tuple("Command").field(&c.line).finish(),
        }
    }
}

/// Chunks fetched at once.
const BATCH: usize = 16;

/// Writes the content of `snapshot`'s one file to `target`. A snapshot of a folder is
/// refused; a chunk that cannot be read, a write that fails, or a command that fails fails
/// the restore; `cancel` stops it (and kills the command).
pub async fn restore_stream(
    repo: &Repository,
    snapshot_id: Id,
    snapshot: &Snapshot,
    target: StreamTarget,
    cancel: &crate::CancelToken,
    progress: Arc<dyn Progress>,
) -> Result<RestoreResult> {
    restore_stream_entry(repo, snapshot_id, snapshot, None, target, cancel, progress).await
}

/// As [`restore_stream`], of the file `entry` of the folder at the top of `snapshot` (a
/// database mode's dump), or of its one file when `entry` is `None`.
pub async fn restore_stream_entry(
    repo: &Repository,
    snapshot_id: Id,
    snapshot: &Snapshot,
    entry: Option<&str>,
    target: StreamTarget,
    cancel: &crate::CancelToken,
    progress: Arc<dyn Progress>,
) -> Result<RestoreResult> {
    let reader = repo.reader();
    let top = reader
        .read_tree(&snapshot.tree)
        .await
        .map_err(|e| e.context(format!("snapshot {}", snapshot_id.short())))?;
    let node = match (top.nodes.as_slice(), entry) {
        ([n], None) if n.kind() == NodeKind::File => n.clone(),
        ([d], Some(name)) if d.kind() == NodeKind::Dir => {
            let subtree = d.subtree.ok_or_else(|| {
                Error::corrupt(
                    format!("snapshot {}", snapshot_id.short()),
                    "its folder has no tree",
                )
            })?;
            let dir = reader
                .read_tree(&subtree)
                .await
                .map_err(|e| e.context(format!("snapshot {}", snapshot_id.short())))?;
            match dir
                .nodes
                .iter()
                .find(|n| n.name == name.as_bytes() && n.kind() == NodeKind::File)
            {
                Some(n) => n.clone(),
                None => {
                    return Err(Error::not_found(format!(
                        "{name} in snapshot {} (mode {})",
                        snapshot_id.short(),
                        snapshot.mode
                    )));
                }
            }
        }
        (_, Some(name)) => {
            return Err(Error::not_found(format!(
                "{name} in snapshot {} (mode {}): it holds no folder of streams",
                snapshot_id.short(),
                snapshot.mode
            )));
        }
        _ => {
            return Err(Error::bad_input(
                "restore_abs_path",
                format!(
                    "snapshot {} (mode {}) holds a folder, not one stream: restore it into a folder",
                    snapshot_id.short(),
                    snapshot.mode
                ),
            ));
        }
    };
    progress.set_total(node.size);
    // The writer: a thread, fed a bounded queue of byte runs (`None`: that many zeros).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(BATCH * 2);
    let (mut out, child): (Box<dyn Write + Send>, Option<Child>) = match target {
        StreamTarget::Writer(w) => (w, None),
        StreamTarget::Command(cmd) => {
            let words = cmd.words().map_err(|e| e.context("restore_command"))?;
            let (pipe, writer) =
                std::io::pipe().map_err(|e| Error::io("a pipe for restore_command", e))?;
            let child = Child::spawn(
                &words,
                &cmd.env,
                std::process::Stdio::from(pipe),
                std::process::Stdio::piped(),
            )
            .map_err(|e| e.context("restore_command"))?;
            (Box::new(writer), Some(child))
        }
    };
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut written = 0u64;
        let zeros = [0u8; 64 * 1024];
        while let Some(piece) = rx.blocking_recv() {
            match piece {
                Piece::Data(b) => {
                    out.write_all(&b)?;
                    written += b.len() as u64;
                }
                Piece::Zeros(mut n) => {
                    while n > 0 {
                        let k = n.min(zeros.len() as u64) as usize;
                        out.write_all(&zeros[..k])?;
                        n -= k as u64;
                        written += k as u64;
                    }
                }
            }
        }
        out.flush()?;
        Ok(written)
        // `out` dropped here: a command sees the end of its input.
    });
    let fed = feed(repo, &node, &tx, cancel, &*progress).await;
    if fed.is_err()
        && let Some(c) = &child
    {
        // Never let a command take a part of the stream for the whole.
        crate::process::kill_group(c.pid());
    }
    drop(tx);
    let wrote = writer
        .await
        .map_err(|e| Error::io("restore writer", std::io::Error::other(e)))?;
    let ran = match child {
        Some(c) => Some(c.wait(cancel).await),
        None => None,
    };
    cancel.check()?;
    fed?;
    // The command's own failure explains a write it refused (a broken pipe).
    if let Some(r) = ran {
        r.map_err(|e| e.context("restore_command"))?;
    }
    let bytes = wrote.map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Error::io(
            "restore",
            std::io::Error::other(
                "the reader of the stream (restore_command or stdout) closed it before its end",
            ),
        ),
        _ => Error::io("restore: writing the stream", e),
    })?;
    Ok(RestoreResult {
        snapshot_id,
        files: 1,
        bytes,
        ..RestoreResult::default()
    })
}

enum Piece {
    Data(Bytes),
    Zeros(u64),
}

/// Sends `node`'s content, in order, holes as zeros. A closed queue (the writer failed)
/// ends it quietly: the writer's error is the cause.
async fn feed(
    repo: &Repository,
    node: &crate::repo::tree::Node,
    tx: &tokio::sync::mpsc::Sender<Piece>,
    cancel: &crate::CancelToken,
    progress: &dyn Progress,
) -> Result<()> {
    let reader = repo.reader();
    let what = format!("stream {}", node.name_lossy());
    // The file's data extents: the chunks hold them back to back.
    let extents = if node.extents.is_empty() {
        vec![(0, node.size)]
    } else {
        node.extents.clone()
    };
    let mut extents = extents.into_iter();
    let mut at = 0u64; // file offset written so far
    let mut left = 0u64; // data bytes left in the current extent
    let send = |p: Piece| async move { tx.send(p).await.is_ok() };
    for batch in node.content.chunks(BATCH) {
        cancel.check()?;
        let mut got: std::collections::HashMap<Id, Bytes> = std::collections::HashMap::new();
        for (id, r) in reader.read_many(batch).await {
            got.insert(id, r.map_err(|e| e.context(&what))?);
        }
        for id in batch {
            let mut data = got.get(id).cloned().expect("read_many answers every id");
            while !data.is_empty() {
                if left == 0 {
                    let Some((start, len)) = extents.next() else {
                        return Err(Error::corrupt(&what, "its chunks are longer than its size"));
                    };
                    if start > at && !send(Piece::Zeros(start - at)).await {
                        return Ok(());
                    }
                    at = start;
                    left = len;
                    continue;
                }
                let n = (data.len() as u64).min(left) as usize;
                let part = data.split_to(n);
                progress.add_bytes(n as u64);
                at += n as u64;
                left -= n as u64;
                if !send(Piece::Data(part)).await {
                    return Ok(());
                }
            }
        }
    }
    if left > 0 || extents.next().is_some_and(|(_, len)| len > 0) {
        return Err(Error::corrupt(
            &what,
            "its chunks are shorter than its size",
        ));
    }
    if node.size > at && !send(Piece::Zeros(node.size - at)).await {
        return Ok(());
    }
    Ok(())
}
