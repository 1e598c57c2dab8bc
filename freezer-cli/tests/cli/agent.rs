//! `freezer-agent`, run as upstream's scripts and the scheduler run it: argparse's rules
//! (prefixes, ambiguity, negations, `=`), exit statuses and messages, options refused,
//! `--config` job files with several storages, `--metadata-out`, the consistency checksum,
//! and secrets kept out of messages. Backups use `--engine native`, which works on every
//! branch; the default engine (`tar`, upstream's format) is exercised by tests/agent/*.py.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::assert_same_tree;

fn agent(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_freezer-agent"));
    c.args(args).current_dir(dir).stdin(Stdio::null());
    // No cloud: the agent must not need OS_* for local storage.
    for (k, _) in std::env::vars() {
        if k.starts_with("OS_") {
            c.env_remove(k);
        }
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn assert_status(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// A tree, a storage folder and paths in one temporary folder.
struct Site {
    tmp: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::write(src.join("a.txt"), b"alpha\n").unwrap();
        std::fs::write(src.join("empty"), b"").unwrap();
        std::fs::write(src.join("sub/b.bin"), vec![7u8; 100_000]).unwrap();
        std::fs::write(src.join("sub/deeper/c"), b"gamma").unwrap();
        Site { tmp }
    }
    fn p(&self, name: &str) -> String {
        self.tmp.path().join(name).to_str().unwrap().to_string()
    }
    fn run(&self, args: &[&str]) -> Output {
        agent(self.tmp.path(), args)
    }
    fn backup(&self, container: &str, extra: &[&str]) -> Output {
        let src = self.p("src");
        let mut a = vec![
            "--path-to-backup",
            &src,
            "--container",
            container,
            "--backup-name",
            "web",
            "--storage",
            "local",
            "--engine",
            "native",
        ];
        a.extend_from_slice(extra);
        self.run(&a)
    }
    fn restore(&self, container: &str, to: &str, extra: &[&str]) -> Output {
        let mut a = vec![
            "--action",
            "restore",
            "--restore-abs-path",
            to,
            "--container",
            container,
            "--backup-name",
            "web",
            "--storage",
            "local",
            "--engine",
            "native",
        ];
        a.extend_from_slice(extra);
        self.run(&a)
    }
}

#[test]
fn without_arguments_the_help_and_status_1() {
    let o = agent(Path::new("."), &[]);
    assert_status(&o, 1);
    let out = text(&o.stdout);
    assert!(out.starts_with("usage: freezer-agent"), "{out}");
    assert!(out.contains("--path-to-backup"), "{out}");
}

#[test]
fn help_and_version_exit_0() {
    let o = agent(Path::new("."), &["--help"]);
    assert_status(&o, 0);
    assert!(text(&o.stdout).contains("--noincremental"));
    let o = agent(Path::new("."), &["--vers"]);
    assert_status(&o, 0);
    assert_eq!(text(&o.stdout).trim(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn unknown_arguments_are_argparse_usage_errors() {
    let o = agent(Path::new("."), &["--foo", "1", "bar", "--action", "info"]);
    assert_status(&o, 2);
    let err = text(&o.stderr);
    assert!(err.starts_with("usage: freezer-agent"), "{err}");
    assert!(
        err.contains("freezer-agent: error: unrecognized arguments: --foo 1 bar"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    // `--nosuch=3` and a value after a flag are unknown too.
    let o = agent(Path::new("."), &["--nosuch=3"]);
    assert_status(&o, 2);
    assert!(text(&o.stderr).contains("unrecognized arguments: --nosuch=3"));
}

#[test]
fn an_ambiguous_prefix_names_the_candidates() {
    let o = agent(Path::new("."), &["--co", "x"]);
    assert_status(&o, 2);
    let err = text(&o.stderr);
    assert!(
        err.contains("ambiguous option: --co could match --command, --compression, --config, --config-dir, --config-file, --consistency-check, --consistency-checksum, --container"),
        "{err}"
    );
}

#[test]
fn value_and_flag_errors() {
    // A flag given a value: usage error.
    let o = agent(Path::new("."), &["--quiet=1"]);
    assert_status(&o, 2);
    assert!(text(&o.stderr).contains("argument --quiet/-q: ignored explicit argument '1'"));
    // An option without its value.
    let o = agent(Path::new("."), &["--action"]);
    assert_status(&o, 2);
    assert!(text(&o.stderr).contains("argument --action: expected one argument"));
    // A value of the wrong type: oslo's message, status 1.
    let o = agent(Path::new("."), &["--max-level", "x"]);
    assert_status(&o, 1);
    assert!(text(&o.stderr).contains("argument --max-level: Invalid Integer value: x"));
}

#[test]
fn options_that_cannot_apply_are_refused_by_name() {
    for (args, says) in [
        (
            &["--engine", "rsync"][..],
            "--engine rsync is not supported",
        ),
        (&["-e", "nova"], "--engine nova is not supported"),
        (
            &["--mode", "sqlserver"],
            "--mode sqlserver is not supported",
        ),
        (&["--mode", "nova"], "--mode nova is not supported"),
        (
            &["--cinder-vol-id", "v1"],
            "--cinder-vol-id: backing up Cinder volumes",
        ),
        (
            &["--sql-server-conf", "x.ini"],
            "--sql-server-conf: mode sqlserver",
        ),
        (&["--engine", "bogus"], "Invalid String(choices="),
    ] {
        let mut a = vec![
            "--action",
            "info",
            "--storage",
            "local",
            "--container",
            "/nonexistent",
        ];
        a.extend_from_slice(args);
        let o = agent(Path::new("."), &a);
        assert_status(&o, 1);
        let err = text(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn a_missing_path_is_a_critical_error_quiet_hides_it() {
    let s = Site::new();
    let st = s.p("st");
    let o = s.run(&[
        "--path-to-backup",
        "/nonexistent/freezer-agent-test",
        "--container",
        &st,
        "--storage",
        "local",
        "--backup-name",
        "x",
        "--engine",
        "native",
    ]);
    assert_status(&o, 1);
    let err = text(&o.stderr);
    assert!(err.starts_with("Critical Error: "), "{err}");
    assert!(err.contains("/nonexistent/freezer-agent-test"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.stdout.is_empty());
    let o = s.run(&[
        "-q",
        "-F",
        "/nonexistent/freezer-agent-test",
        "-C",
        &st,
        "--storage",
        "local",
        "-N",
        "x",
        "-e",
        "native",
    ]);
    assert_status(&o, 1);
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
}

#[test]
fn backup_and_restore_with_prefixes_negations_and_equals() {
    let s = Site::new();
    let st = s.p("st");
    let src = s.p("src");
    // `--compress` is `--compression` (the tempest gate's spelling), `--cont=` a prefix with
    // `=`, `--nosync` and `--noincremental` negations, `-Nweb` a short option with its value.
    let o = s.run(&[
        &format!("--path-to-b={src}"),
        &format!("--cont={st}"),
        "-Nweb",
        "--stor",
        "local",
        "--engine=native",
        "--compress",
        "gzip",
        "--nosync",
        "--noincremental",
        "--nodry-run",
    ]);
    assert_status(&o, 0);
    let out = text(&o.stdout);
    // Upstream's result table: Property | Value, `_` shown as spaces.
    assert!(out.starts_with("+--"), "{out}");
    assert!(out.contains("Property") && out.contains("Value"), "{out}");
    assert!(out.contains("backup name"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(" compression ") && l.contains(" gzip ")),
        "{out}"
    );
    let to = s.p("restored");
    let o = s.restore(&st, &to, &[]);
    assert_status(&o, 0);
    assert!(o.stdout.is_empty(), "{}", text(&o.stdout));
    assert_same_tree(Path::new(&src), Path::new(&to), false);
    // Restoring again into the now non-empty folder needs --overwrite.
    let o = s.restore(&st, &to, &[]);
    assert_status(&o, 1);
    assert!(text(&o.stderr).starts_with("Critical Error: "));
    let o = s.restore(&st, &to, &["--overwrite"]);
    assert_status(&o, 0);
}

#[test]
fn metadata_out_to_a_private_file_and_to_stdout() {
    use std::os::unix::fs::PermissionsExt;
    let s = Site::new();
    let st = s.p("st");
    let md = s.p("metadata.json");
    let o = s.backup(
        &st,
        &[
            "--metadata-out",
            &md,
            "--consistency-check",
            "--hostname",
            "node1",
        ],
    );
    assert_status(&o, 0);
    assert!(o.stdout.is_empty(), "{}", text(&o.stdout));
    let mode = std::fs::metadata(&md).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&md).unwrap()).unwrap();
    for key in [
        "backup_name",
        "hostname",
        "container",
        "time_stamp",
        "curr_backup_level",
        "compression",
    ] {
        assert!(doc.get(key).is_some(), "{key} missing: {doc}");
    }
    assert_eq!(doc["hostname"], "node1");
    assert_eq!(doc["backup_name"], "web");
    assert_eq!(doc["container"], st.as_str());
    let sum = doc["consistency_checksum"].as_str().unwrap().to_string();
    assert_eq!(sum.len(), 64, "{doc}");

    // `-`: the JSON alone on stdout.
    let o = s.backup(&st, &["--metadata-out", "-", "--hostname", "node1"]);
    assert_status(&o, 0);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["backup_name"], "web");

    // The checksum verifies the restore; a wrong one fails it with nothing on stdout.
    let to = s.p("good");
    let o = s.restore(
        &st,
        &to,
        &["--hostname", "node1", "--consistency-checksum", &sum],
    );
    assert_status(&o, 0);
    let bad = "0".repeat(64);
    let o = s.restore(
        &st,
        &s.p("bad"),
        &["--hostname", "node1", "--consistency-checksum", &bad],
    );
    assert_status(&o, 1);
    assert!(o.stdout.is_empty(), "{}", text(&o.stdout));
    assert!(
        text(&o.stderr).starts_with("Critical Error: "),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_config_file_with_two_storages_backs_up_to_both() {
    let s = Site::new();
    let (one, two) = (s.p("one"), s.p("two"));
    let ini = s.p("job.ini");
    std::fs::write(
        &ini,
        format!(
            "[job]\naction = backup\nmode = fs\npath_to_backup = {}\nbackup_name = from-file\nengine_name = native\nstorage = swift\ncontainer = ignored\n\n[storage:first]\nstorage = local\ncontainer = {one}\n\n[storage:second]\nstorage=local\ncontainer: {two}\n",
            s.p("src")
        ),
    )
    .unwrap();
    // The command line wins over the file: the backup is named `web`.
    let o = s.run(&[
        "--config",
        &ini,
        "--backup-name",
        "web",
        "--metadata-out",
        "-",
    ]);
    assert_status(&o, 0);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["backup_name"], "web");
    for c in [&one, &two] {
        let to = format!("{c}-restored");
        let o = s.restore(c, &to, &[]);
        assert_status(&o, 0);
        assert_same_tree(Path::new(&s.p("src")), Path::new(&to), false);
    }
    // --container with storage sections is a contradiction, said so.
    let o = s.run(&["--config", &ini, "--container", &one]);
    assert_status(&o, 1);
    assert!(
        text(&o.stderr).contains("[storage:*] sections"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn no_secret_from_a_config_file_in_any_message() {
    let s = Site::new();
    let secret = "hunter2-do-not-print";
    let cases = [
        // A storage that cannot be reached, with its password.
        format!(
            "[job]\npath_to_backup = {}\nbackup_name = web\nengine_name = native\n[storage:a]\nstorage = ssh\nssh_host = 127.0.0.1\nssh_port = 1\nssh_username = u\nssh_password = {secret}\ncontainer = /x\n",
            s.p("src")
        ),
        // A line that is not `key = value`.
        format!("[job]\n{secret}\n"),
        // A repeated key.
        format!("[job]\nssh_password = {secret}\nssh_password = {secret}\n"),
        // A secret under a misspelt name.
        format!(
            "[job]\npath_to_backup = {}\nbackup_name = web\nstorage = local\ncontainer = {}\nengine_name = native\nssh_pasword = {secret}\n",
            s.p("src"),
            s.p("st")
        ),
        // A port that is not a number: its value is shown (not a secret), the password not.
        format!("[job]\nssh_port = {secret}\nssh_password = {secret}\n"),
    ];
    for (i, text_) in cases.iter().enumerate() {
        let ini = s.p(&format!("job{i}.ini"));
        std::fs::write(&ini, text_).unwrap();
        let log = s.p(&format!("log{i}"));
        let o = s.run(&["--config", &ini, "--log-file", &log, "--debug"]);
        assert_status(&o, 1);
        let err = text(&o.stderr);
        assert!(err.starts_with("Critical Error: "), "case {i}: {err}");
        if i != 4 {
            assert!(!err.contains(secret), "case {i}: {err}");
        }
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        if i != 4 {
            assert!(!logged.contains(secret), "case {i}: {logged}");
        }
    }
    // A password on the command line with a bad port: the password is never shown.
    let o = s.run(&["--ssh-password", secret, "--ssh-port", "x"]);
    assert_status(&o, 1);
    assert!(!text(&o.stderr).contains(secret));
}

#[test]
fn log_file_is_written_and_nothing_logged_on_the_terminal() {
    let s = Site::new();
    let st = s.p("st");
    let log = s.p("logs/agent.log");
    let o = s.backup(&st, &["--log-file", &log, "--metadata-out", "-"]);
    assert_status(&o, 0);
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("freezer-agent starts"), "{logged}");
}

#[test]
fn info_and_admin_on_local_storage() {
    let s = Site::new();
    let st = s.p("st");
    assert_status(&s.backup(&st, &[]), 0);
    let o = s.run(&[
        "--action",
        "info",
        "--container",
        &st,
        "--storage",
        "local",
        "-e",
        "native",
    ]);
    assert_status(&o, 0);
    let out = text(&o.stdout);
    assert!(
        out.contains("Backup name") && out.contains(" web "),
        "{out}"
    );
    let o = s.run(&[
        "--action",
        "admin",
        "--container",
        &st,
        "--storage",
        "local",
        "-e",
        "native",
        "--backup-name",
        "web",
        "-R",
        "30",
    ]);
    assert_status(&o, 0);
}

/// oslo's default places: without `--config-file`, `~/.freezer/freezer-agent.conf` (and the
/// `.conf.d` folders) give the options; keys that are not the agent's (a shared file's) are
/// left alone there; `--config-file` replaces the found files, and its unknown keys are errors.
#[test]
fn the_default_config_files_of_oslo_are_read() {
    let s = Site::new();
    let home = s.tmp.path().join("home");
    std::fs::create_dir_all(home.join(".freezer/freezer.conf.d")).unwrap();
    let st = s.p("st");
    std::fs::write(
        home.join(".freezer/freezer-agent.conf"),
        format!(
            "[DEFAULT]\nstorage = local\ncontainer = {st}\nengine_name = native\n\
             # the scheduler's, in a shared file: not the agent's\nclient_id = node-1\n"
        ),
    )
    .unwrap();
    std::fs::write(
        home.join(".freezer/freezer.conf.d/10-name.conf"),
        "[DEFAULT]\nbackup_name = from-conf-d\n",
    )
    .unwrap();
    let with_home = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_freezer-agent"));
        c.args(args)
            .current_dir(s.tmp.path())
            .env("HOME", &home)
            .stdin(Stdio::null());
        c.output().unwrap()
    };
    let src = s.p("src");
    let o = with_home(&["--path-to-backup", &src, "--metadata-out", "-"]);
    assert_status(&o, 0);
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(meta["backup_name"], "from-conf-d", "{meta}");
    assert_eq!(meta["container"], st.as_str(), "{meta}");
    let to = s.p("restored");
    let o = with_home(&["--action", "restore", "--restore-abs-path", &to]);
    assert_status(&o, 0);
    assert_same_tree(Path::new(&src), Path::new(&to), false);

    // A file named on the command line replaces the found ones: its container is used, and a
    // key that is not an option is an error naming the file.
    let named = s.tmp.path().join("named.conf");
    let other = s.p("other");
    std::fs::write(
        &named,
        format!("[DEFAULT]\nstorage = local\ncontainer = {other}\nengine_name = native\n"),
    )
    .unwrap();
    assert!(!Path::new(&other).exists());
    let o = with_home(&[
        "--config-file",
        named.to_str().unwrap(),
        "--path-to-backup",
        &src,
        "--backup-name",
        "web",
    ]);
    assert_status(&o, 0);
    assert!(Path::new(&other).is_dir());
    std::fs::write(&named, "[DEFAULT]\nclient_id = node-1\n").unwrap();
    let o = with_home(&[
        "--config-file",
        named.to_str().unwrap(),
        "--path-to-backup",
        &src,
    ]);
    assert_status(&o, 1);
    assert!(text(&o.stderr).contains("client_id"), "{}", text(&o.stderr));
}

/// SIGTERM stops a running backup cleanly, then the agent dies by SIGTERM (status -15), as
/// upstream's does: upstream's scheduler reports such a run as aborted, not failed.
#[test]
fn sigterm_stops_the_backup_and_the_agent_dies_by_it() {
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    let s = Site::new();
    let st = s.p("st");
    let mut child = Command::new(env!("CARGO_BIN_EXE_freezer-agent"))
        .args([
            "--mode",
            "stdin",
            "--container",
            &st,
            "--backup-name",
            "piped",
            "--storage",
            "local",
            "--engine",
            "native",
        ])
        .current_dir(s.tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The backup is under way and waits for more input, which never comes.
    let mut input = child.stdin.take().unwrap();
    input.write_all(&vec![7u8; 1 << 20]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed().as_secs() > 30 {
            let _ = child.kill();
            panic!("freezer-agent still runs 30 s after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    drop(input);
    let o = child.wait_with_output().unwrap();
    assert_eq!(status.signal(), Some(15), "{status:?}: {}", text(&o.stderr));
    assert!(text(&o.stderr).contains("SIGTERM"), "{}", text(&o.stderr));
    // Nothing was saved: the restore finds no backup of that name.
    let o = s.run(&[
        "--action",
        "restore",
        "--restore-abs-path",
        &s.p("out"),
        "--container",
        &st,
        "--backup-name",
        "piped",
        "--storage",
        "local",
        "--engine",
        "native",
    ]);
    assert_status(&o, 1);
}
