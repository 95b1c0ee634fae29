//! Where a process leaves its packed events for its node agent: a shared-memory area of
//! single-producer rings, one per recording thread.
//!
//! A process creates its area (a file under `/dev/shm`) when it connects and names it in
//! its registration; the node agent maps it, removes the name (the mapping keeps it alive
//! for both), and drains every ring into the node's event log every few milliseconds,
//! writing the runs straight from the shared pages. No event crosses the socket (a thread
//! whose ring fills up only asks for an early drain) and nothing is copied on the way: the
//! bytes a thread packs are the bytes the log gets. And what a process published before it
//! was killed is kept: its area outlives it until the agent drains it.
//!
//! A ring has one writer (its thread, through a [`SlotWriter`]) and one reader (the agent,
//! [`EventArea::drain`]), so neither takes a lock or does an atomic read-modify-write per
//! event: the writer publishes how far it got with plain stores under a sequence lock, the
//! reader frees what it wrote to the log the same way. The last slot is shared by the
//! threads that found every other one taken, under a spin lock.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering, fence};

use memmap2::MmapRaw;

use crate::event_run::{MAX_PEER_SALTS, PeerSalts, RunSource, run_header};
use crate::ids::event_seq_block;

const MAGIC: u64 = 0x7261_7972_4556_0001;
/// Rings per process. A driver's reader threads (one per worker it talks to) each take
/// one; threads beyond this share the last.
pub const SLOTS: usize = 64;
/// Bytes of packed events one ring holds: ~800 tasks' worth at the writer's end, drained
/// every few milliseconds (and sooner on request, see [`SlotWriter::wants_drain`]).
pub const RING_BYTES: usize = 128 << 10;
/// Room past each ring's end for a writer's whole-chunk copy overrun.
const SLACK: usize = 64;
/// Event numbers one ring takes at a time: small, so they pack into a few bytes; a writer
/// that used them all moves to a new slot (the shared slot renews its block in place).
const SEQ_BLOCK: u64 = 1 << 24;

const FREE: u32 = 0;
const OWNED: u32 = 1;
const RETIRED: u32 = 2;
const SHARED: u32 = 3;

#[repr(C)]
struct AreaHeader {
    magic: AtomicU64,
    salt: AtomicU64,
    slots: AtomicU32,
    ring_bytes: AtomicU32,
}

/// One ring's state, shared between its writer and the agent.
#[repr(C, align(128))]
struct SlotHeader {
    state: AtomicU32,
    /// Held by the writer of the shared last slot.
    lock: AtomicBool,
    // Published by the writer, read together under `version` (a sequence lock).
    version: AtomicU64,
    published: AtomicU64,
    next_seq: AtomicU64,
    last_time: AtomicI64,
    peer_count: AtomicU64,
    peer_salts: [AtomicU64; MAX_PEER_SALTS],
    /// The end of the slot's block of event numbers (set with the first).
    seq_end: AtomicU64,
    // Written by the agent: bytes drained (space before it may be written again), and the
    // event number and time where the next run starts. A writer sets the latter two when it
    // starts a block of numbers (claiming the slot, or renewing the shared one), while
    // nothing is unsent.
    sent: AtomicU64,
    reader_seq: AtomicU64,
    reader_time: AtomicI64,
}

const HEADER_BYTES: usize = 128;

fn area_len() -> usize {
    HEADER_BYTES + SLOTS * std::mem::size_of::<SlotHeader>() + SLOTS * (RING_BYTES + SLACK)
}

/// One process's event area, mapped.
pub struct EventArea {
    map: MmapRaw,
    path: PathBuf,
}

impl EventArea {
    /// Creates the area at `path` (under `/dev/shm`) for a process whose ids end in `salt`.
    pub fn create(path: &Path, salt: u64) -> io::Result<EventArea> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        file.set_len(area_len() as u64)?;
        let area = EventArea { map: MmapRaw::map_raw(&file)?, path: path.to_path_buf() };
        let h = area.header();
        h.salt.store(salt, Ordering::Relaxed);
        h.slots.store(SLOTS as u32, Ordering::Relaxed);
        h.ring_bytes.store(RING_BYTES as u32, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(area)
    }

    /// Maps the area a process created (the agent's side); refuses anything else: a path
    /// with `..` or through a symbolic link, a file of another user, the wrong size or
    /// layout.
    pub fn open(path: &Path) -> io::Result<EventArea> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, format!("{}: not an event area: {what}", path.display()));
        if path.components().any(|c| !matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_))) {
            return Err(bad("the path is not plain".into()));
        }
        let file = File::options().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
        let meta = file.metadata()?;
        // SAFETY: geteuid has no preconditions.
        if meta.uid() != unsafe { libc::geteuid() } {
            return Err(bad(format!("owned by uid {}", meta.uid())));
        }
        if meta.len() != area_len() as u64 {
            return Err(bad(format!("{} bytes, expected {}", meta.len(), area_len())));
        }
        // Mapped at the size checked, whatever the file's size is by now.
        let map = memmap2::MmapOptions::new().len(area_len()).map_raw(&file)?;
        let area = EventArea { map, path: path.to_path_buf() };
        let h = area.header();
        if h.magic.load(Ordering::Acquire) != MAGIC
            || h.slots.load(Ordering::Relaxed) != SLOTS as u32
            || h.ring_bytes.load(Ordering::Relaxed) != RING_BYTES as u32
        {
            return Err(bad("unknown layout".into()));
        }
        Ok(area)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The process's id salt.
    pub fn salt(&self) -> u64 {
        self.header().salt.load(Ordering::Relaxed)
    }

    fn header(&self) -> &AreaHeader {
        // SAFETY: the mapping is at least HEADER_BYTES long, page-aligned, and AreaHeader is
        // atomics only.
        unsafe { &*(self.map.as_ptr() as *const AreaHeader) }
    }

    #[inline]
    fn slot(&self, i: usize) -> &SlotHeader {
        assert!(i < SLOTS);
        // SAFETY: inside the mapping, aligned (HEADER_BYTES and the slot size are multiples
        // of its alignment), atomics only.
        unsafe { &*(self.map.as_ptr().add(HEADER_BYTES + i * std::mem::size_of::<SlotHeader>()) as *const SlotHeader) }
    }

    #[inline]
    fn ring(&self, i: usize) -> *mut u8 {
        // SAFETY: inside the mapping.
        unsafe { self.map.as_mut_ptr().add(HEADER_BYTES + SLOTS * std::mem::size_of::<SlotHeader>() + i * (RING_BYTES + SLACK)) }
    }

    /// A ring of the calling thread's own, or the shared last one when all are taken.
    pub fn claim(self: &Arc<Self>) -> SlotWriter {
        let mut shared = true;
        let mut index = SLOTS - 1;
        for i in 0..SLOTS - 1 {
            if self.slot(i).state.compare_exchange(FREE, OWNED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                (shared, index) = (false, i);
                break;
            }
        }
        let slot = self.slot(index);
        if shared {
            slot.lock_shared();
            if slot.state.load(Ordering::Relaxed) == FREE {
                slot.start(event_seq_block(SEQ_BLOCK));
                slot.state.store(SHARED, Ordering::Release);
            }
            slot.lock.store(false, Ordering::Release);
        } else {
            slot.start(event_seq_block(SEQ_BLOCK));
        }
        SlotWriter {
            area: self.clone(),
            index,
            shared,
            written: slot.published.load(Ordering::Relaxed),
            next_seq: slot.next_seq.load(Ordering::Relaxed),
            seq_end: slot.seq_end.load(Ordering::Relaxed),
            last_time: 0,
            version: slot.version.load(Ordering::Relaxed),
            peers: PeerSalts::default(),
        }
    }

    /// Writes every ring's published, unsent events to the log through `write` (given the
    /// frames as slices: a run header per ring, then its events straight from the shared
    /// pages), then frees what was written. `src` names the process (its salt is taken from
    /// the area). `writers_gone`: the process has ended, so a ring caught mid-publish will
    /// stay so and is taken as it is. Call from one thread at a time.
    pub fn drain(&self, src: &RunSource, writers_gone: bool, write: impl FnOnce(&mut [IoSlice<'_>]) -> io::Result<()>) -> io::Result<()> {
        let src = RunSource { salt: self.salt(), ..src.clone() };
        let mut headers = Vec::new();
        let mut runs = Vec::new(); // (slot, sent, published, next_seq, last_time, header range)
        for i in 0..SLOTS {
            let slot = self.slot(i);
            let state = slot.state.load(Ordering::Acquire);
            if state == FREE {
                continue;
            }
            let Some((published, next_seq, last_time)) = slot.read_published(writers_gone) else {
                continue; // caught mid-publish for too long: next round
            };
            let sent = slot.sent.load(Ordering::Relaxed);
            if published == sent {
                if state == RETIRED || (writers_gone && state == OWNED) {
                    slot.reset();
                }
                continue;
            }
            if published < sent || published - sent > RING_BYTES as u64 {
                // A writer that broke the protocol: skip the ring rather than read garbage.
                continue;
            }
            let first_seq = slot.reader_seq.load(Ordering::Relaxed);
            // The count only informs readers (they number events by position), so a
            // writer's nonsense here harms nothing.
            let n = next_seq.wrapping_sub(first_seq) as u32;
            let mut peers = [0u64; MAX_PEER_SALTS];
            let pc = (slot.peer_count.load(Ordering::Relaxed) as usize).min(MAX_PEER_SALTS);
            for (p, s) in peers.iter_mut().zip(&slot.peer_salts[..pc]) {
                *p = s.load(Ordering::Relaxed);
            }
            let h0 = headers.len();
            run_header(&src, &peers[..pc], first_seq, slot.reader_time.load(Ordering::Relaxed), n, (published - sent) as usize, &mut headers);
            runs.push((i, sent, published, next_seq, last_time, h0..headers.len()));
        }
        if runs.is_empty() {
            return Ok(());
        }
        let mut slices = Vec::with_capacity(3 * runs.len());
        for (i, sent, published, _, _, h) in &runs {
            slices.push(IoSlice::new(&headers[h.clone()]));
            let (a, b) = self.ring_slices(*i, *sent, *published);
            slices.push(IoSlice::new(a));
            if !b.is_empty() {
                slices.push(IoSlice::new(b));
            }
        }
        write(&mut slices)?;
        for (i, _, published, next_seq, last_time, _) in runs {
            let slot = self.slot(i);
            slot.reader_seq.store(next_seq, Ordering::Relaxed);
            slot.reader_time.store(last_time, Ordering::Relaxed);
            slot.sent.store(published, Ordering::Release);
        }
        Ok(())
    }

    /// The ring bytes `[from, to)` (running totals) as one or two slices.
    fn ring_slices(&self, i: usize, from: u64, to: u64) -> (&[u8], &[u8]) {
        let start = (from % RING_BYTES as u64) as usize;
        let len = (to - from) as usize;
        let first = len.min(RING_BYTES - start);
        // SAFETY: both ranges are inside ring i; [from, to) is published and not yet freed,
        // so its writer leaves it alone until `sent` passes it.
        unsafe { (std::slice::from_raw_parts(self.ring(i).add(start), first), std::slice::from_raw_parts(self.ring(i), len - first)) }
    }
}

impl SlotHeader {
    /// Prepares a claimed slot: numbering starts at `first_seq`, times at 0.
    fn start(&self, first_seq: u64) {
        self.next_seq.store(first_seq, Ordering::Relaxed);
        self.seq_end.store(first_seq + SEQ_BLOCK, Ordering::Relaxed);
        self.reader_seq.store(first_seq, Ordering::Relaxed);
        self.reader_time.store(0, Ordering::Relaxed);
        self.last_time.store(0, Ordering::Relaxed);
    }

    /// Back to free, once drained after its writer retired it (the agent's side).
    fn reset(&self) {
        for a in [&self.version, &self.published, &self.sent, &self.peer_count] {
            a.store(0, Ordering::Relaxed);
        }
        self.state.store(FREE, Ordering::Release);
    }

    fn lock_shared(&self) {
        while self.lock.swap(true, Ordering::Acquire) {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
    }

    /// (published bytes, next event number, last event time), consistently; `None` when a
    /// writer stays mid-publish (it publishes in nanoseconds, so it was stopped there).
    /// With `writer_gone`, it never will finish: the fields are taken as they are (readers
    /// number events by position, so only what the next run would start from is off, and
    /// there is none).
    fn read_published(&self, writer_gone: bool) -> Option<(u64, u64, i64)> {
        for attempt in 0..1000 {
            let v1 = self.version.load(Ordering::Acquire);
            let got = (
                self.published.load(Ordering::Relaxed),
                self.next_seq.load(Ordering::Relaxed),
                self.last_time.load(Ordering::Relaxed),
            );
            fence(Ordering::Acquire);
            if (v1.is_multiple_of(2) || writer_gone) && self.version.load(Ordering::Relaxed) == v1 {
                return Some(got);
            }
            if attempt > 10 {
                std::thread::yield_now();
            }
        }
        None
    }
}

/// A thread's end of its ring (or of the shared one).
pub struct SlotWriter {
    area: Arc<EventArea>,
    index: usize,
    shared: bool,
    /// Bytes written so far (published or not), the next event's number, the end of this
    /// slot's numbers, the last event's time, the sequence lock's value.
    written: u64,
    next_seq: u64,
    seq_end: u64,
    last_time: i64,
    version: u64,
    pub peers: PeerSalts,
}

impl SlotWriter {
    /// Whether this writer shares the last slot (and must [`lock`](Self::lock) it).
    #[inline]
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// For the shared slot: takes its lock and loads its state; [`unlock`](Self::unlock)
    /// publishes and releases it. False (and unlocked) when the slot's numbers are used up
    /// and the agent has not yet drained it: the event cannot be recorded now.
    pub fn lock(&mut self) -> bool {
        let slot = self.area.slot(self.index);
        slot.lock_shared();
        if slot.next_seq.load(Ordering::Relaxed) >= slot.seq_end.load(Ordering::Relaxed) {
            // Numbers used up: once the agent has drained the slot, a new block starts
            // there (the agent reads where runs start only while something is unsent).
            if slot.published.load(Ordering::Relaxed) != slot.sent.load(Ordering::Acquire) {
                slot.lock.store(false, Ordering::Release);
                return false;
            }
            slot.start(event_seq_block(SEQ_BLOCK));
        }
        self.written = slot.published.load(Ordering::Relaxed);
        self.next_seq = slot.next_seq.load(Ordering::Relaxed);
        self.seq_end = slot.seq_end.load(Ordering::Relaxed);
        self.last_time = slot.last_time.load(Ordering::Relaxed);
        self.version = slot.version.load(Ordering::Relaxed);
        self.peers = PeerSalts::from_slice(&self.published_peers());
        true
    }

    pub fn unlock(&mut self) {
        self.publish();
        self.area.slot(self.index).lock.store(false, Ordering::Release);
    }

    fn published_peers(&self) -> Vec<u64> {
        let slot = self.area.slot(self.index);
        let n = (slot.peer_count.load(Ordering::Relaxed) as usize).min(MAX_PEER_SALTS);
        slot.peer_salts[..n].iter().map(|s| s.load(Ordering::Relaxed)).collect()
    }

    #[inline]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    #[inline]
    pub fn last_time(&self) -> i64 {
        self.last_time
    }

    /// This slot's numbers are used up: the thread should claim another.
    #[inline]
    pub fn exhausted(&self) -> bool {
        self.next_seq >= self.seq_end
    }

    /// Bytes written and not yet drained.
    #[inline]
    pub fn unsent(&self) -> u64 {
        self.written.saturating_sub(self.area.slot(self.index).sent.load(Ordering::Acquire))
    }

    /// Whether an event of `len` bytes fits now.
    #[inline]
    pub fn room_for(&self, len: usize) -> bool {
        RING_BYTES as u64 - self.unsent() >= (len + SLACK) as u64
    }

    /// Whether the ring is over half full (ask the agent to drain it sooner).
    #[inline]
    pub fn wants_drain(&self) -> bool {
        self.unsent() >= RING_BYTES as u64 / 2
    }

    /// Appends one packed event (checked with [`room_for`](Self::room_for)) at `time_us`;
    /// returns its number. Not visible to the agent until [`publish`](Self::publish).
    #[inline]
    pub fn write(&mut self, event: &Vec<u8>, time_us: i64) -> u64 {
        assert!(self.room_for(event.len()), "no room in the event ring");
        let start = (self.written % RING_BYTES as u64) as usize;
        let ring = self.area.ring(self.index);
        // SAFETY: [written, written + len + SLACK) is free space (the caller checked): the
        // agent reads only below `published`, which is stored after this. Each ring has
        // SLACK bytes past its end for copy_event's overrun.
        unsafe {
            if start + event.len() <= RING_BYTES && event.len() <= 64 && event.capacity() >= 64 {
                copy_event(event.as_ptr(), ring.add(start), event.len());
            } else {
                let first = event.len().min(RING_BYTES - start);
                std::ptr::copy_nonoverlapping(event.as_ptr(), ring.add(start), first);
                std::ptr::copy_nonoverlapping(event.as_ptr().add(first), ring, event.len() - first);
            }
        }
        let seq = self.next_seq;
        self.written += event.len() as u64;
        self.next_seq += 1;
        self.last_time = time_us;
        seq
    }

    /// Makes what was written visible to the agent.
    #[inline]
    pub fn publish(&mut self) {
        let slot = self.area.slot(self.index);
        let peers = self.peers.as_slice();
        let known = slot.peer_count.load(Ordering::Relaxed) as usize;
        if peers.len() > known {
            for (s, salt) in slot.peer_salts.iter().zip(peers).skip(known) {
                s.store(*salt, Ordering::Relaxed);
            }
            slot.peer_count.store(peers.len() as u64, Ordering::Relaxed);
        }
        self.version += 2;
        slot.version.store(self.version - 1, Ordering::Relaxed);
        fence(Ordering::Release);
        slot.published.store(self.written, Ordering::Relaxed);
        slot.next_seq.store(self.next_seq, Ordering::Relaxed);
        slot.last_time.store(self.last_time, Ordering::Relaxed);
        slot.version.store(self.version, Ordering::Release);
    }
}

impl Drop for SlotWriter {
    fn drop(&mut self) {
        if self.shared {
            return;
        }
        self.publish();
        self.area.slot(self.index).state.store(RETIRED, Ordering::Release);
    }
}

/// Copies one packed event without a library call (memmove's call and dispatch cost as
/// much as copying ~50 bytes): whole 16-byte chunks, so it may write up to 63 bytes past
/// `len` and read past `src`'s initialized bytes.
///
/// SAFETY: `len` ≤ 64; `src` is valid for reads of 64 bytes (initialized or not), `dst` for
/// writes of 64 bytes, and they do not overlap.
#[inline(always)]
unsafe fn copy_event(src: *const u8, dst: *mut u8, len: usize) {
    type Chunk = std::mem::MaybeUninit<[u8; 16]>;
    let (s, d) = (src as *const Chunk, dst as *mut Chunk);
    // SAFETY: per the caller; chunks may hold uninitialized bytes (MaybeUninit).
    unsafe {
        d.write_unaligned(s.read_unaligned());
        if len > 16 {
            d.add(1).write_unaligned(s.add(1).read_unaligned());
        }
        if len > 32 {
            d.add(2).write_unaligned(s.add(2).read_unaligned());
        }
        if len > 48 {
            d.add(3).write_unaligned(s.add(3).read_unaligned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_run::{expand_run, pack_event};
    use rayr_proto::{Event, EventKind};

    fn area() -> (tempfile::TempDir, Arc<EventArea>) {
        let dir = tempfile::tempdir().unwrap();
        let area = EventArea::create(&dir.path().join("ev"), crate::process_salt()).unwrap();
        (dir, Arc::new(area))
    }

    fn record(w: &mut SlotWriter, time: i64) -> u64 {
        let mut buf = Vec::with_capacity(256);
        let src = RunSource { salt: crate::process_salt(), ..Default::default() };
        let (seq, delta) = (w.next_seq(), time - w.last_time());
        pack_event(&mut buf, &src, &mut w.peers, seq, EventKind::TaskStarted as i32, delta, |e| {
            e.task(&[3; 16]);
        });
        assert!(w.room_for(buf.len()));
        let got = w.write(&buf, time);
        w.publish();
        got
    }

    fn drain(area: &EventArea) -> Vec<Event> {
        let mut wire = Vec::new();
        let src = RunSource { source_worker: [5; 16], ..Default::default() };
        area.drain(&src, false, |slices| {
            for s in slices.iter() {
                wire.extend_from_slice(s);
            }
            Ok(())
        })
        .unwrap();
        let mut out = Vec::new();
        let mut rest = wire.as_slice();
        while let Some((run, used)) = rayr_proto::split_frame(rest).unwrap() {
            expand_run(run, &mut out).unwrap();
            rest = &rest[used..];
        }
        out
    }

    #[test]
    fn the_agent_drains_what_threads_wrote_in_order_across_wraps() {
        let (_dir, area) = area();
        let agent_side = EventArea::open(area.path()).unwrap();
        assert_eq!(agent_side.salt(), crate::process_salt());
        let mut w = area.claim();
        assert!(drain(&agent_side).is_empty());
        for round in 0..4i64 {
            let mut want = Vec::new();
            for i in 0..3000 {
                let t = round * 1_000_000 + i;
                let seq = record(&mut w, t);
                want.push((crate::event_id_from(seq, crate::process_salt()).to_vec(), t));
            }
            let got: Vec<(Vec<u8>, i64)> = drain(&agent_side).into_iter().map(|e| (e.id, e.time_us)).collect();
            assert_eq!(got, want, "round {round}");
        }
        assert!(drain(&agent_side).iter().all(|e| e.source_worker == vec![5; 16]));
    }

    #[test]
    fn a_retired_slot_is_drained_then_reused_and_a_full_area_shares_its_last_slot() {
        let (_dir, area) = area();
        let agent_side = EventArea::open(area.path()).unwrap();
        let mut writers: Vec<SlotWriter> = (0..SLOTS - 1).map(|_| area.claim()).collect();
        let mut shared_a = area.claim();
        let mut shared_b = area.claim();
        assert!(shared_a.is_shared() && shared_b.is_shared());
        for w in [&mut shared_a, &mut shared_b] {
            assert!(w.lock());
            record(w, 7);
            w.unlock();
        }
        record(&mut writers[3], 9);
        let seqs: Vec<u64> = writers.iter().map(|w| w.next_seq()).collect();
        drop(writers.remove(3)); // its thread exits
        let got = drain(&agent_side);
        assert_eq!(got.len(), 3, "the exited thread's event and both shared ones");
        assert!(drain(&agent_side).is_empty());
        // The freed slot is taken by the next thread, with fresh numbers.
        let next = area.claim();
        assert!(!next.is_shared());
        assert!(!seqs.contains(&next.next_seq()));
    }

    #[test]
    fn anything_but_an_area_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(EventArea::open(&p).err().unwrap().kind(), io::ErrorKind::InvalidData);
    }
}
