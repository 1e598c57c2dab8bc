//! Backup and restore through the library API: fidelity, confidentiality, deduplication,
//! snapshot selection, and the bad cases (wrong key, torn and unreadable files).

use std::path::Path;
use std::sync::Arc;

use freezer_core::engine::{BackupOptions, NoProgress, RestoreOptions, backup};
use freezer_core::repo::Repository;
use freezer_core::source::fs::{FsOptions, FsSource};
use freezer_core::{Error, Timestamp};

use crate::support::*;

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
        let mut repo = open(&[&repo_dir], passphrase).await;
        let res = backup_dir(&mut repo, &data, "n").await;
        assert!(res.is_complete(), "{res:?}");
        assert_eq!(res.snapshot.stats.files, 7, "{:?}", res.snapshot.stats);
        let out = restore_id(&mut repo, res.snapshot_id.unwrap(), &target).await;
        assert!(out.is_complete(), "{out:?}");
        assert_same_tree(&data, &target, true);
    }
}

/// The acceptance corpus: every kind of file, odd corners included, restores identical; with
/// a passphrase no name or content of it appears anywhere in the repository.
#[tokio::test(flavor = "multi_thread")]
async fn the_corpus_restores_identical_and_leaks_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir, target) = (
        tmp.path().join("corpus"),
        tmp.path().join("repo"),
        tmp.path().join("out"),
    );
    corpus(&data, 24, 1);
    init(vec![local(&repo_dir)], Some("pw")).await;
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    let res = backup_dir(&mut repo, &data, "corpus").await;
    assert!(res.is_complete(), "{:?}", res.warnings);
    let out = restore_id(&mut repo, res.snapshot_id.unwrap(), &target).await;
    assert!(out.is_complete(), "{out:?}");
    assert_same_tree(&data, &target, true);

    // Names and contents that must not appear in clear.
    let mut needles: Vec<Vec<u8>> = [
        "ünïcödé ✓.txt",
        "events.sql",
        "script.sh",
        "link-to-script",
        "empty-dir",
        "disk0.raw",
        "INSERT INTO events",
        "restored with its xattr",
        "user.comment",
        "corpus",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for (_, content) in all_bytes(&data)
        .into_iter()
        .filter(|(_, c)| c.len() > 64)
        .take(200)
    {
        needles.push(content[content.len() / 2..content.len() / 2 + 24].to_vec());
    }
    for (path, bytes) in all_bytes(&repo_dir) {
        if path.ends_with("config") || path.parent().unwrap().ends_with("keys") {
            continue; // JSON without names or contents, checked below
        }
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == &n[..]),
                "{} holds {:?}",
                path.display(),
                String::from_utf8_lossy(n)
            );
        }
    }
    let config = std::fs::read_to_string(repo_dir.join("config")).unwrap();
    assert!(
        config.contains("aes-256-gcm") && !config.contains("master"),
        "{config}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_passphrase_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    init(vec![local(&repo_dir)], Some("right")).await;
    backup_dir(&mut open(&[&repo_dir], Some("right")).await, &data, "n").await;
    let before = all_bytes(&repo_dir);
    let err = Repository::open(vec![local(&repo_dir)], Some(&pass("wrong")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("passphrase"), "{err}");
    let err = Repository::open(vec![local(&repo_dir)], None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    assert_eq!(all_bytes(&repo_dir), before);
    // And a passphrase for an unencrypted repository is refused rather than ignored.
    let plain = tmp.path().join("plain");
    init(vec![local(&plain)], None).await;
    let err = Repository::open(vec![local(&plain)], Some(&pass("x")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not encrypted"), "{err}");
}

/// Deduplication: an unchanged tree adds less than 1 MiB; after `mutate --percent 5` a backup
/// adds at most twice the bytes of the files that changed.
#[tokio::test(flavor = "multi_thread")]
async fn unchanged_and_mutated_backups_add_little() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("corpus"), tmp.path().join("repo"));
    corpus(&data, 32, 1);
    init(vec![local(&repo_dir)], Some("pw")).await;
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    backup_dir(&mut repo, &data, "c").await;
    let size0 = du(&repo_dir);
    let second = backup_dir(&mut repo, &data, "c").await;
    let size1 = du(&repo_dir);
    assert!(
        size1 - size0 < 1 << 20,
        "an unchanged backup added {} bytes",
        size1 - size0
    );
    assert_eq!(
        second.snapshot.stats.bytes_read, 0,
        "unchanged files are not read again"
    );
    assert_eq!(second.snapshot.level, 1);

    let before = fingerprint(&data);
    mutate(&data, 5, 2);
    let after = fingerprint(&data);
    let changed: u64 = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(v))
        .map(|(_, (size, _))| size)
        .sum();
    assert!(changed > 0);
    let third = backup_dir(&mut repo, &data, "c").await;
    let size2 = du(&repo_dir);
    assert!(
        size2 - size1 <= 2 * changed,
        "added {} bytes for {changed} changed",
        size2 - size1
    );
    assert!(third.snapshot.stats.files_unmodified > 0 && third.snapshot.stats.files_changed > 0);
    let target = tmp.path().join("out");
    let out = restore_id(&mut repo, third.snapshot_id.unwrap(), &target).await;
    assert!(out.is_complete());
    assert_same_tree(&data, &target, false);
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_are_chosen_by_date_id_and_series() {
    use freezer_core::repo::snapshot::{SnapshotSelector, select};
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    std::fs::create_dir(&data).unwrap();
    init(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let mut ids = vec![];
    for (day, content) in [(1, "monday"), (2, "tuesday"), (3, "wednesday")] {
        std::fs::write(data.join("day.txt"), content).unwrap();
        let t = Timestamp::from_second(1_700_000_000 + day * 86_400).unwrap();
        let src = Arc::new(FsSource::new(&data, &FsOptions::default()).unwrap());
        ids.push(
            backup_source(&mut repo, src, "daily", Some(t))
                .await
                .snapshot_id
                .unwrap(),
        );
    }
    let snaps = repo.snapshots().await.unwrap().0;
    let at = |secs| SnapshotSelector::AtOrBefore {
        hostname: "test-host".into(),
        backup_name: "daily".into(),
        time: Timestamp::from_second(secs).unwrap(),
    };
    assert_eq!(
        select(&snaps, &at(1_700_000_000 + 2 * 86_400 + 10))
            .unwrap()
            .0,
        ids[1]
    );
    assert_eq!(
        select(&snaps, &at(1_700_000_000 + 9 * 86_400)).unwrap().0,
        ids[2]
    );
    assert!(matches!(
        select(&snaps, &at(1_700_000_000)),
        Err(Error::NotFound { .. })
    ));
    let target = tmp.path().join("out");
    restore_id(&mut repo, ids[0], &target).await;
    assert_eq!(
        std::fs::read_to_string(target.join("day.txt")).unwrap(),
        "monday"
    );
    let levels: Vec<u32> = snaps.iter().map(|(_, s)| s.level).collect();
    assert_eq!(levels, [0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sub_path_restores_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    init(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let id = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    let target = tmp.path().join("sub");
    let mut o = RestoreOptions::new(&target);
    o.sub_path = Some("dir".into());
    let out = restore_with(&mut repo, id, o).await;
    assert!(out.is_complete(), "{out:?}");
    assert_same_tree(&data.join("dir"), &target, true);
    let mut o = RestoreOptions::new(tmp.path().join("one"));
    o.sub_path = Some("dir/a.txt".into());
    restore_with(&mut repo, id, o).await;
    assert_eq!(
        std::fs::read(tmp.path().join("one/a.txt")).unwrap(),
        b"hello\n"
    );
    let snaps = repo.snapshots().await.unwrap().0;
    let mut o = RestoreOptions::new(tmp.path().join("none"));
    o.sub_path = Some("no/such".into());
    let err = freezer_core::engine::restore(&repo, id, &snaps[0].1, &o, Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

/// A restore made a window of the plan at a time (here a few entries each, so that folders,
/// hard links and damage span windows) restores what one made whole does, and reports the same
/// damage.
#[tokio::test(flavor = "multi_thread")]
async fn small_plan_windows_restore_the_same_tree_and_the_same_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    // Deep folders with many entries, and a hard link whose names are far apart in the walk.
    let deep = data.join("a/b/c/d/e");
    std::fs::create_dir_all(&deep).unwrap();
    for i in 0..40 {
        std::fs::write(data.join(format!("a/b/f{i}")), format!("{i}\n")).unwrap();
    }
    std::fs::write(deep.join("x"), pseudo_random(3 << 20, 11)).unwrap();
    std::fs::hard_link(deep.join("x"), data.join("zz-link")).unwrap();
    init_small_packs(vec![local(&repo_dir)], Some("pw")).await;
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    let res = backup_dir(&mut repo, &data, "w").await;
    let id = res.snapshot_id.unwrap();
    let mut counts = Vec::new();
    for window in [1, 2, 7, 0] {
        let target = tmp.path().join(format!("out{window}"));
        let mut o = RestoreOptions::new(&target);
        o.plan_window = window;
        let out = restore_with(&mut repo, id, o).await;
        assert!(out.is_complete(), "window {window}: {out:?}");
        assert_same_tree(&data, &target, true);
        assert!(
            !target.join(".freezer-restore-in-progress").exists(),
            "window {window}: the marker is left"
        );
        counts.push((out.files, out.dirs, out.others, out.bytes));
        // A part of the snapshot, in windows too.
        let target = tmp.path().join(format!("sub{window}"));
        let mut o = RestoreOptions::new(&target);
        o.plan_window = window;
        o.sub_path = Some("a/b".into());
        let out = restore_with(&mut repo, id, o).await;
        assert!(out.is_complete(), "window {window}: {out:?}");
        assert_same_tree(&data.join("a/b"), &target, true);
    }
    assert!(counts.windows(2).all(|w| w[0] == w[1]), "{counts:?}");
    assert_eq!(counts[0].0, res.snapshot.stats.files, "{counts:?}");

    // Every pack of file content gone: the damage names every file with content, both names
    // of the hard-linked one included, whatever the windows.
    repo.load_index().await.unwrap();
    let index = repo.index();
    let data_packs: Vec<std::path::PathBuf> = pack_files(&repo_dir)
        .into_iter()
        .filter(|p| {
            let id = freezer_core::Id::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap();
            let pos = index.pack_pos(&id).unwrap();
            index.blobs().all(|(_, locs)| {
                locs.iter()
                    .all(|l| l.pack != pos || l.kind == freezer_core::repo::pack::BlobType::Data)
            })
        })
        .collect();
    assert!(!data_packs.is_empty());
    for p in &data_packs {
        std::fs::remove_file(p).unwrap();
    }
    let mut reports = Vec::new();
    for window in [1, 3, 0] {
        let target = tmp.path().join(format!("damaged{window}"));
        let mut o = RestoreOptions::new(&target);
        o.plan_window = window;
        o.accept_partial = true;
        let out = restore_with(&mut repo, id, o).await;
        assert!(
            out.warnings.is_empty(),
            "window {window}: {:?}",
            out.warnings
        );
        let mut files: Vec<String> = out.damaged.iter().flat_map(|d| d.files.clone()).collect();
        files.sort();
        files.dedup();
        for name in ["a/b/c/d/e/x", "zz-link", "a/b/f7", "dir/sub/big.bin"] {
            assert!(
                files.iter().any(|f| f == name),
                "window {window}: {name} not named: {files:?}"
            );
            // A damaged file is in place at its size, its missing content a hole.
            assert_eq!(
                std::fs::symlink_metadata(target.join(name)).unwrap().len(),
                std::fs::symlink_metadata(data.join(name)).unwrap().len(),
                "window {window}: {name}"
            );
        }
        // What does not depend on them is restored.
        assert_eq!(
            std::fs::read_link(target.join("link")).unwrap(),
            Path::new("script.sh")
        );
        reports.push(files);
    }
    assert!(reports.windows(2).all(|w| w[0] == w[1]), "{reports:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn overwrite_is_needed_for_a_non_empty_target_and_follows_no_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir, target, outside) = (
        tmp.path().join("data"),
        tmp.path().join("repo"),
        tmp.path().join("out"),
        tmp.path().join("outside"),
    );
    odd_tree(&data);
    init(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let id = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    std::fs::create_dir_all(&target).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    // In the way: a symlink where the backup has a folder, a file where it has a symlink.
    std::os::unix::fs::symlink(&outside, target.join("dir")).unwrap();
    std::fs::write(target.join("link"), b"in the way").unwrap();
    let snaps = repo.snapshots().await.unwrap().0;
    repo.load_index().await.unwrap();
    let err = freezer_core::engine::restore(
        &repo,
        id,
        &snaps[0].1,
        &RestoreOptions::new(&target),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("Restore dir is not empty"),
        "{err}"
    );
    let mut o = RestoreOptions::new(&target);
    o.overwrite = true;
    let out = restore_with(&mut repo, id, o).await;
    assert!(out.is_complete(), "{out:?}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing may be written through the symlink"
    );
    assert_same_tree(&data, &target, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_runs_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    init(vec![local(&repo_dir)], Some("pw")).await;
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    let before = all_bytes(&repo_dir);
    let mut o = BackupOptions::new("test-host", "n", actor());
    o.dry_run = true;
    let res = backup(
        &mut repo,
        Arc::new(FsSource::new(&data, &FsOptions::default()).unwrap()),
        &o,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(res.snapshot_id.is_none() && res.snapshot.stats.bytes_added > 0);
    assert_eq!(all_bytes(&repo_dir), before);
    let id = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    let target = tmp.path().join("out");
    let mut o = RestoreOptions::new(&target);
    o.dry_run = true;
    let out = restore_with(&mut repo, id, o).await;
    assert!(out.is_complete() && out.bytes > 0);
    assert!(!target.exists());
}

/// A file that changes while read is read again; if it changes again it is flagged, never
/// silently stored torn. A file that cannot be read is named, and the rest is backed up.
#[tokio::test(flavor = "multi_thread")]
async fn torn_and_unreadable_files_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    init(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let mut src = Counting::new(&data);
    src.changing = vec!["big.bin".into()];
    src.unreadable = vec!["a.txt".into()];
    let res = backup_source(&mut repo, Arc::new(src), "n", None).await;
    assert!(!res.is_complete());
    assert_eq!(res.snapshot.stats.files_changed_while_read, 1);
    assert_eq!(res.snapshot.stats.errors, 1);
    assert!(
        res.warnings
            .iter()
            .any(|w| w.contains("big.bin") && w.contains("changed while")),
        "{:?}",
        res.warnings
    );
    assert!(
        res.warnings
            .iter()
            .any(|w| w.contains("a.txt") && w.contains("permission")),
        "{:?}",
        res.warnings
    );
    let target = tmp.path().join("out");
    let out = restore_id(&mut repo, res.snapshot_id.unwrap(), &target).await;
    assert!(out.is_complete());
    assert!(!target.join("dir/a.txt").exists());
    assert_eq!(
        std::fs::read(target.join("dir/sub/big.bin")).unwrap(),
        std::fs::read(data.join("dir/sub/big.bin")).unwrap()
    );
    // The flagged file is read again next time instead of being trusted.
    let next = backup_dir(&mut repo, &data, "n").await;
    assert!(
        next.snapshot.stats.bytes_read >= 3 << 20,
        "{:?}",
        next.snapshot.stats
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn excludes_and_single_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    init(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let src = FsSource::new(
        &data,
        &FsOptions {
            excludes: vec!["*.bin".into(), "/empty-dir".into()],
            ..FsOptions::default()
        },
    )
    .unwrap();
    let id = backup_source(&mut repo, Arc::new(src), "ex", None)
        .await
        .snapshot_id
        .unwrap();
    let target = tmp.path().join("out");
    restore_id(&mut repo, id, &target).await;
    assert!(!target.join("dir/sub/big.bin").exists() && !target.join("empty-dir").exists());
    assert!(target.join("dir/a.txt").exists());
    // A single file as path_to_backup restores as that file inside the target.
    let one = FsSource::new(data.join("dir/a.txt"), &FsOptions::default()).unwrap();
    let id = backup_source(&mut repo, Arc::new(one), "file", None)
        .await
        .snapshot_id
        .unwrap();
    let target = tmp.path().join("file-out");
    restore_id(&mut repo, id, &target).await;
    assert_eq!(std::fs::read(target.join("a.txt")).unwrap(), b"hello\n");
    let _ = Path::new("");
}

#[tokio::test(flavor = "multi_thread")]
async fn owners_are_restored_when_running_as_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test checks owner restore and needs root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir, target) = (
        tmp.path().join("data"),
        tmp.path().join("repo"),
        tmp.path().join("out"),
    );
    odd_tree(&data);
    let own = |p: &str, uid: u32, gid: u32| {
        rustix::fs::chownat(
            rustix::fs::CWD,
            data.join(p).as_path(),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap()
    };
    own("dir", 1001, 1002);
    own("dir/a.txt", 1234, 5678);
    own("link", 4321, 8765);
    own("empty-dir", 65534, 65534);
    // chown clears setuid: put it back so the restore has to get the order right.
    std::fs::set_permissions(
        data.join("script.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    own("script.sh", 1500, 1500);
    std::fs::set_permissions(
        data.join("script.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    init(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let id = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    let out = restore_id(&mut repo, id, &target).await;
    assert!(out.is_complete(), "{out:?}");
    assert_same_tree(&data, &target, true);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(target.join("dir/a.txt")).unwrap().uid(),
        1234
    );
    // Without owners, every file belongs to whoever restores.
    let mine = tmp.path().join("mine");
    let mut o = RestoreOptions::new(&mine);
    o.owners = Some(false);
    restore_with(&mut repo, id, o).await;
    assert_eq!(std::fs::metadata(mine.join("dir/a.txt")).unwrap().uid(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn dereference_symlink_soft_hard_and_all() {
    use freezer_core::source::fs::Dereference;
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let (data, outside, repo_dir) = (
        tmp.path().join("data"),
        tmp.path().join("outside"),
        tmp.path().join("repo"),
    );
    std::fs::create_dir_all(outside.join("d")).unwrap();
    std::fs::write(outside.join("f.txt"), b"outside file\n").unwrap();
    std::fs::write(outside.join("d/inner.txt"), b"inner\n").unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(outside.join("f.txt"), data.join("file-link")).unwrap();
    std::os::unix::fs::symlink(outside.join("d"), data.join("dir-link")).unwrap();
    std::os::unix::fs::symlink("/no/such/target", data.join("dangling")).unwrap();
    std::os::unix::fs::symlink(".", data.join("loop")).unwrap();
    std::fs::write(data.join("one"), b"linked\n").unwrap();
    std::fs::hard_link(data.join("one"), data.join("two")).unwrap();
    init(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    for mode in [
        Dereference::None,
        Dereference::Soft,
        Dereference::Hard,
        Dereference::All,
    ] {
        let name = format!("{mode:?}");
        let src = FsSource::new(
            &data,
            &FsOptions {
                dereference: mode,
                ..FsOptions::default()
            },
        )
        .unwrap();
        let id = backup_source(&mut repo, Arc::new(src), &name, None)
            .await
            .snapshot_id
            .unwrap();
        let target = tmp.path().join(format!("out-{name}"));
        let out = restore_id(&mut repo, id, &target).await;
        assert!(out.is_complete(), "{mode:?}: {out:?}");
        let soft = matches!(mode, Dereference::Soft | Dereference::All);
        let hard = matches!(mode, Dereference::Hard | Dereference::All);
        let fl = std::fs::symlink_metadata(target.join("file-link")).unwrap();
        assert_eq!(fl.file_type().is_symlink(), !soft, "{mode:?}");
        if soft {
            assert_eq!(
                std::fs::read(target.join("file-link")).unwrap(),
                b"outside file\n"
            );
            assert_eq!(
                std::fs::read(target.join("dir-link/inner.txt")).unwrap(),
                b"inner\n"
            );
            // A loop is entered once, not forever; a dangling link stays a link.
            assert!(
                std::fs::symlink_metadata(target.join("dangling"))
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );
        }
        let (a, b) = (
            std::fs::metadata(target.join("one")).unwrap(),
            std::fs::metadata(target.join("two")).unwrap(),
        );
        assert_eq!(
            a.ino() == b.ino(),
            !hard,
            "{mode:?}: hard links kept unless dereferenced"
        );
        assert_eq!(std::fs::read(target.join("two")).unwrap(), b"linked\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_file_system_stays_on_one_file_system() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo_dir) = (tmp.path().join("data"), tmp.path().join("repo"));
    std::fs::create_dir_all(data.join("mnt")).unwrap();
    std::fs::write(data.join("here.txt"), b"here\n").unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(data.join("mnt"))
        .status()
        .unwrap();
    assert!(st.success(), "this test mounts a tmpfs and needs root");
    std::fs::write(data.join("mnt/elsewhere.txt"), b"on another file system\n").unwrap();
    init(vec![local(&repo_dir)], None).await;
    let mut repo = open(&[&repo_dir], None).await;
    let one = FsSource::new(
        &data,
        &FsOptions {
            one_file_system: true,
            ..FsOptions::default()
        },
    )
    .unwrap();
    let id1 = backup_source(&mut repo, Arc::new(one), "one", None)
        .await
        .snapshot_id
        .unwrap();
    let all = FsSource::new(&data, &FsOptions::default()).unwrap();
    let id2 = backup_source(&mut repo, Arc::new(all), "all", None)
        .await
        .snapshot_id
        .unwrap();
    let _ = std::process::Command::new("umount")
        .arg(data.join("mnt"))
        .status();
    let (t1, t2) = (tmp.path().join("t1"), tmp.path().join("t2"));
    restore_id(&mut repo, id1, &t1).await;
    restore_id(&mut repo, id2, &t2).await;
    assert!(t1.join("mnt").is_dir(), "the mount point is kept");
    assert!(!t1.join("mnt/elsewhere.txt").exists());
    assert_eq!(
        std::fs::read(t2.join("mnt/elsewhere.txt")).unwrap(),
        b"on another file system\n"
    );
    assert_eq!(std::fs::read(t1.join("here.txt")).unwrap(), b"here\n");
}
