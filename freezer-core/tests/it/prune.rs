//! Prune: forgotten data goes, what snapshots use stays restorable, partly used packs are
//! repacked by threshold, orphans go, each storage of a tee is pruned on its own, and nothing
//! is deleted when something is unreadable or another process holds a lock.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use freezer_core::engine::{NoProgress, Progress, PruneOptions, PruneReport, prune};
use freezer_core::repo::Repository;
use freezer_core::repo::pack::{BlobType, PackWriter};
use freezer_core::sink::{Payload, PutMode, Sink};
use freezer_core::{Error, Id};

use crate::support::*;

async fn prune_with(repo: &mut Repository, opts: PruneOptions) -> PruneReport {
    let report = prune(repo, &opts, &actor(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.is_complete(), "{report:?}");
    report
}

/// Forgets a snapshot the way `forget` does: its object goes from every storage.
async fn forget(repo: &Repository, id: Id) {
    repo.tee().delete(&format!("snapshots/{id}")).await.unwrap();
}

/// Writes `bytes` as `dir/name`, creating `dir`.
fn file(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// 64 bytes from the middle of `content`: found in a pack exactly when the blob holding
/// them is there (random data is stored uncompressed, and these repositories are not
/// encrypted).
fn needle(content: &[u8]) -> Vec<u8> {
    content[content.len() / 2..content.len() / 2 + 64].to_vec()
}

fn in_packs(repo_dir: &Path, needle: &[u8]) -> bool {
    pack_files(repo_dir).iter().any(|p| {
        std::fs::read(p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    })
}

/// Every object of a local repository with its bytes, locks left out.
fn objects(repo_dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    all_bytes(repo_dir)
        .into_iter()
        .filter(|(p, _)| !p.strip_prefix(repo_dir).unwrap().starts_with("locks"))
        .collect()
}

/// Asserts that the index of `repo_dir` alone lists exactly the packs in its `data/`.
async fn index_matches_packs(repo_dir: &Path) {
    let mut repo = open(&[repo_dir], None).await;
    repo.load_index().await.unwrap();
    assert!(repo.warnings().is_empty(), "{:?}", repo.warnings());
    let listed: BTreeSet<String> = repo.index().packs().iter().map(|p| p.id.to_hex()).collect();
    let stored: BTreeSet<String> = pack_files(repo_dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, stored, "{}", repo_dir.display());
}

async fn restores_identical(repo_dirs: &[&Path], id: Id, data: &Path, target: &Path) {
    let mut repo = open(repo_dirs, None).await;
    let out = restore_id(&mut repo, id, target).await;
    assert!(out.is_complete(), "{out:?}");
    assert_same_tree(data, target, false);
}

#[tokio::test(flavor = "multi_thread")]
async fn forgotten_data_goes_and_every_other_snapshot_still_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, other, repo_dir) = (
        tmp.path().join("data"),
        tmp.path().join("other"),
        tmp.path().join("repo"),
    );
    let (kept, gone, new) = (
        pseudo_random(2 << 20, 1),
        pseudo_random(3 << 20, 2),
        pseudo_random(3 << 20, 3),
    );
    file(&data, "kept.bin", &kept);
    file(&data, "gone.bin", &gone);
    file(&other, "other.bin", &pseudo_random(1 << 20, 4));
    init_small_packs(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let first = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    std::fs::remove_file(data.join("gone.bin")).unwrap();
    file(&data, "new.bin", &new);
    let second = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    let third = backup_dir(&mut repo, &other, "o")
        .await
        .snapshot_id
        .unwrap();
    assert!(in_packs(&repo_dir, &needle(&gone)));
    let size_before = du(&repo_dir.join("data"));

    forget(&repo, first).await;
    let report = prune_with(&mut repo, PruneOptions::default()).await;
    assert!(!report.dry_run);
    assert_eq!(report.snapshots, 2);
    assert_eq!(report.storages.len(), 1);
    assert_eq!(report.storages[0].stats, report.total);
    let t = &report.total;
    assert!(t.packs_deleted + t.packs_repacked > 0, "{t:?}");
    assert!(t.bytes_freed > 0, "{t:?}");
    assert!(t.blobs_removed > 0, "{t:?}");
    assert!(
        t.index_files_written > 0 && t.index_files_removed > 0,
        "{t:?}"
    );
    assert_eq!(
        size_before - du(&repo_dir.join("data")),
        t.bytes_freed,
        "bytes freed are the bytes that left data/"
    );
    // The forgotten snapshot's own data is gone; what the others use is there.
    assert!(!in_packs(&repo_dir, &needle(&gone)));
    assert!(in_packs(&repo_dir, &needle(&kept)));
    assert!(in_packs(&repo_dir, &needle(&new)));
    index_matches_packs(&repo_dir).await;
    restores_identical(&[&repo_dir], second, &data, &tmp.path().join("out2")).await;
    restores_identical(&[&repo_dir], third, &other, &tmp.path().join("out3")).await;

    // Nothing is left to do.
    let again = prune_with(&mut repo, PruneOptions::default()).await;
    assert_eq!(again.total.bytes_freed, 0, "{:?}", again.total);
    assert_eq!(again.total.index_files_written, 0, "{:?}", again.total);
    assert_eq!(again.total.packs_kept, t.packs_kept + t.packs_written);

    // A later backup into the pruned repository works and stores only what is new.
    file(&data, "later.bin", &pseudo_random(1 << 20, 5));
    let later = backup_dir(&mut repo, &data, "n").await;
    assert!(later.is_complete(), "{later:?}");
    assert!(later.snapshot.stats.files_unmodified >= 2);
    assert!(
        later.snapshot.stats.bytes_added < (1 << 20) + (64 << 10),
        "added {} bytes for 1 MiB of new data",
        later.snapshot.stats.bytes_added
    );
    restores_identical(
        &[&repo_dir],
        later.snapshot_id.unwrap(),
        &data,
        &tmp.path().join("out4"),
    )
    .await;
}

#[derive(Default)]
struct Counted(AtomicU64);

impl Progress for Counted {
    fn add_bytes(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slightly_unused_pack_is_kept_by_default_and_repacked_at_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    // One data pack of about 920 KiB, 2% of which only the forgotten snapshot uses.
    let (big, small) = (pseudo_random(900 << 10, 6), pseudo_random(20 << 10, 7));
    file(&data, "big.bin", &big);
    file(&data, "small.bin", &small);
    init_small_packs(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let first = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    std::fs::remove_file(data.join("small.bin")).unwrap();
    let second = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    forget(&repo, first).await;

    let err = prune(
        &mut repo,
        &PruneOptions {
            max_unused: 1.5,
            dry_run: false,
        },
        &actor(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::BadInput { .. }), "{err}");

    let packs_before = pack_files(&repo_dir);
    let report = prune_with(&mut repo, PruneOptions::default()).await;
    let t = &report.total;
    assert_eq!(t.packs_repacked, 0, "{t:?}");
    // The first snapshot's trees were a pack of their own.
    assert_eq!(t.packs_deleted, 1, "{t:?}");
    assert!(
        t.unused_bytes_kept >= 20 << 10 && t.unused_bytes_kept < 24 << 10,
        "{t:?}"
    );
    assert!(in_packs(&repo_dir, &needle(&small)));
    let packs_after = pack_files(&repo_dir);
    assert!(
        packs_after.iter().all(|p| packs_before.contains(p)),
        "kept packs are left as they are"
    );

    let progress = Arc::new(Counted::default());
    let opts = PruneOptions {
        max_unused: 0.0,
        dry_run: false,
    };
    let report = prune(&mut repo, &opts, &actor(), progress.clone())
        .await
        .unwrap();
    let t = &report.total;
    assert_eq!(t.packs_repacked, 1, "{t:?}");
    assert_eq!(t.packs_written, 1, "{t:?}");
    assert_eq!(t.unused_bytes_kept, 0, "{t:?}");
    assert!(t.blobs_repacked >= 1 && t.blobs_removed >= 1, "{t:?}");
    assert!(t.bytes_repacked >= 900 << 10, "{t:?}");
    assert!(t.bytes_freed >= 19 << 10, "{t:?}");
    assert_eq!(progress.0.load(Ordering::Relaxed), t.bytes_repacked);
    assert!(!in_packs(&repo_dir, &needle(&small)));
    assert!(in_packs(&repo_dir, &needle(&big)));
    index_matches_packs(&repo_dir).await;
    restores_identical(&[&repo_dir], second, &data, &tmp.path().join("out")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_changes_nothing_and_tells_what_prune_does() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    file(&data, "a.bin", &pseudo_random(3 << 20, 8));
    file(&data, "b.bin", &pseudo_random(2 << 20, 9));
    init_small_packs(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let first = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    std::fs::remove_file(data.join("a.bin")).unwrap();
    backup_dir(&mut repo, &data, "n").await;
    forget(&repo, first).await;

    let before = all_bytes(&repo_dir);
    let dry = prune_with(
        &mut repo,
        PruneOptions {
            dry_run: true,
            ..PruneOptions::default()
        },
    )
    .await;
    assert_eq!(all_bytes(&repo_dir), before, "a dry run wrote or deleted");
    assert!(dry.dry_run);
    let d = &dry.total;
    assert!(
        d.packs_deleted + d.packs_repacked > 0 && d.bytes_freed > 0,
        "{d:?}"
    );

    let real = prune_with(&mut repo, PruneOptions::default()).await;
    let r = &real.total;
    assert_ne!(all_bytes(&repo_dir), before);
    for (what, dry, real) in [
        ("packs kept", d.packs_kept, r.packs_kept),
        ("packs deleted", d.packs_deleted, r.packs_deleted),
        ("packs repacked", d.packs_repacked, r.packs_repacked),
        ("orphans", d.orphan_packs, r.orphan_packs),
        ("blobs removed", d.blobs_removed, r.blobs_removed),
        ("blobs repacked", d.blobs_repacked, r.blobs_repacked),
        ("bytes repacked", d.bytes_repacked, r.bytes_repacked),
        ("unused kept", d.unused_bytes_kept, r.unused_bytes_kept),
        (
            "index removed",
            d.index_files_removed,
            r.index_files_removed,
        ),
    ] {
        assert_eq!(dry, real, "{what}: dry run {d:?}, prune {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_storage_of_a_tee_is_pruned_on_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (d0, d1, d2) = (
        tmp.path().join("d0"),
        tmp.path().join("d1"),
        tmp.path().join("d2"),
    );
    let (q, p, r) = (
        pseudo_random(3 << 19, 10),
        pseudo_random(2 << 20, 11),
        pseudo_random(2 << 20, 12),
    );
    file(&d0, "q.bin", &q);
    file(&d1, "q.bin", &q);
    file(&d1, "p.bin", &p);
    file(&d2, "q.bin", &q);
    file(&d2, "r.bin", &r);
    init_small_packs(vec![local(&a), local(&b)], None).await;
    let mut both = open(&[&a, &b], None).await;
    let s0 = backup_dir(&mut both, &d0, "s0").await.snapshot_id.unwrap();
    let s1 = backup_dir(&mut both, &d1, "s1").await.snapshot_id.unwrap();
    // b is away for this one: only a holds s2 and r.
    let s2 = backup_dir(&mut open(&[&a], None).await, &d2, "s2")
        .await
        .snapshot_id
        .unwrap();
    assert!(in_packs(&a, &needle(&r)) && !in_packs(&b, &needle(&r)));
    assert!(in_packs(&a, &needle(&p)) && in_packs(&b, &needle(&p)));
    forget(&both, s1).await;

    let report = prune_with(&mut both, PruneOptions::default()).await;
    assert_eq!(report.storages.len(), 2);
    for s in &report.storages {
        assert!(
            s.stats.packs_deleted + s.stats.packs_repacked > 0 && s.stats.bytes_freed > 0,
            "{s:?}"
        );
    }
    let sum = report.storages[0].stats.bytes_freed + report.storages[1].stats.bytes_freed;
    assert_eq!(report.total.bytes_freed, sum);
    for dir in [&a, &b] {
        assert!(!in_packs(dir, &needle(&p)), "{}", dir.display());
        assert!(in_packs(dir, &needle(&q)), "{}", dir.display());
        index_matches_packs(dir).await;
    }
    assert!(in_packs(&a, &needle(&r)));
    for (n, dir) in [&a, &b].into_iter().enumerate() {
        restores_identical(&[dir], s0, &d0, &tmp.path().join(format!("s0-{n}"))).await;
    }
    restores_identical(&[&a], s2, &d2, &tmp.path().join("s2")).await;
    restores_identical(&[&a, &b], s2, &d2, &tmp.path().join("s2-tee")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orphan_packs_are_removed_and_other_files_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    file(&data, "a.bin", &pseudo_random(2 << 20, 13));
    init_small_packs(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let snap = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    let packs = pack_files(&repo_dir);
    // What a backup killed before writing its index leaves: a complete pack no index lists.
    let content = Bytes::from(pseudo_random(100 << 10, 14));
    let mut writer = PackWriter::default();
    writer.add(&repo.encoder(None).encode(
        repo.blob_id(&content),
        BlobType::Data,
        std::slice::from_ref(&content),
    ));
    let orphan = writer.finish(repo.crypto());
    assert_eq!(repo.write_pack(&orphan, repo.tee().all()).await, 1);
    // Something in data/ that is not a pack.
    local(&repo_dir)
        .put(
            "data/ab/notes.txt",
            Payload::from(b"not a pack".to_vec()),
            PutMode::Create,
        )
        .await
        .unwrap();
    assert_eq!(pack_files(&repo_dir).len(), packs.len() + 2);

    let report = prune_with(&mut repo, PruneOptions::default()).await;
    let t = &report.total;
    assert_eq!(t.orphan_packs, 1, "{t:?}");
    assert_eq!(t.packs_deleted + t.packs_repacked, 0, "{t:?}");
    assert_eq!(t.index_files_written + t.index_files_removed, 0, "{t:?}");
    assert_eq!(t.bytes_freed, orphan.payload.len() as u64, "{t:?}");
    let mut left = packs.clone();
    left.push(repo_dir.join("data/ab/notes.txt"));
    left.sort();
    assert_eq!(pack_files(&repo_dir), left);
    restores_identical(&[&repo_dir], snap, &data, &tmp.path().join("out")).await;
}

/// Flips one byte of a file; returns the original bytes.
fn flip(path: &Path, at: usize) -> Vec<u8> {
    let original = std::fs::read(path).unwrap();
    let mut bad = original.clone();
    bad[at] ^= 0x20;
    std::fs::write(path, bad).unwrap();
    original
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_deleted_when_a_tree_snapshot_or_index_file_is_unreadable() {
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2, repo_dir) = (
        tmp.path().join("d1"),
        tmp.path().join("d2"),
        tmp.path().join("repo"),
    );
    file(&d1, "a.bin", &pseudo_random(2 << 20, 15));
    file(&d2, "b.bin", &pseudo_random(2 << 20, 16));
    init_small_packs(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let first = backup_dir(&mut repo, &d1, "one").await.snapshot_id.unwrap();
    let second = backup_dir(&mut repo, &d2, "two").await;
    let (sid, tree) = (second.snapshot_id.unwrap(), second.snapshot.tree);
    forget(&repo, first).await;
    let before = objects(&repo_dir);
    let refused = |e: &Error| e.to_string().contains("stopped before deleting anything");

    // The second snapshot's top tree does not verify.
    repo.load_index().await.unwrap();
    let loc = repo.index().get(&tree).unwrap();
    let pack = repo.index().pack(loc.pack).id.to_hex();
    let pack_path = repo_dir.join("data").join(&pack[..2]).join(&pack);
    let original = flip(&pack_path, (loc.offset + loc.length / 2) as usize);
    let e = prune(
        &mut repo,
        &PruneOptions::default(),
        &actor(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert!(refused(&e), "{e}");
    assert!(
        e.to_string().contains(&sid.to_hex()) && e.to_string().contains(&tree.to_hex()),
        "names the snapshot and the tree: {e}"
    );
    std::fs::write(&pack_path, original).unwrap();
    assert_eq!(objects(&repo_dir), before);

    // The second snapshot's object does not verify.
    let snap_path = repo_dir.join("snapshots").join(sid.to_hex());
    let original = flip(&snap_path, 20);
    let e = prune(
        &mut repo,
        &PruneOptions::default(),
        &actor(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert!(refused(&e) && e.to_string().contains(&sid.to_hex()), "{e}");
    std::fs::write(&snap_path, original).unwrap();
    assert_eq!(objects(&repo_dir), before);

    // An index file does not verify: its packs would look like orphans.
    let index_path = std::fs::read_dir(repo_dir.join("index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let original = flip(&index_path, 10);
    let mut fresh = open(&[&repo_dir], None).await;
    let e = prune(
        &mut fresh,
        &PruneOptions::default(),
        &actor(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert!(refused(&e) && e.to_string().contains("index"), "{e}");
    std::fs::write(&index_path, original).unwrap();
    assert_eq!(objects(&repo_dir), before);

    // Repaired, the same repository prunes.
    let mut fresh = open(&[&repo_dir], None).await;
    let report = prune_with(&mut fresh, PruneOptions::default()).await;
    assert!(report.total.bytes_freed > 0, "{:?}", report.total);
}

/// Storage b holds every snapshot, but its index files are gone: its packs look like orphans
/// while its snapshots need them.
#[tokio::test(flavor = "multi_thread")]
async fn a_storage_whose_index_lost_files_is_not_pruned() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, a, b) = (
        tmp.path().join("data"),
        tmp.path().join("a"),
        tmp.path().join("b"),
    );
    file(&data, "a.bin", &pseudo_random(2 << 20, 19));
    init_small_packs(vec![local(&a), local(&b)], None).await;
    let mut repo = open(&[&a, &b], None).await;
    let first = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    file(&data, "a.bin", &pseudo_random(2 << 20, 20));
    backup_dir(&mut repo, &data, "n").await;
    forget(&repo, first).await;
    std::fs::remove_dir_all(b.join("index")).unwrap();
    std::fs::create_dir(b.join("index")).unwrap();
    let before = (objects(&a), objects(&b));
    let e = prune(
        &mut repo,
        &PruneOptions::default(),
        &actor(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("stopped before deleting anything")
            && e.to_string().contains(&local(&b).describe()),
        "{e}"
    );
    assert!(before == (objects(&a), objects(&b)), "something changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_lock_of_another_process_stops_prune() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    file(&data, "a.bin", &pseudo_random(2 << 20, 17));
    init_small_packs(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let first = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    file(&data, "a.bin", &pseudo_random(2 << 20, 18));
    backup_dir(&mut repo, &data, "n").await;
    forget(&repo, first).await;
    let before = objects(&repo_dir);
    repo.set_lock_wait(std::time::Duration::ZERO);

    // Another handle takes the lock: its pid is this process, which runs, so it is live.
    let other = open(&[&repo_dir], None).await;
    for exclusive in [true, false] {
        let held = other.lock(exclusive, "backup", &actor()).await.unwrap();
        let attempt = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            prune(
                &mut repo,
                &PruneOptions::default(),
                &actor(),
                Arc::new(NoProgress),
            ),
        )
        .await
        .expect("prune does not wait when told not to");
        let e = attempt.unwrap_err();
        assert!(matches!(e, Error::Locked { .. }), "{e}");
        assert_eq!(objects(&repo_dir), before);
        held.release().await.unwrap();
    }
    let report = prune_with(&mut repo, PruneOptions::default()).await;
    assert!(report.total.bytes_freed > 0, "{:?}", report.total);
    assert!(
        std::fs::read_dir(repo_dir.join("locks"))
            .unwrap()
            .next()
            .is_none(),
        "prune removed its lock"
    );
}
