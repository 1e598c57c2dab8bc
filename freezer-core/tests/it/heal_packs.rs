//! A backup never deduplicates against a pack that is missing, truncated or known to be
//! damaged; `check` records what it finds damaged, `repair packs` drops it from the index, and
//! a new backup heals the repository.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use freezer_core::Id;
use freezer_core::engine::{
    BackupOptions, BackupResult, CheckOptions, CheckReport, NoProgress, ReadData, backup, check,
    forget_ids, repair_packs,
};
use freezer_core::repo::Repository;
use freezer_core::repo::pack::BlobType;
use freezer_core::source::fs::FsSource;

use crate::support::*;

#[derive(Clone, Copy, Debug)]
enum Harm {
    Delete,
    Truncate,
    Flip,
}

fn id_of(path: &Path) -> Id {
    Id::from_hex(path.file_name().unwrap().to_str().unwrap()).unwrap()
}

/// A pack holding only data blobs.
fn data_pack(repo: &Repository, repo_dir: &Path) -> PathBuf {
    let index = repo.index();
    pack_files(repo_dir)
        .into_iter()
        .find(|p| {
            let pos = index.pack_pos(&id_of(p)).expect("indexed");
            index.blobs().all(|(_, locs)| {
                locs.iter()
                    .all(|l| l.pack != pos || l.kind == BlobType::Data)
            })
        })
        .expect("a data pack")
}

fn harm(pack: &Path, how: Harm) {
    match how {
        Harm::Delete => std::fs::remove_file(pack).unwrap(),
        Harm::Truncate => {
            let len = std::fs::metadata(pack).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(pack).unwrap();
            f.set_len(len / 2).unwrap();
        }
        Harm::Flip => {
            // Inside the first blob: the size stays, only reading finds it.
            let mut b = std::fs::read(pack).unwrap();
            b[100] ^= 0x10;
            std::fs::write(pack, b).unwrap();
        }
    }
}

/// Backs up `data` as series `c`: incrementally from the latest snapshot, or reading
/// everything again (`--no-incremental`).
async fn backup_as(repo: &mut Repository, data: &Path, incremental: bool) -> BackupResult {
    if incremental {
        return backup_dir(repo, data, "c").await;
    }
    let src = Arc::new(FsSource::new(data, &Default::default()).unwrap());
    backup(
        repo,
        src,
        &BackupOptions::new("test-host", "c", actor()),
        Arc::new(NoProgress),
    )
    .await
    .unwrap()
}

async fn run_check(repo: &mut Repository, read_data: ReadData) -> CheckReport {
    let mut o = CheckOptions::new(actor());
    o.read_data = read_data;
    check(repo, &o, Arc::new(NoProgress)).await.unwrap()
}

/// Restores snapshot `id` and asserts it equals `data`, byte for byte.
async fn restores_whole(repo: &mut Repository, id: Id, data: &Path, target: &Path) {
    let r = restore_id(repo, id, target).await;
    assert!(r.damaged.is_empty(), "{:?}", r.damaged);
    assert_eq!(fingerprint(data), fingerprint(target), "snapshot {id}");
}

/// Every object key of a local repository (temporary files left out).
fn objects(repo_dir: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if !e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(repo_dir, repo_dir, &mut out);
    out
}

fn under(set: &BTreeSet<String>, prefix: &str) -> BTreeSet<String> {
    set.iter()
        .filter(|k| k.starts_with(prefix))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_after_a_pack_is_deleted_or_truncated_restores_whole() {
    for (n, (how, incremental)) in [
        (Harm::Delete, false),
        (Harm::Delete, true),
        (Harm::Truncate, false),
        (Harm::Truncate, true),
    ]
    .into_iter()
    .enumerate()
    {
        let tmp = tempfile::tempdir().unwrap();
        let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
        corpus(&data, 4, n as u32);
        let pass = (n % 2 == 0).then_some("pw");
        init_small_packs(vec![local(&repo_dir)], pass).await;
        let mut repo = open(&[&repo_dir], pass).await;
        backup_as(&mut repo, &data, false).await;
        let pack = data_pack(&repo, &repo_dir);
        harm(&pack, how);

        let again = backup_as(&mut repo, &data, incremental).await;
        let name = id_of(&pack).to_string();
        assert!(
            again
                .warnings
                .iter()
                .any(|w| w.contains(&name) && w.contains("freezer check")),
            "{how:?}: {:?}",
            again.warnings
        );
        assert!(again.snapshot.stats.blobs_added > 0, "{how:?}");
        assert!(
            again.snapshot.warnings.is_empty(),
            "{how:?}: about the repository, not the snapshot"
        );
        let target = tmp.path().join("out");
        restores_whole(&mut repo, again.snapshot_id.unwrap(), &data, &target).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_found_by_check_is_stored_again_and_repair_packs_heals() {
    for pass in [Some("pw"), None] {
        let tmp = tempfile::tempdir().unwrap();
        let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
        corpus(&data, 4, 7);
        init_small_packs(vec![local(&repo_dir)], pass).await;
        let mut repo = open(&[&repo_dir], pass).await;
        let first = backup_as(&mut repo, &data, false)
            .await
            .snapshot_id
            .unwrap();
        let pack = data_pack(&repo, &repo_dir);
        harm(&pack, Harm::Flip);

        let found = run_check(&mut repo, ReadData::All).await;
        let object = format!(
            "pack {} on {}",
            id_of(&pack),
            repo.tee().member(0).describe()
        );
        assert!(
            found.damaged.iter().any(|d| d.object == object),
            "{:#?}",
            found.damaged
        );
        assert_eq!(
            objects(&repo_dir)
                .iter()
                .filter(|k| k.starts_with("damaged/"))
                .count(),
            1
        );
        // A second check finds the same: it does not pile up records.
        run_check(&mut repo, ReadData::All).await;
        assert_eq!(under(&objects(&repo_dir), "damaged/").len(), 1);

        let second = backup_as(&mut repo, &data, false).await;
        assert!(
            second
                .warnings
                .iter()
                .any(|w| w.contains(&id_of(&pack).to_string())),
            "{:?}",
            second.warnings
        );
        assert_eq!(
            second.snapshot.stats.blobs_added, 1,
            "the damaged blob only"
        );
        restores_whole(
            &mut repo,
            second.snapshot_id.unwrap(),
            &data,
            &tmp.path().join("out2"),
        )
        .await;

        let before = objects(&repo_dir);
        let fixed = repair_packs(
            &mut repo,
            &Default::default(),
            &actor(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        assert!(fixed.is_complete(), "{fixed:?}");
        let after = objects(&repo_dir);
        // Nothing but the index files listing the damaged pack and the record went; the
        // damaged pack stays, outside the index.
        let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
        assert!(
            gone.iter()
                .all(|k| k.starts_with("index/") || k.starts_with("damaged/")),
            "{gone:?}"
        );
        assert!(gone.iter().any(|k| k.starts_with("damaged/")));
        assert!(under(&after, "damaged/").is_empty());
        assert!(
            after.contains(
                &pack
                    .strip_prefix(&repo_dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            )
        );
        assert!(!has_lock(&repo_dir));

        let healed = run_check(&mut repo, ReadData::All).await;
        assert!(healed.is_ok(), "{:#?}", healed.damaged);
        // The first snapshot shares the blob stored again: it restores too.
        restores_whole(&mut repo, first, &data, &tmp.path().join("out1")).await;
        // Nothing left to record, nothing more to store.
        let third = backup_as(&mut repo, &data, false).await;
        assert!(third.warnings.is_empty(), "{:?}", third.warnings);
        assert_eq!(third.snapshot.stats.blobs_added, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_repair_packs_check_names_the_snapshots_that_lost_data_and_its_advice_heals() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    corpus(&data, 4, 11);
    init_small_packs(vec![local(&repo_dir)], Some("pw")).await;
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    let first = backup_as(&mut repo, &data, false)
        .await
        .snapshot_id
        .unwrap();
    let pack = data_pack(&repo, &repo_dir);
    harm(&pack, Harm::Delete);

    let found = run_check(&mut repo, ReadData::None).await;
    assert!(!found.is_ok());
    let advice = found.advice();
    assert!(advice[0].contains("`freezer repair packs`"), "{advice:?}");
    assert!(
        advice[1].contains("back up the same data again"),
        "{advice:?}"
    );
    assert!(advice[2].contains(&first.short()), "{advice:?}");

    // The data changes before the next backup: the lost blobs are not stored again.
    std::fs::remove_dir_all(&data).unwrap();
    corpus(&data, 2, 12);
    let fixed = repair_packs(
        &mut repo,
        &Default::default(),
        &actor(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(fixed.lost_blobs() > 0, "{fixed:?}");
    let second = backup_as(&mut repo, &data, true).await;
    assert!(
        second.warnings.is_empty(),
        "repaired: {:?}",
        second.warnings
    );
    let still = run_check(&mut repo, ReadData::All).await;
    // Only the first snapshot needs what is gone: it is named, with the step that heals.
    assert!(!still.is_ok());
    for d in &still.damaged {
        assert!(d.object.starts_with("blob "), "{d:?}");
        assert_eq!(d.snapshots, [first], "{d:?}");
    }
    let advice = still.advice();
    assert!(
        advice.last().unwrap().contains("`freezer forget <id>`"),
        "{advice:?}"
    );
    forget_ids(&repo, &[first.short()], &actor(), false)
        .await
        .unwrap();
    let healed = run_check(&mut repo, ReadData::All).await;
    assert!(healed.is_ok(), "{:#?}", healed.damaged);
    assert!(healed.advice().is_empty());
    restores_whole(
        &mut repo,
        second.snapshot_id.unwrap(),
        &data,
        &tmp.path().join("out"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_pack_keeps_its_intact_blobs_and_the_advice_heals() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    corpus(&data, 4, 13);
    init_small_packs(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let first = backup_as(&mut repo, &data, false)
        .await
        .snapshot_id
        .unwrap();
    let pack = data_pack(&repo, &repo_dir);
    harm(&pack, Harm::Truncate);
    let found = run_check(&mut repo, ReadData::None).await;
    let before = objects(&repo_dir);
    // The steps, in order: repair packs, back up again; then check passes.
    assert_eq!(found.advice().len(), 3, "{:?}", found.advice());
    let fixed = repair_packs(
        &mut repo,
        &Default::default(),
        &actor(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let p = &fixed.storages[0].damaged_packs[0];
    assert!(p.error.starts_with("truncated"), "{p:?}");
    let after = objects(&repo_dir);
    for k in before.difference(&after) {
        assert!(
            k.starts_with("index/") || k.starts_with("damaged/"),
            "{k} deleted"
        );
    }
    backup_as(&mut repo, &data, true).await;
    let healed = run_check(&mut repo, ReadData::All).await;
    assert!(healed.is_ok(), "{:#?}", healed.damaged);
    restores_whole(&mut repo, first, &data, &tmp.path().join("out")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_two_storages_blobs_are_stored_again_only_where_the_pack_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    corpus(&data, 4, 17);
    init_small_packs(vec![local(&a), local(&b)], Some("pw")).await;
    let mut repo = open(&[&a, &b], Some("pw")).await;
    backup_as(&mut repo, &data, false).await;
    let pack = data_pack(&repo, &b);
    harm(&pack, Harm::Delete);
    let (packs_a, packs_b) = (pack_files(&a).len(), pack_files(&b).len());
    let again = backup_as(&mut repo, &data, false).await;
    assert!(
        again.sinks.iter().all(|s| s.holds_snapshot),
        "{:?}",
        again.sinks
    );
    assert!(
        again
            .warnings
            .iter()
            .any(|w| w.contains(&id_of(&pack).to_string())
                && w.contains(&repo.tee().member(1).describe())),
        "{:?}",
        again.warnings
    );
    assert_eq!(
        pack_files(&a).len(),
        packs_a,
        "nothing new on the intact storage"
    );
    assert!(pack_files(&b).len() > packs_b);
    // The damaged storage alone restores the new snapshot.
    let mut only_b = open(&[&b], Some("pw")).await;
    restores_whole(
        &mut only_b,
        again.snapshot_id.unwrap(),
        &data,
        &tmp.path().join("out"),
    )
    .await;
    let fixed = repair_packs(
        &mut repo,
        &Default::default(),
        &actor(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(fixed.storages[0].damaged_packs.is_empty());
    assert_eq!(fixed.storages[1].damaged_packs.len(), 1);
    let healed = run_check(&mut repo, ReadData::All).await;
    assert!(healed.is_ok(), "{:#?}", healed.damaged);
}
