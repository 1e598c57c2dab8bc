//! Restores never taken for what they are not: a file is under its final name only once its
//! content is written, an interrupted restore resumes, an unreadable snapshot is named and can
//! be set aside, a file whose size lies is read to its end.

use std::path::Path;
use std::sync::Arc;

use freezer_core::engine::{forget_ids, repair_snapshots};
use freezer_core::repo::Repository;
use freezer_core::repo::snapshot::SnapshotSelector;
use freezer_core::{Error, Id};

use crate::support::*;

fn files(data: &Path) {
    std::fs::create_dir_all(data.join("sub")).unwrap();
    for i in 0..6u64 {
        std::fs::write(
            data.join(format!("sub/f{i}.bin")),
            pseudo_random(2 << 20, 60 + i),
        )
        .unwrap();
    }
    std::fs::write(data.join("small"), "small").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_cut_short_by_its_storage_leaves_no_wrong_file_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    files(&data);
    init_small_packs(vec![local(&repo_dir)], Some("pw")).await;
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    let id = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    // The largest pack holds file content; reading it fails as over a dropped connection.
    let pack = pack_files(&repo_dir)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let key = pack.strip_prefix(&repo_dir).unwrap().to_str().unwrap();
    let key: &'static str = Box::leak(key.to_string().into_boxed_str());
    let flaky = Flaky::failing_reads_under(local(&repo_dir), key);
    let mut cut = Repository::open(vec![flaky], Some(&pass("pw")))
        .await
        .unwrap();
    let target = tmp.path().join("out");
    let first = restore_id(&mut cut, id, &target).await;
    assert!(!first.is_complete());
    let mut missing = 0;
    for (rel, (len, hash)) in fingerprint(&data) {
        match std::fs::read(target.join(&rel)) {
            Ok(b) => assert!(
                b.len() as u64 == len && *blake3::hash(&b).as_bytes() == hash,
                "{} is under its final name with wrong content",
                rel.display()
            ),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
                missing += 1;
            }
        }
    }
    assert!(missing > 0, "some files needed the pack that failed");
    assert!(
        first.warnings.iter().any(|w| w.contains("again")),
        "the report says how to finish: {:?}",
        first.warnings
    );
    // The same restore again, with the storage back: it finishes what was left, and only that.
    let second = restore_id(&mut repo, id, &target).await;
    assert!(second.is_complete(), "{second:?}");
    assert!(second.bytes > 0 && second.bytes < first.bytes + second.bytes);
    assert!(
        second.bytes <= (missing as u64) * (2 << 20),
        "{}",
        second.bytes
    );
    assert_same_tree(&data, &target, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_snapshot_is_named_and_forget_or_repair_set_it_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    init(vec![local(&repo_dir)], Some("pw")).await;
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    let a = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    let b = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    let c = backup_dir(&mut repo, &data, "other")
        .await
        .snapshot_id
        .unwrap();
    let corrupt = |id: Id| {
        let path = repo_dir.join("snapshots").join(id.to_hex());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
    };
    corrupt(b);
    corrupt(c);
    let listing = repo.snapshot_listing().await.unwrap();
    let latest = SnapshotSelector::Latest {
        hostname: "test-host".into(),
        backup_name: "n".into(),
    };
    match listing.select(&latest, false) {
        Err(Error::Corrupt { what, .. }) => assert!(
            what.contains(&b.to_hex()) || what.contains(&c.to_hex()),
            "{what}"
        ),
        other => panic!("{other:?}"),
    }
    let (chosen, passed_over) = listing.select(&latest, true).unwrap();
    assert_eq!(chosen.0, a);
    assert_eq!(passed_over.len(), 2, "{passed_over:?}");
    match listing.select(&SnapshotSelector::Id(b.to_hex()[..12].into()), false) {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains(&b.to_hex()), "{what}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        listing.select(&SnapshotSelector::Id("ffffffffffff".into()), false),
        Err(Error::NotFound { .. })
    ));

    // Prune is blocked; forgetting b by its id sets it aside, repair does c.
    let opts = freezer_core::engine::PruneOptions::default();
    assert!(
        freezer_core::engine::prune(
            &mut repo,
            &opts,
            &actor(),
            Arc::new(freezer_core::engine::NoProgress)
        )
        .await
        .is_err()
    );
    let report = forget_ids(&repo, &[b.to_hex()[..10].to_string()], &actor(), false)
        .await
        .unwrap();
    assert_eq!(report.quarantined, [b]);
    assert!(
        repo_dir
            .join("quarantine/snapshots")
            .join(b.to_hex())
            .exists()
    );
    assert!(
        freezer_core::engine::prune(
            &mut repo,
            &opts,
            &actor(),
            Arc::new(freezer_core::engine::NoProgress)
        )
        .await
        .is_err()
    );
    let dry = repair_snapshots(&repo, &actor(), true).await.unwrap();
    assert_eq!(dry.quarantined, [c]);
    assert!(
        repo_dir.join("snapshots").join(c.to_hex()).exists(),
        "a dry run moves nothing"
    );
    let done = repair_snapshots(&repo, &actor(), false).await.unwrap();
    assert_eq!(done.quarantined, [c]);
    let pruned = freezer_core::engine::prune(
        &mut repo,
        &opts,
        &actor(),
        Arc::new(freezer_core::engine::NoProgress),
    )
    .await
    .unwrap();
    assert!(pruned.is_complete());
    let out = restore_id(&mut repo, a, &tmp.path().join("out")).await;
    assert!(out.is_complete());
    assert_same_tree(&data, &tmp.path().join("out"), true);
    // A readable snapshot forgotten by id is deleted, not set aside.
    let report = forget_ids(&repo, &[a.to_hex()], &actor(), false)
        .await
        .unwrap();
    assert_eq!(report.forgotten, [a]);
    assert!(report.quarantined.is_empty());
    assert!(
        !repo_dir
            .join("quarantine/snapshots")
            .join(a.to_hex())
            .exists()
    );
    assert!(matches!(
        forget_ids(&repo, &["abcdef".into()], &actor(), false).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_whose_size_lies_is_stored_as_read() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    init(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    // procfs says 0 bytes; tar reads on to the end.
    let id = backup_dir(&mut repo, Path::new("/proc/self/status"), "proc")
        .await
        .snapshot_id
        .unwrap();
    let target = tmp.path().join("out");
    let r = restore_id(&mut repo, id, &target).await;
    assert!(r.is_complete(), "{r:?}");
    let text = std::fs::read_to_string(target.join("status")).unwrap();
    assert!(
        text.starts_with("Name:") && text.contains("\nPid:"),
        "{text:?}"
    );
}
