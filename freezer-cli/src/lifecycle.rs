//! The repository's lifecycle commands: `forget`, `prune`, `check`, `repair index`, `unlock`.
//! Each parses its flags into freezer-core's options, runs the library, and prints the result
//! (text on stdout, damage and warnings on stderr, or one JSON document).

use clap::{Args, Subcommand};
use freezer_core::engine::{
    CheckOptions, CheckReport, ForgetOptions, ForgetReport, PruneOptions, PruneReport, ReadData,
    RepairReport,
};
use freezer_core::job::FreezerAction;
use freezer_core::repo::Actor;
use freezer_core::repo::snapshot::SnapshotFilter;
use freezer_core::{Error, Result, TimeZone, local_display};
use serde_json::json;

use crate::RepoArgs;
use crate::output::{Out, print_json, size};

/// Which snapshots a command looks at.
#[derive(Args, Debug, Clone)]
pub struct FilterArgs {
    /// Only snapshots of this host.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Only snapshots of this backup name.
    #[arg(long, short = 'N')]
    pub backup_name: Option<String>,
    /// Only snapshots taken at or after this date (YYYY-MM-DDThh:mm:ss, local time).
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Only snapshots taken at or before this date.
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,
}

impl FilterArgs {
    pub fn filter(&self) -> Result<SnapshotFilter> {
        let tz = TimeZone::system();
        let date = |d: &Option<String>, field| {
            d.as_deref()
                .map(|d| freezer_core::parse_date(d, field, &tz))
                .transpose()
        };
        Ok(SnapshotFilter {
            hostname: self.hostname.clone(),
            backup_name: self.backup_name.clone(),
            since: date(&self.since, "since")?,
            until: date(&self.until, "until")?,
        })
    }
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// Forget snapshots older than this many days (fractional; upstream's remove_older_than).
    #[arg(long, short = 'R', value_name = "DAYS")]
    remove_older_than: Option<f64>,
    /// Forget snapshots older than this date (YYYY-MM-DDThh:mm:ss, local time).
    #[arg(long, value_name = "DATE")]
    remove_from_date: Option<String>,
    /// Forget snapshots older than this date or epoch number.
    #[arg(long, value_name = "DATE")]
    remove_before_date: Option<String>,
    /// Keep the newest N snapshots of each series.
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours with snapshots.
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// ... of each of the last N days.
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// ... of each of the last N ISO weeks.
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// ... of each of the last N months.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// ... of each of the last N years.
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot within this span of the series' newest (36h, 10d, 2w, 6m, 1y6m).
    #[arg(long, value_name = "SPAN")]
    keep_within: Option<String>,
    /// List what would be forgotten and why; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Then remove the data no snapshot references any more.
    #[arg(long)]
    prune: bool,
    /// Write no lock: for freeing space on a full storage, where no lock can be written.
    /// Refused while another live lock is present; run it only while no other freezer runs
    /// on the repository (a backup started meanwhile could lose data).
    #[arg(long)]
    no_lock: bool,
    #[command(flatten)]
    prune_opts: PruneFlags,
}

#[derive(Args, Debug, Clone)]
pub struct PruneFlags {
    /// Repack a partly used pack when more than this share of it is unused (5%, 0.05; 100%:
    /// never repack).
    #[arg(long, value_name = "SHARE", default_value = "5%")]
    max_unused: String,
}

impl PruneFlags {
    fn options(&self, dry_run: bool) -> Result<PruneOptions> {
        Ok(PruneOptions {
            max_unused: PruneOptions::parse_share(&self.max_unused)?,
            dry_run,
        })
    }
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    prune_opts: PruneFlags,
    /// Report what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write no lock: for freeing space on a full storage, where no lock can be written.
    /// Refused while another live lock is present; run it only while no other freezer runs
    /// on the repository (a backup started meanwhile could lose data).
    #[arg(long)]
    no_lock: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Also read every pack and verify every chunk.
    #[arg(long)]
    read_data: bool,
    /// Read a deterministic part of the packs: n/m (the n-th of m parts) or x% .
    #[arg(long, value_name = "n/m|x%", conflicts_with = "read_data")]
    read_data_subset: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' headers (after a lost or damaged index).
    Index {
        #[command(flatten)]
        repo: RepoArgs,
    },
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Remove every lock, not only stale ones (only when nothing runs on the repository).
    #[arg(long)]
    all: bool,
}

pub async fn forget(a: ForgetArgs, out: &Out) -> Result<bool> {
    // The rules go through the same option struct as a job's admin action.
    let action = FreezerAction {
        remove_older_than: a.remove_older_than,
        remove_from_date: a.remove_from_date.clone(),
        remove_before_date: a.remove_before_date.clone(),
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within: a.keep_within.clone(),
        ..FreezerAction::default()
    };
    let tz = TimeZone::system();
    let retention = action.retention(&tz)?.ok_or_else(|| {
        Error::bad_input(
            "forget",
            "give at least one rule: --remove-older-than, --remove-from-date, --remove-before-date or --keep-*",
        )
    })?;
    let prune_opts = a.prune_opts.options(a.dry_run)?;
    let mut repo = a.repo.open().await?;
    repo.set_no_lock(a.no_lock);
    let mut opts = ForgetOptions::new(retention, Actor::current());
    opts.filter = a.filter.filter()?;
    opts.dry_run = a.dry_run;
    opts.tz = tz;
    let report = freezer_core::engine::forget(&repo, &opts).await?;
    let pruned = if a.prune && !a.dry_run && !report.forgotten.is_empty() {
        Some(
            freezer_core::engine::prune(
                &mut repo,
                &prune_opts,
                &Actor::current(),
                out.progress_bar(),
            )
            .await?,
        )
    } else {
        None
    };
    out.clear_progress();
    if out.is_json() {
        print_json(&json!({"forget": report, "prune": pruned}));
    } else {
        print_forget(&report);
        if let Some(p) = &pruned {
            print_prune(p);
        }
    }
    Ok(pruned.as_ref().is_none_or(|p| p.is_complete()))
}

pub fn print_forget(r: &ForgetReport) {
    let tz = TimeZone::system();
    let mut series = None;
    for d in &r.decisions {
        let s = (&d.hostname, &d.backup_name);
        if series != Some(s) {
            println!("{} / {}:", d.hostname, d.backup_name);
            series = Some(s);
        }
        println!(
            "  {} {} {} level {:<2} {}",
            if d.keep { "keep  " } else { "forget" },
            d.id.short(),
            local_display(d.time, &tz),
            d.level,
            d.reasons.join(", ")
        );
    }
    println!(
        "{} snapshot(s) {}, {} kept",
        r.forgotten.len(),
        if r.dry_run {
            "would be forgotten (dry run)"
        } else {
            "forgotten"
        },
        r.kept
    );
}

pub async fn prune(a: PruneArgs, out: &Out) -> Result<bool> {
    let opts = a.prune_opts.options(a.dry_run)?;
    let mut repo = a.repo.open().await?;
    repo.set_no_lock(a.no_lock);
    let r = freezer_core::engine::prune(&mut repo, &opts, &Actor::current(), out.progress_bar())
        .await?;
    out.clear_progress();
    if out.is_json() {
        print_json(&serde_json::to_value(&r).expect("serializes"));
    } else {
        print_prune(&r);
    }
    Ok(r.is_complete())
}

pub fn print_prune(r: &PruneReport) {
    let t = &r.total;
    let verb = if r.dry_run { "would free" } else { "freed" };
    for s in &r.storages {
        match &s.error {
            Some(e) => eprintln!("  {}: FAILED: {e}", s.sink),
            None if r.storages.len() > 1 => println!(
                "  {}: {} packs deleted, {} repacked, {verb} {}",
                s.sink,
                s.stats.packs_deleted,
                s.stats.packs_repacked,
                size(s.stats.bytes_freed)
            ),
            None => {}
        }
    }
    println!(
        "prune{}: {} snapshots, {} blobs in use; {} packs deleted ({} orphaned), {} repacked ({} copied), {} kept; {verb} {}",
        if r.dry_run { " (dry run)" } else { "" },
        r.snapshots,
        r.used_blobs,
        t.packs_deleted,
        t.orphan_packs,
        t.packs_repacked,
        size(t.bytes_repacked),
        t.packs_kept,
        size(t.bytes_freed)
    );
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
}

pub async fn check(a: CheckArgs, out: &Out) -> Result<bool> {
    let read_data = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => s.parse::<ReadData>()?,
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let mut repo = a.repo.open().await?;
    let mut opts = CheckOptions::new(Actor::current());
    opts.read_data = read_data;
    let r = freezer_core::engine::check(&mut repo, &opts, out.progress_bar()).await?;
    out.clear_progress();
    if out.is_json() {
        let mut v = serde_json::to_value(&r).expect("serializes");
        v["ok"] = r.is_ok().into();
        v["summary"] = r.summary().into();
        v["advice"] = r.advice().into();
        print_json(&v);
    } else {
        print_check(&r);
    }
    Ok(r.is_ok())
}

/// How many damaged objects, and snapshots and files of each, the text lists; `--json` lists
/// them all.
const DETAIL_LINES: usize = 10;

/// Damage first (a summary, the objects, what to do), then the counts, then the details of each
/// damaged object.
pub fn print_check(r: &CheckReport) {
    let more = |n: usize, what: &str| {
        if n > DETAIL_LINES {
            eprintln!(
                "  ... and {} more {what} (`--json` lists them all)",
                n - DETAIL_LINES
            );
        }
    };
    let damaged = r.damage_by_kind();
    if !r.is_ok() {
        eprintln!("DAMAGED: {}", r.summary());
        for d in damaged.iter().take(DETAIL_LINES) {
            eprintln!("  {}: {}", d.object, d.error);
        }
        more(damaged.len(), "damaged object(s)");
    }
    for a in r.advice() {
        eprintln!("to do: {a}");
    }
    println!(
        "checked {} snapshot(s), {} tree(s), {} blob(s), {} index file(s), {} pack(s) on {}",
        r.snapshots,
        r.trees,
        r.blobs,
        r.index_files,
        r.packs,
        r.storages.join(", ")
    );
    if r.packs_read > 0 {
        println!(
            "read and verified {} pack(s), {} ({})",
            r.packs_read,
            size(r.bytes_read),
            r.read_data
        );
    }
    if !r.unreferenced_packs.is_empty() {
        println!(
            "{} pack(s) in no index (left by an interrupted backup)",
            r.unreferenced_packs.len()
        );
    }
    if r.temporary_files > 0 {
        println!(
            "{} temporary file(s) ({}) left by interrupted writes",
            r.temporary_files,
            size(r.temporary_bytes)
        );
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    for d in damaged.iter().take(DETAIL_LINES) {
        if d.snapshots.is_empty() && d.files.is_empty() {
            continue;
        }
        eprintln!("details of {}:", d.object);
        for s in d.snapshots.iter().take(DETAIL_LINES) {
            eprintln!("  snapshot: {}", s.short());
        }
        more(d.snapshots.len(), "snapshot(s)");
        for f in d.files.iter().take(DETAIL_LINES) {
            eprintln!("  affects: {f}");
        }
        more(d.files.len(), "file(s)");
    }
    if r.is_ok() {
        println!("no damage found");
    } else {
        eprintln!("{} damaged object(s): {}", r.damaged.len(), r.summary());
    }
}

pub async fn repair(command: RepairCommand, out: &Out) -> Result<bool> {
    let RepairCommand::Index { repo } = command;
    let mut r = repo.open().await?;
    let report: RepairReport =
        freezer_core::engine::repair_index(&mut r, &Actor::current(), out.progress_bar()).await?;
    out.clear_progress();
    if out.is_json() {
        print_json(&serde_json::to_value(&report).expect("serializes"));
        return Ok(report.is_complete());
    }
    for s in &report.storages {
        match &s.error {
            Some(e) => eprintln!("{}: FAILED: {e}", s.storage),
            None => println!(
                "{}: {} pack(s) and {} blob(s) indexed in {} new index file(s), {} old one(s) removed",
                s.storage, s.packs_indexed, s.blobs, s.index_files_written, s.index_files_removed
            ),
        }
        for d in &s.damaged_packs {
            eprintln!("  damaged: {}: {}", d.object, d.error);
        }
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    Ok(report.is_complete())
}

pub async fn unlock(a: UnlockArgs, out: &Out) -> Result<bool> {
    let repo = a.repo.open().await?;
    let gone = repo.unlock(&Actor::current(), a.all).await?;
    if out.is_json() {
        print_json(&json!({"removed": gone}));
    } else {
        for l in &gone {
            println!("removed the {}", l.describe());
        }
        println!("{} lock(s) removed", gone.len());
    }
    Ok(true)
}
