//! `check` and `repair index` against real repositories made by real backups: every kind of
//! damage is found and named with the snapshots and files it touches, nothing else is, and a
//! lost index comes back from the packs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use freezer_core::engine::{
    CheckDamage, CheckOptions, CheckReport, NoProgress, ReadData, check, inspect, repair_index,
};
use freezer_core::repo::Repository;
use freezer_core::repo::index::IndexFile;
use freezer_core::repo::pack::BlobType;
use freezer_core::{Error, Id};

use crate::support::*;

fn id_of(path: &Path) -> Id {
    Id::from_hex(path.file_name().unwrap().to_str().unwrap()).unwrap()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

async fn run_check(repo: &mut Repository, read_data: ReadData) -> CheckReport {
    let mut o = CheckOptions::new(actor());
    o.read_data = read_data;
    check(repo, &o, Arc::new(NoProgress)).await.unwrap()
}

/// The damage named `object`, or a failure listing what was found.
fn find<'a>(report: &'a CheckReport, object: &str) -> &'a CheckDamage {
    report
        .damaged
        .iter()
        .find(|d| d.object == object)
        .unwrap_or_else(|| panic!("{object} not named in {:#?}", report.damaged))
}

/// Asserts that every file a damage names is a file of what was backed up.
fn names_real_files(d: &CheckDamage, data: &Path) {
    assert!(!d.files.is_empty(), "{d:?} names no file");
    for f in &d.files {
        assert!(
            f == "." || data.join(f).symlink_metadata().is_ok(),
            "{f} is not in {}",
            data.display()
        );
    }
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

fn storage(repo: &Repository, i: usize) -> String {
    repo.tee().member(i).describe()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_repository_checks_clean_and_every_pack_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    init_small_packs(vec![local(&repo_dir)], Some("pw")).await;
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    backup_dir(&mut repo, &data, "n").await;
    std::fs::write(data.join("dir/new.txt"), "new").unwrap();
    backup_dir(&mut repo, &data, "n").await;

    let r = run_check(&mut repo, ReadData::None).await;
    assert!(r.is_ok(), "{:#?}", r.damaged);
    let packs = pack_files(&repo_dir);
    assert_eq!(r.snapshots, 2);
    assert_eq!(r.index_files, 2);
    assert_eq!(r.packs as usize, packs.len());
    assert_eq!(r.packs_checked as usize, packs.len());
    assert!(r.trees >= 6 && r.blobs >= 5, "{r:?}");
    assert_eq!((r.packs_read, r.bytes_read), (0, 0));
    assert!(
        r.unreferenced_packs.is_empty(),
        "{:?}",
        r.unreferenced_packs
    );

    let r = run_check(&mut repo, ReadData::All).await;
    assert!(r.is_ok(), "{:#?}", r.damaged);
    assert_eq!(r.packs_read as usize, packs.len());
    let bytes: u64 = packs.iter().map(|p| p.metadata().unwrap().len()).sum();
    assert_eq!(r.bytes_read, bytes);
    assert_eq!(r.read_data, "all");
    // The check's shared lock is gone, and an exclusive one keeps it out.
    assert!(files_in(&repo_dir.join("locks")).is_empty());
    let held = repo.lock(true, "prune", &actor()).await.unwrap();
    // Locks are waited for (10 minutes by default); this one must fail at once.
    repo.set_lock_wait(std::time::Duration::ZERO);
    let err = check(&mut repo, &CheckOptions::new(actor()), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    held.release().await.unwrap();
    // The report is what the CLI prints.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["packs_read"], packs.len());
    assert!(json["damaged"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_is_found_by_the_subset_reading_its_pack_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("corpus"), tmp.path().join("repo"));
    corpus(&data, 6, 3);
    init_small_packs(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let snap_id = backup_dir(&mut repo, &data, "c").await.snapshot_id.unwrap();
    repo.load_index().await.unwrap();
    let pack = data_pack(&repo, &repo_dir);
    let pack_id = id_of(&pack);
    let pos = repo.index().pack_pos(&pack_id).unwrap();
    let loc = repo
        .index()
        .blobs()
        .find_map(|(_, locs)| locs.iter().find(|l| l.pack == pos).copied())
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[(loc.offset + loc.length / 2) as usize] ^= 0x20;
    std::fs::write(&pack, &bytes).unwrap();

    // The structure is intact: only reading the data finds it.
    let r = run_check(&mut repo, ReadData::None).await;
    assert!(r.is_ok(), "{:#?}", r.damaged);
    let r = run_check(&mut repo, ReadData::All).await;
    assert_eq!(r.damaged.len(), 1, "{:#?}", r.damaged);
    let d = find(&r, &format!("pack {pack_id} on {}", storage(&repo, 0)));
    assert!(d.error.contains("does not match"), "{}", d.error);
    assert_eq!(d.snapshots, [snap_id]);
    names_real_files(d, &data);
    // The same files a snapshot inspection names: those of the damaged blob only.
    let snap = repo.read_snapshot(&snap_id).await.unwrap();
    let inspected = inspect(&repo, snap_id, &snap, true).await.unwrap();
    assert_eq!(inspected.damaged.len(), 1, "{:?}", inspected.damaged);
    assert_eq!(d.files, inspected.damaged[0].files);

    // Slices 1/4 .. 4/4 read every pack once; only the slice holding the pack finds it.
    let packs = pack_files(&repo_dir);
    let mut read = 0;
    for n in 1..=4 {
        let slice = ReadData::Subset { n, m: 4 };
        let r = run_check(&mut repo, slice).await;
        let expected = packs.iter().filter(|p| slice.selects(&id_of(p))).count();
        assert_eq!(r.packs_read as usize, expected, "{slice}");
        read += r.packs_read as usize;
        assert_eq!(
            !r.is_ok(),
            slice.selects(&pack_id),
            "{slice}: {:?}",
            r.damaged
        );
    }
    assert_eq!(read, packs.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_pack_is_found_without_reading_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("corpus"), tmp.path().join("repo"));
    corpus(&data, 6, 4);
    init_small_packs(vec![local(&repo_dir)], Some("pw")).await;
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    let snap_id = backup_dir(&mut repo, &data, "c").await.snapshot_id.unwrap();
    repo.load_index().await.unwrap();
    let pack = data_pack(&repo, &repo_dir);
    let len = pack.metadata().unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let r = run_check(&mut repo, ReadData::None).await;
    assert_eq!(r.damaged.len(), 1, "{:#?}", r.damaged);
    let d = find(
        &r,
        &format!("pack {} on {}", id_of(&pack), storage(&repo, 0)),
    );
    assert!(d.error.contains("truncated"), "{}", d.error);
    assert_eq!(d.snapshots, [snap_id]);
    names_real_files(d, &data);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_pack_is_named_with_every_snapshot_and_file_it_touches() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("corpus"), tmp.path().join("repo"));
    corpus(&data, 6, 5);
    init_small_packs(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let a = backup_dir(&mut repo, &data, "c").await.snapshot_id.unwrap();
    let b = backup_dir(&mut repo, &data, "c").await.snapshot_id.unwrap();
    repo.load_index().await.unwrap();
    let pack = data_pack(&repo, &repo_dir);
    std::fs::remove_file(&pack).unwrap();

    let r = run_check(&mut repo, ReadData::None).await;
    assert_eq!(r.damaged.len(), 1, "{:#?}", r.damaged);
    let d = find(
        &r,
        &format!("pack {} on {}", id_of(&pack), storage(&repo, 0)),
    );
    assert!(d.error.contains("missing"), "{}", d.error);
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(d.snapshots, both);
    // Every file that has a blob in the pack: what inspect names for each snapshot.
    let snap = repo.read_snapshot(&a).await.unwrap();
    let inspected = inspect(&repo, a, &snap, false).await.unwrap();
    assert_eq!(d.files, inspected.damaged[0].files);
    names_real_files(d, &data);
}

/// Two backups of one series, the second after adding files: it lists what did not change
/// through the first backup's index file. Returns the data, the repository, the snapshots,
/// the first index file and the fingerprint of the data at the first backup.
struct TwoBackups {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    repo_dir: PathBuf,
    first: Id,
    second: Id,
    first_index: PathBuf,
    first_files: std::collections::BTreeMap<PathBuf, (u64, [u8; 32])>,
}

async fn two_backups(passphrase: Option<&str>) -> TwoBackups {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    init(vec![local(&repo_dir)], passphrase).await;
    let mut repo = open(&[&repo_dir], passphrase).await;
    let first = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    let first_files = fingerprint(&data);
    let first_index = files_in(&repo_dir.join("index")).remove(0);
    std::fs::write(data.join("dir/new.txt"), "new").unwrap();
    std::fs::create_dir(data.join("newdir")).unwrap();
    std::fs::write(data.join("newdir/x"), pseudo_random(100_000, 9)).unwrap();
    let second = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    assert_eq!(files_in(&repo_dir.join("index")).len(), 2);
    TwoBackups {
        _tmp: tmp,
        data,
        repo_dir,
        first,
        second,
        first_index,
        first_files,
    }
}

/// With the first backup's index file lost, what the second snapshot did not re-store is
/// named: files in the unchanged root by their blobs, an unchanged folder by its tree, and
/// the first snapshot by its top tree.
fn lost_first_index_is_named(r: &CheckReport, t: &TwoBackups) {
    let script = r
        .damaged
        .iter()
        .find(|d| d.object.starts_with("blob ") && d.files.contains(&"script.sh".to_string()))
        .unwrap_or_else(|| panic!("no blob names script.sh: {:#?}", r.damaged));
    assert_eq!(script.error, "in no index");
    assert_eq!(script.snapshots, [t.second]);
    assert!(script.files.contains(&"hardlink.sh".to_string()));
    let sub = r
        .damaged
        .iter()
        .find(|d| d.object.starts_with("tree ") && d.files == ["dir/sub"])
        .unwrap_or_else(|| panic!("no tree names dir/sub: {:#?}", r.damaged));
    assert_eq!(sub.snapshots, [t.second]);
    assert!(
        r.damaged
            .iter()
            .any(|d| d.object.starts_with("tree ") && d.snapshots == [t.first] && d.files == ["."]),
        "{:#?}",
        r.damaged
    );
    for d in r.damaged.iter().filter(|d| !d.object.starts_with("index ")) {
        names_real_files(d, &t.data);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_index_file_is_named_and_repair_index_brings_everything_back() {
    let t = two_backups(Some("pw")).await;
    std::fs::remove_file(&t.first_index).unwrap();
    let mut repo = open(&[&t.repo_dir], Some("pw")).await;
    let r = run_check(&mut repo, ReadData::None).await;
    assert!(!r.is_ok());
    lost_first_index_is_named(&r, &t);
    // Its packs are still there, listed by no index.
    assert!(!r.unreferenced_packs.is_empty());

    let fixed = repair_index(&mut repo, &actor(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(fixed.is_complete(), "{fixed:?}");
    let s = &fixed.storages[0];
    assert_eq!(s.packs_indexed as usize, pack_files(&t.repo_dir).len());
    assert!(s.damaged_packs.is_empty(), "{:?}", s.damaged_packs);
    assert_eq!((s.index_files_written, s.index_files_removed), (1, 1));
    assert_eq!(files_in(&t.repo_dir.join("index")).len(), 1);
    assert!(files_in(&t.repo_dir.join("locks")).is_empty());

    let r = run_check(&mut repo, ReadData::All).await;
    assert!(r.is_ok(), "{:#?}", r.damaged);
    assert!(r.unreferenced_packs.is_empty());
    assert_eq!(r.blobs, s.blobs - r.trees, "every blob listed is used");

    let out = restore_id(&mut repo, t.second, &t.data.with_file_name("second")).await;
    assert!(out.is_complete(), "{out:?}");
    assert_same_tree(&t.data, &t.data.with_file_name("second"), true);
    let out = restore_id(&mut repo, t.first, &t.data.with_file_name("first")).await;
    assert!(out.is_complete(), "{out:?}");
    assert_eq!(fingerprint(&t.data.with_file_name("first")), t.first_files);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_index_file_is_named_and_so_is_what_it_listed() {
    let t = two_backups(None).await;
    let mut bytes = std::fs::read(&t.first_index).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&t.first_index, bytes).unwrap();
    let mut repo = open(&[&t.repo_dir], None).await;
    let r = run_check(&mut repo, ReadData::None).await;
    let d = find(
        &r,
        &format!("index {} on {}", id_of(&t.first_index), storage(&repo, 0)),
    );
    assert_eq!(d.error, "content does not match its name");
    lost_first_index_is_named(&r, &t);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tree_missing_from_the_index_is_named_by_its_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    init(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let snap_id = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    repo.load_index().await.unwrap();
    // The tree of dir/sub.
    let snap = repo.read_snapshot(&snap_id).await.unwrap();
    let top = repo.read_tree(&snap.tree).await.unwrap();
    let mut tree = top.nodes[0].subtree.unwrap();
    for name in ["dir", "sub"] {
        let t = repo.read_tree(&tree).await.unwrap();
        tree = t
            .nodes
            .iter()
            .find(|n| n.name == name.as_bytes())
            .and_then(|n| n.subtree)
            .unwrap();
    }
    // Rewrite the index without it, as a lost entry would leave it.
    let old = files_in(&repo_dir.join("index")).remove(0);
    let plain =
        freezer_core::repo::object::decode(repo.crypto(), &std::fs::read(&old).unwrap(), "index")
            .unwrap();
    let mut file = IndexFile::decode(&plain, "index").unwrap();
    let before: usize = file.packs.iter().map(|(_, b)| b.len()).sum();
    for (_, blobs) in &mut file.packs {
        blobs.retain(|b| b.id != tree);
    }
    assert_eq!(
        file.packs.iter().map(|(_, b)| b.len()).sum::<usize>(),
        before - 1
    );
    repo.write_index(&file, 1).await.unwrap();
    std::fs::remove_file(&old).unwrap();

    for read_data in [ReadData::None, ReadData::All] {
        let r = run_check(&mut repo, read_data).await;
        assert_eq!(r.damaged.len(), 1, "{read_data}: {:#?}", r.damaged);
        let d = find(&r, &format!("tree {tree}"));
        assert_eq!(d.error, "in no index");
        assert_eq!(d.snapshots, [snap_id]);
        assert_eq!(d.files, ["dir/sub"]);
    }
    let fixed = repair_index(&mut repo, &actor(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(fixed.storages[0].blobs as usize, before);
    let r = run_check(&mut repo, ReadData::All).await;
    assert!(r.is_ok(), "{:#?}", r.damaged);
    // Repairing again writes the same index file (no encryption: same bytes, same name),
    // which must not be removed as an old one.
    let again = repair_index(&mut repo, &actor(), Arc::new(NoProgress))
        .await
        .unwrap();
    let s = &again.storages[0];
    assert_eq!((s.index_files_written, s.index_files_removed), (1, 0));
    assert_eq!(files_in(&repo_dir.join("index")).len(), 1);
    assert!(run_check(&mut repo, ReadData::None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_snapshot_is_named_and_the_others_check_clean() {
    let t = two_backups(Some("pw")).await;
    let path = t.repo_dir.join("snapshots").join(t.first.to_hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let mut repo = open(&[&t.repo_dir], Some("pw")).await;
    let r = run_check(&mut repo, ReadData::All).await;
    assert_eq!(r.damaged.len(), 1, "{:#?}", r.damaged);
    let d = find(
        &r,
        &format!("snapshot {} on {}", t.first, storage(&repo, 0)),
    );
    assert_eq!(d.error, "content does not match its name");
    assert_eq!(d.snapshots, [t.first]);
    assert_eq!(r.snapshots, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreferenced_packs_are_reported_but_are_no_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, other, repo_dir) = (
        tmp.path().join("data"),
        tmp.path().join("other"),
        tmp.path().join("repo"),
    );
    odd_tree(&data);
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("big"), pseudo_random(3 << 20, 11)).unwrap();
    init(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    backup_dir(&mut repo, &data, "a").await;
    let kept: BTreeSet<PathBuf> = pack_files(&repo_dir).into_iter().collect();
    let index_a = files_in(&repo_dir.join("index"));
    // A backup interrupted after its packs: they are all it left.
    let b = backup_dir(&mut repo, &other, "b")
        .await
        .snapshot_id
        .unwrap();
    std::fs::remove_file(repo_dir.join("snapshots").join(b.to_hex())).unwrap();
    for f in files_in(&repo_dir.join("index")) {
        if !index_a.contains(&f) {
            std::fs::remove_file(f).unwrap();
        }
    }
    let name = storage(&repo, 0);
    let mut left: Vec<String> = pack_files(&repo_dir)
        .into_iter()
        .filter(|p| !kept.contains(p))
        .map(|p| format!("pack {} on {name}", id_of(&p)))
        .collect();
    assert!(!left.is_empty());
    std::fs::create_dir_all(repo_dir.join("data/zz")).unwrap();
    std::fs::write(repo_dir.join("data/zz/stray"), "not a pack").unwrap();
    left.push(format!("data/zz/stray on {name}"));
    left.sort();

    let r = run_check(&mut repo, ReadData::All).await;
    assert!(r.is_ok(), "{:#?}", r.damaged);
    assert_eq!(r.unreferenced_packs, left);
    assert_eq!(r.packs_read as usize, kept.len());

    // repair index lists them again; the stray object is named and left alone.
    let fixed = repair_index(&mut repo, &actor(), Arc::new(NoProgress))
        .await
        .unwrap();
    let s = &fixed.storages[0];
    assert_eq!(s.packs_indexed as usize, left.len() - 1 + kept.len());
    assert_eq!(s.damaged_packs.len(), 1, "{:?}", s.damaged_packs);
    assert_eq!(s.damaged_packs[0].object, "data/zz/stray");
    let r = run_check(&mut repo, ReadData::None).await;
    assert!(r.is_ok());
    assert_eq!(r.unreferenced_packs, [format!("data/zz/stray on {name}")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_storage_of_a_tee_is_checked_and_repaired_on_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, a, b) = (
        tmp.path().join("corpus"),
        tmp.path().join("a"),
        tmp.path().join("b"),
    );
    corpus(&data, 4, 6);
    init_small_packs(vec![local(&a), local(&b)], Some("pw")).await;
    let mut repo = open(&[&a, &b], Some("pw")).await;
    let snap_id = backup_dir(&mut repo, &data, "c").await.snapshot_id.unwrap();
    let r = run_check(&mut repo, ReadData::All).await;
    assert!(r.is_ok(), "{:#?}", r.damaged);
    let packs = pack_files(&a).len();
    assert_eq!(r.packs_read as usize, 2 * packs, "each copy is read");
    assert_eq!(r.index_files, 2);

    // A pack lost on b only: named on b, with what a restore from b alone would miss.
    let pack = data_pack(&repo, &b);
    std::fs::remove_file(&pack).unwrap();
    let r = run_check(&mut repo, ReadData::All).await;
    assert_eq!(r.damaged.len(), 1, "{:#?}", r.damaged);
    let d = find(
        &r,
        &format!("pack {} on {}", id_of(&pack), storage(&repo, 1)),
    );
    assert_eq!(d.snapshots, [snap_id]);
    names_real_files(d, &data);
    assert_eq!(r.packs_read as usize, 2 * packs - 1);

    // Repaired, b's index no longer lists it: its blobs are named as missing on b alone.
    let fixed = repair_index(&mut repo, &actor(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(fixed.storages[0].packs_indexed as usize, packs);
    assert_eq!(fixed.storages[1].packs_indexed as usize, packs - 1);
    let r = run_check(&mut repo, ReadData::None).await;
    assert!(!r.damaged.is_empty());
    let on_b = format!(" on {}", storage(&repo, 1));
    for d in &r.damaged {
        assert!(
            d.object.starts_with("blob ") && d.object.ends_with(&on_b),
            "{d:?}"
        );
        assert!(d.error.contains("another storage holds it"), "{}", d.error);
        assert_eq!(d.snapshots, [snap_id]);
        names_real_files(d, &data);
    }
    // a alone is whole.
    let mut alone = open(&[&a], Some("pw")).await;
    assert!(run_check(&mut alone, ReadData::All).await.is_ok());
    let target = tmp.path().join("out");
    let out = restore_id(&mut alone, snap_id, &target).await;
    assert!(out.is_complete(), "{out:?}");
    assert_same_tree(&data, &target, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_keys_and_configs_are_named_per_storage_and_lock_nobody_else_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, a, b) = (
        tmp.path().join("data"),
        tmp.path().join("a"),
        tmp.path().join("b"),
    );
    odd_tree(&data);
    init(vec![local(&a), local(&b)], Some("pw")).await;
    let mut repo = open(&[&a, &b], Some("pw")).await;
    backup_dir(&mut repo, &data, "n").await;
    let second = repo
        .add_key(&pass("pw"), &pass("other"), Default::default(), &actor())
        .await
        .unwrap();
    let opened = repo.key_id().unwrap();
    assert!(run_check(&mut repo, ReadData::None).await.is_ok());

    // The second key damaged on a; the key "pw" opens deleted from b; b's config changed.
    let key_file = a.join("keys").join(second.to_string());
    let bytes = std::fs::read(&key_file).unwrap();
    std::fs::write(&key_file, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(b.join("keys").join(opened.to_string())).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config")).unwrap()).unwrap();
    config["pack_size"] = (1 << 20).into();
    std::fs::write(b.join("config"), config.to_string()).unwrap();

    let r = run_check(&mut repo, ReadData::None).await;
    assert_eq!(r.damaged.len(), 3, "{:#?}", r.damaged);
    let d = find(&r, &format!("key {second} on {}", storage(&repo, 0)));
    assert!(d.error.contains("does not match its name"), "{}", d.error);
    let d = find(&r, &format!("key {opened} on {}", storage(&repo, 1)));
    assert!(d.error.contains("cannot be opened alone"), "{}", d.error);
    let d = find(&r, &format!("config on {}", storage(&repo, 1)));
    assert!(d.error.contains("differs"), "{}", d.error);

    // The damaged key locks out only its own passphrase; "pw" still opens a.
    open(&[&a], Some("pw")).await;
    let e = Repository::open(vec![local(&a)], Some(&pass("other")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongKey { .. }), "{e}");
    assert!(e.to_string().contains("damaged"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn repair_salvages_the_blobs_of_a_pack_whose_header_is_damaged() {
    salvage_a_damaged_header(Some("pw")).await;
}

/// Without encryption the pack rebuilt from every blob is the original, under the same name:
/// it is written over the damaged one, which must then not be deleted.
#[tokio::test(flavor = "multi_thread")]
async fn an_unencrypted_pack_salvaged_whole_is_written_again_under_its_name() {
    salvage_a_damaged_header(None).await;
}

async fn salvage_a_damaged_header(passphrase: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let (data, dir) = (tmp.path().join("corpus"), tmp.path().join("repo"));
    corpus(&data, 4, 8);
    init_small_packs(vec![local(&dir)], passphrase).await;
    let mut repo = open(&[&dir], passphrase).await;
    let id = backup_dir(&mut repo, &data, "c").await.snapshot_id.unwrap();
    repo.load_index().await.unwrap();
    let pack = data_pack(&repo, &dir);
    let pos = repo.index().pack_pos(&id_of(&pack)).unwrap();
    let listed = repo
        .index()
        .blobs()
        .filter(|(_, locs)| locs.iter().any(|l| l.pack == pos))
        .count() as u64;
    // The header's length at the pack's very end says more than the pack holds (a flipped byte
    // inside an unencrypted header could go unnoticed: it has no MAC).
    let original = std::fs::read(&pack).unwrap();
    let mut bytes = original.clone();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&pack, bytes).unwrap();

    // Without an index file that locates its blobs, nothing of it can be salvaged: it is
    // named and left in place.
    let saved: Vec<(PathBuf, Vec<u8>)> = files_in(&dir.join("index"))
        .into_iter()
        .map(|f| {
            let b = std::fs::read(&f).unwrap();
            std::fs::remove_file(&f).unwrap();
            (f, b)
        })
        .collect();
    let fixed = repair_index(&mut repo, &actor(), Arc::new(NoProgress))
        .await
        .unwrap();
    let d = &fixed.storages[0].damaged_packs[0];
    assert_eq!(
        (
            d.salvaged_blobs,
            d.lost_blobs,
            d.new_pack.is_none(),
            d.deleted
        ),
        (0, 0, true, false),
        "{d:?}"
    );
    assert!(pack.exists());
    assert!(!run_check(&mut repo, ReadData::None).await.is_ok());

    // With the old index files back, every blob is found, verified and copied into a new
    // pack, and the damaged pack goes.
    for (f, b) in &saved {
        std::fs::write(f, b).unwrap();
    }
    let fixed = repair_index(&mut repo, &actor(), Arc::new(NoProgress))
        .await
        .unwrap();
    let s = &fixed.storages[0];
    assert_eq!(s.damaged_packs.len(), 1, "{s:?}");
    let d = &s.damaged_packs[0];
    assert_eq!(d.object, format!("pack {}", id_of(&pack)));
    assert_eq!((d.salvaged_blobs, d.lost_blobs), (listed, 0), "{d:?}");
    let new = d.new_pack.clone().expect("a new pack");
    if passphrase.is_some() {
        assert!(d.error.contains(&new), "{}", d.error);
        assert!(d.deleted && !pack.exists(), "{d:?}");
    } else {
        assert_eq!(new, id_of(&pack).to_string());
        assert!(!d.deleted, "{d:?}");
        assert_eq!(
            std::fs::read(&pack).unwrap(),
            original,
            "the original bytes"
        );
    }
    assert_eq!(s.packs_indexed as usize, pack_files(&dir).len());

    // The repository is whole again: every pack reads, and even a repair with no index file
    // left finds nothing damaged.
    let r = run_check(&mut repo, ReadData::All).await;
    assert!(r.is_ok(), "{r:#?}");
    for f in files_in(&dir.join("index")) {
        std::fs::remove_file(f).unwrap();
    }
    let fixed = repair_index(&mut repo, &actor(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(fixed.storages[0].damaged_packs.is_empty(), "{fixed:?}");
    assert!(run_check(&mut repo, ReadData::All).await.is_ok());
    let out = tmp.path().join("out");
    let r = restore_id(&mut repo, id, &out).await;
    assert!(r.is_complete(), "{r:?}");
    assert_same_tree(&data, &out, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn salvage_keeps_only_blobs_that_verify_and_an_unreadable_old_index_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, dir) = (tmp.path().join("corpus"), tmp.path().join("repo"));
    corpus(&data, 4, 9);
    init_small_packs(vec![local(&dir)], Some("pw")).await;
    let mut repo = open(&[&dir], Some("pw")).await;
    backup_dir(&mut repo, &data, "c").await;
    repo.load_index().await.unwrap();
    // The pack of the most blobs.
    let count = |p: &Path| {
        let pos = repo.index().pack_pos(&id_of(p)).unwrap();
        repo.index()
            .blobs()
            .filter(|(_, locs)| locs.iter().any(|l| l.pack == pos))
            .count() as u64
    };
    let pack = pack_files(&dir)
        .into_iter()
        .max_by_key(|p| count(p))
        .unwrap();
    let listed = count(&pack);
    assert!(listed > 1, "a pack of several blobs");
    // The header damaged (sealed: the flip is found), and the first blob's body too.
    let mut bytes = std::fs::read(&pack).unwrap();
    let n = bytes.len() - 10;
    bytes[n] ^= 0x01;
    bytes[100] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();

    // An old index file that cannot be read (not a damaged one) stops the repair before it
    // deletes anything: it may be the only record of where the blobs are.
    let old = files_in(&dir.join("index"));
    let failing = Flaky::failing_reads_under(local(&dir), "index/");
    let mut through = Repository::open(vec![failing], Some(&pass("pw")))
        .await
        .unwrap();
    match repair_index(&mut through, &actor(), Arc::new(NoProgress)).await {
        Ok(fixed) => {
            let why = fixed.storages[0].error.clone().unwrap();
            assert!(why.contains("old index files were left in place"), "{why}");
        }
        // Reloading the index afterwards fails the same way.
        Err(e) => assert!(e.to_string().contains("connection reset"), "{e}"),
    }
    assert_eq!(files_in(&dir.join("index")), old, "nothing deleted");
    // The storage failed during the repair, yet its lock went: a live process's lock left
    // there would hold up every later operation of this process until it turned stale.
    assert!(!has_lock(&dir));

    // Readable again: every blob but the damaged one is salvaged.
    let mut repo = open(&[&dir], Some("pw")).await;
    let fixed = repair_index(&mut repo, &actor(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(fixed.is_complete(), "{fixed:?}");
    let d = &fixed.storages[0].damaged_packs[0];
    assert_eq!((d.salvaged_blobs, d.lost_blobs), (listed - 1, 1), "{d:?}");
    // The blobs that verified are in a new pack; the damaged one stays, outside the index.
    assert!(d.new_pack.is_some() && !d.deleted && pack.exists(), "{d:?}");
    // What check then names, even reading every pack, is exactly the lost blob's absence.
    let r = run_check(&mut repo, ReadData::All).await;
    assert_eq!(r.damaged.len(), 1, "{:#?}", r.damaged);
    let lost = &r.damaged[0].object;
    assert!(
        lost.starts_with("blob ") || lost.starts_with("tree "),
        "{lost}"
    );
}
