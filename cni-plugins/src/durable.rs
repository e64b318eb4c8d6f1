//! Work that must be finished before the plugin answers, but may run beside the rest of the
//! verb: today the fsync of new address reservations, which overlaps the kernel work of a
//! bridge ADD instead of preceding it (a disk flush is ~4 ms here, most of an ADD).
//!
//! The list belongs to one call ([`crate::skel::Context::deferred`] in its `Args`), never to
//! the process: [`crate::skel::run`] waits for that call's work, and only its, before printing
//! anything; a failure turns the answer into an error. Two calls in one process never wait for
//! (or report) each other's work.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::skel::{CniError, ERR_INTERNAL};

type Pending = JoinHandle<Result<(), CniError>>;

/// The deferred work of one call. Clones are handles to the same list, so a copy of the
/// call's `Args` (a delegated IPAM call) adds to the work its answer waits for.
#[derive(Debug, Clone, Default)]
pub struct Deferred(Arc<Mutex<Vec<Pending>>>);

impl Deferred {
    /// Start `work` on its own thread; the answer waits for it.
    pub fn defer(&self, work: impl FnOnce() -> Result<(), CniError> + Send + 'static) {
        let h = std::thread::spawn(work);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    }

    /// Work started and not yet waited for.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wait for everything deferred so far; the first failure is returned.
    pub fn wait_all(&self) -> Result<(), CniError> {
        let pending: Vec<Pending> =
            std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        let mut first = Ok(());
        for h in pending {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(CniError::new(ERR_INTERNAL, "deferred work panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn two_calls_never_wait_for_each_other() {
        let (a, b) = (Deferred::default(), Deferred::default());
        let (go, wait) = mpsc::channel::<()>();
        a.defer(move || {
            wait.recv_timeout(Duration::from_secs(10)).ok();
            Err(CniError::new(5, "a's fsync failed"))
        });
        // b has nothing of its own: it answers at once and does not see a's failure.
        b.wait_all().unwrap();
        assert_eq!((a.len(), b.len()), (1, 0));
        go.send(()).unwrap();
        let e = a.wait_all().unwrap_err();
        assert_eq!(e.msg, "a's fsync failed");
        assert!(a.is_empty());
        a.wait_all().unwrap();
    }

    #[test]
    fn a_clone_adds_to_the_same_call_and_the_first_failure_wins() {
        let a = Deferred::default();
        let copy = a.clone();
        copy.defer(|| Err(CniError::new(5, "first")));
        std::thread::sleep(Duration::from_millis(10));
        a.defer(|| Err(CniError::new(5, "second")));
        a.defer(|| Ok(()));
        assert_eq!(a.len(), 3);
        assert_eq!(a.wait_all().unwrap_err().msg, "first");
        assert!(copy.is_empty());
    }
}
