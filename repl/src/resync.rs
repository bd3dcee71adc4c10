//! Resync and online verify.
//!
//! After the handshake decided a direction, both nodes send their bitmap for each other and
//! merge what they receive, so blocks either side knows to be out of sync are covered. The
//! source then *pushes*: it reads a run of dirty blocks (up to 128 KiB) and sends it as
//! `RsData`; the target writes it and answers `RsWriteAck`, and both clear those bits. A
//! window being resynced is locked against host writes on the source (a host write to it waits,
//! and the window waits for host writes already in flight), so resync never overwrites newer
//! data. A token bucket holds the pace to `resync-rate`; host I/O continues throughout. When the
//! bitmap is empty the source sends `SyncDone` with its current UUID, which the target adopts.
//!
//! Verify: the node that runs it asks for per-block crc32c digests of consecutive ranges,
//! computes its own, and marks differing blocks out of sync (resynced at the next connect,
//! as DRBD does).

use crate::link::{Link, Seg};
use crate::meta::superblock::meta_flag;
use crate::resource::{Peer, Resource, VerifyRun};
use crate::state::{DiskState, ReplState};
use crate::volume::OnDone;
use crate::wire::{self, Ack, OvReply, Packet, Range, RsData, SyncDone};
use crate::write::RESYNC_TAG;
use oxstor_bdev::{BdevIo, IoBuf, IoType};
use oxstor_reactor::{DmaBuf, PollStatus};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Resync requests in flight per peer.
const RESYNC_DEPTH: u32 = 8;
/// Largest resync run, in bitmap bits (4 KiB each).
const RUN_BITS: u64 = 32;
const VERIFY_DEPTH: u32 = 8;
const VERIFY_BLOCKS: u64 = 32;

impl Resource {
    pub(crate) fn stop_resync(&self, peer: &Peer) {
        if let Some(id) = peer.sync_poller.take() {
            oxstor_reactor::unregister_poller(id);
        }
        if peer.sync.borrow_mut().take().is_some() {
            // Release every resync window this peer held.
            let tag = RESYNC_TAG | peer.node_id as u64;
            self.writes.borrow_mut().busy.retain(|b| b.2 != tag);
        }
    }

    pub(crate) fn receive_bitmap(
        self: &Rc<Self>,
        peer: &Rc<Peer>,
        b: wire::Bitmap,
    ) -> Result<(), String> {
        let vol = self.volume().ok_or("no disk attached")?;
        if b.total_bits != vol.layout.bits {
            return Err(format!(
                "peer's bitmap has {} bits, ours {}",
                b.total_bits, vol.layout.bits
            ));
        }
        if let Some(bm) = vol.bitmaps.borrow_mut().get_mut(peer.slot) {
            bm.or_words(b.first_word, &b.words);
        }
        if b.last {
            let count = vol.dirty_count(peer.slot);
            let mut sync = peer.sync.borrow_mut();
            let Some(run) = sync.as_mut() else {
                return Ok(());
            };
            run.peer_bitmap_in = true;
            run.total_bits = count;
            let source = run.source;
            drop(sync);
            tracing::info!(
                "{}: resync with {} as {}: {} KiB out of sync",
                self.name,
                peer.name,
                if source { "source" } else { "target" },
                count * 4
            );
            if source {
                let me = Rc::downgrade(self);
                let p = Rc::downgrade(peer);
                let id = oxstor_reactor::reactor::register_timed_poller(
                    "repl_resync",
                    Duration::from_millis(1),
                    move || match (me.upgrade(), p.upgrade()) {
                        (Some(r), Some(p)) => r.resync_tick(&p),
                        _ => PollStatus::Idle,
                    },
                );
                peer.sync_poller.set(Some(id));
            }
        }
        Ok(())
    }

    fn resync_tick(self: &Rc<Self>, peer: &Rc<Peer>) -> PollStatus {
        let Some(link) = peer.established_link() else {
            return PollStatus::Idle;
        };
        let Some(vol) = self.volume() else {
            return PollStatus::Idle;
        };
        let mut did = false;
        loop {
            let mut sync = peer.sync.borrow_mut();
            let Some(run) = sync.as_mut() else {
                return PollStatus::Idle;
            };
            if !run.peer_bitmap_in {
                return PollStatus::Idle;
            }
            let now = Instant::now();
            let rate = peer.disk_opts.resync_rate as f64;
            let dt = now.duration_since(run.last_refill).as_secs_f64();
            run.last_refill = now;
            let burst = (rate / 10.0).max((RUN_BITS * 4096) as f64);
            run.tokens = (run.tokens + rate * dt).min(burst);
            if run.inflight >= RESYNC_DEPTH {
                break;
            }
            let bms = vol.bitmaps.borrow();
            let Some(bm) = bms.get(peer.slot) else { break };
            let first = bm.next_set(run.next_bit).or_else(|| {
                if run.next_bit > 0 {
                    bm.next_set(0)
                } else {
                    None
                }
            });
            let Some(first) = first else {
                drop(bms);
                if run.inflight == 0 {
                    drop(sync);
                    self.finish_resync_source(peer, &link);
                    return PollStatus::Busy;
                }
                break;
            };
            let mut end = first + 1;
            while end < bm.bits() && end - first < RUN_BITS && bm.test(end) {
                end += 1;
            }
            drop(bms);
            let (off, blocks) = vol.bits_to_blocks(first, end);
            let bytes = blocks * vol.block_size as u64;
            if blocks == 0 {
                run.next_bit = end;
                continue;
            }
            if run.tokens < bytes as f64 {
                break;
            }
            {
                let mut st = self.writes.borrow_mut();
                if st.busy.iter().any(|&(s, e, _)| s < off + blocks && off < e) {
                    // A host write holds part of this window; come back next tick.
                    break;
                }
                st.busy
                    .push((off, off + blocks, RESYNC_TAG | peer.node_id as u64));
            }
            run.tokens -= bytes as f64;
            run.inflight += 1;
            run.next_bit = end;
            drop(sync);
            did = true;
            self.resync_read(peer, &link, off, blocks);
        }
        if did {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    fn resync_read(self: &Rc<Self>, peer: &Rc<Peer>, link: &Rc<Link>, off: u64, blocks: u64) {
        let Some(vol) = self.volume() else { return };
        let bytes = (blocks * vol.block_size as u64) as usize;
        let (Some(channel), Some(buf)) = (vol.channel(), DmaBuf::alloc(bytes)) else {
            link.fail("no buffer or channel for resync");
            return;
        };
        let link = link.clone();
        let name = self.name.clone();
        channel.submit(
            BdevIo::new(IoType::Read, off, blocks, IoBuf::Dma(buf)),
            OnDone::new(move |mut io| {
                if !io.status.is_success() {
                    tracing::error!("{name}: resync read at block {off} failed: {:?}", io.status);
                    link.fail("local read error during resync");
                    return;
                }
                let Some(buf) = io.buf.take().into_dma() else {
                    return;
                };
                let pkt = Packet::RsData(RsData {
                    offset_blocks: off,
                    num_blocks: blocks as u32,
                    block_id: off,
                });
                link.data.send_with_data(&pkt, Seg::Dma(buf), None);
            }),
            0,
        );
        let _ = peer;
    }

    pub(crate) fn resync_acked(self: &Rc<Self>, peer: &Rc<Peer>, a: &Ack) -> Result<(), String> {
        let vol = self.volume().ok_or("no disk attached")?;
        let off = a.block_id;
        let tag = RESYNC_TAG | peer.node_id as u64;
        let window = {
            let mut st = self.writes.borrow_mut();
            let at = st.busy.iter().position(|b| b.0 == off && b.2 == tag);
            at.map(|i| st.busy.swap_remove(i))
        };
        let Some((s, e, _)) = window else {
            return Err(format!(
                "RsWriteAck for block {off}, which is not being resynced"
            ));
        };
        if a.status != 0 {
            return Err(format!(
                "the peer failed to write resync data at block {off} (errno {})",
                a.status
            ));
        }
        let (first, end) = vol.bit_range(s, e - s);
        let cleared = vol
            .bitmaps
            .borrow_mut()
            .get_mut(peer.slot)
            .map_or(0, |bm| bm.clear_range(first, end));
        if let Some(run) = peer.sync.borrow_mut().as_mut() {
            run.inflight = run.inflight.saturating_sub(1);
            run.done_bits += cleared;
            run.resynced_blocks += e - s;
            let now = Instant::now();
            run.samples.push_back((now, run.done_bits));
            while run.samples.len() > 2
                && run
                    .samples
                    .front()
                    .is_some_and(|f| now.duration_since(f.0) > Duration::from_secs(3))
            {
                run.samples.pop_front();
            }
        }
        self.retry_waiting();
        // Refill the window now instead of at the resync poller's next 1 ms tick: on a fast
        // link the tick, not the network or the disks, would otherwise set the resync rate.
        if peer.sync_poller.get().is_some() {
            self.resync_tick(peer);
        }
        Ok(())
    }

    fn finish_resync_source(self: &Rc<Self>, peer: &Rc<Peer>, link: &Rc<Link>) {
        let Some(vol) = self.volume() else { return };
        let resynced = peer.sync.borrow().as_ref().map_or(0, |r| r.resynced_blocks);
        let elapsed = peer
            .sync
            .borrow()
            .as_ref()
            .map_or(0.0, |r| r.started.elapsed().as_secs_f64());
        self.stop_resync(peer);
        crate::meta::generation::finish_resync_as_source(&mut vol.sb.borrow_mut(), peer.node_id);
        let current = vol.sb.borrow().current_uuid;
        link.data.send(&Packet::SyncDone(SyncDone {
            current,
            resynced_blocks: resynced,
        }));
        peer.repl_state.set(ReplState::Established);
        peer.peer_disk.set(DiskState::UpToDate);
        let mib = resynced as f64 * vol.block_size as f64 / (1 << 20) as f64;
        tracing::info!(
            "{}: resync to {} done: {resynced} blocks ({mib:.1} MiB) in {elapsed:.2} s ({:.1} MiB/s)",
            self.name,
            peer.name,
            if elapsed > 0.0 { mib / elapsed } else { 0.0 }
        );
        vol.persist_bitmaps(|_| {});
        vol.persist_sb(|_| {});
    }

    pub(crate) fn receive_resync_data(
        self: &Rc<Self>,
        peer: &Rc<Peer>,
        link: &Rc<Link>,
        r: RsData,
        buf: DmaBuf,
    ) -> Result<(), String> {
        if peer.repl_state.get() != ReplState::SyncTarget {
            return Err("resync data while not a sync target".into());
        }
        let vol = self.volume().ok_or("no disk attached")?;
        let blocks = r.num_blocks as u64;
        let end = r
            .offset_blocks
            .checked_add(blocks)
            .ok_or("block range overflows")?;
        if blocks == 0
            || end > vol.data_blocks
            || buf.len() as u64 != blocks * vol.block_size as u64
        {
            return Err(format!("bad resync range {}+{blocks}", r.offset_blocks));
        }
        let channel = vol.channel().ok_or("the local disk has no channel")?;
        let me = self.clone();
        let peer = peer.clone();
        let link = link.clone();
        channel.submit(
            BdevIo::new(IoType::Write, r.offset_blocks, blocks, IoBuf::Dma(buf)),
            OnDone::new(move |io| {
                let ok = io.status.is_success();
                if ok {
                    if let Some(vol) = me.volume() {
                        let (a, b) = vol.bit_range(r.offset_blocks, blocks);
                        let cleared = vol
                            .bitmaps
                            .borrow_mut()
                            .get_mut(peer.slot)
                            .map_or(0, |bm| bm.clear_range(a, b));
                        if let Some(run) = peer.sync.borrow_mut().as_mut() {
                            run.done_bits += cleared;
                            run.resynced_blocks += blocks;
                            let now = Instant::now();
                            run.samples.push_back((now, run.done_bits));
                            while run.samples.len() > 2
                                && run.samples.front().is_some_and(|f| {
                                    now.duration_since(f.0) > Duration::from_secs(3)
                                })
                            {
                                run.samples.pop_front();
                            }
                        }
                    }
                } else {
                    tracing::error!(
                        "{}: resync write at block {} failed: {:?}",
                        me.name,
                        r.offset_blocks,
                        io.status
                    );
                }
                let status = if ok { 0 } else { libc::EIO as u32 };
                link.meta.send(&Packet::RsWriteAck(Ack {
                    block_id: r.block_id,
                    seq: 0,
                    status,
                }));
            }),
            0,
        );
        Ok(())
    }

    pub(crate) fn receive_sync_done(
        self: &Rc<Self>,
        peer: &Rc<Peer>,
        s: SyncDone,
    ) -> Result<(), String> {
        if peer.repl_state.get() != ReplState::SyncTarget {
            return Err("SyncDone while not a sync target".into());
        }
        let vol = self.volume().ok_or("no disk attached")?;
        let left = vol.dirty_count(peer.slot);
        if left != 0 {
            // Everything the source had was sent; bits left here were written meanwhile and
            // are in sync too (the source replicated them).
            tracing::info!("{}: {left} bits still set at SyncDone; clearing", self.name);
        }
        if let Some(bm) = vol.bitmaps.borrow_mut().get_mut(peer.slot) {
            bm.clear_all();
        }
        crate::meta::generation::finish_resync_as_target_from(
            &mut vol.sb.borrow_mut(),
            peer.node_id,
            s.current,
        );
        {
            let mut sb = vol.sb.borrow_mut();
            sb.flags |= meta_flag::CONSISTENT;
            sb.flags &= !(meta_flag::OUTDATED | meta_flag::CRASHED_PRIMARY);
        }
        self.stop_resync(peer);
        peer.repl_state.set(ReplState::Established);
        peer.peer_disk.set(DiskState::UpToDate);
        self.set_disk_state(DiskState::UpToDate);
        tracing::info!(
            "{}: resync from {} done ({} blocks); disk UpToDate",
            self.name,
            peer.name,
            s.resynced_blocks
        );
        vol.persist_bitmaps(|_| {});
        vol.persist_sb(|_| {});
        if let Some(link) = peer.established_link() {
            link.data.send(&Packet::State(wire::State {
                role: self.role.get().to_wire(),
                disk: DiskState::UpToDate.to_wire(),
                flags: 0,
            }));
        }
        Ok(())
    }

    // ---- online verify ----

    pub fn start_verify(self: &Rc<Self>, peer: &Rc<Peer>) -> Result<(), String> {
        let link = peer
            .established_link()
            .ok_or_else(|| format!("not connected to {}", peer.name))?;
        if peer.repl_state.get() != ReplState::Established {
            return Err(format!(
                "{} is {:?}; verify needs an established connection with no resync",
                peer.name,
                peer.repl_state.get()
            ));
        }
        self.volume().ok_or("no disk attached")?;
        *peer.verify.borrow_mut() = Some(VerifyRun {
            next_block: 0,
            inflight: 0,
            done_blocks: 0,
            out_of_sync: 0,
            started: Instant::now(),
            pending: Default::default(),
            finished: false,
        });
        peer.repl_state.set(ReplState::VerifyS);
        tracing::info!("{}: online verify against {} started", self.name, peer.name);
        self.verify_pump(peer, &link);
        Ok(())
    }

    fn verify_pump(self: &Rc<Self>, peer: &Rc<Peer>, link: &Rc<Link>) {
        let Some(vol) = self.volume() else { return };
        loop {
            let mut v = peer.verify.borrow_mut();
            let Some(run) = v.as_mut() else { return };
            if run.finished {
                return;
            }
            if run.next_block >= vol.data_blocks {
                if run.inflight == 0 {
                    run.finished = true;
                    let (blocks, oos, secs) = (
                        run.done_blocks,
                        run.out_of_sync,
                        run.started.elapsed().as_secs_f64(),
                    );
                    drop(v);
                    peer.repl_state.set(ReplState::Established);
                    tracing::info!(
                        "{}: online verify against {} done: {blocks} blocks in {secs:.2} s, {oos} out of sync{}",
                        self.name,
                        peer.name,
                        if oos > 0 { " (resynced at the next connect)" } else { "" }
                    );
                    vol.persist_bitmaps(|_| {});
                }
                return;
            }
            if run.inflight >= VERIFY_DEPTH {
                return;
            }
            let off = run.next_block;
            let n = VERIFY_BLOCKS.min(vol.data_blocks - off);
            run.next_block += n;
            run.inflight += 1;
            run.pending.insert(off, (off, n as u32, None, None));
            drop(v);
            link.data.send(&Packet::OvRequest(Range {
                offset_blocks: off,
                num_blocks: n as u32,
                block_id: off,
            }));
            let me = self.clone();
            let peer2 = peer.clone();
            let link2 = link.clone();
            self.digest_range(off, n, move |digests| {
                if let Some(run) = peer2.verify.borrow_mut().as_mut() {
                    if let Some(p) = run.pending.get_mut(&off) {
                        p.3 = Some(digests);
                    }
                }
                me.verify_settle(&peer2, &link2, off);
            });
        }
    }

    fn digest_range(self: &Rc<Self>, off: u64, n: u64, then: impl FnOnce(Vec<u32>) + 'static) {
        let Some(vol) = self.volume() else { return };
        let bs = vol.block_size as usize;
        let (Some(ch), Some(buf)) = (vol.channel(), DmaBuf::alloc(n as usize * bs)) else {
            return then(Vec::new());
        };
        ch.submit(
            BdevIo::new(IoType::Read, off, n, IoBuf::Dma(buf)),
            OnDone::new(move |io| {
                if !io.status.is_success() {
                    return then(Vec::new());
                }
                then(io.buf.as_slice().chunks(bs).map(crc32c::crc32c).collect());
            }),
            0,
        );
    }

    fn verify_settle(self: &Rc<Self>, peer: &Rc<Peer>, link: &Rc<Link>, id: u64) {
        let done = {
            let mut v = peer.verify.borrow_mut();
            let Some(run) = v.as_mut() else { return };
            match run.pending.get(&id) {
                Some((_, _, Some(_), Some(_))) => {}
                _ => return,
            }
            let Some((off, n, Some(theirs), Some(ours))) = run.pending.remove(&id) else {
                return;
            };
            run.inflight -= 1;
            run.done_blocks += n as u64;
            let differing: Vec<u64> = (0..n as usize)
                .filter(|&i| theirs.get(i) != ours.get(i) || ours.get(i).is_none())
                .map(|i| off + i as u64)
                .collect();
            run.out_of_sync += differing.len() as u64;
            differing
        };
        for b in done {
            self.mark_out_of_sync(peer, b, 1);
        }
        self.verify_pump(peer, link);
    }

    pub(crate) fn receive_verify_request(
        self: &Rc<Self>,
        peer: &Rc<Peer>,
        link: &Rc<Link>,
        r: Range,
    ) -> Result<(), String> {
        let vol = self.volume().ok_or("no disk attached")?;
        let end = r
            .offset_blocks
            .checked_add(r.num_blocks as u64)
            .ok_or("range overflows")?;
        if r.num_blocks == 0 || end > vol.data_blocks || r.num_blocks as u64 > 1024 {
            return Err(format!(
                "bad verify range {}+{}",
                r.offset_blocks, r.num_blocks
            ));
        }
        peer.repl_state.set(ReplState::VerifyT);
        let link = link.clone();
        let peer = peer.clone();
        let blocks = vol.data_blocks;
        self.digest_range(r.offset_blocks, r.num_blocks as u64, move |digests| {
            let digests = if digests.len() == r.num_blocks as usize {
                digests
            } else {
                vec![0; r.num_blocks as usize]
            };
            link.data
                .send(&Packet::OvReply(OvReply { range: r, digests }));
            if end >= blocks {
                peer.repl_state.set(ReplState::Established);
            }
        });
        Ok(())
    }

    pub(crate) fn receive_verify_reply(
        self: &Rc<Self>,
        peer: &Rc<Peer>,
        r: OvReply,
    ) -> Result<(), String> {
        let link = peer.established_link().ok_or("not connected")?;
        {
            let mut v = peer.verify.borrow_mut();
            let run = v.as_mut().ok_or("verify reply while no verify runs")?;
            let p = run
                .pending
                .get_mut(&r.range.block_id)
                .ok_or("verify reply for a range we did not ask for")?;
            if p.0 != r.range.offset_blocks || p.1 != r.range.num_blocks {
                return Err("verify reply for a different range".into());
            }
            p.2 = Some(r.digests);
        }
        self.verify_settle(peer, &link, r.range.block_id);
        Ok(())
    }
}
