//! Both binaries end quietly when the reader of their output goes away
//! (`freezer snapshots --json | head -1`): no panic, no backtrace, the exit status the command
//! would have had. The pipe's reading end is closed before the program writes, so every write
//! meets EPIPE, as it does when `head` has exited.

use std::process::{Command, Stdio};

use crate::Env;

/// Runs `cmd` with its stdout a pipe whose reading end is already closed; returns the exit
/// status and stderr.
fn run_into_closed_pipe(mut cmd: Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = cmd
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[track_caller]
fn assert_quiet(what: &str, (code, err): (Option<i32>, String)) {
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(!err.contains("internal error"), "{what}: {err}");
    assert!(!err.contains("Broken pipe"), "{what}: {err}");
    assert_eq!(code, Some(0), "{what}: {err}");
}

#[test]
fn freezer_ends_quietly_when_its_reader_is_gone() {
    let env = Env::new();
    let repo = env.path("repo");
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    let repo = repo.to_str().unwrap();
    env.ok(&["init", "--repo", repo]);
    for _ in 0..3 {
        env.ok(&[
            "backup",
            "--repo",
            repo,
            "--path-to-backup",
            src.to_str().unwrap(),
            "--backup-name",
            "b",
        ]);
    }
    for args in [
        &["snapshots", "--json", "--repo", repo][..],
        &["snapshots", "--repo", repo],
        &["--help"],
    ] {
        assert_quiet(
            &format!("freezer {args:?}"),
            run_into_closed_pipe(env.cmd(args)),
        );
    }
}

#[test]
fn freezer_agent_ends_quietly_when_its_reader_is_gone() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    let st = env.path("st");
    let backup = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_freezer-agent"));
        c.args([
            "--path-to-backup",
            src.to_str().unwrap(),
            "--container",
            st.to_str().unwrap(),
        ])
        .args([
            "--storage",
            "local",
            "--backup-name",
            "b",
            "--engine",
            "native",
        ])
        .args(extra);
        c
    };
    // The result table, the metadata JSON, the help.
    assert_quiet("agent backup", run_into_closed_pipe(backup(&[])));
    assert_quiet(
        "agent --metadata-out -",
        run_into_closed_pipe(backup(&["--metadata-out", "-"])),
    );
    let mut help = Command::new(env!("CARGO_BIN_EXE_freezer-agent"));
    help.arg("--help");
    assert_quiet("agent --help", run_into_closed_pipe(help));
    // The backups were made all the same.
    let o = Command::new(env!("CARGO_BIN_EXE_freezer-agent"))
        .args([
            "--action",
            "info",
            "--container",
            st.to_str().unwrap(),
            "--storage",
            "local",
            "-e",
            "native",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).matches(" b ").count(), 2);
}
