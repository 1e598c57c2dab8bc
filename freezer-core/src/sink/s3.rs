//! `s3`: a bucket (and prefix) of Amazon S3 or an S3-compatible store (Ceph RGW, MinIO,
//! Swift's s3api), through object_store.
//!
//! Objects up to [`S3Sink::MULTIPART_FROM`] go in one PUT, which S3 makes visible atomically;
//! larger ones are uploaded in parts of [`S3Sink::PART_SIZE`] built from slices of the payload
//! (no copy) and become visible when the upload completes. Reads are ranged GETs. object_store's own retries
//! are turned off: wrap the sink in [`Retrying`](super::Retrying) for one retry policy across
//! every storage. Secrets never appear in `describe`, `Debug` or error messages.

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::path::Path as StorePath;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};

use super::{ByteStream, GetBody, ObjectMeta, Payload, PutMode, Sink, check_key, clamp};
use crate::error::{Error, Result};

/// Payloads above this size are uploaded in parts.
const MULTIPART_FROM: usize = 64 * 1024 * 1024;
/// The size of each part of a multipart upload (S3 needs at least 5 MiB but for the last).
const PART_SIZE: usize = 16 * 1024 * 1024;

/// Where an S3 repository is and how to reach it.
#[derive(Clone, Default)]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// A prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// The endpoint URL (`http://127.0.0.1:9000`); AWS when absent.
    pub endpoint: Option<String>,
    /// The region; `us-east-1` when absent.
    pub region: Option<String>,
    /// Access key id (upstream's `access_key`).
    pub access_key: Option<String>,
    /// Secret access key (upstream's `secret_key`).
    pub secret_key: Option<String>,
    /// Session token, for temporary credentials.
    pub session_token: Option<String>,
    /// Virtual-hosted addressing (`bucket.host`); path-style (`host/bucket`) otherwise, which
    /// Ceph RGW, MinIO and Swift's s3api expect.
    pub virtual_hosted: bool,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key.as_ref().map(|_| "<set>"))
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// A repository in an S3 bucket.
pub struct S3Sink {
    store: AmazonS3,
    opts: S3Options,
    root: String,
}

impl fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Sink({})", self.describe())
    }
}

impl S3Sink {
    /// Payloads above this size are uploaded in parts.
    pub const MULTIPART_FROM: usize = MULTIPART_FROM;
    /// The size of the parts of a multipart upload.
    pub const PART_SIZE: usize = PART_SIZE;

    /// Connects (lazily: nothing is sent until the first request).
    pub fn new(opts: S3Options) -> Result<Self> {
        if opts.bucket.is_empty() {
            return Err(Error::bad_input(
                "container",
                "an s3 storage needs a bucket",
            ));
        }
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&opts.bucket)
            .with_region(opts.region.as_deref().unwrap_or("us-east-1"))
            .with_virtual_hosted_style_request(opts.virtual_hosted)
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
        if let Some(e) = &opts.endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        match (&opts.access_key, &opts.secret_key) {
            (Some(k), Some(s)) => {
                b = b.with_access_key_id(k).with_secret_access_key(s);
                if let Some(t) = &opts.session_token {
                    b = b.with_token(t);
                }
            }
            (None, None) => {}
            _ => {
                return Err(Error::bad_input(
                    "access_key",
                    "give both access_key and secret_key, or neither",
                ));
            }
        }
        let store = b.build().map_err(|e| Error::bad_input("s3", e))?;
        let root = opts.prefix.trim_matches('/').to_string();
        Ok(S3Sink { store, opts, root })
    }

    fn path(&self, key: &str) -> Result<StorePath> {
        check_key(key)?;
        let full = if self.root.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.root)
        };
        StorePath::parse(&full).map_err(|e| Error::bad_input("object key", format!("{key:?}: {e}")))
    }

    fn what(&self, key: &str) -> String {
        format!("{}/{key}", self.describe())
    }

    /// `AlreadyExists` when `path` exists: creating where the server has no conditional put.
    async fn refuse_existing(&self, path: &StorePath, what: &str) -> Result<()> {
        match self.store.head(path).await {
            Ok(_) => Err(Error::AlreadyExists {
                what: what.to_string(),
            }),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e, what)),
        }
    }

    /// Creates the bucket when it does not exist (`freezer init`).
    async fn create_bucket(&self) -> Result<()> {
        let what = format!("bucket {}", self.opts.bucket);
        // A listing tells whether the bucket is there and the credentials work.
        match self.store.list_with_delimiter(None).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                let e = map_err(e, &what);
                if !matches!(e, Error::NotFound { .. }) {
                    return Err(e);
                }
            }
        }
        let region = self.opts.region.as_deref().unwrap_or("us-east-1");
        let endpoint = self
            .opts
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let url = if self.opts.virtual_hosted {
            let u = reqwest::Url::parse(&endpoint).map_err(|e| Error::bad_input("endpoint", e))?;
            format!(
                "{}://{}.{}/",
                u.scheme(),
                self.opts.bucket,
                u.host_str().unwrap_or_default()
            )
        } else {
            format!("{}/{}", endpoint.trim_end_matches('/'), self.opts.bucket)
        };
        let body = if region == "us-east-1" {
            Bytes::new()
        } else {
            Bytes::from(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
            ))
        };
        let mut req: object_store::client::HttpRequest = http::Request::builder()
            .method("PUT")
            .uri(&url)
            .body(body.clone().into())
            .map_err(|e| Error::bad_input("endpoint", e))?;
        if let (Some(k), Some(s)) = (&self.opts.access_key, &self.opts.secret_key) {
            let cred = AwsCredential {
                key_id: k.clone(),
                secret_key: s.clone(),
                token: self.opts.session_token.clone(),
            };
            AwsAuthorizer::new(&cred, "s3", region)
                .try_authorize(&mut req, None)
                .map_err(|e| Error::bad_input("s3", e))?;
        }
        let mut out = reqwest::Client::new().put(&url).body(body);
        for (k, v) in req.headers() {
            out = out.header(k, v);
        }
        let resp = out.send().await.map_err(|e| http_error(&what, e))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match status.as_u16() {
            200..=299 => Ok(()),
            409 if text.contains("BucketAlreadyOwnedByYou") => Ok(()),
            403 => Err(Error::Permission {
                what,
                source: std::io::Error::other(s3_message(&text)),
            }),
            s if s >= 500 => Err(Error::Transient {
                what,
                source: std::io::Error::other(format!("HTTP {s}: {}", s3_message(&text))),
            }),
            s => Err(Error::io(
                what,
                std::io::Error::other(format!("HTTP {s}: {}", s3_message(&text))),
            )),
        }
    }
}

/// The `<Code>` and `<Message>` of an S3 error document.
fn s3_message(xml: &str) -> String {
    let tag = |t: &str| {
        let (open, close) = (format!("<{t}>"), format!("</{t}>"));
        xml.find(&open).and_then(|i| {
            xml[i + open.len()..]
                .find(&close)
                .map(|j| xml[i + open.len()..i + open.len() + j].to_string())
        })
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => xml.chars().take(200).collect(),
    }
}

fn http_error(what: &str, e: reqwest::Error) -> Error {
    let source = std::io::Error::other(e.without_url().to_string());
    Error::Transient {
        what: what.to_string(),
        source,
    }
}

/// Sorts object_store's errors by what the caller can do about them.
/// Whether a conditional put failed because the server does not implement `If-None-Match`
/// (status 501, or a 400 naming the header), not because the object exists or the request
/// failed: only the status and the error code count, never text that may hold a port, a
/// duration or a request id.
fn conditional_put_unsupported(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    match e {
        E::NotImplemented { .. } | E::NotSupported { .. } => true,
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotFound { .. } => false,
        other => {
            let text = other.to_string();
            let lower = text.to_ascii_lowercase();
            lower.contains("status code: 501")
                || (lower.contains("status code: 400")
                    && (text.contains("<Code>NotImplemented</Code>")
                        || lower.contains("if-none-match")))
        }
    }
}

fn map_err(e: object_store::Error, what: &str) -> Error {
    use object_store::Error as E;
    let what = what.to_string();
    match e {
        E::NotFound { .. } => Error::NotFound { what },
        E::AlreadyExists { .. } | E::Precondition { .. } => Error::AlreadyExists { what },
        E::PermissionDenied { source, .. } | E::Unauthenticated { source, .. } => {
            Error::Permission {
                what: format!("{what} (check access_key and secret_key)"),
                source: std::io::Error::other(source.to_string()),
            }
        }
        E::NotSupported { source } => Error::Unsupported {
            what: format!("{what}: {source}"),
        },
        E::NotImplemented {
            operation,
            implementer,
        } => Error::Unsupported {
            what: format!("{what}: {operation} by {implementer}"),
        },
        other => {
            let text = other.to_string();
            let source = std::io::Error::other(text.clone());
            let lower = text.to_ascii_lowercase();
            if lower.contains("signaturedoesnotmatch")
                || lower.contains("invalidaccesskeyid")
                || lower.contains("accessdenied")
                || lower.contains("403 forbidden")
            {
                Error::Permission {
                    what: format!("{what} (check access_key and secret_key)"),
                    source,
                }
            } else if lower.contains("nosuchbucket") {
                Error::NotFound {
                    what: format!("{what}: the bucket does not exist (init creates it)"),
                }
            } else if lower.contains("connect")
                || lower.contains("timed out")
                || lower.contains("timeout")
                || lower.contains("connection")
                || lower.contains("error sending request")
                || lower.contains("server error")
                || lower.contains("status code: 5")
            {
                Error::Transient { what, source }
            } else {
                Error::Io { what, source }
            }
        }
    }
}

#[async_trait]
impl Sink for S3Sink {
    fn describe(&self) -> String {
        let endpoint = self
            .opts
            .endpoint
            .as_deref()
            .map(|e| format!(" at {e}"))
            .unwrap_or_default();
        if self.root.is_empty() {
            format!("s3://{}{endpoint}", self.opts.bucket)
        } else {
            format!("s3://{}/{}{endpoint}", self.opts.bucket, self.root)
        }
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<()> {
        let path = self.path(key)?;
        let what = self.what(key);
        if payload.len() <= MULTIPART_FROM {
            let body: PutPayload = payload.parts().iter().cloned().collect();
            if mode == PutMode::Create {
                // `If-None-Match: *` (AWS, Ceph RGW, MinIO): of two writers, one loses (`init`s
                // racing, nodes creating their repository at once). Swift's s3api answers 501:
                // there, looking first is all there is.
                let opts = PutOptions {
                    mode: object_store::PutMode::Create,
                    ..Default::default()
                };
                match self.store.put_opts(&path, body.clone(), opts).await {
                    Ok(_) => return Ok(()),
                    Err(e) if !conditional_put_unsupported(&e) => return Err(map_err(e, &what)),
                    Err(e) => {
                        tracing::debug!("{what}: no conditional put ({e})");
                        self.refuse_existing(&path, &what).await?;
                    }
                }
            }
            self.store
                .put_opts(&path, body, PutOptions::default())
                .await
                .map_err(|e| map_err(e, &what))?;
            return Ok(());
        }
        if mode == PutMode::Create {
            self.refuse_existing(&path, &what).await?;
        }
        let mut upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| map_err(e, &what))?;
        let res: Result<()> = async {
            let mut part: Vec<Bytes> = Vec::new();
            let mut size = 0;
            for b in payload.parts() {
                let mut b = b.clone();
                while !b.is_empty() {
                    let take = (PART_SIZE - size).min(b.len());
                    part.push(b.split_to(take));
                    size += take;
                    if size == PART_SIZE {
                        let body: PutPayload = std::mem::take(&mut part).into_iter().collect();
                        upload.put_part(body).await.map_err(|e| map_err(e, &what))?;
                        size = 0;
                    }
                }
            }
            if size > 0 {
                upload
                    .put_part(part.into_iter().collect())
                    .await
                    .map_err(|e| map_err(e, &what))?;
            }
            upload.complete().await.map_err(|e| map_err(e, &what))?;
            Ok(())
        }
        .await;
        if res.is_err() {
            let _ = upload.abort().await;
        }
        res
    }

    /// A multipart upload, one part as soon as a part's bytes have come: at most one part is
    /// held. A stream that ends before the first part is full is put whole.
    async fn put_stream(&self, key: &str, mut body: ByteStream, mode: PutMode) -> Result<u64> {
        let path = self.path(key)?;
        let what = self.what(key);
        let mut part: Vec<Bytes> = Vec::new();
        let (mut size, mut total) = (0usize, 0u64);
        // Gather the first part: a small object needs no multipart upload.
        while size < PART_SIZE {
            match body.next().await {
                Some(piece) => {
                    let piece = piece?;
                    size += piece.len();
                    total += piece.len() as u64;
                    part.push(piece);
                }
                None => {
                    self.put(key, Payload::from(part), mode).await?;
                    return Ok(total);
                }
            }
        }
        if mode == PutMode::Create {
            self.refuse_existing(&path, &what).await?;
        }
        let mut upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| map_err(e, &what))?;
        let res: Result<()> = async {
            loop {
                while size >= PART_SIZE {
                    // Cut exactly PART_SIZE bytes off the front.
                    let mut cut = Vec::new();
                    let mut want = PART_SIZE;
                    while want > 0 {
                        let first = &mut part[0];
                        if first.len() <= want {
                            want -= first.len();
                            cut.push(part.remove(0));
                        } else {
                            cut.push(first.split_to(want));
                            want = 0;
                        }
                    }
                    size -= PART_SIZE;
                    let body: PutPayload = cut.into_iter().collect();
                    upload.put_part(body).await.map_err(|e| map_err(e, &what))?;
                }
                match body.next().await {
                    Some(piece) => {
                        let piece = piece?;
                        size += piece.len();
                        total += piece.len() as u64;
                        part.push(piece);
                    }
                    None => break,
                }
            }
            if size > 0 {
                let body: PutPayload = std::mem::take(&mut part).into_iter().collect();
                upload.put_part(body).await.map_err(|e| map_err(e, &what))?;
            }
            upload.complete().await.map_err(|e| map_err(e, &what))?;
            Ok(())
        }
        .await;
        if let Err(e) = res {
            let _ = upload.abort().await;
            return Err(e);
        }
        Ok(total)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetBody> {
        let path = self.path(key)?;
        let what = self.what(key);
        if let Some(r) = &range
            && r.start >= r.end
        {
            // An empty range: S3 would refuse it; the answer is known.
            self.head(key).await?;
            return Ok(GetBody::Bytes(Bytes::new()));
        }
        let opts = GetOptions::new().with_range(range.clone());
        let res = match self.store.get_opts(&path, opts).await {
            Ok(r) => r,
            // A range past the end of the object is clamped, as the contract says.
            Err(e)
                if range.is_some()
                    && (e.to_string().contains("InvalidRange")
                        || e.to_string().contains("416")) =>
            {
                let size = self.head(key).await?.size;
                let r = clamp(range, size);
                if r.start >= r.end {
                    return Ok(GetBody::Bytes(Bytes::new()));
                }
                self.store
                    .get_opts(&path, GetOptions::new().with_range(Some(r)))
                    .await
                    .map_err(|e| map_err(e, &what))?
            }
            Err(e) => return Err(map_err(e, &what)),
        };
        let stream = res
            .into_stream()
            .map_err(move |e| map_err(e, &what))
            .boxed();
        Ok(GetBody::Stream(stream))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // object_store lists by whole path segments: list the folder the prefix names, filter.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let full = match (self.root.is_empty(), dir.is_empty()) {
            (true, true) => None,
            (true, false) => Some(dir.to_string()),
            (false, true) => Some(self.root.clone()),
            (false, false) => Some(format!("{}/{dir}", self.root)),
        };
        let base = full
            .as_deref()
            .map(StorePath::parse)
            .transpose()
            .map_err(|e| Error::bad_input("prefix", e))?;
        let what = self.what(prefix);
        let strip = if self.root.is_empty() {
            0
        } else {
            self.root.len() + 1
        };
        let mut out: Vec<ObjectMeta> = self
            .store
            .list(base.as_ref())
            .map_err(|e| map_err(e, &what))
            .try_filter_map(|m| {
                let key = m
                    .location
                    .as_ref()
                    .get(strip..)
                    .unwrap_or_default()
                    .to_string();
                std::future::ready(Ok(key
                    .starts_with(prefix)
                    .then_some(ObjectMeta { key, size: m.size })))
            })
            .try_collect()
            .await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e, &self.what(key))),
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.path(key)?;
        let m = self
            .store
            .head(&path)
            .await
            .map_err(|e| map_err(e, &self.what(key)))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: m.size,
        })
    }

    async fn prepare(&self) -> Result<()> {
        self.create_bucket().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.into(),
        }
    }

    #[test]
    fn only_a_501_or_a_400_naming_the_header_means_no_conditional_put() {
        let unsupported = |t: &str| conditional_put_unsupported(&generic(t));
        assert!(unsupported(
            "Error performing PUT http://127.0.0.1:8080/b/config in 3ms - Server returned non-2xx status code: 501 Not Implemented: <Error><Code>NotImplemented</Code><Message>Conditional object PUTs are not supported.</Message></Error>"
        ));
        assert!(unsupported(
            "Server returned non-2xx status code: 400 Bad Request: <Error><Code>InvalidArgument</Code><ArgumentName>If-None-Match</ArgumentName></Error>"
        ));
        // "501" in a port, a duration or a request id is no answer about the header.
        for t in [
            "Error performing PUT http://127.0.0.1:45011/b/config in 12.501ms - Server returned non-2xx status code: 503 Service Unavailable: SlowDown",
            "Error performing PUT http://127.0.0.1:9000/b/config in 30s - HTTP error: request or response body error: operation timed out, request id 501ab",
            "Server returned non-2xx status code: 400 Bad Request: <Error><Code>InvalidBucketName</Code></Error>",
        ] {
            assert!(!unsupported(t), "{t}");
        }
    }

    #[test]
    fn status_codes_are_read_from_the_status_not_from_ports() {
        // A port that holds "403" or "50" must not make a missing bucket a permission
        // problem or a transient one.
        let e = map_err(
            generic(
                "Error performing GET http://127.0.0.1:40357/b?list-type=2 in 50.1ms - Server returned non-2xx status code: 404 Not Found: <Error><Code>NoSuchBucket</Code></Error>",
            ),
            "bucket b",
        );
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        let e = map_err(
            generic("Server returned non-2xx status code: 403 Forbidden: AccessDenied"),
            "x",
        );
        assert!(matches!(e, Error::Permission { .. }), "{e}");
        let e = map_err(
            generic("Server returned non-2xx status code: 503 Service Unavailable: SlowDown"),
            "x",
        );
        assert!(e.is_transient(), "{e}");
    }
}
