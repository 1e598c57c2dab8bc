//! Option names and passphrases as an operator meets them: a misspelt option in a job document
//! stops the job before anything is written, upstream's options that do not apply are
//! accepted, a passphrase of spaces makes no key, and a job's exit code says whether an action
//! failed (1) or ran incompletely (3).

use serde_json::json;

use super::{Env, stderr};
use crate::support::odd_tree;

/// A job backing up `data` into `repo` with the passphrase, plus `extra` options.
fn job(e: &Env, extra: serde_json::Value) -> serde_json::Value {
    let mut action = json!({
        "action": "backup", "mode": "fs", "path_to_backup": e.path("data"),
        "backup_name": "nightly", "container": e.path("repo"), "storage": "local",
    });
    for (k, v) in extra.as_object().unwrap() {
        action[k] = v.clone();
    }
    json!({"job_id": "j1", "job_actions": [{"freezer_action": action}]})
}

fn write(e: &Env, name: &str, doc: &serde_json::Value) {
    std::fs::write(e.path(name), doc.to_string()).unwrap();
}

#[test]
fn a_misspelt_option_fails_the_job_and_creates_nothing() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    for (extra, wrong, right) in [
        (
            json!({"encrypt_pas_file": e.pass()}),
            "encrypt_pas_file",
            "encrypt_pass_file",
        ),
        (json!({"exlcude": "*.log"}), "exlcude", "exclude"),
        (
            json!({"ssh_pasword": "hunter2-never-shown"}),
            "ssh_pasword",
            "ssh_password",
        ),
    ] {
        write(&e, "job.json", &job(&e, extra));
        for args in [
            &["job", "run", "job.json"][..],
            &["job", "run", "job.json", "--json"],
        ] {
            let o = e.run(args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert!(
                err.contains(&format!(
                    "job_actions[0].freezer_action.{wrong}: unknown option"
                )) && err.contains(&format!("did you mean {right}?")),
                "{err}"
            );
            assert!(err.contains("--allow-unknown-options"), "{err}");
            assert!(!err.contains("hunter2-never-shown"), "{err}");
            assert!(!e.path("repo").exists(), "nothing is created: {err}");
        }
    }
    // A misspelt option in the second action stops the first one too.
    let mut two = job(&e, json!({"encrypt_pass_file": e.pass()}));
    two["job_actions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"freezer_action": {"action": "info", "container": e.path("repo"), "encrypt_pas_file": e.pass()}}));
    write(&e, "two.json", &two);
    let o = e.run(&["job", "run", "two.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("job_actions[1].freezer_action.encrypt_pas_file"),
        "{}",
        stderr(&o)
    );
    assert!(!e.path("repo").exists());
    // Fields of the document and of its job actions are checked as well.
    let mut doc = job(&e, json!({}));
    doc["job_schedul"] = json!({"schedule_interval": "1 days"});
    write(&e, "doc.json", &doc);
    let o = e.run(&["job", "run", "doc.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("job_schedul: unknown job field; did you mean job_schedule?"),
        "{}",
        stderr(&o)
    );
    let mut doc = job(&e, json!({}));
    doc["job_actions"][0]["max_retires"] = json!(3);
    write(&e, "doc.json", &doc);
    let o = e.run(&["job", "run", "doc.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(
            "job_actions[0].max_retires: unknown job action field; did you mean max_retries?"
        ),
        "{}",
        stderr(&o)
    );
    assert!(!e.path("repo").exists());
}

#[test]
fn allowed_unknown_options_run_with_a_warning_each() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    write(
        &e,
        "job.json",
        &job(
            &e,
            json!({"exlcude": "*.log", "from_a_newer_release": true}),
        ),
    );
    let o = e.run(&["job", "run", "job.json", "--allow-unknown-options"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "warning: job_actions[0].freezer_action.exlcude: unknown option, ignored; did you mean exclude?"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "warning: job_actions[0].freezer_action.from_a_newer_release: unknown option, ignored"
        ),
        "{err}"
    );
    assert!(e.path("repo/config").exists());
    let out = e.json(&["job", "run", "job.json", "--allow-unknown-options"]);
    assert_eq!(out["warnings"].as_array().map(Vec::len), Some(2), "{out}");
    assert_eq!(out["complete"], true);
}

#[test]
fn upstream_options_that_do_not_apply_are_accepted() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    let mut doc = job(
        &e,
        json!({
            "encrypt_pass_file": e.pass(), "engine_name": "native", "engine": "native",
            "lvm_srcvol": "/dev/vg/lv", "lvm_volgroup": "vg", "lvm_snapsize": "1G", "snapshot": "",
            "mysql_conf": "/etc/mysql/backup.ini", "proxy": "http://proxy:3128",
            "os_auth_url": "http://keystone:5000/v3", "os_identity_api_version": "3",
            "max_segment_size": 33554432, "metadata_out": "-", "log_file": "/tmp/freezer.log",
            "quiet": true, "insecure": false, "timeout": 120, "sync": true, "max_priority": "",
            "nova_inst_id": "", "cinder_vol_id": null, "temp_resource_prefix": "freezer_",
            "restore_from_host": ""
        }),
    );
    doc["client_id"] = json!("project_node1");
    doc["user_id"] = json!("u1");
    doc["session_id"] = json!("");
    doc["user_credentials"] = json!({"trust_id": "t", "trustor_user_id": "u"});
    doc["job_actions"][0]["action_id"] = json!("a1");
    doc["job_actions"][0]["exit_status"] = json!("");
    write(&e, "job.json", &doc);
    let o = e.run(&["job", "run", "job.json"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        !err.contains("warning"),
        "no warning for upstream's options: {err}"
    );
    // The passphrase was read: the repository is encrypted.
    assert_eq!(
        e.run(&["snapshots", "--repo", "repo"]).status.code(),
        Some(1)
    );
    // Those that would back up something else than files are refused, nothing written.
    let e = Env::new();
    odd_tree(&e.path("data"));
    write(&e, "job.json", &job(&e, json!({"cinder_vol_id": "0b1e2f"})));
    let o = e.run(&["job", "run", "job.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cinder_vol_id"), "{}", stderr(&o));
    assert!(!e.path("repo").exists());
}

#[test]
fn action_defaults_apply_to_every_action() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    let mut doc = job(&e, json!({}));
    doc["action_defaults"] = json!({"encrypt_pass_file": e.pass(), "exclude": "*.none"});
    write(&e, "job.json", &doc);
    let o = e.run(&["job", "run", "job.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Encrypted with the default's passphrase: it opens with it, not without.
    assert_eq!(
        e.run(&["snapshots", "--repo", "repo"]).status.code(),
        Some(1)
    );
    e.ok(&[
        "snapshots",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        e.pass(),
    ]);
    // Unknown names in the defaults are refused like any other.
    let e = Env::new();
    odd_tree(&e.path("data"));
    let mut doc = job(&e, json!({}));
    doc["action_defaults"] = json!({"encrypt_pas_file": e.pass()});
    write(&e, "job.json", &doc);
    let o = e.run(&["job", "run", "job.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("did you mean encrypt_pass_file?"),
        "{}",
        stderr(&o)
    );
    assert!(!e.path("repo").exists());
}

#[test]
fn a_passphrase_of_spaces_makes_no_key() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    std::fs::write(
        e.path("blank"),
        "   \nthe second line is not the passphrase\n",
    )
    .unwrap();
    let blank = e.path("blank").display().to_string();
    // init: refused, naming the file, nothing created.
    let o = e.run(&["init", "--repo", "repo", "--encrypt-pass-file", &blank]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&blank) && stderr(&o).contains("only whitespace"),
        "{}",
        stderr(&o)
    );
    assert!(!e.path("repo").exists());
    // A job's first backup: the same.
    write(
        &e,
        "job.json",
        &job(&e, json!({"encrypt_pass_file": blank})),
    );
    let o = e.run(&["job", "run", "job.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&blank), "{}", stderr(&o));
    assert!(
        std::fs::read_dir(e.path("repo")).map_or(true, |mut d| d.next().is_none()),
        "no repository made"
    );
    // key add and key passwd: refused, the repository keeps its one key.
    e.ok(&["init", "--repo", "r2", "--encrypt-pass-file", e.pass()]);
    for cmd in ["add", "passwd"] {
        let o = e.run(&[
            "key",
            cmd,
            "--repo",
            "r2",
            "--encrypt-pass-file",
            e.pass(),
            "--new-pass-file",
            &blank,
        ]);
        assert_eq!(o.status.code(), Some(1), "key {cmd}: {}", stderr(&o));
        assert!(stderr(&o).contains(&blank), "{}", stderr(&o));
    }
    let keys = e.json(&[
        "key",
        "list",
        "--repo",
        "r2",
        "--encrypt-pass-file",
        e.pass(),
    ]);
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_failed_action_exits_1_and_an_incomplete_one_3() {
    let e = Env::new();
    odd_tree(&e.path("data"));
    // Restoring a backup name that has no snapshot fails outright: exit 1, as README says.
    let doc = json!({"job_actions": [
        {"freezer_action": {"action": "backup", "path_to_backup": e.path("data"), "backup_name": "b",
                            "container": e.path("repo")}},
        {"freezer_action": {"action": "restore", "backup_name": "no-such-backup", "container": e.path("repo"),
                            "restore_abs_path": e.path("out")}}
    ]});
    write(&e, "job.json", &doc);
    let o = e.run(&["job", "run", "job.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("action 2: failed"), "{}", stderr(&o));
    let o = e.run(&["job", "run", "job.json", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["complete"], false);
    assert!(out["actions"][1]["error"].is_string(), "{out}");
    // A check that finds a damaged pack ran to its end, but did not find everything intact:
    // exit 3.
    let mut packs: Vec<_> = walk(&e.path("repo/data"));
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let biggest = packs.last().expect("the backup wrote packs");
    let mut bytes = std::fs::read(biggest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(biggest, bytes).unwrap();
    let doc = json!({"job_actions": [
        {"freezer_action": {"action": "check", "read_data": "all", "container": e.path("repo")}}
    ]});
    write(&e, "job.json", &doc);
    let o = e.run(&["job", "run", "job.json"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
