//! A snapshot of a repository as a source: what `freezer copy` backs up into another
//! repository.
//!
//! Entries are the snapshot's nodes with their metadata as recorded (times, owners, inodes,
//! xattrs, sparse extents); content is read chunk by chunk from the source repository and
//! verified there. Because the recorded metadata is kept, copying the next snapshot of a
//! series with the previous copy as parent reads only the files that changed between them.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::runtime::Handle;

use super::{ContentReader, Listing, Source, SourceEntry, SourceInfo};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::BlobReader;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};

/// A snapshot read as a source.
pub struct SnapshotSource {
    reader: BlobReader,
    snapshot: Snapshot,
    rt: Handle,
}

impl std::fmt::Debug for SnapshotSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotSource")
            .field("tree", &self.snapshot.tree)
            .finish_non_exhaustive()
    }
}

impl SnapshotSource {
    /// A source over `snapshot`, read with `reader` (from
    /// [`Repository::reader`](crate::repo::Repository::reader) of a repository whose index is
    /// loaded). Its methods block on `rt`, so they must be called outside asynchronous code, as
    /// the backup engine does.
    pub fn new(reader: BlobReader, snapshot: Snapshot, rt: Handle) -> Arc<Self> {
        Arc::new(SnapshotSource {
            reader,
            snapshot,
            rt,
        })
    }

    fn tree(&self, id: &Id) -> Result<Vec<Node>> {
        Ok(self.rt.block_on(self.reader.read_tree(id))?.nodes)
    }
}

impl Source for SnapshotSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            mode: self.snapshot.mode.clone(),
            path: self.snapshot.path_to_backup.clone(),
            command: self.snapshot.command.clone(),
        }
    }

    fn root(&self) -> Result<SourceEntry> {
        let node = self
            .tree(&self.snapshot.tree)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::corrupt("snapshot", "its top tree is empty"))?;
        Ok(entry(PathBuf::new(), node))
    }

    fn list(&self, dir: &SourceEntry) -> Result<Listing> {
        let Some(sub) = dir.node.subtree else {
            return Ok(Listing::default());
        };
        let entries = self
            .tree(&sub)
            .map_err(|e| e.context(dir.path.display()))?
            .into_iter()
            .map(|n| {
                let path = dir
                    .path
                    .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&n.name));
                entry(path, n)
            })
            .collect();
        Ok(Listing {
            entries,
            errors: vec![],
        })
    }

    fn xattrs(&self, entry: &SourceEntry) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(entry.node.xattrs.clone())
    }

    fn open(&self, entry: &SourceEntry) -> Result<Box<dyn ContentReader>> {
        Ok(Box::new(SnapshotReader {
            reader: self.reader.clone(),
            rt: self.rt.clone(),
            node: entry.node.clone(),
            next_chunk: 0,
            chunk: Bytes::new(),
            chunk_start: 0,
        }))
    }
}

fn entry(path: PathBuf, node: Node) -> SourceEntry {
    SourceEntry {
        descend: node.kind() == NodeKind::Dir,
        stream: false,
        path,
        node,
    }
}

/// Reads a file's chunks in order. Offsets are file offsets; the chunks hold the data extents
/// back to back.
struct SnapshotReader {
    reader: BlobReader,
    rt: Handle,
    node: Node,
    next_chunk: usize,
    /// The current chunk and where it starts among the data bytes.
    chunk: Bytes,
    chunk_start: u64,
}

impl SnapshotReader {
    /// Where file offset `offset` is among the data bytes, and how many data bytes follow it
    /// in its extent; `None` in a hole or past the end.
    fn data_position(&self, offset: u64) -> Option<(u64, u64)> {
        if self.node.extents.is_empty() {
            return (offset < self.node.size).then(|| (offset, self.node.size - offset));
        }
        let mut before = 0;
        for &(start, len) in &self.node.extents {
            if offset >= start && offset < start + len {
                return Some((before + offset - start, start + len - offset));
            }
            before += len;
        }
        None
    }
}

impl ContentReader for SnapshotReader {
    fn data_extents(&mut self) -> Result<Option<Vec<(u64, u64)>>> {
        Ok((!self.node.extents.is_empty()).then(|| self.node.extents.clone()))
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let Some((pos, room)) = self.data_position(offset) else {
            return Ok(0);
        };
        if pos < self.chunk_start {
            // Reading backwards (a re-read): start over.
            self.next_chunk = 0;
            self.chunk = Bytes::new();
            self.chunk_start = 0;
        }
        while pos >= self.chunk_start + self.chunk.len() as u64 {
            let Some(id) = self.node.content.get(self.next_chunk) else {
                return Err(Error::corrupt(
                    format!("file {}", String::from_utf8_lossy(&self.node.name)),
                    "its chunks are shorter than its size",
                ));
            };
            self.chunk_start += self.chunk.len() as u64;
            self.chunk = self.rt.block_on(self.reader.read_blob(id))?;
            self.next_chunk += 1;
        }
        let at = (pos - self.chunk_start) as usize;
        let n = buf.len().min(self.chunk.len() - at).min(room as usize);
        buf[..n].copy_from_slice(&self.chunk[at..at + n]);
        Ok(n)
    }

    fn size(&self) -> Option<u64> {
        Some(self.node.size)
    }

    fn finish(&mut self) -> Result<bool> {
        Ok(false)
    }
}
