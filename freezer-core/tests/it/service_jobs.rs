//! Jobs as the service runs them: a cancel (the scheduler's `abort`) stops a running backup or
//! restore within two seconds and leaves the repository valid; `exec` runs a command without a
//! shell; a backup yields upstream's metadata document; job documents are type-checked.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freezer_core::engine::Progress;
use freezer_core::job::{ActionOutcome, FreezerAction, Job, RunContext, run_action, run_job};
use freezer_core::{CancelToken, Error, ErrorKind};

use crate::support::*;

/// Cancels `token` once `limit` bytes were processed: the operation is surely under way.
struct CancelAfter {
    seen: AtomicU64,
    limit: u64,
    token: CancelToken,
    at: Mutex<Option<Instant>>,
}

impl CancelAfter {
    fn new(limit: u64, token: CancelToken) -> Arc<Self> {
        Arc::new(CancelAfter {
            seen: AtomicU64::new(0),
            limit,
            token,
            at: Mutex::new(None),
        })
    }
    fn cancelled_at(&self) -> Instant {
        self.at
            .lock()
            .unwrap()
            .expect("the operation was cancelled midway")
    }
}

impl Progress for CancelAfter {
    fn add_bytes(&self, n: u64) {
        let before = self.seen.fetch_add(n, Ordering::Relaxed);
        if before < self.limit && before + n >= self.limit {
            *self.at.lock().unwrap() = Some(Instant::now());
            self.token.cancel();
        }
    }
}

/// `files` incompressible files of `mib` MiB each, plus many small ones.
fn big_corpus(root: &Path, files: usize, mib: usize) {
    std::fs::create_dir_all(root.join("small")).unwrap();
    for i in 0..files {
        std::fs::write(
            root.join(format!("big-{i:03}")),
            pseudo_random(mib << 20, i as u64 + 7),
        )
        .unwrap();
    }
    for i in 0..500 {
        std::fs::write(
            root.join("small").join(format!("s{i}")),
            pseudo_random(1000 + i, i as u64),
        )
        .unwrap();
    }
}

fn action(json: String) -> FreezerAction {
    FreezerAction::from_json(&json).unwrap()
}

fn backup_action(data: &Path, repo: &Path) -> FreezerAction {
    action(format!(
        r#"{{"action":"backup","path_to_backup":"{}","backup_name":"big","hostname":"node1","container":"{}"}}"#,
        data.display(),
        repo.display()
    ))
}

fn restore_action(repo: &Path, target: &Path) -> FreezerAction {
    action(format!(
        r#"{{"action":"restore","restore_abs_path":"{}","backup_name":"big","hostname":"node1","container":"{}"}}"#,
        target.display(),
        repo.display()
    ))
}

fn check_action(repo: &Path) -> FreezerAction {
    action(format!(
        r#"{{"action":"check","container":"{}","read_data":"all"}}"#,
        repo.display()
    ))
}

async fn assert_valid(repo: &Path) {
    assert!(!has_lock(repo), "the lock was released");
    match run_action(&check_action(repo), &RunContext::current()).await {
        Ok(ActionOutcome::Check(r)) => assert!(r.is_ok(), "{r:?}"),
        other => panic!("check: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_stops_a_backup_and_a_restore_within_two_seconds_leaving_the_repository_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo) = (tmp.path().join("data"), tmp.path().join("repo"));
    big_corpus(&data, 48, 4); // 192 MiB
    let b = backup_action(&data, &repo);

    // A backup cancelled after 16 MiB were read.
    let mut ctx = RunContext::current();
    let progress = CancelAfter::new(16 << 20, ctx.cancel.clone());
    ctx.progress = progress.clone();
    let e = run_action(&b, &ctx).await.unwrap_err();
    let took = progress.cancelled_at().elapsed();
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert!(
        took < Duration::from_secs(2),
        "stopped {took:?} after the cancel"
    );
    assert_eq!(
        std::fs::read_dir(repo.join("snapshots")).map_or(0, |d| d.count()),
        0,
        "no snapshot"
    );
    assert_valid(&repo).await;
    // What the cancelled backup stored (how much depends on how far its uploads got).
    let stored: u64 = walk_size(&repo.join("data"));

    // The next backup is complete, and reuses what the cancelled one stored.
    let outcome = run_action(&b, &RunContext::current()).await.unwrap();
    let ActionOutcome::Backup(r) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(r.is_complete(), "{r:?}");
    assert_eq!(r.snapshot.stats.files, 48 + 500);
    // Random data does not compress: every stored pack byte is a byte not added again
    // (with one pack of slack for headers and a pack cut at the cancel).
    assert!(
        r.snapshot.stats.bytes_added + stored <= (192 << 20) + (500 * 1250) + (8 << 20),
        "the packs of the cancelled backup ({stored} bytes) were not reused: {} bytes added",
        r.snapshot.stats.bytes_added
    );
    assert_valid(&repo).await;

    // A restore cancelled after 16 MiB were written leaves nothing outside its target.
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let target = out.join("target");
    let mut ctx = RunContext::current();
    let progress = CancelAfter::new(16 << 20, ctx.cancel.clone());
    ctx.progress = progress.clone();
    let e = run_action(&restore_action(&repo, &target), &ctx)
        .await
        .unwrap_err();
    let took = progress.cancelled_at().elapsed();
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert!(
        took < Duration::from_secs(2),
        "stopped {took:?} after the cancel"
    );
    let outside: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "target")
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
    assert!(
        !target.exists(),
        "the folder the restore created is removed"
    );
    assert_valid(&repo).await;

    // Run again, the restore is whole.
    let outcome = run_action(&restore_action(&repo, &target), &RunContext::current())
        .await
        .unwrap();
    assert!(outcome.is_complete(), "{outcome:?}");
    assert_eq!(fingerprint(&data), fingerprint(&target));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_job_runs_no_further_action_and_a_retry_wait_wakes() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ran");
    // The first action fails and waits an hour before its retry; the second must not run.
    let job = Job::from_json(&format!(
        r#"{{"job_id":"j1","job_actions":[
            {{"freezer_action":{{"action":"exec","command":"false"}},"max_retries":3,"max_retries_interval":3600}},
            {{"freezer_action":{{"action":"exec","command":"touch {}"}}}}]}}"#,
        marker.display()
    ))
    .unwrap();
    job.validate_with(false).unwrap();
    let mut ctx = RunContext::current();
    ctx.exec_env = freezer_core::job::exec_environment(std::env::vars());
    let token = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel();
    });
    let started = Instant::now();
    let reports = tokio::time::timeout(Duration::from_secs(10), run_job(&job, &ctx))
        .await
        .expect("the retry wait wakes on cancel");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(reports[0].outcome.is_err() && reports[0].attempts == 1);
    assert!(
        reports[1].cancelled && reports[1].attempts == 0,
        "{reports:?}"
    );
    assert!(!marker.exists(), "the second action did not run");
    let doc = serde_json::to_value(&reports[1]).unwrap();
    assert_eq!(doc["cancelled"], true, "{doc}");
}

fn exec_ctx() -> RunContext {
    let mut ctx = RunContext::current();
    ctx.exec_env = freezer_core::job::exec_environment(std::env::vars());
    ctx
}

fn exec(command: &str) -> FreezerAction {
    action(serde_json::json!({"action": "exec", "command": command}).to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_without_a_shell_and_fails_on_a_non_zero_exit() {
    // Quoting: one argument with blanks and shell characters, not interpreted.
    let outcome = run_action(&exec(r#"printf '%s|' "a b" '$HOME' 'x;y'"#), &exec_ctx())
        .await
        .unwrap();
    let ActionOutcome::Exec(r) = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(r.stdout_tail, "a b|$HOME|x;y|");
    assert_eq!(r.exit_status, 0);
    let doc = serde_json::to_value(&outcome).unwrap();
    assert_eq!(doc["action"], "exec", "{doc}");

    // A non-zero exit names the command and the status, and the end of stderr.
    let e = run_action(&exec("sh -c 'echo broken >&2; exit 3'"), &exec_ctx())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("exec `sh -c"), "{msg}");
    assert!(msg.contains("exited with status 3"), "{msg}");
    assert!(msg.contains("broken"), "{msg}");

    // Death by a signal.
    let e = run_action(&exec("sh -c 'kill -TERM $$'"), &exec_ctx())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("killed by signal 15"), "{e}");

    // A missing program, unbalanced quotes, no command: errors naming the field.
    let e = run_action(&exec("/nonexistent/program --x"), &exec_ctx())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert!(
        e.to_string()
            .starts_with("command: /nonexistent/program: program not found"),
        "{e}"
    );
    let e = run_action(&exec("echo 'oops"), &exec_ctx())
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("command: unbalanced"), "{e}");
    let e = action(r#"{"action":"exec"}"#.into())
        .validate()
        .unwrap_err();
    assert!(e.to_string().starts_with("command:"), "{e}");

    // The environment is what the caller gives, and no credential of its own.
    let mut ctx = exec_ctx();
    ctx.env.insert("SECRET_KEY".into(), "do-not-pass".into());
    ctx.exec_env.insert("JOB_VAR".into(), "given".into());
    let outcome = run_action(&exec("env"), &ctx).await.unwrap();
    let ActionOutcome::Exec(r) = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(r.stdout_tail.contains("JOB_VAR=given"), "{}", r.stdout_tail);
    assert!(!r.stdout_tail.contains("do-not-pass"), "{}", r.stdout_tail);

    // Only the tail of a long output is kept.
    let outcome = run_action(&exec("head -c 1000000 /dev/zero"), &exec_ctx())
        .await
        .unwrap();
    let ActionOutcome::Exec(r) = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(r.stdout_tail.len(), freezer_core::job::TAIL_BYTES);

    // Refused where exec is disabled, naming the flag.
    let mut ctx = exec_ctx();
    ctx.allow_exec = false;
    let e = run_action(&exec("true"), &ctx).await.unwrap_err();
    assert!(e.to_string().contains("--disable-exec"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_kills_the_command_and_its_children() {
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("pid");
    let ctx = exec_ctx();
    let token = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel();
    });
    let started = Instant::now();
    // A shell that starts a child: the cancel must reach the child too (process group).
    let cmd = format!("sh -c 'sleep 30 & echo $! > {}; wait'", pidfile.display());
    let e = run_action(&exec(&cmd), &ctx).await.unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild is gone (or a zombie reaped by init shortly).
    let gone = (0..50).any(|_| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let dead = stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z");
        if !dead {
            std::thread::sleep(Duration::from_millis(100));
        }
        dead
    });
    assert!(gone, "sleep {pid} still runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_gives_upstreams_metadata_document_and_writes_metadata_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo, out) = (
        tmp.path().join("data"),
        tmp.path().join("repo"),
        tmp.path().join("meta.json"),
    );
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("a.txt"), "alpha").unwrap();
    std::fs::write(data.join("sub/b.bin"), pseudo_random(100_000, 3)).unwrap();
    let job = Job::from_json(&format!(
        r#"{{"job_id":"job-7","client_id":"p_node1","session_tag":0,"job_actions":[{{"freezer_action":
            {{"action":"backup","path_to_backup":"{}","backup_name":"web","hostname":"node1",
              "container":"{}","metadata_out":"{}","consistency_check":true}}}}]}}"#,
        data.display(),
        repo.display(),
        out.display()
    ))
    .unwrap();
    let reports = run_job(&job, &RunContext::current()).await;
    assert!(reports[0].outcome.is_ok(), "{reports:?}");
    let meta = reports[0].backup_metadata.clone().expect("metadata");
    for key in [
        "container",
        "hostname",
        "backup_name",
        "level",
        "curr_backup_level",
        "time_stamp",
        "path_to_backup",
        "storage",
        "mode",
        "engine_name",
        "compression",
        "encrypted",
        "fs_real_path",
        "total_fs_files",
        "total_directories",
        "backup_size_uncompressed",
        "backup_size_compressed",
        "consistency_checksum",
        "client_version",
        "client_os",
        "job_id",
        "snapshot_id",
    ] {
        assert!(meta.get(key).is_some(), "{key} missing in {meta}");
    }
    assert_eq!(meta["hostname"], "node1");
    assert_eq!(meta["backup_name"], "web");
    assert_eq!(meta["job_id"], "job-7");
    assert_eq!(meta["storage"], "local");
    assert_eq!(meta["encrypted"], false);
    assert_eq!(meta["curr_backup_level"], 0);
    assert!(meta["time_stamp"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(meta["consistency_checksum"].as_str().unwrap().len(), 64);
    let ActionOutcome::Backup(b) = reports[0].outcome.as_ref().unwrap() else {
        panic!()
    };
    assert_eq!(meta["snapshot_id"], b.snapshot_id.unwrap().to_string());
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // The file is the same document but for the job id, which the action alone lacks.
    assert_eq!(written["snapshot_id"], meta["snapshot_id"]);
    assert_eq!(written["total_fs_files"], 2);
    assert_eq!(meta["total_directories"], 2);
}

#[test]
fn job_level_fields_are_type_checked_naming_the_field() {
    let ok = r#"{"freezer_action":{"action":"exec","command":"true"}}"#;
    for (doc, field) in [
        (
            format!(r#"{{"session_tag":"x","job_actions":[{ok}]}}"#),
            "session_tag",
        ),
        (
            format!(r#"{{"session_id":7,"job_actions":[{ok}]}}"#),
            "session_id",
        ),
        (
            format!(r#"{{"client_id":["a"],"job_actions":[{ok}]}}"#),
            "client_id",
        ),
        (
            format!(r#"{{"description":{{}},"job_actions":[{ok}]}}"#),
            "description",
        ),
        (
            format!(r#"{{"job_schedule":"daily","job_actions":[{ok}]}}"#),
            "job_schedule",
        ),
        (
            format!(r#"{{"action_defaults":3,"job_actions":[{ok}]}}"#),
            "action_defaults",
        ),
        (r#"{"job_actions":{"a":1}}"#.to_string(), "job_actions"),
        (r#"{"job_actions":[7]}"#.to_string(), "job_actions[0]"),
        (
            r#"{"job_actions":[{"freezer_action":"x"}]}"#.to_string(),
            "job_actions[0].freezer_action",
        ),
        (
            format!(r#"{{"job_actions":[{ok},{{"freezer_action":{{}},"max_retries":"many"}}]}}"#),
            "job_actions[1].max_retries",
        ),
        (
            r#"{"job_actions":[{"freezer_action":{},"max_retries_interval":-1}]}"#.to_string(),
            "job_actions[0].max_retries_interval",
        ),
        (
            r#"{"job_actions":[{"freezer_action":{},"mandatory":"perhaps"}]}"#.to_string(),
            "job_actions[0].mandatory",
        ),
        ("[1,2]".to_string(), "document"),
    ] {
        let e = Job::from_json(&doc).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput, "{doc}");
        assert!(
            e.to_string().starts_with(&format!("{field}:")),
            "{doc}: {e}"
        );
    }
    let j = Job::from_json(
        r#"{"session_tag":3,"session_id":null,"client_id":"c","job_schedule":{"schedule_interval":"2 seconds"},
            "job_actions":[{"freezer_action":{"action":"exec","command":"true"},"mandatory":"True","max_retries":"2"}]}"#,
    )
    .unwrap();
    assert!(j.job_actions[0].mandatory);
    assert_eq!(j.job_actions[0].max_retries, 2);
    j.validate_with(false).unwrap();
}

/// The bytes of every file under `dir` (0 when it does not exist).
fn walk_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_size(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}
