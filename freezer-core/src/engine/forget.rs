//! Forget: apply retention rules to the snapshots of a repository.
//!
//! Forgetting removes snapshot objects only; the data they alone referenced stays until
//! [`super::prune`] removes it. Since every snapshot is complete, each is forgotten on its own:
//! no chain is cut. Decisions come from [`crate::policy::Retention`], with their reasons, so a
//! dry run shows exactly what would go and why.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use super::PruneReport;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::policy::{Decision, Retention};
use crate::repo::snapshot::SnapshotFilter;
use crate::repo::{Actor, Repository};
use crate::sink::Sink;

/// What to forget.
#[derive(Clone, Debug)]
pub struct ForgetOptions {
    /// The rules, applied to each series (`hostname` + `backup_name`) on its own.
    pub retention: Retention,
    /// Which snapshots the rules look at; the others are left alone.
    pub filter: SnapshotFilter,
    /// The time `remove_older_than` counts from; now when `None`.
    pub now: Option<Timestamp>,
    /// The time zone of calendar buckets (days, weeks...).
    pub tz: TimeZone,
    /// Decide and report, remove nothing.
    pub dry_run: bool,
    /// Who forgets (the lock's owner).
    pub actor: Actor,
}

impl ForgetOptions {
    /// Options for `retention` over every snapshot, now, in the system time zone.
    pub fn new(retention: Retention, actor: Actor) -> Self {
        ForgetOptions {
            retention,
            filter: SnapshotFilter::default(),
            now: None,
            tz: TimeZone::system(),
            dry_run: false,
            actor,
        }
    }
}

/// What forget decided and did.
#[derive(Clone, Debug, Serialize)]
pub struct ForgetReport {
    /// Nothing was removed.
    pub dry_run: bool,
    /// Every snapshot the rules looked at, grouped by series, newest first, with the reasons.
    pub decisions: Vec<Decision>,
    /// The snapshots removed (or that a dry run would remove).
    pub forgotten: Vec<Id>,
    /// How many stay.
    pub kept: usize,
}

/// What retention did: the snapshots forgotten, then the data the prune removed.
#[derive(Clone, Debug, Serialize)]
pub struct RetentionResult {
    /// The snapshots forgotten and kept, with the reasons.
    pub forget: ForgetReport,
    /// The data removed afterwards (`None` when nothing was forgotten, or in a dry run).
    pub prune: Option<PruneReport>,
}

impl RetentionResult {
    /// Whether the prune, if any, finished on every storage.
    pub fn is_complete(&self) -> bool {
        self.prune.as_ref().is_none_or(|p| p.is_complete())
    }
}

/// Applies `opts.retention` and removes the snapshots it does not keep, from every storage of
/// the repository. Takes a shared lock: forgetting never deletes data, so backups may run.
pub async fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    let lock = if opts.dry_run {
        None
    } else {
        Some(repo.lock(false, "forget", &opts.actor).await?)
    };
    lock.iter()
        .for_each(crate::repo::lock::LockGuard::log_notes);
    let result = decide_and_remove(repo, opts).await;
    if let Some(l) = lock {
        let _ = l.release().await;
    }
    result
}

async fn decide_and_remove(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    let (mut snaps, bad) = repo.snapshots().await?;
    if let Some(b) = bad.first() {
        // A snapshot that cannot be read cannot be judged; deciding without it could forget
        // the wrong ones of its series.
        return Err(Error::corrupt(
            "snapshots",
            format!(
                "{b}{}; run `freezer check`",
                if bad.len() > 1 {
                    format!(" (and {} more)", bad.len() - 1)
                } else {
                    String::new()
                }
            ),
        ));
    }
    snaps.retain(|(_, s)| opts.filter.matches(s));
    let now = opts.now.unwrap_or_else(crate::time::now);
    let decisions = opts.retention.apply(&snaps, now, &opts.tz)?;
    let forgotten: Vec<Id> = decisions.iter().filter(|d| !d.keep).map(|d| d.id).collect();
    if !opts.dry_run {
        for id in &forgotten {
            repo.tee()
                .delete(&format!("snapshots/{id}"))
                .await
                .map_err(|e| e.context(format!("forgetting snapshot {}", id.short())))?;
        }
    }
    Ok(ForgetReport {
        dry_run: opts.dry_run,
        kept: decisions.len() - forgotten.len(),
        decisions,
        forgotten,
    })
}
