//! Sources: where backup data comes from.
//!
//! A source is a tree of entries: a folder yields its files; a stream source ([`stream`]: a
//! command's stdout, stdin, later a database dump) yields one entry whose content is a
//! stream. The engine drives the walk and decides what to read; a source only lists,
//! describes and opens. Every method is blocking and may be called from several threads at
//! once: the engine reads many files in parallel.
//!
//! Contract: [`Source::list`] returns a directory's entries sorted by name, each with its
//! metadata but without content or extended attributes (the engine asks for those only
//! when the entry changed); [`Source::open`] returns a reader of the entry's current content,
//! which also says, when done ([`ContentReader::finish`]), whether the entry changed while it
//! was read, or that what was read is not whole (a command that failed).
//!
//! Two kinds of entries: a *file* may be opened again (the engine reads a file that changed
//! while read a second time), knows its size when opened (which may lie: the engine reads on
//! to the true end), and one that cannot be read is left out of the snapshot with a warning;
//! a *stream* ([`SourceEntry::stream`]) is read once, in order, from offset 0, its size
//! unknown until its end ([`ContentReader::size`] is `None`), and one that cannot be read
//! whole fails the backup: no snapshot holds a partial dump.

pub mod btrfs;
pub mod checksum;
pub mod fs;
pub mod image;
pub mod lvm;
pub mod snapshot;
pub mod stream;

use crate::error::Result;
use crate::repo::tree::Node;

/// A source-specific handle to an entry (for `fs`, its path).
pub type EntryPath = std::path::PathBuf;

/// One listed entry.
#[derive(Clone, Debug)]
pub struct SourceEntry {
    /// Where it is, for [`Source::open`], [`Source::list`] and [`Source::xattrs`].
    pub path: EntryPath,
    /// Its metadata (name, kind, mode, times, size...); no content, no xattrs.
    pub node: Node,
    /// For directories: false when the walk must not go inside (another file system,
    /// or a loop of followed symlinks).
    pub descend: bool,
    /// A one-pass stream (a command's stdout, stdin): opened once, read in order from offset
    /// 0 to its end, never re-read; when it cannot be read whole the backup fails.
    pub stream: bool,
}

/// A listing: the entries, and those that could not be listed, with why.
#[derive(Debug, Default)]
pub struct Listing {
    /// Entries, sorted by name.
    pub entries: Vec<SourceEntry>,
    /// Entries that could not be described: `(path, reason)`.
    pub errors: Vec<(String, String)>,
}

/// What a source says of itself, for snapshots.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    /// Upstream's `mode`: `fs`, `mysql`...
    pub mode: String,
    /// Upstream's `path_to_backup`, or what stands for it (`-` for stdin).
    pub path: String,
    /// For mode `command`: the command line the stream came from, as given.
    pub command: Option<String>,
}

/// A reader of one entry's content.
pub trait ContentReader: Send {
    /// The byte ranges `(offset, length)` that hold data, in order, when the entry is sparse;
    /// `None` when all of it is data.
    fn data_extents(&mut self) -> Result<Option<Vec<(u64, u64)>>>;

    /// Reads at `offset` into `buf`; returns the bytes read, 0 at the end. A stream is read
    /// in order: each `offset` is the number of bytes read before it.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize>;

    /// The size when opened; `None` for a stream, whose size is known at its end.
    fn size(&self) -> Option<u64>;

    /// Called once after reading to the end: whether the entry changed since it was opened
    /// (a file is then read again, once). An error says what was read is not whole (a
    /// command that exited non-zero or was killed); it fails the backup for a stream.
    fn finish(&mut self) -> Result<bool>;

    /// The byte ranges `(offset, length)`, sorted and disjoint, that may differ from what
    /// the parent snapshot read, as the file system recorded it (`parent_extra`: the parent
    /// snapshot's [`Source::extra`] fields): every byte outside them still holds what the
    /// parent read, wherever it is still data. `None` (the default) when this cannot be
    /// vouched for: then everything is read. Mode `image` on btrfs answers ([`btrfs`]); the
    /// engine then takes the parent's chunks that lie wholly outside these ranges without
    /// reading them.
    fn changed_since(
        &mut self,
        parent_extra: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Option<Vec<(u64, u64)>> {
        let _ = parent_extra;
        None
    }
}

/// Where backup data comes from.
pub trait Source: Send + Sync {
    /// What snapshots record about the source.
    fn info(&self) -> SourceInfo;

    /// The entry at the top of the backup (a directory or a single file).
    fn root(&self) -> Result<SourceEntry>;

    /// The entries of a directory, sorted by name.
    fn list(&self, dir: &SourceEntry) -> Result<Listing>;

    /// The extended attributes of an entry, sorted by name.
    fn xattrs(&self, entry: &SourceEntry) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Opens an entry's content.
    fn open(&self, entry: &SourceEntry) -> Result<Box<dyn ContentReader>>;

    /// Fields the snapshot records besides the common ones (mode `image`: the image's format
    /// and virtual size); none by default.
    fn extra(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        Default::default()
    }
}
