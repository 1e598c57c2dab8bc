//! Several sinks as one: every put goes to every live member, every read comes from the first
//! member that answers.
//!
//! A member whose put fails is marked failed and receives nothing more in this run, so that it
//! can never be handed an object (a snapshot, say) whose prerequisites it missed; the others go
//! on. Callers that route objects to some members only (a pack that one member already holds)
//! use [`Tee::put_to`] with a [`SinkMask`]. The tee never retries (wrap members in `Retrying`)
//! and never copies a payload: each member gets a clone of the same `Bytes`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::future::join_all;

use super::{GetBody, ObjectMeta, Payload, PutMode, Sink, Temporary};
use crate::error::{Error, Result};

/// A set of tee members, bit `i` for member `i` (at most 64 members).
pub type SinkMask = u64;

/// How one member fared.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SinkStatus {
    /// The member, described without secrets.
    pub sink: String,
    /// Why it was dropped from this run, if it was.
    pub error: Option<String>,
}

/// Several sinks written together.
#[derive(Debug)]
pub struct Tee {
    sinks: Vec<Arc<dyn Sink>>,
    failed: Mutex<Vec<Option<String>>>,
}

impl Tee {
    /// The most members a tee takes.
    pub const MAX_MEMBERS: usize = 64;

    /// A tee of `sinks`, in order of preference for reads.
    pub fn new(sinks: Vec<Arc<dyn Sink>>) -> Result<Self> {
        if sinks.is_empty() || sinks.len() > Self::MAX_MEMBERS {
            return Err(Error::bad_input(
                "repositories",
                format!(
                    "between 1 and {} repositories are needed, not {}",
                    Self::MAX_MEMBERS,
                    sinks.len()
                ),
            ));
        }
        let failed = Mutex::new(vec![None; sinks.len()]);
        Ok(Tee { sinks, failed })
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// Whether the tee has no member (never true: `new` refuses that).
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> &Arc<dyn Sink> {
        &self.sinks[i]
    }

    /// Every member.
    pub fn all(&self) -> SinkMask {
        if self.sinks.len() == 64 {
            !0
        } else {
            (1u64 << self.sinks.len()) - 1
        }
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, Vec<Option<String>>> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The members that have not failed.
    pub fn live(&self) -> SinkMask {
        let failed = self.failed();
        failed
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is_none())
            .fold(0, |m, (i, _)| m | (1 << i))
    }

    /// Drops member `i` from the rest of the run, recording why.
    pub fn fail(&self, i: usize, why: &Error) {
        let mut failed = self.failed();
        if failed[i].is_none() {
            tracing::warn!(sink = %self.sinks[i].describe(), error = %why, "storage failed; going on without it");
            failed[i] = Some(why.to_string());
        }
    }

    /// How each member fared so far.
    pub fn status(&self) -> Vec<SinkStatus> {
        let failed = self.failed();
        self.sinks
            .iter()
            .zip(failed.iter())
            .map(|(s, f)| SinkStatus {
                sink: s.describe(),
                error: f.clone(),
            })
            .collect()
    }

    fn members(&self, mask: SinkMask) -> impl Iterator<Item = usize> + '_ {
        (0..self.sinks.len()).filter(move |i| mask & (1 << i) != 0)
    }

    /// Puts one object to the live members in `mask`, concurrently. Members that fail (for any
    /// reason but `AlreadyExists`) are dropped from the run. Returns the members that hold the
    /// object now, and the first error met.
    pub async fn put_to(
        &self,
        mask: SinkMask,
        key: &str,
        payload: &Payload,
        mode: PutMode,
    ) -> (SinkMask, Option<Error>) {
        let targets: Vec<usize> = self.members(mask & self.live()).collect();
        let results = join_all(
            targets
                .iter()
                .map(|&i| self.sinks[i].put(key, payload.clone(), mode)),
        )
        .await;
        let mut ok = 0;
        let mut first = None;
        for (i, r) in targets.into_iter().zip(results) {
            match r {
                Ok(()) => ok |= 1 << i,
                Err(e) => {
                    if !matches!(e, Error::AlreadyExists { .. }) {
                        self.fail(i, &e);
                    }
                    first.get_or_insert(e);
                }
            }
        }
        (ok, first)
    }

    fn none_live(&self) -> Error {
        let reasons: Vec<String> = self
            .status()
            .into_iter()
            .filter_map(|s| s.error.map(|e| format!("{} ({e})", s.sink)))
            .collect();
        Error::io(
            "every storage has failed",
            std::io::Error::other(reasons.join("; ")),
        )
    }
}

#[async_trait]
impl Sink for Tee {
    fn describe(&self) -> String {
        let names: Vec<String> = self.sinks.iter().map(|s| s.describe()).collect();
        format!("tee[{}]", names.join(", "))
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<()> {
        let (ok, err) = self.put_to(self.all(), key, &payload, mode).await;
        match (ok, err) {
            (0, Some(e)) => Err(e),
            (0, None) => Err(self.none_live()),
            _ => Ok(()),
        }
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetBody> {
        let mut first_err = None;
        for i in self.members(self.live()) {
            match self.sinks[i].get(key, range.clone()).await {
                Ok(b) => return Ok(b),
                Err(e) => {
                    let missing = matches!(e, Error::NotFound { .. });
                    match &first_err {
                        None => first_err = Some(e),
                        Some(Error::NotFound { .. }) if !missing => first_err = Some(e),
                        _ => {}
                    }
                }
            }
        }
        Err(first_err.unwrap_or_else(|| self.none_live()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let live: Vec<usize> = self.members(self.live()).collect();
        let results = join_all(live.iter().map(|&i| self.sinks[i].list(prefix))).await;
        let mut merged = BTreeMap::new();
        let mut answered = false;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(v) => {
                    answered = true;
                    for m in v {
                        merged.entry(m.key.clone()).or_insert(m);
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if !answered {
            return Err(first_err.unwrap_or_else(|| self.none_live()));
        }
        Ok(merged.into_values().collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let live: Vec<usize> = self.members(self.live()).collect();
        let results = join_all(live.iter().map(|&i| self.sinks[i].delete(key))).await;
        results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let mut first_err = None;
        for i in self.members(self.live()) {
            match self.sinks[i].head(key).await {
                Ok(m) => return Ok(m),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| self.none_live()))
    }

    /// The temporaries of every live member (each member's own: a member that cannot list
    /// them is left out of the answer, not failed).
    async fn list_temporaries(&self, prefix: &str) -> Result<Vec<Temporary>> {
        let live: Vec<usize> = self.members(self.live()).collect();
        let results = join_all(live.iter().map(|&i| self.sinks[i].list_temporaries(prefix))).await;
        let mut merged = BTreeMap::new();
        for t in results.into_iter().flatten().flatten() {
            merged.entry(t.key.clone()).or_insert(t);
        }
        Ok(merged.into_values().collect())
    }

    async fn prepare(&self) -> Result<()> {
        for i in self.members(self.live()).collect::<Vec<_>>() {
            self.sinks[i].prepare().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{MemorySink, SinkExt};

    #[tokio::test]
    async fn puts_go_everywhere_and_reads_fall_back() {
        let a = MemorySink::new("a");
        let b = MemorySink::new("b");
        let tee = Tee::new(vec![Arc::new(a.clone()), Arc::new(b.clone())]).unwrap();
        tee.put("x", Payload::from(b"hello".to_vec()), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(&a.get_bytes("x").await.unwrap()[..], b"hello");
        assert_eq!(&b.get_bytes("x").await.unwrap()[..], b"hello");
        a.delete("x").await.unwrap();
        assert_eq!(&tee.get_bytes("x").await.unwrap()[..], b"hello");
        assert!(matches!(
            tee.get_bytes("nope").await,
            Err(Error::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn put_to_routes_and_failures_drop_members() {
        let a = MemorySink::new("a");
        let b = MemorySink::new("b");
        let tee = Tee::new(vec![Arc::new(a.clone()), Arc::new(b.clone())]).unwrap();
        let (ok, err) = tee
            .put_to(
                0b10,
                "only-b",
                &Payload::from(b"1".to_vec()),
                PutMode::Overwrite,
            )
            .await;
        assert_eq!((ok, err.is_none()), (0b10, true));
        assert!(!a.exists("only-b").await.unwrap());
        tee.fail(1, &Error::not_found("simulated"));
        assert_eq!(tee.live(), 0b01);
        let (ok, _) = tee
            .put_to(0b11, "y", &Payload::from(b"2".to_vec()), PutMode::Overwrite)
            .await;
        assert_eq!(ok, 0b01);
        assert!(!b.exists("y").await.unwrap());
        assert!(
            tee.status()[1]
                .error
                .as_deref()
                .unwrap()
                .contains("simulated")
        );
    }
}
