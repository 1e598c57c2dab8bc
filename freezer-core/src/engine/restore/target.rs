//! The folder a restore writes into: checked, created when missing, marked while a restore
//! is under way, and left as it was found when the restore fails.
//!
//! A symlink given as the target is followed (the restore goes into the folder it points to).
//! While a restore runs, the target holds [`MARKER`], naming the snapshot; it goes when the
//! restore ends with every file in place. A target that holds a marker of the same snapshot
//! (and path inside it) is an interrupted restore: running it again resumes it. This module
//! never removes anything it did not create.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::id::Id;

/// The file that marks a restore under way, at the top of its target.
pub(super) const MARKER: &str = ".freezer-restore-in-progress";

/// What the marker says.
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Eq, Debug)]
struct Marker {
    snapshot: Id,
    sub_path: Option<String>,
}

/// A target made ready.
#[derive(Debug)]
pub(super) struct Prepared {
    /// The outermost folder this restore created (the target or one of its parents).
    created: Option<PathBuf>,
    /// The target holds an interrupted restore of the same snapshot.
    pub resume: bool,
}

/// Checks the target, creates it when missing, and marks it. A target that is not empty is
/// refused unless `overwrite`, or it holds an interrupted restore of the same snapshot.
pub(super) fn prepare(
    target: &Path,
    overwrite: bool,
    snapshot: Id,
    sub_path: Option<&str>,
) -> Result<Prepared> {
    let what = format!("restore_abs_path {}", target.display());
    let mine = Marker {
        snapshot,
        sub_path: sub_path.map(str::to_string),
    };
    let mut prepared = Prepared {
        created: None,
        resume: false,
    };
    // `metadata` follows a symlink: one at the top is taken where it points, as users expect.
    match std::fs::metadata(target) {
        Ok(md) if md.is_dir() => {
            let marker = std::fs::read(target.join(MARKER))
                .ok()
                .map(|b| serde_json::from_slice::<Marker>(&b).ok());
            let others = std::fs::read_dir(target)
                .ctx(&what)?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name() != MARKER);
            match marker {
                Some(Some(m)) if m == mine => prepared.resume = true,
                Some(m) if !overwrite => {
                    let of = m
                        .map(|m| format!("of snapshot {}", m.snapshot.short()))
                        .unwrap_or_default();
                    return Err(Error::bad_input(
                        "restore_abs_path",
                        format!(
                            "{} holds an interrupted restore {of} ({MARKER}); run that restore again to finish it, or give --overwrite to restore into it anyway",
                            target.display()
                        ),
                    ));
                }
                _ if others && !overwrite => {
                    return Err(Error::bad_input(
                        "restore_abs_path",
                        format!(
                            "Restore dir is not empty: {}; give --overwrite to restore into it",
                            target.display()
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(_) => {
            let via = match std::fs::read_link(target) {
                Ok(to) => format!(" (a symlink to {})", to.display()),
                Err(_) => String::new(),
            };
            return Err(Error::bad_input(
                "restore_abs_path",
                format!("{}{via} exists and is not a folder", target.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Ok(to) = std::fs::read_link(target) {
                return Err(Error::bad_input(
                    "restore_abs_path",
                    format!(
                        "{} is a symlink to {}, which does not exist",
                        target.display(),
                        to.display()
                    ),
                ));
            }
            let mut outermost = target.to_path_buf();
            while let Some(parent) = outermost.parent() {
                if parent.as_os_str().is_empty() || std::fs::symlink_metadata(parent).is_ok() {
                    break;
                }
                outermost = parent.to_path_buf();
            }
            std::fs::DirBuilder::new()
                .recursive(true)
                .create(target)
                .ctx(&what)?;
            prepared.created = Some(outermost);
        }
        Err(e) => return Err(Error::io(what, e)),
    }
    let marked = serde_json::to_vec(&mine).expect("serializes");
    if let Err(e) = std::fs::write(target.join(MARKER), marked) {
        prepared.abandon(target);
        return Err(Error::io(format!("{}/{MARKER}", target.display()), e));
    }
    Ok(prepared)
}

impl Prepared {
    /// After a failed restore: removes the folders this restore created, or else the marker
    /// when it is all the restore left (a target with restored entries keeps it, so that the
    /// same restore run again resumes).
    pub(super) fn abandon(&self, target: &Path) {
        if let Some(created) = &self.created {
            if let Err(e) = std::fs::remove_dir_all(created) {
                tracing::warn!("{}: not removed: {e}", created.display());
            }
            return;
        }
        let alone = std::fs::read_dir(target)
            .map(|rd| rd.filter_map(|e| e.ok()).all(|e| e.file_name() == MARKER))
            .unwrap_or(false);
        if alone && !self.resume {
            let _ = std::fs::remove_file(target.join(MARKER));
        }
    }
}
