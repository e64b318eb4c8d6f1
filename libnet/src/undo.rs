//! An undo stack for multi-step operations: every step that made something registers how to
//! remove it *the moment the object exists*; unless the operation commits, the undos run newest
//! first. This is how an ADD that fails half way leaves nothing behind.
//!
//! An undo step that fails is never dropped silently: [`Undo::rollback`] returns each failure
//! with the object it could not remove (the endpoint lifecycle attaches them to the error it
//! returns), and a guard dropped without `commit` or `rollback` (an early `?`) writes them to
//! stderr, where runtimes log a plugin's output. An undo that finds its object already gone has
//! done its job: `NotFound` is success.

use std::fmt;

use crate::error::{HasKind, Kind};

type Step<'a> = (String, Box<dyn FnOnce() -> Result<(), UndoFailure> + 'a>);

/// One undo step that could not be done: what it should have removed, and why it could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoFailure {
    /// The object, e.g. `veth vethc0ffee12345`.
    pub what: String,
    pub error: String,
    pub kind: Kind,
}

impl fmt::Display for UndoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not remove {}: {}", self.what, self.error)
    }
}

#[derive(Default)]
pub struct Undo<'a> {
    steps: Vec<Step<'a>>,
}

impl<'a> Undo<'a> {
    pub fn new() -> Undo<'a> {
        Undo { steps: Vec::new() }
    }

    /// Register the undo of a step that just made `what`. A `NotFound` from `f` counts as done.
    pub fn push<E: fmt::Display + HasKind>(
        &mut self,
        what: impl Into<String>,
        f: impl FnOnce() -> Result<(), E> + 'a,
    ) {
        let what = what.into();
        let name = what.clone();
        self.steps.push((
            what,
            Box::new(move || match f() {
                Err(e) if e.kind() != Kind::NotFound => Err(UndoFailure {
                    what: name,
                    error: e.to_string(),
                    kind: e.kind(),
                }),
                _ => Ok(()),
            }),
        ));
    }

    /// How many undo steps are registered.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The operation succeeded: keep everything it made.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// The operation failed: undo every step, newest first, and return what could not be undone.
    pub fn rollback(mut self) -> Vec<UndoFailure> {
        self.run()
    }

    fn run(&mut self) -> Vec<UndoFailure> {
        let mut failed = Vec::new();
        while let Some((_what, f)) = self.steps.pop() {
            if let Err(e) = f() {
                failed.push(e);
            }
        }
        failed
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        for f in self.run() {
            eprintln!("knit: rolling back: {f}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Debug)]
    struct E(Kind);
    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "refused ({})", self.0)
        }
    }
    impl HasKind for E {
        fn kind(&self) -> Kind {
            self.0
        }
    }

    fn note(log: &RefCell<Vec<&'static str>>, what: &'static str) -> Result<(), E> {
        log.borrow_mut().push(what);
        Ok(())
    }

    #[test]
    fn undoes_in_reverse_unless_committed() {
        let log = RefCell::new(Vec::new());
        {
            let mut u = Undo::new();
            u.push("a", || note(&log, "a"));
            u.push("b", || note(&log, "b"));
        }
        assert_eq!(*log.borrow(), vec!["b", "a"]);
        log.borrow_mut().clear();
        let mut u = Undo::new();
        u.push("a", || note(&log, "a"));
        u.commit();
        assert!(log.borrow().is_empty());
    }

    #[test]
    fn rollback_reports_what_it_could_not_undo_and_keeps_going() {
        let log = RefCell::new(Vec::new());
        let mut u = Undo::new();
        u.push("link a", || note(&log, "a"));
        u.push("link b", || Err(E(Kind::Busy)));
        u.push("link c", || Err(E(Kind::NotFound)));
        let failed = u.rollback();
        assert_eq!(
            *log.borrow(),
            vec!["a"],
            "a step after a failure still runs"
        );
        assert_eq!(
            failed,
            vec![UndoFailure {
                what: "link b".into(),
                error: "refused (busy)".into(),
                kind: Kind::Busy
            }],
            "NotFound means already gone: not a failure"
        );
        assert_eq!(
            failed[0].to_string(),
            "could not remove link b: refused (busy)"
        );
    }
}
