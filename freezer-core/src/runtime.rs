//! One runtime per process, for front-ends that call the library from synchronous code (the
//! Python and C bindings): made by the first call, shared by every later one and every thread,
//! made again in a child after `fork` (whose copy of the parent's has no threads).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Error, Result};

/// The runtime of this process and the process it was made in.
static RUNTIME: Mutex<Option<(u32, Arc<tokio::runtime::Runtime>)>> = Mutex::new(None);

/// This process's runtime (multi-threaded, timers and I/O enabled).
pub fn shared() -> Result<Arc<tokio::runtime::Runtime>> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    match slot.take() {
        Some((p, rt)) if p == pid => {
            *slot = Some((p, rt.clone()));
            return Ok(rt);
        }
        // The parent's runtime, inherited by fork: its threads are not in this process, and
        // dropping it would wait for them.
        Some(inherited) => std::mem::forget(inherited),
        None => {}
    }
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("freezer")
            .build()
            .map_err(|e| Error::io("starting the runtime", e))?,
    );
    *slot = Some((pid, rt.clone()));
    Ok(rt)
}

/// Runs `work` on the [`shared`] runtime and waits for it on this thread (which must not be
/// one of the runtime's), calling `on_tick` every `tick` while it runs: where a binding looks
/// at signals and reports progress, cancelling the work through its token when asked. Fails
/// only when the runtime cannot start or the work panicked.
pub fn block_ticking<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
    tick: Duration,
    mut on_tick: impl FnMut(),
) -> Result<T> {
    let rt = shared()?;
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = tx.send(work.await);
    });
    loop {
        match rx.recv_timeout(tick) {
            Ok(done) => return Ok(done),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => on_tick(),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::io(
                    "the operation",
                    std::io::Error::other("it panicked (a bug in freezer-rs)"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_runtime_serves_every_call_and_ticks_while_waiting() {
        let a = shared().unwrap();
        let b = shared().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let mut ticks = 0;
        let v = block_ticking(
            async {
                tokio::time::sleep(Duration::from_millis(60)).await;
                7
            },
            Duration::from_millis(5),
            || ticks += 1,
        )
        .unwrap();
        assert_eq!(v, 7);
        assert!(ticks >= 2, "{ticks}");
        let e = block_ticking(
            async {
                panic!("boom");
                #[allow(unreachable_code)]
                ()
            },
            Duration::from_millis(5),
            || {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("panicked"), "{e}");
    }
}
