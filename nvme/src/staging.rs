//! The receive staging buffer both ends of an NVMe/TCP connection parse PDUs from.
//!
//! The socket fills the free tail; the protocol layer parses and consumes from the front, in
//! place. While a receive is in flight the memory belongs to the socket (ownership passes
//! through [`RecvBuf`]) and nothing is pending. Unconsumed bytes move to the front only when
//! the tail runs short, so a stream of small PDUs costs no copying.

use oxstor_reactor::net::{RecvBuf, RecvMem};

pub struct Staging {
    mem: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    capacity: usize,
}

impl Staging {
    pub fn new(capacity: usize) -> Staging {
        Staging {
            mem: Some(vec![0u8; capacity].into_boxed_slice()),
            start: 0,
            end: 0,
            capacity,
        }
    }

    /// Received bytes not consumed yet (none while a receive is in flight).
    pub fn pending(&self) -> &[u8] {
        self.mem
            .as_deref()
            .and_then(|m| m.get(self.start..self.end))
            .unwrap_or(&[])
    }

    /// `len` bytes that were consumed `back` bytes ago (a header kept for an error report);
    /// valid until the memory is lent again.
    pub fn before(&self, back: usize, len: usize) -> &[u8] {
        let from = self.start.saturating_sub(back);
        self.mem
            .as_deref()
            .and_then(|m| m.get(from..(from + len).min(self.start)))
            .unwrap_or(&[])
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Whether the memory is here (no receive in flight).
    pub fn is_home(&self) -> bool {
        self.mem.is_some()
    }

    /// The free tail, lent to a receive; None if a receive already has it.
    pub fn lend(&mut self) -> Option<RecvBuf> {
        let mut mem = self.mem.take()?;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.end > self.capacity / 2 {
            mem.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        Some(RecvBuf {
            mem: RecvMem::Heap(mem),
            offset: self.end,
            len: self.capacity - self.end,
        })
    }

    /// The receive gave the memory back with `received` new bytes (0 or less: none).
    pub fn returned(&mut self, mem: Box<[u8]>, received: i32) {
        self.mem = Some(mem);
        if received > 0 {
            self.end = (self.end + received as usize).min(self.capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(s: &mut Staging, bytes: &[u8]) {
        let buf = s.lend().unwrap();
        let RecvMem::Heap(mut mem) = buf.mem else {
            unreachable!()
        };
        mem[buf.offset..buf.offset + bytes.len()].copy_from_slice(bytes);
        s.returned(mem, bytes.len() as i32);
    }

    #[test]
    fn parses_in_place_and_compacts_only_when_short() {
        let mut s = Staging::new(16);
        fill(&mut s, b"abcdefghij");
        assert_eq!(s.pending(), b"abcdefghij");
        s.consume(8);
        assert_eq!(s.pending(), b"ij");
        let buf = s.lend().unwrap();
        assert_eq!((buf.offset, buf.len), (2, 14), "tail ran short: compacted");
        assert!(!s.is_home());
        assert_eq!(s.pending(), b"");
        let RecvMem::Heap(mem) = buf.mem else {
            unreachable!()
        };
        s.returned(mem, 0);
        assert_eq!(s.pending(), b"ij");
        s.consume(99);
        assert_eq!(s.pending(), b"");
        assert!(s.lend().is_some());
        assert!(s.lend().is_none(), "one receive at a time");
    }
}
