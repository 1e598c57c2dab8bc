//! `init` never writes over anything, and `repair config` brings back a lost or damaged config,
//! as an operator meets them.

use super::{Env, stderr};
use crate::support::{assert_same_tree, fingerprint, odd_tree};

fn backed_up(e: &Env) -> String {
    let p = e.pass();
    odd_tree(&e.path("data"));
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    let b = e.json(&[
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
    b["snapshot_id"].as_str().unwrap().to_string()
}

fn restores(e: &Env, id: &str, out: &str) {
    let r = e.json(&[
        "restore",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        e.pass(),
        "--snapshot",
        id,
        "--restore-abs-path",
        out,
    ]);
    assert_eq!(r["complete"], true);
    assert_same_tree(&e.path("data"), &e.path(out), true);
}

#[test]
fn init_refuses_a_folder_holding_anything_and_names_it() {
    let e = Env::new();
    std::fs::create_dir_all(e.path("other/sub")).unwrap();
    std::fs::write(e.path("other/sub/notes.txt"), "mine").unwrap();
    let before = fingerprint(&e.path("other"));
    let o = e.run(&["init", "--repo", "other", "--encrypt-pass-file", e.pass()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("sub/notes.txt") && err.contains("empty"),
        "{err}"
    );
    assert_eq!(fingerprint(&e.path("other")), before);

    // A repository that lost its config: init names `repair config` and writes nothing.
    backed_up(&e);
    std::fs::remove_file(e.path("repo/config")).unwrap();
    let before = fingerprint(&e.path("repo"));
    let o = e.run(&["init", "--repo", "repo", "--encrypt-pass-file", e.pass()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("freezer repair config"), "{err}");
    assert_eq!(fingerprint(&e.path("repo")), before);
}

#[test]
fn a_lost_config_is_read_from_its_copy_and_repair_config_restores_it() {
    let e = Env::new();
    let p = e.pass();
    let id = backed_up(&e);
    let config = std::fs::read(e.path("repo/config")).unwrap();
    std::fs::remove_file(e.path("repo/config")).unwrap();
    let o = e.run(&["snapshots", "--repo", "repo", "--encrypt-pass-file", p]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("freezer repair config"),
        "{}",
        stderr(&o)
    );

    // A wrong passphrase repairs nothing.
    std::fs::write(e.path("wrong"), "wrong\n").unwrap();
    let before = fingerprint(&e.path("repo"));
    let o = e.run(&[
        "repair",
        "config",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        "wrong",
    ]);
    assert!(!o.status.success());
    assert_eq!(fingerprint(&e.path("repo")), before, "nothing written");

    let out = e.ok(&[
        "repair",
        "config",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
    ]);
    assert!(out.contains("config missing, restored"), "{out}");
    assert_eq!(std::fs::read(e.path("repo/config")).unwrap(), config);
    // Again: nothing to do, nothing written.
    let out = e.ok(&[
        "repair",
        "config",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
    ]);
    assert!(out.contains("nothing was written"), "{out}");
    let o = e.run(&["check", "--repo", "repo", "--encrypt-pass-file", p]);
    assert!(o.status.success(), "{}", stderr(&o));
    restores(&e, &id, "out");
}

#[test]
fn a_damaged_config_is_blamed_never_the_key_and_repair_config_fixes_it() {
    let e = Env::new();
    let p = e.pass();
    let id = backed_up(&e);
    let good = std::fs::read_to_string(e.path("repo/config")).unwrap();
    let at = good.find("\"id\": \"").unwrap() + 7;
    let swapped = if &good[at..at + 1] == "0" { "1" } else { "0" };
    let damaged = format!("{}{swapped}{}", &good[..at], &good[at + 1..]);
    std::fs::write(e.path("repo/config"), &damaged).unwrap();

    let o = e.run(&["check", "--repo", "repo", "--encrypt-pass-file", p]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("damaged") && err.contains("freezer repair config"),
        "{err}"
    );
    assert!(!err.contains("can be deleted"), "{err}");

    let out = e.ok(&[
        "repair",
        "config",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
    ]);
    assert!(out.contains("config damaged"), "{out}");
    assert_eq!(
        std::fs::read_to_string(e.path("repo/config")).unwrap(),
        good
    );
    let aside: Vec<_> = std::fs::read_dir(e.path("repo/quarantine"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), damaged);
    let o = e.run(&["check", "--repo", "repo", "--encrypt-pass-file", p]);
    assert!(o.status.success(), "{}", stderr(&o));
    restores(&e, &id, "out");
}
