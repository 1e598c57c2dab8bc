//! Unreadable snapshots set aside: [`repair_snapshots`], and `forget` of one by its id.
//!
//! A snapshot whose object is damaged on every storage cannot be judged by retention nor
//! walked by prune, so both stop while it is there. Setting it aside moves its object, as it
//! is, to `quarantine/snapshots/<id>` on each storage that holds it (copied there, then deleted
//! from `snapshots/`, by [`super::repair::quarantine`], which reads the copy back first), where no command reads it and from where an expert may still take it.
//! Nothing else is touched: the data only it needed is freed by the next prune.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::{Actor, Repository};
use crate::sink::SinkExt;

/// What `repair_snapshots` did (in a dry run: would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SnapshotRepairReport {
    /// Nothing was moved.
    pub dry_run: bool,
    /// The damaged snapshots set aside under `quarantine/snapshots/`.
    pub quarantined: Vec<Id>,
    /// Snapshots that could not be read for another reason (a storage out of reach): left
    /// where they are, with why.
    pub unreadable: Vec<String>,
}

impl SnapshotRepairReport {
    /// Whether every unreadable snapshot was dealt with.
    pub fn is_complete(&self) -> bool {
        self.unreadable.is_empty()
    }
}

/// Sets every damaged snapshot aside (see the module documentation). Takes a shared lock, as
/// `forget` does: it removes snapshots, never data.
pub async fn repair_snapshots(
    repo: &Repository,
    actor: &Actor,
    dry_run: bool,
) -> Result<SnapshotRepairReport> {
    let lock = if dry_run {
        None
    } else {
        Some(repo.lock(false, "repair snapshots", actor).await?)
    };
    let res = async {
        let listing = repo.snapshot_listing().await?;
        let mut report = SnapshotRepairReport {
            dry_run,
            ..SnapshotRepairReport::default()
        };
        for u in &listing.unreadable {
            if !u.is_corrupt() {
                report.unreadable.push(u.error.to_string());
                continue;
            }
            if !dry_run {
                set_aside(repo, u.id).await?;
            }
            report.quarantined.push(u.id);
        }
        Ok(report)
    }
    .await;
    if let Some(l) = lock {
        let _ = l.release().await;
    }
    res
}

/// Moves `snapshots/<id>` to `quarantine/snapshots/<id>` on every live storage that holds it,
/// unless a storage holds a copy that reads: a storage that did not answer while the
/// snapshots were listed may hold an intact one, which is never set aside.
pub(crate) async fn set_aside(repo: &Repository, id: Id) -> Result<()> {
    let key = format!("snapshots/{id}");
    let tee = repo.tee();
    let live = || (0..tee.len()).filter(|i| tee.live() & (1 << i) != 0);
    for i in live() {
        let member = tee.member(i);
        match member.get_bytes(&key).await {
            Ok(data) => {
                let reads = crate::repo::object::decode(repo.crypto(), &data, &key)
                    .and_then(|plain| crate::repo::snapshot::Snapshot::decode(&plain, &key))
                    .is_ok();
                if reads {
                    return Err(Error::bad_input(
                        "snapshot",
                        format!(
                            "{key} reads on {}: it is not damaged there, so it is not set aside; run `freezer check`",
                            member.describe()
                        ),
                    ));
                }
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(e.context(format!(
                    "reading {key} on {} before setting it aside (nothing was moved)",
                    member.describe()
                )));
            }
        }
    }
    for i in live() {
        let member = tee.member(i);
        match super::repair::quarantine(member.as_ref(), &key).await {
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(e.context(format!("setting {key} aside on {}", member.describe())));
            }
        }
    }
    Ok(())
}
