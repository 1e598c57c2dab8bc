//! What the CLI prints: text for people, one JSON document for machines. Results go to
//! stdout, warnings and damage reports to stderr.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use freezer_core::engine::{BackupResult, Inspection, Progress, RestoreResult};
use freezer_core::job::{ActionOutcome, ActionReport};
use freezer_core::repo::InitReport;
use freezer_core::repo::config::KeyFile;
use freezer_core::repo::snapshot::{Snapshot, SnapshotSummary};
use freezer_core::{Id, TimeZone, local_display};
use indicatif::ProgressBar;
use serde_json::json;

/// `print!` that tolerates a closed stdout ([`freezer_cli::term::write_stdout`]).
macro_rules! out {
    ($($t:tt)*) => { freezer_cli::term::write_stdout(format_args!($($t)*)) };
}

/// `println!` that tolerates a closed stdout ([`freezer_cli::term::write_stdout`]).
macro_rules! outln {
    () => { freezer_cli::term::write_stdout(format_args!("\n")) };
    ($($t:tt)*) => { freezer_cli::term::write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}

pub(crate) use outln;

/// The output of one command.
#[derive(Debug)]
pub struct Out {
    json: bool,
    bar: Mutex<Option<ProgressBar>>,
    /// Whether a job reported an action that failed (exit 1, not 3).
    failed: AtomicBool,
}

/// `1.5 MiB` and friends.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn print_json(v: &serde_json::Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON serializes")
    );
}

impl Out {
    pub fn new(json: bool) -> Self {
        Out {
            json,
            bar: Mutex::new(None),
            failed: AtomicBool::new(false),
        }
    }

    /// Whether a job printed here had an action that failed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Whether one JSON document is printed instead of text.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// A progress receiver (a bar on a terminal).
    pub fn progress_bar(&self) -> Arc<dyn Progress> {
        let (bar, progress) = crate::progress::make();
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = bar;
        progress
    }

    /// Removes the progress bar before printing.
    pub fn clear_progress(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish_and_clear();
        }
    }

    pub fn init(&self, r: &InitReport, encrypted: bool) {
        if self.json {
            print_json(
                &json!({"id": r.id, "created": r.created, "existing": r.existing, "encrypted": encrypted}),
            );
            return;
        }
        for s in &r.created {
            outln!(
                "created repository {} at {s}{}",
                r.id.short(),
                if encrypted {
                    " (encrypted)"
                } else {
                    " (not encrypted)"
                }
            );
        }
        for s in &r.existing {
            outln!("repository {} already at {s}", r.id.short());
        }
    }

    /// Prints an action's outcome; returns whether it was complete.
    pub fn outcome(&self, o: &ActionOutcome) -> bool {
        self.clear_progress();
        match o {
            ActionOutcome::Backup(b) => self.backup(b),
            ActionOutcome::Restore(r) => self.restore(r),
            other => self.other_outcome(other),
        }
        o.is_complete()
    }

    fn backup(&self, r: &BackupResult) {
        let s = &r.snapshot.stats;
        if self.json {
            print_json(&backup_json(r));
            return;
        }
        let id = r
            .snapshot_id
            .map(|i| i.short())
            .unwrap_or_else(|| "(dry run)".into());
        for place in &r.created_repository {
            outln!("created a new repository at {place}");
        }
        outln!(
            "snapshot {id} saved: level {}, {} files ({} new, {} changed, {} unchanged), {} read, {} added in {:.2} s",
            r.snapshot.level,
            s.files,
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            size(s.bytes_read),
            size(s.bytes_added),
            s.duration_secs
        );
        if r.sinks.len() > 1 || r.sinks.iter().any(|x| !x.holds_snapshot) {
            for sink in &r.sinks {
                match (&sink.error, sink.holds_snapshot) {
                    (None, true) => outln!("  {}: holds the snapshot", sink.sink),
                    (Some(e), _) => {
                        eprintln!("  {}: FAILED, does not hold the snapshot: {e}", sink.sink)
                    }
                    (None, false) => eprintln!("  {}: does not hold the snapshot", sink.sink),
                }
            }
        }
        if let Some(rt) = &r.retention {
            outln!(
                "retention: {} snapshot(s) forgotten, {} kept{}",
                rt.forget.forgotten.len(),
                rt.forget.kept,
                rt.prune
                    .as_ref()
                    .map(|p| format!("; prune freed {}", size(p.total.bytes_freed)))
                    .unwrap_or_default()
            );
        }
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
    }

    /// Prints what a copy did; returns whether it is complete.
    pub fn copy(&self, r: &freezer_core::engine::CopyReport) -> bool {
        self.clear_progress();
        if self.json {
            print_json(&serde_json::json!({
                "copied": r.copied.iter().map(|c| {
                    let mut v = backup_json(&c.result);
                    v["source_snapshot_id"] = c.source.to_string().into();
                    v
                }).collect::<Vec<_>>(),
                "skipped": r.skipped.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                "unreadable": r.unreadable,
                "complete": r.is_complete(),
            }));
            return r.is_complete();
        }
        for c in &r.copied {
            out!("{} -> ", c.source.short());
            self.backup(&c.result);
        }
        outln!(
            "{} snapshot(s) copied, {} already there",
            r.copied.len(),
            r.skipped.len()
        );
        for u in &r.unreadable {
            eprintln!("warning: not copied: {u}");
        }
        r.is_complete()
    }

    /// `info` and `admin` outcomes.
    fn other_outcome(&self, o: &ActionOutcome) {
        if self.json {
            print_json(&serde_json::to_value(o).expect("serializes"));
            return;
        }
        match o {
            ActionOutcome::Info { snapshots } => self.summaries(snapshots),
            ActionOutcome::Admin(a) => {
                crate::lifecycle::print_forget(&a.forget);
                if let Some(p) = &a.prune {
                    crate::lifecycle::print_prune(p);
                }
            }
            ActionOutcome::Check(c) => crate::lifecycle::print_check(c),
            ActionOutcome::Prune(p) => crate::lifecycle::print_prune(p),
            ActionOutcome::Exec(e) => {
                out!("{}", e.stdout_tail);
                eprint!("{}", e.stderr_tail);
                outln!(
                    "command `{}` exited with status {} after {:.1}s",
                    e.command.join(" "),
                    e.exit_status,
                    e.duration_secs
                );
            }
            ActionOutcome::Backup(b) => self.backup(b),
            ActionOutcome::Restore(r) => self.restore(r),
            ActionOutcome::TarBackup(b) => {
                outln!(
                    "upstream tar backup {} level {} at {} ({}; {} files, {} bytes read, {} bytes stored){}",
                    b.name,
                    b.level,
                    b.time_stamp,
                    b.data_key,
                    b.files,
                    b.bytes,
                    b.data_bytes,
                    if b.encrypted { ", encrypted" } else { "" }
                );
                for s in b.storages.iter().filter(|s| !s.complete) {
                    eprintln!(
                        "warning: {}: {}",
                        s.storage,
                        s.error.as_deref().unwrap_or("failed")
                    );
                }
                for w in &b.warnings {
                    eprintln!("warning: {w}");
                }
            }
            ActionOutcome::TarRestore(r) => {
                for l in &r.levels {
                    outln!(
                        "restored upstream tar backup {} level {} ({}): {} files, {} bytes",
                        r.name,
                        l.backup.level,
                        l.backup.data_key(),
                        l.stats.files,
                        l.stats.bytes
                    );
                }
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
            }
            ActionOutcome::TarInfo { backups, warnings } => {
                self.upstream_backups(backups);
                for w in warnings {
                    eprintln!("warning: {w}");
                }
            }
            ActionOutcome::TarAdmin(a) => {
                for b in &a.removed {
                    outln!(
                        "{} {} level {} ({})",
                        if a.dry_run { "would remove" } else { "removed" },
                        b.name,
                        b.level,
                        b.time
                    );
                }
                for b in &a.kept_for_newer_levels {
                    outln!(
                        "kept {} level {} ({}): its chain has levels newer than the cutoff",
                        b.name,
                        b.level,
                        b.time
                    );
                }
            }
        }
    }

    /// What a migration from upstream's tar layout did.
    pub fn migrated(&self, r: &freezer_core::upstream::migrate::MigrateReport) {
        if self.json {
            print_json(&serde_json::to_value(r).expect("serializes"));
            return;
        }
        for b in &r.backups {
            outln!(
                "{} {} level {} ({}) -> snapshot {}{}",
                b.hostname,
                b.backup_name,
                b.level,
                b.time_stamp,
                b.snapshot_id.short(),
                if b.existed { " (there already)" } else { "" }
            );
        }
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
    }

    /// Upstream's `tar` backups, one line each, marked as such.
    pub fn upstream_backups(&self, list: &[freezer_core::upstream::run::TarBackupSummary]) {
        for b in list {
            outln!(
                "{}  {:<24} level {:<2} {:<6}{}  [upstream tar]",
                b.time,
                b.name,
                b.level,
                b.compression,
                if b.encrypted { " encrypted" } else { "" }
            );
        }
    }

    /// A Freezer-style listing: time, host, backup name, level, files, size.
    pub fn summaries(&self, list: &[SnapshotSummary]) {
        if self.json {
            print_json(&json!({"snapshots": list}));
            return;
        }
        let tz = TimeZone::system();
        outln!(
            "{:<10} {:<19} {:<20} {:<24} {:>5} {:<7} {:>8} {:>10} {:>10}",
            "ID",
            "TIME",
            "HOSTNAME",
            "BACKUP NAME",
            "LEVEL",
            "MODE",
            "FILES",
            "SIZE",
            "ADDED"
        );
        for s in list {
            outln!(
                "{:<10} {:<19} {:<20} {:<24} {:>5} {:<7} {:>8} {:>10} {:>10}",
                s.id.short(),
                local_display(s.time, &tz),
                s.hostname,
                s.backup_name,
                s.level,
                s.mode,
                s.files,
                size(s.size),
                size(s.added)
            );
        }
    }

    /// The report of a restore whose stream went to stdout: on stderr; returns whether it
    /// was complete.
    pub fn restore_to_stderr(&self, r: &RestoreResult) -> bool {
        self.clear_progress();
        if self.json {
            let mut v = serde_json::to_value(r).expect("serializes");
            v["complete"] = r.is_complete().into();
            eprintln!(
                "{}",
                serde_json::to_string_pretty(&v).expect("JSON serializes")
            );
        } else {
            eprintln!(
                "restored snapshot {} to stdout: {}",
                r.snapshot_id.short(),
                size(r.bytes)
            );
        }
        for w in r.warnings.iter().chain(&r.passed_over) {
            eprintln!("warning: {w}");
        }
        r.is_complete()
    }

    fn restore(&self, r: &RestoreResult) {
        if self.json {
            let mut v = serde_json::to_value(r).expect("serializes");
            v["complete"] = r.is_complete().into();
            print_json(&v);
            return;
        }
        outln!(
            "restored snapshot {}: {} files, {} folders, {} others, {}",
            r.snapshot_id.short(),
            r.files,
            r.dirs,
            r.others,
            size(r.bytes)
        );
        for d in &r.damaged {
            eprintln!("damaged: {}: {}", d.object, d.error);
            for f in &d.files {
                eprintln!("  incomplete: {f}");
            }
        }
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
        for s in &r.skipped {
            eprintln!("skipped: {s}");
        }
        for p in &r.passed_over {
            eprintln!("warning: {p}");
        }
    }

    /// The native snapshots, then upstream's `tar` backups found in the same place.
    pub fn snapshots_and_upstream(
        &self,
        snaps: &[(Id, Snapshot)],
        bad: &[String],
        upstream: &[freezer_core::upstream::run::TarBackupSummary],
    ) {
        if self.json {
            let list = snapshots_json(snaps);
            print_json(&json!({"snapshots": list, "unreadable": bad, "upstream_tar": upstream}));
            for b in bad {
                eprintln!("unreadable snapshot: {b}");
            }
            return;
        }
        if !snaps.is_empty() || upstream.is_empty() {
            self.snapshots(snaps, bad);
        } else {
            for b in bad {
                eprintln!("unreadable snapshot: {b}");
            }
        }
        self.upstream_backups(upstream);
    }

    pub fn snapshots(&self, snaps: &[(Id, Snapshot)], bad: &[String]) {
        if self.json {
            let list = snapshots_json(snaps);
            print_json(&json!({"snapshots": list, "unreadable": bad}));
        } else {
            let list: Vec<SnapshotSummary> = snaps.iter().map(|(id, s)| s.summary(*id)).collect();
            self.summaries(&list);
        }
        for b in bad {
            eprintln!("unreadable snapshot: {b}");
        }
    }

    pub fn show(&self, id: &Id, s: &Snapshot, found: &Inspection) {
        if self.json {
            print_json(&json!({"id": id, "snapshot": s, "inspection": found}));
        } else {
            let tz = TimeZone::system();
            outln!("snapshot    {id}");
            outln!("time        {} ({})", local_display(s.time, &tz), s.time);
            outln!("hostname    {}", s.hostname);
            outln!("backup name {}", s.backup_name);
            outln!("mode        {}", s.mode);
            outln!("level       {}", s.level);
            outln!(
                "parent      {}",
                s.parent
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into())
            );
            outln!("path        {}", s.path_to_backup);
            if let Some(c) = &s.command {
                outln!("command     {c}");
            }
            outln!(
                "files       {} ({}), {} folders",
                found.files,
                size(found.bytes),
                found.dirs
            );
            outln!("chunks      {}", found.blobs);
            outln!(
                "health      {}",
                if found.damaged.is_empty() {
                    if found.read_data {
                        "every chunk read and verified"
                    } else {
                        "every object present (use --read-data to verify contents)"
                    }
                } else {
                    "DAMAGED"
                }
            );
        }
        for d in &found.damaged {
            eprintln!("damaged: {}: {}", d.object, d.error);
            for f in &d.files {
                eprintln!("  affects: {f}");
            }
        }
    }

    pub fn keys(&self, keys: &[(Id, KeyFile, bool)]) {
        if self.json {
            let list: Vec<_> = keys
                .iter()
                .map(|(id, k, cur)| k.summary(id, *cur))
                .collect();
            print_json(&json!({"keys": list}));
            return;
        }
        outln!("  {:<10} {:<32} {:<20} USER", "ID", "CREATED", "HOSTNAME");
        for (id, k, cur) in keys {
            outln!(
                "{} {:<10} {:<32} {:<20} {}",
                if *cur { "*" } else { " " },
                id.short(),
                k.created,
                k.hostname,
                k.username
            );
        }
    }

    pub fn message(&self, what: &str, id: &Id) {
        if self.json {
            print_json(&json!({"result": what, "id": id}));
        } else {
            outln!("{what}: {}", id.short());
        }
    }

    /// Prints a job's warnings and reports; returns whether every action completed, and
    /// remembers whether one failed ([`Out::failed`]).
    pub fn job(&self, reports: &[ActionReport], warnings: &[String]) -> bool {
        self.clear_progress();
        for w in warnings {
            eprintln!("warning: {w}");
        }
        if reports.iter().any(|r| r.outcome.is_err()) {
            self.failed.store(true, Ordering::Relaxed);
        }
        let ok = reports
            .iter()
            .all(|r| r.outcome.as_ref().is_ok_and(|o| o.is_complete()));
        if self.json {
            let list: Vec<serde_json::Value> = reports
                .iter()
                .map(|r| match &r.outcome {
                    Ok(ActionOutcome::Backup(b)) => {
                        let mut v = backup_json(b);
                        v["action"] = "backup".into();
                        v["attempts"] = r.attempts.into();
                        v
                    }
                    Ok(o) => {
                        let mut v = serde_json::to_value(o).expect("serializes");
                        v["attempts"] = r.attempts.into();
                        v
                    }
                    Err(e) => json!({"error": e, "attempts": r.attempts}),
                })
                .collect();
            print_json(&json!({"actions": list, "complete": ok, "warnings": warnings}));
            return ok;
        }
        for (i, r) in reports.iter().enumerate() {
            match &r.outcome {
                Ok(o) => match o {
                    ActionOutcome::Backup(b) => self.backup(b),
                    ActionOutcome::Restore(x) => self.restore(x),
                    other => self.other_outcome(other),
                },
                Err(e) => eprintln!(
                    "action {}: failed after {} attempt(s): {e}",
                    i + 1,
                    r.attempts
                ),
            }
        }
        ok
    }
}

fn backup_json(r: &BackupResult) -> serde_json::Value {
    let s = &r.snapshot.stats;
    json!({
        "snapshot_id": r.snapshot_id,
        "level": r.snapshot.level,
        "files": s.files,
        "bytes_read": s.bytes_read,
        "bytes_added": s.bytes_added,
        "complete": r.is_complete(),
        "sinks": r.sinks,
        "warnings": r.warnings,
        "snapshot": r.snapshot,
        "retention": r.retention,
        "created_repository": r.created_repository,
        "memory": r.memory,
    })
}

/// Snapshots as `--json` lists them: each one's fields and its `id`.
fn snapshots_json(snaps: &[(Id, Snapshot)]) -> Vec<serde_json::Value> {
    snaps
        .iter()
        .map(|(id, s)| {
            let mut v = serde_json::to_value(s).expect("serializes");
            v["id"] = json!(id);
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_well() {
        assert_eq!(super::size(0), "0 B");
        assert_eq!(super::size(1536), "1.5 KiB");
        assert_eq!(super::size(5 << 30), "5.0 GiB");
    }
}
