//! Repository locks (`locks/<id>`): shared for backups and restores, exclusive for operations
//! that delete data. A lock is refreshed while its holder runs; one whose process is gone (same
//! host) or that was not refreshed within [`LOCK_LIFETIME`] is stale: the next operation
//! removes it, saying whose it was, so a killed backup never blocks the next one. A live
//! conflicting lock is waited for, up to a bound ([`DEFAULT_LOCK_WAIT`] unless told), then the
//! operation fails naming the holder: nothing waits forever. Locks never protect against a
//! second writer of the same object: objects are content-addressed and every put is atomic.
//!
//! Two ways to go on without a lock, never silently: an operation that only reads (restore,
//! check, listings) takes its shared lock with [`acquire_to_read`], which skips a storage that
//! refuses the lock for want of space or write access, with a note (as restic's `--no-lock`);
//! and an operator who must free space on a full storage asks for no lock at all ([`waive`]),
//! which still refuses while another live lock is present.

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

/// How a [`LockGuard`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// Written on at least one storage and refreshed.
    Written,
    /// Written on no storage: every storage refused it (full or read-only). Enough for an
    /// operation that only reads; never a licence to delete.
    Skipped,
    /// Not written, at the operator's request, after finding no other live lock.
    Waived,
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
    /// Stale locks removed on the way in, and storages that refused the lock of an operation
    /// that only reads: one message each. An operation puts them in its report, or, when its
    /// report has no place for them, logs them with [`LockGuard::log_notes`].
    pub notes: Vec<String>,
    /// When the lock was last written (taken or refreshed).
    refreshed: Arc<std::sync::Mutex<std::time::Instant>>,
    standing: Standing,
}

impl LockGuard {
    /// Whether the lock still stands for certain: it was written recently enough that nobody
    /// can have found it stale. An operation that deletes data checks this before deleting.
    pub fn is_held(&self) -> bool {
        match self.standing {
            Standing::Written => {}
            Standing::Skipped => return false,
            Standing::Waived => return true,
        }
        let last = *self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
        last.elapsed() + LOCK_REFRESH < LOCK_LIFETIME
    }

    /// Logs each of [`LockGuard::notes`] as a warning, for an operation whose report does not
    /// carry them.
    pub fn log_notes(&self) {
        for n in &self.notes {
            tracing::warn!("{n}");
        }
    }

    /// Whether the lock was written nowhere: skipped on storages that refused it
    /// ([`acquire_to_read`]) or waived by the operator ([`waive`]).
    pub fn is_unwritten(&self) -> bool {
        self.standing != Standing::Written
    }

    /// Fails, naming `what`, unless [`LockGuard::is_held`].
    pub fn ensure_held(&self, what: &str) -> Result<()> {
        if self.is_held() {
            return Ok(());
        }
        if self.standing == Standing::Skipped {
            return Err(Error::Locked {
                what: format!("{what}: no lock could be written, so nothing may be deleted"),
            });
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

/// Why storage `name` refused a lock, when it refused for want of space or write access (a full
/// or read-only storage): then an operation that only reads goes on without it.
fn refused(e: &Error) -> Option<&'static str> {
    match e {
        Error::NoSpace { .. } => Some("it is full"),
        Error::Permission { .. } => Some("it does not let this user write (read-only?)"),
        _ => None,
    }
}

/// Writes the lock on each live storage of `tee` on its own, without dropping from the run a
/// storage that refuses it for want of space or write access (see [`refused`]): each such
/// storage gets a note in `notes`. Another failure drops the storage, as a put through the tee
/// would. Returns the key, or `None` when no storage took the lock.
async fn write_lock_where_possible(
    tee: &Tee,
    crypto: &Crypto,
    info: &LockInfo,
    notes: &mut Vec<String>,
) -> Result<Option<String>> {
    let stored = object::encode(
        crypto,
        &serde_json::to_vec(info).expect("a lock serializes"),
    );
    let key = format!("locks/{}", Id::of_stored(&stored));
    let payload = Payload::from(stored);
    let live: Vec<usize> = (0..tee.len())
        .filter(|i| tee.live() & (1 << i) != 0)
        .collect();
    let results = futures::future::join_all(
        live.iter()
            .map(|&i| tee.member(i).put(&key, payload.clone(), PutMode::Overwrite)),
    )
    .await;
    let mut written = false;
    let mut first_err = None;
    for (i, r) in live.into_iter().zip(results) {
        match r {
            Ok(()) => written = true,
            Err(e) => match refused(&e) {
                Some(why) => notes.push(format!(
                    "continuing without a lock on {}: {why} ({e}), as restic's --no-lock; an exclusive operation (prune) running meanwhile may make this {} fail, never damage the repository",
                    tee.member(i).describe(),
                    info.operation
                )),
                None => {
                    tee.fail(i, &e);
                    first_err.get_or_insert(e);
                }
            },
        }
    }
    match (written, first_err) {
        (true, _) => Ok(Some(key)),
        (false, Some(e)) => Err(e),
        (false, None) => Ok(None),
    }
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
                tracing::info!("{note}");
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
    let who = Who {
        hostname,
        username,
        operation,
    };
    take(tee, crypto, who, exclusive, false, wait).await
}

/// Takes a shared lock for an operation that only reads (restore, check, a listing), as
/// [`acquire`] does, except that a storage refusing the lock for want of space or write access
/// (full or read-only) is not dropped: the operation goes on there without a lock, and
/// [`LockGuard::notes`] says so, naming the storage and why. Such a guard never allows
/// deleting ([`LockGuard::ensure_held`] fails when no storage took the lock).
pub async fn acquire_to_read(
    tee: Arc<Tee>,
    crypto: Crypto,
    hostname: &str,
    username: &str,
    operation: &str,
    wait: Duration,
) -> Result<LockGuard> {
    let who = Who {
        hostname,
        username,
        operation,
    };
    take(tee, crypto, who, false, true, wait).await
}

/// Writes no lock, at the operator's request (`--no-lock`, to free space on a full storage
/// where no lock can be written): removes stale locks, then fails with [`Error::Locked`]
/// naming the holder while any other live lock is present. The guard allows deleting: the
/// operator answers for no other operation starting meanwhile.
pub async fn waive(
    tee: Arc<Tee>,
    crypto: Crypto,
    hostname: &str,
    operation: &str,
) -> Result<LockGuard> {
    let mut locks = list_locks(&tee, &crypto).await?;
    let notes = remove_stale(&tee, &mut locks, hostname).await;
    if let Some((_, l)) = locks.first() {
        return Err(Error::Locked {
            what: format!(
                "{operation} without a lock refused: the repository is locked by a live {}; wait for it to end (`freezer unlock` removes stale locks only)",
                l.describe()
            ),
        });
    }
    Ok(LockGuard {
        tee,
        keys: Arc::new(std::sync::Mutex::new(vec![])),
        refresher: None,
        notes,
        refreshed: Arc::new(std::sync::Mutex::new(std::time::Instant::now())),
        standing: Standing::Waived,
    })
}

/// Who asks for a lock, and for what.
#[derive(Clone, Copy)]
struct Who<'a> {
    hostname: &'a str,
    username: &'a str,
    operation: &'a str,
}

async fn take(
    tee: Arc<Tee>,
    crypto: Crypto,
    who: Who<'_>,
    exclusive: bool,
    to_read: bool,
    wait: Duration,
) -> Result<LockGuard> {
    let Who {
        hostname,
        username,
        operation,
    } = who;
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
                let key = if to_read {
                    match write_lock_where_possible(&tee, &crypto, &info, &mut notes).await? {
                        Some(k) => k,
                        None => {
                            return Ok(LockGuard {
                                tee,
                                keys: Arc::new(std::sync::Mutex::new(vec![])),
                                refresher: None,
                                notes,
                                refreshed: Arc::new(std::sync::Mutex::new(
                                    std::time::Instant::now(),
                                )),
                                standing: Standing::Skipped,
                            });
                        }
                    }
                } else {
                    write_lock(&tee, &crypto, &info)
                        .await
                        .map_err(|e| match e {
                            Error::NoSpace { .. } => e.context(format!(
                                "writing the {operation} lock (to free space, run `freezer forget --no-lock` then `freezer prune --no-lock --max-unused 100%` while no other freezer runs)"
                            )),
                            e => e.context(format!("writing the {operation} lock")),
                        })?
                };
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
        standing: Standing::Written,
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
mod tests;
