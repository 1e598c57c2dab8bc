//! The `s3` sink against a real S3 server (s3s-fs, which checks signatures) on loopback.

use std::sync::Arc;
use std::time::Duration;

use freezer_core::Error;
use freezer_core::repo::Repository;
use freezer_core::sink::{Payload, PutMode, S3Sink, Sink, SinkExt};

use crate::servers::S3Server;
use crate::support::*;

fn sink(server: &S3Server, bucket: &str, prefix: &str) -> Arc<dyn Sink> {
    Arc::new(S3Sink::new(server.options(bucket, prefix)).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_contract_holds_on_s3() {
    let server = S3Server::start();
    let s = sink(&server, "conformance", "some/prefix");
    s.prepare().await.unwrap();
    s.prepare().await.unwrap();
    crate::conformance::check(s.clone(), S3Sink::MULTIPART_FROM + 1).await;
    // The prefix is a real boundary: another prefix of the same bucket sees nothing.
    let other = sink(&server, "conformance", "other");
    assert!(other.list("").await.unwrap().is_empty());
    assert!(
        s.describe().starts_with("s3://conformance/some/prefix"),
        "{}",
        s.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_credentials_and_missing_buckets_are_named() {
    let server = S3Server::start();
    let good = sink(&server, "creds", "");
    good.prepare().await.unwrap();
    let mut o = server.options("creds", "");
    o.secret_key = Some("not-the-secret".into());
    let bad = S3Sink::new(o).unwrap();
    let e = bad
        .put("x", Payload::from(b"1".to_vec()), PutMode::Overwrite)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e}");
    assert!(e.to_string().contains("access_key"), "{e}");
    assert!(
        !e.to_string().contains("not-the-secret") && !format!("{bad:?}").contains("not-the-secret")
    );
    let missing = sink(&server, "no-such-bucket", "");
    let e = missing.get_bytes("config").await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_server_gives_transient_errors_that_retrying_survives() {
    let mut server = S3Server::start();
    let s = sink(&server, "flaky", "");
    s.prepare().await.unwrap();
    // Killed in the middle of a large transfer.
    let data = Payload::from(pseudo_random(48 << 20, 5));
    let upload = {
        let (s, data) = (s.clone(), data.clone());
        tokio::spawn(async move { s.put("big", data, PutMode::Overwrite).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    server.kill();
    let e = upload.await.unwrap().unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    let e = s.get_bytes("big").await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    // Retrying waits for the server to come back.
    crate::conformance::retrying_rides_out_a_restart(s.clone(), server, "big", data, 8).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_on_s3_backs_up_and_restores() {
    let server = S3Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    odd_tree(&data);
    let s = sink(&server, "backups", "node1");
    init(vec![s.clone()], Some("pw")).await;
    let mut repo = Repository::open(vec![s.clone()], Some(&pass("pw")))
        .await
        .unwrap();
    let first = backup_dir(&mut repo, &data, "n").await;
    assert!(first.is_complete());
    let second = backup_dir(&mut repo, &data, "n").await;
    assert_eq!(second.snapshot.stats.bytes_read, 0);
    let target = tmp.path().join("out");
    let out = restore_id(&mut repo, second.snapshot_id.unwrap(), &target).await;
    assert!(out.is_complete(), "{out:?}");
    assert_same_tree(&data, &target, true);
}

impl crate::conformance::Restartable for S3Server {
    fn restart(&mut self) {
        S3Server::restart(self)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_first_backup_creates_the_bucket_and_the_repository() {
    use freezer_core::job::{ActionOutcome, FreezerAction, RunContext, run_action};
    let server = S3Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    odd_tree(&data);
    // Upstream's option names; the bucket does not exist yet.
    let action: FreezerAction = serde_json::from_value(serde_json::json!({
        "action": "backup", "path_to_backup": data, "backup_name": "web",
        "storage": "s3", "container": "fresh/node1", "endpoint": server.endpoint,
    }))
    .unwrap();
    let mut ctx = RunContext::current();
    ctx.env = [
        ("ACCESS_KEY".to_string(), server.access_key.clone()),
        ("SECRET_KEY".to_string(), server.secret_key.clone()),
    ]
    .into_iter()
    .collect();
    let ActionOutcome::Backup(b) = run_action(&action, &ctx).await.unwrap() else {
        panic!("not a backup")
    };
    assert!(b.is_complete(), "{b:?}");
    assert_eq!(b.created_repository.len(), 1, "{b:?}");
    assert!(
        b.created_repository[0].starts_with("s3://fresh/node1"),
        "{b:?}"
    );
    let ActionOutcome::Backup(again) = run_action(&action, &ctx).await.unwrap() else {
        panic!("not a backup")
    };
    assert!(again.created_repository.is_empty());
    let mut repo = Repository::open(vec![sink(&server, "fresh", "node1")], None)
        .await
        .unwrap();
    let target = tmp.path().join("out");
    restore_id(&mut repo, again.snapshot_id.unwrap(), &target).await;
    assert_same_tree(&data, &target, true);
}
