//! Storages: the minimal object contract every backend fulfils, and wrappers that are
//! themselves sinks.
//!
//! # The contract
//!
//! * Keys are relative, `/`-separated, without empty, `.` or `..` segments ([`check_key`]).
//! * [`Sink::put`] stores a whole object from a list of `Bytes`. Visibility is atomic: a reader
//!   sees either no object or the complete one, never a prefix, even if the writer is killed.
//!   When `put` returns `Ok`, the object is durable. [`PutMode::Create`] fails with
//!   `AlreadyExists` instead of replacing an existing object.
//! * [`Sink::get`] returns the whole object or a byte range of it; a missing object is
//!   [`crate::Error::NotFound`].
//! * [`Sink::list`] returns every complete object under a prefix, never a temporary one.
//!   [`Sink::list_temporaries`] returns the temporary ones that interrupted puts left behind
//!   (a sink whose puts leave none returns nothing), which [`Sink::delete`] removes.
//! * [`Sink::delete`] removes an object; deleting a missing object is not an error.
//! * [`Sink::prepare`] creates the bucket or container the sink lives in, when missing.
//!
//! A sink never interprets the bytes it stores; a sink never retries on its own (that is what a
//! `Retrying` wrapper is for) and never logs object contents.

mod ftp;
mod local;
mod memory;
mod retry;
mod s3;
mod ssh;
mod swift;
mod tee;
mod throttle;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::error::{Error, Result};

pub use ftp::{FtpOptions, FtpSink};
pub use local::LocalSink;
pub use memory::MemorySink;
pub use retry::{RetryPolicy, Retrying};
pub use s3::{S3Options, S3Sink};
pub use ssh::{SshOptions, SshSink};
pub use swift::{KeystoneAuth, SwiftAuth, SwiftOptions, SwiftSink};
pub use tee::{SinkMask, SinkStatus, Tee};
pub use throttle::{Throttled, parse_rate};

/// The body of a put: a list of buffers stored back to back. Cloning is cheap (reference
/// counts only), which is how a tee hands one pack to several sinks.
#[derive(Clone, Debug, Default)]
pub struct Payload(Arc<[Bytes]>);

impl Payload {
    /// The number of bytes in all parts.
    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    /// Whether the payload holds no byte.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Bytes::is_empty)
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.0
    }

    /// Copies the parts into one buffer (for sinks that need contiguous bytes).
    pub fn to_bytes(&self) -> Bytes {
        match &*self.0 {
            [] => Bytes::new(),
            [one] => one.clone(),
            parts => {
                let mut v = Vec::with_capacity(self.len());
                for p in parts {
                    v.extend_from_slice(p);
                }
                Bytes::from(v)
            }
        }
    }
}

impl From<Vec<Bytes>> for Payload {
    fn from(v: Vec<Bytes>) -> Self {
        Payload(v.into())
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Payload(Arc::new([b]))
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload::from(Bytes::from(v))
    }
}

/// Whether a put may replace an existing object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Replace any existing object (content-addressed objects: same key, same bytes).
    Overwrite,
    /// Fail with `AlreadyExists` if the object exists.
    Create,
}

/// One stored object, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A temporary object that a put left behind when it was cut off (a `.tmp-*` file of a
/// process killed while writing), as listed by [`Sink::list_temporaries`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Temporary {
    /// Its key, for [`Sink::delete`]: `data/ab/.tmp-0123abcd`.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, by the storage's clock.
    pub modified: jiff::Timestamp,
}

/// A stream of buffers.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// What a get returns: the bytes at once, or a stream for large objects.
pub enum GetBody {
    /// The whole answer in one buffer.
    Bytes(Bytes),
    /// The answer as a stream of buffers.
    Stream(ByteStream),
}

impl fmt::Debug for GetBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetBody::Bytes(b) => write!(f, "GetBody::Bytes({} bytes)", b.len()),
            GetBody::Stream(_) => f.write_str("GetBody::Stream"),
        }
    }
}

impl GetBody {
    /// Collects the body into one buffer.
    pub async fn bytes(self) -> Result<Bytes> {
        match self {
            GetBody::Bytes(b) => Ok(b),
            GetBody::Stream(mut s) => {
                let mut v = Vec::new();
                while let Some(part) = s.next().await {
                    v.extend_from_slice(&part?);
                }
                Ok(Bytes::from(v))
            }
        }
    }

    /// The body as a stream.
    pub fn into_stream(self) -> ByteStream {
        match self {
            GetBody::Bytes(b) => futures::stream::once(async move { Ok(b) }).boxed(),
            GetBody::Stream(s) => s,
        }
    }
}

/// A storage. See the module documentation for the contract.
#[async_trait]
pub trait Sink: Send + Sync + fmt::Debug + 'static {
    /// A short description for messages, without secrets: `local:/backups/repo`.
    fn describe(&self) -> String;

    /// Stores a whole object atomically and durably.
    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<()>;

    /// Reads a whole object, or the bytes of `range` (clamped to its end).
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetBody>;

    /// Stores an object whose bytes arrive as a stream, as atomically and durably as
    /// [`Sink::put`], and returns its size. For objects of unknown and unbounded size
    /// (upstream's `tar` backups are one object each). A sink that can write as the bytes come
    /// does (a local folder); the default gathers the stream and puts it whole, so that the
    /// object is held in memory: docs/COMPAT.md names the storages that do so. A stream that
    /// fails stores nothing. Not retried: a stream cannot be read twice.
    async fn put_stream(&self, key: &str, mut body: ByteStream, mode: PutMode) -> Result<u64> {
        let mut parts = Vec::new();
        while let Some(piece) = body.next().await {
            parts.push(piece?);
        }
        let payload = Payload::from(parts);
        let len = payload.len() as u64;
        self.put(key, payload, mode).await?;
        Ok(len)
    }

    /// Lists every object whose key starts with `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Removes an object; a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Size of an object, or `NotFound`.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// Lists the temporary objects under `prefix` that puts cut off left behind. A put in
    /// progress has one too: callers judge by [`Temporary::modified`]. Sinks whose puts are
    /// atomic without temporaries (object stores) have none, which is the default.
    async fn list_temporaries(&self, prefix: &str) -> Result<Vec<Temporary>> {
        let _ = prefix;
        Ok(vec![])
    }

    /// Creates what must exist before the first object (a bucket, a container), if missing.
    /// `freezer init` calls it; most sinks need nothing.
    async fn prepare(&self) -> Result<()> {
        Ok(())
    }
}

/// Conveniences on every sink.
#[async_trait]
pub trait SinkExt: Sink {
    /// Reads a whole object into one buffer.
    async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        self.get(key, None).await?.bytes().await
    }

    /// Reads a byte range into one buffer.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.get(key, Some(range)).await?.bytes().await
    }

    /// Whether an object exists.
    async fn exists(&self, key: &str) -> Result<bool> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl<T: Sink + ?Sized> SinkExt for T {}

#[async_trait]
impl<T: Sink + ?Sized> Sink for Arc<T> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<()> {
        (**self).put(key, payload, mode).await
    }
    async fn put_stream(&self, key: &str, body: ByteStream, mode: PutMode) -> Result<u64> {
        (**self).put_stream(key, body, mode).await
    }
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetBody> {
        (**self).get(key, range).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        (**self).list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        (**self).head(key).await
    }
    async fn list_temporaries(&self, prefix: &str) -> Result<Vec<Temporary>> {
        (**self).list_temporaries(prefix).await
    }
    async fn prepare(&self) -> Result<()> {
        (**self).prepare().await
    }
}

/// Checks that `key` is a valid object key (see the module documentation).
pub fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\0')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(Error::bad_input(
            "object key",
            format!("{key:?} is not a valid key"),
        ));
    }
    Ok(())
}

/// Clamps `range` to an object of `size` bytes.
pub(crate) fn clamp(range: Option<Range<u64>>, size: u64) -> Range<u64> {
    match range {
        None => 0..size,
        Some(r) => r.start.min(size)..r.end.min(size).max(r.start.min(size)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for good in ["config", "data/ab/abcdef", "snapshots/ü"] {
            check_key(good).unwrap();
        }
        for bad in ["", "/abs", "a//b", "a/../b", "..", "./x", "a/\0"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn payload_clones_share_buffers() {
        let p = Payload::from(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")]);
        let q = p.clone();
        assert_eq!(p.parts()[0].as_ptr(), q.parts()[0].as_ptr());
        assert_eq!(p.len(), 4);
        assert_eq!(&p.to_bytes()[..], b"abcd");
    }
}
