//! Mode `postgres`: not built yet (issue 10); every entry point says so.

use std::sync::Arc;

use crate::engine::RestoreResult;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::job::FreezerAction;
use crate::job::RunContext;
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;
use crate::source::Source;

fn not_yet() -> Error {
    Error::unsupported("mode postgres (not in this release yet)")
}

/// Checks a backup's options.
pub fn validate_backup(_action: &FreezerAction) -> Result<()> {
    Err(not_yet())
}

/// Checks a restore's options.
pub fn validate_restore(_action: &FreezerAction) -> Result<()> {
    Err(not_yet())
}

/// The source of a backup.
pub fn backup_source(_action: &FreezerAction, _ctx: &RunContext) -> Result<Arc<dyn Source>> {
    Err(not_yet())
}

/// Restores a snapshot into the server the action names.
pub async fn restore(
    _repo: &Repository,
    _id: Id,
    _snapshot: &Snapshot,
    _action: &FreezerAction,
    _ctx: &RunContext,
) -> Result<RestoreResult> {
    Err(not_yet())
}
