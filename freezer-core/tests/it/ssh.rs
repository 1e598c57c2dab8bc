//! The `ssh` sink (SFTP) against Debian's sshd on loopback.

use std::sync::Arc;

use freezer_core::Error;
use freezer_core::repo::Repository;
use freezer_core::sink::{Payload, PutMode, Sink, SinkExt, SshSink};

use crate::servers::SshServer;
use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_contract_holds_over_sftp() {
    let server = SshServer::start();
    let root = server.dir.path().join("remote/repo");
    let sink: Arc<dyn Sink> =
        Arc::new(SshSink::new(server.options(root.to_str().unwrap())).unwrap());
    sink.prepare().await.unwrap();
    crate::conformance::check(sink.clone(), 12 << 20).await;
    assert!(
        sink.describe().starts_with("ssh://root@127.0.0.1:"),
        "{}",
        sink.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_keys_are_checked_never_silently_accepted() {
    let server = SshServer::start();
    let root = server.dir.path().join("hk");
    let known = server.dir.path().join("elsewhere/known_hosts");
    // Unknown host: refused, with what to do.
    let mut o = server.options(root.to_str().unwrap());
    o.known_hosts = known.clone();
    let e = SshSink::new(o.clone()).unwrap().list("").await.unwrap_err();
    assert!(
        matches!(e, Error::Permission { .. }) && e.to_string().contains("not in"),
        "{e}"
    );
    // Accepted when asked, and remembered.
    o.accept_new_host_key = true;
    SshSink::new(o.clone()).unwrap().list("").await.unwrap();
    assert!(
        std::fs::read_to_string(&known)
            .unwrap()
            .contains("127.0.0.1")
    );
    o.accept_new_host_key = false;
    SshSink::new(o.clone()).unwrap().list("").await.unwrap();
    // A changed key is refused even when new keys may be accepted.
    let other = server.dir.path().join("other_key");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&other)
        .status()
        .unwrap();
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut f = pubkey.split_whitespace();
    std::fs::write(
        &known,
        format!(
            "[127.0.0.1]:{} {} {}\n",
            server.port,
            f.next().unwrap(),
            f.next().unwrap()
        ),
    )
    .unwrap();
    o.accept_new_host_key = true;
    let e = SshSink::new(o).unwrap().list("").await.unwrap_err();
    assert!(e.to_string().contains("CHANGED"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn passwords_work_and_bad_credentials_are_named() {
    let server = SshServer::start();
    let (user, password) = SshServer::password_user();
    let mut o = server.options("freezer-test-repo");
    o.username = user;
    o.key_file = None;
    o.password = Some(password.clone());
    let sink = SshSink::new(o.clone()).unwrap();
    sink.put(
        "x/y",
        Payload::from(b"by password".to_vec()),
        PutMode::Overwrite,
    )
    .await
    .unwrap();
    assert_eq!(&sink.get_bytes("x/y").await.unwrap()[..], b"by password");
    sink.delete("x/y").await.unwrap();
    o.password = Some("wrong".into());
    let e = SshSink::new(o.clone()).unwrap().list("").await.unwrap_err();
    assert!(
        matches!(e, Error::Permission { .. }) && e.to_string().contains("authentication refused"),
        "{e}"
    );
    assert!(!format!("{e} {o:?}").contains(&password));
    let mut k = server.options("x");
    k.key_file = Some(server.dir.path().join("no-such-key"));
    let e = SshSink::new(k).unwrap().list("").await.unwrap_err();
    assert!(e.to_string().starts_with("ssh_key:"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_is_transient_and_the_next_call_reconnects() {
    let mut server = SshServer::start();
    let root = server.dir.path().join("drop");
    let sink = Arc::new(SshSink::new(server.options(root.to_str().unwrap())).unwrap());
    sink.put("a", Payload::from(b"1".to_vec()), PutMode::Overwrite)
        .await
        .unwrap();
    server.kill();
    let e = sink.get_bytes("a").await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    let data = Payload::from(pseudo_random(4 << 20, 3));
    let (_server, retrying) =
        crate::conformance::retrying_rides_out_a_restart(sink, server, "b", data, 8).await;
    assert_eq!(&retrying.get_bytes("a").await.unwrap()[..], b"1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_over_ssh_backs_up_and_restores() {
    let server = SshServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    odd_tree(&data);
    let root = server.dir.path().join("backups/node1");
    let sink: Arc<dyn Sink> =
        Arc::new(SshSink::new(server.options(root.to_str().unwrap())).unwrap());
    init(vec![sink.clone()], Some("pw")).await;
    let mut repo = Repository::open(vec![sink], Some(&pass("pw")))
        .await
        .unwrap();
    let id = backup_dir(&mut repo, &data, "n").await.snapshot_id.unwrap();
    let target = tmp.path().join("out");
    let out = restore_id(&mut repo, id, &target).await;
    assert!(out.is_complete(), "{out:?}");
    assert_same_tree(&data, &target, true);
}

impl crate::conformance::Restartable for SshServer {
    fn restart(&mut self) {
        SshServer::restart(self)
    }
}
