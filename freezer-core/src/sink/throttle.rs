//! `Throttled`: bandwidth limits on another sink (upstream's `upload_limit` and
//! `download_limit`).
//!
//! A token bucket per direction holds one second of traffic. Each request reserves its bytes
//! and waits off any debt, so the average rate holds however many requests run at once. A put
//! waits before it starts (the object then goes at link speed: the limit is an average over
//! objects, not a cap on instantaneous speed); a streamed get waits piece by piece.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::time::Instant;

use super::{ByteStream, GetBody, ObjectMeta, Payload, PutMode, Sink, Temporary};
use crate::error::{Error, Result};

/// Parses a rate as upstream's help text writes it: bytes per second, optionally with a
/// binary suffix (`512`, `10K`, `1.5M`, `2G`); `-1`, `0` or nothing mean no limit.
pub fn parse_rate(s: &str, field: &str) -> Result<Option<u64>> {
    let t = s.trim();
    if t.is_empty() || t == "-1" || t == "0" {
        return Ok(None);
    }
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1024.0),
        Some('M') => (&t[..t.len() - 1], 1024.0 * 1024.0),
        Some('G') => (&t[..t.len() - 1], 1024.0 * 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let n: f64 = num.trim().parse().map_err(|_| {
        Error::bad_input(
            field,
            format!("{s:?} is not a rate; use bytes per second like 512, 10K, 1.5M or 2G"),
        )
    })?;
    if !(n.is_finite() && n > 0.0) {
        return Err(Error::bad_input(
            field,
            format!("{s:?}: the rate must be positive (or -1 for no limit)"),
        ));
    }
    Ok(Some((n * mult).max(1.0) as u64))
}

/// A token bucket of `rate` bytes per second holding one second of traffic.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: u64) -> Arc<Self> {
        Arc::new(Bucket {
            rate: rate as f64,
            state: Mutex::new((rate as f64, Instant::now())),
        })
    }

    /// Takes `n` bytes; returns how long to wait before using them.
    fn reserve(&self, n: usize) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.rate) - n as f64;
        s.1 = now;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.rate)
        }
    }

    async fn take(&self, n: usize) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Limits the bandwidth of `inner`.
#[derive(Debug)]
pub struct Throttled<S> {
    inner: S,
    up: Option<Arc<Bucket>>,
    down: Option<Arc<Bucket>>,
}

impl<S: Sink> Throttled<S> {
    /// Wraps `inner` with limits in bytes per second (`None`: unlimited).
    pub fn new(inner: S, upload: Option<u64>, download: Option<u64>) -> Self {
        Throttled {
            inner,
            up: upload.map(Bucket::new),
            down: download.map(Bucket::new),
        }
    }
}

#[async_trait]
impl<S: Sink> Sink for Throttled<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<()> {
        if let Some(b) = &self.up {
            b.take(payload.len()).await;
        }
        self.inner.put(key, payload, mode).await
    }

    async fn put_stream(&self, key: &str, body: ByteStream, mode: PutMode) -> Result<u64> {
        let Some(bucket) = self.up.clone() else {
            return self.inner.put_stream(key, body, mode).await;
        };
        let body = body
            .then(move |piece| {
                let bucket = bucket.clone();
                async move {
                    if let Ok(p) = &piece {
                        bucket.take(p.len()).await;
                    }
                    piece
                }
            })
            .boxed();
        self.inner.put_stream(key, body, mode).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetBody> {
        let body = self.inner.get(key, range).await?;
        let Some(bucket) = self.down.clone() else {
            return Ok(body);
        };
        Ok(match body {
            GetBody::Bytes(b) => {
                bucket.take(b.len()).await;
                GetBody::Bytes(b)
            }
            GetBody::Stream(s) => GetBody::Stream(
                s.then(move |piece| {
                    let bucket = bucket.clone();
                    async move {
                        if let Ok(p) = &piece {
                            bucket.take(p.len()).await;
                        }
                        piece
                    }
                })
                .boxed(),
            ),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn list_temporaries(&self, prefix: &str) -> Result<Vec<Temporary>> {
        self.inner.list_temporaries(prefix).await
    }

    async fn prepare(&self) -> Result<()> {
        self.inner.prepare().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{MemorySink, SinkExt};

    #[test]
    fn rates_read_as_upstream_writes_them() {
        assert_eq!(parse_rate("512", "upload_limit").unwrap(), Some(512));
        assert_eq!(parse_rate("10K", "upload_limit").unwrap(), Some(10 * 1024));
        assert_eq!(parse_rate("1.5m", "upload_limit").unwrap(), Some(3 << 19));
        assert_eq!(parse_rate("2G", "upload_limit").unwrap(), Some(2 << 30));
        assert_eq!(parse_rate("-1", "upload_limit").unwrap(), None);
        assert_eq!(parse_rate("", "upload_limit").unwrap(), None);
        let e = parse_rate("fast", "download_limit").unwrap_err();
        assert!(e.to_string().starts_with("download_limit:"), "{e}");
        assert!(parse_rate("-5K", "upload_limit").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_average_rate_holds() {
        let mem = MemorySink::new("m");
        let t = Throttled::new(mem.clone(), Some(100_000), Some(50_000));
        let start = Instant::now();
        // 1 s of burst, then 4 more seconds for 400 kB more.
        for i in 0..5 {
            t.put(
                &format!("k{i}"),
                Payload::from(vec![0u8; 100_000]),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        }
        let up = start.elapsed();
        assert!(
            up >= Duration::from_millis(3900) && up <= Duration::from_millis(4100),
            "{up:?}"
        );
        let start = Instant::now();
        for i in 0..3 {
            t.get_bytes(&format!("k{i}")).await.unwrap();
        }
        let down = start.elapsed();
        // 300 kB at 50 kB/s with a 50 kB bucket: 5 s.
        assert!(
            down >= Duration::from_millis(4900) && down <= Duration::from_millis(5100),
            "{down:?}"
        );
        let free = Instant::now();
        t.list("").await.unwrap();
        assert!(free.elapsed() < Duration::from_millis(1));
    }
}
