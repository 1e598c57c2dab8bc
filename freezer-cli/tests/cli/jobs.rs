//! Jobs from the command line: `--metadata-out` writes upstream's backup metadata document, and
//! a job's `exec` action runs its command without a shell.

use serde_json::json;

use super::{Env, stderr};

#[test]
fn metadata_out_writes_upstreams_document_to_a_file_or_stdout() {
    let e = Env::new();
    std::fs::create_dir_all(e.path("data/sub")).unwrap();
    std::fs::write(e.path("data/sub/a.txt"), "alpha").unwrap();
    e.ok(&["init", "--repo", "repo"]);
    let args = [
        "backup",
        "--repo",
        "repo",
        "--path-to-backup",
        "data",
        "-N",
        "web",
        "--hostname",
        "node1",
        "--metadata-out",
    ];
    let mut to_file = args.to_vec();
    to_file.push("meta.json");
    e.ok(&to_file);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(e.path("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["hostname"], "node1");
    assert_eq!(meta["backup_name"], "web");
    assert_eq!(meta["total_fs_files"], 1);
    assert_eq!(meta["curr_backup_level"], 0);
    let mut to_stdout = args.to_vec();
    to_stdout.push("-");
    let meta: serde_json::Value = serde_json::from_str(&e.ok(&to_stdout)).unwrap();
    assert_eq!(meta["curr_backup_level"], 1, "{meta}");
    assert!(meta["snapshot_id"].as_str().unwrap().len() == 64, "{meta}");
}

#[test]
fn a_job_runs_exec_without_a_shell_and_fails_on_a_non_zero_exit() {
    let e = Env::new();
    let doc = json!({"job_actions": [
        {"freezer_action": {"action": "exec", "command": "printf '%s;' 'a b' '$HOME'"}},
        {"freezer_action": {"action": "exec", "command": "sh -c 'exit 7'"}, "mandatory": true},
        {"freezer_action": {"action": "exec", "command": "touch never"}},
    ]});
    std::fs::write(e.path("job.json"), doc.to_string()).unwrap();
    let o = e.run(&["job", "run", "job.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("a b;$HOME;"), "{out}");
    assert!(
        stderr(&o).contains("exited with status 7"),
        "{}",
        stderr(&o)
    );
    assert!(
        !e.path("never").exists(),
        "a mandatory failure stops the job"
    );
    // An unbalanced quote is refused before anything runs, naming the field.
    let doc =
        json!({"job_actions": [{"freezer_action": {"action": "exec", "command": "echo 'x"}}]});
    std::fs::write(e.path("bad.json"), doc.to_string()).unwrap();
    let o = e.run(&["job", "run", "bad.json"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("job_actions[0].freezer_action: command: unbalanced"),
        "{}",
        stderr(&o)
    );
}
