//! One-shot timers, ordered by deadline.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

type TimerFn = Box<dyn FnOnce()>;

#[derive(Default)]
pub(crate) struct Timers {
    heap: RefCell<BinaryHeap<Reverse<(u64, u64)>>>,
    callbacks: RefCell<std::collections::HashMap<u64, TimerFn>>,
    next_id: Cell<u64>,
}

impl Timers {
    pub fn schedule(&self, deadline_ns: u64, f: TimerFn) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.heap.borrow_mut().push(Reverse((deadline_ns, id)));
        self.callbacks.borrow_mut().insert(id, f);
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.borrow().peek().map(|Reverse((d, _))| *d)
    }

    /// Fires every expired timer; returns how many fired.
    pub fn fire(&self, now_ns: u64) -> usize {
        let mut fired = 0;
        loop {
            let id = {
                let mut heap = self.heap.borrow_mut();
                match heap.peek() {
                    Some(Reverse((d, _))) if *d <= now_ns => {}
                    _ => break,
                }
                match heap.pop() {
                    Some(Reverse((_, id))) => id,
                    None => break,
                }
            };
            let f = self.callbacks.borrow_mut().remove(&id);
            if let Some(f) = f {
                f();
                fired += 1;
            }
        }
        fired
    }

    pub fn clear(&self) {
        self.heap.borrow_mut().clear();
        let callbacks = std::mem::take(&mut *self.callbacks.borrow_mut());
        drop(callbacks);
    }
}
