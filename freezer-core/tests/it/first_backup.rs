//! A job's first backup creates its repository, as upstream's agent creates its container:
//! only where nothing is, once when several nodes start together, and never over other files.

use std::path::Path;

use freezer_core::Error;
use freezer_core::engine::BackupResult;
use freezer_core::job::{
    Action, ActionOutcome, FreezerAction, RunContext, StorageSpec, run_action,
};
use freezer_core::repo::Repository;

use crate::support::*;

fn backup_action(
    repos: &[&Path],
    data: &Path,
    host: &str,
    pass_file: Option<&Path>,
) -> FreezerAction {
    let mut a = FreezerAction {
        action: Some(Action::Backup),
        path_to_backup: Some(data.display().to_string()),
        backup_name: Some("web".into()),
        hostname: Some(host.into()),
        container: Some(repos[0].display().to_string()),
        encrypt_pass_file: pass_file.map(|p| p.display().to_string()),
        ..FreezerAction::default()
    };
    // More storages of the same run, as upstream's `[storage:NAME]` sections.
    a.storages = repos[1..]
        .iter()
        .map(|r| StorageSpec::from_url(&r.display().to_string()).unwrap())
        .collect();
    a
}

async fn backup(a: &FreezerAction) -> BackupResult {
    match run_action(a, &RunContext::current()).await.unwrap() {
        ActionOutcome::Backup(b) => {
            assert!(b.is_complete(), "{b:?}");
            *b
        }
        other => panic!("not a backup: {other:?}"),
    }
}

fn keys(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("keys")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_first_backup_creates_an_encrypted_repository_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, data, pass_file) = (
        tmp.path().join("a/b/repo"),
        tmp.path().join("data"),
        tmp.path().join("pass"),
    );
    odd_tree(&data);
    std::fs::write(&pass_file, "secret\n").unwrap();
    let a = backup_action(&[&repo], &data, "node1", Some(&pass_file));

    let first = backup(&a).await;
    assert_eq!(first.created_repository, vec![local(&repo).describe()]);
    assert_eq!(keys(&repo), 1);
    let second = backup(&a).await;
    assert!(second.created_repository.is_empty(), "{second:?}");
    assert_eq!(second.snapshot.level, 1);

    // Encrypted with the job's passphrase: without it, nothing opens.
    let e = Repository::open(vec![local(&repo)], None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongKey { .. }), "{e}");
    let mut r = open(&[&repo], Some("secret")).await;
    let out = tmp.path().join("out");
    restore_id(&mut r, second.snapshot_id.unwrap(), &out).await;
    assert_same_tree(&data, &out, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_place_holding_other_files_is_never_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, data) = (tmp.path().join("repo"), tmp.path().join("data"));
    odd_tree(&data);
    std::fs::create_dir_all(repo.join("photos")).unwrap();
    std::fs::write(repo.join("photos/cat.jpg"), b"someone's files").unwrap();
    let before = fingerprint(&repo);

    let e = run_action(
        &backup_action(&[&repo], &data, "node1", None),
        &RunContext::current(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::BadInput { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&repo.display().to_string()) && text.contains("photos/cat.jpg"),
        "{text}"
    );
    assert!(text.contains("as init does"), "{text}");
    assert_eq!(fingerprint(&repo), before, "nothing was written");
    assert!(!repo.join("config").exists() && !repo.join("keys").exists());
}

/// An operator who switches engines keeps the container: the repository is made beside
/// upstream's backups, which stay as they were, and check, repair and prune leave them alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_repository_is_made_beside_upstreams_backups_and_leaves_them_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, data) = (tmp.path().join("repo"), tmp.path().join("data"));
    odd_tree(&data);
    // What upstream's agent leaves in a local container.
    let theirs = Path::new("node1_web/1700000000/0_1700000000");
    let (tdata, tmeta) = (
        repo.join("data/tar").join(theirs),
        repo.join("metadata/tar").join(theirs),
    );
    std::fs::create_dir_all(&tdata).unwrap();
    std::fs::create_dir_all(&tmeta).unwrap();
    std::fs::write(tdata.join("data"), b"upstream's tar stream").unwrap();
    std::fs::write(tdata.join("engine_metadata"), b"").unwrap();
    std::fs::write(
        tmeta.join("metadata"),
        br#"{"engine_name": "tar", "compression": "gzip", "encryption": false}"#,
    )
    .unwrap();
    let theirs_before: Vec<_> = fingerprint(&repo).into_iter().collect();

    let a = backup_action(&[&repo], &data, "node1", None);
    let first = backup(&a).await;
    assert_eq!(first.created_repository, vec![local(&repo).describe()]);
    backup(&a).await;

    let mut r = open(&[&repo], None).await;
    let report = freezer_core::engine::check(
        &mut r,
        &freezer_core::engine::CheckOptions {
            read_data: freezer_core::engine::ReadData::All,
            actor: freezer_core::repo::Actor::current(),
        },
        std::sync::Arc::new(freezer_core::engine::NoProgress),
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(
        report.unreferenced_packs.is_empty(),
        "upstream's objects are not stray packs: {:?}",
        report.unreferenced_packs
    );
    freezer_core::engine::prune(
        &mut r,
        &freezer_core::engine::PruneOptions {
            max_unused: 0.0,
            ..Default::default()
        },
        &freezer_core::repo::Actor::current(),
        std::sync::Arc::new(freezer_core::engine::NoProgress),
    )
    .await
    .unwrap();
    let after = fingerprint(&repo);
    for (path, print) in &theirs_before {
        assert_eq!(after.get(path), Some(print), "{} changed", path.display());
    }
    let out = tmp.path().join("out");
    restore_id(&mut r, first.snapshot_id.unwrap(), &out).await;
    assert_same_tree(&data, &out, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_runs_and_front_ends_that_ask_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, data) = (tmp.path().join("repo"), tmp.path().join("data"));
    odd_tree(&data);
    let mut a = backup_action(&[&repo], &data, "node1", None);
    a.dry_run = true;
    let e = run_action(&a, &RunContext::current()).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    a.dry_run = false;
    let mut ctx = RunContext::current();
    ctx.create_repository = false;
    let e = run_action(&a, &ctx).await.unwrap_err();
    assert!(
        matches!(e, Error::NotFound { .. }) && e.to_string().contains("first with init"),
        "{e}"
    );
    // Restores, listings and retention never create one either.
    a.action = Some(Action::Info);
    let e = run_action(&a, &RunContext::current()).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(!repo.exists(), "nothing was made");
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_starting_together_share_one_new_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, pass_file) = (tmp.path().join("repo"), tmp.path().join("pass"));
    std::fs::write(&pass_file, "shared\n").unwrap();
    let mut runs = Vec::new();
    for n in 0..4 {
        let data = tmp.path().join(format!("data{n}"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("f"), pseudo_random(100_000, n)).unwrap();
        let a = backup_action(&[&repo], &data, &format!("node{n}"), Some(&pass_file));
        runs.push(tokio::spawn(async move { (backup(&a).await, data) }));
    }
    let mut creators = 0;
    let mut done = Vec::new();
    for r in runs {
        let (b, data) = r.await.unwrap();
        creators += b.created_repository.len();
        done.push((b.snapshot_id.unwrap(), data));
    }
    assert_eq!(creators, 1, "one node created it");
    assert_eq!(keys(&repo), 1, "the losers' key files are gone");
    let mut r = open(&[&repo], Some("shared")).await;
    for (i, (id, data)) in done.iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        restore_id(&mut r, *id, &out).await;
        assert_same_tree(data, &out, true);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_storage_added_to_a_job_becomes_a_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let (r1, r2, data) = (
        tmp.path().join("r1"),
        tmp.path().join("r2"),
        tmp.path().join("data"),
    );
    odd_tree(&data);
    backup(&backup_action(&[&r1], &data, "node1", None)).await;
    std::fs::create_dir_all(&r2).unwrap();
    let b = backup(&backup_action(&[&r1, &r2], &data, "node1", None)).await;
    assert_eq!(b.created_repository, vec![local(&r2).describe()]);
    assert!(b.sinks.iter().all(|s| s.holds_snapshot), "{b:?}");
    let mut r = open(&[&r2], None).await;
    let out = tmp.path().join("out");
    restore_id(&mut r, b.snapshot_id.unwrap(), &out).await;
    assert_same_tree(&data, &out, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_left_by_a_lost_race_is_passed_over() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, other) = (tmp.path().join("repo"), tmp.path().join("other"));
    init(vec![local(&repo)], Some("pw")).await;
    init(vec![local(&other)], Some("pw")).await;
    // A key of another repository that opens with the same passphrase, as an `init` that lost
    // the race for the config and died before removing its key would leave.
    let stray = std::fs::read_dir(other.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::copy(stray.path(), repo.join("keys").join(stray.file_name())).unwrap();
    Repository::open(vec![local(&repo)], Some(&pass("pw")))
        .await
        .unwrap();
    // When only the stray key opens, the error names it.
    let own: Vec<_> = std::fs::read_dir(repo.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name() != Some(&stray.file_name()))
        .collect();
    std::fs::remove_file(&own[0]).unwrap();
    let e = Repository::open(vec![local(&repo)], Some(&pass("pw")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("another repository"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_replaced_during_a_backup_keeps_the_snapshot_off_that_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, other, data) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("other"),
        tmp.path().join("data"),
    );
    odd_tree(&data);
    init(vec![local(&a), local(&b)], None).await;
    init(vec![local(&other)], None).await;
    let mut repo = open(&[&a, &b], None).await;
    // As where creating is not atomic: a racing node's config replaced the one opened.
    std::fs::copy(other.join("config"), b.join("config")).unwrap();
    let r = backup_dir(&mut repo, &data, "n").await;
    assert!(!r.is_complete());
    assert!(
        r.sinks[0].holds_snapshot && !r.sinks[1].holds_snapshot,
        "{r:?}"
    );
    let why = r.sinks[1].error.clone().unwrap();
    assert!(
        why.contains("another node created a repository there"),
        "{why}"
    );
    assert!(std::fs::read_dir(b.join("snapshots")).map_or(0, |d| d.count()) == 0);
    assert!(std::fs::read_dir(b.join("index")).map_or(0, |d| d.count()) == 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_read_from_an_intact_copy_and_a_wrong_passphrase_stays_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init(vec![local(&a), local(&b)], Some("pw")).await;
    let key = std::fs::read_dir(a.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // The only key damaged on a, intact on b: it opens from b.
    let bytes = std::fs::read(&key).unwrap();
    std::fs::write(&key, &bytes[..bytes.len() / 2]).unwrap();
    Repository::open(vec![local(&a), local(&b)], Some(&pass("pw")))
        .await
        .unwrap();
    // Alone, a has no intact key: that is damage, whatever the passphrase.
    let e = Repository::open(vec![local(&a)], Some(&pass("pw")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    // With an intact key beside the damaged one, a wrong passphrase is a wrong key (named so
    // for scripts and retries), and the damage is mentioned.
    let repo = Repository::open(vec![local(&b)], Some(&pass("pw")))
        .await
        .unwrap();
    repo.add_key(&pass("pw"), &pass("second"), Default::default(), &actor())
        .await
        .unwrap();
    let damaged = b.join("keys").join(key.file_name().unwrap());
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
    Repository::open(vec![local(&b)], Some(&pass("second")))
        .await
        .unwrap();
    let e = Repository::open(vec![local(&b)], Some(&pass("wrong")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongKey { .. }), "{e}");
    assert!(e.to_string().contains("damaged"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_passphrase_file_is_named_and_nothing_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, data) = (tmp.path().join("repo"), tmp.path().join("data"));
    odd_tree(&data);
    let missing = tmp.path().join("no-such-pass");
    let a = backup_action(&[&repo], &data, "node1", Some(&missing));
    let e = run_action(&a, &RunContext::current()).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("no-such-pass") && !text.contains("creating"),
        "{text}"
    );
    assert!(!repo.exists());
}
