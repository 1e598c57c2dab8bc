//! Option names through the library: a misspelt name fails an action or a job before anything
//! is written, allowed it is a warning, and upstream's older `restore_from_host` names the host.

use freezer_core::ErrorKind;
use freezer_core::job::{ActionOutcome, FreezerAction, Job, RunContext, run_action, run_job};

use crate::support::*;

fn backup_json(data: &std::path::Path, repo: &std::path::Path, extra: &str) -> String {
    format!(
        r#"{{"action":"backup","path_to_backup":"{}","backup_name":"web","hostname":"node1","container":"{}"{extra}}}"#,
        data.display(),
        repo.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misspelt_option_fails_the_action_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo, pass) = (
        tmp.path().join("data"),
        tmp.path().join("repo"),
        tmp.path().join("pass"),
    );
    odd_tree(&data);
    std::fs::write(&pass, "secret\n").unwrap();
    let typo = format!(r#","encrypt_pas_file":"{}""#, pass.display());
    let a = FreezerAction::from_json(&backup_json(&data, &repo, &typo)).unwrap();
    let e = run_action(&a, &RunContext::current()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert!(
        e.to_string()
            .starts_with("encrypt_pas_file: unknown option; did you mean encrypt_pass_file?"),
        "{e}"
    );
    assert!(!repo.exists(), "nothing created");

    // In a job, the second action's slip stops the first one.
    let job = Job::from_json(&format!(
        r#"{{"job_actions":[{{"freezer_action":{}}},{{"freezer_action":{}}}]}}"#,
        backup_json(&data, &repo, ""),
        backup_json(&data, &repo, r#","exlcude":"*.log""#)
    ))
    .unwrap();
    let e = job.validate_with(false).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "job_actions[1].freezer_action.exlcude: unknown option; did you mean exclude?"
        ),
        "{e}"
    );
    let reports = run_job(&job, &RunContext::current()).await;
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r.attempts == 0), "{reports:?}");
    let errors: Vec<_> = reports
        .iter()
        .map(|r| r.outcome.as_ref().unwrap_err())
        .collect();
    assert!(
        errors[0].contains("not run") && errors[0].contains("action 2"),
        "{errors:?}"
    );
    assert!(errors[1].contains("did you mean exclude?"), "{errors:?}");
    assert!(!repo.exists(), "nothing created");

    // Allowed, the job runs, and the warnings name the name.
    assert_eq!(job.validate_with(true).unwrap().len(), 1);
    let mut ctx = RunContext::current();
    ctx.allow_unknown_options = true;
    let reports = run_job(&job, &ctx).await;
    assert!(reports.iter().all(|r| r.outcome.is_ok()), "{reports:?}");
    assert!(repo.join("config").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_from_host_names_the_host_as_upstream_did() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo) = (tmp.path().join("data"), tmp.path().join("repo"));
    odd_tree(&data);
    let a = FreezerAction::from_json(&backup_json(&data, &repo, "")).unwrap();
    run_action(&a, &RunContext::current()).await.unwrap();
    let info = |extra: &str| {
        FreezerAction::from_json(&format!(
            r#"{{"action":"info","backup_name":"web","container":"{}"{extra}}}"#,
            repo.display()
        ))
        .unwrap()
    };
    let listed = |o: ActionOutcome| match o {
        ActionOutcome::Info { snapshots } => snapshots.len(),
        other => panic!("{other:?}"),
    };
    let ctx = RunContext::current();
    let o = run_action(&info(r#","restore_from_host":"node1""#), &ctx).await;
    assert_eq!(listed(o.unwrap()), 1);
    let o = run_action(&info(r#","restore_from_host":"elsewhere""#), &ctx).await;
    assert_eq!(listed(o.unwrap()), 0);
    let e = run_action(
        &info(r#","hostname":"node1","restore_from_host":"elsewhere""#),
        &ctx,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().starts_with("restore_from_host:"), "{e}");
}
