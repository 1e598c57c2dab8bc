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

/// Runs `freezer <args> --json` and gives its document, failing the test when it takes more
/// than two minutes (a budget that deadlocks its pipeline would hang, not fail).
fn json_within_deadline(e: &Env, args: &[&str]) -> serde_json::Value {
    let mut child = e
        .cmd(args)
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("freezer {args:?} did not finish in 120 s: the budget stalled the run");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "freezer {args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_tiny_budget_slows_a_backup_down_and_bad_values_are_named() {
    let e = Env::new();
    let src = e.path("corpus");
    corpus(&src, 24, 14);
    let (repo, out) = (e.path("repo"), e.path("out"));
    let (repo, src_s, out_s) = (
        repo.to_str().unwrap(),
        src.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    e.ok(&["init", "-r", repo, "--encrypt-pass-file", e.pass()]);
    let backup = |name: &'static str, extra: &[&'static str]| {
        let mut a = vec!["backup", "-r", repo, "--encrypt-pass-file", e.pass()];
        a.extend(["--path-to-backup", src_s, "--backup-name", name]);
        a.extend(extra);
        a
    };
    // The smallest budget with one thread and with many: backpressure, never a failure (nor a
    // stall: readers that waited for room in the middle of a chunk once held each other up).
    for threads in ["1", "16"] {
        let b = json_within_deadline(
            &e,
            &backup(threads, &["--threads", threads, "--max-memory", "8M"]),
        );
        assert_eq!(b["complete"], true);
        assert_eq!(memory(&b).0, 8 << 20);
    }
    let mut restore = vec!["restore", "-r", repo, "--encrypt-pass-file", e.pass()];
    restore.extend(["--restore-abs-path", out_s, "--backup-name", "1"]);
    restore.extend(["--threads", "1", "--max-memory", "8M"]);
    json_within_deadline(&e, &restore);
    assert_same_tree(&src, &out, true);
    for (flag, value, says) in [
        ("--max-memory", "1M", "less than the smallest budget"),
        ("--max-memory", "lots", "is not a size"),
        ("--threads", "0", "0 is not in 1..=1024"),
    ] {
        let o = e.run(&backup("x", &[flag, value]));
        assert!(!o.status.success(), "{flag} {value} was accepted");
        assert!(stderr(&o).contains(says), "{flag} {value}: {}", stderr(&o));
    }
}
