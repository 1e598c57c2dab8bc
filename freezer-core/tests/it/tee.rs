//! One backup to several storages: the source is read once, each storage holds a complete
//! repository, a storage that fails gets no snapshot and catches up on the next run.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use freezer_core::engine::inspect;
use freezer_core::repo::Repository;
use freezer_core::sink::Sink;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn one_backup_to_three_repositories_reads_the_source_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    odd_tree(&data);
    let dirs: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("repo{i}")))
        .collect();
    let paths: Vec<&std::path::Path> = dirs.iter().map(|d| d.as_path()).collect();
    init(dirs.iter().map(|d| local(d)).collect(), Some("pw")).await;
    let mut repo = open(&paths, Some("pw")).await;
    let src = Counting::new(&data);
    let read = src.bytes.clone();
    let res = backup_source(&mut repo, Arc::new(src), "n", None).await;
    assert!(res.is_complete(), "{:?}", res.sinks);
    assert!(res.sinks.iter().all(|s| s.holds_snapshot));
    // Read once: exactly the bytes of one backup, which are the file data (holes excluded).
    let once = read.load(Ordering::Relaxed);
    assert_eq!(once, res.snapshot.stats.bytes_read);
    assert_eq!(
        once,
        6 + 3 * (1 << 20) + 8 + 18 + (1 << 20),
        "one read of each file's data"
    );
    // The same packs, byte for byte, in each.
    let packs: Vec<Vec<Vec<u8>>> = dirs
        .iter()
        .map(|d| {
            pack_files(d)
                .iter()
                .map(|p| std::fs::read(p).unwrap())
                .collect()
        })
        .collect();
    assert_eq!(packs[0], packs[1]);
    assert_eq!(packs[0], packs[2]);
    for (i, d) in dirs.iter().enumerate() {
        let mut alone = open(&[d], Some("pw")).await;
        let target = tmp.path().join(format!("out{i}"));
        let out = restore_id(&mut alone, res.snapshot_id.unwrap(), &target).await;
        assert!(out.is_complete(), "{out:?}");
        assert_same_tree(&data, &target, true);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storage_failing_mid_run_holds_no_snapshot_and_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("corpus");
    corpus(&data, 6, 5);
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    init_small_packs(vec![local(&a), local(&b), local(&c)], None).await;
    // b drops after three puts: in the middle of the packs.
    let flaky = Flaky::new(local(&b), 3);
    let sinks: Vec<Arc<dyn Sink>> = vec![local(&a), flaky.clone(), local(&c)];
    let mut repo = Repository::open(sinks, None).await.unwrap();
    let res = backup_source(
        &mut repo,
        Arc::new(freezer_core::source::fs::FsSource::new(&data, &Default::default()).unwrap()),
        "c",
        None,
    )
    .await;
    let holds: Vec<bool> = res.sinks.iter().map(|s| s.holds_snapshot).collect();
    assert_eq!(holds, [true, false, true], "{:?}", res.sinks);
    assert!(
        res.sinks[1].error.as_deref().unwrap().contains("reset"),
        "{:?}",
        res.sinks[1]
    );
    assert!(!res.is_complete());
    // b shows no snapshot it does not fully hold; a and c restore alone.
    assert!(
        open(&[&b], None)
            .await
            .snapshots()
            .await
            .unwrap()
            .0
            .is_empty()
    );
    for d in [&a, &c] {
        let target = tmp
            .path()
            .join(format!("out-{}", d.file_name().unwrap().to_string_lossy()));
        let out = restore_id(
            &mut open(&[d], None).await,
            res.snapshot_id.unwrap(),
            &target,
        )
        .await;
        assert!(out.is_complete());
        assert_same_tree(&data, &target, true);
    }
    // Next run, b is back: it receives everything its snapshot needs.
    let mut repo = open(&[&a, &b, &c], None).await;
    let next = backup_dir(&mut repo, &data, "c").await;
    assert!(next.is_complete(), "{:?}", next.sinks);
    let mut alone = open(&[&b], None).await;
    alone.load_index().await.unwrap();
    let snaps = alone.snapshots().await.unwrap().0;
    assert_eq!(snaps.len(), 1);
    let found = inspect(&alone, snaps[0].0, &snaps[0].1, true)
        .await
        .unwrap();
    assert!(found.damaged.is_empty(), "{:?}", found.damaged);
    let target = tmp.path().join("out-b");
    let out = restore_id(&mut alone, snaps[0].0, &target).await;
    assert!(out.is_complete());
    assert_same_tree(&data, &target, true);
    // And a and c did not store the data a second time.
    assert!(
        next.snapshot.stats.bytes_added < 2 * (1 << 20) + du(&b),
        "{:?}",
        next.snapshot.stats
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_works_when_the_first_storage_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    odd_tree(&data);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init(vec![local(&a), local(&b)], Some("pw")).await;
    let mut repo = open(&[&a, &b], Some("pw")).await;
    let id = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    let down = Flaky::new(local(&a), i64::MAX);
    down.down.store(true, Ordering::SeqCst);
    let mut repo = Repository::open(vec![down, local(&b)], Some(&pass("pw")))
        .await
        .unwrap();
    assert!(repo.status()[0].error.is_some());
    let target = tmp.path().join("out");
    let out = restore_id(&mut repo, id, &target).await;
    assert!(out.is_complete(), "{out:?}");
    assert_same_tree(&data, &target, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn init_adds_a_replica_to_an_existing_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    odd_tree(&data);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init(vec![local(&a)], Some("pw")).await;
    let mut repo = open(&[&a], Some("pw")).await;
    backup_dir(&mut repo, &data, "n").await;
    // Adding b: same repository, same keys; the wrong passphrase is refused.
    let mut o = freezer_core::repo::InitOptions::new(Some(pass("nope")), actor());
    o.kdf = freezer_core::KdfParams::insecure_fast();
    assert!(
        Repository::init(vec![local(&a), local(&b)], o)
            .await
            .is_err()
    );
    let mut o = freezer_core::repo::InitOptions::new(Some(pass("pw")), actor());
    o.kdf = freezer_core::KdfParams::insecure_fast();
    let report = Repository::init(vec![local(&a), local(&b)], o)
        .await
        .unwrap();
    assert_eq!((report.created.len(), report.existing.len()), (1, 1));
    // The next backup fills b with everything.
    let mut both = open(&[&a, &b], Some("pw")).await;
    let res = backup_dir(&mut both, &data, "n").await;
    assert!(res.is_complete());
    let target = tmp.path().join("out");
    restore_id(
        &mut open(&[&b], Some("pw")).await,
        res.snapshot_id.unwrap(),
        &target,
    )
    .await;
    assert_same_tree(&data, &target, true);
    // Two different repositories cannot be written as one.
    let other = tmp.path().join("other");
    init(vec![local(&other)], Some("pw")).await;
    let err = Repository::open(vec![local(&a), local(&other)], Some(&pass("pw")))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("replicas of one repository"),
        "{err}"
    );
}

/// A retry policy short enough that a server that stays down fails the sink within a second.
fn impatient(sink: Arc<dyn Sink>) -> Arc<dyn Sink> {
    Arc::new(freezer_core::sink::Retrying::new(
        sink,
        freezer_core::sink::RetryPolicy {
            max_retries: 2,
            initial_delay: std::time::Duration::from_millis(50),
            ..Default::default()
        },
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tee_to_local_s3_swift_and_ssh_survives_a_server_killed_mid_run() {
    use crate::servers::{S3Server, SshServer, SwiftServer};
    use freezer_core::sink::{S3Sink, SshSink, SwiftSink};

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("corpus");
    corpus(&data, 12, 11);
    let mut s3 = S3Server::start();
    let ssh = SshServer::start();
    let remote = ssh.dir.path().join("remote/repo");
    let local_dir = tmp.path().join("local");
    let s3_opts = s3.options("tee", "node1");
    let s3_sink =
        || -> Arc<dyn Sink> { impatient(Arc::new(S3Sink::new(s3_opts.clone()).unwrap())) };
    let ssh_opts = ssh.options(remote.to_str().unwrap());
    let ssh_sink =
        || -> Arc<dyn Sink> { impatient(Arc::new(SshSink::new(ssh_opts.clone()).unwrap())) };
    let swift_opts = SwiftServer::shared().options("tee/node1", 4 << 20);
    let swift_sink =
        || -> Arc<dyn Sink> { impatient(Arc::new(SwiftSink::new(swift_opts.clone()).unwrap())) };
    s3_sink().prepare().await.unwrap();
    swift_sink().prepare().await.unwrap();
    let all = || vec![local(&local_dir), s3_sink(), swift_sink(), ssh_sink()];
    init_small_packs(all(), Some("pw")).await;

    // sshd dies once a few packs have reached it.
    let watched = remote.join("data");
    let mut ssh = ssh;
    let killer = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while walk_files(&watched) < 3 {
            assert!(std::time::Instant::now() < deadline, "no pack reached sshd");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        ssh.kill();
        ssh
    });
    let mut repo = Repository::open(all(), Some(&pass("pw"))).await.unwrap();
    let res = backup_dir(&mut repo, &data, "db").await;
    let mut ssh = killer.join().unwrap();
    let holds: Vec<bool> = res.sinks.iter().map(|s| s.holds_snapshot).collect();
    assert_eq!(holds, [true, true, true, false], "{:?}", res.sinks);
    assert!(!res.is_complete());
    let id = res.snapshot_id.unwrap();

    // The survivors restore alone; the killed one shows no snapshot.
    for (name, sink) in [
        ("local", local(&local_dir)),
        ("s3", s3_sink()),
        ("swift", swift_sink()),
    ] {
        let mut alone = Repository::open(vec![sink], Some(&pass("pw")))
            .await
            .unwrap();
        let target = tmp.path().join(format!("out-{name}"));
        let out = restore_id(&mut alone, id, &target).await;
        assert!(out.is_complete(), "{name}: {out:?}");
        assert_same_tree(&data, &target, true);
    }
    ssh.restart();
    let alone = Repository::open(vec![ssh_sink()], Some(&pass("pw")))
        .await
        .unwrap();
    assert!(alone.snapshots().await.unwrap().0.is_empty());

    // The next run catches the ssh storage up.
    let mut repo = Repository::open(all(), Some(&pass("pw"))).await.unwrap();
    let next = backup_dir(&mut repo, &data, "db").await;
    assert!(next.is_complete(), "{:?}", next.sinks);
    let mut alone = Repository::open(vec![ssh_sink()], Some(&pass("pw")))
        .await
        .unwrap();
    let snaps = alone.snapshots().await.unwrap().0;
    assert_eq!(snaps.len(), 1, "only the complete snapshot");
    let target = tmp.path().join("out-ssh");
    let out = restore_id(&mut alone, snaps[0].0, &target).await;
    assert!(out.is_complete(), "{out:?}");
    assert_same_tree(&data, &target, true);

    // With the first storage (s3) down, a restore reads from the others.
    s3.kill();
    let mut repo = Repository::open(
        vec![s3_sink(), swift_sink(), ssh_sink(), local(&local_dir)],
        Some(&pass("pw")),
    )
    .await
    .unwrap();
    assert!(repo.status()[0].error.is_some());
    let target = tmp.path().join("out-s3-down");
    let out = restore_id(&mut repo, id, &target).await;
    assert!(out.is_complete(), "{out:?}");
    assert_same_tree(&data, &target, true);
}

fn walk_files(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk_files(&e.path())
            } else {
                usize::from(!e.file_name().to_string_lossy().starts_with(".tmp"))
            }
        })
        .sum()
}
