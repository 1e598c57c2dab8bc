//! `freezer backup --mode command|stdin` and restores to stdout or into a command, run as an
//! operator would: stdin piped in, stdout captured, exit codes and stderr read.

use std::io::Write;
use std::process::Stdio;

use crate::support::pseudo_random;
use crate::{Env, stderr};

fn repo_args(e: &Env) -> Vec<String> {
    ["--repo", "repo", "--encrypt-pass-file", e.pass()]
        .map(String::from)
        .to_vec()
}

fn with(e: &Env, head: &[&str], tail: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = head.iter().map(|s| s.to_string()).collect();
    v.extend(repo_args(e));
    v.extend(tail.iter().map(|s| s.to_string()));
    v
}

fn run(e: &Env, args: &[String]) -> std::process::Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    e.run(&a)
}

fn snapshot_count(e: &Env) -> usize {
    let a = with(e, &["snapshots"], &["--json"]);
    let o = run(e, &a);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["snapshots"].as_array().unwrap().len()
}

fn check_passes(e: &Env) {
    let o = run(e, &with(e, &["check"], &["--read-data"]));
    assert!(o.status.success(), "freezer check: {}", stderr(&o));
}

#[test]
fn stdin_round_trips_through_the_cli_to_stdout() {
    let e = Env::new();
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", e.pass()]);
    let data = pseudo_random(3 << 20, 21);
    let args = with(
        &e,
        &["backup"],
        &[
            "--mode",
            "stdin",
            "--path-to-backup",
            "-",
            "-N",
            "db",
            "--json",
        ],
    );
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = e
        .cmd(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["bytes_read"].as_u64(), Some(data.len() as u64));

    let list = run(&e, &with(&e, &["snapshots"], &[]));
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("MODE") && text.contains("stdin"), "{text}");

    let o = run(
        &e,
        &with(&e, &["restore"], &["-N", "db", "--restore-abs-path", "-"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout == data, "stdout holds the stream, and only it");
    assert!(stderr(&o).contains("to stdout"), "{}", stderr(&o));
}

#[test]
fn a_command_backup_restores_into_a_command_and_a_failing_one_leaves_nothing() {
    let e = Env::new();
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", e.pass()]);
    let data = pseudo_random(4 << 20, 9);
    std::fs::write(e.path("dump.sql"), &data).unwrap();
    let o = run(
        &e,
        &with(
            &e,
            &["backup"],
            &["--mode", "command", "--command", "cat dump.sql", "-N", "db"],
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let list = run(&e, &with(&e, &["snapshots"], &["--json"]));
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let s = &v["snapshots"][0];
    assert_eq!(
        (s["mode"].as_str(), s["command"].as_str()),
        (Some("command"), Some("cat dump.sql"))
    );

    // Into a command's stdin: split into words without a shell, then through one.
    let o = run(
        &e,
        &with(
            &e,
            &["restore"],
            &[
                "-N",
                "db",
                "--restore-command",
                "sh -c 'cat > restored.sql'",
            ],
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(e.path("restored.sql")).unwrap() == data);
    let o = run(
        &e,
        &with(
            &e,
            &["restore"],
            &[
                "-N",
                "db",
                "--shell",
                "--restore-command",
                "cat > again.sql",
            ],
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(e.path("again.sql")).unwrap() == data);
    let o = run(
        &e,
        &with(
            &e,
            &["restore"],
            &["-N", "db", "--shell", "--restore-command", "exit 5"],
        ),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("exited with status 5"),
        "{}",
        stderr(&o)
    );

    // Failures: non-zero exit, a signal, a missing program. Each exits 1, names the cause,
    // and adds no snapshot; the repository checks clean.
    for (extra, needle) in [
        (
            vec![
                "--shell",
                "--command",
                "cat dump.sql; echo 'no space' >&2; exit 3",
            ],
            "exited with status 3 (stderr: no space)",
        ),
        (
            vec![
                "--shell",
                "--command",
                "head -c 100000 dump.sql; kill -9 $$",
            ],
            "killed by signal 9",
        ),
        (
            vec!["--command", "pg_dumpall_missing -U x"],
            "pg_dumpall_missing: program not found",
        ),
    ] {
        let mut tail = vec!["--mode", "command", "-N", "db"];
        tail.extend(extra);
        let o = run(&e, &with(&e, &["backup"], &tail));
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
        assert_eq!(snapshot_count(&e), 1);
        check_passes(&e);
    }
    // Bad flags.
    let o = run(
        &e,
        &with(&e, &["backup"], &["--mode", "command", "-N", "db"]),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("command"), "{}", stderr(&o));
    let o = run(&e, &with(&e, &["backup"], &["--mode", "mysql", "-N", "db"]));
    assert_ne!(o.status.code(), Some(0));
}
