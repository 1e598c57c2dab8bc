//! The memory budget (`--max-memory`) and the thread knob (`--threads`), held to a backup and
//! a restore of the corpus by the process's own accounting.

use super::{Env, stderr};
use crate::support::{assert_same_tree, corpus};

/// The budget the test holds the runs to.
const BUDGET: u64 = 64 << 20;
/// What a run holds beyond the budget's buffers, at 16 workers: the binary's resident pages,
/// the runtime and 16 threads of each pool with their compressor or decoder state, the index,
/// the restore's plan, and a chunk per reader that the budget lets through mid-chunk.
const ALLOWANCE: u64 = 64 << 20;

fn memory(v: &serde_json::Value) -> (u64, u64, u64) {
    let m = &v["memory"];
    (
        m["budget"].as_u64().unwrap(),
        m["peak_leased"].as_u64().unwrap(),
        m["peak_rss"].as_u64().unwrap(),
    )
}

/// Runs `freezer <args> --threads 16 --max-memory 64M --json` and checks what it took: the
/// budget under pressure (so that the test can fail), the process within budget + allowance.
fn held_to_the_budget(e: &Env, what: &str, mut args: Vec<&str>) -> u64 {
    args.extend(["--threads", "16", "--max-memory", "64M"]);
    let (budget, leased, rss) = memory(&e.json(&args));
    eprintln!(
        "{what}: leased at most {} MiB, peak RSS {} MiB",
        leased >> 20,
        rss >> 20
    );
    assert_eq!(budget, BUDGET);
    assert!(leased > BUDGET / 2, "{what}: leased at most {leased}");
    assert!(rss <= BUDGET + ALLOWANCE, "{what}: peak RSS {rss}");
    leased
}

#[test]
fn a_backup_and_a_restore_stay_within_the_budget_at_16_threads() {
    let e = Env::new();
    let src = e.path("corpus");
    corpus(&src, 160, 13);
    let (repo, out) = (e.path("repo"), e.path("out"));
    let (repo, src_s, out_s) = (
        repo.to_str().unwrap(),
        src.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    e.ok(&["init", "-r", repo, "--encrypt-pass-file", e.pass()]);
    let mut args = vec!["backup", "-r", repo, "--encrypt-pass-file", e.pass()];
    args.extend(["--path-to-backup", src_s, "--backup-name", "c"]);
    held_to_the_budget(&e, "backup", args);
    let mut args = vec!["restore", "-r", repo, "--encrypt-pass-file", e.pass()];
    args.extend(["--restore-abs-path", out_s, "--backup-name", "c"]);
    // A restore's fetchers wait before every run: it overdraws by at most one run.
    let leased = held_to_the_budget(&e, "restore", args);
    assert!(leased <= BUDGET + (8 << 20), "restore leased {leased}");
    assert_same_tree(&src, &out, true);
}

#[test]
fn a_tiny_budget_slows_a_backup_down_and_bad_values_are_named() {
    let e = Env::new();
    let src = e.path("corpus");
    corpus(&src, 24, 14);
    let repo = e.path("repo");
    let repo = repo.to_str().unwrap();
    e.ok(&["init", "-r", repo, "--encrypt-pass-file", e.pass()]);
    let src_s = src.to_str().unwrap();
    // The smallest budget with one thread and with many: backpressure, never a failure.
    for threads in ["1", "16"] {
        let b = e.json(&[
            "backup",
            "-r",
            repo,
            "--encrypt-pass-file",
            e.pass(),
            "--path-to-backup",
            src_s,
            "--backup-name",
            threads,
            "--threads",
            threads,
            "--max-memory",
            "8M",
        ]);
        assert_eq!(b["complete"], true);
        assert_eq!(memory(&b).0, 8 << 20);
    }
    let out = e.path("out");
    e.ok(&[
        "restore",
        "-r",
        repo,
        "--encrypt-pass-file",
        e.pass(),
        "--restore-abs-path",
        out.to_str().unwrap(),
        "--backup-name",
        "1",
        "--threads",
        "1",
        "--max-memory",
        "8M",
    ]);
    assert_same_tree(&src, &out, true);
    for (flag, value, says) in [
        ("--max-memory", "1M", "less than the smallest budget"),
        ("--max-memory", "lots", "is not a size"),
        ("--threads", "0", "0 is not in 1..=1024"),
    ] {
        let o = e.run(&[
            "backup",
            "-r",
            repo,
            "--encrypt-pass-file",
            e.pass(),
            "--path-to-backup",
            src_s,
            "--backup-name",
            "x",
            flag,
            value,
        ]);
        assert!(!o.status.success(), "{flag} {value} was accepted");
        assert!(stderr(&o).contains(says), "{flag} {value}: {}", stderr(&o));
    }
}
