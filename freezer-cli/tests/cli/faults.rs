//! Fault injection: for each kind of damage, the healing steps that README.md and
//! docs/FORMAT.md document are run as an operator would run them, and then
//! - every snapshot that did not depend on the damaged object restores equal,
//! - a new backup restores equal, and `check --read-data` passes,
//! - nothing outside the damaged object was deleted: every object of the repository (but the
//!   damaged one, and index files, which are derived from the packs' headers and which repairs
//!   rewrite) is still there with the same bytes, or was moved aside under `quarantine/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Env, stderr};
use crate::support::{self, assert_same_tree};

/// A repository with two series: `a` (backed up first) and `b` (new data, in packs of its own).
struct Setup {
    /// A small file system holding the repository, for the full-storage case (unmounted before
    /// `e` is removed: fields drop in order).
    _disk: Option<super::full::Mount>,
    e: Env,
    /// The repository's folder, relative to `e`.
    repo_arg: &'static str,
    encrypted: bool,
    /// Snapshot ids of `a` and `b`.
    a: String,
    b: String,
    /// The repository's objects after both backups: path relative to the repository -> bytes.
    before: BTreeMap<PathBuf, Vec<u8>>,
    /// Packs written by the backup of `a`.
    a_packs: Vec<PathBuf>,
    /// Packs written by the backup of `b` (none of `a`'s blobs are in them).
    b_packs: Vec<PathBuf>,
}

fn objects(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    support::all_bytes(root)
        .into_iter()
        .map(|(p, b)| (p.strip_prefix(root).unwrap().to_path_buf(), b))
        .filter(|(p, _)| !p.to_string_lossy().contains(".tmp-"))
        .collect()
}

fn pack_set(repo: &Path) -> Vec<PathBuf> {
    support::pack_files(repo)
}

impl Setup {
    fn new(encrypted: bool) -> Setup {
        Setup::create(encrypted, "repo", None)
    }

    /// A repository in `repo_arg` (relative to the test's folder), on a tmpfs of `disk_size`
    /// mounted at `disk` when one is given.
    fn create(encrypted: bool, repo_arg: &'static str, disk: Option<(&str, &str)>) -> Setup {
        let e = Env::new();
        let disk = disk.map(|(at, size)| super::full::Mount::tmpfs(&e.path(at), size));
        support::corpus(&e.path("a"), 3, 11);
        support::corpus(&e.path("b"), 3, 12);
        let mut init = vec!["init", "--repo", repo_arg, "--pack-size", "1"];
        if encrypted {
            init.extend(["--encrypt-pass-file", e.pass()]);
        }
        e.ok(&init);
        let mut s = Setup {
            _disk: disk,
            e,
            repo_arg,
            encrypted,
            a: String::new(),
            b: String::new(),
            before: BTreeMap::new(),
            a_packs: vec![],
            b_packs: vec![],
        };
        s.a = s.backup("a");
        s.a_packs = pack_set(&s.repo());
        s.b = s.backup("b");
        s.b_packs = pack_set(&s.repo())
            .into_iter()
            .filter(|p| !s.a_packs.contains(p))
            .collect();
        assert!(s.b_packs.len() >= 2, "b wrote {} packs", s.b_packs.len());
        s.before = objects(&s.repo());
        s
    }

    fn repo(&self) -> PathBuf {
        self.e.path(self.repo_arg)
    }

    /// `freezer <args> --repo repo [--encrypt-pass-file pass]`.
    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut a = args.to_vec();
        a.extend(["--repo", self.repo_arg]);
        if self.encrypted {
            a.extend(["--encrypt-pass-file", self.e.pass()]);
        }
        a
    }

    fn backup(&self, name: &str) -> String {
        let b =
            self.e
                .json(&self.args(&["backup", "--path-to-backup", name, "--backup-name", name]));
        assert_eq!(b["complete"], true, "{b}");
        b["snapshot_id"].as_str().unwrap().to_string()
    }

    /// Restores snapshot `id` and compares it with folder `name`.
    fn restores_equal(&self, id: &str, name: &str) {
        let target = self.e.path(&format!("out-{id}"));
        let _ = std::fs::remove_dir_all(&target);
        self.e.ok(&self.args(&[
            "restore",
            "--snapshot",
            id,
            "--restore-abs-path",
            target.to_str().unwrap(),
        ]));
        assert_same_tree(&self.e.path(name), &target, false);
        std::fs::remove_dir_all(&target).unwrap();
    }

    /// Runs one documented healing step; `check` steps may exit 3 (they report the damage).
    fn step(&self, args: &[&str]) {
        let o = self.e.run(&self.args(args));
        let damage_report = args[0] == "check" && o.status.code() == Some(3);
        assert!(
            o.status.success() || damage_report,
            "healing step freezer {args:?} failed: {}",
            stderr(&o)
        );
    }

    /// What every case proves once its healing steps ran. `damaged` is the damaged object,
    /// relative to the repository; `lost` the snapshots that depended on it.
    fn healed(&self, damaged: &Path, lost: &[&str]) {
        let (a, b) = (self.a.clone(), self.b.clone());
        if !lost.contains(&a.as_str()) {
            self.restores_equal(&a, "a");
        }
        if !lost.contains(&b.as_str()) {
            self.restores_equal(&b, "b");
        }
        // A new backup of each series restores equal, and the whole repository verifies.
        let a2 = self.backup("a");
        let b2 = self.backup("b");
        self.restores_equal(&a2, "a");
        self.restores_equal(&b2, "b");
        let o = self.e.run(&self.args(&["check", "--read-data"]));
        assert!(
            o.status.success(),
            "check --read-data after healing: {}{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
        // Nothing outside the damaged object was deleted.
        let now = objects(&self.repo());
        for (path, bytes) in &self.before {
            if path == damaged || path.starts_with("index") || path.starts_with("locks") {
                continue;
            }
            let kept = now.get(path) == Some(bytes)
                || now.get(&Path::new("quarantine").join(path)) == Some(bytes);
            assert!(kept, "{} was deleted or changed", path.display());
        }
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut d = std::fs::read(path).unwrap();
    let at = at.min(d.len() - 1);
    d[at] ^= 0x20;
    std::fs::write(path, d).unwrap();
}

fn rel(s: &Setup, p: &Path) -> PathBuf {
    p.strip_prefix(s.repo()).unwrap().to_path_buf()
}

/// The largest pack written by `b`'s backup (a data pack).
fn a_pack_of_b(s: &Setup) -> PathBuf {
    s.b_packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone()
}

/// The documented steps for a damaged, truncated or missing pack.
const PACK_STEPS: &[&[&str]] = &[
    &["check", "--read-data"],
    &["repair", "packs"],
    &["backup", "--path-to-backup", "b", "--backup-name", "b"],
];

fn heal_pack(encrypted: bool, damage: impl Fn(&Path)) {
    let s = Setup::new(encrypted);
    let pack = a_pack_of_b(&s);
    damage(&pack);
    for step in PACK_STEPS {
        s.step(step);
    }
    // `b`'s blobs are stored again by the new backup, so even `b` restores again.
    s.healed(&rel(&s, &pack), &[]);
}

#[test]
fn a_flipped_byte_in_a_pack_heals() {
    heal_pack(true, |p| flip_byte(p, 100));
}

#[test]
fn a_flipped_byte_in_a_pack_of_an_unencrypted_repository_heals() {
    heal_pack(false, |p| flip_byte(p, 100));
}

#[test]
fn a_truncated_pack_heals() {
    heal_pack(true, |p| {
        let len = std::fs::metadata(p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(len / 2).unwrap();
    });
}

#[test]
fn a_deleted_pack_heals() {
    heal_pack(true, |p| std::fs::remove_file(p).unwrap());
}

#[test]
fn a_damaged_index_file_heals() {
    let s = Setup::new(true);
    let index = support::all_bytes(&s.repo().join("index"))
        .into_iter()
        .next()
        .unwrap()
        .0;
    flip_byte(&index, 40);
    s.step(&["check"]);
    s.step(&["repair", "index"]);
    let quarantined = s.repo().join("quarantine").join(rel(&s, &index));
    assert!(quarantined.exists(), "the damaged index file is kept aside");
    s.healed(&rel(&s, &index), &[]);
}

#[test]
fn a_damaged_snapshot_heals() {
    let s = Setup::new(true);
    let snap = s.repo().join("snapshots").join(&s.b);
    flip_byte(&snap, 30);
    // Restoring the newest of `b` fails loudly, naming the damaged snapshot.
    let o = s.e.run(&s.args(&[
        "restore",
        "--backup-name",
        "b",
        "--restore-abs-path",
        "out-b",
    ]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains(&s.b[..8]), "{}", stderr(&o));
    s.step(&["check"]);
    s.step(&["repair", "snapshots"]);
    let b = s.b.clone();
    s.healed(&rel(&s, &snap), &[&b]);
}

fn heal_config(damage: impl Fn(&Path)) {
    let s = Setup::new(true);
    let config = s.repo().join("config");
    damage(&config);
    s.step(&["repair", "config"]);
    assert_eq!(
        std::fs::read(&config).unwrap(),
        s.before[Path::new("config")],
        "the config is repaired, not recreated"
    );
    s.healed(Path::new("config"), &[]);
}

#[test]
fn a_damaged_config_heals() {
    heal_config(|c| {
        // One character of the id.
        let text = std::fs::read_to_string(c).unwrap();
        let at = text.find("\"id\": \"").unwrap() + 8;
        let mut b = text.into_bytes();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        std::fs::write(c, b).unwrap();
    });
}

#[test]
fn a_deleted_config_heals() {
    heal_config(|c| std::fs::remove_file(c).unwrap());
}

#[test]
fn a_damaged_key_heals() {
    let mut s = Setup::new(true);
    let keys = |s: &Setup| -> Vec<PathBuf> {
        let mut k: Vec<PathBuf> = std::fs::read_dir(s.repo().join("keys"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        k.sort();
        k
    };
    let first = keys(&s);
    assert_eq!(first.len(), 1);
    // The documented practice: a second passphrase (a recovery key) kept elsewhere.
    let recovery = s.e.path("recovery");
    std::fs::write(&recovery, "recovery phrase\n").unwrap();
    let recovery = recovery.to_str().unwrap();
    s.e.ok(&s.args(&["key", "add", "--new-pass-file", recovery]));
    s.before = objects(&s.repo());
    let key = first[0].clone();
    flip_byte(&key, 200);
    // The passphrase of the damaged key no longer opens, and says why.
    let o = s.e.run(&s.args(&["snapshots"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));
    // The documented steps, opened with the recovery passphrase.
    let with_recovery = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--repo", "repo", "--encrypt-pass-file", recovery]);
        let o = s.e.run(&a);
        assert!(
            o.status.success() || (args[0] == "check" && o.status.code() == Some(3)),
            "healing step freezer {args:?} failed: {}",
            stderr(&o)
        );
    };
    with_recovery(&["check"]);
    with_recovery(&["repair", "keys"]);
    let p = s.e.pass().to_string();
    with_recovery(&["key", "add", "--new-pass-file", &p]);
    assert!(
        s.repo().join("quarantine").join(rel(&s, &key)).exists(),
        "the damaged key file is kept aside"
    );
    s.healed(&rel(&s, &key), &[]);
}

#[test]
fn a_full_storage_heals() {
    let s = Setup::create(true, "disk/repo", Some(("disk", "16m")));
    super::full::fill(&s.e.path("disk/filler"));
    assert_eq!(super::full::free_bytes(&s.repo()), 0);
    // Restore and check work on the full storage, without a lock and saying so.
    s.restores_equal(&s.a, "a");
    let o = s.e.run(&s.args(&["check", "--read-data"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("without a lock"), "{}", stderr(&o));
    // A backup of new data fails cleanly, naming what to do, and writes nothing.
    std::fs::write(s.e.path("b/new"), support::pseudo_random(2 << 20, 9)).unwrap();
    let o =
        s.e.run(&s.args(&["backup", "--path-to-backup", "b", "--backup-name", "b"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--no-lock"), "{}", stderr(&o));
    assert_eq!(
        objects(&s.repo()),
        s.before,
        "a failed backup leaves nothing"
    );
    std::fs::remove_file(s.e.path("b/new")).unwrap();
    // The documented path with zero bytes free: forget, then prune, without a lock.
    let a = s.a.clone();
    s.step(&["forget", "--no-lock", &a]);
    s.step(&["prune", "--no-lock", "--max-unused", "100%"]);
    // The space the deleted packs held is free again (how many bytes `a` alone used depends
    // on where the repository's chunker cut: not a fixed figure).
    let free = super::full::free_bytes(&s.repo());
    let gone: usize = s
        .a_packs
        .iter()
        .filter(|p| !p.exists())
        .map(|p| s.before[&rel(&s, p)].len())
        .sum();
    assert!(gone > 0, "a pack only `a` used was deleted");
    assert!(
        free as usize >= gone / 2,
        "prune freed {free} bytes; the deleted packs held {gone}"
    );
    // What `a` alone used is gone; everything else is there, unchanged.
    let now = objects(&s.repo());
    for (path, bytes) in &s.before {
        let only_a = path == &Path::new("snapshots").join(&a)
            || s.a_packs.iter().any(|p| &rel(&s, p) == path);
        if only_a || path.starts_with("index") || path.starts_with("locks") {
            continue;
        }
        assert_eq!(
            now.get(path),
            Some(bytes),
            "{} was deleted or changed",
            path.display()
        );
    }
    s.restores_equal(&s.b, "b");
    let b2 = s.backup("b");
    s.restores_equal(&b2, "b");
    let o = s.e.run(&s.args(&["check", "--read-data"]));
    assert!(o.status.success(), "{}", stderr(&o));
}
