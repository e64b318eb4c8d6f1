//! Work that must be finished before the plugin answers, but may run beside the rest of the
//! verb: today the fsync of new address reservations, which overlaps the kernel work of a
//! bridge ADD instead of preceding it (a disk flush is ~4 ms here, most of an ADD).
//! [`crate::skel::run`] waits for all of it before printing anything; a failure turns the
//! answer into an error.

use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::skel::{CniError, ERR_INTERNAL};

type Pending = JoinHandle<Result<(), CniError>>;

static PENDING: Mutex<Vec<Pending>> = Mutex::new(Vec::new());

/// Start `work` on its own thread; the answer waits for it.
pub fn defer(work: impl FnOnce() -> Result<(), CniError> + Send + 'static) {
    let h = std::thread::spawn(work);
    PENDING.lock().unwrap_or_else(|e| e.into_inner()).push(h);
}

/// Wait for everything deferred so far; the first failure is returned.
pub fn wait_all() -> Result<(), CniError> {
    let pending: Vec<Pending> =
        std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
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
