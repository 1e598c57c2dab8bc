//! Large objects: segments in `<container>_segments`, made visible at once by a Static Large
//! Object manifest; replacing or deleting a large object deletes its old segments.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::{
    Body, MAX_SEGMENTS, PARALLEL_SEGMENTS, Payload, Request, SwiftSink, header, transport,
};
use crate::error::{Error, Result};

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
        // Slices of the payload's buffers, `size` bytes each.
        let mut segments: Vec<Vec<Bytes>> = Vec::with_capacity(count);
        let mut current: Vec<Bytes> = Vec::new();
        let mut filled = 0;
        for part in payload.parts() {
            let mut b = part.clone();
            while !b.is_empty() {
                let take = (size - filled).min(b.len());
                current.push(b.split_to(take));
                filled += take;
                if filled == size {
                    segments.push(std::mem::take(&mut current));
                    filled = 0;
                }
            }
        }
        if filled > 0 {
            segments.push(current);
        }
        let id = upload_id();
        let names: Vec<String> = (0..segments.len())
            .map(|i| format!("{name}/{id}/{i:08}"))
            .collect();
        let sizes: Vec<usize> = segments
            .iter()
            .map(|s| s.iter().map(Bytes::len).sum())
            .collect();
        // Segments go up a few at a time; the first failure stops the rest, and the segments
        // already written are deleted.
        let written = std::sync::Mutex::new(Vec::with_capacity(names.len()));
        let uploaded = futures::stream::iter(segments.into_iter().enumerate().map(Ok))
            .try_for_each_concurrent(PARALLEL_SEGMENTS, |(i, parts)| {
                let (seg_container, names, written) = (&seg_container, &names, &written);
                async move {
                    let what = format!("{what} (segment {i})");
                    self.put_object(
                        seg_container,
                        &names[i],
                        Body::Parts(parts),
                        false,
                        &[],
                        &what,
                    )
                    .await?;
                    written
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{seg_container}/{}", names[i]));
                    Ok::<(), Error>(())
                }
            })
            .await;
        let written = written.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = uploaded {
            self.delete_segments(&written).await;
            return Err(e);
        }
        let manifest: Vec<serde_json::Value> = names
            .iter()
            .zip(&sizes)
            .map(|(n, s)| {
                serde_json::json!({
                    "path": format!("/{seg_container}/{n}"),
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
                Ok(())
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
