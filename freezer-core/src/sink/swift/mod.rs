//! `swift`: a container (and prefix) of OpenStack Swift, through its v1 object API (reqwest).
//!
//! * **Authentication**: Keystone v3 password (or token) authentication, with the
//!   `object-store` endpoint taken from the catalog by region and interface; or Swift's
//!   TempAuth v1 (`GET /auth/v1.0`, python-swiftclient's `ST_AUTH`/`ST_USER`/`ST_KEY`); or a
//!   token and storage URL given outright. A storage URL given in the options replaces the one
//!   the catalog names. The token is obtained on first use, shared by every concurrent call
//!   (one authentication at a time), and obtained again once when a request answers 401
//!   (an expired or revoked token); a second 401 is a [`Permission`](crate::Error::Permission)
//!   error naming the variables to check.
//! * **Atomic visibility**: a Swift PUT is atomic. A payload larger than
//!   [`SwiftOptions::segment_size`] is uploaded as segments (slices of the payload's buffers,
//!   no copy) into the container `<container>_segments`, named
//!   `<prefix>/<key>/<upload id>/<00000000>` (as python-swiftclient does, in its own layout), and then becomes
//!   visible at once as a Static Large Object manifest (`?multipart-manifest=put`). Readers see
//!   nothing until the manifest exists; `head` and `list` report the whole size; `delete`
//!   removes the manifest and its segments (`?multipart-manifest=delete`). Replacing a large
//!   object deletes the old one's segments after the new manifest is in place. An interrupted
//!   large upload deletes the segments it wrote when it still can; segments it could not
//!   delete stay in `<container>_segments`, never visible as objects of the sink. A streamed
//!   put (`put_stream`) uploads its segments while it reads the stream: a few segments are in
//!   memory at once, whatever the object's size.
//! * **Create-only puts** send `If-None-Match: *`, which Swift answers with 412 when the
//!   object exists.
//! * **Errors** are sorted by what the caller does: 404 is `NotFound`; 412 `AlreadyExists`;
//!   401/403 `Permission`, naming what to check; 5xx, 408, 429, refused or dropped
//!   connections and timeouts are `Transient` (wrap the sink in
//!   [`Retrying`](super::Retrying)); 507 `NoSpace`.
//! * **Secrets** (TempAuth key, Keystone password, tokens) never appear in `describe`,
//!   `Debug`, error messages or logs.
//!
//! Container listings are eventually consistent in a Swift cluster under load: an object put
//! a moment ago may be missing from a listing for a while, never from a `get` or `head`.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, HeaderMap};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use super::{ByteStream, GetBody, ObjectMeta, Payload, PutMode, Sink, check_key, clamp};
use crate::error::{Error, Result};

mod auth;
mod large;

use auth::{Authenticator, Session};
pub use auth::{KeystoneAuth, SwiftAuth};

/// The default size above which objects are uploaded as segments (and the size of each).
const SEGMENT_SIZE: usize = 64 * 1024 * 1024;
/// Swift's default `max_manifest_segments`.
const MAX_SEGMENTS: usize = 1000;
/// Gets up to this size are read into one buffer; larger ones are streamed.
const STREAM_FROM: u64 = 4 * 1024 * 1024;
/// Segments uploaded at once.
const PARALLEL_SEGMENTS: usize = 3;

/// Where a Swift repository is and how to reach it.
#[derive(Clone, Debug)]
pub struct SwiftOptions {
    /// The container (upstream's `container`, before the first `/`).
    pub container: String,
    /// A prefix inside the container, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// How to authenticate.
    pub auth: SwiftAuth,
    /// `OS_STORAGE_URL`: the account's URL (`http://proxy:8080/v1/AUTH_project`), replacing
    /// the one authentication returns.
    pub storage_url: Option<String>,
    /// Objects larger than this are uploaded as segments of this size (default 64 MiB; Swift
    /// needs at least 1 MiB, its `min_segment_size`).
    pub segment_size: usize,
}

impl SwiftOptions {
    /// The default [`SwiftOptions::segment_size`].
    pub const DEFAULT_SEGMENT_SIZE: usize = SEGMENT_SIZE;

    /// Options for `container` (which may hold `container/prefix`), with the default segment
    /// size and no storage URL override.
    pub fn new(container: &str, auth: SwiftAuth) -> Self {
        let container = container.trim_matches('/');
        let (container, prefix) = container.split_once('/').unwrap_or((container, ""));
        SwiftOptions {
            container: container.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            auth,
            storage_url: None,
            segment_size: SEGMENT_SIZE,
        }
    }
}

/// A repository in a Swift container.
pub struct SwiftSink {
    opts: SwiftOptions,
    client: reqwest::Client,
    auth: Authenticator,
    segments_ready: AtomicBool,
}

impl fmt::Debug for SwiftSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SwiftSink({})", self.describe())
    }
}

/// What a request sends.
enum Body {
    Empty,
    Parts(Vec<Bytes>),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::Parts(p) => p.iter().map(Bytes::len).sum(),
        }
    }

    fn to_reqwest(&self) -> reqwest::Body {
        match self {
            Body::Empty => reqwest::Body::from(Bytes::new()),
            Body::Parts(p) if p.len() == 1 => reqwest::Body::from(p[0].clone()),
            Body::Parts(p) => {
                let parts: Vec<std::result::Result<Bytes, std::io::Error>> =
                    p.iter().cloned().map(Ok).collect();
                reqwest::Body::wrap_stream(futures::stream::iter(parts))
            }
        }
    }
}

/// One request, rebuilt for each attempt (the body's buffers are shared, not copied).
struct Request<'a> {
    method: Method,
    container: &'a str,
    object: Option<&'a str>,
    query: &'a [(&'a str, &'a str)],
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl<'a> Request<'a> {
    fn new(method: Method, container: &'a str, object: Option<&'a str>) -> Self {
        Request {
            method,
            container,
            object,
            query: &[],
            headers: Vec::new(),
            body: Body::Empty,
        }
    }
}

#[derive(Deserialize)]
struct ListEntry {
    name: Option<String>,
    bytes: Option<u64>,
}

#[derive(Deserialize)]
struct BulkDelete {
    #[serde(rename = "Response Status", default)]
    status: String,
    #[serde(rename = "Errors", default)]
    errors: Vec<serde_json::Value>,
}

fn transport(what: &str, e: reqwest::Error) -> Error {
    Error::Transient {
        what: what.to_string(),
        source: std::io::Error::other(e.without_url().to_string()),
    }
}

/// The first line of an error body, without HTML, short.
fn short(body: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    out.chars().take(200).collect()
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    header(h, CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok())
}

impl SwiftSink {
    /// A sink; it authenticates on first use.
    pub fn new(opts: SwiftOptions) -> Result<Self> {
        if opts.container.is_empty() {
            return Err(Error::bad_input(
                "container",
                "a swift storage needs a container",
            ));
        }
        if opts.container.contains('/') {
            return Err(Error::bad_input(
                "container",
                format!("{:?}: a container name has no '/'", opts.container),
            ));
        }
        if opts.segment_size == 0 {
            return Err(Error::bad_input("segment_size", "must be above 0"));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::bad_input("swift", e))?;
        let auth = Authenticator::new(
            client.clone(),
            opts.auth.clone(),
            opts.storage_url.as_deref(),
        )?;
        let mut opts = opts;
        opts.prefix = opts.prefix.trim_matches('/').to_string();
        Ok(SwiftSink {
            opts,
            client,
            auth,
            segments_ready: AtomicBool::new(false),
        })
    }

    fn segments_container(&self) -> String {
        format!("{}_segments", self.opts.container)
    }

    /// The object's name in the container.
    fn name(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(if self.opts.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.opts.prefix)
        })
    }

    fn what(&self, key: &str) -> String {
        format!("{}/{key}", self.location())
    }

    fn location(&self) -> String {
        if self.opts.prefix.is_empty() {
            format!("swift://{}", self.opts.container)
        } else {
            format!("swift://{}/{}", self.opts.container, self.opts.prefix)
        }
    }

    /// Maps an unsuccessful answer to an error about `what`.
    fn status_error(&self, status: StatusCode, body: &str, what: &str) -> Error {
        let source = std::io::Error::other(format!("HTTP {}: {}", status.as_u16(), short(body)));
        let what = what.to_string();
        match status.as_u16() {
            401 => Error::Permission {
                what: match self.opts.auth {
                    SwiftAuth::Token(_) => {
                        format!(
                            "{what}: the token was refused ({})",
                            self.auth.credential_hint()
                        )
                    }
                    _ => format!(
                        "{what}: the token was refused even after authenticating again ({})",
                        self.auth.credential_hint()
                    ),
                },
                source,
            },
            403 => Error::Permission {
                what: format!(
                    "{what}: access refused (the user may lack a role on the project, or an ACL on container {}; {})",
                    self.opts.container,
                    self.auth.credential_hint()
                ),
                source,
            },
            404 => Error::NotFound { what },
            412 => Error::AlreadyExists { what },
            507 => Error::NoSpace { what },
            408 | 429 | 498 | 500..=599 => Error::Transient { what, source },
            400 | 411 | 413 | 414 | 422 => Error::BadInput {
                field: what,
                detail: source.to_string(),
            },
            _ => Error::Io { what, source },
        }
    }

    fn url(&self, s: &Session, container: &str, object: Option<&str>) -> Result<Url> {
        let mut url = s.storage_url.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| {
                Error::bad_input("OS_STORAGE_URL", "the storage URL cannot take a path")
            })?;
            path.pop_if_empty().push(container);
            if let Some(o) = object {
                path.extend(o.split('/'));
            }
        }
        Ok(url)
    }

    /// Sends a request with the current token; on 401, authenticates again and sends it once
    /// more. Connection failures are `Transient`; other statuses are left to the caller.
    async fn send(&self, req: &Request<'_>, what: &str) -> Result<reqwest::Response> {
        let mut renewed = false;
        loop {
            let session = self.auth.session().await?;
            let mut url = self.url(&session, req.container, req.object)?;
            if !req.query.is_empty() {
                url.query_pairs_mut().extend_pairs(req.query.iter());
            }
            let mut b = self
                .client
                .request(req.method.clone(), url)
                .header("X-Auth-Token", &session.token);
            for (k, v) in &req.headers {
                b = b.header(*k, v);
            }
            if req.method == Method::PUT {
                b = b
                    .header(CONTENT_LENGTH, req.body.len())
                    .body(req.body.to_reqwest());
            }
            let resp = b.send().await.map_err(|e| transport(what, e))?;
            if resp.status() == StatusCode::UNAUTHORIZED && !renewed && self.auth.renewable() {
                renewed = true;
                self.auth.forget(&session).await;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Sends a request and fails on any unsuccessful status.
    async fn call(&self, req: &Request<'_>, what: &str) -> Result<reqwest::Response> {
        let resp = self.send(req, what).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(self.status_error(status, &body, what))
    }

    async fn put_container(&self, container: &str) -> Result<()> {
        let what = format!("swift container {container}");
        self.call(&Request::new(Method::PUT, container, None), &what)
            .await?;
        Ok(())
    }

    /// One PUT of a whole object.
    async fn put_object(
        &self,
        container: &str,
        name: &str,
        body: Body,
        create: bool,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<()> {
        let mut req = Request::new(Method::PUT, container, Some(name));
        req.body = body;
        req.query = query;
        if create {
            req.headers.push(("If-None-Match", "*".into()));
        }
        let resp = self.send(&req, what).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(match status {
            StatusCode::NOT_FOUND => Error::NotFound {
                what: format!("{what}: container {container} (init creates it)"),
            },
            StatusCode::PRECONDITION_FAILED => Error::AlreadyExists {
                what: what.to_string(),
            },
            s => self.status_error(s, &text, what),
        })
    }
}

#[async_trait]
impl Sink for SwiftSink {
    fn describe(&self) -> String {
        let at = match (&self.opts.storage_url, &self.opts.auth) {
            (Some(u), _) => u.clone(),
            (None, SwiftAuth::Keystone(k)) => k.auth_url.clone(),
            (None, SwiftAuth::TempAuth { url, .. }) => url.clone(),
            (None, SwiftAuth::Token(_)) => String::new(),
        };
        if at.is_empty() {
            self.location()
        } else {
            format!("{} at {at}", self.location())
        }
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<()> {
        let name = self.name(key)?;
        let what = self.what(key);
        let create = mode == PutMode::Create;
        if payload.len() > self.opts.segment_size {
            return self.put_large(&name, payload, create, &what).await;
        }
        let body = Body::Parts(payload.parts().to_vec());
        self.put_object(&self.opts.container, &name, body, create, &[], &what)
            .await
    }

    /// Up to the segment size, the body is gathered and put as one object; a larger body is
    /// uploaded as segments while it is read (a few segments in memory, never the whole).
    async fn put_stream(&self, key: &str, mut body: ByteStream, mode: PutMode) -> Result<u64> {
        let name = self.name(key)?;
        let what = self.what(key);
        let create = mode == PutMode::Create;
        let mut head = Vec::new();
        let mut len = 0;
        while len <= self.opts.segment_size {
            match body.next().await {
                Some(piece) => {
                    let piece = piece?;
                    len += piece.len();
                    head.push(piece);
                }
                None => {
                    let body = Body::Parts(head);
                    self.put_object(&self.opts.container, &name, body, create, &[], &what)
                        .await?;
                    return Ok(len as u64);
                }
            }
        }
        let whole = futures::stream::iter(head.into_iter().map(Ok))
            .chain(body)
            .boxed();
        self.put_segments(&name, whole, create, &what).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetBody> {
        let name = self.name(key)?;
        let what = self.what(key);
        if let Some(r) = &range
            && r.start >= r.end
        {
            // An empty range: Swift would refuse it; the answer is known.
            self.head(key).await?;
            return Ok(GetBody::Bytes(Bytes::new()));
        }
        let mut req = Request::new(Method::GET, &self.opts.container, Some(&name));
        if let Some(r) = &range {
            req.headers
                .push(("Range", format!("bytes={}-{}", r.start, r.end - 1)));
        }
        let mut resp = self.send(&req, &what).await?;
        if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            // A range past the end of the object is clamped, as the contract says.
            let size = self.head(key).await?.size;
            let r = clamp(range, size);
            if r.start >= r.end {
                return Ok(GetBody::Bytes(Bytes::new()));
            }
            req.headers = vec![("Range", format!("bytes={}-{}", r.start, r.end - 1))];
            resp = self.send(&req, &what).await?;
        }
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(self.status_error(status, &body, &what));
        }
        match content_length(resp.headers()) {
            Some(n) if n <= STREAM_FROM => Ok(GetBody::Bytes(
                resp.bytes().await.map_err(|e| transport(&what, e))?,
            )),
            _ => Ok(GetBody::Stream(
                resp.bytes_stream()
                    .map_err(move |e| transport(&what, e))
                    .boxed(),
            )),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let full = if self.opts.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.opts.prefix)
        };
        let strip = if self.opts.prefix.is_empty() {
            0
        } else {
            self.opts.prefix.len() + 1
        };
        let what = format!("{}/{prefix}", self.location());
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let query = [
                ("format", "json"),
                ("prefix", full.as_str()),
                ("marker", marker.as_str()),
            ];
            let mut req = Request::new(Method::GET, &self.opts.container, None);
            req.query = &query;
            let resp = self.send(&req, &what).await?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                return Err(Error::NotFound {
                    what: format!(
                        "{}: container {} (init creates it)",
                        self.location(),
                        self.opts.container
                    ),
                });
            }
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                return Err(self.status_error(status, &body, &what));
            }
            if status == StatusCode::NO_CONTENT {
                break;
            }
            let text = resp.bytes().await.map_err(|e| transport(&what, e))?;
            let page: Vec<ListEntry> = serde_json::from_slice(&text).map_err(|e| Error::Io {
                what: what.clone(),
                source: std::io::Error::other(format!("the listing does not parse: {e}")),
            })?;
            let Some(last) = page.iter().rev().find_map(|e| e.name.clone()) else {
                break;
            };
            for e in page {
                let Some(name) = e.name else { continue };
                let Some(key) = name.get(strip..) else {
                    continue;
                };
                if key.starts_with(prefix) {
                    out.push(ObjectMeta {
                        key: key.to_string(),
                        size: e.bytes.unwrap_or(0),
                    });
                }
            }
            marker = last;
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let name = self.name(key)?;
        let what = self.what(key);
        let mut req = Request::new(Method::DELETE, &self.opts.container, Some(&name));
        req.query = &[("multipart-manifest", "delete")];
        req.headers.push(("Accept", "application/json".into()));
        let resp = self.send(&req, &what).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(self.status_error(status, &body, &what));
        }
        // The answer is a report of the manifest and its segments. An object that is not a
        // large one is refused as "Not an SLO manifest": delete it plainly.
        if let Ok(report) = serde_json::from_str::<BulkDelete>(&body) {
            if !report.errors.is_empty()
                && report
                    .errors
                    .iter()
                    .all(|e| e.to_string().contains("Not an SLO manifest"))
            {
                let plain = Request::new(Method::DELETE, &self.opts.container, Some(&name));
                let resp = self.send(&plain, &what).await?;
                let status = resp.status();
                if status.is_success() || status == StatusCode::NOT_FOUND {
                    return Ok(());
                }
                let body = resp.text().await.unwrap_or_default();
                return Err(self.status_error(status, &body, &what));
            }
            let code: u16 = report
                .status
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(200);
            if !(200..300).contains(&code) && code != 404 || !report.errors.is_empty() {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
                let detail = format!("{} {:?}", report.status, report.errors);
                return Err(self.status_error(status, &detail, &what));
            }
        }
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let name = self.name(key)?;
        let what = self.what(key);
        let resp = self
            .call(
                &Request::new(Method::HEAD, &self.opts.container, Some(&name)),
                &what,
            )
            .await?;
        let size = content_length(resp.headers()).ok_or_else(|| Error::Io {
            what: what.clone(),
            source: std::io::Error::other("the answer has no Content-Length"),
        })?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
        })
    }

    async fn prepare(&self) -> Result<()> {
        self.put_container(&self.opts.container).await?;
        self.put_container(&self.segments_container()).await?;
        self.segments_ready.store(true, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::auth::tests::keystone;
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_and_describe() {
        let mut o = SwiftOptions::new("c/p/q", SwiftAuth::Keystone(Box::new(keystone())));
        assert_eq!((o.container.as_str(), o.prefix.as_str()), ("c", "p/q"));
        let s = SwiftSink::new(o.clone()).unwrap();
        let shown = format!("{o:?} {s:?} {}", s.describe());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(s.describe(), "swift://c/p/q at http://k:5000/v3");
        o.auth = SwiftAuth::TempAuth {
            url: "http://s/auth/v1.0".into(),
            user: "a:u".into(),
            key: "hunter2".into(),
        };
        assert!(!format!("{o:?}").contains("hunter2"));
        o.auth = SwiftAuth::Token("hunter2".into());
        assert!(!format!("{o:?}").contains("hunter2"));
        assert!(
            SwiftSink::new(o.clone()).is_err(),
            "a bare token needs a storage URL"
        );
        o.storage_url = Some("http://s/v1/AUTH_a".into());
        assert!(SwiftSink::new(o).is_ok());
    }

    #[test]
    fn object_urls_are_escaped_per_segment() {
        let o = SwiftOptions::new("my c/pre", SwiftAuth::Token("t".into()));
        let mut o2 = o.clone();
        o2.storage_url = Some("http://s:8080/v1/AUTH_a".into());
        let sink = SwiftSink::new(o2).unwrap();
        let s = Session {
            token: "t".into(),
            storage_url: Url::parse("http://s:8080/v1/AUTH_a").unwrap(),
        };
        let name = sink.name("names/ü ✓?#").unwrap();
        let url = sink.url(&s, "my c", Some(&name)).unwrap();
        assert_eq!(
            url.as_str(),
            "http://s:8080/v1/AUTH_a/my%20c/pre/names/%C3%BC%20%E2%9C%93%3F%23"
        );
        assert!(sink.name("../x").is_err());
    }
}
