//! What a node does with the packets a peer sends: the receiving side of replication.
//!
//! Writes from the Primary go to the local disk as they arrive (a Secondary never reorders
//! within an epoch: the Primary never has two overlapping writes in one), acknowledged as the
//! protocol asks. Barriers close epochs; under protocols A and B the receiver finishes an
//! epoch before reading on, so a write that depended on an earlier one cannot overtake it.
//! `BarrierAck`s go back in epoch order.

use crate::link::{Link, LinkEvents, StreamKind};
use crate::options::Protocol;
use crate::resource::{Peer, Resource, RxEpoch};
use crate::state::{ConnState, DiskState, ReplState, Role};
use crate::wire::{Ack, Barrier, Data, Packet};
use oxstor_bdev::{BdevIo, IoBuf, IoDone, IoType};
use oxstor_reactor::DmaBuf;
use std::cell::RefCell;
use std::rc::{Rc, Weak};

impl LinkEvents for Peer {
    fn packet(
        &self,
        link: &Rc<Link>,
        kind: StreamKind,
        pkt: Packet,
        data: Option<DmaBuf>,
    ) -> Result<(), String> {
        let res = self.resource.upgrade().ok_or("resource gone")?;
        let me = res.peer(self.node_id).ok_or("peer gone")?;
        let expected_meta = crate::link::is_meta(pkt.cmd());
        if expected_meta != (kind == StreamKind::Meta) {
            return Err(format!("{:?} arrived on the {kind:?} stream", pkt.cmd()));
        }
        match pkt {
            Packet::Data(d) => {
                res.receive_write(&me, link, d, data.ok_or("Data without block data")?)
            }
            Packet::Barrier(b) => {
                res.receive_barrier(&me, link, b);
                Ok(())
            }
            Packet::RsData(r) => {
                res.receive_resync_data(&me, link, r, data.ok_or("RsData without block data")?)
            }
            Packet::Bitmap(b) => res.receive_bitmap(&me, b),
            Packet::SyncDone(s) => res.receive_sync_done(&me, s),
            Packet::OvRequest(r) => res.receive_verify_request(&me, link, r),
            Packet::OvReply(r) => res.receive_verify_reply(&me, r),
            Packet::OutOfSync(r) => {
                res.mark_out_of_sync(&me, r.offset_blocks, r.num_blocks as u64);
                Ok(())
            }
            Packet::State(s) => {
                let role = Role::from_wire(s.role);
                if role == Role::Primary && res.role.get() == Role::Primary {
                    return Err("the peer became Primary while we are Primary".into());
                }
                self.peer_role.set(role);
                self.peer_disk.set(DiskState::from_wire(s.disk));
                Ok(())
            }
            Packet::Uuids(_) => Ok(()),
            Packet::RecvAck(a) | Packet::WriteAck(a) => {
                let idx = res.peer_index(self.node_id).ok_or("peer gone")?;
                res.on_ack(idx, &a, false)
            }
            Packet::NegAck(a) => {
                let idx = res.peer_index(self.node_id).ok_or("peer gone")?;
                res.on_ack(idx, &a, true)
            }
            Packet::BarrierAck(b) => {
                res.on_barrier_ack(self, &b);
                Ok(())
            }
            Packet::RsWriteAck(a) => res.resync_acked(&me, &a),
            Packet::Ping => {
                link.meta.send(&Packet::PingAck);
                Ok(())
            }
            Packet::PingAck => {
                link.ping_acked();
                Ok(())
            }
            other => Err(format!(
                "unexpected {:?} on an established link",
                other.cmd()
            )),
        }
    }

    fn data_sent(&self, _link: &Rc<Link>, ids: &[u64]) {
        let Some(res) = self.resource.upgrade() else {
            return;
        };
        if let Some(idx) = res.peer_index(self.node_id) {
            res.on_data_sent(idx, ids);
        }
    }

    /// DRBD's ko-count: a peer that leaves a write unanswered for `ko-count × timeout` is
    /// dropped (its blocks go to the bitmap) rather than stalling the Primary forever.
    fn overdue(&self) -> Option<String> {
        let res = self.resource.upgrade()?;
        let idx = res.peer_index(self.node_id)?;
        let limit = self.net.timeout.as_nanos() as u64 * self.net.ko_count as u64;
        let oldest = res.oldest_unanswered(idx)?;
        let waited = oxstor_reactor::clock::now_ns().saturating_sub(oldest);
        (waited > limit).then(|| {
            format!(
                "a write waited {} ms for the peer's answer (ko-count × timeout)",
                waited / 1_000_000
            )
        })
    }

    fn lost(&self, link: &Rc<Link>, reason: &str) {
        let Some(res) = self.resource.upgrade() else {
            return;
        };
        let Some(me) = res.peer(self.node_id) else {
            return;
        };
        res.link_lost(&me, link, reason);
    }
}

impl Resource {
    fn check_range(
        &self,
        offset: u64,
        blocks: u64,
        bytes: usize,
    ) -> Result<Rc<crate::volume::Volume>, String> {
        let vol = self.volume().ok_or("no disk attached")?;
        let end = offset.checked_add(blocks).ok_or("block range overflows")?;
        if blocks == 0 || end > vol.data_blocks {
            return Err(format!(
                "blocks {offset}+{blocks} lie outside the {}-block device",
                vol.data_blocks
            ));
        }
        if bytes as u64 != blocks * vol.block_size as u64 {
            return Err(format!(
                "{bytes} data bytes for {blocks} blocks of {}",
                vol.block_size
            ));
        }
        Ok(vol)
    }

    fn receive_write(
        self: &Rc<Self>,
        peer: &Rc<Peer>,
        link: &Rc<Link>,
        d: Data,
        buf: DmaBuf,
    ) -> Result<(), String> {
        if self.role.get() == Role::Primary {
            return Err("the peer sent a write but this node is Primary".into());
        }
        let vol = self.check_range(d.offset_blocks, d.num_blocks as u64, buf.len())?;
        let protocol = link.protocol;
        if protocol == Protocol::B {
            link.meta.send(&Packet::RecvAck(Ack {
                block_id: d.block_id,
                seq: d.seq,
                status: 0,
            }));
        }
        let epoch_index = {
            let mut eps = peer.rx_epochs.borrow_mut();
            if eps.back().is_none_or(|e| e.barrier.is_some()) {
                eps.push_back(RxEpoch {
                    barrier: None,
                    pending: 0,
                });
            }
            if let Some(back) = eps.back_mut() {
                back.pending += 1;
            }
            peer.rx_base.get() + eps.len() as u64 - 1
        };
        let Some(channel) = vol.channel() else {
            return Err("the local disk has no channel".into());
        };
        let done = self.apply_done(peer, link);
        let tag = done.hold(d, epoch_index);
        let io = BdevIo::new(
            IoType::Write,
            d.offset_blocks,
            d.num_blocks as u64,
            IoBuf::Dma(buf),
        );
        channel.submit(io, done, tag);
        Ok(())
    }

    /// The completion handler for writes received on `link` (one per link).
    fn apply_done(self: &Rc<Self>, peer: &Rc<Peer>, link: &Rc<Link>) -> Rc<ApplyDone> {
        let mut slot = peer.apply_done.borrow_mut();
        if let Some(d) = slot
            .as_ref()
            .filter(|d| d.link.as_ptr() == Rc::as_ptr(link))
        {
            return d.clone();
        }
        let d = Rc::new(ApplyDone {
            res: Rc::downgrade(self),
            peer: Rc::downgrade(peer),
            link: Rc::downgrade(link),
            pending: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
        });
        *slot = Some(d.clone());
        d
    }

    fn receive_barrier(&self, peer: &Peer, link: &Rc<Link>, b: Barrier) {
        {
            let mut eps = peer.rx_epochs.borrow_mut();
            match eps.back_mut() {
                Some(e) if e.barrier.is_none() => e.barrier = Some(b.epoch),
                _ => eps.push_back(RxEpoch {
                    barrier: Some(b.epoch),
                    pending: 0,
                }),
            }
            let draining = eps.back().is_some_and(|e| e.pending > 0);
            if draining && link.protocol != Protocol::C {
                link.data.pause();
            }
        }
        self.ack_finished_epochs(peer, link);
    }

    fn rx_epoch_done(&self, peer: &Peer, link: &Rc<Link>, index: u64) {
        {
            let mut eps = peer.rx_epochs.borrow_mut();
            let at = index.wrapping_sub(peer.rx_base.get()) as usize;
            if let Some(e) = eps.get_mut(at) {
                e.pending = e.pending.saturating_sub(1);
            }
        }
        self.ack_finished_epochs(peer, link);
    }

    fn ack_finished_epochs(&self, peer: &Peer, link: &Rc<Link>) {
        let drained = {
            let mut eps = peer.rx_epochs.borrow_mut();
            while eps
                .front()
                .is_some_and(|e| e.barrier.is_some() && e.pending == 0)
            {
                let Some(e) = eps.pop_front() else { break };
                peer.rx_base.set(peer.rx_base.get() + 1);
                if let Some(epoch) = e.barrier {
                    link.meta
                        .send(&Packet::BarrierAck(Barrier { epoch, set_size: 0 }));
                }
            }
            eps.iter().all(|e| e.barrier.is_none() || e.pending == 0)
        };
        // Not while `rx_epochs` is borrowed: resuming delivers the packets already staged on
        // the data stream right here (receive_write borrows it again).
        if drained {
            link.data.resume();
        }
    }

    pub(crate) fn mark_out_of_sync(&self, peer: &Peer, offset: u64, blocks: u64) {
        let Some(vol) = self.volume() else { return };
        let (a, b) = vol.bit_range(
            offset.min(vol.data_blocks),
            blocks.min(vol.data_blocks - offset.min(vol.data_blocks)),
        );
        let mut bms = vol.bitmaps.borrow_mut();
        if let Some(bm) = bms.get_mut(peer.slot) {
            bm.set_range(a, b);
        }
    }

    /// A link ended, for whatever reason.
    pub(crate) fn link_lost(self: &Rc<Self>, peer: &Rc<Peer>, link: &Rc<Link>, reason: &str) {
        let current = peer
            .link
            .borrow()
            .as_ref()
            .is_some_and(|l| Rc::ptr_eq(l, link));
        if !current {
            return;
        }
        peer.link.borrow_mut().take();
        tracing::warn!("{}: connection to {} lost: {reason}", self.name, peer.name);
        *peer.last_error.borrow_mut() = reason.to_string();
        let keep_trying = peer.connector.borrow().is_some();
        peer.conn_state.set(if keep_trying {
            ConnState::Connecting
        } else {
            ConnState::StandAlone
        });
        let was = peer.repl_state.replace(ReplState::Off);
        peer.peer_role.set(Role::Unknown);
        peer.peer_disk.set(DiskState::DUnknown);
        self.stop_resync(peer);
        peer.verify.borrow_mut().take();
        if let Some(idx) = self.peer_index(peer.node_id) {
            self.writes_lost_peer(idx, peer);
        }
        peer.rx_epochs.borrow_mut().clear();
        if self.role.get() == Role::Primary {
            self.need_new_gen.set(true);
            if let Some(vol) = self.volume() {
                vol.sb.borrow_mut().flags |= crate::meta::superblock::meta_flag::PRIMARY_AT_SPLIT;
            }
        }
        if was == ReplState::SyncTarget {
            tracing::warn!(
                "{}: resync from {} interrupted; the disk stays Inconsistent",
                self.name,
                peer.name
            );
        }
        if let Some(vol) = self.volume() {
            vol.persist_bitmaps(|_| {});
            vol.persist_sb(|_| {});
        }
    }
}

/// Completes the local writes of packets received on one link: acks as the protocol asks,
/// and epoch accounting. The tag indexes `pending`, so a write allocates no handler; writes
/// that finish after their link died answer nobody (the Primary has marked them out of sync).
pub(crate) struct ApplyDone {
    res: Weak<Resource>,
    peer: Weak<Peer>,
    link: Weak<Link>,
    pending: RefCell<Vec<Option<(Data, u64)>>>,
    free: RefCell<Vec<usize>>,
}

impl ApplyDone {
    fn hold(&self, d: Data, epoch_index: u64) -> u64 {
        let mut pending = self.pending.borrow_mut();
        match self.free.borrow_mut().pop() {
            Some(i) => {
                pending[i] = Some((d, epoch_index));
                i as u64
            }
            None => {
                pending.push(Some((d, epoch_index)));
                (pending.len() - 1) as u64
            }
        }
    }
}

impl IoDone for ApplyDone {
    fn io_done(&self, io: Box<BdevIo>, tag: u64) {
        let Some((d, epoch_index)) = self
            .pending
            .borrow_mut()
            .get_mut(tag as usize)
            .and_then(Option::take)
        else {
            return;
        };
        self.free.borrow_mut().push(tag as usize);
        let (Some(res), Some(peer), Some(link)) =
            (self.res.upgrade(), self.peer.upgrade(), self.link.upgrade())
        else {
            return;
        };
        let ok = io.status.is_success();
        if !ok {
            tracing::error!(
                "{}: replicated write at block {} failed: {:?}",
                res.name,
                d.offset_blocks,
                io.status
            );
        }
        if link.dead.get() {
            return;
        }
        if link.protocol == Protocol::C || !ok {
            let ack = Ack {
                block_id: d.block_id,
                seq: d.seq,
                status: if ok { 0 } else { errno_of(&io) },
            };
            link.meta.send(&if ok {
                Packet::WriteAck(ack)
            } else {
                Packet::NegAck(ack)
            });
        }
        res.rx_epoch_done(&peer, &link, epoch_index);
    }
}

fn errno_of(io: &BdevIo) -> u32 {
    match io.status {
        oxstor_bdev::IoStatus::Failed(e) => e as u32,
        _ => libc::EIO as u32,
    }
}
