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
use crate::repo::snapshot::{SnapshotFilter, SnapshotSelector};
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
    /// Unreadable snapshots forgotten by id: set aside under `quarantine/snapshots/`.
    pub quarantined: Vec<Id>,
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
                "{b}{}; `freezer forget ID` or `freezer repair snapshots` sets an unreadable snapshot aside",
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
        quarantined: vec![],
    })
}

/// Forgets the snapshots given by id or unique prefix. One that cannot be read (its series
/// and time unknown) is set aside under `quarantine/snapshots/<id>` instead, which unblocks
/// retention and prune. Takes a shared lock, as [`forget`] does.
pub async fn forget_ids(
    repo: &Repository,
    ids: &[String],
    actor: &Actor,
    dry_run: bool,
) -> Result<ForgetReport> {
    let lock = if dry_run {
        None
    } else {
        Some(repo.lock(false, "forget", actor).await?)
    };
    let result = forget_ids_locked(repo, ids, dry_run).await;
    if let Some(l) = lock {
        let _ = l.release().await;
    }
    result
}

async fn forget_ids_locked(
    repo: &Repository,
    ids: &[String],
    dry_run: bool,
) -> Result<ForgetReport> {
    let listing = repo.snapshot_listing().await?;
    let mut report = ForgetReport {
        dry_run,
        decisions: vec![],
        forgotten: vec![],
        kept: 0,
        quarantined: vec![],
    };
    for prefix in ids {
        let p = prefix.to_ascii_lowercase();
        let unreadable: Vec<Id> = listing
            .unreadable
            .iter()
            .filter(|u| !p.is_empty() && u.id.to_hex().starts_with(&p))
            .map(|u| u.id)
            .collect();
        match listing.select(&SnapshotSelector::Id(prefix.clone()), false) {
            Ok(((id, s), _)) => {
                if !report.forgotten.contains(id) {
                    report.forgotten.push(*id);
                    report.decisions.push(Decision {
                        id: *id,
                        hostname: s.hostname.clone(),
                        backup_name: s.backup_name.clone(),
                        time: s.time,
                        level: s.level,
                        keep: false,
                        reasons: vec![format!("given by id ({prefix})")],
                    });
                }
            }
            Err(e @ Error::BadInput { .. }) => return Err(e),
            Err(e) => match unreadable.as_slice() {
                [id] => {
                    if !report.quarantined.contains(id) {
                        report.quarantined.push(*id);
                    }
                }
                _ => return Err(e),
            },
        }
    }
    report.kept = listing.snapshots.len() - report.forgotten.len();
    if !dry_run {
        for id in &report.forgotten {
            repo.tee()
                .delete(&format!("snapshots/{id}"))
                .await
                .map_err(|e| e.context(format!("forgetting snapshot {}", id.short())))?;
        }
        for id in &report.quarantined {
            super::snapshot_repair::set_aside(repo, *id).await?;
        }
    }
    Ok(report)
}
