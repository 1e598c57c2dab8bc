//! `Retrying`: a sink that retries transient failures of another, with bounded exponential
//! backoff and jitter.
//!
//! Only [`Error::Transient`](crate::Error::Transient) is retried (a dropped connection, a
//! timeout, a busy server): a missing object, a refused credential or a full disk is returned
//! at once. Puts are safe to retry because they are atomic and whole; the payload is a clone
//! of the same buffers. A streamed get is retried only until its body starts.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;

use super::{ByteStream, GetBody, ObjectMeta, Payload, PutMode, Sink, Temporary};
use crate::error::{Error, Result};

/// How a [`Retrying`] sink backs off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The delay before the first retry.
    pub initial_delay: Duration,
    /// No delay is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 6 retries from 250 ms, doubling, at most 30 s apart: about a minute of patience.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first): the exponential delay, of which
    /// the upper half is random ("equal jitter"), so that clients that failed together do not
    /// retry together.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self
            .initial_delay
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max_delay);
        let half = base / 2;
        let mut r = [0u8; 8];
        crate::crypto::random_bytes(&mut r);
        let frac = u64::from_le_bytes(r) as f64 / u64::MAX as f64;
        half + half.mul_f64(frac)
    }
}

/// Retries the transient failures of `inner`.
#[derive(Debug)]
pub struct Retrying<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S: Sink> Retrying<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut retry = 0;
        loop {
            match op().await {
                Err(e) if e.is_transient() && retry < self.policy.max_retries => {
                    let wait = self.policy.delay(retry);
                    tracing::info!(sink = %self.inner.describe(), error = %e, ?wait, "{what} failed; retrying");
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                Err(e) if e.is_transient() => {
                    return Err(e.context(format!("after {} retries", self.policy.max_retries)));
                }
                r => return r,
            }
        }
    }
}

#[async_trait]
impl<S: Sink> Sink for Retrying<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<()> {
        let mut attempts = 0;
        self.run("put", || {
            attempts += 1;
            let p = payload.clone();
            async move {
                match self.inner.put(key, p, mode).await {
                    // A create that timed out may have landed: then the object is ours.
                    Err(Error::AlreadyExists { .. }) if attempts > 1 && mode == PutMode::Create => {
                        Ok(())
                    }
                    r => r,
                }
            }
        })
        .await
    }

    /// Once: a stream cannot be read twice.
    async fn put_stream(&self, key: &str, body: ByteStream, mode: PutMode) -> Result<u64> {
        self.inner.put_stream(key, body, mode).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetBody> {
        self.run("get", || self.inner.get(key, range.clone())).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.run("list", || self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.run("delete", || self.inner.delete(key)).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.run("head", || self.inner.head(key)).await
    }

    async fn list_temporaries(&self, prefix: &str) -> Result<Vec<Temporary>> {
        self.run("list", || self.inner.list_temporaries(prefix))
            .await
    }

    async fn prepare(&self) -> Result<()> {
        self.run("prepare", || self.inner.prepare()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::sink::{MemorySink, SinkExt};

    /// Fails the first `fail` calls with `error`, then works.
    #[derive(Debug)]
    struct Failing {
        inner: MemorySink,
        fail: AtomicU32,
        transient: bool,
        calls: AtomicU32,
    }

    impl Failing {
        fn check(&self) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) > 0 {
                self.fail.fetch_sub(1, Ordering::SeqCst);
                return Err(if self.transient {
                    Error::io(
                        "x",
                        std::io::Error::from(std::io::ErrorKind::ConnectionReset),
                    )
                } else {
                    Error::io(
                        "x",
                        std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                    )
                });
            }
            Ok(())
        }
    }

    #[async_trait]
    impl Sink for Failing {
        fn describe(&self) -> String {
            "failing".into()
        }
        async fn put(&self, key: &str, p: Payload, m: PutMode) -> Result<()> {
            self.check()?;
            self.inner.put(key, p, m).await
        }
        async fn get(&self, key: &str, r: Option<Range<u64>>) -> Result<GetBody> {
            self.check()?;
            self.inner.get(key, r).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            self.check()?;
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.check()?;
            self.inner.delete(key).await
        }
        async fn head(&self, key: &str) -> Result<ObjectMeta> {
            self.check()?;
            self.inner.head(key).await
        }
    }

    fn failing(fail: u32, transient: bool) -> Arc<Failing> {
        Arc::new(Failing {
            inner: MemorySink::new("m"),
            fail: fail.into(),
            transient,
            calls: 0.into(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_with_growing_waits() {
        let f = failing(3, true);
        let r = Retrying::new(f.clone(), RetryPolicy::default());
        let start = tokio::time::Instant::now();
        r.put("k", Payload::from(b"v".to_vec()), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(f.calls.load(Ordering::SeqCst), 4);
        // 125-250 + 250-500 + 500-1000 ms
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(875) && waited <= Duration::from_millis(1750),
            "{waited:?}"
        );
        assert_eq!(&r.get_bytes("k").await.unwrap()[..], b"v");
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_and_exhausted_retries_are_returned() {
        let f = failing(1, false);
        let r = Retrying::new(f.clone(), RetryPolicy::default());
        assert!(matches!(r.list("").await, Err(Error::Permission { .. })));
        assert_eq!(
            f.calls.load(Ordering::SeqCst),
            1,
            "a refusal is not retried"
        );
        let f = failing(100, true);
        let policy = RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        };
        let e = Retrying::new(f.clone(), policy)
            .head("k")
            .await
            .unwrap_err();
        assert!(
            e.is_transient() && e.to_string().contains("after 2 retries"),
            "{e}"
        );
        assert_eq!(f.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn delays_are_bounded_and_jittered() {
        let p = RetryPolicy::default();
        for retry in 0..40 {
            let d = p.delay(retry);
            assert!(d <= p.max_delay, "{d:?}");
        }
        let a: Vec<Duration> = (0..8).map(|_| p.delay(5)).collect();
        assert!(a.iter().any(|d| *d != a[0]), "jitter: {a:?}");
    }
}
