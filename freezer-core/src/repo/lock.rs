//! Repository locks (`locks/<id>`): shared for backups and restores, exclusive for operations
//! that delete data. A lock is refreshed while its holder runs; one whose process is gone (same
//! host) or that was not refreshed within [`LOCK_LIFETIME`] is stale: the next operation
//! removes it, saying whose it was, so a killed backup never blocks the next one. A live
//! conflicting lock is waited for, up to a bound ([`DEFAULT_LOCK_WAIT`] unless told), then the
//! operation fails naming the holder: nothing waits forever. Locks never protect against a
//! second writer of the same object: objects are content-addressed and every put is atomic.

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
/// How long an operation waits for a live conflicting lock by default.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(10 * 60);

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
    /// The holder's process-id namespace (`pid:[4026531836]`): two containers that share a
    /// host name but not their process ids cannot judge each other's processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<String>,
}

/// This process's process-id namespace, as Linux names it.
fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

impl LockInfo {
    /// Whether the lock no longer counts: its process is gone from this host, or it was not
    /// refreshed within its lifetime.
    pub fn is_stale(&self, now: Timestamp, this_host: &str) -> bool {
        self.stale_because(now, this_host).is_some()
    }

    /// Why the lock is stale, or `None` when it still counts.
    pub fn stale_because(&self, now: Timestamp, this_host: &str) -> Option<String> {
        let age = now.as_second() - self.time.as_second();
        if age > LOCK_LIFETIME.as_secs() as i64 {
            return Some(format!("not refreshed for {} minutes", age / 60));
        }
        // The process test only means something where this process sees the holder's
        // processes: the same host and the same process-id namespace.
        let same_pids = self.hostname == this_host
            && self.pid_namespace.is_some()
            && self.pid_namespace == pid_namespace();
        (same_pids && !process_alive(self.pid))
            .then(|| format!("process {} no longer runs on {}", self.pid, self.hostname))
    }

    /// `exclusive lock of ops@node1 (pid 42, prune) since 2026-11-24T10:00:00Z`.
    pub fn describe(&self) -> String {
        format!(
            "{} lock of {}@{} (pid {}, {}) since {}",
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            self.username,
            self.hostname,
            self.pid,
            self.operation,
            self.time
        )
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
    /// The lock's current key, last, after earlier ones that some storage may still hold
    /// (a refresh deletes the old key only where storages are live).
    keys: Arc<std::sync::Mutex<Vec<String>>>,
    refresher: Option<tokio::task::JoinHandle<()>>,
    /// Stale locks removed on the way in, one message each.
    pub notes: Vec<String>,
    /// When the lock was last written (taken or refreshed).
    refreshed: Arc<std::sync::Mutex<std::time::Instant>>,
}

impl LockGuard {
    /// Whether the lock still stands for certain: it was written recently enough that nobody
    /// can have found it stale. An operation that deletes data checks this before deleting.
    pub fn is_held(&self) -> bool {
        let last = *self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
        last.elapsed() + LOCK_REFRESH < LOCK_LIFETIME
    }

    /// Fails, naming `what`, unless [`LockGuard::is_held`].
    pub fn ensure_held(&self, what: &str) -> Result<()> {
        if self.is_held() {
            return Ok(());
        }
        Err(Error::Locked {
            what: format!(
                "{what}: the repository's lock could not be refreshed for too long, so another process may have taken it over; stopped before deleting"
            ),
        })
    }

    /// Removes the lock.
    pub async fn release(mut self) -> Result<()> {
        if let Some(t) = self.refresher.take() {
            t.abort();
        }
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner()).clone();
        remove_everywhere(&self.tee, &keys).await
    }
}

/// How long removing a lock from a storage that failed during the run may take: it is a
/// courtesy, and must not hold up the end of the operation.
const FAILED_STORAGE_REMOVAL: Duration = Duration::from_secs(5);

/// Deletes the lock's `keys` from every storage of `tee`: from the live ones together (a
/// failure there is returned), then, briefly and best effort, from those that failed during
/// the run, where the lock was written first (a storage back from a blip must not keep a lock
/// of a live process that holds up every later operation until it turns stale).
async fn remove_everywhere(tee: &Tee, keys: &[String]) -> Result<()> {
    let live = tee.live();
    let mut first_err = None;
    for r in futures::future::join_all(keys.iter().map(|k| tee.delete(k))).await {
        match r {
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let failed = (0..tee.len()).filter(|i| live & (1 << i) == 0);
    let courtesy = failed.flat_map(|i| keys.iter().map(move |k| tee.member(i).delete(k)));
    let _ = tokio::time::timeout(FAILED_STORAGE_REMOVAL, futures::future::join_all(courtesy)).await;
    first_err.map_or(Ok(()), Err)
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(t) = self.refresher.take() {
            t.abort();
            let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let tee = self.tee.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = remove_everywhere(&tee, &keys).await;
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

/// Reads every lock. One deleted since the listing is skipped, and so is one that does not
/// decode (damaged); one that cannot be read for another reason fails the listing, since a
/// lock overlooked could be a live backup's.
pub async fn list_locks(tee: &Tee, crypto: &Crypto) -> Result<Vec<(String, LockInfo)>> {
    let mut out = Vec::new();
    for meta in tee.list("locks/").await? {
        let data = match tee.get_bytes(&meta.key).await {
            Ok(d) => d,
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.context("reading the repository's locks")),
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

/// Removes the stale locks among `locks` (see [`LockInfo::stale_because`]); returns a
/// message for each, naming whose it was and why it went.
async fn remove_stale(
    tee: &Tee,
    locks: &mut Vec<(String, LockInfo)>,
    hostname: &str,
) -> Vec<String> {
    let now = crate::time::now();
    let mut notes = vec![];
    let mut kept = vec![];
    for (key, l) in locks.drain(..) {
        match l.stale_because(now, hostname) {
            Some(why) => {
                let note = format!("removed a stale {}: {why}", l.describe());
                tracing::warn!("{note}");
                let _ = tee.delete(&key).await;
                notes.push(note);
            }
            None => kept.push((key, l)),
        }
    }
    *locks = kept;
    notes
}

/// Takes a lock. Stale locks are removed on the way (each with a message in
/// [`LockGuard::notes`] and the log). A live conflicting lock (an exclusive one, or any one
/// when `exclusive`) is waited for, checking again every few seconds, for up to `wait`; then
/// this fails with [`Error::Locked`] naming the holder.
pub async fn acquire(
    tee: Arc<Tee>,
    crypto: Crypto,
    hostname: &str,
    username: &str,
    exclusive: bool,
    operation: &str,
    wait: Duration,
) -> Result<LockGuard> {
    let info = LockInfo {
        time: crate::time::now(),
        hostname: hostname.to_string(),
        pid: std::process::id(),
        username: username.to_string(),
        exclusive,
        operation: operation.to_string(),
        pid_namespace: pid_namespace(),
    };
    let conflict = |locks: &[(String, LockInfo)], own: Option<&str>| {
        locks
            .iter()
            .filter(|(k, _)| Some(k.as_str()) != own)
            .find(|(_, l)| exclusive || l.exclusive)
            .map(|(_, l)| l.clone())
    };
    let started = std::time::Instant::now();
    let mut notes = vec![];
    let mut said_waiting = false;
    let mut pause = Duration::from_millis(500);
    let key = loop {
        let mut locks = list_locks(&tee, &crypto).await?;
        notes.extend(remove_stale(&tee, &mut locks, hostname).await);
        let holder = match conflict(&locks, None) {
            None => {
                let key = write_lock(&tee, &crypto, &info).await?;
                // Another process may have locked at the same moment: look again, and back
                // off if so (both may back off; the waits are jittered and bounded).
                let mut again = match list_locks(&tee, &crypto).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tee.delete(&key).await;
                        return Err(e);
                    }
                };
                remove_stale(&tee, &mut again, hostname).await;
                match conflict(&again, Some(&key)) {
                    None => break key,
                    Some(l) => {
                        let _ = tee.delete(&key).await;
                        l
                    }
                }
            }
            Some(l) => l,
        };
        let waited = started.elapsed();
        if waited >= wait {
            return Err(Error::Locked {
                what: format!(
                    "the repository is locked: {}{}; `freezer unlock` removes stale locks",
                    holder.describe(),
                    if wait.is_zero() {
                        String::new()
                    } else {
                        format!(" (waited {} s)", waited.as_secs())
                    }
                ),
            });
        }
        if !said_waiting {
            tracing::warn!(
                "waiting up to {} s for the {} to go",
                wait.as_secs(),
                holder.describe()
            );
            said_waiting = true;
        }
        let mut jitter = [0u8; 1];
        crate::crypto::random_bytes(&mut jitter);
        let nap = (pause + Duration::from_millis(u64::from(jitter[0]) * 2)).min(wait - waited);
        tokio::time::sleep(nap).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    };
    let keys = Arc::new(std::sync::Mutex::new(vec![key]));
    let refreshed = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    let refresher = {
        let (tee, keys, crypto) = (tee.clone(), keys.clone(), crypto.clone());
        let refreshed = refreshed.clone();
        tokio::spawn(async move {
            let mut info = info;
            loop {
                tokio::time::sleep(LOCK_REFRESH).await;
                info.time = crate::time::now();
                let written = std::time::Instant::now();
                if let Ok(new_key) = write_lock(&tee, &crypto, &info).await {
                    *refreshed.lock().unwrap_or_else(|e| e.into_inner()) = written;
                    let old = {
                        let mut k = keys.lock().unwrap_or_else(|e| e.into_inner());
                        k.push(new_key);
                        k[k.len() - 2].clone()
                    };
                    // Gone everywhere only when every storage is live; else it stays listed,
                    // for the release to remove where it still is.
                    let everywhere = tee.live().count_ones() as usize == tee.len();
                    if tee.delete(&old).await.is_ok() && everywhere {
                        keys.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .retain(|k| *k != old);
                    }
                }
            }
        })
    };
    Ok(LockGuard {
        tee,
        keys,
        refresher: Some(refresher),
        notes,
        refreshed,
    })
}

/// Removes stale locks, or every lock when `all` (only when no operation runs anywhere: a
/// live backup whose lock goes is no longer protected from a prune). Returns what went.
pub async fn unlock(
    tee: &Tee,
    crypto: &Crypto,
    hostname: &str,
    all: bool,
) -> Result<Vec<LockInfo>> {
    let now = crate::time::now();
    let mut gone = vec![];
    for (key, l) in list_locks(tee, crypto).await? {
        if all || l.is_stale(now, hostname) {
            tee.delete(&key).await?;
            gone.push(l);
        }
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::sink::MemorySink;

    /// A lock of user `u` on host `h`, failing at once on a conflict.
    async fn take(
        tee: &Arc<Tee>,
        c: &Crypto,
        exclusive: bool,
        operation: &str,
    ) -> Result<LockGuard> {
        acquire(
            tee.clone(),
            c.clone(),
            "h",
            "u",
            exclusive,
            operation,
            Duration::ZERO,
        )
        .await
    }

    #[tokio::test]
    async fn shared_locks_coexist_exclusive_ones_do_not() {
        let tee = Arc::new(Tee::new(vec![Arc::new(MemorySink::new("m"))]).unwrap());
        let c = Crypto::new(&MasterKey::generate(true));
        let a = take(&tee, &c, false, "backup").await.unwrap();
        let b = take(&tee, &c, false, "backup").await.unwrap();
        let e = take(&tee, &c, true, "prune").await.unwrap_err();
        assert!(matches!(e, Error::Locked { .. }), "{e}");
        a.release().await.unwrap();
        b.release().await.unwrap();
        let x = take(&tee, &c, true, "prune").await.unwrap();
        assert!(take(&tee, &c, false, "backup").await.is_err());
        x.release().await.unwrap();
        assert!(tee.list("locks/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn stale_locks_are_taken_over_with_a_note_and_live_ones_waited_for() {
        let tee = Arc::new(Tee::new(vec![Arc::new(MemorySink::new("m"))]).unwrap());
        let c = Crypto::new(&MasterKey::generate(true));
        // An exclusive lock of another host, not refreshed for an hour: stale.
        let old = LockInfo {
            time: crate::time::now() - jiff::SignedDuration::from_hours(1),
            hostname: "gone-host".into(),
            pid: 1,
            username: "ops".into(),
            exclusive: true,
            operation: "prune".into(),
            pid_namespace: None,
        };
        write_lock(&tee, &c, &old).await.unwrap();
        let g = take(&tee, &c, false, "backup").await.unwrap();
        assert_eq!(g.notes.len(), 1, "{:?}", g.notes);
        assert!(g.notes[0].contains("ops@gone-host"), "{:?}", g.notes);
        assert!(
            g.notes[0].contains("not refreshed for 60 minutes"),
            "{:?}",
            g.notes
        );
        assert_eq!(
            list_locks(&tee, &c).await.unwrap().len(),
            1,
            "only ours is left"
        );
        // An exclusive lock waits for the shared one, and gets it once it goes.
        let t = tee.clone();
        let c2 = c.clone();
        let waiter = tokio::spawn(async move {
            acquire(t, c2, "h", "u", true, "prune", Duration::from_secs(30)).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished());
        g.release().await.unwrap();
        let x = waiter.await.unwrap().unwrap();
        // A bounded wait ends with the holder's name.
        let started = std::time::Instant::now();
        let e = acquire(
            tee.clone(),
            c.clone(),
            "h",
            "u",
            false,
            "backup",
            Duration::from_millis(700),
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(700));
        assert!(e.to_string().contains("exclusive lock of u@h"), "{e}");
        assert!(e.to_string().contains("prune"), "{e}");
        x.release().await.unwrap();
    }

    #[tokio::test]
    async fn unlock_removes_stale_locks_or_all() {
        let tee = Arc::new(Tee::new(vec![Arc::new(MemorySink::new("m"))]).unwrap());
        let c = Crypto::new(&MasterKey::generate(true));
        let mut dead = LockInfo {
            time: crate::time::now(),
            hostname: "h".into(),
            pid: 0x7fff_fff0,
            username: "u".into(),
            exclusive: false,
            operation: "backup".into(),
            pid_namespace: pid_namespace(),
        };
        write_lock(&tee, &c, &dead).await.unwrap();
        dead.pid = std::process::id();
        write_lock(&tee, &c, &dead).await.unwrap();
        let gone = unlock(&tee, &c, "h", false).await.unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].pid, 0x7fff_fff0);
        assert_eq!(unlock(&tee, &c, "h", true).await.unwrap().len(), 1);
        assert!(list_locks(&tee, &c).await.unwrap().is_empty());
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
            pid_namespace: pid_namespace(),
        };
        assert!(!l.is_stale(now, "h"));
        l.time = Timestamp::from_second(10_000 - 3600).unwrap();
        assert!(l.is_stale(now, "h"));
        l.time = now;
        l.pid = 0x7fff_fff0;
        assert!(l.is_stale(now, "h"));
        assert!(!l.is_stale(now, "other-host"));
        // Another process-id namespace on the same host name (a container): its processes
        // cannot be judged from here, only its age counts.
        l.pid_namespace = Some("pid:[1]".into());
        assert!(!l.is_stale(now, "h"));
        l.pid_namespace = None;
        assert!(!l.is_stale(now, "h"));
    }
}
