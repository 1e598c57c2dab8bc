//! Cancellation: how a scheduler's `abort` (or a front-end's Ctrl-C) stops a running action.
//!
//! A [`CancelToken`] is shared between whoever may cancel and the running work. The engine
//! checks it between units of work and ends with [`crate::Error::Cancelled`], leaving the
//! repository as a killed process would leave it: valid, with nothing half-written referenced.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A cheaply cloned flag that, once set, stays set; every clone sees it.
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    notify: tokio::sync::Notify,
}

impl CancelToken {
    /// A token nobody has cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the work holding a clone of this token to stop.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// `Err(Error::Cancelled)` once [`CancelToken::cancel`] was called: the check made between
    /// units of work.
    pub fn check(&self) -> crate::Result<()> {
        if self.is_cancelled() {
            Err(crate::Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Completes once the token is cancelled (at once if it already is).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_a_cancel_and_waiters_wake() {
        let t = CancelToken::new();
        let c = t.clone();
        assert!(!c.is_cancelled());
        let waiter = tokio::spawn(async move { c.cancelled().await });
        tokio::task::yield_now().await;
        t.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
            .await
            .expect("the waiter wakes")
            .unwrap();
        assert!(t.is_cancelled());
        t.cancelled().await;
    }
}
