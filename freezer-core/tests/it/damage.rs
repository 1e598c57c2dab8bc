//! Damaged and missing objects: every problem is named with the files it touches, and
//! everything else still restores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use freezer_core::Id;
use freezer_core::engine::{RestoreOptions, inspect};

use crate::support::*;

fn id_of(path: &Path) -> Id {
    Id::from_hex(path.file_name().unwrap().to_str().unwrap()).unwrap()
}

/// Checks that every file of `data` that the restore did not report damaged is identical.
fn intact_except(data: &Path, target: &Path, damaged: &[String]) {
    let source = fingerprint(data);
    let restored = fingerprint(target);
    for (rel, v) in &source {
        let rel_s = rel.to_string_lossy();
        if damaged.iter().any(|d| d == &rel_s) {
            assert!(
                target.join(rel).exists(),
                "damaged {rel_s} is still created"
            );
            continue;
        }
        // A damaged tree is reported by its folder: what is below it is missing.
        if damaged.iter().any(|d| rel_s.starts_with(&format!("{d}/"))) {
            continue;
        }
        assert_eq!(
            restored.get(rel),
            Some(v),
            "{rel_s} was not reported damaged but differs"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_in_any_pack_is_named_and_the_rest_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("corpus"), tmp.path().join("repo"));
    corpus(&data, 6, 3);
    init_small_packs(vec![local(&repo_dir)], Some("pw")).await;
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    let snap_id = backup_dir(&mut repo, &data, "c").await.snapshot_id.unwrap();
    let snap = repo.snapshots().await.unwrap().0.remove(0).1;
    repo.load_index().await.unwrap();
    let packs = pack_files(&repo_dir);
    assert!(packs.len() >= 4, "{} packs", packs.len());
    for (n, pack) in packs.iter().enumerate() {
        let pack_id = id_of(pack);
        // Flip a byte in the middle of the first blob of this pack.
        let index = repo.index();
        let pos = index.pack_pos(&pack_id).expect("indexed");
        let (_, loc) = index
            .blobs()
            .find_map(|(id, locs)| locs.iter().find(|l| l.pack == pos).map(|l| (id, *l)))
            .unwrap();
        let original = std::fs::read(pack).unwrap();
        let mut bad = original.clone();
        bad[(loc.offset + loc.length / 2) as usize] ^= 0x20;
        std::fs::write(pack, &bad).unwrap();

        let target = tmp.path().join(format!("out{n}"));
        let mut r = open(&[&repo_dir], Some("pw")).await;
        r.load_index().await.unwrap();
        // By default a restore with holes is an error, naming a damaged file...
        let strict = freezer_core::engine::restore(
            &r,
            snap_id,
            &snap,
            &RestoreOptions::new(tmp.path().join(format!("strict{n}"))),
            Arc::new(freezer_core::engine::NoProgress),
        )
        .await
        .expect_err("a restore that leaves damaged files is not Ok by default");
        // ...and with `accept_partial` the report names them all.
        let mut partial = RestoreOptions::new(&target);
        partial.accept_partial = true;
        match freezer_core::engine::restore(
            &r,
            snap_id,
            &snap,
            &partial,
            Arc::new(freezer_core::engine::NoProgress),
        )
        .await
        {
            Ok(out) => {
                assert_eq!(
                    strict.kind(),
                    freezer_core::ErrorKind::Incomplete,
                    "{strict}"
                );
                let first = out.damaged[0].files.first().expect("a damaged file");
                assert!(
                    strict.to_string().contains(first.as_str())
                        && strict.to_string().contains("accept_partial"),
                    "{strict}"
                );
                assert!(
                    !out.damaged.is_empty(),
                    "pack {n}: a flipped byte went unnoticed"
                );
                let named: Vec<&String> = out.damaged.iter().map(|d| &d.object).collect();
                assert!(
                    named
                        .iter()
                        .any(|o| o.contains(&pack_id.to_hex()) || o.starts_with("tree ")),
                    "{named:?} do not name pack {pack_id}"
                );
                let files: Vec<String> = out.damaged.iter().flat_map(|d| d.files.clone()).collect();
                assert!(!files.is_empty());
                // A file left unfinished (a write refused: the disk full...) is a warning, not
                // damage: none is expected here, and one would say why a file differs.
                assert!(out.warnings.is_empty(), "pack {n}: {:?}", out.warnings);
                intact_except(&data, &target, &files);
                let found = inspect(&r, snap_id, &snap, true).await.unwrap();
                assert!(
                    !found.damaged.is_empty(),
                    "inspect --read-data missed pack {n}"
                );
            }
            // The top tree itself is unreadable: nothing can be restored, and the error says why.
            Err(e) => {
                assert_eq!(strict.to_string(), e.to_string());
                assert!(
                    e.to_string().contains("top tree") && e.to_string().contains("corrupt"),
                    "{e}"
                )
            }
        }
        std::fs::write(pack, &original).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_pack_is_named_without_reading_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("corpus"), tmp.path().join("repo"));
    corpus(&data, 6, 4);
    init_small_packs(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let snap_id = backup_dir(&mut repo, &data, "c").await.snapshot_id.unwrap();
    let snap = repo.snapshots().await.unwrap().0.remove(0).1;
    repo.load_index().await.unwrap();
    // A data pack: one that holds no tree.
    let data_pack: PathBuf = pack_files(&repo_dir)
        .into_iter()
        .find(|p| {
            let pos = repo.index().pack_pos(&id_of(p)).unwrap();
            repo.index().blobs().all(|(_, locs)| {
                locs.iter()
                    .all(|l| l.pack != pos || l.kind == freezer_core::repo::pack::BlobType::Data)
            })
        })
        .unwrap();
    std::fs::remove_file(&data_pack).unwrap();
    let found = inspect(&repo, snap_id, &snap, false).await.unwrap();
    assert_eq!(found.damaged.len(), 1, "{:?}", found.damaged);
    assert!(
        found.damaged[0]
            .object
            .contains(&id_of(&data_pack).to_hex())
    );
    assert!(found.damaged[0].error.contains("missing"));
    let target = tmp.path().join("out");
    let out = restore_id(&mut repo, snap_id, &target).await;
    assert_eq!(out.damaged.len(), 1, "{:?}", out.damaged);
    assert_eq!(out.damaged[0].files, found.damaged[0].files);
    intact_except(&data, &target, &out.damaged[0].files);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_snapshot_is_listed_as_unreadable_and_others_still_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    init(vec![local(&repo_dir)], Some("pw")).await;
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    let a = backup_dir(&mut repo, &data, "a").await.snapshot_id.unwrap();
    let b = backup_dir(&mut repo, &data, "b").await.snapshot_id.unwrap();
    let path = repo_dir.join("snapshots").join(a.to_hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let (good, bad) = repo.snapshots().await.unwrap();
    assert_eq!(good.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [b]);
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].contains(&a.to_hex()) && bad[0].contains("corrupt"),
        "{bad:?}"
    );
    let out = restore_id(&mut repo, b, &tmp.path().join("out")).await;
    assert!(out.is_complete());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_index_loses_no_data_on_the_next_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    init(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let first = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    std::fs::remove_dir_all(repo_dir.join("index")).unwrap();
    let mut repo = open(&[&repo_dir], None).await;
    // Without an index, the old snapshot's data cannot be found, and restore says so...
    let snap = repo.snapshots().await.unwrap().0.remove(0).1;
    repo.load_index().await.unwrap();
    let err = freezer_core::engine::restore(
        &repo,
        first,
        &snap,
        &RestoreOptions::new(tmp.path().join("old")),
        Arc::new(freezer_core::engine::NoProgress),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("top tree") && err.to_string().contains("in no index"),
        "{err}"
    );
    // ...but it is never assumed present: the next backup stores everything again.
    let second = backup_dir(&mut repo, &data, "n").await;
    assert!(second.snapshot.stats.bytes_read > 0);
    let target = tmp.path().join("new");
    let out = restore_id(&mut repo, second.snapshot_id.unwrap(), &target).await;
    assert!(out.is_complete(), "{out:?}");
    assert_same_tree(&data, &target, true);
}
