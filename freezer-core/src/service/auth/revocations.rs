//! The revoked tokens of the standalone identity: a cache every validation reads without
//! waiting, kept in step with the store shared by every API server.
//!
//! A revocation is written to the store before it is answered, so it outlives a restart and
//! reaches the other servers on the same database. Each server reads the store when it is
//! attached ([`Revocations::attach`]: a restarted server refuses revoked tokens from its first
//! request) and then polls it every [`REFRESH_EVERY`] for the revocations stamped since the
//! last one it saw (minus [`LOOKBACK`], so a write that committed late is still read): a
//! revocation takes effect on the server that received it at once, and on every other server
//! within [`REFRESH_EVERY`] plus one query. Validation never waits on the database; while the
//! database cannot be read, a server keeps refusing what it knew of and logs the failure.
//! Expired revocations leave the cache and (after [`PRUNE_GRACE`], for servers whose clocks
//! lag) the store.
//!
//! Never: a token in a log line (only counts are logged; an audit id is not a credential
//! but is not logged either).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use jiff::Timestamp;

use super::AuthError;
use crate::service::store::{Store, StoreError};

/// How often each server reads the revocations other servers wrote: the bound on how late a
/// revocation takes effect on another server.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// How far before the newest revocation seen each poll reads again (seconds): a revocation
/// whose write took longer than this to commit could be missed by the other servers.
pub const LOOKBACK: i64 = 60;

/// How long after its tokens expire a revocation stays in the store (seconds): a server whose
/// clock lags the others' by less still refuses the token after a restart.
pub const PRUNE_GRACE: i64 = 300;

/// Revocations kept at most (each lives until its token's expiry): a bound on memory.
const MAX_REVOCATIONS: usize = 1_000_000;

/// How many polls between two prunes of the store (a minute at the default interval).
const PRUNE_EVERY_POLLS: u32 = 30;

/// The revoked audit ids a server knows of, and the store it shares them through.
#[derive(Default)]
pub struct Revocations {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// What this server knows.
    known: Mutex<Known>,
    /// The shared store, once attached; until then revocations live in this process only.
    store: OnceLock<Arc<dyn Store>>,
}

#[derive(Default)]
struct Known {
    /// Audit id → the latest expiry of a token carrying it.
    by_audit: HashMap<String, i64>,
    /// The newest `revoked_at` read from the store (the database's clock).
    newest: Option<i64>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("known", &self.inner.lock().by_audit.len())
            .field("shared", &self.inner.store.get().is_some())
            .finish()
    }
}

impl Revocations {
    /// Whether tokens carrying `audit` are revoked, as far as this server knows: never waits.
    pub fn is_revoked(&self, audit: &str) -> bool {
        self.inner.lock().by_audit.contains_key(audit)
    }

    /// Revokes the tokens carrying `audit` until `expires_at`: in the store first (a store
    /// that cannot be written is [`AuthError::Unavailable`], and nothing is claimed), then
    /// here.
    pub async fn revoke(&self, audit: &str, expires_at: i64) -> Result<(), AuthError> {
        let now = Timestamp::now().as_second();
        {
            let mut known = self.inner.lock();
            if known.by_audit.len() >= MAX_REVOCATIONS {
                known.by_audit.retain(|_, e| *e > now);
                if known.by_audit.len() >= MAX_REVOCATIONS {
                    return Err(AuthError::Unavailable(
                        "too many revoked tokens are still valid".into(),
                    ));
                }
            }
        }
        if let Some(store) = self.inner.store.get() {
            store
                .revoke_token(audit, expires_at)
                .await
                .map_err(|e| AuthError::Unavailable(format!("recording the revocation: {e}")))?;
        }
        self.inner.lock().learn(audit.to_string(), expires_at);
        Ok(())
    }

    /// Shares the revocations through `store`: writes the ones this server made so far, reads
    /// every unexpired one, then polls it every `every` (normally [`REFRESH_EVERY`]) on a
    /// task that ends with these revocations. Attaching twice is an error.
    pub async fn attach(&self, store: Arc<dyn Store>, every: Duration) -> Result<(), StoreError> {
        if self.inner.store.set(Arc::clone(&store)).is_err() {
            return Err(StoreError::Backend(
                "the token revocations already have a store".into(),
            ));
        }
        let mine: Vec<(String, i64)> = self
            .inner
            .lock()
            .by_audit
            .iter()
            .map(|(a, e)| (a.clone(), *e))
            .collect();
        for (audit, expires) in mine {
            store.revoke_token(&audit, expires).await?;
        }
        self.inner.refresh().await?;
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut polls = 0u32;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = inner.refresh().await {
                    tracing::warn!(error = %e, "could not read the token revocations; keeping the known ones");
                }
                polls = polls.wrapping_add(1);
                if polls.is_multiple_of(PRUNE_EVERY_POLLS) {
                    inner.prune().await;
                }
            }
        });
        Ok(())
    }

    /// Reads the revocations stamped since the newest one seen (minus [`LOOKBACK`]) now,
    /// rather than at the next poll, and forgets the expired ones.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        self.inner.refresh().await
    }
}

impl Known {
    fn learn(&mut self, audit: String, expires_at: i64) {
        let entry = self.by_audit.entry(audit).or_insert(expires_at);
        *entry = (*entry).max(expires_at);
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn refresh(&self) -> Result<(), StoreError> {
        let Some(store) = self.store.get() else {
            return Ok(());
        };
        let since = self
            .lock()
            .newest
            .map_or(i64::MIN, |n| n.saturating_sub(LOOKBACK));
        let now = Timestamp::now().as_second();
        let rows = store.revocations_since(since, now).await?;
        let mut known = self.lock();
        known.by_audit.retain(|_, e| *e > now);
        for r in rows {
            known.newest = Some(known.newest.map_or(r.revoked_at, |n| n.max(r.revoked_at)));
            known.learn(r.audit_id, r.expires_at);
        }
        Ok(())
    }

    /// Deletes the store's revocations of tokens expired more than [`PRUNE_GRACE`] ago.
    async fn prune(&self) {
        let Some(store) = self.store.get() else {
            return;
        };
        let before = Timestamp::now().as_second().saturating_sub(PRUNE_GRACE);
        match store.prune_revocations(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "pruned expired token revocations"),
            Err(e) => tracing::warn!(error = %e, "could not prune the token revocations"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::store::SqliteStore;

    #[tokio::test]
    async fn shared_through_a_store_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sqlite");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
        let hour = Duration::from_secs(3600);
        let now = Timestamp::now().as_second();
        let a = Revocations::default();
        // Revoked before the store is attached: written when it is.
        a.revoke("early", now + 60).await.unwrap();
        a.attach(Arc::clone(&store), hour).await.unwrap();
        assert!(a.attach(Arc::clone(&store), hour).await.is_err());
        a.revoke("late", now + 60).await.unwrap();
        a.revoke("gone", now - 1).await.unwrap();
        let b = Revocations::default();
        b.attach(Arc::clone(&store), hour).await.unwrap();
        assert!(b.is_revoked("early") && b.is_revoked("late"));
        assert!(!b.is_revoked("gone"), "an expired revocation is not read");
        assert!(!b.is_revoked("other"));
        // A revocation made on `a` after `b` attached reaches `b` at its next refresh.
        a.revoke("later", now + 60).await.unwrap();
        assert!(!b.is_revoked("later"));
        b.refresh().await.unwrap();
        assert!(b.is_revoked("later"));
        assert_eq!(store.prune_revocations(now).await.unwrap(), 1);
        let left = store.revocations_since(i64::MIN, i64::MIN).await.unwrap();
        assert_eq!(left.len(), 3);
        assert!(left.iter().all(|r| r.audit_id != "gone"));
    }
}
