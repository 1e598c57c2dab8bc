//! The backup-metadata document the scheduler posts to freezer-api after each backup
//! (upstream's agent prints it with `--metadata-out`; the scheduler adds `job_id`).
//!
//! Upstream's keys, with the values this engine knows (unknown ones are `""`, as upstream
//! writes falsy values), plus `snapshot_id` so a backup listed by the API can be restored by
//! id. Never a secret: no key, password or token is copied from the action.

use serde_json::{Value, json};

use crate::engine::BackupResult;
use crate::job::FreezerAction;

/// The metadata of one backup of `action` in job `job_id`.
pub fn backup_metadata(
    job_id: &str,
    client_id: &str,
    action: &FreezerAction,
    result: &BackupResult,
) -> Value {
    let snap = &result.snapshot;
    let storages = action.all_storages().unwrap_or_default();
    let first = storages.first();
    let container = action
        .container
        .clone()
        .or_else(|| first.and_then(|s| s.container.clone()))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "-".to_string());
    let storage = action
        .storage
        .clone()
        .or_else(|| first.and_then(|s| s.storage.clone()))
        .unwrap_or_else(|| "local".to_string());
    let text = |v: Option<String>| v.map(Value::String).unwrap_or_else(|| json!(""));
    json!({
        "action": "backup",
        "job_id": job_id,
        "client_id": client_id,
        "backup_name": snap.backup_name,
        "hostname": snap.hostname,
        "container": container,
        "storage": storage,
        "mode": action.mode(),
        "backup_media": "fs",
        "path_to_backup": snap.path_to_backup,
        "fs_real_path": snap.path_to_backup,
        "vol_snap_path": "",
        "curr_backup_level": snap.level,
        "level": snap.level,
        "max_level": action.max_level.map(Value::from).unwrap_or_else(|| json!("")),
        "always_level": action.always_level.map(Value::from).unwrap_or_else(|| json!("")),
        "time_stamp": snap.time_stamp,
        "compression": text(action.compression.clone()),
        "consistency_checksum": text(snap.consistency_checksum.clone()),
        "dry_run": if action.dry_run { json!(true) } else { json!("") },
        "client_os": std::env::consts::OS,
        "client_version": concat!("freezer-rs ", env!("CARGO_PKG_VERSION")),
        "encrypted": action.encrypt_pass_file.as_deref().is_some_and(|p| !p.is_empty()),
        "total_fs_files": snap.stats.files,
        "total_directories": snap.stats.dirs,
        "backup_size_uncompressed": snap.stats.bytes,
        "backup_size_compressed": snap.stats.bytes_added,
        "snapshot_id": result.snapshot_id.as_ref().map(|i| Value::String(i.to_string())).unwrap_or_else(|| json!("")),
        "complete": result.is_complete(),
    })
}
