//! `freezer scheduler` run as an operator runs it: a jobs folder, logs on stderr, and a clean
//! exit 0 on SIGTERM with the running backup aborted and the repository left valid.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn freezer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_freezer"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn snapshots(repo: &Path) -> usize {
    if !repo.join("config").exists() {
        return 0;
    }
    let o = freezer(&["--json", "snapshots", "--repo", repo.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .or_else(|| v["snapshots"].as_array())
        .map_or(0, Vec::len)
}

fn job(src: &Path, repo: &Path, limit: Option<&str>) -> String {
    let mut action = serde_json::json!({
        "action": "backup", "mode": "fs", "storage": "local",
        "container": repo, "path_to_backup": src, "backup_name": "cli",
    });
    if let Some(l) = limit {
        action["upload_limit"] = l.into();
    }
    serde_json::json!({
        "job_id": "cli-job",
        "job_actions": [{"freezer_action": action}],
        "job_schedule": {"schedule_interval": "1 seconds"},
    })
    .to_string()
}

#[test]
fn the_scheduler_runs_a_jobs_folder_and_stops_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let (jobs, src, repo) = (
        tmp.path().join("jobs"),
        tmp.path().join("src"),
        tmp.path().join("repo"),
    );
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), "some data\n").unwrap();
    std::fs::write(jobs.join("cli.json"), job(&src, &repo, None)).unwrap();
    let log = tmp.path().join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_freezer"))
        .args([
            "scheduler",
            "--no-daemon",
            "--poll-interval",
            "0.2",
            "--jobs-dir",
        ])
        .arg(&jobs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while snapshots(&repo) < 2 {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "no two runs: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Now a slow backup, stopped in its middle by SIGTERM.
    for i in 0..6u8 {
        let data: Vec<u8> = (0..(2u32 << 20))
            .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i)
            .collect();
        std::fs::write(src.join(format!("big{i}")), data).unwrap();
    }
    std::fs::write(jobs.join("cli.json"), job(&src, &repo, Some("1M"))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap();
        // A run that starts after the change is the slow one.
        if let Some(at) = text.find("job changed")
            && text[at..].contains("job starting")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow run did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let asked = Instant::now();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("scheduler stopped"), "{text}");
    // The run in progress at SIGTERM is aborted (the abort of a long backup within two
    // seconds is tested in freezer-core's service_scheduler tests).
    assert!(
        text.contains("scheduler stopping: aborting running jobs"),
        "{text}"
    );
    assert!(!text.to_lowercase().contains("panic"), "{text}");
    // The repository is valid afterwards.
    let o = freezer(&["check", "--repo", repo.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn bad_flags_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let o = freezer(&[
        "scheduler",
        "--jobs-dir",
        tmp.path().join("missing").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--jobs-dir"));
    let o = freezer(&[
        "scheduler",
        "--concurrent-jobs",
        "0",
        "--jobs-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    // API mode without credentials: said, not attempted.
    let o = Command::new(env!("CARGO_BIN_EXE_freezer"))
        .args(["scheduler"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("OS_AUTH_URL"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A CA file that is not there (by flag or OS_CACERT), OS_INSECURE that is no boolean:
    // said at the start, nothing attempted.
    let api_env = |cmd: &mut Command| {
        cmd.env_clear()
            .env("OS_AUTH_URL", "https://127.0.0.1:1/v3")
            .env("OS_USERNAME", "u")
            .env("OS_PASSWORD", "pw-not-shown")
            .env("OS_PROJECT_NAME", "p");
    };
    let ca = tmp.path().join("no-such-ca.pem");
    let mut by_flag = Command::new(env!("CARGO_BIN_EXE_freezer"));
    by_flag.args(["scheduler", "--os-cacert"]).arg(&ca);
    let mut by_env = Command::new(env!("CARGO_BIN_EXE_freezer"));
    by_env.arg("scheduler");
    api_env(&mut by_flag);
    api_env(&mut by_env);
    by_env.env("OS_CACERT", &ca);
    for mut cmd in [by_flag, by_env] {
        let o = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("OS_CACERT") && err.contains(ca.to_str().unwrap()),
            "{err}"
        );
        assert!(!err.contains("pw-not-shown"), "{err}");
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_freezer"));
    cmd.arg("scheduler");
    api_env(&mut cmd);
    let o = cmd.env("OS_INSECURE", "perhaps").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("perhaps"));
}
