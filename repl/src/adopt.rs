//! The home-core half of connecting: what we tell a peer about ourselves, and adopting a
//! handshaken connection — comparing generation UUIDs to decide whether and which way to
//! resync, detecting split brain, and refusing what must not happen (two Primaries, a Primary
//! as sync target, unrelated data, different sizes).

use crate::connect::{Handshaken, LocalView};
use crate::link::{Link, LinkEvents};
use crate::meta::generation::{self, gen_flag, AfterSb, GenView, Resolution, SyncDecision};
use crate::meta::superblock::{meta_flag, UUID_JUST_CREATED};
use crate::resource::{Peer, Resource, SyncRun};
use crate::state::{ConnState, DiskState, ReplState, Role};
use crate::wire::{self, Packet};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Instant;

impl Resource {
    /// Our handshake answers for `peer`.
    pub fn local_view(&self, peer: &Peer) -> Option<LocalView> {
        let vol = self.volume()?;
        let sb = vol.sb.borrow();
        let mut flags = 0;
        if sb.current_uuid == UUID_JUST_CREATED {
            flags |= gen_flag::JUST_CREATED;
        }
        if sb.flags & meta_flag::CRASHED_PRIMARY != 0 {
            flags |= gen_flag::CRASHED_PRIMARY;
        }
        if self.role.get() == Role::Primary {
            flags |= gen_flag::PRIMARY;
        }
        let disk = vol.disk_state.get();
        if matches!(
            disk,
            DiskState::UpToDate | DiskState::Consistent | DiskState::Outdated
        ) {
            flags |= gen_flag::CONSISTENT;
        }
        if disk == DiskState::Outdated {
            flags |= gen_flag::OUTDATED;
        }
        if peer.discard_my_data.get() {
            flags |= gen_flag::DISCARD_MY_DATA;
        }
        if sb.flags & meta_flag::PRIMARY_AT_SPLIT != 0 {
            flags |= gen_flag::PRIMARY_AT_SPLIT;
        }
        let uuids = wire::Uuids {
            current: sb.current_uuid,
            bitmap: sb
                .peers
                .iter()
                .filter_map(|s| s.node_id.map(|n| (n, s.bitmap_uuid)))
                .collect(),
            history: sb.history.clone(),
            flags,
            dirty_blocks: vol.dirty_count(peer.slot),
        };
        Some(LocalView {
            uuids,
            sizes: wire::Sizes {
                data_blocks: vol.data_blocks,
                block_size: vol.block_size,
                max_transfer_blocks: crate::device::max_transfer_blocks(vol.block_size),
            },
            state: wire::State {
                role: self.role.get().to_wire(),
                disk: disk.to_wire(),
                flags: 0,
            },
        })
    }

    /// Installs a handshaken connection to `peer_node_id`. `Err((why, retry))`.
    pub fn adopt(
        self: &Rc<Self>,
        peer_node_id: u8,
        hs: Handshaken,
    ) -> Result<mpsc::Receiver<String>, (String, bool)> {
        let peer = self
            .peer(peer_node_id)
            .ok_or(("the peer was removed".to_string(), false))?;
        if peer.established_link().is_some() {
            return Err(("already connected".into(), true));
        }
        let vol = self
            .volume()
            .ok_or(("no disk attached".to_string(), true))?;
        let now = self
            .local_view(&peer)
            .ok_or(("no disk attached".to_string(), true))?;
        // Blocks written meanwhile only grow the bitmap (exchanged after this); a different
        // generation or flag would change the decision the peer is making right now.
        let same = |a: &wire::Uuids, b: &wire::Uuids| {
            a.current == b.current
                && a.bitmap == b.bitmap
                && a.history == b.history
                && a.flags == b.flags
        };
        if !same(&now.uuids, &hs.sent_uuids) {
            return Err((
                "our state changed during the handshake; retrying".into(),
                true,
            ));
        }
        let refuse = |why: String| -> Result<mpsc::Receiver<String>, (String, bool)> {
            tracing::error!("{}: connection to {} refused: {why}", self.name, peer.name);
            *peer.last_error.borrow_mut() = why.clone();
            peer.conn_state.set(ConnState::StandAlone);
            // The connector stops retrying; a later `connect` starts a new one.
            if let Some(c) = peer.connector.borrow_mut().take() {
                c.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(addr) = peer.listening.borrow_mut().take() {
                crate::connect::unlisten(addr);
            }
            Err((why, false))
        };
        if hs.peer_sizes.block_size != vol.block_size
            || hs.peer_sizes.data_blocks != vol.data_blocks
        {
            return refuse(format!(
                "disk sizes differ: ours {} blocks of {} bytes, the peer's {} blocks of {} bytes",
                vol.data_blocks,
                vol.block_size,
                hs.peer_sizes.data_blocks,
                hs.peer_sizes.block_size
            ));
        }
        let peer_role = Role::from_wire(hs.peer_state.role);
        if peer_role == Role::Primary && self.role.get() == Role::Primary {
            return refuse("both nodes are Primary; only one Primary at a time".into());
        }
        let me = view(self.node_id, &hs.sent_uuids);
        let them = view(peer_node_id, &hs.peer_uuids);
        let policy = match peer.discard_node {
            Some(n) => AfterSb::DiscardNode(n),
            None => peer.net.after_sb_0pri,
        };
        let decision = generation::decide(&me, &them, &policy);
        let (source, full) = match decision {
            SyncDecision::NoSync => (None, false),
            SyncDecision::Source { full } => (Some(true), full),
            SyncDecision::Target { full } => (Some(false), full),
            SyncDecision::SplitBrain { resolved: Some(r) } => {
                tracing::warn!(
                    "{}: split brain with {} auto-recovered by after-sb-0pri {:?}: this node {}",
                    self.name,
                    peer.name,
                    policy,
                    if r == Resolution::IAmSource {
                        "keeps its changes (sync source)"
                    } else {
                        "discards its changes (sync target)"
                    }
                );
                (Some(r == Resolution::IAmSource), false)
            }
            SyncDecision::SplitBrain { resolved: None } => {
                peer.split_brain.set(true);
                return refuse(format!(
                    "Split-Brain detected: both nodes changed the data since generation {:016X}; nothing was synced. \
                     Choose the victim and run `oxadm connect --discard-my-data` there",
                    them.bitmap.iter().find(|(n, _)| *n == self.node_id).map_or(0, |b| b.1)
                ));
            }
            SyncDecision::Unrelated => {
                return refuse("unrelated data: the nodes share no generation UUID".into());
            }
        };
        if source == Some(false) && self.role.get() == Role::Primary {
            return refuse("this node is Primary but would have to become the sync target".into());
        }
        let (tx, rx) = mpsc::channel();
        let peer_dyn: Rc<dyn LinkEvents> = peer.clone();
        let events = Rc::downgrade(&peer_dyn);
        let link = Link::start(
            peer_node_id,
            peer.net.protocol,
            hs.data,
            hs.meta,
            events,
            peer.net.ping_int,
            peer.net.ping_timeout,
            tx,
        );
        *peer.link.borrow_mut() = Some(link.clone());
        peer.conn_state.set(ConnState::Connected);
        peer.peer_role.set(peer_role);
        peer.peer_disk.set(DiskState::from_wire(hs.peer_state.disk));
        peer.split_brain.set(false);
        peer.last_error.borrow_mut().clear();
        peer.discard_my_data.set(false);
        peer.epoch.set(1);
        peer.epoch_writes.set(0);
        peer.close_epoch.set(false);
        peer.seq.set(0);
        peer.tl.borrow_mut().clear();
        peer.rx_epochs.borrow_mut().clear();
        peer.rx_base.set(0);
        if self.role.get() == Role::Primary
            && self
                .peers
                .borrow()
                .iter()
                .all(|p| p.established_link().is_some())
        {
            self.need_new_gen.set(false);
        }
        tracing::info!(
            "{}: connected to {} (node-id {peer_node_id}, protocol {}): {}",
            self.name,
            peer.name,
            peer.net.protocol.name(),
            match (source, full) {
                (None, _) => "no resync needed".to_string(),
                (Some(true), f) => format!("sync source{}", if f { ", full sync" } else { "" }),
                (Some(false), f) => format!("sync target{}", if f { ", full sync" } else { "" }),
            }
        );
        match source {
            None => {
                peer.repl_state.set(ReplState::Established);
                // Two fresh disks stay Inconsistent until one is forced Primary.
                if hs.peer_uuids.current != UUID_JUST_CREATED
                    && vol.disk_state.get() == DiskState::Inconsistent
                    && DiskState::from_wire(hs.peer_state.disk) == DiskState::UpToDate
                    && hs.peer_uuids.current & !1 == vol.sb.borrow().current_uuid & !1
                {
                    self.set_disk_state(DiskState::UpToDate);
                }
            }
            Some(is_source) => self.begin_resync(&peer, &link, is_source, full),
        }
        link.begin_receiving();
        Ok(rx)
    }

    /// Starts a resync with `peer` in the given direction and sends our bitmap for it.
    pub(crate) fn begin_resync(
        self: &Rc<Self>,
        peer: &Rc<Peer>,
        link: &Rc<Link>,
        is_source: bool,
        full: bool,
    ) {
        let Some(vol) = self.volume() else { return };
        {
            let mut bms = vol.bitmaps.borrow_mut();
            if let Some(bm) = bms.get_mut(peer.slot) {
                if full {
                    bm.set_all();
                }
            }
        }
        if is_source {
            peer.repl_state.set(ReplState::SyncSource);
            peer.peer_disk.set(DiskState::Inconsistent);
        } else {
            peer.repl_state.set(ReplState::SyncTarget);
            self.set_disk_state(DiskState::Inconsistent);
            vol.sb.borrow_mut().flags &= !meta_flag::CONSISTENT;
            vol.persist_sb(|_| {});
        }
        // Send our side of the bitmap; the two are merged on both nodes.
        let words: Vec<u64> = vol
            .bitmaps
            .borrow()
            .get(peer.slot)
            .map(|b| b.words().to_vec())
            .unwrap_or_default();
        let total_bits = vol.layout.bits;
        const WORDS_PER_PACKET: usize = 8192;
        let chunks = words.len().div_ceil(WORDS_PER_PACKET).max(1);
        for c in 0..chunks {
            let from = c * WORDS_PER_PACKET;
            let to = (from + WORDS_PER_PACKET).min(words.len());
            link.data.send(&Packet::Bitmap(wire::Bitmap {
                total_bits,
                first_word: from as u64,
                last: c + 1 == chunks,
                words: words[from.min(to)..to].to_vec(),
            }));
        }
        let now = Instant::now();
        *peer.sync.borrow_mut() = Some(SyncRun {
            source: is_source,
            total_bits: vol.dirty_count(peer.slot),
            done_bits: 0,
            next_bit: 0,
            inflight: 0,
            started: now,
            resynced_blocks: 0,
            peer_bitmap_in: false,
            tokens: 0.0,
            last_refill: now,
            samples: VecDeque::new(),
        });
    }
}

fn view(node_id: u8, u: &wire::Uuids) -> GenView {
    GenView {
        node_id,
        current: u.current,
        bitmap: u.bitmap.clone(),
        history: u.history.clone(),
        flags: u.flags,
        dirty_blocks: u.dirty_blocks,
    }
}
