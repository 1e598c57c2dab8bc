//! Tests of locks: sharing, stale locks, full and read-only storages, waived locks.
use super::*;
use crate::crypto::MasterKey;
use crate::sink::MemorySink;

/// A lock of user `u` on host `h`, failing at once on a conflict.
async fn take(tee: &Arc<Tee>, c: &Crypto, exclusive: bool, operation: &str) -> Result<LockGuard> {
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

/// A memory sink that refuses every put as a full (or read-only) disk would.
#[derive(Debug)]
struct Refusing {
    inner: MemorySink,
    read_only: bool,
}

#[async_trait::async_trait]
impl Sink for Refusing {
    fn describe(&self) -> String {
        "refusing:full".into()
    }
    async fn put(&self, key: &str, _: Payload, _: PutMode) -> Result<()> {
        let errno = if self.read_only {
            rustix::io::Errno::ROFS
        } else {
            rustix::io::Errno::NOSPC
        };
        Err(Error::io(
            key,
            std::io::Error::from_raw_os_error(errno.raw_os_error()),
        ))
    }
    async fn get(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<crate::sink::GetBody> {
        self.inner.get(key, range).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<crate::sink::ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn head(&self, key: &str) -> Result<crate::sink::ObjectMeta> {
        self.inner.head(key).await
    }
}

#[tokio::test]
async fn a_full_or_read_only_storage_skips_a_reading_lock_never_a_writing_one() {
    let c = Crypto::new(&MasterKey::generate(true));
    for read_only in [false, true] {
        let full: Arc<dyn Sink> = Arc::new(Refusing {
            inner: MemorySink::new("full"),
            read_only,
        });
        let tee = Arc::new(Tee::new(vec![full.clone()]).unwrap());
        let g = acquire_to_read(tee.clone(), c.clone(), "h", "u", "check", Duration::ZERO)
            .await
            .unwrap();
        assert!(g.is_unwritten());
        assert_eq!(g.notes.len(), 1, "{:?}", g.notes);
        let why = if read_only { "read-only" } else { "full" };
        assert!(
            g.notes[0].contains("continuing without a lock on refusing:full"),
            "{:?}",
            g.notes
        );
        assert!(g.notes[0].contains(why), "{:?}", g.notes);
        assert!(
            g.ensure_held("prune").is_err(),
            "a skipped lock allows no deletion"
        );
        assert_eq!(tee.live(), 1, "the storage stays in the run, for reading");
        g.release().await.unwrap();
        // A backup (or any lock taken with `acquire`) fails, naming the storage's object.
        let e = take(&tee, &c, false, "backup").await.unwrap_err();
        let want = if read_only {
            crate::ErrorKind::Permission
        } else {
            crate::ErrorKind::NoSpace
        };
        assert_eq!(e.kind(), want, "{e}");
        assert!(e.to_string().contains("writing the backup lock"), "{e}");
    }
    // Where one storage of two takes the lock, it is written there and held.
    let full: Arc<dyn Sink> = Arc::new(Refusing {
        inner: MemorySink::new("full"),
        read_only: false,
    });
    let mem = Arc::new(MemorySink::new("m"));
    let tee = Arc::new(Tee::new(vec![full, mem.clone()]).unwrap());
    let g = acquire_to_read(tee.clone(), c.clone(), "h", "u", "restore", Duration::ZERO)
        .await
        .unwrap();
    assert!(!g.is_unwritten() && g.is_held());
    assert_eq!(g.notes.len(), 1, "{:?}", g.notes);
    assert_eq!(tee.live(), 0b11);
    assert_eq!(mem.list("locks/").await.unwrap().len(), 1);
    g.release().await.unwrap();
    assert!(mem.list("locks/").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_waived_lock_is_refused_while_another_lives() {
    let tee = Arc::new(Tee::new(vec![Arc::new(MemorySink::new("m"))]).unwrap());
    let c = Crypto::new(&MasterKey::generate(true));
    let w = waive(tee.clone(), c.clone(), "h", "prune").await.unwrap();
    assert!(w.is_held() && w.is_unwritten());
    assert!(
        tee.list("locks/").await.unwrap().is_empty(),
        "nothing written"
    );
    w.release().await.unwrap();
    let b = take(&tee, &c, false, "backup").await.unwrap();
    let e = waive(tee.clone(), c.clone(), "h", "prune")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    assert!(e.to_string().contains("shared lock of u@h"), "{e}");
    b.release().await.unwrap();
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
