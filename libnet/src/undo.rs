//! An undo guard for multi-step operations: every step that made something registers how to
//! remove it; unless the operation commits, dropping the guard runs the undos in reverse order.
//! This is how an ADD that fails half way leaves nothing behind.

type Step<'a> = (&'static str, Box<dyn FnOnce() + 'a>);

#[derive(Default)]
pub struct Undo<'a> {
    steps: Vec<Step<'a>>,
}

impl<'a> Undo<'a> {
    pub fn new() -> Undo<'a> {
        Undo { steps: Vec::new() }
    }

    /// Register the undo of a step that just succeeded.
    pub fn push(&mut self, what: &'static str, f: impl FnOnce() + 'a) {
        self.steps.push((what, Box::new(f)));
    }

    /// The operation succeeded: keep everything it made.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        while let Some((_what, f)) = self.steps.pop() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn undoes_in_reverse_unless_committed() {
        let log = RefCell::new(Vec::new());
        {
            let mut u = Undo::new();
            u.push("a", || log.borrow_mut().push("a"));
            u.push("b", || log.borrow_mut().push("b"));
        }
        assert_eq!(*log.borrow(), vec!["b", "a"]);
        log.borrow_mut().clear();
        let mut u = Undo::new();
        u.push("a", || log.borrow_mut().push("a"));
        u.commit();
        assert!(log.borrow().is_empty());
    }
}
