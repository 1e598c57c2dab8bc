//! Bad input from storage and from the system: hostile archive paths, concurrent writers,
//! a full disk.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use freezer_core::engine::{NoProgress, RestoreOptions, restore};
use freezer_core::repo::index::IndexFile;
use freezer_core::repo::pack::{BlobType, PackWriter};
use freezer_core::repo::snapshot::{SNAPSHOT_VERSION, Snapshot};
use freezer_core::repo::tree::{Node, NodeKind, Tree};

use crate::support::*;

/// Writes a snapshot whose top folder holds one file with a hostile name.
async fn plant(repo_dir: &Path, name: &[u8]) -> freezer_core::Id {
    let repo = open(&[repo_dir], Some("pw")).await;
    let crypto = repo.crypto().clone();
    let mut enc = repo.encoder(Some(1));
    let content = Bytes::from_static(b"pwned\n");
    let cid = crypto.blob_id(&[&content]);
    let evil = Node {
        name: name.to_vec(),
        kind: Some(NodeKind::File),
        mode: 0o644,
        size: 6,
        content: vec![cid],
        ..Node::default()
    };
    let inner = Bytes::from(Tree { nodes: vec![evil] }.encode());
    let inner_id = crypto.blob_id(&[&inner]);
    let root = Node {
        name: b"root".to_vec(),
        kind: Some(NodeKind::Dir),
        mode: 0o755,
        subtree: Some(inner_id),
        ..Node::default()
    };
    let top = Bytes::from(Tree { nodes: vec![root] }.encode());
    let top_id = crypto.blob_id(&[&top]);
    let mut w = PackWriter::default();
    for (id, kind, b) in [
        (cid, BlobType::Data, content),
        (inner_id, BlobType::Tree, inner),
        (top_id, BlobType::Tree, top),
    ] {
        w.add(&enc.encode(id, kind, &[b]));
    }
    let pack = w.finish(&crypto);
    let all = repo.tee().all();
    assert_eq!(repo.write_pack(&pack, all).await, all);
    repo.write_index(
        &IndexFile {
            packs: vec![(pack.id, pack.blobs.clone())],
        },
        all,
    )
    .await
    .unwrap();
    let snap = Snapshot {
        version: SNAPSHOT_VERSION,
        time: freezer_core::now(),
        time_stamp: 0,
        hostname: "attacker".into(),
        backup_name: "evil".into(),
        mode: "fs".into(),
        level: 0,
        parent: None,
        path_to_backup: "/".into(),
        tree: top_id,
        excludes: vec![],
        program: "test".into(),
        username: "x".into(),
        stats: Default::default(),
        warnings: vec![],
        consistency_checksum: None,
        command: None,
        extra: Default::default(),
    };
    repo.write_snapshot(&snap, all).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_in_a_snapshot_never_leave_the_target() {
    for name in [
        &b"../escape"[..],
        b"/etc/escape",
        b"..",
        b"a/../../escape",
        b".",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let repo_dir = tmp.path().join("repo");
        let jail = tmp.path().join("jail");
        let target = jail.join("target");
        std::fs::create_dir_all(&jail).unwrap();
        init(vec![local(&repo_dir)], Some("pw")).await;
        let id = plant(&repo_dir, name).await;
        let mut repo = open(&[&repo_dir], Some("pw")).await;
        let snaps = repo.snapshots().await.unwrap().0;
        repo.load_index().await.unwrap();
        // By default a restore that leaves anything undone is an error.
        let strict = restore(
            &repo,
            id,
            &snaps[0].1,
            &RestoreOptions::new(&target),
            Arc::new(NoProgress),
        )
        .await
        .unwrap_err();
        assert_eq!(
            strict.kind(),
            freezer_core::ErrorKind::Incomplete,
            "{strict}"
        );
        let mut partial = RestoreOptions::new(&target);
        partial.accept_partial = true;
        let out = restore(&repo, id, &snaps[0].1, &partial, Arc::new(NoProgress))
            .await
            .unwrap();
        assert!(!out.is_complete());
        assert!(
            out.damaged
                .iter()
                .any(|d| d.object.starts_with("tree ") && d.error.contains("invalid entry name")),
            "{:?}",
            out.damaged
        );
        let inside: Vec<_> = std::fs::read_dir(&jail)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            inside,
            [std::ffi::OsString::from("target")],
            "written outside the target"
        );
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
        assert!(!Path::new("/etc/escape").exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_backups_at_once_both_succeed_and_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two, repo_dir) = (
        tmp.path().join("one"),
        tmp.path().join("two"),
        tmp.path().join("repo"),
    );
    corpus(&one, 8, 6);
    odd_tree(&two);
    init(vec![local(&repo_dir)], Some("pw")).await;
    let (mut r1, mut r2) = (
        open(&[&repo_dir], Some("pw")).await,
        open(&[&repo_dir], Some("pw")).await,
    );
    let (a, b) = tokio::join!(
        backup_dir(&mut r1, &one, "one"),
        backup_dir(&mut r2, &two, "two")
    );
    assert!(a.is_complete() && b.is_complete());
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    for (res, src) in [(a, &one), (b, &two)] {
        let target = tmp.path().join(format!(
            "out-{}",
            src.file_name().unwrap().to_string_lossy()
        ));
        let out = restore_id(&mut repo, res.snapshot_id.unwrap(), &target).await;
        assert!(out.is_complete());
        assert_same_tree(src, &target, true);
    }
}

/// A tmpfs mounted for the length of a test.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            st.success(),
            "this test needs to mount a small tmpfs (root, CAP_SYS_ADMIN) to fill a disk"
        );
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_cleanly_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("small");
    let _m = Mount::tmpfs(&repo_dir, "6m");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("small.txt"), b"fits\n").unwrap();
    init(vec![local(&repo_dir)], Some("pw")).await;
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    let first = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    std::fs::write(data.join("big.bin"), pseudo_random(12 << 20, 9)).unwrap();
    let src =
        Arc::new(freezer_core::source::fs::FsSource::new(&data, &Default::default()).unwrap());
    let mut o = freezer_core::engine::BackupOptions::new("test-host", "n", actor());
    o.parent = Some(first);
    let err = freezer_core::engine::backup(&mut repo, src, &o, Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no space left"), "{err}");
    // The repository still opens, the earlier snapshot restores, and after making room the
    // next backup works.
    let mut repo = open(&[&repo_dir], Some("pw")).await;
    assert_eq!(repo.snapshots().await.unwrap().0.len(), 1);
    let target = tmp.path().join("out");
    let out = restore_id(&mut repo, first, &target).await;
    assert!(out.is_complete());
    assert_eq!(std::fs::read(target.join("small.txt")).unwrap(), b"fits\n");
    std::fs::remove_file(data.join("big.bin")).unwrap();
    let again = backup_dir(&mut repo, &data, "n").await;
    assert!(again.is_complete());

    // Restoring into a full disk names the files that did not fit.
    let full = tmp.path().join("full");
    let _f = Mount::tmpfs(&full, "1m");
    std::fs::write(data.join("big.bin"), pseudo_random(3 << 20, 9)).unwrap();
    let big_repo = tmp.path().join("repo2");
    init(vec![local(&big_repo)], None).await;
    let mut repo2 = open(&[&big_repo], None).await;
    let id = backup_dir(&mut repo2, &data, "n")
        .await
        .snapshot_id
        .unwrap();
    let out = restore_id(&mut repo2, id, &full.join("t")).await;
    assert!(!out.is_complete());
    let all = format!("{:?}", out.damaged);
    assert!(
        all.contains("no space left") && all.contains("big.bin"),
        "{all}"
    );
}
