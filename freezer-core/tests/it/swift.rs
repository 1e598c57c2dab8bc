//! The `swift` sink against Debian's Swift proxy on loopback (TempAuth, and a real Keystone),
//! and the `s3` sink against the same proxy's s3api.

use std::sync::Arc;
use std::time::Duration;

use freezer_core::Error;
use freezer_core::job::{Environment, StorageSpec};
use freezer_core::repo::Repository;
use freezer_core::sink::{
    Payload, PutMode, S3Sink, Sink, SinkExt, SwiftAuth, SwiftOptions, SwiftSink,
};

use crate::servers::{KeystoneServer, ProxyAuth, SwiftServer, free_port};
use crate::support::*;

/// Segments of 2 MiB in tests (Swift's smallest is 1 MiB), so that `big` objects cross it.
const SEGMENT: usize = 2 << 20;

fn sink(options: SwiftOptions) -> Arc<SwiftSink> {
    Arc::new(SwiftSink::new(options).unwrap())
}

fn env(pairs: &[(&str, &str)]) -> Environment {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_contract_holds_on_swift() {
    let server = SwiftServer::shared();
    let s = sink(server.options("conformance/some/prefix", SEGMENT));
    s.prepare().await.unwrap();
    s.prepare().await.unwrap();
    crate::conformance::check(s.clone(), 2 * SEGMENT + 1).await;
    // The prefix is a real boundary: another prefix of the same container sees nothing.
    let other = sink(server.options("conformance/other", SEGMENT));
    assert!(other.list("").await.unwrap().is_empty());
    assert!(
        s.describe()
            .starts_with("swift://conformance/some/prefix at http://127.0.0.1:"),
        "{}",
        s.describe()
    );
    // A large object is a manifest of segments in `<container>_segments`: listed and sized
    // whole; replacing it drops the old segments, deleting it drops the new ones.
    let segments = sink(server.options("conformance_segments/some/prefix/large", SEGMENT));
    let data = Payload::from(pseudo_random(3 * SEGMENT + 5, 8));
    s.put("large", data.clone(), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(s.head("large").await.unwrap().size, data.len() as u64);
    let listed = s.list("large").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].size, data.len() as u64);
    assert_eq!(segments.list("").await.unwrap().len(), 4);
    s.put("large", data.clone(), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(
        segments.list("").await.unwrap().len(),
        4,
        "the first upload's segments are gone"
    );
    assert!(s.get_bytes("large").await.unwrap() == data.to_bytes());
    let e = s
        .put("large", data.clone(), PutMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    // Ranges across segment boundaries.
    let r = (SEGMENT as u64 - 10)..(2 * SEGMENT as u64 + 10);
    assert!(
        s.get_range("large", r.clone()).await.unwrap()
            == data.to_bytes().slice(r.start as usize..r.end as usize)
    );
    s.delete("large").await.unwrap();
    assert!(segments.list("").await.unwrap().is_empty());
    assert!(matches!(s.head("large").await, Err(Error::NotFound { .. })));
}

#[tokio::test(flavor = "multi_thread")]
async fn big_gets_stream() {
    let server = SwiftServer::shared();
    let s = sink(server.options("streams", 64 << 20));
    s.prepare().await.unwrap();
    let data = Payload::from(pseudo_random(6 << 20, 4));
    s.put("big", data.clone(), PutMode::Overwrite)
        .await
        .unwrap();
    let body = s.get("big", None).await.unwrap();
    assert!(
        matches!(body, freezer_core::sink::GetBody::Stream(_)),
        "{body:?}"
    );
    assert!(body.bytes().await.unwrap() == data.to_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_credentials_and_missing_containers_are_named() {
    let server = SwiftServer::shared();
    let mut o = server.options("creds", SEGMENT);
    o.auth = SwiftAuth::TempAuth {
        url: server.auth_url(),
        user: "test:tester".into(),
        key: "not-the-key".into(),
    };
    let bad = SwiftSink::new(o.clone()).unwrap();
    let e = bad
        .put("x", Payload::from(b"1".to_vec()), PutMode::Overwrite)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e}");
    assert!(e.to_string().contains("ST_USER and ST_KEY"), "{e}");
    for shown in [
        e.to_string(),
        format!("{e:?}"),
        format!("{bad:?}"),
        format!("{o:?}"),
    ] {
        assert!(!shown.contains("not-the-key"), "{shown}");
    }
    // A token that Swift does not know, given outright: refused, and never shown.
    let mut t = server.options("creds", SEGMENT);
    t.auth = SwiftAuth::Token("AUTH_tk-made-up-token".into());
    t.storage_url = Some(format!("{}/v1/AUTH_test", server.url));
    let e = SwiftSink::new(t).unwrap().list("").await.unwrap_err();
    assert!(
        matches!(e, Error::Permission { .. }) && e.to_string().contains("OS_AUTH_TOKEN"),
        "{e}"
    );
    assert!(!e.to_string().contains("made-up"), "{e}");
    // A container nobody created.
    let missing = sink(server.options("no-such-container/p", SEGMENT));
    let e = missing.get_bytes("config").await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let e = missing.list("").await.unwrap_err();
    assert!(
        matches!(e, Error::NotFound { .. }) && e.to_string().contains("init creates it"),
        "{e}"
    );
    let e = missing
        .put("x", Payload::from(b"1".to_vec()), PutMode::Overwrite)
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::NotFound { .. }) && e.to_string().contains("init creates it"),
        "{e}"
    );
    // Nothing listens: transient.
    let mut gone = server.options("creds", SEGMENT);
    gone.auth = SwiftAuth::TempAuth {
        url: format!("http://127.0.0.1:{}/auth/v1.0", free_port()),
        user: "test:tester".into(),
        key: "testing".into(),
    };
    let e = SwiftSink::new(gone).unwrap().list("").await.unwrap_err();
    assert!(e.is_transient(), "{e}");
}

/// A token and storage URL taken by hand from `server`'s TempAuth, for requests no sink makes
/// (here and in upstream_tar).
pub async fn token(server: &SwiftServer, user: &str, key: &str) -> (String, String) {
    let answer = reqwest::Client::new()
        .get(server.auth_url())
        .header("X-Auth-User", user)
        .header("X-Auth-Key", key)
        .send()
        .await
        .unwrap();
    let header = |name: &str| answer.headers()[name].to_str().unwrap().to_string();
    (header("x-auth-token"), header("x-storage-url"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_is_renewed() {
    let server = SwiftServer::start_with(
        free_port(),
        // Long enough for the steps before the sleep on a loaded 2-core machine.
        ProxyAuth::TempAuth {
            expiring_token_life: 6,
        },
    );
    let auth = SwiftAuth::TempAuth {
        url: server.auth_url(),
        user: "test:expiring".into(),
        key: "expiring".into(),
    };
    // A token taken by hand, to show that it really expires.
    let (token, storage_url) = token(&server, "test:expiring", "expiring").await;
    let mut fixed = SwiftOptions::new("expiry", SwiftAuth::Token(token.clone()));
    fixed.storage_url = Some(storage_url);
    let fixed = sink(fixed);
    let renewing = sink(SwiftOptions::new("expiry", auth));
    renewing.prepare().await.unwrap();
    renewing
        .put("a", Payload::from(b"before".to_vec()), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(&fixed.get_bytes("a").await.unwrap()[..], b"before");
    tokio::time::sleep(Duration::from_millis(7500)).await;
    let e = fixed.get_bytes("a").await.unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e}");
    assert!(!e.to_string().contains(&token));
    // The sink that knows the credentials authenticates again, once, and carries on.
    assert_eq!(&renewing.get_bytes("a").await.unwrap()[..], b"before");
    renewing
        .put("b", Payload::from(b"after".to_vec()), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(renewing.list("").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_proxy_gives_transient_errors_that_retrying_survives() {
    let mut server = SwiftServer::start();
    let s = sink(server.options("flaky", SEGMENT));
    s.prepare().await.unwrap();
    // Killed in the middle of a large upload (48 MiB in 24 segments).
    let data = Payload::from(pseudo_random(48 << 20, 5));
    let upload = {
        let (s, data) = (s.clone(), data.clone());
        tokio::spawn(async move { s.put("big", data, PutMode::Overwrite).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.kill();
    let e = upload.await.unwrap().unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    let e = s.get_bytes("big").await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    // Retrying waits for the proxy to come back.
    crate::conformance::retrying_rides_out_a_restart(s.clone(), server, "big", data, 10).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_on_swift_backs_up_and_restores() {
    let server = SwiftServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    odd_tree(&data);
    // Through the storage URL and python-swiftclient's variables, as a front-end does.
    let auth_url = server.auth_url();
    let vars = env(&[
        ("ST_AUTH", auth_url.as_str()),
        ("ST_USER", "test:tester"),
        ("ST_KEY", "testing"),
    ]);
    let s = StorageSpec::from_url("swift://backups/node1?segment_size=1M")
        .unwrap()
        .open(&vars, (None, None))
        .unwrap();
    assert!(
        s.describe().starts_with("swift://backups/node1"),
        "{}",
        s.describe()
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn the_s3_sink_works_against_swifts_s3api() {
    let server = SwiftServer::shared();
    let s: Arc<dyn Sink> =
        Arc::new(S3Sink::new(server.s3_options("s3api-conformance", "some/prefix")).unwrap());
    s.prepare().await.unwrap();
    s.prepare().await.unwrap();
    crate::conformance::check(s.clone(), S3Sink::MULTIPART_FROM + 1).await;
    let mut o = server.s3_options("s3api-conformance", "");
    o.secret_key = Some("not-the-secret".into());
    let e = S3Sink::new(o).unwrap().list("").await.unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e}");
    // What s3api stored is Swift's: the same objects through the swift sink.
    let swift = sink(server.options("s3api-conformance/some/prefix", SEGMENT));
    assert_eq!(&swift.get_bytes("ranges/new").await.unwrap()[..], b"first");
}

#[tokio::test(flavor = "multi_thread")]
async fn keystone_v3_with_a_real_keystone() {
    let swift_port = free_port();
    let keystone = KeystoneServer::start(swift_port);
    let _proxy = SwiftServer::start_with(
        swift_port,
        ProxyAuth::Keystone {
            keystone: keystone.url.clone(),
            admin_password: keystone.admin_password.clone(),
        },
    );
    let vars = keystone.env();
    let spec = StorageSpec::from_url("swift://keystone/p?segment_size=1M").unwrap();
    let s = sink(spec.swift_options(&vars).unwrap());
    s.prepare().await.unwrap();
    // Many calls at once share one token.
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.put(
                    &format!("many/{i}"),
                    Payload::from(vec![i as u8; 10]),
                    PutMode::Overwrite,
                )
                .await
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(keystone.token_requests("freezer"), 1);
    assert_eq!(s.list("many/").await.unwrap().len(), 16);
    // Keystone revokes a user's tokens when the user is disabled: once the proxy's one-second
    // token cache forgets it, Swift answers 401, and the sink authenticates again, once.
    // (Fernet tokens carry whole seconds: one issued in the second of the revocation would
    // count as revoked too.)
    keystone.set_user_enabled(false);
    keystone.set_user_enabled(true);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(s.list("many/").await.unwrap().len(), 16);
    assert_eq!(keystone.token_requests("freezer"), 2);
    // Large objects, ranges, deletes under Keystone.
    let data = Payload::from(pseudo_random((5 << 20) / 2, 6));
    s.put("big", data.clone(), PutMode::Overwrite)
        .await
        .unwrap();
    assert!(s.get_bytes("big").await.unwrap() == data.to_bytes());
    assert_eq!(
        s.get_range("big", 1_048_570..1_048_580).await.unwrap(),
        data.to_bytes().slice(1_048_570..1_048_580)
    );
    s.delete("big").await.unwrap();
    assert!(!s.exists("big").await.unwrap());
    // The account is the project's, as the catalog says.
    let mut by_id = vars.clone();
    by_id.remove("OS_PROJECT_NAME");
    by_id.insert("OS_PROJECT_ID".into(), keystone.project_id.clone());
    by_id.insert("OS_INTERFACE".into(), "internal".into());
    let t = sink(spec.swift_options(&by_id).unwrap());
    assert_eq!(t.list("many/").await.unwrap().len(), 16);
    let mut direct = vars.clone();
    direct.insert(
        "OS_STORAGE_URL".into(),
        format!(
            "http://127.0.0.1:{swift_port}/v1/AUTH_{}",
            keystone.project_id
        ),
    );
    direct.insert("OS_REGION_NAME".into(), "RegionTwo".into());
    let d = sink(spec.swift_options(&direct).unwrap());
    assert_eq!(d.list("many/").await.unwrap().len(), 16);
    // A wrong password: permission, naming the variables, never the password.
    let mut wrong = vars.clone();
    wrong.insert("OS_PASSWORD".into(), "wrong-password-do-not-log".into());
    let w = sink(spec.swift_options(&wrong).unwrap());
    let e = w.list("").await.unwrap_err();
    assert!(
        matches!(e, Error::Permission { .. }) && e.to_string().contains("OS_PASSWORD"),
        "{e}"
    );
    for shown in [e.to_string(), format!("{e:?}"), format!("{w:?}")] {
        assert!(!shown.contains("wrong-password"), "{shown}");
        assert!(!shown.contains(&keystone.user_password), "{shown}");
    }
    // Regions: one the catalog lacks is bad input; one whose endpoint is down is transient.
    let mut region = vars.clone();
    region.insert("OS_REGION_NAME".into(), "RegionThree".into());
    let e = sink(spec.swift_options(&region).unwrap())
        .list("")
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::BadInput { .. }) && e.to_string().contains("OS_REGION_NAME"),
        "{e}"
    );
    region.insert("OS_REGION_NAME".into(), "RegionTwo".into());
    let e = sink(spec.swift_options(&region).unwrap())
        .list("")
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
}

impl crate::conformance::Restartable for SwiftServer {
    fn restart(&mut self) {
        SwiftServer::restart(self)
    }
}
