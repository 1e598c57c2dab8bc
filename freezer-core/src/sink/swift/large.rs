//! Large objects: segments in `<container>_segments`, made visible at once by a Static Large
//! Object manifest; replacing or deleting a large object deletes its old segments.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::{
    Body, MAX_SEGMENTS, PARALLEL_SEGMENTS, Payload, Request, SwiftSink, header, transport,
};
use crate::error::{Error, Result};
use crate::sink::ByteStream;

#[derive(Deserialize)]
struct ManifestEntry {
    name: String,
}

/// A random id for one large upload, so that a new upload never overwrites the segments a
/// reader of the old manifest may be reading.
fn upload_id() -> String {
    let mut r = [0u8; 6];
    getrandom::fill(&mut r).expect("the operating system's random number generator failed");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.{:06}-{}",
        now.as_secs(),
        now.subsec_micros(),
        hex::encode(r)
    )
}

impl SwiftSink {
    /// The segments of the large object `name`, if it is one (`container/object` paths).
    async fn segments_of(&self, name: &str, what: &str) -> Result<Vec<String>> {
        let container = self.opts.container.as_str();
        let resp = self
            .send(&Request::new(Method::HEAD, container, Some(name)), what)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !resp.status().is_success() {
            return Err(self.status_error(resp.status(), "", what));
        }
        if !header(resp.headers(), "x-static-large-object")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Ok(Vec::new());
        }
        let mut req = Request::new(Method::GET, container, Some(name));
        req.query = &[("multipart-manifest", "get")];
        let resp = self.send(&req, what).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !resp.status().is_success() {
            let s = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(self.status_error(s, &body, what));
        }
        let text = resp.bytes().await.map_err(|e| transport(what, e))?;
        let entries: Vec<ManifestEntry> = serde_json::from_slice(&text)
            .map_err(|e| Error::corrupt(format!("{what} (manifest)"), e))?;
        Ok(entries
            .into_iter()
            .map(|e| e.name.trim_start_matches('/').to_string())
            .collect())
    }

    /// Deletes segments (`container/object` paths), best effort.
    async fn delete_segments(&self, paths: &[String]) {
        let what = "swift segments";
        futures::stream::iter(paths.iter())
            .for_each_concurrent(PARALLEL_SEGMENTS, |p| async move {
                let Some((c, o)) = p.split_once('/') else {
                    return;
                };
                let res = self
                    .send(&Request::new(Method::DELETE, c, Some(o)), what)
                    .await;
                match res {
                    Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {}
                    Ok(r) => tracing::warn!(segment = %p, status = %r.status(), "could not delete a segment"),
                    Err(e) => tracing::warn!(segment = %p, error = %e, "could not delete a segment"),
                }
            })
            .await;
    }

    /// A payload above the segment size: segments, then the manifest.
    pub(super) async fn put_large(
        &self,
        name: &str,
        payload: Payload,
        create: bool,
        what: &str,
    ) -> Result<()> {
        let size = self.opts.segment_size;
        let count = payload.len().div_ceil(size);
        if count > MAX_SEGMENTS {
            return Err(Error::unsupported(format!(
                "{what}: {} bytes in segments of {size} bytes make more than Swift's {MAX_SEGMENTS} segments (raise the segment size)",
                payload.len()
            )));
        }
        let parts = payload.parts().to_vec();
        self.put_segments(
            name,
            futures::stream::iter(parts.into_iter().map(Ok)).boxed(),
            create,
            what,
        )
        .await
        .map(|_| ())
    }

    /// Uploads `body` as segments of the segment size while it is read (at most
    /// [`PARALLEL_SEGMENTS`] uploads in flight, so a stream holds a few segments, never the
    /// whole object), then makes them visible at once with the manifest. Returns the size.
    /// On any failure, the body's included, the segments written are deleted.
    pub(super) async fn put_segments(
        &self,
        name: &str,
        mut body: ByteStream,
        create: bool,
        what: &str,
    ) -> Result<u64> {
        let size = self.opts.segment_size;
        if create {
            let resp = self
                .send(
                    &Request::new(Method::HEAD, &self.opts.container, Some(name)),
                    what,
                )
                .await?;
            if resp.status().is_success() {
                return Err(Error::AlreadyExists {
                    what: what.to_string(),
                });
            }
        }
        let seg_container = self.segments_container();
        if !self.segments_ready.load(Ordering::Relaxed) {
            self.put_container(&seg_container).await?;
            self.segments_ready.store(true, Ordering::Relaxed);
        }
        let old = if create {
            Vec::new()
        } else {
            self.segments_of(name, what).await?
        };
        let id = upload_id();
        let seg_name = |i: usize| format!("{name}/{id}/{i:08}");
        // The size of each segment launched, by index; the paths of those stored.
        let mut sizes: Vec<usize> = Vec::new();
        let mut written: Vec<String> = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        let mut total = 0u64;
        let upload = |i: usize, parts: Vec<Bytes>| {
            let (seg_container, path) = (&seg_container, seg_name(i));
            async move {
                let what = format!("{what} (segment {i})");
                self.put_object(seg_container, &path, Body::Parts(parts), false, &[], &what)
                    .await
                    .map(|()| format!("{seg_container}/{path}"))
            }
        };
        let uploaded: Result<()> = async {
            // Slices of the body's buffers, `size` bytes each: no copy.
            let mut current: Vec<Bytes> = Vec::new();
            let mut filled = 0;
            let mut ended = false;
            while !(ended && in_flight.is_empty()) {
                tokio::select! {
                    biased;
                    Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                        written.push(done?);
                    }
                    piece = body.next(), if !ended && in_flight.len() < PARALLEL_SEGMENTS => {
                        let mut full = Vec::new();
                        match piece {
                            None => {
                                ended = true;
                                if filled > 0 {
                                    full.push(std::mem::take(&mut current));
                                }
                            }
                            Some(piece) => {
                                let mut b = piece?;
                                total += b.len() as u64;
                                while !b.is_empty() {
                                    let take = (size - filled).min(b.len());
                                    current.push(b.split_to(take));
                                    filled += take;
                                    if filled == size {
                                        full.push(std::mem::take(&mut current));
                                        filled = 0;
                                    }
                                }
                            }
                        }
                        for parts in full {
                            let i = sizes.len();
                            if i == MAX_SEGMENTS {
                                return Err(Error::unsupported(format!(
                                    "{what}: more than {} bytes in segments of {size} bytes make more than Swift's {MAX_SEGMENTS} segments (raise the segment size)",
                                    MAX_SEGMENTS * size
                                )));
                            }
                            sizes.push(parts.iter().map(Bytes::len).sum());
                            in_flight.push(upload(i, parts));
                        }
                    }
                    else => break,
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = uploaded {
            // The uploads still running finish first, so that none lands after the clean-up.
            while let Some(done) = in_flight.next().await {
                if let Ok(path) = done {
                    written.push(path);
                }
            }
            self.delete_segments(&written).await;
            return Err(e);
        }
        let manifest: Vec<serde_json::Value> = sizes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::json!({
                    "path": format!("/{seg_container}/{}", seg_name(i)),
                    "size_bytes": s,
                    "etag": null,
                })
            })
            .collect();
        let body = serde_json::to_vec(&manifest).map_err(|e| Error::bad_input("manifest", e))?;
        let res = self
            .put_object(
                &self.opts.container,
                name,
                Body::Parts(vec![Bytes::from(body)]),
                create,
                &[("multipart-manifest", "put")],
                what,
            )
            .await;
        match res {
            Ok(()) => {
                self.delete_segments(&old).await;
                Ok(total)
            }
            Err(e) => {
                // The manifest may have been stored even though its answer was lost: only
                // clean up when it certainly was not.
                if !e.is_transient() {
                    self.delete_segments(&written).await;
                }
                Err(e)
            }
        }
    }
}
