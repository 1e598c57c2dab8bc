//! The lifecycle through the job runner, as the CLI and the scheduler drive it: incremental
//! levels over days (with an injected clock), retention by the `admin` action followed by a
//! prune, and a prune that meets a running backup.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use freezer_core::Timestamp;
use freezer_core::engine::{BackupResult, PruneOptions};
use freezer_core::job::{Action, ActionOutcome, FreezerAction, RunContext, run_action};
use freezer_core::policy::Retention;

use crate::support::*;

const DAY: i64 = 86_400;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_795_000_000 + seconds).unwrap()
}

fn backup_action(repo: &Path, data: &Path, name: &str) -> FreezerAction {
    FreezerAction {
        action: Some(Action::Backup),
        path_to_backup: Some(data.display().to_string()),
        backup_name: Some(name.into()),
        hostname: Some("node1".into()),
        storage: Some("local".into()),
        container: Some(repo.display().to_string()),
        ..FreezerAction::default()
    }
}

fn ctx_at(t: Timestamp) -> RunContext {
    let mut c = RunContext::current();
    c.now = Some(t);
    c.tz = freezer_core::TimeZone::UTC;
    c
}

async fn run_backup(a: &FreezerAction, t: Timestamp) -> BackupResult {
    match run_action(a, &ctx_at(t)).await.unwrap() {
        ActionOutcome::Backup(b) => {
            assert!(b.is_complete(), "{b:?}");
            *b
        }
        other => panic!("not a backup: {other:?}"),
    }
}

/// Twenty files of 8 KiB; `touch(n)` rewrites file n with new content.
fn files(data: &Path) {
    std::fs::create_dir_all(data).unwrap();
    for i in 0..20 {
        std::fs::write(data.join(format!("f{i:02}")), pseudo_random(8192, i)).unwrap();
    }
}

fn touch(data: &Path, n: u64, round: u64) {
    std::fs::write(
        data.join(format!("f{n:02}")),
        pseudo_random(8192 + round as usize, 1000 + round),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn levels_follow_upstreams_options_over_days() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, data) = (tmp.path().join("repo"), tmp.path().join("data"));
    files(&data);
    init(vec![local(&repo)], None).await;
    let total: u64 = 20 * 8192;

    // max_level 3: 0,1,2,3,0,... A level 0 reads every file; a higher level only the one that
    // changed since its parent.
    let mut a = backup_action(&repo, &data, "max");
    a.max_level = Some(3);
    let mut levels = vec![];
    for day in 0..9u64 {
        if day > 0 {
            touch(&data, day % 20, day);
        }
        let r = run_backup(&a, at(day as i64 * DAY)).await;
        let s = &r.snapshot.stats;
        levels.push(r.snapshot.level);
        if r.snapshot.level == 0 {
            assert_eq!(r.snapshot.parent, None);
            assert_eq!(s.files_unmodified, 0, "a level 0 trusts nothing: {s:?}");
            assert!(s.bytes_read >= total, "a level 0 reads every file: {s:?}");
        } else {
            assert!(r.snapshot.parent.is_some());
            assert_eq!(s.files_unmodified, 19, "{s:?}");
            assert_eq!(s.files_changed, 1, "{s:?}");
            assert!(
                s.bytes_read < 3 * 8192,
                "only the changed file is read: {s:?}"
            );
        }
    }
    assert_eq!(levels, [0, 1, 2, 3, 0, 1, 2, 3, 0]);

    // always_level 2: 0,1,2,2,2, each level 2 made from the newest level 1 (differential):
    // it reads every file changed since that level 1.
    let mut a = backup_action(&repo, &data, "always");
    a.always_level = Some(2);
    let mut got = vec![];
    for day in 0..5u64 {
        if day > 0 {
            touch(&data, day, 100 + day);
        }
        let r = run_backup(&a, at(20 * DAY + day as i64 * DAY)).await;
        got.push((r.snapshot.level, r.snapshot.stats.files_changed));
    }
    // Day 2 changed f02 since the level 1 of day 1; day 3 changed f02 and f03 since then...
    assert_eq!(got, [(0, 0), (1, 1), (2, 1), (2, 2), (2, 3)]);

    // restart_always_level 1 with always_level 2, every 8 hours: a new level 0 once the
    // chain's level 0 is more than a day old.
    let mut a = backup_action(&repo, &data, "restart");
    a.always_level = Some(2);
    a.restart_always_level = Some(1.0);
    let mut got = vec![];
    for i in 0..8i64 {
        got.push(
            run_backup(&a, at(40 * DAY + i * 8 * 3600))
                .await
                .snapshot
                .level,
        );
    }
    assert_eq!(got, [0, 1, 2, 2, 0, 1, 2, 2]);

    // incremental off: every backup a level 0 that reads everything.
    let mut a = backup_action(&repo, &data, "full");
    a.incremental = Some(false);
    for i in 0..3 {
        let r = run_backup(&a, at(50 * DAY + i * DAY)).await;
        assert_eq!(r.snapshot.level, 0);
        assert_eq!(r.snapshot.stats.files_unmodified, 0);
    }

    // Bad combinations are refused, naming the option.
    let mut a = backup_action(&repo, &data, "bad");
    a.incremental = Some(false);
    a.max_level = Some(2);
    let e = run_action(&a, &ctx_at(at(60 * DAY))).await.unwrap_err();
    assert!(e.to_string().contains("max_level"), "{e}");
}

/// Sixty daily backups, each with a file of its own; the admin action keeps 7 daily, 4 weekly
/// and 3 monthly snapshots and prunes; every kept snapshot restores exactly.
#[tokio::test(flavor = "multi_thread")]
async fn admin_retention_then_prune_keeps_every_kept_snapshot_restorable() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, data) = (tmp.path().join("repo"), tmp.path().join("data"));
    files(&data);
    init_small_packs(vec![local(&repo)], None).await;
    let b = backup_action(&repo, &data, "daily");
    let mut by_day = std::collections::BTreeMap::new();
    for day in 0..60i64 {
        std::fs::write(
            data.join("today"),
            pseudo_random(96 * 1024, 5000 + day as u64),
        )
        .unwrap();
        let r = run_backup(&b, at(day * DAY)).await;
        by_day.insert(r.snapshot_id.unwrap(), day);
    }
    let before = du(&repo.join("data"));

    // What the policy keeps, decided by the same rules on the listing.
    let rules = Retention {
        keep_daily: Some(7),
        keep_weekly: Some(4),
        keep_monthly: Some(3),
        ..Retention::default()
    };
    let listing = open(&[&repo], None).await.snapshots().await.unwrap().0;
    let expected: std::collections::BTreeSet<_> = rules
        .apply(&listing, at(60 * DAY), &freezer_core::TimeZone::UTC)
        .unwrap()
        .into_iter()
        .filter(|d| d.keep)
        .map(|d| d.id)
        .collect();
    assert!((9..=14).contains(&expected.len()), "{}", expected.len());

    // A dry run changes nothing.
    let mut admin = FreezerAction {
        action: Some(Action::Admin),
        keep_daily: Some(7),
        keep_weekly: Some(4),
        keep_monthly: Some(3),
        dry_run: true,
        ..backup_action(&repo, &data, "daily")
    };
    let keys_before = all_bytes(&repo).len();
    let ActionOutcome::Admin(dry) = run_action(&admin, &ctx_at(at(60 * DAY))).await.unwrap() else {
        panic!("not an admin outcome")
    };
    assert_eq!(dry.forget.forgotten.len(), 60 - expected.len());
    assert!(dry.prune.is_none());
    assert_eq!(all_bytes(&repo).len(), keys_before);

    admin.dry_run = false;
    let ActionOutcome::Admin(done) = run_action(&admin, &ctx_at(at(60 * DAY))).await.unwrap()
    else {
        panic!("not an admin outcome")
    };
    let prune = done.prune.as_ref().expect("pruned after forgetting");
    assert!(prune.is_complete(), "{prune:?}");
    assert!(prune.total.bytes_freed > 0, "{prune:?}");
    let after = du(&repo.join("data"));
    assert!(after < before * 2 / 3, "{before} -> {after}");

    let mut r = open(&[&repo], None).await;
    let left = r.snapshots().await.unwrap().0;
    let left_ids: std::collections::BTreeSet<_> = left.iter().map(|(i, _)| *i).collect();
    assert_eq!(left_ids, expected);
    for (id, _) in &left {
        let target = tmp.path().join(format!("out-{}", id.short()));
        let out = restore_id(&mut r, *id, &target).await;
        assert!(out.is_complete(), "{out:?}");
        let day = by_day[id];
        assert_eq!(
            std::fs::read(target.join("today")).unwrap(),
            pseudo_random(96 * 1024, 5000 + day as u64),
            "day {day}"
        );
        assert_eq!(
            std::fs::read(target.join("f05")).unwrap(),
            pseudo_random(8192, 5)
        );
    }

    // check and prune as actions (extensions), as a scheduled job runs them.
    let check = FreezerAction {
        action: Some(Action::Check),
        read_data: Some("1/2".into()),
        ..backup_action(&repo, &data, "daily")
    };
    let ActionOutcome::Check(c) = run_action(&check, &ctx_at(at(61 * DAY))).await.unwrap() else {
        panic!("not a check outcome")
    };
    assert!(c.is_ok(), "{:?}", c.damaged);
    assert!(c.packs_read > 0 && c.packs_read < c.packs, "{c:?}");
    let prune = FreezerAction {
        action: Some(Action::Prune),
        max_unused: Some("0%".into()),
        dry_run: true,
        ..backup_action(&repo, &data, "daily")
    };
    let ActionOutcome::Prune(p) = run_action(&prune, &ctx_at(at(61 * DAY))).await.unwrap() else {
        panic!("not a prune outcome")
    };
    assert!(p.dry_run && p.is_complete(), "{p:?}");
    for (field, bad) in [
        (
            "read_data",
            FreezerAction {
                read_data: Some("7/3".into()),
                ..check.clone()
            },
        ),
        (
            "max_unused",
            FreezerAction {
                max_unused: Some("150%".into()),
                ..prune.clone()
            },
        ),
    ] {
        let e = run_action(&bad, &ctx_at(at(61 * DAY))).await.unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
    }

    // An admin action without a rule is refused before anything runs.
    let bare = FreezerAction {
        action: Some(Action::Admin),
        ..backup_action(&repo, &data, "daily")
    };
    let e = run_action(&bare, &ctx_at(at(61 * DAY))).await.unwrap_err();
    assert!(e.to_string().contains("retention rule"), "{e}");
}

/// Upstream's agent runs retention after a backup that carries `remove_older_than`: so does
/// the job runner, for the backup's own series only.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_with_remove_older_than_applies_it_to_its_series() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, data) = (tmp.path().join("repo"), tmp.path().join("data"));
    files(&data);
    init_small_packs(vec![local(&repo)], None).await;
    let other = backup_action(&repo, &data, "other");
    run_backup(&other, at(0)).await;
    let mut a = backup_action(&repo, &data, "web");
    a.remove_older_than = Some(2.5);
    for day in 0..6i64 {
        std::fs::write(
            data.join("today"),
            pseudo_random(64 * 1024, 9000 + day as u64),
        )
        .unwrap();
        let r = run_backup(&a, at(day * DAY)).await;
        let rt = r.retention.as_ref().expect("retention ran");
        // Backups of days day-2..=day are newer than 2.5 days.
        assert_eq!(rt.forget.kept, (day as usize + 1).min(3), "day {day}");
        assert_eq!(
            rt.forget.forgotten.len(),
            usize::from(day >= 3),
            "day {day}"
        );
        assert_eq!(rt.prune.is_some(), day >= 3, "day {day}");
    }
    let snaps = open(&[&repo], None).await.snapshots().await.unwrap().0;
    let names: Vec<&str> = snaps.iter().map(|(_, s)| s.backup_name.as_str()).collect();
    assert_eq!(names.iter().filter(|n| **n == "web").count(), 3);
    assert_eq!(
        names.iter().filter(|n| **n == "other").count(),
        1,
        "other series untouched"
    );
}

/// A prune started while a (slowed) backup runs waits for the backup's lock, then both succeed
/// and every snapshot, the new one included, restores.
#[tokio::test(flavor = "multi_thread")]
async fn prune_while_a_backup_runs_both_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, data) = (tmp.path().join("repo"), tmp.path().join("data"));
    files(&data);
    init_small_packs(vec![local(&repo)], None).await;
    let b = backup_action(&repo, &data, "web");
    for day in 0..4i64 {
        std::fs::write(
            data.join("today"),
            pseudo_random(256 * 1024, 7000 + day as u64),
        )
        .unwrap();
        run_backup(&b, at(day * DAY)).await;
    }
    // Forget two snapshots, so the prune has work.
    let mut forget = freezer_core::engine::ForgetOptions::new(
        Retention {
            keep_last: Some(2),
            ..Retention::default()
        },
        actor(),
    );
    forget.now = Some(at(4 * DAY));
    let r = open(&[&repo], None).await;
    assert_eq!(
        freezer_core::engine::forget(&r, &forget)
            .await
            .unwrap()
            .forgotten
            .len(),
        2
    );

    // A backup of 3 MiB of new data at 1 MiB/s, and a prune started once its lock is there.
    std::fs::write(data.join("big"), pseudo_random(3 << 20, 7777)).unwrap();
    let mut slow = backup_action(&repo, &data, "web");
    slow.upload_limit = Some("1M".into());
    let backup = tokio::spawn(async move { run_backup(&slow, at(5 * DAY)).await });
    for _ in 0..200 {
        if has_lock(&repo) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut r = open(&[&repo], None).await;
    r.set_lock_wait(Duration::from_secs(120));
    let started = std::time::Instant::now();
    let pruned = freezer_core::engine::prune(
        &mut r,
        &PruneOptions::default(),
        &actor(),
        Arc::new(freezer_core::engine::NoProgress),
    )
    .await
    .unwrap();
    // The backup sends 3 MiB at 1 MiB/s: the prune, started just after it, waited its turn.
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "the prune waited for the backup's lock: {:?}",
        started.elapsed()
    );
    let done = backup.await.unwrap();
    assert!(pruned.is_complete(), "{pruned:?}");
    assert!(pruned.total.bytes_freed > 0, "{pruned:?}");

    let mut r = open(&[&repo], None).await;
    let snaps = r.snapshots().await.unwrap().0;
    assert_eq!(snaps.len(), 3);
    assert!(snaps.iter().any(|(i, _)| Some(*i) == done.snapshot_id));
    for (id, _) in &snaps {
        let target = tmp.path().join(format!("out-{}", id.short()));
        let out = restore_id(&mut r, *id, &target).await;
        assert!(out.is_complete(), "{out:?}");
    }
    assert_same_tree(
        &data,
        &tmp.path()
            .join(format!("out-{}", done.snapshot_id.unwrap().short())),
        false,
    );
    // Without waiting, a prune meeting a live backup lock fails at once and names it.
    let mut slow = backup_action(&repo, &data, "web");
    slow.upload_limit = Some("1M".into());
    std::fs::write(data.join("big"), pseudo_random(3 << 20, 8888)).unwrap();
    let backup = tokio::spawn(async move { run_backup(&slow, at(6 * DAY)).await });
    for _ in 0..200 {
        if has_lock(&repo) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut r = open(&[&repo], None).await;
    r.set_lock_wait(Duration::ZERO);
    let e = freezer_core::engine::prune(
        &mut r,
        &PruneOptions::default(),
        &actor(),
        Arc::new(freezer_core::engine::NoProgress),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, freezer_core::Error::Locked { .. }), "{e}");
    assert!(e.to_string().contains("backup"), "{e}");
    backup.await.unwrap();
}
