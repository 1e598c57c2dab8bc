//! The streaming engine: backup (source → chunks → blobs → packs → every sink) and restore
//! (snapshot → packs → verified blobs → files), plus inspection of a snapshot's health.
//!
//! CPU work (chunking, hashing, compression, encryption, decoding) runs on plain threads;
//! storage I/O runs on the tokio runtime. Every queue between stages is bounded, so memory
//! does not grow with the data; the slowest stage sets the pace. The engine never prints:
//! it reports through [`Progress`] and its results.

mod backup;
mod check;
mod copy;
mod forget;
mod inspect;
mod prune;
mod repair;
mod repair_config;
mod repair_keys;
mod repair_packs;
mod restore;
mod snapshot_repair;

use std::fmt;
use std::str::FromStr;

pub use backup::{BackupOptions, BackupResult, SinkResult, backup};
pub use check::{CheckDamage, CheckOptions, CheckReport, ReadData, check};
pub use copy::{CopiedSnapshot, CopyOptions, CopyReport, copy};
pub use forget::{ForgetOptions, ForgetReport, RetentionResult, forget, forget_ids};
pub use inspect::{Damage, Inspection, inspect};
pub use prune::{PruneOptions, PruneReport, PruneStats, StoragePrune, prune};
pub use repair::{DamagedPack, RepairReport, StorageRepair, repair_index};
pub use repair_config::{ConfigRepair, ConfigRepairReport, repair_config};
pub use repair_keys::{KeysRepairReport, StorageKeysRepair, repair_keys};
pub use repair_packs::{
    RepairPacksOptions, RepairPacksReport, RepairedPack, StoragePacksRepair, repair_packs,
};
pub use restore::{
    PLAN_WINDOW, RestoreOptions, RestoreResult, StreamOutput, StreamTarget, restore, restore_image,
    restore_stream, restore_stream_entry,
};
pub use snapshot_repair::{SnapshotRepairReport, repair_snapshots};

use crate::error::{Error, Result};

/// Receives progress from long operations. Every method has an empty default; the library
/// calls them from worker threads, so implementations must be cheap and thread-safe.
pub trait Progress: Send + Sync {
    /// The total bytes the operation expects to process, when known.
    fn set_total(&self, _bytes: u64) {}
    /// Bytes processed since the last call.
    fn add_bytes(&self, _bytes: u64) {}
    /// Entries processed since the last call.
    fn add_entries(&self, _entries: u64) {}
}

/// An error for storage `i`, which the tee dropped while writing `what`.
fn storage_failed(repo: &crate::repo::Repository, i: usize, what: &str) -> Error {
    let status = &repo.tee().status()[i];
    Error::io(
        format!("{}: {what}", status.sink),
        std::io::Error::other(status.error.clone().unwrap_or_else(|| "not written".into())),
    )
}

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// A [`Progress`] that counts, for a front-end that reads the counts on its own schedule (the
/// bindings' progress callbacks, called from the caller's thread every tenth of a second).
#[derive(Debug)]
pub struct ProgressCounts {
    total: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    entries: std::sync::atomic::AtomicU64,
}

impl Default for ProgressCounts {
    fn default() -> Self {
        ProgressCounts {
            total: u64::MAX.into(),
            bytes: 0.into(),
            entries: 0.into(),
        }
    }
}

impl ProgressCounts {
    /// Bytes processed, total bytes expected (`None` while unknown), entries processed.
    pub fn get(&self) -> (u64, Option<u64>, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.total.load(Relaxed);
        (
            self.bytes.load(Relaxed),
            (total != u64::MAX).then_some(total),
            self.entries.load(Relaxed),
        )
    }
}

impl Progress for ProgressCounts {
    fn set_total(&self, bytes: u64) {
        self.total
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }
    fn add_bytes(&self, bytes: u64) {
        self.bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
    fn add_entries(&self, entries: u64) {
        self.entries
            .fetch_add(entries, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How blobs are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored as they are.
    None,
    /// zstd at the given level (1 to 19; negative levels are faster still).
    Zstd(i32),
}

impl Default for Compression {
    /// zstd level 1 (`auto`): as fast as the disks of a 2-core machine, 5% larger than level 3
    /// on mixed data. Slow links to remote storage are better served by `zstd:3` or more.
    fn default() -> Self {
        Compression::Zstd(1)
    }
}

impl Compression {
    /// The zstd level, if compressing.
    pub fn level(self) -> Option<i32> {
        match self {
            Compression::None => None,
            Compression::Zstd(l) => Some(l),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
        }
    }
}

impl FromStr for Compression {
    type Err = Error;

    /// `zstd`, `zstd:N` (or `zstd-N`), `none`; upstream's `gzip`, `bzip2` and `xz` name the
    /// compressor of its tar streams and select zstd in the native engine.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let level = |l: &str| -> Result<Compression> {
            let n: i32 = l.parse().map_err(|_| {
                Error::bad_input(
                    "compression",
                    format!("{s:?}: the zstd level must be a number"),
                )
            })?;
            if !(-7..=19).contains(&n) {
                return Err(Error::bad_input(
                    "compression",
                    format!("{s:?}: zstd levels go from -7 to 19"),
                ));
            }
            Ok(Compression::Zstd(n))
        };
        match lower.as_str() {
            "none" | "off" | "false" => Ok(Compression::None),
            "zstd" | "auto" | "gzip" | "bzip2" | "xz" | "" => Ok(Compression::default()),
            other => match other
                .strip_prefix("zstd:")
                .or_else(|| other.strip_prefix("zstd-"))
            {
                Some(l) => level(l),
                None => Err(Error::bad_input(
                    "compression",
                    format!(
                        "{s:?} is not one of zstd, zstd:N, none (or upstream's gzip, bzip2, xz)"
                    ),
                )),
            },
        }
    }
}

/// Tree nodes a walk holds read ahead (see [`TreesAhead`]): about 16 MiB decoded; one request
/// more may pass it.
pub(crate) const NODES_AHEAD: usize = 65536;

/// Trees [`TreesAhead`] asks for in one request.
const TREES_A_REQUEST: usize = 64;

/// The trees of a depth-first walk (a backup's parent, a restore's snapshot), read ahead: when
/// the walk needs a tree it has not read, that tree, the folders after it in their parent and
/// the folders below them are read a level at a time, with few requests
/// ([`BlobReader::read_trees`](crate::repo::BlobReader::read_trees)), until [`NODES_AHEAD`]
/// nodes are held. A storage's latency is paid once for many folders, and what is held is
/// bounded (the whole snapshot's trees, held at once, cost hundreds of megabytes for a million
/// files).
#[derive(Default)]
pub(crate) struct TreesAhead {
    cache: std::collections::HashMap<crate::id::Id, crate::repo::tree::Tree>,
    /// Nodes in `cache`.
    nodes: usize,
}

impl TreesAhead {
    /// Tree `id`, read (unless read ahead already) with what the walk visits after it: the
    /// folders among `next` (the entries after it in the same parent) and those below.
    pub(crate) async fn get(
        &mut self,
        reader: &crate::repo::BlobReader,
        id: crate::id::Id,
        next: &[crate::repo::tree::Node],
    ) -> Result<crate::repo::tree::Tree> {
        if let Some(t) = self.cache.remove(&id) {
            self.nodes -= t.nodes.len();
            return Ok(t);
        }
        // Full of trees read for folders the walk did not visit (gone from the source since
        // the parent snapshot, excluded, not entered): they make room for what it needs now.
        if self.nodes >= NODES_AHEAD {
            self.cache.clear();
            self.nodes = 0;
        }
        let mut level = vec![id];
        level.extend(next.iter().filter_map(subfolder));
        let mut found = None;
        'levels: while !level.is_empty() {
            let mut seen = std::collections::HashSet::new();
            level.retain(|t| !self.cache.contains_key(t) && seen.insert(*t));
            let mut below = Vec::new();
            // A few trees a request: a folder's trees can hold thousands of nodes each, and
            // the walk stops reading ahead as soon as it holds enough.
            for batch in level.chunks(TREES_A_REQUEST) {
                for (got, tree) in reader.read_trees(batch).await {
                    let Ok(tree) = tree else {
                        if got == id {
                            found = Some(tree);
                        }
                        continue;
                    };
                    below.extend(tree.nodes.iter().filter_map(subfolder));
                    if got == id && found.is_none() {
                        found = Some(Ok(tree));
                    } else {
                        self.nodes += tree.nodes.len();
                        if let Some(old) = self.cache.insert(got, tree) {
                            self.nodes -= old.nodes.len();
                        }
                    }
                }
                if self.nodes >= NODES_AHEAD {
                    break 'levels;
                }
            }
            level = below;
        }
        found.unwrap_or_else(|| Err(Error::not_found(format!("tree {id}"))))
    }
}

/// The tree of `n`, when it is a folder.
fn subfolder(n: &crate::repo::tree::Node) -> Option<crate::id::Id> {
    match (n.kind(), n.subtree) {
        (crate::repo::tree::NodeKind::Dir, Some(sub)) => Some(sub),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_names() {
        assert_eq!(
            "zstd:7".parse::<Compression>().unwrap(),
            Compression::Zstd(7)
        );
        assert_eq!("gzip".parse::<Compression>().unwrap(), Compression::Zstd(1));
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        assert!(
            "lz77"
                .parse::<Compression>()
                .unwrap_err()
                .to_string()
                .starts_with("compression:")
        );
        assert!("zstd:99".parse::<Compression>().is_err());
    }
}
