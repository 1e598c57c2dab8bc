//! `copy`: snapshots move between independent repositories (other keys, other pack sizes,
//! other storages) with their series, times and levels; only what the target lacks is sent;
//! a repeated copy does nothing; damage in the source is named, never copied silently.

use std::sync::Arc;

use freezer_core::engine::{CopyOptions, NoProgress, copy};
use freezer_core::repo::Repository;

use crate::support::*;

async fn copy_all(from: &mut Repository, to: &mut Repository) -> freezer_core::engine::CopyReport {
    copy(from, to, &CopyOptions::new(actor()), Arc::new(NoProgress))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_copy_between_repositories_with_their_history() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    corpus(&data, 6, 21);
    odd_tree(&data.join("odd-tree"));
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init(vec![local(&a)], Some("pw-a")).await;
    init_small_packs(vec![local(&b)], Some("pw-b")).await;
    let mut ra = open(&[&a], Some("pw-a")).await;
    let mut ids = vec![];
    for seed in 0..3 {
        if seed > 0 {
            mutate(&data, 5, seed);
        }
        ids.push(backup_dir(&mut ra, &data, "web").await.snapshot_id.unwrap());
    }
    let mut rb = open(&[&b], Some("pw-b")).await;
    let report = copy_all(&mut ra, &mut rb).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.copied.len(), 3);
    assert_eq!(
        report.copied.iter().map(|c| c.source).collect::<Vec<_>>(),
        ids,
        "oldest first"
    );
    // Same series, times and levels; each copy restores exactly what its original does.
    let src = ra.snapshots().await.unwrap().0;
    let dst = rb.snapshots().await.unwrap().0;
    assert_eq!(dst.len(), 3);
    for c in &report.copied {
        let (_, s) = src.iter().find(|(i, _)| *i == c.source).unwrap();
        let new_id = c.result.snapshot_id.unwrap();
        let (_, d) = dst.iter().find(|(i, _)| *i == new_id).unwrap();
        assert_eq!(
            (
                &d.time,
                &d.hostname,
                &d.backup_name,
                d.level,
                &d.path_to_backup
            ),
            (
                &s.time,
                &s.hostname,
                &s.backup_name,
                s.level,
                &s.path_to_backup
            )
        );
        let (x, y) = (
            tmp.path().join(format!("from-a-{}", c.source.short())),
            tmp.path().join(format!("from-b-{}", c.source.short())),
        );
        assert!(restore_id(&mut ra, c.source, &x).await.is_complete());
        assert!(restore_id(&mut rb, new_id, &y).await.is_complete());
        assert_same_tree(&x, &y, true);
    }
    // The later copies trusted the earlier ones: unchanged files were not read again.
    let total = report.copied[0].result.snapshot.stats.bytes_read;
    assert!(
        report.copied[2].result.snapshot.stats.bytes_read < total / 2,
        "{:?}",
        report.copied[2].result.snapshot.stats
    );

    // Again: nothing to do, nothing written.
    let before = du(&b);
    let again = copy_all(&mut ra, &mut rb).await;
    assert!(
        again.copied.is_empty() && again.skipped.len() == 3,
        "{again:?}"
    );
    assert_eq!(du(&b), before);

    // One new backup: only it is copied.
    mutate(&data, 5, 9);
    let newest = backup_dir(&mut ra, &data, "web").await.snapshot_id.unwrap();
    let next = copy_all(&mut ra, &mut rb).await;
    assert_eq!(next.copied.len(), 1);
    assert_eq!(next.copied[0].source, newest);
    assert_eq!(next.skipped.len(), 3);
    let out = tmp.path().join("newest");
    let id = next.copied[0].result.snapshot_id.unwrap();
    assert!(restore_id(&mut rb, id, &out).await.is_complete());
    assert_same_tree(&data, &out, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_source_is_named_and_the_copy_is_incomplete() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    corpus(&data, 4, 22);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init_small_packs(vec![local(&a)], None).await;
    init(vec![local(&b)], Some("pw")).await;
    let mut ra = open(&[&a], None).await;
    backup_dir(&mut ra, &data, "c").await;
    // Lose one data pack of the source (the largest: tree packs are small).
    let mut packs = pack_files(&a);
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let lost = packs.last().unwrap().clone();
    std::fs::remove_file(&lost).unwrap();
    let mut ra = open(&[&a], None).await;
    let mut rb = open(&[&b], Some("pw")).await;
    let report = copy_all(&mut ra, &mut rb).await;
    assert!(!report.is_complete());
    let warnings = &report.copied[0].result.warnings;
    let lost_name = lost.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        !warnings.is_empty()
            && warnings
                .iter()
                .all(|w| w.starts_with("not backed up: ") && w.contains(&lost_name)),
        "every file of the lost pack is named with it: {warnings:?}"
    );
    // A wrong passphrase for the target is refused before anything is read.
    let e = Repository::open(vec![local(&b)], Some(&pass("wrong")))
        .await
        .unwrap_err();
    assert!(matches!(e, freezer_core::Error::WrongKey { .. }), "{e}");
}
