//! Tests of the `freezer` binary, run as an operator would: flags, output, exit codes, and
//! processes killed in the middle of a backup.

#[allow(dead_code)]
#[path = "../../../freezer-core/tests/it/mariadb_server.rs"]
mod mariadb_server;
#[allow(dead_code)]
#[path = "../../../freezer-core/tests/it/postgres_server.rs"]
mod postgres_server;
#[allow(dead_code)]
#[path = "../../../freezer-core/tests/it/servers.rs"]
mod servers;
#[allow(dead_code)]
#[path = "../../../freezer-core/tests/it/support.rs"]
mod support;

mod agent;
mod faults;
mod full;
mod init_config;
mod jobs;
mod lifecycle;
mod lvm;
mod memory;
mod mysql;
mod options;
mod pipe;
mod postgres;
mod restore;
mod stream;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use support::{assert_same_tree, corpus, odd_tree};

struct Env {
    tmp: tempfile::TempDir,
    pass: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let pass = tmp.path().join("pass");
        std::fs::write(&pass, "correct horse\nsecond line is ignored\n").unwrap();
        Env { tmp, pass }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_freezer"));
        c.args(args)
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "freezer {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    fn pass(&self) -> &str {
        self.pass.to_str().unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn init_backup_restore_and_json() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    let p = e.pass();
    let init = e.json(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    assert_eq!(init["encrypted"], true);
    let o = e.run(&[
        "backup",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--path-to-backup",
        "data",
        "-N",
        "web",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stderr.is_empty(),
        "no progress bar or noise when not on a terminal: {}",
        stderr(&o)
    );
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["level"], 0);
    assert_eq!(b["files"], 7);
    assert!(b["bytes_read"].as_u64().unwrap() > 4 << 20);
    assert!(b["bytes_added"].as_u64().unwrap() > 0);
    assert_eq!(b["complete"], true);
    let id = b["snapshot_id"].as_str().unwrap().to_string();
    let again = e.json(&[
        "backup",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--path-to-backup",
        "data",
        "-N",
        "web",
    ]);
    assert_eq!(
        (again["level"].as_u64(), again["bytes_read"].as_u64()),
        (Some(1), Some(0))
    );
    let list = e.json(&["snapshots", "--repo", "repo", "--encrypt-pass-file", p]);
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 2);
    let text = e.ok(&["snapshots", "--repo", "repo", "--encrypt-pass-file", p]);
    assert!(text.contains("web") && text.contains(&id[..8]), "{text}");
    let r = e.json(&[
        "restore",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--snapshot",
        &id[..10],
        "--restore-abs-path",
        "out",
    ]);
    assert_eq!(r["complete"], true);
    assert_same_tree(&e.path("data"), &e.path("out"), true);
    let show = e.ok(&[
        "snapshots",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "show",
        &id[..8],
        "--read-data",
    ]);
    assert!(show.contains("every chunk read and verified"), "{show}");
}

/// `freezer snapshots --json | head -1`: the reader goes away first; the command ends as it
/// would have, with nothing on stderr (no panic, no backtrace).
#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    let p = e.pass();
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    for _ in 0..2 {
        e.ok(&[
            "backup",
            "--repo",
            "repo",
            "--encrypt-pass-file",
            p,
            "--path-to-backup",
            "data",
            "-N",
            "web",
        ]);
    }
    for args in [
        &[
            "snapshots",
            "--repo",
            "repo",
            "--encrypt-pass-file",
            p,
            "--json",
        ][..],
        &["snapshots", "--repo", "repo", "--encrypt-pass-file", p],
        &["--help"],
    ] {
        let mut child = e
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before the command writes anything.
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert!(err.is_empty(), "{args:?}: {err}");
        assert!(o.status.success(), "{args:?}: {:?}", o.status);
    }
}

#[test]
fn failures_exit_non_zero_with_one_line_on_stderr() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    let p = e.pass();
    let missing = e.run(&["snapshots", "--repo", "nowhere", "--encrypt-pass-file", p]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("first with init"),
        "{}",
        stderr(&missing)
    );
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    let twice = e.run(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(stderr(&twice).contains("already exists"));
    e.ok(&[
        "backup",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--path-to-backup",
        "data",
        "-N",
        "web",
    ]);
    std::fs::write(e.path("bad"), "wrong\n").unwrap();
    let before = support::all_bytes(&e.path("repo"));
    for args in [
        vec!["snapshots", "--repo", "repo", "--encrypt-pass-file", "bad"],
        vec![
            "backup",
            "--repo",
            "repo",
            "--encrypt-pass-file",
            "bad",
            "--path-to-backup",
            "data",
            "-N",
            "web",
        ],
        vec![
            "restore",
            "--repo",
            "repo",
            "--encrypt-pass-file",
            "bad",
            "-N",
            "web",
            "--restore-abs-path",
            "x",
        ],
    ] {
        let o = e.run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("passphrase"), "{err}");
        assert!(o.stdout.is_empty());
    }
    assert_eq!(
        support::all_bytes(&e.path("repo")),
        before,
        "a wrong passphrase changes nothing"
    );
    assert!(!e.path("x").exists());
    let no_key = e.run(&["snapshots", "--repo", "repo"]);
    assert!(stderr(&no_key).contains("encrypted"), "{}", stderr(&no_key));
    std::fs::create_dir(e.path("busy")).unwrap();
    std::fs::write(e.path("busy/keep"), "x").unwrap();
    let busy = e.run(&[
        "restore",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "-N",
        "web",
        "--restore-abs-path",
        "busy",
    ]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(
        stderr(&busy).contains("Restore dir is not empty"),
        "{}",
        stderr(&busy)
    );
    let none = e.run(&[
        "restore",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "-N",
        "nope",
        "--restore-abs-path",
        "y",
    ]);
    assert!(stderr(&none).contains("not found"), "{}", stderr(&none));
    let date = e.run(&[
        "restore",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "-N",
        "web",
        "--restore-from-date",
        "yesterday",
        "--restore-abs-path",
        "y",
    ]);
    assert!(
        stderr(&date).starts_with("freezer: restore_from_date:"),
        "{}",
        stderr(&date)
    );
    let old = e.run(&[
        "restore",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "-N",
        "web",
        "--restore-from-date",
        "2001-01-01T00:00:00",
        "--restore-abs-path",
        "y",
    ]);
    assert!(stderr(&old).contains("at or before"), "{}", stderr(&old));
    let usage = e.run(&["backup", "--repo", "repo"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn keys_can_be_added_listed_changed_and_removed() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    let p = e.pass();
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    std::fs::write(e.path("p2"), "second passphrase\n").unwrap();
    std::fs::write(e.path("p3"), "third passphrase\n").unwrap();
    let added = e.json(&[
        "key",
        "add",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--new-pass-file",
        "p2",
    ]);
    let second = added["id"].as_str().unwrap().to_string();
    let keys = e.json(&["key", "list", "--repo", "repo", "--encrypt-pass-file", "p2"]);
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let first = keys.iter().find(|k| k["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Both passphrases open it; the key in use cannot be removed.
    e.ok(&[
        "backup",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        "p2",
        "--path-to-backup",
        "data",
        "-N",
        "web",
    ]);
    let own = e.run(&[
        "key",
        "remove",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        "p2",
        &second[..8],
    ]);
    assert!(stderr(&own).contains("in use"), "{}", stderr(&own));
    e.ok(&[
        "key",
        "remove",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        "p2",
        &first[..8],
    ]);
    let gone = e.run(&["snapshots", "--repo", "repo", "--encrypt-pass-file", p]);
    assert_eq!(gone.status.code(), Some(1));
    e.ok(&[
        "key",
        "passwd",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        "p2",
        "--new-pass-file",
        "p3",
    ]);
    assert_eq!(
        e.run(&["snapshots", "--repo", "repo", "--encrypt-pass-file", "p2"])
            .status
            .code(),
        Some(1)
    );
    e.ok(&[
        "restore",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        "p3",
        "-N",
        "web",
        "--restore-abs-path",
        "out",
    ]);
    assert_same_tree(&e.path("data"), &e.path("out"), true);
    let last = e.json(&["key", "list", "--repo", "repo", "--encrypt-pass-file", "p3"]);
    let only = last["keys"][0]["id"].as_str().unwrap().to_string();
    let o = e.run(&[
        "key",
        "remove",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        "p3",
        &only[..8],
    ]);
    assert_eq!(o.status.code(), Some(1));
    // Key files are private to their owner.
    for k in std::fs::read_dir(e.path("repo/keys")).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            k.unwrap().metadata().unwrap().permissions().mode() & 0o077,
            0
        );
    }
}

#[test]
fn job_documents_run_and_bad_ones_are_named() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    let p = e.pass();
    // No `freezer init`: a job's first backup creates its repository, as upstream's does.
    let repo = e.path("repo");
    let job = serde_json::json!({
        "job_id": "j1",
        "description": "nightly",
        "job_actions": [
            {"freezer_action": {"action": "backup", "mode": "fs", "path_to_backup": e.path("data"), "backup_name": "nightly",
                                "container": repo, "storage": "local", "encrypt_pass_file": p, "compression": "gzip"},
             "max_retries": 2, "max_retries_interval": 1, "mandatory": true},
            {"freezer_action": {"action": "restore", "backup_name": "nightly", "container": repo, "storage": "local",
                                "encrypt_pass_file": p, "restore_abs_path": e.path("out")}}
        ],
        "job_schedule": {"schedule_interval": "1 days"}
    });
    std::fs::write(e.path("job.json"), job.to_string()).unwrap();
    let out = e.json(&["job", "run", "job.json"]);
    assert_eq!(out["complete"], true, "{out}");
    assert_eq!(out["actions"].as_array().unwrap().len(), 2);
    let created = &out["actions"][0]["created_repository"];
    assert_eq!(created.as_array().map(Vec::len), Some(1), "{out}");
    assert_same_tree(&e.path("data"), &e.path("out"), true);
    // It is encrypted with the job's passphrase.
    let o = e.run(&["snapshots", "--repo", "repo"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    std::fs::write(e.path("broken.json"), "{\"job_actions\": [").unwrap();
    let o = e.run(&["job", "run", "broken.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("malformed JSON"), "{}", stderr(&o));
    std::fs::write(
        e.path("bad.json"),
        r#"{"job_actions":[{"freezer_action":{"action":"backup","overwrite":"perhaps"}}]}"#,
    )
    .unwrap();
    let o = e.run(&["job", "run", "bad.json"]);
    assert!(
        stderr(&o).contains("job_actions[0].freezer_action.overwrite"),
        "{}",
        stderr(&o)
    );
    std::fs::write(e.path("nopath.json"), format!(r#"{{"job_actions":[{{"freezer_action":{{"action":"backup","backup_name":"x","container":"{}"}}}}]}}"#, repo.display())).unwrap();
    let o = e.run(&["job", "run", "nopath.json"]);
    assert!(stderr(&o).contains("path_to_backup"), "{}", stderr(&o));
}

/// Ten `kill -9` at spread moments of a backup: the repository still opens, the earlier
/// snapshot restores, and the next backup succeeds.
#[test]
fn kill_9_at_ten_moments_loses_nothing() {
    let e = Env::new();
    let corpus_dir = e.path("src/corpus");
    corpus(&corpus_dir, 32, 7);
    std::fs::create_dir_all(e.path("src/fresh")).unwrap();
    let p = e.pass();
    let backup = [
        "backup",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--path-to-backup",
        "src",
        "-N",
    ];
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    let first = e.json(&[&backup[..], &["base"]].concat());
    let first_id = first["snapshot_id"].as_str().unwrap().to_string();
    // Every run gets 16 MiB of new data, so that each one writes packs; the kills land at ten
    // moments spread over the length of such a run, timed uninterrupted first.
    let fresh = |i: u64| {
        std::fs::write(
            e.path(&format!("src/fresh/{i}.bin")),
            support::pseudo_random(16 << 20, 100 + i),
        )
        .unwrap()
    };
    fresh(99);
    let started = std::time::Instant::now();
    e.json(&[&backup[..], &["probe"]].concat());
    let whole = started.elapsed();
    for i in 0..10u32 {
        fresh(u64::from(i));
        let name = format!("k{i}");
        let mut child = e
            .cmd(&[&backup[..], &[name.as_str()]].concat())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(whole.mul_f64((f64::from(i) + 0.5) / 10.0));
        let _ = child.kill();
        let _ = child.wait();
        let list = e.json(&["snapshots", "--repo", "repo", "--encrypt-pass-file", p]);
        assert!(list["unreadable"].as_array().unwrap().is_empty(), "{list}");
        assert!(
            list["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == first_id.as_str())
        );
    }
    let list = e.json(&["snapshots", "--repo", "repo", "--encrypt-pass-file", p]);
    let finished = list["snapshots"].as_array().unwrap().len() - 2;
    assert!(
        finished <= 3,
        "only {} of the 10 backups were interrupted",
        10 - finished
    );
    let target = e.path("restored");
    e.ok(&[
        "restore",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--snapshot",
        &first_id,
        "--restore-abs-path",
        target.to_str().unwrap(),
    ]);
    assert_same_tree(&corpus_dir, &target.join("corpus"), true);
    assert_eq!(std::fs::read_dir(target.join("fresh")).unwrap().count(), 0);
    let next = e.json(&[&backup[..], &["after"]].concat());
    assert_eq!(next["complete"], true);
    let show = e.run(&[
        "snapshots",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "show",
        next["snapshot_id"].as_str().unwrap(),
        "--read-data",
    ]);
    assert!(show.status.success(), "{}", stderr(&show));
    let target = e.path("after");
    e.ok(&[
        "restore",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "-N",
        "after",
        "--restore-abs-path",
        target.to_str().unwrap(),
    ]);
    assert_same_tree(&e.path("src"), &target, true);
}

#[test]
fn two_processes_back_up_into_one_repository_at_once() {
    let e = Env::new();
    corpus(&e.path("a"), 16, 8);
    odd_tree(&e.path("b"));
    let p = e.pass();
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    let spawn = |dir: &str| {
        e.cmd(&[
            "backup",
            "--repo",
            "repo",
            "--encrypt-pass-file",
            p,
            "--path-to-backup",
            dir,
            "-N",
            dir,
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (a, b) = (spawn("a"), spawn("b"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "{} {}",
        stderr(&a),
        stderr(&b)
    );
    for dir in ["a", "b"] {
        let out = format!("out-{dir}");
        e.ok(&[
            "restore",
            "--repo",
            "repo",
            "--encrypt-pass-file",
            p,
            "-N",
            dir,
            "--restore-abs-path",
            &out,
        ]);
        assert_same_tree(&e.path(dir), &e.path(&out), true);
    }
}

#[test]
fn several_repositories_in_one_run() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    let p = e.pass();
    let init = e.json(&[
        "init",
        "--repo",
        "r1",
        "--repo",
        "file://r2",
        "--repo",
        "r3",
        "--encrypt-pass-file",
        p,
    ]);
    assert_eq!(init["created"].as_array().unwrap().len(), 3);
    let b = e.json(&[
        "backup",
        "--repo",
        "r1",
        "--repo",
        "file://r2",
        "--repo",
        "r3",
        "--encrypt-pass-file",
        p,
        "--path-to-backup",
        "data",
        "-N",
        "web",
    ]);
    assert_eq!(
        b["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["holds_snapshot"] == true)
            .count(),
        3
    );
    for r in ["r1", "r2", "r3"] {
        let out = format!("out-{r}");
        e.ok(&[
            "restore",
            "--repo",
            r,
            "--encrypt-pass-file",
            p,
            "-N",
            "web",
            "--restore-abs-path",
            &out,
        ]);
        assert_same_tree(&e.path("data"), &e.path(&out), true);
    }
}

#[test]
fn s3_repositories_by_url_with_credentials_from_the_environment() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    let server = servers::S3Server::start();
    let p = e.pass();
    let url = format!("s3://backups/node1?endpoint={}", server.endpoint);
    let with_keys = |args: &[&str]| {
        let mut c = e.cmd(args);
        c.env("ACCESS_KEY", &server.access_key)
            .env("SECRET_KEY", &server.secret_key);
        c.output().unwrap()
    };
    // No credentials: a clear refusal.
    let o = e.run(&["init", "--repo", &url, "--encrypt-pass-file", p]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("access_key"), "{}", stderr(&o));
    // init creates the bucket; one run writes to a folder and to S3.
    let o = with_keys(&[
        "init",
        "--repo",
        "local",
        "--repo",
        &url,
        "--encrypt-pass-file",
        p,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = with_keys(&[
        "-vvv",
        "backup",
        "--repo",
        "local",
        "--repo",
        &url,
        "--encrypt-pass-file",
        p,
        "--path-to-backup",
        "data",
        "-N",
        "web",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        b["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["holds_snapshot"] == true)
            .count(),
        2,
        "{b}"
    );
    for out in [&o.stdout, &o.stderr] {
        assert!(
            !String::from_utf8_lossy(out).contains(&server.secret_key),
            "a secret was printed"
        );
    }
    // S3 alone restores; a wrong key is named.
    let o = with_keys(&[
        "restore",
        "--repo",
        &url,
        "--encrypt-pass-file",
        p,
        "-N",
        "web",
        "--restore-abs-path",
        "out",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(&e.path("data"), &e.path("out"), true);
    let o = e
        .cmd(&["snapshots", "--repo", &url, "--encrypt-pass-file", p])
        .env("ACCESS_KEY", &server.access_key)
        .env("SECRET_KEY", "wrong")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("check access_key and secret_key"),
        "{}",
        stderr(&o)
    );
    let o = e.run(&["snapshots", "--repo", "s3://AK:SK@backups/node1"]);
    assert!(
        stderr(&o).contains("do not belong in a URL"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn ssh_repositories_by_url_with_host_keys_checked() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    let server = servers::SshServer::start();
    let p = e.pass();
    let remote = server.dir.path().join("remote/repo");
    let url = format!("ssh://root@127.0.0.1:{}{}", server.port, remote.display());
    let key = server.client_key.to_str().unwrap();
    let known = e.path("known_hosts");
    let known = known.to_str().unwrap();
    let ssh = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--repo", &url, "--ssh-key", key, "--ssh-known-hosts", known]);
        e.run(&a)
    };
    // An unknown host is refused, saying how to accept it; nothing is written.
    let o = ssh(&["init", "--encrypt-pass-file", p]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--accept-new-host-key"),
        "{}",
        stderr(&o)
    );
    assert!(!remote.exists());
    // Accepted once when asked, then remembered.
    let o = ssh(&["init", "--encrypt-pass-file", p, "--accept-new-host-key"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read_to_string(known)
            .unwrap()
            .contains("127.0.0.1")
    );
    let o = ssh(&[
        "backup",
        "--encrypt-pass-file",
        p,
        "--path-to-backup",
        "data",
        "-N",
        "web",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ssh(&[
        "restore",
        "--encrypt-pass-file",
        p,
        "-N",
        "web",
        "--restore-abs-path",
        "out",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(&e.path("data"), &e.path("out"), true);
    // A job document with upstream's ssh options restores the same backup.
    let job = serde_json::json!({
        "job_actions": [{"freezer_action": {
            "action": "restore", "storage": "ssh", "container": remote,
            "ssh_host": "127.0.0.1", "ssh_port": server.port.to_string(),
            "ssh_username": "root", "ssh_key": key, "ssh_known_hosts": known,
            "backup_name": "web", "restore_abs_path": e.path("out2"),
            "encrypt_pass_file": p,
        }}]
    });
    std::fs::write(e.path("job.json"), job.to_string()).unwrap();
    let o = e.run(&["job", "run", "job.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(&e.path("data"), &e.path("out2"), true);
    // Passwords never come from the URL; a missing key file is named.
    let o = e.run(&["snapshots", "--repo", "ssh://root:pw@127.0.0.1/x"]);
    assert!(
        stderr(&o).contains("do not belong in a URL"),
        "{}",
        stderr(&o)
    );
    let o = e.run(&[
        "snapshots",
        "--repo",
        &url,
        "--ssh-known-hosts",
        known,
        "--ssh-key",
        "/no/such/key",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("ssh_key"), "{}", stderr(&o));
}

#[test]
fn copy_sends_snapshots_to_another_repository_once() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    let server = servers::S3Server::start();
    let p = e.pass();
    std::fs::write(e.path("pass-b"), "another passphrase\n").unwrap();
    let url = format!("s3://copies/b?endpoint={}", server.endpoint);
    let with_keys = |args: &[&str]| {
        let mut c = e.cmd(args);
        c.env("ACCESS_KEY", &server.access_key)
            .env("SECRET_KEY", &server.secret_key);
        c.output().unwrap()
    };
    assert!(
        e.run(&["init", "--repo", "a", "--encrypt-pass-file", p])
            .status
            .success()
    );
    for _ in 0..2 {
        let o = e.run(&[
            "backup",
            "--repo",
            "a",
            "--encrypt-pass-file",
            p,
            "--path-to-backup",
            "data",
            "-N",
            "web",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // The target must exist: the error says how to make it.
    let copy = [
        "copy",
        "--repo",
        "a",
        "--encrypt-pass-file",
        p,
        "--to",
        &url,
        "--to-encrypt-pass-file",
        "pass-b",
        "--json",
    ];
    let o = with_keys(&copy);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = with_keys(&["init", "--repo", &url, "--encrypt-pass-file", "pass-b"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = with_keys(&copy);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["copied"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["complete"], true);
    let o = with_keys(&copy);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            v["copied"].as_array().unwrap().len(),
            v["skipped"].as_array().unwrap().len()
        ),
        (0, 2),
        "{v}"
    );
    let o = with_keys(&[
        "restore",
        "--repo",
        &url,
        "--encrypt-pass-file",
        "pass-b",
        "-N",
        "web",
        "--restore-abs-path",
        "out",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(&e.path("data"), &e.path("out"), true);
    // A wrong target passphrase is refused.
    std::fs::write(e.path("wrong"), "wrong\n").unwrap();
    let o = with_keys(&[
        "copy",
        "--repo",
        "a",
        "--encrypt-pass-file",
        p,
        "--to",
        &url,
        "--to-encrypt-pass-file",
        "wrong",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("passphrase"), "{}", stderr(&o));
}

#[test]
fn ftps_repositories_by_url_with_the_password_from_the_environment() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    let server = servers::FtpServer::start(true);
    let p = e.pass();
    let url = format!(
        "ftps://{}@127.0.0.1:{}{}?ca_file={}",
        server.user,
        server.port,
        server.root.join("node1").display(),
        server.ca_file.display()
    );
    let with_password = |args: &[&str]| {
        let mut c = e.cmd(args);
        c.env("FTP_PASSWORD", &server.password);
        c.output().unwrap()
    };
    // No password: a clear refusal.
    let o = e.run(&["init", "--repo", &url, "--encrypt-pass-file", p]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("FTP_PASSWORD"), "{}", stderr(&o));
    let o = with_password(&["init", "--repo", &url, "--encrypt-pass-file", p]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = with_password(&[
        "-vvv",
        "backup",
        "--repo",
        &url,
        "--encrypt-pass-file",
        p,
        "--path-to-backup",
        "data",
        "-N",
        "web",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for out in [&o.stdout, &o.stderr] {
        assert!(
            !String::from_utf8_lossy(out).contains(&server.password),
            "a password was printed"
        );
    }
    let o = with_password(&[
        "restore",
        "--repo",
        &url,
        "--encrypt-pass-file",
        p,
        "-N",
        "web",
        "--restore-abs-path",
        "out",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(&e.path("data"), &e.path("out"), true);
    let o = e
        .cmd(&["snapshots", "--repo", &url, "--encrypt-pass-file", p])
        .env("FTP_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("ftp_password"), "{}", stderr(&o));
}
