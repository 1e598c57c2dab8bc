//! `init` never writes over a repository, the config is kept twice (and on every replica) so
//! that a lost or damaged one is repaired rather than made again, no advice deletes what a
//! repository depends on, and `repair` moves aside what it cannot read instead of deleting it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use freezer_core::engine::{ConfigRepairReport, NoProgress, repair_config, repair_index};
use freezer_core::repo::{InitOptions, Repository};
use freezer_core::{Error, Id, KdfParams};

use crate::support::*;

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn hex(n: u8) -> String {
    Id::of_stored(&[n]).to_string()
}

async fn init_err(dir: &Path, passphrase: Option<&str>) -> Error {
    let mut o = InitOptions::new(passphrase.map(pass), actor());
    o.kdf = KdfParams::insecure_fast();
    Repository::init(vec![local(dir)], o).await.unwrap_err()
}

/// A repository with one snapshot of an odd tree.
struct Backed {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    repo: PathBuf,
    snap: Id,
}

async fn backed(passphrase: Option<&str>) -> Backed {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    init(vec![local(&repo)], passphrase).await;
    let mut r = open(&[&repo], passphrase).await;
    let snap = backup_dir(&mut r, &data, "n").await.snapshot_id.unwrap();
    Backed {
        _tmp: tmp,
        data,
        repo,
        snap,
    }
}

async fn restores(dirs: &[&Path], passphrase: Option<&str>, snap: Id, data: &Path, out: &Path) {
    let mut r = open(dirs, passphrase).await;
    let res = restore_id(&mut r, snap, out).await;
    assert!(res.is_complete(), "{res:?}");
    assert_same_tree(data, out, true);
}

/// The config with one hex digit of its id changed (still a valid id).
fn damage_id(repo: &Path) {
    let text = std::fs::read_to_string(repo.join("config")).unwrap();
    let at = text.find("\"id\": \"").unwrap() + 7;
    let c = &text[at..at + 1];
    let swapped = if c == "0" { "1" } else { "0" };
    let damaged = format!("{}{swapped}{}", &text[..at], &text[at + 1..]);
    std::fs::write(repo.join("config"), damaged).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn init_refuses_a_folder_holding_any_part_of_a_repository_or_any_file() {
    let tmp = tempfile::tempdir().unwrap();
    let parts = [
        format!("keys/{}", hex(1)),
        format!("data/{}/{}", &hex(2)[..2], hex(2)),
        format!("index/{}", hex(3)),
        format!("snapshots/{}", hex(4)),
        format!("config-copy/{}", hex(5)),
        "notes.txt".to_string(),
        "sub/dir/other".to_string(),
    ];
    for (n, part) in parts.iter().enumerate() {
        let dir = tmp.path().join(format!("r{n}"));
        std::fs::create_dir_all(dir.join(part).parent().unwrap()).unwrap();
        std::fs::write(dir.join(part), b"something").unwrap();
        let before = fingerprint(&dir);
        for passphrase in [None, Some("pw")] {
            let e = init_err(&dir, passphrase).await;
            assert!(matches!(e, Error::BadInput { .. }), "{part}: {e}");
            let text = e.to_string();
            assert!(text.contains(part.as_str()), "{part}: {text}");
            assert!(text.contains(&dir.display().to_string()), "{text}");
            assert_eq!(fingerprint(&dir), before, "{part}: nothing was written");
            assert!(!dir.join("config").exists());
        }
    }
    // A folder holding only an empty folder is empty.
    let dir = tmp.path().join("empty");
    std::fs::create_dir_all(dir.join("x")).unwrap();
    init(vec![local(&dir)], None).await;
    // A second init on a repository is refused as before.
    let e = init_err(&dir, None).await;
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn init_on_a_repository_that_lost_its_config_names_repair_config() {
    let b = backed(Some("pw")).await;
    std::fs::remove_file(b.repo.join("config")).unwrap();
    let before = fingerprint(&b.repo);
    let e = init_err(&b.repo, Some("pw")).await;
    assert!(matches!(e, Error::BadInput { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("freezer repair config"), "{text}");
    assert_eq!(fingerprint(&b.repo), before, "nothing was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_config_is_read_from_its_copy() {
    for passphrase in [Some("pw"), None] {
        let b = backed(passphrase).await;
        std::fs::remove_file(b.repo.join("config")).unwrap();
        let r = open(&[&b.repo], passphrase).await;
        let w = r.warnings().join("\n");
        assert!(
            w.contains("config") && w.contains("freezer repair config"),
            "{w}"
        );
        let out = b.data.with_file_name("out");
        restores(&[&b.repo], passphrase, b.snap, &b.data, &out).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_config_id_is_diagnosed_and_the_key_is_never_called_deletable() {
    let b = backed(Some("pw")).await;
    damage_id(&b.repo);
    // With the copy: the repository opens, and the warning blames the config.
    let r = open(&[&b.repo], Some("pw")).await;
    let w = r.warnings().join("\n");
    assert!(
        w.contains("damaged") && w.contains("freezer repair config"),
        "{w}"
    );
    assert!(!w.contains("can be deleted"), "{w}");
    let out = b.data.with_file_name("out");
    restores(&[&b.repo], Some("pw"), b.snap, &b.data, &out).await;
    // Without the copy (a repository made before copies existed): refused, the config is
    // blamed, the only key is not called deletable.
    std::fs::remove_dir_all(b.repo.join("config-copy")).unwrap();
    let e = Repository::open(vec![local(&b.repo)], Some(&pass("pw")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("config") && text.contains("freezer repair config"),
        "{text}"
    );
    assert!(!text.contains("can be deleted"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_lost_on_one_replica_is_read_from_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, a, b) = (
        tmp.path().join("data"),
        tmp.path().join("a"),
        tmp.path().join("b"),
    );
    odd_tree(&data);
    init(vec![local(&a), local(&b)], Some("pw")).await;
    let mut r = open(&[&a, &b], Some("pw")).await;
    let snap = backup_dir(&mut r, &data, "n").await.snapshot_id.unwrap();
    std::fs::remove_file(a.join("config")).unwrap();
    std::fs::remove_dir_all(a.join("config-copy")).unwrap();
    let r = open(&[&a, &b], Some("pw")).await;
    let w = r.warnings().join("\n");
    assert!(w.contains("freezer repair config"), "{w}");
    restores(&[&a, &b], Some("pw"), snap, &data, &tmp.path().join("out")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn repair_index_moves_an_undecodable_index_file_to_quarantine() {
    let b = backed(Some("pw")).await;
    let index = files_in(&b.repo.join("index")).remove(0);
    let mut bytes = std::fs::read(&index).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&index, &bytes).unwrap();
    let mut repo = open(&[&b.repo], Some("pw")).await;
    let fixed = repair_index(&mut repo, &actor(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(fixed.is_complete(), "{fixed:?}");
    let moved = b
        .repo
        .join("quarantine/index")
        .join(index.file_name().unwrap());
    assert_eq!(std::fs::read(&moved).unwrap(), bytes, "kept byte for byte");
    assert!(!index.exists());
    let key = format!(
        "quarantine/index/{}",
        index.file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(fixed.storages[0].quarantined, [key]);
    let out = b.data.with_file_name("out");
    restores(&[&b.repo], Some("pw"), b.snap, &b.data, &out).await;
}

async fn repair(dirs: &[&Path], passphrase: Option<&str>) -> ConfigRepairReport {
    let r = repair_config(
        dirs.iter().map(|d| local(d)).collect(),
        passphrase.map(pass).as_ref(),
    )
    .await
    .unwrap();
    assert!(r.is_complete(), "{r:?}");
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn repair_config_restores_a_deleted_config_from_its_copy() {
    for passphrase in [Some("pw"), None] {
        let b = backed(passphrase).await;
        let config = std::fs::read(b.repo.join("config")).unwrap();
        std::fs::remove_file(b.repo.join("config")).unwrap();
        let r = repair(&[&b.repo], passphrase).await;
        assert!(
            r.storages[0].config_written && !r.storages[0].copy_written,
            "{r:?}"
        );
        assert_eq!(r.storages[0].config_was, "missing");
        assert!(r.source.contains("config-copy/"), "{r:?}");
        assert_eq!(std::fs::read(b.repo.join("config")).unwrap(), config);
        let r = open(&[&b.repo], passphrase).await;
        assert!(r.warnings().is_empty(), "{:?}", r.warnings());
        // Run again: an intact config is never written over.
        let r = repair(&[&b.repo], passphrase).await;
        assert!(!r.wrote(), "{r:?}");
        let out = b.data.with_file_name("out");
        restores(&[&b.repo], passphrase, b.snap, &b.data, &out).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn repair_config_replaces_a_damaged_id_and_keeps_the_damaged_one_aside() {
    let b = backed(Some("pw")).await;
    let good = std::fs::read(b.repo.join("config")).unwrap();
    damage_id(&b.repo);
    let damaged = std::fs::read(b.repo.join("config")).unwrap();
    let r = repair(&[&b.repo], Some("pw")).await;
    let s = &r.storages[0];
    assert!(s.config_was.starts_with("damaged"), "{r:?}");
    assert_eq!(s.copy_was, "intact");
    assert_eq!(std::fs::read(b.repo.join("config")).unwrap(), good);
    let aside = b.repo.join(&s.quarantined[0]);
    assert_eq!(std::fs::read(aside).unwrap(), damaged);
    let out = b.data.with_file_name("out");
    restores(&[&b.repo], Some("pw"), b.snap, &b.data, &out).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_copy_left_an_encrypted_config_is_rebuilt_around_its_key() {
    // Only the id damaged: the rest comes from the damaged config.
    let b = backed(Some("pw")).await;
    let good = std::fs::read(b.repo.join("config")).unwrap();
    damage_id(&b.repo);
    std::fs::remove_dir_all(b.repo.join("config-copy")).unwrap();
    let r = repair(&[&b.repo], Some("pw")).await;
    assert!(r.source.starts_with("rebuilt from keys/"), "{r:?}");
    assert!(r.notes[0].contains("damaged"), "{r:?}");
    assert_eq!(std::fs::read(b.repo.join("config")).unwrap(), good);
    // Nothing left but the key: the defaults, said so.
    std::fs::remove_file(b.repo.join("config")).unwrap();
    std::fs::remove_dir_all(b.repo.join("config-copy")).unwrap();
    let r = repair(&[&b.repo], Some("pw")).await;
    assert!(r.notes[0].contains("defaults"), "{r:?}");
    let out = b.data.with_file_name("out");
    restores(&[&b.repo], Some("pw"), b.snap, &b.data, &out).await;
    // Without encryption the master key was only in the config: not rebuilt, and said why.
    let b = backed(None).await;
    std::fs::remove_file(b.repo.join("config")).unwrap();
    std::fs::remove_dir_all(b.repo.join("config-copy")).unwrap();
    let before = fingerprint(&b.repo);
    let e = repair_config(vec![local(&b.repo)], None).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("master key"), "{e}");
    assert_eq!(fingerprint(&b.repo), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn repair_config_with_a_wrong_passphrase_writes_nothing() {
    let b = backed(Some("pw")).await;
    std::fs::remove_file(b.repo.join("config")).unwrap();
    let before = fingerprint(&b.repo);
    let e = repair_config(vec![local(&b.repo)], Some(&pass("wrong")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongKey { .. }), "{e}");
    let e = repair_config(vec![local(&b.repo)], None).await.unwrap_err();
    assert!(matches!(e, Error::WrongKey { .. }), "{e}");
    assert_eq!(fingerprint(&b.repo), before, "nothing written");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_lost_or_damaged_on_one_replica_is_repaired_from_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, a, b) = (
        tmp.path().join("data"),
        tmp.path().join("a"),
        tmp.path().join("b"),
    );
    odd_tree(&data);
    init(vec![local(&a), local(&b)], Some("pw")).await;
    let mut r = open(&[&a, &b], Some("pw")).await;
    let snap = backup_dir(&mut r, &data, "n").await.snapshot_id.unwrap();
    let good = std::fs::read(b.join("config")).unwrap();
    // Lost on a, config and copy.
    std::fs::remove_file(a.join("config")).unwrap();
    std::fs::remove_dir_all(a.join("config-copy")).unwrap();
    let r = repair(&[&a, &b], Some("pw")).await;
    assert!(r.source.starts_with(&local(&b).describe()), "{r:?}");
    let s = &r.storages[0];
    assert!(s.config_written && s.copy_written, "{r:?}");
    assert!(!r.storages[1].config_written && !r.storages[1].copy_written);
    assert_eq!(std::fs::read(a.join("config")).unwrap(), good);
    // Damaged on b (its id), while a is whole: the key tells which is right.
    damage_id(&b);
    let r = open(&[&a, &b], Some("pw")).await;
    let w = r.warnings().join("\n");
    assert!(
        w.contains("damaged") && w.contains("freezer repair config"),
        "{w}"
    );
    repair(&[&a, &b], Some("pw")).await;
    assert_eq!(std::fs::read(b.join("config")).unwrap(), good);
    for (n, dir) in [&a, &b].into_iter().enumerate() {
        let out = tmp.path().join(format!("out{n}"));
        restores(&[dir], Some("pw"), snap, &data, &out).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_confirmed_by_its_copy_is_never_rebuilt_around_a_stray_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, other) = (tmp.path().join("repo"), tmp.path().join("other"));
    init(vec![local(&repo)], Some("pw")).await;
    init(vec![local(&other)], Some("pw")).await;
    // The repository's own key gone, a stray key of another repository in its place.
    std::fs::remove_dir_all(repo.join("keys")).unwrap();
    std::fs::create_dir_all(repo.join("keys")).unwrap();
    for k in files_in(&other.join("keys")) {
        std::fs::copy(&k, repo.join("keys").join(k.file_name().unwrap())).unwrap();
    }
    let before = fingerprint(&repo);
    let e = repair_config(vec![local(&repo)], Some(&pass("pw")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongKey { .. }), "{e}");
    assert!(e.to_string().contains("nothing was written"), "{e}");
    assert!(!e.to_string().contains("can be deleted"), "{e}");
    assert_eq!(fingerprint(&repo), before, "the intact config stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn repair_config_never_replaces_another_repository_that_its_copy_confirms() {
    let tmp = tempfile::tempdir().unwrap();
    let (x, y) = (tmp.path().join("x"), tmp.path().join("y"));
    init(vec![local(&x)], Some("pw")).await;
    init(vec![local(&y)], Some("pw")).await;
    let (before_x, before_y) = (all_bytes(&x), all_bytes(&y));
    // Given both, with a passphrase that opens both: whichever the key picks, the other's
    // config is confirmed by its own copy, so it is another repository, never replaced.
    let r = repair_config(vec![local(&x), local(&y)], Some(&pass("pw")))
        .await
        .unwrap();
    assert!(!r.is_complete(), "{r:?}");
    assert!(
        r.storages
            .iter()
            .filter_map(|s| s.error.as_deref())
            .any(|e| e.contains("another repository")),
        "{r:?}"
    );
    assert_eq!(all_bytes(&x), before_x);
    assert_eq!(all_bytes(&y), before_y);
}
