//! Backup and restore through the library API.

use std::sync::Arc;

use freezer_core::engine::{BackupOptions, NoProgress, RestoreOptions, backup, restore};
use freezer_core::repo::Repository;
use freezer_core::repo::snapshot::{SnapshotSelector, select};
use freezer_core::source::fs::{FsOptions, FsSource};

use crate::support::*;

async fn restore_latest(
    repo: &Repository,
    target: &std::path::Path,
) -> freezer_core::engine::RestoreResult {
    let snaps = repo.snapshots().await.unwrap().0;
    let (id, snap) = select(
        &snaps,
        &SnapshotSelector::Latest {
            hostname: "test-host".into(),
            backup_name: "n".into(),
        },
    )
    .unwrap();
    restore(
        repo,
        *id,
        snap,
        &RestoreOptions::new(target),
        Arc::new(NoProgress),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_corners_round_trip_encrypted_and_plain() {
    for passphrase in [Some("pw"), None] {
        let tmp = tempfile::tempdir().unwrap();
        let (data, repo_dir, target) = (
            tmp.path().join("data"),
            tmp.path().join("repo"),
            tmp.path().join("out"),
        );
        odd_tree(&data);
        init(vec![local(&repo_dir)], passphrase).await;
        let mut repo = Repository::open(vec![local(&repo_dir)], passphrase.map(pass).as_ref())
            .await
            .unwrap();
        let src = Arc::new(FsSource::new(&data, &FsOptions::default()).unwrap());
        let res = backup(
            &mut repo,
            src,
            &BackupOptions::new("test-host", "n", actor()),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        assert!(res.is_complete(), "{res:?}");
        assert_eq!(res.snapshot.stats.files, 7, "{:?}", res.snapshot.stats);
        let out = restore_latest(&repo, &target).await;
        assert!(out.is_complete(), "{out:?}");
        assert_same_tree(&data, &target, true);
    }
}
