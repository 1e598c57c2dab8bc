//! The `ftp` and `ftps` sinks against Debian's vsftpd on loopback.

use std::sync::Arc;

use freezer_core::Error;
use freezer_core::job::{Environment, StorageSpec};
use freezer_core::repo::Repository;
use freezer_core::sink::{FtpSink, Payload, PutMode, Sink, SinkExt};

use crate::servers::FtpServer;
use crate::support::*;

fn leftovers(root: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

async fn contract(tls: bool) {
    let server = FtpServer::start(tls);
    let sink: Arc<dyn Sink> = Arc::new(FtpSink::new(server.options("remote/repo")).unwrap());
    sink.prepare().await.unwrap();
    sink.prepare().await.unwrap();
    crate::conformance::check(sink.clone(), 12 << 20).await;
    let scheme = if tls { "ftps" } else { "ftp" };
    assert!(
        sink.describe()
            .starts_with(&format!("{scheme}://{}@127.0.0.1:", server.user)),
        "{}",
        sink.describe()
    );
    let left = leftovers(&server.root);
    assert!(left.is_empty(), "{left:?}");
    // Short ranges at the start of a big object leave transfers unfinished: the connections
    // they used are replaced, and the sink goes on working.
    let big = bytes::Bytes::from(pseudo_random(3 << 20, 5));
    sink.put("big", Payload::from(big.clone()), PutMode::Overwrite)
        .await
        .unwrap();
    for i in 0..6u64 {
        let r = i * 1000..i * 1000 + 10;
        let got = sink.get_range("big", r.clone()).await.unwrap();
        assert_eq!(got, big.slice(r.start as usize..r.end as usize));
    }
    assert!(sink.get_bytes("big").await.unwrap() == big);
    // Concurrent puts run on several connections at once, and all land.
    let puts = (0..12).map(|i| {
        let sink = sink.clone();
        async move {
            sink.put(
                &format!("parallel/{i}"),
                Payload::from(pseudo_random(256 << 10, i)),
                PutMode::Overwrite,
            )
            .await
        }
    });
    for r in futures::future::join_all(puts).await {
        r.unwrap();
    }
    assert_eq!(sink.list("parallel/").await.unwrap().len(), 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_contract_holds_over_ftp() {
    contract(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_contract_holds_over_ftps() {
    contract(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_passwords_are_named_and_never_shown() {
    let server = FtpServer::start(false);
    let mut o = server.options("creds");
    o.password = "not-the-password-0xdead".into();
    let sink = FtpSink::new(o.clone()).unwrap();
    let e = sink.list("").await.unwrap_err();
    assert!(
        matches!(e, Error::Permission { .. })
            && e.to_string().contains("ftp_username")
            && e.to_string().contains("ftp_password"),
        "{e}"
    );
    let shown = format!("{e} {e:?} {o:?} {sink:?} {}", sink.describe());
    assert!(!shown.contains("not-the-password-0xdead"), "{shown}");
    assert!(!shown.contains(&server.password), "{shown}");
    // The right password works with the same sink options otherwise.
    o.password = server.password.clone();
    FtpSink::new(o).unwrap().prepare().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ftps_certificate_that_does_not_verify_is_refused() {
    let server = FtpServer::start(true);
    // No CA given: the system's roots do not know the test CA.
    let mut o = server.options("tls");
    o.ca_file = None;
    let e = FtpSink::new(o.clone()).unwrap().list("").await.unwrap_err();
    assert!(
        matches!(e, Error::Permission { .. }) && e.to_string().contains("ftp_ca_file"),
        "{e}"
    );
    // Another CA is no better.
    let other = server.pki.path("server.pem");
    o.ca_file = Some(other);
    let e = FtpSink::new(o.clone()).unwrap().list("").await.unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e}");
    // The right CA, but the wrong name: 127.0.0.1 is in the certificate, localhost is not.
    o.ca_file = Some(server.ca_file.clone());
    o.host = "localhost".into();
    let e = FtpSink::new(o.clone()).unwrap().list("").await.unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e}");
    // Plain FTP to a server that demands TLS for logins: refused, not sent in clear.
    let mut plain = server.options("tls");
    plain.tls = false;
    plain.ca_file = None;
    let e = FtpSink::new(plain).unwrap().list("").await.unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_server_is_transient_and_retrying_recovers() {
    let mut server = FtpServer::start(false);
    let sink = Arc::new(FtpSink::new(server.options("drop")).unwrap());
    sink.put("a", Payload::from(b"1".to_vec()), PutMode::Overwrite)
        .await
        .unwrap();
    server.kill();
    let e = sink.get_bytes("a").await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    let e = sink.list("").await.unwrap_err();
    assert!(e.is_transient(), "connection refused: {e:?}");
    let data = Payload::from(pseudo_random(4 << 20, 3));
    let (server, retrying) =
        crate::conformance::retrying_rides_out_a_restart(sink, server, "b", data, 8).await;
    assert_eq!(&retrying.get_bytes("a").await.unwrap()[..], b"1");
    let left = leftovers(&server.root);
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_over_ftps_backs_up_and_restores() {
    let server = FtpServer::start(true);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    odd_tree(&data);
    let sink: Arc<dyn Sink> = Arc::new(FtpSink::new(server.options("backups/node1")).unwrap());
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

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_ftp_certfile_and_keyfile_are_a_client_certificate() {
    let server = FtpServer::start_requiring_client_certificates();
    let mut o = server.options("client-cert");
    // Without a certificate the server refuses the handshake.
    let e = FtpSink::new(o.clone()).unwrap().list("").await.unwrap_err();
    assert!(
        matches!(e, Error::Permission { .. }) && e.to_string().contains("ftp_certfile"),
        "{e}"
    );
    o.cert_file = Some(server.client_cert.clone());
    o.key_file = Some(server.client_key.clone());
    let sink = FtpSink::new(o).unwrap();
    sink.put(
        "x",
        Payload::from(b"with a certificate".to_vec()),
        PutMode::Create,
    )
    .await
    .unwrap();
    assert_eq!(
        &sink.get_bytes("x").await.unwrap()[..],
        b"with a certificate"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_urls_reach_the_server_with_the_password_from_the_environment() {
    let server = FtpServer::start(true);
    let url = format!(
        "ftps://{}@127.0.0.1:{}{}?ca_file={}",
        server.user,
        server.port,
        server.root.join("by-url").display(),
        server.ca_file.display()
    );
    let spec = StorageSpec::from_url(&url).unwrap();
    let env: Environment = [("FTP_PASSWORD".to_string(), server.password.clone())].into();
    let sink = spec.open(&env, (None, None)).unwrap();
    sink.prepare().await.unwrap();
    sink.put("a/b", Payload::from(b"by url".to_vec()), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(&sink.get_bytes("a/b").await.unwrap()[..], b"by url");
    assert!(!format!("{} {sink:?}", sink.describe()).contains(&server.password));
    let wrong: Environment = [("FTP_PASSWORD".to_string(), "wrong".to_string())].into();
    let e = spec
        .open(&wrong, (None, None))
        .unwrap()
        .list("")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e}");
}

/// Collects what a subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread: the subscriber set for this test sees every event, suppaftp's `log` records
// included (bridged by LogTracer), and no other test's.
#[tokio::test(flavor = "current_thread")]
async fn the_password_is_not_in_trace_logs() {
    let _ = tracing_log::LogTracer::init();
    let logs = Capture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = FtpServer::start(false);
    let sink = FtpSink::new(server.options("logs")).unwrap();
    sink.put("x", Payload::from(b"logged".to_vec()), PutMode::Overwrite)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("PASS <password>"),
        "suppaftp's trace of the login was not captured: {text}"
    );
    assert!(!text.contains(&server.password), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_the_user_may_not_make_is_a_permission_error() {
    let server = FtpServer::start(false);
    let mut o = server.options("x");
    // The server's own folder belongs to root.
    o.path = server
        .dir
        .path()
        .join("root-only/repo")
        .display()
        .to_string();
    let sink = FtpSink::new(o).unwrap();
    let e = sink.prepare().await.unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e}");
    let e = sink
        .put("k", Payload::from(b"1".to_vec()), PutMode::Overwrite)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e}");
}

impl crate::conformance::Restartable for FtpServer {
    fn restart(&mut self) {
        FtpServer::restart(self)
    }
}
