//! The image source (mode `image`): a disk image or a block device, backed up as one file
//! whose content is the image's raw bytes (what a virtual machine sees).
//!
//! What it reads:
//!
//! - a raw image file: its data extents only (`SEEK_DATA`/`SEEK_HOLE`): a hole is never read
//!   and costs nothing in the repository; the snapshot keeps the holes as holes;
//! - a block device: all of it (its size from seeking to its end);
//! - any other format `qemu-img` knows (qcow2, vmdk, vdi, vhdx...): `qemu-img convert -O raw`
//!   into a sparse raw file in a private temporary folder (mode 0700, removed when the
//!   source is dropped), whose data extents are then read as above. `qemu-img convert` reads
//!   only the allocated clusters and writes no zeros, so the temporary file holds the image's
//!   data and nothing else. No qcow2 parser lives here.
//!
//! The format is found by `qemu-img info --output=json` (parsed with serde_json); something
//! that is not an image (a folder, an empty file, a qcow2 whose header is damaged) is
//! refused, naming why. So is what would make `qemu-img` read other files than the one named
//! (a backing file, a qcow2 external data file, a format such as a vmdk descriptor outside
//! the formats listed in `FORMATS`): a guest can write such a header into what is a raw
//! image. `qemu-img` runs as every command does (`crate::process`): no shell, its own process group, only the environment the caller gives (its `PATH` finds
//! `qemu-img`); when it is missing, fails or is killed, the backup fails and no snapshot is
//! written (the entry is a [`SourceEntry::stream`]: read whole, or no backup).
//!
//! The snapshot records, besides mode `image` and the path, `image_format` and
//! `image_virtual_size` ([`Source::extra`]).
//!
//! Reading only what changed: a raw image file on btrfs (copy-on-write, not `NOCOW`) records
//! a [`btrfs::Marker`] in the snapshot (`image_changes`), taken before it is read; the next
//! backup asks btrfs which byte ranges were written since ([`ContentReader::changed_since`])
//! and the engine takes the parent's chunks that lie outside them without reading them.
//! Elsewhere (another file system, a device, a converted format, no `btrfs` program, no
//! privilege for its search) every data extent is read, and content-defined chunking makes
//! what did not change cost nothing in the repository. Not done: qcow2 persistent dirty
//! bitmaps.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom as StdSeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::SeekFrom;

use super::{ContentReader, Listing, Source, SourceEntry, SourceInfo, btrfs};
use crate::error::{Error, Result};
use crate::repo::tree::{Node, NodeKind};

/// What `qemu-img info` said of an image.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ImageInfo {
    /// The format: `raw`, `qcow2`...
    pub format: String,
    /// The size the virtual machine sees.
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    /// The image this one is a layer over, if any (its content is part of what is read).
    #[serde(rename = "backing-filename", default)]
    pub backing_filename: Option<String>,
    /// Format-specific details (a qcow2's external `data-file`).
    #[serde(rename = "format-specific", default)]
    pub format_specific: Option<serde_json::Value>,
}

/// The formats read through `qemu-img`: those whose content is in the one file named (a vmdk
/// descriptor, for one, names other files to read).
const FORMATS: &[&str] = &["raw", "qcow2", "qcow", "qed", "vdi", "vhdx", "vpc"];

impl ImageInfo {
    /// Refuses what would make `qemu-img` read files other than the image: a format outside
    /// `FORMATS`, a backing file, a qcow2 external data file. (Such a header may have been
    /// written by the guest into what is a raw image.)
    fn check_self_contained(&self, path: &str) -> Result<()> {
        if !FORMATS.contains(&self.format.as_str()) {
            return Err(Error::unsupported(format!(
                "{path}: image format {} (mode image reads {})",
                self.format,
                FORMATS.join(", ")
            )));
        }
        if let Some(b) = &self.backing_filename {
            return Err(Error::unsupported(format!(
                "{path}: the image has a backing file ({b}); back up a flattened copy (qemu-img convert), since the backing file is read too"
            )));
        }
        let data_file = self
            .format_specific
            .as_ref()
            .and_then(|f| f.pointer("/data/data-file"))
            .and_then(|d| d.as_str());
        if let Some(d) = data_file {
            return Err(Error::unsupported(format!(
                "{path}: the image keeps its data in another file ({d})"
            )));
        }
        Ok(())
    }
}

/// Runs `qemu-img ARGS` (found through `env`'s `PATH`) and returns its stdout; a missing
/// `qemu-img`, a failure or a kill is an error naming `qemu-img` and the cause.
pub async fn qemu_img(
    args: &[&str],
    env: &BTreeMap<String, String>,
    cancel: &crate::CancelToken,
) -> Result<String> {
    let mut words = vec!["qemu-img".to_string()];
    words.extend(args.iter().map(|a| a.to_string()));
    let r = crate::process::run(&words, env, cancel).await.map_err(|e| match e {
        Error::BadInput { .. } if e.to_string().contains("program not found") => {
            Error::unsupported(
                "mode image needs qemu-img, which was not found on PATH (Debian: apt-get install qemu-utils)",
            )
        }
        e => e,
    })?;
    Ok(r.stdout_tail)
}

/// Asks `qemu-img info` what `path` is.
pub async fn probe(
    path: &Path,
    env: &BTreeMap<String, String>,
    cancel: &crate::CancelToken,
) -> Result<ImageInfo> {
    let p = path.to_string_lossy();
    let out = qemu_img(&["info", "--output=json", "--", &p], env, cancel)
        .await
        .map_err(|e| e.context(format!("{p}: not an image qemu-img can read")))?;
    serde_json::from_str(&out).map_err(|e| {
        Error::corrupt(
            format!("qemu-img info {p}"),
            format!("unexpected output: {e}"),
        )
    })
}

enum Kind {
    /// A raw image file.
    File,
    /// A block device.
    Device,
    /// Another format, read as raw through `qemu-img convert`.
    Converted,
}

/// A disk image or block device, backed up as one file.
pub struct ImageSource {
    path: PathBuf,
    name: String,
    info: ImageInfo,
    kind: Kind,
    env: BTreeMap<String, String>,
    cancel: crate::CancelToken,
    rt: tokio::runtime::Handle,
    time: jiff::Timestamp,
    /// The private folder a converted image is written into.
    temp: Mutex<Option<TempDir>>,
    /// A raw file on btrfs: how to ask what changed, and where it stood before this backup.
    changes: Option<(btrfs::Tracked, btrfs::Marker)>,
}

impl std::fmt::Debug for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageSource")
            .field("path", &self.path)
            .field("format", &self.info.format)
            .finish_non_exhaustive()
    }
}

impl ImageSource {
    /// The image at `path`: checked (it exists, can be read, and is an image `qemu-img`
    /// reads) before any repository work. `env` is the environment `qemu-img` runs with.
    /// Must be called within a tokio runtime.
    pub async fn open(
        path: &str,
        env: BTreeMap<String, String>,
        cancel: crate::CancelToken,
    ) -> Result<Self> {
        if path.is_empty() {
            return Err(Error::bad_input(
                "path_to_backup",
                "mode image needs path_to_backup: an image file or a block device",
            ));
        }
        let p = PathBuf::from(path);
        let md = std::fs::metadata(&p).map_err(|e| Error::io(path, e))?;
        let ft = md.file_type();
        let device = ft.is_block_device();
        if ft.is_dir() {
            return Err(Error::bad_input(
                "path_to_backup",
                format!("{path} is a folder, not an image (use mode fs for a folder)"),
            ));
        }
        if !ft.is_file() && !device {
            return Err(Error::bad_input(
                "path_to_backup",
                format!("{path} is neither an image file nor a block device"),
            ));
        }
        // Readable by us, now (a clear error before qemu-img's).
        File::open(&p).map_err(|e| Error::io(format!("{path}: cannot be read"), e))?;
        if !device && md.len() == 0 {
            return Err(Error::bad_input(
                "path_to_backup",
                format!("{path} is empty, not an image"),
            ));
        }
        let info = if device {
            let mut f = File::open(&p).map_err(|e| Error::io(path, e))?;
            let size = f
                .seek(StdSeekFrom::End(0))
                .map_err(|e| Error::io(format!("{path}: its size"), e))?;
            ImageInfo {
                format: "raw".into(),
                virtual_size: size,
                backing_filename: None,
                format_specific: None,
            }
        } else {
            let info = probe(&p, &env, &cancel).await?;
            info.check_self_contained(path)?;
            info
        };
        let kind = match (device, info.format.as_str()) {
            (true, _) => Kind::Device,
            (false, "raw") => Kind::File,
            _ => Kind::Converted,
        };
        let changes = match kind {
            Kind::File => track_changes(&p, &env, &cancel).await,
            _ => None,
        };
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "image.raw".into());
        Ok(ImageSource {
            path: p,
            name,
            info,
            kind,
            env,
            cancel,
            rt: tokio::runtime::Handle::current(),
            time: crate::time::now(),
            temp: Mutex::new(None),
            changes,
        })
    }

    /// What `qemu-img info` said (for a device: raw, its size).
    pub fn image_info(&self) -> &ImageInfo {
        &self.info
    }

    /// The raw file to read: the image, or its conversion (made now, once).
    fn raw_path(&self) -> Result<PathBuf> {
        if !matches!(self.kind, Kind::Converted) {
            return Ok(self.path.clone());
        }
        let mut temp = self.temp.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = temp.as_ref() {
            return Ok(t.0.join("image.raw"));
        }
        let dir = TempDir::new()?;
        let out = dir.0.join("image.raw");
        let src = self.path.to_string_lossy().into_owned();
        let dst = out.to_string_lossy().into_owned();
        let args = [
            "convert",
            "-f",
            self.info.format.as_str(),
            "-O",
            "raw",
            "--",
            src.as_str(),
            dst.as_str(),
        ];
        self.rt
            .block_on(qemu_img(&args, &self.env, &self.cancel))
            .map_err(|e| e.context(format!("{src}: reading the {} image", self.info.format)))?;
        *temp = Some(dir);
        Ok(out)
    }
}

impl Source for ImageSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            mode: "image".into(),
            path: self.path.to_string_lossy().into_owned(),
            command: None,
        }
    }

    fn extra(&self) -> BTreeMap<String, serde_json::Value> {
        let mut extra = BTreeMap::from([
            ("image_format".into(), self.info.format.clone().into()),
            ("image_virtual_size".into(), self.info.virtual_size.into()),
        ]);
        if let Some((_, marker)) = &self.changes {
            extra.insert(btrfs::Marker::FIELD.into(), marker.to_extra());
        }
        extra
    }

    fn root(&self) -> Result<SourceEntry> {
        let (secs, ns) = (self.time.as_second(), self.time.subsec_nanosecond());
        Ok(SourceEntry {
            path: self.path.clone(),
            node: Node {
                name: self.name.as_bytes().to_vec(),
                kind: Some(NodeKind::File),
                mode: 0o600,
                uid: rustix::process::getuid().as_raw(),
                gid: rustix::process::getgid().as_raw(),
                mtime: secs,
                mtime_ns: ns as u32,
                ctime: secs,
                ctime_ns: ns as u32,
                links: 1,
                // Counted when read (a stream's size is added at its end).
                size: 0,
                ..Node::default()
            },
            descend: false,
            // Read whole or not at all: an image that cannot be read fails the backup.
            stream: true,
        })
    }

    fn list(&self, _dir: &SourceEntry) -> Result<Listing> {
        Ok(Listing::default())
    }

    fn xattrs(&self, _entry: &SourceEntry) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(vec![])
    }

    fn open(&self, _entry: &SourceEntry) -> Result<Box<dyn ContentReader>> {
        self.cancel.check()?;
        let raw = self.raw_path()?;
        let file = File::open(&raw).map_err(|e| Error::io(raw.display(), e))?;
        let md = file.metadata().map_err(|e| Error::io("fstat", e))?;
        let device = md.file_type().is_block_device();
        let size = if device {
            self.info.virtual_size
        } else {
            md.len()
        };
        Ok(Box::new(ImageReader {
            file,
            size,
            device,
            before: (md.len(), md.mtime(), md.mtime_nsec(), md.ino()),
            changes: self.changes.as_ref().map(|(t, _)| Changes {
                tracked: t.clone(),
                env: self.env.clone(),
                cancel: self.cancel.clone(),
                rt: self.rt.clone(),
            }),
        }))
    }
}

/// Where `path` stands now on btrfs, for the next backup to ask what changed since; `None`
/// (logged with why) when that cannot be known.
async fn track_changes(
    path: &Path,
    env: &BTreeMap<String, String>,
    cancel: &crate::CancelToken,
) -> Option<(btrfs::Tracked, btrfs::Marker)> {
    let file = File::open(path).ok()?;
    let tracked = match btrfs::tracked(&file, path) {
        Ok(t) => t,
        Err(why) => {
            tracing::debug!("{}: changes not tracked: {why}", path.display());
            return None;
        }
    };
    match btrfs::marker(&tracked, &file, env, cancel).await {
        Ok(m) => Some((tracked, m)),
        Err(e) => {
            tracing::info!(
                "{}: on btrfs, but its changes cannot be tracked (every backup reads it whole): {e}",
                path.display()
            );
            None
        }
    }
}

/// How an [`ImageReader`] asks btrfs what changed.
struct Changes {
    tracked: btrfs::Tracked,
    env: BTreeMap<String, String>,
    cancel: crate::CancelToken,
    rt: tokio::runtime::Handle,
}

struct ImageReader {
    file: File,
    size: u64,
    device: bool,
    before: (u64, i64, i64, u64),
    changes: Option<Changes>,
}

impl ContentReader for ImageReader {
    fn data_extents(&mut self) -> Result<Option<Vec<(u64, u64)>>> {
        if self.device || self.size == 0 {
            return Ok(None);
        }
        data_extents(&self.file, self.size)
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize> {
        // Never past the size taken at the start (a device, a file that grows).
        let left = self.size.saturating_sub(offset);
        let want = (buf.len() as u64).min(left) as usize;
        if want == 0 {
            return Ok(0);
        }
        loop {
            match self.file.read_at(&mut buf[..want], offset) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r.map_err(|e| Error::io("read", e)),
            }
        }
    }

    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn changed_since(
        &mut self,
        parent_extra: &BTreeMap<String, serde_json::Value>,
    ) -> Option<Vec<(u64, u64)>> {
        let c = self.changes.as_ref()?;
        let parent = btrfs::Marker::from_extra(parent_extra)?;
        match c.rt.block_on(btrfs::changed_since(
            &c.tracked, &self.file, &parent, &c.env, &c.cancel,
        )) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!("what changed since the parent is unknown, reading it all: {e}");
                None
            }
        }
    }

    fn finish(&mut self) -> Result<bool> {
        if self.device {
            return Ok(false);
        }
        let md = self.file.metadata().map_err(|e| Error::io("fstat", e))?;
        Ok((md.len(), md.mtime(), md.mtime_nsec(), md.ino()) != self.before)
    }
}

/// The data extents of `file` (`SEEK_DATA`/`SEEK_HOLE`), `None` when it is all data or the
/// file system cannot say.
pub(crate) fn data_extents(file: &File, size: u64) -> Result<Option<Vec<(u64, u64)>>> {
    let mut out = Vec::new();
    let mut at = 0u64;
    while at < size {
        let data = match rustix::fs::seek(file, SeekFrom::Data(at)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return Ok(None),
        };
        if data >= size {
            break;
        }
        let hole = match rustix::fs::seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h.min(size),
            Err(_) => return Ok(None),
        };
        out.push((data, hole - data));
        at = hole;
    }
    if out.len() == 1 && out[0] == (0, size) {
        return Ok(None);
    }
    Ok(Some(out))
}

/// A private temporary folder (mode 0700), removed with what it holds when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let mut r = [0u8; 8];
            getrandom::fill(&mut r).map_err(|e| Error::io("random", std::io::Error::other(e)))?;
            let p = base.join(format!("freezer-image-{}", hex::encode(r)));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("{}: a temporary folder", p.display()), e)),
            }
        }
        Err(Error::io(
            "a temporary folder",
            std::io::Error::other("no free name"),
        ))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
