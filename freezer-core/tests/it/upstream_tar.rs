//! Upstream Freezer's `tar` backups, made by upstream's own agent (freezer==19.0.0, through
//! tests/upstream/make_upstream_backups.py), restored by `freezer_core::upstream::tar`: every
//! chain and level of the fixture, from local storage, a real S3 server and a real Swift
//! (upstream's segments under a Dynamic Large Object manifest), compared with what the source
//! tree was; and damaged storage.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use freezer_core::sink::{LocalSink, Payload, PutMode, S3Sink, Sink, SwiftSink};
use freezer_core::upstream::openssl::KeyDigest;
use freezer_core::upstream::tar::{TarRestoreOptions, restore};
use freezer_core::{ErrorKind, Timestamp};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::servers::{S3Server, SwiftServer};

/// The fixture: made once per test binary (about 70 s), shared by the tests of this module.
fn fixture() -> &'static Path {
    static FIXTURE: OnceLock<PathBuf> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let agent = match std::env::var_os("FREEZER_TEST_UPSTREAM_AGENT") {
            Some(p) => PathBuf::from(p),
            None => ws.join("target/upstream-agent/bin/freezer-agent"),
        };
        assert!(
            agent.exists(),
            "upstream's freezer-agent is not installed at {}; these tests need it. Install it with: \
             python3 -m venv target/upstream-agent && target/upstream-agent/bin/pip install freezer==19.0.0 \
             (./test.sh does), or set FREEZER_TEST_UPSTREAM_AGENT",
            agent.display()
        );
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("upstream-tar-fixture");
        let mut cmd = Command::new("python3");
        cmd.arg(ws.join("tests/upstream/make_upstream_backups.py"))
            .arg("--agent")
            .arg(&agent)
            .arg("--out")
            .arg(&out);
        let o = cmd.output().expect("python3 runs");
        assert!(
            o.status.success(),
            "make_upstream_backups.py failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        out
    })
}

fn manifest() -> Value {
    let text = std::fs::read(fixture().join("manifest.json")).unwrap();
    serde_json::from_slice(&text).unwrap()
}

fn am_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The tree as the fixture's `snapshot()` records it.
fn snapshot(root: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    fn one(root: &Path, p: &Path, out: &mut BTreeMap<String, Value>) {
        let m = std::fs::symlink_metadata(p).unwrap();
        let rel = if p == root {
            ".".to_string()
        } else {
            p.strip_prefix(root).unwrap().to_string_lossy().into_owned()
        };
        let mut e = json!({
            "mode": format!("{:04o}", m.mode() & 0o7777),
            "uid": m.uid(),
            "gid": m.gid(),
            "mtime": m.mtime(),
        });
        if m.file_type().is_symlink() {
            e["type"] = json!("symlink");
            e["target"] = json!(std::fs::read_link(p).unwrap().to_string_lossy());
        } else if m.is_dir() {
            e["type"] = json!("dir");
            for c in std::fs::read_dir(p).unwrap() {
                one(root, &c.unwrap().path(), out);
            }
        } else {
            let data = std::fs::read(p).unwrap();
            e["type"] = json!("file");
            e["size"] = json!(data.len());
            e["sha256"] = json!(hex::encode(Sha256::digest(&data)));
        }
        out.insert(rel, e);
    }
    one(root, root, &mut out);
    out
}

fn compare(what: &str, expected: &Value, got: &Path) {
    let got = snapshot(got);
    let exp = expected.as_object().unwrap();
    let mut problems = Vec::new();
    for (k, e) in exp {
        let Some(g) = got.get(k) else {
            problems.push(format!("missing {k}"));
            continue;
        };
        let mut e = e.clone();
        let mut g = g.clone();
        if !am_root() {
            for v in [&mut e, &mut g] {
                v.as_object_mut().unwrap().remove("uid");
                v.as_object_mut().unwrap().remove("gid");
            }
        }
        if e != g {
            problems.push(format!("differs {k}: expected {e} got {g}"));
        }
    }
    for k in got.keys() {
        if !exp.contains_key(k) {
            problems.push(format!("unexpected {k} (deleted files must be gone)"));
        }
    }
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
}

fn password() -> Vec<u8> {
    manifest()["password_first_line"]
        .as_str()
        .unwrap()
        .as_bytes()
        .to_vec()
}

fn opts(dest: &Path, chain: &Value, date: Option<i64>) -> TarRestoreOptions {
    let mut o = TarRestoreOptions::new(dest);
    o.restore_from_date = date.map(|t| Timestamp::from_second(t).unwrap());
    if chain["encrypted"].as_bool().unwrap() {
        o.passphrase = Some(password());
    }
    o
}

/// Restores every backup of every chain (by its date, and the newest without one) from
/// `sink` and compares with the manifest.
async fn restore_everything(sink: Arc<dyn Sink>, label: &str) -> usize {
    let m = manifest();
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    for chain in m["chains"].as_array().unwrap() {
        let name = chain["hostname_backup_name"].as_str().unwrap();
        let backups = chain["backups"].as_array().unwrap();
        for b in backups {
            let t = b["timestamp"].as_i64().unwrap();
            let dest = tmp.path().join(format!("{name}-{t}"));
            let r = restore(sink.clone(), name, &opts(&dest, chain, Some(t)))
                .await
                .unwrap_or_else(|e| panic!("{label}: {name} at {t}: {e}"));
            let level = b["level"].as_u64().unwrap() as usize;
            assert_eq!(r.levels.len(), level + 1, "{label}: {name} at {t}");
            assert_eq!(r.levels[level].backup.t, t);
            assert_eq!(
                r.levels[0].backup.t0,
                b["level_zero_timestamp"].as_i64().unwrap()
            );
            if chain.get("key_derivation_digest").and_then(Value::as_str) == Some("md5") {
                assert_eq!(r.levels[0].key_digest, Some(KeyDigest::Md5));
            } else if chain["encrypted"].as_bool().unwrap() {
                assert_eq!(r.levels[0].key_digest, Some(KeyDigest::Sha256));
            }
            compare(&format!("{label}: {name} at {t}"), &b["expected"], &dest);
            n += 1;
        }
        // "latest": no date.
        let newest = backups
            .iter()
            .max_by_key(|b| b["timestamp"].as_i64().unwrap())
            .unwrap();
        let dest = tmp.path().join(format!("{name}-latest"));
        restore(sink.clone(), name, &opts(&dest, chain, None))
            .await
            .unwrap_or_else(|e| panic!("{label}: {name} latest: {e}"));
        compare(
            &format!("{label}: {name} latest"),
            &newest["expected"],
            &dest,
        );
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn every_upstream_backup_restores_from_local_storage() {
    let sink: Arc<dyn Sink> = Arc::new(LocalSink::new(fixture().join("storage")));
    let n = restore_everything(sink, "local").await;
    // gzip (5 backups), 6 chains of 4, and "latest" of each of the 7 chains.
    assert!(n >= 5 + 6 * 4 + 7, "{n} restores");
}

fn files_under(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_upstream_backup_restores_from_s3() {
    let storage = fixture().join("storage");
    let server = S3Server::start();
    let s3: Arc<dyn Sink> =
        Arc::new(S3Sink::new(server.options("upstream", "freezer/container")).unwrap());
    s3.prepare().await.unwrap();
    for (key, data) in files_under(&storage) {
        s3.put(&key, Payload::from(data), PutMode::Overwrite)
            .await
            .unwrap();
    }
    let n = restore_everything(s3, "s3").await;
    assert!(n >= 36, "{n} restores");
}

/// Upstream's Swift layout: each `data` object is a zero-byte Dynamic Large Object manifest
/// (`X-Object-Manifest: <container>/<...>/segments`) over `<...>/segments/%08d`, the other
/// objects plain (docs/UPSTREAM-TAR.md). The fixture's storage is put into a real Swift that
/// way, with segments small enough that most data objects have several, and every backup is
/// restored through the Swift sink.
#[tokio::test(flavor = "multi_thread")]
async fn every_upstream_backup_restores_from_swift_segments() {
    const SEGMENT: usize = 16 * 1024;
    let server = SwiftServer::shared();
    let container = "upstream_dlo";
    let swift = Arc::new(SwiftSink::new(server.options(container, 1 << 20)).unwrap());
    swift.prepare().await.unwrap();
    // A token of `test:tester`, for the manifests the sink does not write.
    let http = reqwest::Client::new();
    let (token, storage_url) = crate::swift::token(server, "test:tester", "testing").await;
    let mut segmented = 0;
    for (key, data) in files_under(&fixture().join("storage")) {
        if !(key.starts_with("data/") && key.ends_with("/data")) {
            swift
                .put(&key, Payload::from(data), PutMode::Overwrite)
                .await
                .unwrap();
            continue;
        }
        let dir = key.strip_suffix("/data").unwrap();
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(SEGMENT).collect()
        };
        if chunks.len() > 1 {
            segmented += 1;
        }
        for (i, c) in chunks.iter().enumerate() {
            swift
                .put(
                    &format!("{dir}/segments/{i:08}"),
                    Payload::from(c.to_vec()),
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
        }
        let r = http
            .put(format!("{storage_url}/{container}/{key}"))
            .header("X-Auth-Token", &token)
            .header("X-Object-Manifest", format!("{container}/{dir}/segments"))
            .header("Content-Length", "0")
            .body(Vec::new())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "manifest {key}: {}", r.status());
        // The manifest is what a listing shows: zero bytes.
        let listed = swift.list(&key).await.unwrap();
        assert_eq!(listed[0].size, 0, "{key}");
    }
    assert!(
        segmented >= 5,
        "{segmented} data objects of several segments"
    );
    let n = restore_everything(swift, "swift").await;
    assert!(n >= 36, "{n} restores");
}

/// A private copy of the fixture's storage, to damage.
fn storage_copy(tmp: &Path) -> PathBuf {
    let dst = tmp.join("storage");
    let st = Command::new("cp")
        .arg("-a")
        .arg(fixture().join("storage"))
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    dst
}

fn chain(name: &str) -> Value {
    manifest()["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["backup_name"] == name)
        .unwrap()
        .clone()
}

/// The key of a manifest path (`storage/...`) in a sink rooted at the storage.
fn key(path: &Value) -> String {
    path.as_str()
        .unwrap()
        .strip_prefix("storage/")
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_upstream_storage_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let root = storage_copy(tmp.path());
    let sink: Arc<dyn Sink> = Arc::new(LocalSink::new(&root));
    let gz = chain("gzip");
    let name = gz["hostname_backup_name"].as_str().unwrap().to_string();
    let b1 = &gz["backups"][1];
    let b2 = &gz["backups"][2];
    let t1 = b1["timestamp"].as_i64().unwrap();
    let t2 = b2["timestamp"].as_i64().unwrap();
    let dest = |n: &str| tmp.path().join(n);

    // A truncated data object of level 1.
    let d1 = key(&b1["data_path"]);
    let full = std::fs::read(root.join(&d1)).unwrap();
    std::fs::write(root.join(&d1), &full[..full.len() / 2]).unwrap();
    let e = restore(sink.clone(), &name, &opts(&dest("trunc"), &gz, Some(t1)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains(&d1), "{e}");

    // The data object of level 1 missing.
    std::fs::remove_file(root.join(&d1)).unwrap();
    let e = restore(sink.clone(), &name, &opts(&dest("nodata"), &gz, Some(t2)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains(&d1), "{e}");

    // The metadata of level 1 missing: level 2 cannot be restored, and the error says which.
    std::fs::write(root.join(&d1), &full).unwrap();
    std::fs::remove_file(root.join(key(&b1["metadata_path"]))).unwrap();
    let e = restore(sink.clone(), &name, &opts(&dest("nometa"), &gz, Some(t2)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let t0 = b1["level_zero_timestamp"].as_i64().unwrap();
    assert!(
        e.to_string()
            .contains(&format!("metadata/tar/{name}/{t0}/1_<T>/metadata")),
        "{e}"
    );

    // A wrong passphrase.
    let enc = chain("gzip-enc");
    let ename = enc["hostname_backup_name"].as_str().unwrap();
    let mut o = opts(&dest("wrong"), &enc, None);
    o.passphrase = Some(b"not the pass phrase".to_vec());
    let e = restore(sink.clone(), ename, &o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey, "{e}");
    assert!(
        e.to_string()
            .contains("wrong passphrase or unsupported key derivation"),
        "{e}"
    );
    assert!(e.to_string().contains(&format!("data/tar/{ename}/")), "{e}");
    // No passphrase.
    let mut o = opts(&dest("nopass"), &enc, None);
    o.passphrase = None;
    let e = restore(sink.clone(), ename, &o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey, "{e}");
    assert!(!dest("nopass").exists(), "nothing done before the refusal");

    // A restore folder that is not empty.
    let busy = dest("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), b"mine").unwrap();
    let e = restore(sink.clone(), &name, &opts(&busy, &gz, None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Restore dir is not empty"), "{e}");
    assert_eq!(std::fs::read(busy.join("keep.txt")).unwrap(), b"mine");

    // An unknown name.
    let e = restore(
        sink.clone(),
        "fixture-host_nope",
        &opts(&dest("none"), &gz, None),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

/// `freezer copy` from upstream's layout: every backup of every chain becomes a native
/// snapshot with its host, name, time and level, and each restores to what upstream's own
/// restore of that backup gives. Run twice, nothing is migrated again.
#[tokio::test(flavor = "multi_thread")]
async fn every_upstream_backup_migrates_into_a_native_repository() {
    use freezer_core::upstream::migrate::{MigrateOptions, migrate};
    let m = manifest();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    crate::support::init(vec![crate::support::local(&repo)], Some("native pass")).await;
    let mut r = crate::support::open(&[&repo], Some("native pass")).await;
    let source: Arc<dyn Sink> = Arc::new(LocalSink::new(fixture().join("storage")));
    // The md5 chain shares the passphrase; every encrypted chain here does.
    let mut opts = MigrateOptions::new(freezer_core::repo::Actor::current());
    opts.passphrase = Some(password());
    opts.staging = Some(tmp.path().to_path_buf());
    let report = migrate(source.clone(), &mut r, &opts).await.unwrap();
    let expected_count: usize = m["chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["backups"].as_array().unwrap().len())
        .sum();
    assert_eq!(report.backups.len(), expected_count, "{report:?}");
    assert!(report.backups.iter().all(|b| !b.existed));
    let snaps = r.snapshots().await.unwrap().0;
    for chain in m["chains"].as_array().unwrap() {
        let backup_name = chain["backup_name"].as_str().unwrap();
        for b in chain["backups"].as_array().unwrap() {
            let t = b["timestamp"].as_i64().unwrap();
            let (id, snap) = snaps
                .iter()
                .find(|(_, s)| {
                    s.backup_name == backup_name
                        && s.hostname == m["hostname"].as_str().unwrap()
                        && s.time.as_second() == t
                })
                .unwrap_or_else(|| panic!("no snapshot for {backup_name} at {t}"));
            assert_eq!(u64::from(snap.level), b["level"].as_u64().unwrap());
            let dest = tmp.path().join(format!("native-{backup_name}-{t}"));
            let done = crate::support::restore_id(&mut r, *id, &dest).await;
            assert!(done.is_complete(), "{done:?}");
            compare(
                &format!("migrated {backup_name} at {t}"),
                &b["expected"],
                &dest,
            );
        }
    }
    // Again: everything is there already.
    let again = migrate(source, &mut r, &opts).await.unwrap();
    assert!(again.backups.iter().all(|b| b.existed), "{again:?}");
    assert_eq!(r.snapshots().await.unwrap().0.len(), expected_count);
}

/// The `tar` engine through the job runner (what `freezer-agent`, the scheduler and the
/// bindings run): levels climb as upstream's do, each level restores, retention removes whole
/// chains only when every level is past the cutoff, and a wrong passphrase is named.
#[tokio::test(flavor = "multi_thread")]
async fn the_tar_engine_runs_jobs_in_upstreams_layout() {
    use freezer_core::job::{Action, ActionOutcome, FreezerAction, RunContext, run_action};
    let tmp = tempfile::tempdir().unwrap();
    let (data, container, pass) = (
        tmp.path().join("data"),
        tmp.path().join("container"),
        tmp.path().join("pass"),
    );
    crate::support::odd_tree(&data);
    std::fs::write(&pass, "tar pass\n").unwrap();
    let mut a = FreezerAction {
        action: Some(Action::Backup),
        path_to_backup: Some(data.display().to_string()),
        backup_name: Some("web".into()),
        hostname: Some("node1".into()),
        container: Some(container.display().to_string()),
        encrypt_pass_file: Some(pass.display().to_string()),
        incremental: Some(true),
        max_level: Some(1),
        compression: Some("xz".into()),
        ..FreezerAction::default()
    };
    a.other.insert("engine_name".into(), json!("tar"));
    let ctx = RunContext::current();
    let mut times = Vec::new();
    for (i, want_level) in [0u32, 1, 0].iter().enumerate() {
        std::fs::write(data.join(format!("new{i}.txt")), format!("run {i}")).unwrap();
        let o = run_action(&a, &ctx).await.unwrap();
        let ActionOutcome::TarBackup(b) = o else {
            panic!("not a tar backup: {o:?}")
        };
        assert!(b.is_complete(), "{b:?}");
        assert_eq!(b.level, *want_level, "{b:?}");
        assert!(container.join(&b.data_key).is_file());
        times.push(b.time_stamp);
    }
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    // Level 1 restores both runs' files; the newest chain (a new level 0) all three.
    let mut r = a.clone();
    r.action = Some(Action::Restore);
    r.restore_abs_path = Some(tmp.path().join("out1").display().to_string());
    r.restore_from_date = Some(Timestamp::from_second(times[1]).unwrap().to_string());
    let o = run_action(&r, &ctx).await.unwrap();
    assert!(
        matches!(o, ActionOutcome::TarRestore(ref x) if x.levels.len() == 2),
        "{o:?}"
    );
    let out1 = tmp.path().join("out1");
    assert_eq!(std::fs::read(out1.join("new1.txt")).unwrap(), b"run 1");
    assert!(!out1.join("new2.txt").exists());
    // A wrong passphrase is named, and nothing is restored.
    std::fs::write(&pass, "not it\n").unwrap();
    r.restore_abs_path = Some(tmp.path().join("out2").display().to_string());
    let e = run_action(&r, &ctx).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey, "{e}");
    std::fs::write(&pass, "tar pass\n").unwrap();
    // info lists the three.
    let mut i = a.clone();
    i.action = Some(Action::Info);
    let ActionOutcome::TarInfo { backups, .. } = run_action(&i, &ctx).await.unwrap() else {
        panic!("not a tar listing")
    };
    assert_eq!(backups.len(), 3);
    // Retention at a cutoff between the chains' backups keeps the first chain whole only
    // if a level is newer; at a cutoff after the second backup it goes.
    let mut adm = a.clone();
    adm.action = Some(Action::Admin);
    adm.remove_from_date = Some(Timestamp::from_second(times[0]).unwrap().to_string());
    let ActionOutcome::TarAdmin(kept) = run_action(&adm, &ctx).await.unwrap() else {
        panic!("not a tar retention")
    };
    assert!(kept.removed.is_empty(), "{kept:?}");
    assert_eq!(kept.kept_for_newer_levels.len(), 2, "{kept:?}");
    adm.remove_from_date = Some(Timestamp::from_second(times[1]).unwrap().to_string());
    let ActionOutcome::TarAdmin(gone) = run_action(&adm, &ctx).await.unwrap() else {
        panic!("not a tar retention")
    };
    assert_eq!(gone.removed.len(), 2, "{gone:?}");
    let ActionOutcome::TarInfo { backups, .. } = run_action(&i, &ctx).await.unwrap() else {
        panic!("not a tar listing")
    };
    assert_eq!(backups.len(), 1);
    // A native repository beside it is not disturbed, and a job with engine native works.
    let mut n = a.clone();
    n.other.insert("engine_name".into(), json!("native"));
    n.max_level = None;
    n.compression = None;
    let o = run_action(&n, &ctx).await.unwrap();
    assert!(matches!(o, ActionOutcome::Backup(_)), "{o:?}");
    assert!(container.join("config").is_file());
    let ActionOutcome::TarInfo { backups, .. } = run_action(&i, &ctx).await.unwrap() else {
        panic!("not a tar listing")
    };
    assert_eq!(backups.len(), 1);
}
