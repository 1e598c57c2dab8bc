//! The sink contract, checked the same way on every sink (sink/mod.rs states it): whole and
//! ranged reads, listing, deleting, create-only puts, sizes from 0 bytes to past multipart,
//! unicode names, missing objects, and atomic visibility under a concurrent reader.

use std::sync::Arc;

use bytes::Bytes;
use freezer_core::Error;
use freezer_core::sink::{MemorySink, Payload, PutMode, Sink, SinkExt};

use crate::support::*;

/// A server a test can kill and start again on the same port.
pub trait Restartable: Send + 'static {
    /// Starts the killed server again.
    fn restart(&mut self);
}

/// With the server killed, `Retrying` around `sink` keeps trying to put `data` at `key` until
/// the server, restarted 600-700 ms later, takes it; the object then reads back whole.
/// Returns the server and the retrying sink.
pub async fn retrying_rides_out_a_restart<S: Restartable>(
    sink: Arc<dyn Sink>,
    mut server: S,
    key: &str,
    data: Payload,
    max_retries: u32,
) -> (S, freezer_core::sink::Retrying<Arc<dyn Sink>>) {
    use std::time::Duration;
    let retrying = freezer_core::sink::Retrying::new(
        sink,
        freezer_core::sink::RetryPolicy {
            max_retries,
            initial_delay: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(650));
        server.restart();
        server
    });
    retrying
        .put(key, data.clone(), PutMode::Overwrite)
        .await
        .unwrap();
    let server = restarter.join().unwrap();
    assert!(retrying.get_bytes(key).await.unwrap() == data.to_bytes());
    (server, retrying)
}

/// Runs the whole contract against `sink`, which must be empty. `big` is a size above the
/// sink's multipart or segment threshold.
pub async fn check(sink: Arc<dyn Sink>, big: usize) {
    let name = sink.describe();
    let put = |key: &'static str, data: Bytes| {
        let sink = sink.clone();
        async move { sink.put(key, Payload::from(data), PutMode::Overwrite).await }
    };

    // Whole objects of every size, from several buffers.
    for (i, size) in [0usize, 1, 4096, 1 << 20, big].into_iter().enumerate() {
        let data = Bytes::from(pseudo_random(size, i as u64 + 1));
        let parts: Vec<Bytes> = if size > 10 {
            vec![
                data.slice(..size / 3),
                data.slice(size / 3..size / 2),
                data.slice(size / 2..),
            ]
        } else {
            vec![data.clone()]
        };
        let key = format!("sizes/{size}");
        sink.put(&key, Payload::from(parts), PutMode::Overwrite)
            .await
            .unwrap_or_else(|e| panic!("{name}: put {size}: {e}"));
        let back = sink.get_bytes(&key).await.unwrap();
        assert!(back == data, "{name}: {size} bytes came back different");
        assert_eq!(sink.head(&key).await.unwrap().size, size as u64, "{name}");
    }

    // Ranges, clamped to the end.
    let data = Bytes::from(pseudo_random(100_000, 9));
    put("ranges/obj", data.clone()).await.unwrap();
    assert_eq!(
        sink.get_range("ranges/obj", 10..20).await.unwrap(),
        data.slice(10..20),
        "{name}"
    );
    assert_eq!(
        sink.get_range("ranges/obj", 99_990..200_000).await.unwrap(),
        data.slice(99_990..),
        "{name}: clamped"
    );
    assert!(
        sink.get_range("ranges/obj", 5..5).await.unwrap().is_empty(),
        "{name}: empty range"
    );

    // Overwrite, create-only.
    put("ranges/obj", Bytes::from_static(b"replaced"))
        .await
        .unwrap();
    assert_eq!(
        &sink.get_bytes("ranges/obj").await.unwrap()[..],
        b"replaced"
    );
    let e = sink
        .put(
            "ranges/obj",
            Payload::from(b"again".to_vec()),
            PutMode::Create,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{name}: {e}");
    sink.put(
        "ranges/new",
        Payload::from(b"first".to_vec()),
        PutMode::Create,
    )
    .await
    .unwrap();

    // Unicode names.
    put("names/ünïcödé ✓", Bytes::from_static(b"u"))
        .await
        .unwrap();
    assert_eq!(
        &sink.get_bytes("names/ünïcödé ✓").await.unwrap()[..],
        b"u",
        "{name}"
    );

    // Listing: a folder, a partial name, nothing; keys relative to the sink, sorted.
    put("list/ab/1", Bytes::from_static(b"1")).await.unwrap();
    put("list/ab/2", Bytes::from_static(b"22")).await.unwrap();
    put("list/ac", Bytes::from_static(b"333")).await.unwrap();
    let keys = |v: Vec<freezer_core::sink::ObjectMeta>| {
        v.into_iter().map(|m| (m.key, m.size)).collect::<Vec<_>>()
    };
    assert_eq!(
        keys(sink.list("list/").await.unwrap()),
        [
            ("list/ab/1".into(), 1),
            ("list/ab/2".into(), 2),
            ("list/ac".into(), 3)
        ],
        "{name}"
    );
    assert_eq!(
        keys(sink.list("list/ab").await.unwrap()).len(),
        2,
        "{name}: partial names match"
    );
    assert!(sink.list("nothing/").await.unwrap().is_empty(), "{name}");
    assert!(
        sink.list("names/")
            .await
            .unwrap()
            .iter()
            .any(|m| m.key == "names/ünïcödé ✓"),
        "{name}"
    );

    // Missing objects, deletes.
    assert!(
        matches!(
            sink.get_bytes("missing/x").await,
            Err(Error::NotFound { .. })
        ),
        "{name}"
    );
    assert!(
        matches!(sink.head("missing/x").await, Err(Error::NotFound { .. })),
        "{name}"
    );
    assert!(!sink.exists("missing/x").await.unwrap());
    sink.delete("list/ac").await.unwrap();
    sink.delete("list/ac").await.unwrap();
    assert!(
        matches!(sink.get_bytes("list/ac").await, Err(Error::NotFound { .. })),
        "{name}"
    );
    assert!(
        sink.put(
            "../escape",
            Payload::from(b"x".to_vec()),
            PutMode::Overwrite
        )
        .await
        .is_err(),
        "{name}: keys are checked"
    );

    // Streamed puts (one object of unknown size, upstream's tar backups): pieces of odd sizes
    // make the object, small or past multipart; a stream that fails stores nothing.
    let stream_of = |data: Bytes, fail: bool| {
        let mut pieces: Vec<freezer_core::Result<Bytes>> = Vec::new();
        let mut at = 0;
        let mut n = 1;
        while at < data.len() {
            let take = (n * 7919 % (3 << 20) + 1).min(data.len() - at);
            pieces.push(Ok(data.slice(at..at + take)));
            at += take;
            n += 1;
        }
        if fail {
            pieces.push(Err(Error::io(
                "a stream",
                std::io::Error::other("the writer failed"),
            )));
        }
        futures::StreamExt::boxed(futures::stream::iter(pieces))
    };
    for (key, len) in [
        ("stream/empty", 0),
        ("stream/small", 5000),
        ("stream/big", big),
    ] {
        let data = Bytes::from(pseudo_random(len, 91));
        let n = sink
            .put_stream(key, stream_of(data.clone(), false), PutMode::Create)
            .await
            .unwrap_or_else(|e| panic!("{name}: {key}: {e}"));
        assert_eq!(n, len as u64, "{name}: {key}");
        assert!(sink.get_bytes(key).await.unwrap() == data, "{name}: {key}");
    }
    let e = sink
        .put_stream(
            "stream/small",
            stream_of(Bytes::from_static(b"x"), false),
            PutMode::Create,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{name}: {e}");
    for len in [10, big] {
        let data = Bytes::from(pseudo_random(len, 92));
        assert!(
            sink.put_stream("stream/failed", stream_of(data, true), PutMode::Overwrite)
                .await
                .is_err(),
            "{name}"
        );
        // Nothing readable was stored (FTPS may answer a missing file with another error).
        let got = sink.get_bytes("stream/failed").await;
        assert!(got.is_err(), "{name}: a failed stream stored something");
    }
    for key in ["stream/empty", "stream/small", "stream/big"] {
        sink.delete(key).await.unwrap();
    }

    // Atomic visibility: a reader racing a writer sees nothing or everything.
    let data = Bytes::from(pseudo_random(big.min(24 << 20), 77));
    let writer = {
        let (sink, data) = (sink.clone(), data.clone());
        tokio::spawn(async move {
            sink.put("atomic/obj", Payload::from(data), PutMode::Overwrite)
                .await
        })
    };
    let mut seen_whole = false;
    for _ in 0..2000 {
        match sink.get_bytes("atomic/obj").await {
            Ok(b) => {
                assert!(
                    b == data,
                    "{name}: a reader saw {} of {} bytes",
                    b.len(),
                    data.len()
                );
                seen_whole = true;
                break;
            }
            Err(Error::NotFound { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("{name}: {e}"),
        }
        if writer.is_finished() {
            break;
        }
    }
    writer.await.unwrap().unwrap();
    if !seen_whole {
        assert!(sink.get_bytes("atomic/obj").await.unwrap() == data);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_sink() {
    check(Arc::new(MemorySink::new("conformance")), 3 << 20).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn local_sink() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = local(&tmp.path().join("repo"));
    check(sink, 12 << 20).await;
    // Nothing temporary is left behind.
    let leftovers: Vec<_> = walkdir(tmp.path())
        .into_iter()
        .filter(|p| p.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walkdir(p: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        out.push(e.path().display().to_string());
        if e.file_type().unwrap().is_dir() {
            out.extend(walkdir(&e.path()));
        }
    }
    out
}
