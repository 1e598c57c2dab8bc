//! The lifecycle commands as an operator runs them: stale locks of killed processes, file-set
//! checksums, retention, prune, check, repair and listings.

use std::process::Stdio;

use super::{Env, stderr};
use crate::support::{self, assert_same_tree, odd_tree};

fn list_len(e: &Env, args: &[&str]) -> usize {
    let mut a = vec![
        "snapshots",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        e.pass(),
    ];
    a.extend_from_slice(args);
    e.json(&a)["snapshots"].as_array().unwrap().len()
}

#[test]
fn a_killed_backup_leaves_a_stale_lock_that_the_next_run_takes_over() {
    let e = Env::new();
    let p = e.pass();
    std::fs::create_dir_all(e.path("src")).unwrap();
    std::fs::write(e.path("src/big"), support::pseudo_random(4 << 20, 3)).unwrap();
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    // 4 MiB at 256 KiB/s: the backup is still running when it is killed.
    let mut child = e
        .cmd(&[
            "backup",
            "--repo",
            "repo",
            "--encrypt-pass-file",
            p,
            "--path-to-backup",
            "src",
            "-N",
            "web",
            "--upload-limit",
            "256K",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let locks = e.path("repo/locks");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !support::has_lock(&e.path("repo")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup took no lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read_dir(&locks).unwrap().count(),
        1,
        "the lock stays"
    );

    // An exclusive operation does not wait for it: its process is gone from this host.
    let o = e.run(&[
        "prune",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--lock-wait",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("removed a stale shared lock"), "{err}");
    assert!(err.contains("no longer runs"), "{err}");
    assert!(err.contains("backup"), "{err}");
    // Each warning once, and no colours on a pipe.
    assert_eq!(err.matches("removed a stale").count(), 1, "{err}");
    assert!(!err.contains('\x1b'), "{err:?}");
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 0);
    let b = e.json(&[
        "backup",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--path-to-backup",
        "src",
        "-N",
        "web",
        "--lock-wait",
        "0",
    ]);
    assert_eq!(b["complete"], true);
    let u = e.json(&["unlock", "--repo", "repo", "--encrypt-pass-file", p]);
    assert_eq!(u["removed"].as_array().unwrap().len(), 0);

    // Killed again: check says once, without colours, that it removed the stale lock, even
    // where NO_COLOR is not set.
    std::fs::write(e.path("src/big"), support::pseudo_random(4 << 20, 4)).unwrap();
    let mut child = e
        .cmd(&[
            "backup",
            "--repo",
            "repo",
            "--encrypt-pass-file",
            p,
            "--path-to-backup",
            "src",
            "-N",
            "web",
            "--upload-limit",
            "256K",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !support::has_lock(&e.path("repo")) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let o = e
        .cmd(&["check", "--repo", "repo", "--encrypt-pass-file", p])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        err.matches("removed a stale shared lock").count(),
        1,
        "{err}"
    );
    assert!(!err.contains('\x1b'), "{err:?}");
}

#[test]
fn consistency_checksums_are_stored_and_verify_restores() {
    let e = Env::new();
    let p = e.pass();
    odd_tree(&e.path("src"));
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    let b = e.json(&[
        "backup",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--path-to-backup",
        "src",
        "-N",
        "web",
        "--consistency-check",
    ]);
    let sum = b["snapshot"]["consistency_checksum"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sum.len(), 64);
    let restore = |target: &str, sum: &str| {
        e.run(&[
            "restore",
            "--repo",
            "repo",
            "--encrypt-pass-file",
            p,
            "-N",
            "web",
            "--restore-abs-path",
            target,
            "--consistency-checksum",
            sum,
        ])
    };
    let o = restore("good", &sum);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(&e.path("src"), &e.path("good"), true);
    // Upstream's acceptance: a wrong checksum exits 1, nothing on stdout, the reason on stderr.
    let o = restore("bad", &"0".repeat(64));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        stderr(&o).contains("consistency checksum mismatch"),
        "{}",
        stderr(&o)
    );
    // A backup without the option records none.
    let b = e.json(&[
        "backup",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--path-to-backup",
        "src",
        "-N",
        "plain",
    ]);
    assert!(b["snapshot"].get("consistency_checksum").is_none(), "{b}");
}

#[test]
fn forget_prune_check_and_repair_as_an_operator_runs_them() {
    let e = Env::new();
    let p = e.pass();
    std::fs::create_dir_all(e.path("src")).unwrap();
    e.ok(&[
        "init",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--pack-size",
        "1",
    ]);
    for (i, (host, name)) in [
        ("a", "web"),
        ("a", "web"),
        ("a", "web"),
        ("a", "db"),
        ("b", "web"),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(e.path("src/f"), support::pseudo_random(512 << 10, i as u64)).unwrap();
        e.json(&[
            "backup",
            "--repo",
            "repo",
            "--encrypt-pass-file",
            p,
            "--path-to-backup",
            "src",
            "-N",
            name,
            "--hostname",
            host,
        ]);
    }
    // Listings filter by host, name and time; `info` is the same listing.
    assert_eq!(list_len(&e, &[]), 5);
    assert_eq!(list_len(&e, &["--hostname", "a"]), 4);
    assert_eq!(list_len(&e, &["--hostname", "a", "-N", "web"]), 3);
    assert_eq!(
        list_len(&e, &["--since", "2000-01-01", "--until", "2999-01-01"]),
        5
    );
    assert_eq!(list_len(&e, &["--since", "2999-01-01"]), 0);
    let text = e.ok(&["info", "--repo", "repo", "--encrypt-pass-file", p]);
    assert!(
        text.contains("LEVEL") && text.contains("BACKUP NAME"),
        "{text}"
    );

    // A dry run says what would go and why, and changes nothing.
    let dry = e.ok(&[
        "forget",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--keep-last",
        "1",
        "--dry-run",
    ]);
    assert_eq!(dry.matches("forget ").count(), 2, "{dry}");
    assert!(dry.contains("no keep rule keeps it"), "{dry}");
    assert!(dry.contains("last 1"), "{dry}");
    assert!(dry.contains("would be forgotten"), "{dry}");
    assert_eq!(list_len(&e, &[]), 5);
    let o = e.run(&["forget", "--repo", "repo", "--encrypt-pass-file", p]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--keep"), "{}", stderr(&o));

    let r = e.json(&[
        "forget",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--hostname",
        "a",
        "-N",
        "web",
        "--keep-last",
        "1",
        "--prune",
    ]);
    assert_eq!(r["forget"]["forgotten"].as_array().unwrap().len(), 2);
    assert!(
        r["prune"]["total"]["bytes_freed"].as_u64().unwrap() > 512 << 10,
        "{r}"
    );
    assert_eq!(list_len(&e, &[]), 3);

    // A clean repository checks clean; a flipped byte in a pack is found by --read-data and
    // named with the snapshots it touches; exit codes say so.
    let c = e.json(&[
        "check",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--read-data",
    ]);
    assert_eq!(c["ok"], true, "{c}");
    let packs = support::pack_files(&e.path("repo"));
    let biggest = packs
        .iter()
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .unwrap();
    let good = std::fs::read(biggest).unwrap();
    let mut bytes = good.clone();
    bytes[100] ^= 0x40;
    std::fs::write(biggest, bytes).unwrap();
    let o = e.run(&["check", "--repo", "repo", "--encrypt-pass-file", p]);
    assert!(
        o.status.success(),
        "without --read-data contents are not read: {}",
        stderr(&o)
    );
    let o = e.run(&[
        "check",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--read-data",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("DAMAGED: 1 pack"), "{err}");
    assert!(err.contains("snapshot: "), "{err}");
    std::fs::write(biggest, good).unwrap();
    let o = e.run(&[
        "check",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--read-data-subset",
        "0/3",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("read_data"), "{}", stderr(&o));

    // A lost index: check names the missing data, repair index rebuilds it from the packs.
    std::fs::remove_dir_all(e.path("repo/index")).unwrap();
    let o = e.run(&["check", "--repo", "repo", "--encrypt-pass-file", p]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = e.run(&[
        "repair",
        "index",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = e.run(&["check", "--repo", "repo", "--encrypt-pass-file", p]);
    assert!(o.status.success(), "{}", stderr(&o));
    let target = e.path("out");
    e.ok(&[
        "restore",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "-N",
        "db",
        "--hostname",
        "a",
        "--restore-abs-path",
        target.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(target.join("f")).unwrap(),
        support::pseudo_random(512 << 10, 3)
    );
}

/// Runs the steps `check` printed (numbered lines on stderr), as an operator would, with the
/// repository's flags; returns the steps.
fn follow_advice(e: &Env, check_stderr: &str, backup: &[&str]) -> Vec<String> {
    let p = e.pass();
    let repo = ["--repo", "repo", "--encrypt-pass-file", p];
    let steps: Vec<String> = check_stderr
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let (n, rest) = l.split_once(". ")?;
            n.parse::<u32>().ok().map(|_| rest.to_string())
        })
        .collect();
    assert!(!steps.is_empty(), "no steps in {check_stderr}");
    for step in &steps {
        let command = step
            .split('`')
            .nth(1)
            .unwrap_or_else(|| panic!("no command in {step}"));
        match command {
            "freezer repair packs" => {
                e.ok(&[&["repair", "packs"][..], &repo].concat());
            }
            "freezer backup" => {
                e.ok(backup);
            }
            "freezer check" => {
                // "if `freezer check` still names snapshots after that: `freezer forget
                // --snapshot <id>` removes each".
                let c = e.run(&[&["check", "--json"][..], &repo].concat());
                let v: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
                let mut named: Vec<String> = v["damaged"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|d| d["snapshots"].as_array().unwrap().clone())
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect();
                named.sort();
                named.dedup();
                for id in named {
                    e.ok(&[&["forget", "--snapshot", &id][..], &repo].concat());
                }
            }
            other => panic!("unexpected step {other}: {step}"),
        }
    }
    steps
}

#[test]
fn a_damaged_pack_is_healed_by_the_steps_check_prints() {
    for harm in ["flip", "truncate", "delete"] {
        let e = Env::new();
        let p = e.pass();
        std::fs::create_dir_all(e.path("src")).unwrap();
        for i in 0..3u64 {
            std::fs::write(
                e.path(&format!("src/f{i}")),
                support::pseudo_random(1536 << 10, i),
            )
            .unwrap();
        }
        let repo = ["--repo", "repo", "--encrypt-pass-file", p];
        e.ok(&[&["init", "--pack-size", "1"][..], &repo].concat());
        let backup = [
            &[
                "backup",
                "--path-to-backup",
                "src",
                "-N",
                "s",
                "--no-incremental",
            ][..],
            &repo,
        ]
        .concat();
        e.ok(&backup);
        let packs = support::pack_files(&e.path("repo"));
        let biggest = packs
            .iter()
            .max_by_key(|f| std::fs::metadata(f).unwrap().len())
            .unwrap()
            .clone();
        match harm {
            "flip" => {
                let mut b = std::fs::read(&biggest).unwrap();
                b[100] ^= 0x40;
                std::fs::write(&biggest, b).unwrap();
            }
            "truncate" => {
                let len = std::fs::metadata(&biggest).unwrap().len();
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&biggest)
                    .unwrap();
                f.set_len(len / 2).unwrap();
            }
            _ => std::fs::remove_file(&biggest).unwrap(),
        }
        let pack_name = biggest.file_name().unwrap().to_str().unwrap().to_string();
        let restore = |to: &str| {
            let target = e.path(to);
            e.ok(&[
                &[
                    "restore",
                    "-N",
                    "s",
                    "--restore-abs-path",
                    target.to_str().unwrap(),
                ][..],
                &repo,
            ]
            .concat());
            for i in 0..3u64 {
                assert_eq!(
                    std::fs::read(target.join(format!("f{i}"))).unwrap(),
                    support::pseudo_random(1536 << 10, i),
                    "{harm}: f{i} in {to}"
                );
            }
        };
        if harm != "flip" {
            // Listing the packs finds it: the backup stores the blobs again and says why.
            let o = e.run(&backup);
            assert_eq!(o.status.code(), Some(3), "{harm}: {}", stderr(&o));
            let err = stderr(&o);
            assert!(
                err.contains(&pack_name) && err.contains("freezer check"),
                "{err}"
            );
            restore("after-backup");
        }
        let o = e.run(&[&["check", "--read-data"][..], &repo].concat());
        assert_eq!(o.status.code(), Some(3), "{harm}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(&format!("pack {pack_name} on")), "{err}");
        let steps = follow_advice(&e, &err, &backup);
        assert!(steps[0].contains("repair packs"), "{steps:?}");
        let o = e.run(&[&["check", "--read-data"][..], &repo].concat());
        assert!(
            o.status.success(),
            "{harm}: after {steps:?}: {}",
            stderr(&o)
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains("no damage found"));
        restore("healed");
        // Healed: the next backup stores nothing and warns of nothing.
        let b = e.json(&backup);
        assert_eq!(b["snapshot"]["stats"]["blobs_added"], 0, "{harm}: {b}");
    }
}
