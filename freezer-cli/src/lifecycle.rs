//! The repository's lifecycle commands: `forget`, `prune`, `check`, `repair index`,
//! `repair config`, `repair keys`, `repair packs`, `unlock`.
//! Each parses its flags into freezer-core's options, runs the library, and prints the result
//! (text on stdout, damage and warnings on stderr, or one JSON document).

use clap::{Args, Subcommand};
use freezer_core::engine::{
    CheckOptions, CheckReport, ConfigRepairReport, ForgetOptions, ForgetReport, PruneOptions,
    PruneReport, ReadData, RepairPacksOptions, RepairReport,
};
use freezer_core::job::FreezerAction;
use freezer_core::repo::Actor;
use freezer_core::repo::snapshot::SnapshotFilter;
use freezer_core::{Error, Result, TimeZone, local_display};
use serde_json::json;

use crate::RepoArgs;
use crate::output::{Out, outln, print_json, size};

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
    /// Forget these snapshots (ids or unique prefixes) instead of applying rules; an unreadable
    /// one is set aside under quarantine/snapshots/.
    #[arg(value_name = "ID")]
    ids: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Forget this snapshot (id or unique prefix; repeatable) instead of applying rules: one
    /// that `freezer check` names as needing data that is gone.
    #[arg(long = "snapshot", value_name = "ID", conflicts_with_all = ["remove_older_than", "remove_from_date", "remove_before_date", "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within", "dry_run"])]
    snapshot: Vec<String>,
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
    /// Restore a lost or damaged config (and its copies) from a copy, another storage of the
    /// repository (give them all with -r), or the key the passphrase opens; never overwrites an
    /// intact config.
    Config {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Mend damaged key files from an intact copy on another storage (give them all with -r),
    /// move those of which no intact copy is left to quarantine/, copy missing ones; open with
    /// a passphrase whose key is intact.
    Keys {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Drop what is lost in missing, truncated or damaged packs from the index (those found by
    /// `freezer check`), keeping the blobs that verify; a new backup then stores it again.
    Packs {
        #[command(flatten)]
        repo: RepoArgs,
        /// Read and verify every pack, not only those found damaged.
        #[arg(long)]
        read_data: bool,
    },
    /// Set every damaged snapshot aside (under quarantine/snapshots/), so that retention and
    /// prune can run again.
    Snapshots {
        #[command(flatten)]
        repo: RepoArgs,
        /// Say what would be set aside; change nothing.
        #[arg(long)]
        dry_run: bool,
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
    let mut a = a;
    a.ids.extend(std::mem::take(&mut a.snapshot));
    if !a.ids.is_empty() {
        return forget_ids(a, out).await;
    }
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

async fn forget_ids(a: ForgetArgs, out: &Out) -> Result<bool> {
    let rules = a.remove_older_than.is_some()
        || a.remove_from_date.is_some()
        || a.remove_before_date.is_some()
        || a.keep_last.is_some()
        || a.keep_hourly.is_some()
        || a.keep_daily.is_some()
        || a.keep_weekly.is_some()
        || a.keep_monthly.is_some()
        || a.keep_yearly.is_some()
        || a.keep_within.is_some();
    if rules {
        return Err(Error::bad_input(
            "forget",
            "give snapshot ids or rules (--keep-*, --remove-*), not both",
        ));
    }
    let prune_opts = a.prune_opts.options(a.dry_run)?;
    let mut repo = a.repo.open().await?;
    repo.set_no_lock(a.no_lock);
    let report =
        freezer_core::engine::forget_ids(&repo, &a.ids, &Actor::current(), a.dry_run).await?;
    let pruned = if a.prune && !a.dry_run {
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
            outln!("{} / {}:", d.hostname, d.backup_name);
            series = Some(s);
        }
        outln!(
            "  {} {} {} level {:<2} {}",
            if d.keep { "keep  " } else { "forget" },
            d.id.short(),
            local_display(d.time, &tz),
            d.level,
            d.reasons.join(", ")
        );
    }
    for id in &r.quarantined {
        outln!(
            "unreadable snapshot {} {} quarantine/snapshots/{id}",
            id.short(),
            if r.dry_run {
                "would be set aside in"
            } else {
                "set aside in"
            }
        );
    }
    outln!(
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
            None if r.storages.len() > 1 => outln!(
                "  {}: {} packs deleted, {} repacked, {verb} {}",
                s.sink,
                s.stats.packs_deleted,
                s.stats.packs_repacked,
                size(s.stats.bytes_freed)
            ),
            None => {}
        }
    }
    outln!(
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
    let advice = r.advice();
    if !advice.is_empty() {
        eprintln!("to do, in this order:");
    }
    for (n, step) in advice.iter().enumerate() {
        eprintln!("  {}. {step}", n + 1);
    }
    outln!(
        "checked {} snapshot(s), {} tree(s), {} blob(s), {} index file(s), {} pack(s) on {}",
        r.snapshots,
        r.trees,
        r.blobs,
        r.index_files,
        r.packs,
        r.storages.join(", ")
    );
    if r.packs_read > 0 {
        outln!(
            "read and verified {} pack(s), {} ({})",
            r.packs_read,
            size(r.bytes_read),
            r.read_data
        );
    }
    if !r.unreferenced_packs.is_empty() {
        outln!(
            "{} pack(s) in no index (left by an interrupted backup)",
            r.unreferenced_packs.len()
        );
    }
    if r.temporary_files > 0 {
        outln!(
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
        outln!("no damage found");
    } else {
        eprintln!("{} damaged object(s): {}", r.damaged.len(), r.summary());
    }
}

pub async fn repair(command: RepairCommand, out: &Out) -> Result<bool> {
    let repo = match command {
        RepairCommand::Index { repo } => repo,
        RepairCommand::Config { repo } => return repair_config(repo, out).await,
        RepairCommand::Keys { repo } => return repair_keys(repo, out).await,
        RepairCommand::Packs { repo, read_data } => {
            return repair_packs(repo, read_data, out).await;
        }
        RepairCommand::Snapshots { repo, dry_run } => {
            return repair_snapshots(repo, dry_run, out).await;
        }
    };
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
            None => outln!(
                "{}: {} pack(s) and {} blob(s) indexed in {} new index file(s), {} old one(s) removed",
                s.storage,
                s.packs_indexed,
                s.blobs,
                s.index_files_written,
                s.index_files_removed
            ),
        }
        for d in &s.damaged_packs {
            eprintln!("  damaged: {}: {}", d.object, d.error);
        }
        for q in &s.quarantined {
            eprintln!("  could not be read, moved aside to {q}");
        }
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    Ok(report.is_complete())
}

async fn repair_config(repo: RepoArgs, out: &Out) -> Result<bool> {
    let report: ConfigRepairReport =
        freezer_core::engine::repair_config(repo.sinks()?, repo.passphrase()?.as_ref()).await?;
    if out.is_json() {
        print_json(&serde_json::to_value(&report).expect("serializes"));
        return Ok(report.is_complete());
    }
    for s in &report.storages {
        if let Some(e) = &s.error {
            eprintln!("{}: FAILED: {e}", s.storage);
            continue;
        }
        let fate = |was: &str, written: bool| {
            if written {
                format!("{was}, restored")
            } else {
                was.to_string()
            }
        };
        outln!(
            "{}: config {}; copy {}",
            s.storage,
            fate(&s.config_was, s.config_written),
            fate(&s.copy_was, s.copy_written)
        );
        for q in &s.quarantined {
            eprintln!("  the damaged one was moved aside to {q}");
        }
    }
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    if report.wrote() {
        outln!(
            "repository {}: config restored from {}",
            report.id.short(),
            report.source
        );
    } else {
        outln!(
            "repository {}: the config and its copies are intact, nothing was written",
            report.id.short()
        );
    }
    Ok(report.is_complete())
}

async fn repair_keys(repo: RepoArgs, out: &Out) -> Result<bool> {
    let r = repo.open().await?;
    let report = freezer_core::engine::repair_keys(&r, &Actor::current()).await?;
    if out.is_json() {
        print_json(&serde_json::to_value(&report).expect("serializes"));
        return Ok(report.is_complete());
    }
    for s in &report.storages {
        if let Some(e) = &s.error {
            eprintln!("{}: FAILED: {e}", s.storage);
        }
        for k in &s.restored {
            outln!("{}: {k} restored from an intact copy", s.storage);
        }
        for k in &s.copied {
            outln!("{}: {k} copied from another storage", s.storage);
        }
        for k in &s.quarantined {
            eprintln!("{}: a damaged key file was moved aside to {k}", s.storage);
        }
    }
    for k in &report.lost {
        eprintln!(
            "{k}: no intact copy is left; the passphrase it held opens the repository again once `freezer key add` gives it a new key"
        );
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if !report.changed() {
        outln!("every key file is intact on every storage; nothing was written");
    }
    Ok(report.is_complete())
}

async fn repair_packs(repo: RepoArgs, read_data: bool, out: &Out) -> Result<bool> {
    let mut r = repo.open().await?;
    let opts = RepairPacksOptions { read_data };
    let report =
        freezer_core::engine::repair_packs(&mut r, &opts, &Actor::current(), out.progress_bar())
            .await?;
    out.clear_progress();
    if out.is_json() {
        print_json(&serde_json::to_value(&report).expect("serializes"));
        return Ok(report.is_complete());
    }
    for s in &report.storages {
        match &s.error {
            Some(e) => eprintln!("{}: FAILED: {e}", s.storage),
            None => outln!(
                "{}: {} damaged pack(s), {} pack(s) read; {} index file(s) written, {} removed; {} damage record(s) removed",
                s.storage,
                s.damaged_packs.len(),
                s.packs_read,
                s.index_files_written,
                s.index_files_removed,
                s.records_removed
            ),
        }
        for d in &s.damaged_packs {
            eprintln!("  damaged: {}: {}", d.object, d.error);
        }
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if report.lost_blobs() > 0 {
        outln!(
            "{} blob(s) lost: back up the same data again to store them, then run `freezer check`",
            report.lost_blobs()
        );
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
            outln!("removed the {}", l.describe());
        }
        outln!("{} lock(s) removed", gone.len());
    }
    Ok(true)
}

async fn repair_snapshots(repo: RepoArgs, dry_run: bool, out: &Out) -> Result<bool> {
    let r = repo.open().await?;
    let report = freezer_core::engine::repair_snapshots(&r, &Actor::current(), dry_run).await?;
    if out.is_json() {
        print_json(&serde_json::to_value(&report).expect("serializes"));
        return Ok(report.is_complete());
    }
    for id in &report.quarantined {
        outln!(
            "damaged snapshot {} {} quarantine/snapshots/{id}",
            id.short(),
            if dry_run {
                "would be set aside in"
            } else {
                "set aside in"
            }
        );
    }
    for u in &report.unreadable {
        eprintln!("unreadable, left in place (not damaged; try again): {u}");
    }
    outln!(
        "{} damaged snapshot(s) {}",
        report.quarantined.len(),
        if dry_run {
            "would be set aside (dry run)"
        } else {
            "set aside"
        }
    );
    Ok(report.is_complete())
}
