//! The memory budget of a run: the bytes of the buffers it holds in flight (blocks read from
//! files, chunks waiting for a compressor, packs being filled and uploaded, runs of packs
//! fetched by a restore and the plaintext decoded from them) are leased from one [`Budget`].
//!
//! The stages that bring data in (a backup's readers, at a cut between chunks; a restore's
//! fetchers) wait for room ([`Budget::acquire`]); the stages after them never wait on the budget
//! ([`Budget::charge`]): they only pass on what was let in, and a stage that waited there could
//! wait for the very bytes it holds. What is charged still counts, so the readers hold back
//! while packs are uploaded. When the budget is full the run slows down, it never fails: a
//! waiter is let in whatever the budget says once nothing waited-for is in flight, so a buffer
//! larger than the whole budget goes through alone.
//!
//! What a budget does not hold: the index (a fixed number of bytes per blob), the per-thread
//! state of the pools (a compressor's context, a thread's stack), the plan of a restore and
//! the tree of a backup. The limit is a bound on buffers, not on the process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::{Error, Result};

/// The default budget: enough for the pipelines to keep two to sixteen workers busy on local
/// disks, small beside what a node runs besides backups.
pub const DEFAULT_MAX_MEMORY: usize = 32 << 20;

/// The smallest budget accepted: one chunk may be 8 MiB.
pub const MIN_MAX_MEMORY: usize = 8 << 20;

/// Bytes in flight, leased by the stages of a run. Shared by `Arc`; one per run, or one for
/// several runs that should share a limit.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    state: Mutex<State>,
    freed: Condvar,
    freed_async: tokio::sync::Notify,
    peak: AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    /// Every byte leased.
    used: usize,
    /// The bytes of those leased by [`Budget::acquire`] (the stages that wait).
    waited: usize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            state: Mutex::default(),
            freed: Condvar::new(),
            freed_async: tokio::sync::Notify::new(),
            peak: AtomicUsize::new(0),
        })
    }

    /// A budget of [`DEFAULT_MAX_MEMORY`].
    pub fn default_budget() -> Arc<Budget> {
        Budget::new(DEFAULT_MAX_MEMORY)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes leased now.
    pub fn in_use(&self) -> usize {
        self.lock().used
    }

    /// The most bytes leased at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `n` bytes when they fit, or when nothing waited-for is in flight.
    fn try_take(&self, state: &mut State, n: usize) -> bool {
        if state.waited > 0 && state.used + n > self.limit {
            return false;
        }
        state.used += n;
        state.waited += n;
        self.peak.fetch_max(state.used, Ordering::Relaxed);
        true
    }

    /// Waits for room for `n` bytes, asking `stop` every 50 ms; `None` when it said stop.
    pub fn acquire(self: &Arc<Self>, n: usize, stop: impl Fn() -> bool) -> Option<Lease> {
        let mut state = self.lock();
        loop {
            if self.try_take(&mut state, n) {
                return Some(self.lease(n, true));
            }
            if stop() {
                return None;
            }
            state = self
                .freed
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// [`Budget::acquire`] for async callers (cancel by dropping the future).
    pub async fn acquire_async(self: &Arc<Self>, n: usize) -> Lease {
        loop {
            let freed = self.freed_async.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take(&mut self.lock(), n) {
                return self.lease(n, true);
            }
            freed.await;
        }
    }

    /// Counts `n` bytes at once, over the limit if need be: for the stages that pass on what
    /// was let in.
    pub fn charge(self: &Arc<Self>, n: usize) -> Lease {
        let mut state = self.lock();
        state.used += n;
        self.peak.fetch_max(state.used, Ordering::Relaxed);
        self.lease(n, false)
    }

    fn lease(self: &Arc<Self>, n: usize, waited: bool) -> Lease {
        Lease {
            budget: Some(self.clone()),
            n,
            waited,
        }
    }

    fn give_back(&self, n: usize, waited: bool) {
        let mut state = self.lock();
        state.used -= n;
        if waited {
            state.waited -= n;
        }
        drop(state);
        self.freed.notify_all();
        self.freed_async.notify_waiters();
    }
}

/// Bytes leased from a [`Budget`], given back when dropped.
#[derive(Debug, Default)]
pub struct Lease {
    budget: Option<Arc<Budget>>,
    n: usize,
    waited: bool,
}

impl Lease {
    /// The bytes leased.
    pub fn bytes(&self) -> usize {
        self.n
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(b) = self.budget.take() {
            b.give_back(self.n, self.waited);
        }
    }
}

/// What a run's buffers took of its budget, and the process's peak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryUse {
    /// The budget's limit, bytes.
    pub budget: u64,
    /// The most bytes leased from it at once (with several runs on one budget, theirs too).
    pub peak_leased: u64,
    /// The process's peak RSS so far ([`peak_rss`]; in a long-lived process, its peak since
    /// it started, not this run's alone).
    pub peak_rss: Option<u64>,
}

impl MemoryUse {
    /// What `budget` saw, with the process's peak now.
    pub fn of(budget: &Budget) -> MemoryUse {
        MemoryUse {
            budget: budget.limit() as u64,
            peak_leased: budget.peak() as u64,
            peak_rss: peak_rss(),
        }
    }
}

/// How much of the machine a run may use.
#[derive(Clone, Debug)]
pub struct Resources {
    /// Workers of every pool (a backup's readers and compressors, a restore's fetchers and
    /// decoders, the tar engine's compressors); 0: one per core.
    pub threads: usize,
    /// The buffers in flight.
    pub memory: Arc<Budget>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            threads: 0,
            memory: Budget::default_budget(),
        }
    }
}

impl Resources {
    /// `threads` workers (0: the cores) and a budget of `max_memory` bytes (0: the default).
    pub fn new(threads: usize, max_memory: usize) -> Resources {
        Resources {
            threads,
            memory: Budget::new(if max_memory == 0 {
                DEFAULT_MAX_MEMORY
            } else {
                max_memory
            }),
        }
    }

    /// The workers: `threads`, or the cores when it is 0.
    pub fn workers(&self) -> usize {
        workers(self.threads)
    }
}

/// `threads` workers, or one per core when it is 0 (2 where the cores cannot be counted).
pub fn workers(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
}

/// Reads a size as an operator writes it: `268435456`, `256M`, `256MiB`, `1G`, `512k`
/// (powers of 1024, case ignored).
pub fn parse_size(what: &str, text: &str) -> Result<usize> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(Error::bad_input(
                what,
                format!("{text:?} is not a size (a number with K, M, G or T, e.g. 256M)"),
            ));
        }
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| {
            Error::bad_input(
                what,
                format!("{text:?} is not a size (a number with K, M, G or T, e.g. 256M)"),
            )
        })
}

/// [`parse_size`] for a memory budget: at least [`MIN_MAX_MEMORY`].
pub fn parse_max_memory(what: &str, text: &str) -> Result<usize> {
    let n = parse_size(what, text)?;
    if n < MIN_MAX_MEMORY {
        return Err(Error::bad_input(
            what,
            format!(
                "{text} is less than the smallest budget, {} MiB (one chunk may be 8 MiB)",
                MIN_MAX_MEMORY >> 20
            ),
        ));
    }
    Ok(n)
}

/// The most memory this process has held resident (its peak RSS, `VmHWM` of
/// `/proc/self/status`), from the kernel's own accounting; `None` where it is not readable.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_operators_write_them() {
        assert_eq!(parse_size("m", "256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("m", "256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("m", "1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("m", "4096").unwrap(), 4096);
        assert_eq!(parse_size("m", "512 KiB").unwrap(), 512 << 10);
        for bad in ["", "M", "12Q", "-1M", "1.5G", "99999999999999999999T"] {
            let e = parse_size("max_memory", bad).unwrap_err().to_string();
            assert!(
                e.contains("max_memory") && e.contains("is not a size"),
                "{bad}: {e}"
            );
        }
        let e = parse_max_memory("max_memory", "1M")
            .unwrap_err()
            .to_string();
        assert!(e.contains("less than the smallest budget"), "{e}");
    }

    #[test]
    fn a_full_budget_makes_waiters_wait_and_lets_one_through_alone() {
        let b = Budget::new(10);
        let a = b.acquire(6, || false).unwrap();
        // Charged bytes count but never wait.
        let c = b.charge(20);
        assert_eq!(b.in_use(), 26);
        // A waiter does not fit while `a` is in flight...
        assert!(b.acquire(1, || true).is_none());
        drop(a);
        // ...and, with nothing waited-for in flight, goes through even over the limit.
        let big = b.acquire(100, || true).unwrap();
        assert_eq!(big.bytes(), 100);
        drop((big, c));
        assert_eq!(b.in_use(), 0);
        assert_eq!(b.peak(), 120);
    }

    #[test]
    fn a_waiter_is_woken_when_room_is_given_back() {
        let b = Budget::new(10);
        let held = b.acquire(8, || false).unwrap();
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || b2.acquire(8, || false).map(|l| l.bytes()));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.join().unwrap(), Some(8));
    }

    #[tokio::test]
    async fn an_async_waiter_is_woken_too() {
        let b = Budget::new(10);
        let held = b.acquire(8, || false).unwrap();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire_async(8).await.bytes() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.await.unwrap(), 8);
    }
}
