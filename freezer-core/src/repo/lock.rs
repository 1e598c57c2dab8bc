//! Repository locks (`locks/<id>`): shared for backups and restores, exclusive for operations
//! that delete data. A lock is refreshed while its holder runs; one whose process is gone (same
//! host) or that was not refreshed within [`LOCK_LIFETIME`] is stale and ignored, so a killed
//! backup never blocks the next one. Locks never protect against a second writer of the same
//! object: objects are content-addressed and every put is atomic.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::object;
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::sink::{Payload, PutMode, Sink, SinkExt, Tee};

/// A lock not refreshed for this long is stale.
pub const LOCK_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// How often a held lock is refreshed.
pub const LOCK_REFRESH: Duration = Duration::from_secs(5 * 60);

/// What a lock file says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    /// When the lock was taken or last refreshed.
    pub time: Timestamp,
    /// The holder's host.
    pub hostname: String,
    /// The holder's process id.
    pub pid: u32,
    /// The holder's user.
    pub username: String,
    /// Exclusive (deletes data) or shared.
    pub exclusive: bool,
    /// What the holder is doing.
    pub operation: String,
}

impl LockInfo {
    /// Whether the lock no longer counts: its process is gone from this host, or it was not
    /// refreshed within its lifetime.
    pub fn is_stale(&self, now: Timestamp, this_host: &str) -> bool {
        let age = now.as_second() - self.time.as_second();
        if age > LOCK_LIFETIME.as_secs() as i64 {
            return true;
        }
        self.hostname == this_host && !process_alive(self.pid)
    }
}

fn process_alive(pid: u32) -> bool {
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(p) => !matches!(
            rustix::process::test_kill_process(p),
            Err(rustix::io::Errno::SRCH)
        ),
        None => false,
    }
}

/// A held lock. Release it with [`LockGuard::release`]; dropping it stops the refreshes and
/// removes the lock in the background.
#[derive(Debug)]
pub struct LockGuard {
    tee: Arc<Tee>,
    key: Arc<std::sync::Mutex<String>>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

impl LockGuard {
    /// Removes the lock.
    pub async fn release(mut self) -> Result<()> {
        if let Some(t) = self.refresher.take() {
            t.abort();
        }
        let key = self.key.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.tee.delete(&key).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(t) = self.refresher.take() {
            t.abort();
            let key = self.key.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let tee = self.tee.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = tee.delete(&key).await;
                });
            }
        }
    }
}

async fn write_lock(tee: &Tee, crypto: &Crypto, info: &LockInfo) -> Result<String> {
    let stored = object::encode(
        crypto,
        &serde_json::to_vec(info).expect("a lock serializes"),
    );
    let key = format!("locks/{}", Id::of_stored(&stored));
    tee.put(&key, Payload::from(stored), PutMode::Overwrite)
        .await?;
    Ok(key)
}

/// Reads every lock; unreadable ones (a lock from another repository key) are skipped.
pub async fn list_locks(tee: &Tee, crypto: &Crypto) -> Result<Vec<(String, LockInfo)>> {
    let mut out = Vec::new();
    for meta in tee.list("locks/").await? {
        let Ok(data) = tee.get_bytes(&meta.key).await else {
            continue;
        };
        let Ok(plain) = object::decode(crypto, &data, &meta.key) else {
            continue;
        };
        if let Ok(info) = serde_json::from_slice::<LockInfo>(&plain) {
            out.push((meta.key, info));
        }
    }
    Ok(out)
}

/// Takes a lock. Fails with [`Error::Locked`] naming the holder when a live conflicting lock
/// exists (an exclusive one, or any one when `exclusive`).
pub async fn acquire(
    tee: Arc<Tee>,
    crypto: Crypto,
    hostname: &str,
    username: &str,
    exclusive: bool,
    operation: &str,
) -> Result<LockGuard> {
    let info = LockInfo {
        time: crate::time::now(),
        hostname: hostname.to_string(),
        pid: std::process::id(),
        username: username.to_string(),
        exclusive,
        operation: operation.to_string(),
    };
    let conflict = |locks: &[(String, LockInfo)], own: Option<&str>| {
        let now = crate::time::now();
        locks
            .iter()
            .filter(|(k, _)| Some(k.as_str()) != own)
            .find(|(_, l)| (exclusive || l.exclusive) && !l.is_stale(now, hostname))
            .map(|(_, l)| Error::Locked {
                what: format!(
                    "the repository is locked {} by {}@{} (pid {}, {}) since {}",
                    if l.exclusive { "exclusively" } else { "" },
                    l.username,
                    l.hostname,
                    l.pid,
                    l.operation,
                    l.time
                ),
            })
    };
    if let Some(e) = conflict(&list_locks(&tee, &crypto).await?, None) {
        return Err(e);
    }
    let key = write_lock(&tee, &crypto, &info).await?;
    // Another process may have locked at the same moment: look again, and back off if so.
    if let Some(e) = conflict(&list_locks(&tee, &crypto).await?, Some(&key)) {
        let _ = tee.delete(&key).await;
        return Err(e);
    }
    let key = Arc::new(std::sync::Mutex::new(key));
    let refresher = {
        let (tee, key, crypto) = (tee.clone(), key.clone(), crypto.clone());
        tokio::spawn(async move {
            let mut info = info;
            loop {
                tokio::time::sleep(LOCK_REFRESH).await;
                info.time = crate::time::now();
                if let Ok(new_key) = write_lock(&tee, &crypto, &info).await {
                    let old = std::mem::replace(
                        &mut *key.lock().unwrap_or_else(|e| e.into_inner()),
                        new_key,
                    );
                    let _ = tee.delete(&old).await;
                }
            }
        })
    };
    Ok(LockGuard {
        tee,
        key,
        refresher: Some(refresher),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::sink::MemorySink;

    #[tokio::test]
    async fn shared_locks_coexist_exclusive_ones_do_not() {
        let tee = Arc::new(Tee::new(vec![Arc::new(MemorySink::new("m"))]).unwrap());
        let c = Crypto::new(&MasterKey::generate(true));
        let a = acquire(tee.clone(), c.clone(), "h", "u", false, "backup")
            .await
            .unwrap();
        let b = acquire(tee.clone(), c.clone(), "h", "u", false, "backup")
            .await
            .unwrap();
        let e = acquire(tee.clone(), c.clone(), "h", "u", true, "prune")
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Locked { .. }), "{e}");
        a.release().await.unwrap();
        b.release().await.unwrap();
        let x = acquire(tee.clone(), c.clone(), "h", "u", true, "prune")
            .await
            .unwrap();
        assert!(
            acquire(tee.clone(), c.clone(), "h", "u", false, "backup")
                .await
                .is_err()
        );
        x.release().await.unwrap();
        assert!(tee.list("locks/").await.unwrap().is_empty());
    }

    #[test]
    fn dead_processes_and_old_locks_are_stale() {
        let now = Timestamp::from_second(10_000).unwrap();
        let mut l = LockInfo {
            time: now,
            hostname: "h".into(),
            pid: std::process::id(),
            username: "u".into(),
            exclusive: true,
            operation: "prune".into(),
        };
        assert!(!l.is_stale(now, "h"));
        l.time = Timestamp::from_second(10_000 - 3600).unwrap();
        assert!(l.is_stale(now, "h"));
        l.time = now;
        l.pid = 0x7fff_fff0;
        assert!(l.is_stale(now, "h"));
        assert!(!l.is_stale(now, "other-host"));
    }
}
