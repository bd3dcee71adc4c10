//! Pollers: closures a reactor calls on every loop iteration (or every `period`).
//!
//! A poller reports whether it did work, which is what drives idle back-off. Pollers may
//! register and unregister pollers (including themselves) while running; such changes take
//! effect on the next iteration.

use std::cell::{Cell, RefCell};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    Busy,
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PollerId(u64);

type PollFn = Box<dyn FnMut() -> PollStatus>;

struct Slot {
    id: PollerId,
    name: &'static str,
    period_ns: u64,
    next_run_ns: u64,
    poll: Option<PollFn>,
}

#[derive(Default)]
pub(crate) struct Pollers {
    slots: RefCell<Vec<Slot>>,
    added: RefCell<Vec<Slot>>,
    removed: RefCell<Vec<PollerId>>,
    next_id: Cell<u64>,
}

impl Pollers {
    pub fn register(&self, name: &'static str, period_ns: u64, poll: PollFn) -> PollerId {
        let id = PollerId(self.next_id.get());
        self.next_id.set(id.0 + 1);
        self.added.borrow_mut().push(Slot {
            id,
            name,
            period_ns,
            next_run_ns: 0,
            poll: Some(poll),
        });
        id
    }

    pub fn unregister(&self, id: PollerId) {
        self.removed.borrow_mut().push(id);
    }

    fn apply_changes(&self) {
        let mut slots = self.slots.borrow_mut();
        slots.append(&mut self.added.borrow_mut());
        let mut removed = self.removed.borrow_mut();
        if !removed.is_empty() {
            slots.retain(|s| !removed.contains(&s.id));
            self.added.borrow_mut().retain(|s| !removed.contains(&s.id));
            removed.clear();
        }
    }

    /// Runs every due poller once. Returns (any busy, earliest next deadline of a timed poller).
    pub fn run(&self, now_ns: u64) -> (bool, Option<u64>) {
        self.apply_changes();
        let mut busy = false;
        let mut next_deadline: Option<u64> = None;
        let count = self.slots.borrow().len();
        for i in 0..count {
            let (mut poll, period) = {
                let mut slots = self.slots.borrow_mut();
                let slot = &mut slots[i];
                if slot.period_ns > 0 && slot.next_run_ns > now_ns {
                    next_deadline =
                        Some(next_deadline.map_or(slot.next_run_ns, |d| d.min(slot.next_run_ns)));
                    continue;
                }
                match slot.poll.take() {
                    Some(p) => (p, slot.period_ns),
                    None => continue,
                }
            };
            if poll() == PollStatus::Busy {
                busy = true;
            }
            let mut slots = self.slots.borrow_mut();
            let slot = &mut slots[i];
            slot.poll = Some(poll);
            if period > 0 {
                slot.next_run_ns = now_ns + period;
                next_deadline =
                    Some(next_deadline.map_or(slot.next_run_ns, |d| d.min(slot.next_run_ns)));
            }
        }
        (busy, next_deadline)
    }

    pub fn names(&self) -> Vec<(u64, &'static str, u64)> {
        self.apply_changes();
        self.slots
            .borrow()
            .iter()
            .map(|s| (s.id.0, s.name, s.period_ns))
            .collect()
    }

    pub fn clear(&self) {
        self.apply_changes();
        // Drop closures outside the borrow: their destructors may touch the reactor.
        let slots = std::mem::take(&mut *self.slots.borrow_mut());
        drop(slots);
    }
}
