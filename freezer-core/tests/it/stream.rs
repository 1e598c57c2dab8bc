//! Stream backups through the job API (mode `command` and `stdin`): a command's stdout
//! round-trips byte-identical to a writer and into a command, deduplicates against itself,
//! and a command that fails, kills itself, cannot be found, or is cancelled fails the backup
//! with a clear error and leaves no snapshot, no lock, and a repository that checks clean.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use freezer_core::engine::{CheckOptions, NoProgress, ReadData, check};
use freezer_core::job::{
    ActionOutcome, FreezerAction, RunContext, StdStreams, exec_environment, run_action,
};
use freezer_core::{Error, ErrorKind};

use crate::support::*;

/// A writer whose bytes the test reads afterwards.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ctx() -> RunContext {
    let mut c = RunContext::current();
    c.actor = actor();
    c.exec_env = exec_environment(std::env::vars());
    c
}

struct Fixture {
    tmp: tempfile::TempDir,
    encrypted: bool,
}

impl Fixture {
    async fn new(encrypted: bool) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("pass"), "pw\n").unwrap();
        let f = Fixture { tmp, encrypted };
        init(vec![local(&f.repo())], encrypted.then_some("pw")).await;
        f
    }

    fn repo(&self) -> std::path::PathBuf {
        self.tmp.path().join("repo")
    }

    fn path(&self, p: &str) -> std::path::PathBuf {
        self.tmp.path().join(p)
    }

    /// An action on the repository with `fields` (JSON object members, without braces).
    fn action(&self, fields: &str) -> FreezerAction {
        let pass = if self.encrypted {
            format!(
                r#","encrypt_pass_file":{}"#,
                serde_json::json!(self.path("pass"))
            )
        } else {
            String::new()
        };
        FreezerAction::from_json(&format!(
            r#"{{"container":{},"backup_name":"db","hostname":"test-host"{pass},{fields}}}"#,
            serde_json::json!(self.repo())
        ))
        .unwrap()
    }

    async fn backup(
        &self,
        fields: &str,
    ) -> freezer_core::Result<freezer_core::engine::BackupResult> {
        let a = self.action(&format!(r#""action":"backup",{fields}"#));
        match run_action(&a, &ctx()).await? {
            ActionOutcome::Backup(b) => Ok(*b),
            other => panic!("{other:?}"),
        }
    }

    /// Restores the newest snapshot to a captured stdout.
    async fn restore_to_stdout(&self) -> Vec<u8> {
        let out = Captured::default();
        let mut c = ctx();
        c.std_streams = StdStreams::new(Box::new(std::io::empty()), Box::new(out.clone()));
        let a = self.action(r#""action":"restore","restore_abs_path":"-""#);
        let r = match run_action(&a, &c).await.unwrap() {
            ActionOutcome::Restore(r) => r,
            other => panic!("{other:?}"),
        };
        assert!(r.is_complete(), "{r:?}");
        let bytes = out.0.lock().unwrap().clone();
        assert_eq!(r.bytes, bytes.len() as u64);
        bytes
    }

    async fn snapshots(&self) -> usize {
        let repo = open(&[&self.repo()], self.encrypted.then_some("pw")).await;
        repo.snapshots().await.unwrap().0.len()
    }

    async fn assert_checks_clean(&self) {
        let mut repo = open(&[&self.repo()], self.encrypted.then_some("pw")).await;
        let mut o = CheckOptions::new(actor());
        o.read_data = ReadData::All;
        let r = check(&mut repo, &o, Arc::new(NoProgress)).await.unwrap();
        assert!(r.is_ok(), "{:?}", r.damaged);
        assert!(!has_lock(&self.repo()), "no lock left behind");
    }
}

fn cmd_field(line: &str) -> String {
    format!(r#""mode":"command","command":{}"#, serde_json::json!(line))
}

fn write_data(path: &Path, n: usize, seed: u64) -> Vec<u8> {
    let data = pseudo_random(n, seed);
    std::fs::write(path, &data).unwrap();
    data
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_stream_round_trips_byte_identical_and_dedups_plain_and_encrypted() {
    for encrypted in [true, false] {
        let f = Fixture::new(encrypted).await;
        let data = write_data(&f.path("dump.bin"), 6 << 20, 7);
        // The command's words are split without a shell: the quoted path keeps its space.
        std::fs::rename(f.path("dump.bin"), f.path("my dump.bin")).unwrap();
        let line = format!("cat '{}'", f.path("my dump.bin").display());
        let first = f.backup(&cmd_field(&line)).await.unwrap();
        assert!(first.is_complete(), "{first:?}");
        let s = &first.snapshot;
        assert_eq!(
            (s.mode.as_str(), s.command.as_deref()),
            ("command", Some(line.as_str()))
        );
        assert_eq!(s.path_to_backup, "-");
        assert_eq!((s.stats.files, s.stats.bytes), (1, data.len() as u64));
        assert_eq!(f.restore_to_stdout().await, data, "byte-identical");

        // The same stream again adds almost nothing: the snapshot, its tree, an index.
        let before = du(&f.repo());
        let second = f.backup(&cmd_field(&line)).await.unwrap();
        let added = du(&f.repo()) - before;
        assert!(
            added < 64 * 1024 && second.snapshot.stats.bytes_added < 16 * 1024,
            "the same {} bytes again added {added} bytes ({} in packs)",
            data.len(),
            second.snapshot.stats.bytes_added
        );
        assert_eq!(f.snapshots().await, 2);

        // Into a command's stdin (through a shell, for the redirection).
        let out = f.path("restored.bin");
        let a = f.action(&format!(
            r#""action":"restore","shell":true,"restore_command":{}"#,
            serde_json::json!(format!("cat > '{}'", out.display()))
        ));
        run_action(&a, &ctx()).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
        f.assert_checks_clean().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_backed_up_through_stdin_restores_into_a_folder_too() {
    let f = Fixture::new(true).await;
    let data = pseudo_random(3 << 20, 11);
    let mut c = ctx();
    c.std_streams = StdStreams::new(
        Box::new(std::io::Cursor::new(data.clone())),
        Box::new(std::io::sink()),
    );
    let a = f.action(r#""action":"backup","mode":"stdin","path_to_backup":"-""#);
    let b = match run_action(&a, &c).await.unwrap() {
        ActionOutcome::Backup(b) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (b.snapshot.mode.as_str(), b.snapshot.stats.bytes),
        ("stdin", data.len() as u64)
    );
    // Stdin is read once: a second action finds none.
    let e = run_action(&a, &c).await.unwrap_err();
    assert!(e.to_string().contains("no standard input"), "{e}");
    assert_eq!(f.restore_to_stdout().await, data);
    // A folder restore gives the stream as a file named after it.
    let a = f.action(&format!(
        r#""action":"restore","restore_abs_path":{}"#,
        serde_json::json!(f.path("out"))
    ));
    run_action(&a, &ctx()).await.unwrap();
    assert_eq!(std::fs::read(f.path("out/stdin")).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_killed_or_missing_command_fails_the_backup_and_leaves_no_snapshot() {
    let f = Fixture::new(true).await;
    write_data(&f.path("part.bin"), 3 << 20, 3);
    let part = f.path("part.bin");
    let cases: [(String, bool, &[&str]); 3] = [
        (
            format!(
                "cat '{}'; echo 'dump: disk full' >&2; exit 3",
                part.display()
            ),
            true,
            &["exited with status 3", "dump: disk full", "exit 3"],
        ),
        (
            format!("cat '{}'; kill -9 $$", part.display()),
            true,
            &["killed by signal 9", "kill -9"],
        ),
        (
            "no-such-dump-program --all".to_string(),
            false,
            &["no-such-dump-program", "program not found"],
        ),
    ];
    for (line, shell, needles) in cases {
        let fields = format!(r#"{},"shell":{shell}"#, cmd_field(&line));
        let e = f.backup(&fields).await.unwrap_err();
        let msg = e.to_string();
        for n in needles {
            assert!(msg.contains(n), "{line}: {msg:?} lacks {n:?}");
        }
        assert_eq!(f.snapshots().await, 0, "{line}: no snapshot");
        f.assert_checks_clean().await;
    }
    // The data a failed run uploaded is indexed: a good run sends little of it again.
    let good = f
        .backup(&cmd_field(&format!("cat '{}'", part.display())))
        .await
        .unwrap();
    assert!(good.is_complete());
    assert!(
        good.snapshot.stats.bytes_added < 1 << 20,
        "{}",
        good.snapshot.stats.bytes_added
    );
    f.assert_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_kills_the_command_and_a_failing_restore_command_fails_the_restore() {
    let f = Fixture::new(false).await;
    let pidfile = f.path("pid");
    let line = format!(
        "echo $$ > '{}'; head -c 100000 /dev/zero; exec sleep 600",
        pidfile.display()
    );
    let a = f.action(&format!(
        r#""action":"backup","shell":true,{}"#,
        cmd_field(&line)
    ));
    let c = ctx();
    let cancel = c.cancel.clone();
    let run = tokio::spawn(async move { run_action(&a, &c).await });
    while std::fs::read_to_string(&pidfile).map_or(true, |s| !s.ends_with('\n')) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    cancel.cancel();
    let e = run.await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e}");
    // The sleep is killed, not left behind (a zombie is reaped at once by the runtime).
    let gone = |pid: i32| !Path::new(&format!("/proc/{pid}")).exists();
    for _ in 0..250 {
        if gone(pid) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone(pid), "the command {pid} was killed");
    assert_eq!(f.snapshots().await, 0);
    f.assert_checks_clean().await;

    // A restore into a command that fails, fails.
    write_data(&f.path("d.bin"), 1 << 20, 5);
    f.backup(&cmd_field(&format!("cat '{}'", f.path("d.bin").display())))
        .await
        .unwrap();
    let a = f.action(
        r#""action":"restore","shell":true,"restore_command":"head -c 10 >/dev/null; echo 'psql: refused' >&2; exit 4""#,
    );
    let e = run_action(&a, &ctx()).await.unwrap_err().to_string();
    assert!(
        e.contains("restore_command") && e.contains("status 4") && e.contains("psql: refused"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_options_are_checked_before_anything_runs() {
    let f = Fixture::new(false).await;
    let refused = |fields: &str| {
        let a = f.action(&format!(r#""action":"backup",{fields}"#));
        a.validate().unwrap_err()
    };
    for (fields, starts) in [
        (r#""mode":"command""#, "command:"),
        (r#""mode":"command","command":"echo 'x""#, "command:"),
        (
            r#""mode":"stdin","path_to_backup":"/etc""#,
            "path_to_backup:",
        ),
        (r#""mode":"stdin","command":"ls""#, "command:"),
        (
            r#""mode":"command","command":"ls","consistency_check":true"#,
            "consistency_check:",
        ),
        (r#""path_to_backup":"/etc","command":"ls""#, "command:"),
        (
            r#""mode":"command","comand":"ls""#,
            "comand: unknown option",
        ),
    ] {
        let e = refused(fields).to_string();
        assert!(e.starts_with(starts), "{fields}: {e}");
    }
    let e = refused(r#""mode":"cinder""#);
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("\"cinder\""), "{e}");
    assert!(e.to_string().contains("fs, command, stdin"), "{e}");
    let a = f.action(r#""action":"restore","restore_abs_path":"/x","restore_command":"cat""#);
    assert!(
        a.validate()
            .unwrap_err()
            .to_string()
            .starts_with("restore_command:")
    );
    // A node that refuses exec refuses a command stream too.
    let mut c = ctx();
    c.allow_exec = false;
    let a = f.action(&format!(r#""action":"backup",{}"#, cmd_field("echo hi")));
    let e = run_action(&a, &c).await.unwrap_err().to_string();
    assert!(e.contains("--disable-exec"), "{e}");
    assert_eq!(f.snapshots().await, 0);
}
