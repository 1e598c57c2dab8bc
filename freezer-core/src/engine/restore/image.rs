//! Restore of an image (a snapshot of mode `image`, or any snapshot of one file) to a file
//! or a block device.
//!
//! The content is written as [`restore_stream`] writes a stream, in order, through a writer
//! that writes at offsets: to a file, a run of zeros (a hole of the snapshot, or a block of
//! zeros within its data) is not written but seeked over, and the file's length is set at
//! the end, so the holes stay holes (`du` is what holds data, `stat` the image's size). The
//! file is created (mode 0600) or emptied first, and removed again when the restore fails.
//! A block device is never truncated: it must be at least as large as the image, every byte
//! of the image is written (zeros too: the device holds old data), and what lies past the
//! image is left as it was.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use super::{RestoreResult, StreamTarget, restore_stream};
use crate::engine::Progress;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeKind;

/// The granularity at which zeros are found in data and seeked over.
const ZERO_BLOCK: usize = 4096;

/// Writes the one file of `snapshot` to `target`, a file (holes kept) or a block device (not
/// truncated; refused when smaller than the image).
pub async fn restore_image(
    repo: &Repository,
    snapshot_id: Id,
    snapshot: &Snapshot,
    target: &Path,
    cancel: &crate::CancelToken,
    progress: Arc<dyn Progress>,
) -> Result<RestoreResult> {
    let what = target.display().to_string();
    let top = repo
        .reader()
        .read_tree(&snapshot.tree)
        .await
        .map_err(|e| e.context(format!("snapshot {}", snapshot_id.short())))?;
    let size = match top.nodes.as_slice() {
        [n] if n.kind() == NodeKind::File => n.size,
        _ => {
            return Err(Error::bad_input(
                "restore_abs_path",
                format!(
                    "snapshot {} (mode {}) holds a folder, not an image",
                    snapshot_id.short(),
                    snapshot.mode
                ),
            ));
        }
    };
    let device = std::fs::metadata(target)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    if std::fs::metadata(target).is_ok_and(|m| m.is_dir()) {
        return Err(Error::bad_input(
            "restore_abs_path",
            format!("{what} is a folder: an image is restored to a file or a block device"),
        ));
    }
    let mut file = if device {
        OpenOptions::new()
            .write(true)
            .open(target)
            .map_err(|e| Error::io(&what, e))?
    } else {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(target)
            .map_err(|e| Error::io(&what, e))?
    };
    if device {
        let room = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(format!("{what}: its size"), e))?;
        if room < size {
            return Err(Error::bad_input(
                "restore_abs_path",
                format!("{what} holds {room} bytes, the image {size}: too small"),
            ));
        }
    }
    let writer = SparseWriter {
        file,
        at: 0,
        device,
    };
    let r = restore_stream(
        repo,
        snapshot_id,
        snapshot,
        StreamTarget::Writer(Box::new(writer)),
        cancel,
        progress,
    )
    .await;
    if r.is_err() && !device {
        // No partial image left behind as if it were one.
        let _ = std::fs::remove_file(target);
    }
    r.map_err(|e| e.context(format!("restoring the image to {what}")))
}

/// Writes at an offset it keeps; zeros are seeked over on a file, written on a device.
struct SparseWriter {
    file: File,
    at: u64,
    device: bool,
}

impl Write for SparseWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.device {
            self.file.write_all_at(buf, self.at)?;
        } else {
            for block in buf.chunks(ZERO_BLOCK) {
                if block.iter().any(|b| *b != 0) {
                    self.file.write_all_at(block, self.at)?;
                }
                self.at += block.len() as u64;
            }
            return Ok(buf.len());
        }
        self.at += buf.len() as u64;
        Ok(buf.len())
    }

    /// Called once, at the end: the file's length is the image's (its last hole kept), and
    /// what was written is on disk.
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.device {
            self.file.set_len(self.at)?;
        }
        self.file.sync_all()
    }
}
