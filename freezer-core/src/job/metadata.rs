//! Upstream's backup metadata document: what freezer-agent writes with `--metadata-out` after
//! a backup and what the scheduler posts to freezer-api's `/v2/{project}/backups`, built in
//! one place for every front-end.
//!
//! Keys are upstream's (FREEZER-API.md §1.5.5, FREEZER-AGENT.md §2.5); as upstream writes
//! them, unset values are `""`. Unlike upstream's agent, `curr_backup_level` is the level the
//! backup really has (upstream's fs backups always say 0), and `snapshot_id` names the
//! snapshot. Nothing here holds a secret: no storage credential is copied.

use serde_json::{Value, json};

use super::RunContext;
use super::options::FreezerAction;
use crate::engine::BackupResult;
use crate::error::{Error, Result};

/// The backup metadata document of a backup `action` that gave `result`, with the job id of
/// `ctx` (when known).
pub fn backup_metadata(action: &FreezerAction, result: &BackupResult, ctx: &RunContext) -> Value {
    let snap = &result.snapshot;
    let s = |v: Option<&str>| Value::String(v.unwrap_or("").to_string());
    let level = |v: Option<u32>| v.map(Value::from).unwrap_or_else(|| Value::from(""));
    // A job may name its storages in `storages` (several at once) instead of the top-level
    // `container`/`storage`: the first one stands for the backup, as upstream has one.
    let storages = action.all_storages().unwrap_or_default();
    let first = storages.first();
    let container = action
        .container
        .clone()
        .or_else(|| first.and_then(|f| f.container.clone()))
        .unwrap_or_default();
    let storage = action
        .storage
        .clone()
        .or_else(|| first.and_then(|f| f.storage.clone()))
        .unwrap_or_else(|| "local".to_string());
    let mut doc = json!({
        "action": "backup",
        "backup_name": snap.backup_name,
        "hostname": snap.hostname,
        "container": container,
        "storage": storage,
        "mode": snap.mode,
        "path_to_backup": s(action.path_to_backup.as_deref()),
        "fs_real_path": snap.path_to_backup,
        "level": snap.level,
        "curr_backup_level": snap.level,
        "max_level": level(action.max_level),
        "always_level": level(action.always_level),
        "time_stamp": snap.time_stamp,
        "engine_name": "freezer-rs",
        "compression": action.compression.as_deref().unwrap_or("zstd"),
        "encrypted": ctx.passphrase.is_some()
            || action.encrypt_pass_file.as_deref().is_some_and(|p| !p.is_empty()),
        "dry_run": if action.dry_run { Value::Bool(true) } else { Value::from("") },
        "total_fs_files": snap.stats.files,
        "total_directories": snap.stats.dirs,
        "total_broken_links": 0,
        "backup_size_uncompressed": snap.stats.bytes,
        "backup_size_compressed": snap.stats.bytes_added,
        "consistency_checksum": s(snap.consistency_checksum.as_deref()),
        "client_version": format!("freezer-rs {}", env!("CARGO_PKG_VERSION")),
        "client_os": std::env::consts::OS,
        "snapshot_id": result.snapshot_id.map(|i| i.to_string()).unwrap_or_default(),
        "complete": result.is_complete(),
    });
    if let Some(id) = ctx.job_id.as_deref().filter(|i| !i.is_empty()) {
        doc["job_id"] = Value::from(id);
    }
    doc
}

/// Writes `doc` to `path` (upstream's `metadata_out`), whole or not at all: through a
/// temporary file beside it, renamed. `-` (stdout) is the front-end's to write: the library
/// never prints.
pub fn write_metadata(path: &str, doc: &Value) -> Result<()> {
    let path = std::path::Path::new(path);
    let what = format!("metadata_out {}", path.display());
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::bad_input("metadata_out", "names a folder, not a file"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let text = serde_json::to_vec_pretty(doc).map_err(|e| Error::io(&what, e.into()))?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(&what, e)
        })
}
