//! The Primary's write path.
//!
//! A write starts only when it overlaps no write (or resync window) in flight — so both nodes
//! apply overlapping writes in the same order — and when its activity-log extents are
//! committed. Then the same buffer goes to the local disk and, without a copy, to every
//! connected peer's data stream; a peer that is not connected gets the blocks marked in its
//! bitmap instead. The write completes to the submitter when the local write is done and
//! every connected peer has answered as its protocol asks: A = sent, B = `RecvAck`,
//! C = `WriteAck`.
//!
//! Epochs: the first completion after a barrier closes the epoch, so the next write is
//! preceded by a `Barrier`. A receiver under A/B finishes an epoch before it starts the next
//! one, which keeps dependent writes in order on the Secondary. Ranges stay in the transfer
//! log until their epoch's `BarrierAck`; a link that dies marks everything still there (and
//! every write still waiting for that peer) out of sync.

use crate::link::Seg;
use crate::meta::activity_log::Begin;
use crate::options::Protocol;
use crate::resource::{Peer, Resource, Waiting};
use crate::state::Role;
use crate::wire::{Ack, Barrier, Data, Packet};
use oxstor_bdev::{complete_later, BdevIo, IoBuf, IoDone, IoStatus, IoType};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::ops::RangeInclusive;
use std::rc::Rc;

pub(crate) struct WriteReq {
    pub id: u64,
    pub io: RefCell<Option<Box<BdevIo>>>,
    pub data: RefCell<Option<Rc<IoBuf>>>,
    pub offset: u64,
    pub blocks: u64,
    pub extents: RangeInclusive<u32>,
    pub local: Cell<Option<IoStatus>>,
    /// Peers (by index) whose answer is still due.
    pub wait_ack: Cell<u32>,
    /// Peers whose data stream still holds our bytes.
    pub wait_sent: Cell<u32>,
    pub started_ns: u64,
}

#[derive(Default)]
pub(crate) struct WriteState {
    pub next_id: u64,
    pub inflight: HashMap<u64, Rc<WriteReq>>,
    /// Ranges [start, end) that new writes must not overlap: writes in flight (or waiting for
    /// their AL commit) and resync windows.
    pub busy: Vec<(u64, u64, u64)>,
    pub waiting: VecDeque<Waiting>,
    pub al_waiting: Vec<Waiting>,
    pub al_commit_in_flight: bool,
    pub al_commits: u64,
    pub gen_in_flight: bool,
    pub retrying: bool,
    pub local_done: Option<Rc<LocalDone>>,
}

/// Tags in `busy` for resync windows, above any write id.
pub(crate) const RESYNC_TAG: u64 = 1 << 63;

fn overlaps(busy: &[(u64, u64, u64)], start: u64, end: u64) -> bool {
    busy.iter().any(|&(s, e, _)| s < end && start < e)
}

/// Completes the local half of Primary writes (the tag is the request id). One per
/// resource, created on its first write, so a write allocates no completion handler.
pub(crate) struct LocalDone {
    res: std::rc::Weak<Resource>,
}

impl IoDone for LocalDone {
    fn io_done(&self, io: Box<BdevIo>, tag: u64) {
        let Some(res) = self.res.upgrade() else {
            return;
        };
        let req = res.writes.borrow().inflight.get(&tag).cloned();
        let Some(req) = req else { return };
        if !io.status.is_success() {
            tracing::error!(
                "{}: local write of {} blocks at {} failed: {:?}",
                res.name,
                io.num_blocks,
                io.offset_blocks,
                io.status
            );
        }
        req.local.set(Some(io.status));
        drop(io);
        res.check_complete(&req);
    }
}

impl Resource {
    /// Entry point for writes on the home core.
    pub fn submit_write(self: &Rc<Self>, io: Box<BdevIo>) {
        if self.role.get() != Role::Primary {
            return complete_later(io, IoStatus::Failed(libc::EROFS));
        }
        let Some(vol) = self.volume() else {
            return complete_later(io, IoStatus::Failed(libc::ENODEV));
        };
        if vol.disk_state.get() != crate::state::DiskState::UpToDate {
            return complete_later(io, IoStatus::Failed(libc::EIO));
        }
        let w = Waiting {
            io,
            extents: None,
            al_commit: 0,
        };
        if !self.writes.borrow().waiting.is_empty() {
            // Keep arrival order behind writes that already wait.
            self.writes.borrow_mut().waiting.push_back(w);
            return;
        }
        if let Some(w) = self.try_start(w) {
            self.writes.borrow_mut().waiting.push_back(w);
        }
    }

    /// Starts `w` or gives it back if it must wait.
    fn try_start(self: &Rc<Self>, w: Waiting) -> Option<Waiting> {
        let Some(vol) = self.volume() else {
            complete_later(w.io, IoStatus::Failed(libc::ENODEV));
            return None;
        };
        let start = w.io.offset_blocks;
        let end = start + w.io.num_blocks;
        {
            let st = self.writes.borrow();
            if st.gen_in_flight || overlaps(&st.busy, start, end) {
                return Some(w);
            }
        }
        if self.need_new_gen.get() {
            self.start_new_generation();
            return Some(w);
        }
        let bs = vol.block_size as u64;
        let extents =
            crate::meta::activity_log::ActivityLog::extents_of(start * bs, (end - start) * bs);
        let begin = vol.al.borrow_mut().begin(extents.clone());
        match begin {
            Begin::Hot => {
                self.writes.borrow_mut().busy.push((start, end, u64::MAX));
                self.start_write(w.io, extents);
                None
            }
            Begin::NeedsCommit => {
                let mut st = self.writes.borrow_mut();
                st.busy.push((start, end, u64::MAX));
                let commit = st.al_commits + 1;
                st.al_waiting.push(Waiting {
                    extents: Some(extents),
                    al_commit: commit,
                    ..w
                });
                drop(st);
                self.commit_al();
                None
            }
            Begin::Full => Some(w),
        }
    }

    fn start_new_generation(self: &Rc<Self>) {
        let Some(vol) = self.volume() else { return };
        self.writes.borrow_mut().gen_in_flight = true;
        let absent: Vec<u8> = self
            .peers
            .borrow()
            .iter()
            .filter(|p| p.established_link().is_none())
            .map(|p| p.node_id)
            .collect();
        let uuid = crate::meta::generation::random_uuid();
        crate::meta::generation::new_generation(&mut vol.sb.borrow_mut(), &absent, uuid);
        tracing::info!(
            "{}: new current UUID {uuid:016X} (peers not connected: {absent:?})",
            self.name
        );
        self.need_new_gen.set(false);
        let me = self.clone();
        vol.persist_sb(move |_| {
            me.writes.borrow_mut().gen_in_flight = false;
            me.retry_waiting();
        });
    }

    fn commit_al(self: &Rc<Self>) {
        let Some(vol) = self.volume() else { return };
        {
            let st = self.writes.borrow();
            if st.al_commit_in_flight || !vol.al.borrow().has_pending() {
                return;
            }
        }
        let (tr, block, evicted) = vol.al.borrow_mut().prepare_commit();
        {
            let mut st = self.writes.borrow_mut();
            st.al_commit_in_flight = true;
            st.al_commits += 1;
        }
        let me = self.clone();
        let offset = vol
            .layout
            .al_slot_offset(tr % crate::meta::layout::AL_SLOTS);
        let write_al = move || {
            let vol2 = me.volume();
            let Some(vol2) = vol2 else { return };
            let me2 = me.clone();
            vol2.meta.write(
                vec![(offset, block)],
                Box::new(move |_ok| {
                    if let Some(v) = me2.volume() {
                        v.al.borrow_mut().commit_done(tr);
                    }
                    // Writes whose extents are all on disk now may start (some were covered
                    // by this commit without having asked for it).
                    let ready: Vec<Waiting> = {
                        let vol3 = me2.volume();
                        let mut st = me2.writes.borrow_mut();
                        st.al_commit_in_flight = false;
                        let (ready, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut st.al_waiting)
                            .into_iter()
                            .partition(|w| {
                                let ext = w.extents.clone().unwrap_or(0..=0);
                                vol3.as_ref()
                                    .is_none_or(|v| v.al.borrow().is_committed(ext))
                            });
                        st.al_waiting = rest;
                        ready
                    };
                    for w in ready {
                        let ext = w.extents.clone().unwrap_or(0..=0);
                        me2.start_write(w.io, ext);
                    }
                    me2.commit_al();
                }),
            );
        };
        if evicted.is_empty() {
            write_al();
        } else {
            // Bits of extents leaving the log must be on disk before the log forgets them.
            vol.persist_bitmaps(move |_| write_al());
        }
    }

    fn start_write(self: &Rc<Self>, mut io: Box<BdevIo>, extents: RangeInclusive<u32>) {
        let Some(vol) = self.volume() else {
            return complete_later(io, IoStatus::Failed(libc::ENODEV));
        };
        let Some(channel) = vol.channel() else {
            return complete_later(io, IoStatus::Failed(libc::ENODEV));
        };
        let id = {
            let mut st = self.writes.borrow_mut();
            st.next_id += 1;
            let id = st.next_id;
            // Re-tag the busy range reserved in try_start with the request id.
            let (s, e) = (io.offset_blocks, io.offset_blocks + io.num_blocks);
            if let Some(b) = st
                .busy
                .iter_mut()
                .find(|b| b.0 == s && b.1 == e && b.2 == u64::MAX)
            {
                b.2 = id;
            }
            id
        };
        let (shared, window) = io.buf.take().into_shared();
        let req = Rc::new(WriteReq {
            id,
            io: RefCell::new(None),
            data: RefCell::new(Some(shared.clone())),
            offset: io.offset_blocks,
            blocks: io.num_blocks,
            extents,
            local: Cell::new(None),
            wait_ack: Cell::new(0),
            wait_sent: Cell::new(0),
            started_ns: oxstor_reactor::clock::now_ns(),
        });
        let flags = 0;
        let peers = self.peers.borrow().clone();
        for (i, peer) in peers.iter().enumerate() {
            match peer.established_link() {
                Some(link) => {
                    self.open_epoch_if_needed(peer, &link);
                    let seq = peer.seq.get().wrapping_add(1);
                    peer.seq.set(seq);
                    let pkt = Packet::Data(Data {
                        offset_blocks: req.offset,
                        num_blocks: req.blocks as u32,
                        flags,
                        block_id: id,
                        seq,
                        epoch: peer.epoch.get(),
                    });
                    link.data
                        .send_with_data(&pkt, Seg::Shared(shared.clone()), Some(id));
                    peer.epoch_writes.set(peer.epoch_writes.get() + 1);
                    if let Some(back) = peer.tl.borrow_mut().back_mut() {
                        back.1.push((req.offset, req.blocks));
                    }
                    req.wait_sent.set(req.wait_sent.get() | 1 << i);
                    if link.protocol != Protocol::A {
                        req.wait_ack.set(req.wait_ack.get() | 1 << i);
                    }
                }
                None => {
                    let (a, b) = vol.bit_range(req.offset, req.blocks);
                    if let Some(bm) = vol.bitmaps.borrow_mut().get_mut(peer.slot) {
                        bm.set_range(a, b);
                    }
                }
            }
        }
        drop(shared);
        if req.wait_ack.get() != 0 || req.wait_sent.get() != 0 {
            oxstor_reactor::hold_awake();
        }
        let lio = BdevIo::new(IoType::Write, req.offset, req.blocks, window);
        *req.io.borrow_mut() = Some(io);
        self.writes.borrow_mut().inflight.insert(id, req);
        let done = self
            .writes
            .borrow_mut()
            .local_done
            .get_or_insert_with(|| {
                Rc::new(LocalDone {
                    res: Rc::downgrade(self),
                })
            })
            .clone();
        channel.submit(lio, done, id);
    }

    fn open_epoch_if_needed(&self, peer: &Peer, link: &Rc<crate::link::Link>) {
        let need = peer.tl.borrow().is_empty()
            || peer.close_epoch.get()
            || peer.epoch_writes.get() >= peer.net.max_epoch_size;
        if !need {
            return;
        }
        if peer.epoch_writes.get() > 0 {
            link.data.send(&Packet::Barrier(Barrier {
                epoch: peer.epoch.get(),
                set_size: peer.epoch_writes.get(),
            }));
            peer.epoch.set(peer.epoch.get().wrapping_add(1));
            peer.epoch_writes.set(0);
        }
        peer.close_epoch.set(false);
        let mut tl = peer.tl.borrow_mut();
        if tl.back().is_none_or(|b| b.0 != peer.epoch.get()) {
            tl.push_back((peer.epoch.get(), Vec::new()));
        }
    }

    pub(crate) fn check_complete(self: &Rc<Self>, req: &Rc<WriteReq>) {
        let Some(local) = req.local.get() else { return };
        if req.wait_ack.get() != 0 || req.wait_sent.get() != 0 {
            return;
        }
        let Some(mut io) = req.io.borrow_mut().take() else {
            return;
        };
        oxstor_reactor::release_awake();
        {
            let mut st = self.writes.borrow_mut();
            st.inflight.remove(&req.id);
            st.busy.retain(|b| b.2 != req.id);
        }
        if let Some(v) = self.volume() {
            v.al.borrow_mut().end(req.extents.clone());
        }
        if let Some(shared) = req.data.borrow_mut().take() {
            io.buf = Rc::try_unwrap(shared).unwrap_or_default();
        }
        for p in self.peers.borrow().iter() {
            p.close_epoch.set(true);
        }
        io.complete(local);
        self.retry_waiting();
    }

    pub(crate) fn retry_waiting(self: &Rc<Self>) {
        if self.writes.borrow().retrying {
            return;
        }
        self.writes.borrow_mut().retrying = true;
        let mut pending = std::mem::take(&mut self.writes.borrow_mut().waiting);
        let mut still = VecDeque::new();
        while let Some(w) = pending.pop_front() {
            if let Some(w) = self.try_start(w) {
                still.push_back(w);
            }
        }
        let mut st = self.writes.borrow_mut();
        // Anything that arrived while we retried queues behind what still waits.
        let newer = std::mem::take(&mut st.waiting);
        still.extend(newer);
        st.waiting = still;
        st.retrying = false;
    }

    /// When the oldest write still waiting for peer `peer_index` started (clock ns).
    pub(crate) fn oldest_unanswered(&self, peer_index: usize) -> Option<u64> {
        let bit = 1u32 << peer_index;
        self.writes
            .borrow()
            .inflight
            .values()
            .filter(|r| (r.wait_ack.get() | r.wait_sent.get()) & bit != 0)
            .map(|r| r.started_ns)
            .min()
    }

    /// The peer's data stream sent these requests' bytes.
    pub(crate) fn on_data_sent(self: &Rc<Self>, peer_index: usize, ids: &[u64]) {
        let bit = 1u32 << peer_index;
        let protocol_a = self
            .peers
            .borrow()
            .get(peer_index)
            .is_some_and(|p| p.net.protocol == Protocol::A);
        for id in ids {
            let req = self.writes.borrow().inflight.get(id).cloned();
            if let Some(req) = req {
                req.wait_sent.set(req.wait_sent.get() & !bit);
                if protocol_a {
                    req.wait_ack.set(req.wait_ack.get() & !bit);
                }
                self.check_complete(&req);
            }
        }
    }

    /// RecvAck / WriteAck / NegAck from a peer.
    pub(crate) fn on_ack(
        self: &Rc<Self>,
        peer_index: usize,
        ack: &Ack,
        negative: bool,
    ) -> Result<(), String> {
        let req = self.writes.borrow().inflight.get(&ack.block_id).cloned();
        let Some(req) = req else {
            // Acks for writes we already gave up on (link loss raced the ack) are harmless.
            return Ok(());
        };
        let bit = 1u32 << peer_index;
        if negative {
            let peer = self.peers.borrow().get(peer_index).cloned();
            if let (Some(peer), Some(vol)) = (peer, self.volume()) {
                tracing::warn!(
                    "{}: peer {} failed to write {} blocks at {} (errno {}); marked out of sync",
                    self.name,
                    peer.name,
                    req.blocks,
                    req.offset,
                    ack.status
                );
                let (a, b) = vol.bit_range(req.offset, req.blocks);
                if let Some(bm) = vol.bitmaps.borrow_mut().get_mut(peer.slot) {
                    bm.set_range(a, b);
                }
            }
        }
        req.wait_ack.set(req.wait_ack.get() & !bit);
        self.check_complete(&req);
        Ok(())
    }

    pub(crate) fn on_barrier_ack(&self, peer: &Peer, b: &Barrier) {
        let mut tl = peer.tl.borrow_mut();
        while tl
            .front()
            .is_some_and(|f| f.0 != peer.epoch.get() && epoch_le(f.0, b.epoch))
        {
            tl.pop_front();
        }
    }

    /// A link died: whatever it had not confirmed is out of sync with that peer.
    pub(crate) fn writes_lost_peer(self: &Rc<Self>, peer_index: usize, peer: &Peer) {
        let Some(vol) = self.volume() else { return };
        let bit = 1u32 << peer_index;
        let mut marked = 0u64;
        {
            let mut bms = vol.bitmaps.borrow_mut();
            if let Some(bm) = bms.get_mut(peer.slot) {
                // Under protocol C a write leaves `inflight` only with the peer's WriteAck: it
                // is on the peer's disk, whatever its epoch. Writes still waiting for this peer
                // are marked below, so the transfer log adds nothing but blocks already in
                // sync (and a resync count larger than what was really written meanwhile).
                let marks_tl = peer.net.protocol != Protocol::C;
                for (_, ranges) in peer.tl.borrow_mut().drain(..) {
                    for (off, n) in ranges.into_iter().filter(|_| marks_tl) {
                        let (a, b) = vol.bit_range(off, n);
                        marked += bm.set_range(a, b);
                    }
                }
                for req in self.writes.borrow().inflight.values() {
                    if (req.wait_ack.get() | req.wait_sent.get()) & bit != 0 {
                        let (a, b) = vol.bit_range(req.offset, req.blocks);
                        marked += bm.set_range(a, b);
                    }
                }
            }
        }
        if marked > 0 {
            tracing::info!(
                "{}: {marked} bitmap bits for {} set by the link loss",
                self.name,
                peer.name
            );
        }
        peer.epoch_writes.set(0);
        peer.close_epoch.set(false);
        let reqs: Vec<Rc<WriteReq>> = self.writes.borrow().inflight.values().cloned().collect();
        for req in reqs {
            if (req.wait_ack.get() | req.wait_sent.get()) & bit != 0 {
                req.wait_ack.set(req.wait_ack.get() & !bit);
                req.wait_sent.set(req.wait_sent.get() & !bit);
                self.check_complete(&req);
            }
        }
    }
}

/// Serial-number comparison of epoch numbers (they wrap).
fn epoch_le(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) < (1 << 31)
}
