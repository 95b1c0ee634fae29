//! Recording events cheaply. Each recording thread packs its events, field by field
//! (`rayr_logs::event_run`), into its own ring of bytes; the ticker sends what every ring
//! holds to the node agent as one `EventBatch` every few milliseconds, with one vectored
//! write, straight from the rings.
//!
//! A ring has one writer (its thread) and one reader (whoever flushes, one at a time), so
//! neither takes a lock or does an atomic read-modify-write per event: the writer
//! publishes how far it got with plain stores, the reader frees what it sent the same way.
//! On this machine an uncontended lock and unlock cost more than packing an event.

use std::cell::{RefCell, UnsafeCell};
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering, fence};

use parking_lot::Mutex;
use rayr_logs::event_run::{EventWriter, MAX_PEER_SALTS, PeerSalts, RunSource, pack_event, pack_whole_event, run_header};
use rayr_logs::{Id, event_id_from, event_seq_block, new_id, now_us};
use rayr_proto::{Event, EventKind};

use super::Core;

/// Overwrites `dst` with `src`, keeping its allocation.
#[inline]
pub(crate) fn put(dst: &mut Vec<u8>, src: &[u8]) {
    dst.clear();
    dst.extend_from_slice(src);
}

/// Bytes of packed events one thread can hold. Small on purpose: a ring that stays in
/// the CPU's cache costs a fraction of one that streams through memory (measured here: a
/// 128 KiB ring made recording cost more than twice what a 16 KiB one did). A thread whose
/// ring passes `EARLY_FLUSH_BYTES` wakes the ticker to send it; one that fills it anyway
/// sends it itself.
const RING_BYTES: usize = 128 << 10;
const EARLY_FLUSH_BYTES: u64 = 96 << 10;
/// Event numbers one thread's ring takes at a time; a thread that used them all continues
/// in a new ring. Small enough that event numbers pack into a few bytes.
const SEQ_BLOCK: u64 = 1 << 24;

/// Buffered, packed events of every thread of the process; flushed to the node agent every
/// few milliseconds.
pub(crate) struct EventBuffer {
    id: u64,
    source: RunSource,
    rings: Mutex<Vec<Arc<Ring>>>,
    /// The thread that flushes (the ticker), woken early when a ring fills up.
    flusher: std::sync::OnceLock<std::thread::Thread>,
    flush_wanted: AtomicBool,
    /// One flush at a time: a flush reads the rings and frees what it sent; another (say,
    /// shutdown's last one, which then closes the connection) waits for it.
    flushing: Mutex<()>,
}

/// One thread's events: bytes `[sent, published)` (as running totals) wait to be sent.
struct Ring {
    bytes: Box<[UnsafeCell<u8>]>,
    /// What the writer published, read together under `version` (a sequence lock with a
    /// single writer, so plain stores): bytes written, the next event's number, the last
    /// event's time.
    version: AtomicU64,
    published: AtomicU64,
    next_seq: AtomicU64,
    last_time: AtomicI64,
    /// The writer's peer salt table (only ever appended to), published before the events
    /// that use an entry.
    peer_salts: [AtomicU64; MAX_PEER_SALTS],
    peer_count: AtomicUsize,
    /// Bytes sent; space before it may be written again. Only the flusher stores it.
    sent: AtomicU64,
    /// The event number and time at `sent`, where the next run starts. Only the flusher
    /// (holding `EventBuffer::flushing`) touches them.
    reader: Mutex<(u64, i64)>,
    /// The thread is gone (or moved to a new ring): drop the ring once it is sent.
    retired: AtomicBool,
}

// SAFETY: the writer writes only bytes outside [sent, published) and the reader reads only
// bytes inside it; the release/acquire pairs on `version`/`published` and `sent` order
// those accesses.
unsafe impl Sync for Ring {}
unsafe impl Send for Ring {}

impl Ring {
    fn new(first_seq: u64) -> Ring {
        Ring {
            // 64 bytes of slack for `copy_event`'s overrun past the end.
            bytes: (0..RING_BYTES + 64).map(|_| UnsafeCell::new(0)).collect(),
            version: AtomicU64::new(0),
            published: AtomicU64::new(0),
            next_seq: AtomicU64::new(first_seq),
            last_time: AtomicI64::new(0),
            peer_salts: Default::default(),
            peer_count: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            reader: Mutex::new((first_seq, 0)),
            retired: AtomicBool::new(false),
        }
    }

    fn ptr(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.bytes.as_ptr())
    }

    /// (published bytes, next event number, last event time), consistently.
    fn read_published(&self) -> (u64, u64, i64) {
        loop {
            let v1 = self.version.load(Ordering::Acquire);
            let got = (
                self.published.load(Ordering::Relaxed),
                self.next_seq.load(Ordering::Relaxed),
                self.last_time.load(Ordering::Relaxed),
            );
            fence(Ordering::Acquire);
            if v1.is_multiple_of(2) && self.version.load(Ordering::Relaxed) == v1 {
                return got;
            }
            std::hint::spin_loop();
        }
    }

    /// The bytes `[from, to)` (running totals) as one or two slices.
    ///
    /// SAFETY: the caller is the reader and `[from, to)` lies within `[sent, published)`.
    unsafe fn slices(&self, from: u64, to: u64) -> (&[u8], &[u8]) {
        let start = (from % RING_BYTES as u64) as usize;
        let len = (to - from) as usize;
        let first = len.min(RING_BYTES - start);
        // SAFETY: both ranges are inside the ring and, per the caller, not being written.
        unsafe {
            (
                std::slice::from_raw_parts(self.ptr().add(start), first),
                std::slice::from_raw_parts(self.ptr(), len - first),
            )
        }
    }
}

/// Copies one packed event without a library call (memmove's call and dispatch cost as
/// much as copying ~50 bytes): whole 16-byte chunks, up to 64 bytes, so it may write up to
/// 63 bytes past `len` and read past the end of `src`'s initialized bytes.
///
/// SAFETY: `src` is valid for reads of max(len, 64) bytes (initialized or not), `dst` for
/// writes of max(len, 64) bytes, and they do not overlap.
#[inline(always)]
unsafe fn copy_event(src: *const u8, dst: *mut u8, len: usize) {
    type Chunk = std::mem::MaybeUninit<[u8; 16]>;
    if len > 64 {
        // SAFETY: per the caller.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        return;
    }
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

/// The calling thread's side of its ring.
struct Writer {
    buffer_id: u64,
    ring: Arc<Ring>,
    /// Where the next event is packed before it is copied into the ring (an event may
    /// wrap around the ring's end).
    scratch: Vec<u8>,
    peers: PeerSalts,
    /// Bytes written so far (published or not).
    written: u64,
    next_seq: u64,
    seq_end: u64,
    last_time: i64,
    version: u64,
    /// Open batches (see `EventBuffer::batch`) and the time their events share.
    batch_depth: u32,
    batch_time: i64,
}

/// An open batch of events (see `EventBuffer::batch`); publishes them when dropped.
pub(crate) struct Batch<'a> {
    buffer: Option<&'a EventBuffer>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let Some(buffer) = self.buffer else { return };
        let _ = WRITER.try_with(|w| {
            if let Some(w) = &mut *w.borrow_mut()
                && w.buffer_id == buffer.id
                && w.batch_depth > 0
            {
                w.batch_depth -= 1;
                if w.batch_depth == 0 {
                    buffer.publish(w);
                }
            }
        });
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.ring.retired.store(true, Ordering::Release);
    }
}

thread_local! {
    static WRITER: RefCell<Option<Writer>> = const { RefCell::new(None) };
}

impl EventBuffer {
    pub(super) fn new(source: RunSource) -> EventBuffer {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        EventBuffer {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            source,
            rings: Mutex::new(Vec::new()),
            flusher: std::sync::OnceLock::new(),
            flush_wanted: AtomicBool::new(false),
            flushing: Mutex::new(()),
        }
    }

    /// Makes the calling thread the one woken when a ring needs sending early.
    pub(super) fn set_flusher(&self) {
        let _ = self.flusher.set(std::thread::current());
    }

    /// Whether a ring asked for an early flush (and clears the request).
    pub(super) fn take_flush_wanted(&self) -> bool {
        self.flush_wanted.swap(false, Ordering::Acquire)
    }

    /// Packs one event with `pack` (given its number and the time since the thread's
    /// previous event) at `time` (or the open batch's time, see [`batch`](Self::batch)) and
    /// publishes it in the calling thread's ring, unless a batch is open; returns its id
    /// (all zeros when this thread can no longer record: it is exiting).
    #[inline]
    fn record(
        &self,
        time: impl FnOnce() -> i64,
        pack: impl FnOnce(&mut Vec<u8>, &RunSource, &mut PeerSalts, u64, i64),
        flush: impl Fn(),
    ) -> Id {
        WRITER
            .try_with(|w| {
                let mut w = w.borrow_mut();
                let w = self.writer(&mut w);
                let time_us = if w.batch_depth > 0 { w.batch_time } else { time() };
                w.scratch.clear();
                pack(&mut w.scratch, &self.source, &mut w.peers, w.next_seq, time_us.wrapping_sub(w.last_time));
                let len = w.scratch.len() as u64;
                // Room for the event and for `copy_event`'s overrun.
                let room = |w: &Writer| RING_BYTES as u64 - (w.written - w.ring.sent.load(Ordering::Acquire)) >= len + 64;
                if !room(w) {
                    // Full: send what it holds now (rare: the ticker empties it far sooner).
                    self.publish(w);
                    flush();
                    if !room(w) {
                        return [0; 16]; // no connection left to send on
                    }
                }
                let start = (w.written % RING_BYTES as u64) as usize;
                // SAFETY: [written, written + len + 64) is free space (checked above; the
                // ring has 64 bytes of slack past its end): the reader reads only below
                // `published`, which is stored after the copy. Scratch has capacity ≥ 64.
                unsafe {
                    let p = w.ring.ptr();
                    if start + len as usize <= RING_BYTES {
                        copy_event(w.scratch.as_ptr(), p.add(start), len as usize);
                    } else {
                        let first = RING_BYTES - start;
                        std::ptr::copy_nonoverlapping(w.scratch.as_ptr(), p.add(start), first);
                        std::ptr::copy_nonoverlapping(w.scratch.as_ptr().add(first), p, len as usize - first);
                    }
                }
                let seq = w.next_seq;
                w.written += len;
                w.next_seq += 1;
                w.last_time = time_us;
                if w.batch_depth == 0 {
                    self.publish(w);
                }
                event_id_from(seq, self.source.salt)
            })
            .unwrap_or([0; 16])
    }

    /// The calling thread's writer for this buffer.
    #[inline]
    fn writer<'a>(&self, slot: &'a mut Option<Writer>) -> &'a mut Writer {
        if matches!(slot, Some(w) if w.buffer_id == self.id && w.next_seq < w.seq_end) {
            return slot.as_mut().unwrap();
        }
        self.new_writer(slot)
    }

    /// Makes what the writer wrote visible to the flusher (and wakes the flusher early if
    /// the ring is filling up).
    #[inline]
    fn publish(&self, w: &mut Writer) {
        let r = &w.ring;
        let peers = w.peers.as_slice();
        if peers.len() > r.peer_count.load(Ordering::Relaxed) {
            let n = r.peer_count.load(Ordering::Relaxed);
            for (slot, salt) in r.peer_salts.iter().zip(peers).skip(n) {
                slot.store(*salt, Ordering::Relaxed);
            }
            r.peer_count.store(peers.len(), Ordering::Relaxed);
        }
        w.version += 2;
        r.version.store(w.version - 1, Ordering::Relaxed);
        fence(Ordering::Release);
        r.published.store(w.written, Ordering::Relaxed);
        r.next_seq.store(w.next_seq, Ordering::Relaxed);
        r.last_time.store(w.last_time, Ordering::Relaxed);
        r.version.store(w.version, Ordering::Release);
        if w.written - r.sent.load(Ordering::Relaxed) >= EARLY_FLUSH_BYTES
            && !self.flush_wanted.load(Ordering::Relaxed)
            && let Some(flusher) = self.flusher.get()
        {
            self.flush_wanted.store(true, Ordering::Relaxed);
            flusher.unpark();
        }
    }

    /// Opens a batch on the calling thread until the guard drops: the events it records
    /// meanwhile share one clock reading and are published once, at the end. For decisions
    /// made together (a burst of results, a dispatch loop); never hold one across a wait.
    pub(crate) fn batch(&self) -> Batch<'_> {
        let _ = WRITER.try_with(|w| {
            let mut w = w.borrow_mut();
            let w = self.writer(&mut w);
            if w.batch_depth == 0 {
                w.batch_time = now_us();
            }
            w.batch_depth += 1;
        });
        Batch { buffer: Some(self), _not_send: std::marker::PhantomData }
    }

    #[cold]
    fn new_writer<'a>(&self, slot: &'a mut Option<Writer>) -> &'a mut Writer {
        let first_seq = event_seq_block(SEQ_BLOCK);
        let ring = Arc::new(Ring::new(first_seq));
        self.rings.lock().push(ring.clone());
        // Dropping the old writer retires its ring.
        slot.insert(Writer {
            buffer_id: self.id,
            ring,
            scratch: Vec::with_capacity(256),
            peers: PeerSalts::default(),
            written: 0,
            next_seq: first_seq,
            seq_end: first_seq + SEQ_BLOCK,
            last_time: 0,
            version: 0,
            batch_depth: 0,
            batch_time: 0,
        })
    }

    /// Sends everything recorded so far, from every thread, as one frame of
    /// `ClientMessage { events: EventBatch { frames, count } }` through `send`, which gets
    /// the frame as slices (header, then each ring's run header and events, trailer) for
    /// one vectored write: the events are not copied. A ring's space is freed once sent.
    fn flush_with(&self, send: impl FnOnce(&mut [std::io::IoSlice<'_>])) {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
        let _one_at_a_time = self.flushing.lock();
        let rings: Vec<Arc<Ring>> = {
            let mut rings = self.rings.lock();
            // A retired ring with nothing left to send is done.
            rings.retain(|r| !(r.retired.load(Ordering::Acquire) && r.read_published().0 == r.sent.load(Ordering::Relaxed)));
            rings.clone()
        };
        // (ring, published up to, next seq, last time, header range)
        let mut runs = Vec::new();
        let mut headers = Vec::with_capacity(64 * rings.len());
        let mut count = 0u32;
        let mut events_len = 0usize;
        for ring in &rings {
            let (published, next_seq, last_time) = ring.read_published();
            let sent = ring.sent.load(Ordering::Relaxed);
            if published == sent {
                continue;
            }
            let (first_seq, base_time) = *ring.reader.lock();
            let n = (next_seq - first_seq) as u32;
            let mut peers = [0u64; MAX_PEER_SALTS];
            let peer_count = ring.peer_count.load(Ordering::Relaxed);
            for (p, slot) in peers.iter_mut().zip(&ring.peer_salts[..peer_count]) {
                *p = slot.load(Ordering::Relaxed);
            }
            let h0 = headers.len();
            run_header(&self.source, &peers[..peer_count], first_seq, base_time, n, (published - sent) as usize, &mut headers);
            runs.push((ring, sent, published, next_seq, last_time, h0..headers.len()));
            count += n;
            events_len += (published - sent) as usize;
        }
        if count == 0 {
            return;
        }
        let frames_len = headers.len() + events_len;
        // EventBatch: frames = 1 (bytes) then count = 2 (varint); ClientMessage: events = 7
        // (req_id 0 is the default and not encoded).
        let mut trailer = Vec::with_capacity(11);
        encode_key(2, WireType::Varint, &mut trailer);
        encode_varint(count as u64, &mut trailer);
        let batch_len = 1 + encoded_len_varint(frames_len as u64) + frames_len + trailer.len();
        let msg_len = 1 + encoded_len_varint(batch_len as u64) + batch_len;
        let mut header = Vec::with_capacity(26);
        header.extend_from_slice(&(msg_len as u32).to_le_bytes());
        encode_key(7, WireType::LengthDelimited, &mut header);
        encode_varint(batch_len as u64, &mut header);
        encode_key(1, WireType::LengthDelimited, &mut header);
        encode_varint(frames_len as u64, &mut header);
        {
            let mut slices = Vec::with_capacity(2 + 3 * runs.len());
            slices.push(std::io::IoSlice::new(&header));
            for (ring, sent, published, _, _, h) in &runs {
                slices.push(std::io::IoSlice::new(&headers[h.clone()]));
                // SAFETY: we are the one reader (holding `flushing`), and [sent, published)
                // was published and not yet freed.
                let (a, b) = unsafe { ring.slices(*sent, *published) };
                slices.push(std::io::IoSlice::new(a));
                if !b.is_empty() {
                    slices.push(std::io::IoSlice::new(b));
                }
            }
            slices.push(std::io::IoSlice::new(&trailer));
            send(&mut slices);
        }
        for (ring, _, published, next_seq, last_time, _) in runs {
            *ring.reader.lock() = (next_seq, last_time);
            ring.sent.store(published, Ordering::Release);
        }
    }
}

/// Writes every slice, however many calls that takes.
fn write_all_vectored(w: &mut impl Write, mut slices: &mut [std::io::IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match w.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Core {

    #[inline]
    pub fn event(&self, kind: EventKind) -> Event {
        Event {
            id: new_id().to_vec(),
            time_us: now_us(),
            node_id: self.node.to_vec(),
            source_worker: self.me.to_vec(),
            source_pid: self.pid,
            kind: kind as i32,
            job_id: self.job.to_vec(),
            ..Default::default()
        }
    }

    /// Records an event of `kind` now, packed straight into this thread's ring as `fill`
    /// writes its fields (the hot path: six events per task, nothing built in between).
    /// Returns its id, the cause link for what follows; all zeros when events are off.
    #[inline]
    pub fn emit(&self, kind: EventKind, fill: impl FnOnce(&mut EventWriter<'_>)) -> Id {
        if !self.record_events {
            return [0; 16];
        }
        self.events.record(
            now_us,
            |out, source, peers, seq, delta| pack_event(out, source, peers, seq, kind as i32, delta, fill),
            || self.flush_events(),
        )
    }

    /// Opens a batch of events (see `EventBuffer::batch`) on this thread until the guard
    /// drops.
    #[inline]
    pub(crate) fn event_batch(&self) -> Batch<'_> {
        if !self.record_events {
            return Batch { buffer: None, _not_send: std::marker::PhantomData };
        }
        self.events.batch()
    }

    /// Records an event built as a whole `Event` (the rare ones); returns its id.
    #[inline]
    pub fn record(&self, e: Event) -> Id {
        let id: Id = e.id.as_slice().try_into().unwrap_or([0; 16]);
        if self.record_events {
            self.events.record(|| e.time_us, |out, _, _, _, delta| pack_whole_event(out, &e, delta), || self.flush_events());
        }
        id
    }

    pub fn flush_events(&self) {
        self.events.flush_with(|slices| {
            let _ = write_all_vectored(&mut *self.node_conn.write.lock(), slices);
        });
    }

}

#[cfg(test)]
mod tests {
    use super::*;
    use rayr_proto::{ClientMessage, Message, client_message};

    fn take(buf: &EventBuffer) -> Option<Vec<u8>> {
        let mut got = None;
        buf.flush_with(|slices| {
            let mut all = Vec::new();
            write_all_vectored(&mut all, slices).unwrap();
            got = Some(all);
        });
        got
    }

    fn events_in(frame: &[u8]) -> (u32, Vec<Event>) {
        let (body, used) = rayr_proto::split_frame(frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        let Some(client_message::Body::Events(batch)) = ClientMessage::decode(body).unwrap().body else {
            panic!("not an event batch")
        };
        let mut events = Vec::new();
        let mut rest = batch.frames.as_slice();
        while let Some((run, used)) = rayr_proto::split_frame(rest).unwrap() {
            rayr_logs::expand_run(run, &mut events).unwrap();
            rest = &rest[used..];
        }
        (batch.count, events)
    }

    fn started(buf: &EventBuffer, time: i64) -> Id {
        buf.record(|| time, |out, src, peers, seq, delta| pack_event(out, src, peers, seq, EventKind::TaskStarted as i32, delta, |w| {
            w.task(&[1; 16]);
        }), || {})
    }

    #[test]
    fn buffered_events_travel_as_one_client_message() {
        let source = RunSource { source_worker: [7; 16], salt: rayr_logs::process_salt(), ..Default::default() };
        let buf = EventBuffer::new(source.clone());
        assert!(take(&buf).is_none(), "nothing buffered, nothing sent");
        let mut ids = vec![started(&buf, 10), started(&buf, 12)];
        std::thread::scope(|s| {
            s.spawn(|| ids.push(started(&buf, 11)));
        });
        let (count, events) = events_in(&take(&buf).unwrap());
        assert_eq!(count, 3);
        assert!(events.iter().all(|e| e.source_worker == vec![7; 16]), "the run names who recorded them");
        let mut got: Vec<(i64, Vec<u8>)> = events.into_iter().map(|e| (e.time_us, e.id)).collect();
        got.sort();
        let want: Vec<(i64, Vec<u8>)> = vec![(10, ids[0].to_vec()), (11, ids[2].to_vec()), (12, ids[1].to_vec())];
        assert_eq!(got, want);
        assert!(take(&buf).is_none(), "taken once");
        // The exited thread's ring is dropped once sent (its thread-local destructor, which
        // retires it, may run just after the scope ends).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while buf.rings.lock().len() > 1 {
            assert!(std::time::Instant::now() < deadline, "the exited thread's ring was not dropped");
            assert!(take(&buf).is_none());
            std::thread::sleep(std::time::Duration::from_millis(1));
        }

        // Later runs of the same ring go on numbering and timing from where the last ended,
        // also when the ring wraps around its end.
        let mut want = Vec::new();
        for round in 0..3 {
            for i in 0..(RING_BYTES / 3 / 8) as i64 {
                let t = 1000 * round + i;
                want.push((started(&buf, t).to_vec(), t));
            }
            let (_, events) = events_in(&take(&buf).unwrap());
            let got: Vec<(Vec<u8>, i64)> = events.into_iter().map(|e| (e.id, e.time_us)).collect();
            assert_eq!(got, want);
            want.clear();
        }
    }

    #[test]
    fn a_batch_shares_one_time_and_is_sent_only_once_closed() {
        let source = RunSource { salt: rayr_logs::process_salt(), ..Default::default() };
        let buf = EventBuffer::new(source);
        let batch = buf.batch();
        let a = started(&buf, 1);
        let inner = buf.batch();
        let b = started(&buf, 2);
        drop(inner);
        assert!(take(&buf).is_none(), "nothing is published while the batch is open");
        drop(batch);
        let (_, events) = events_in(&take(&buf).unwrap());
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].id.as_slice(), events[1].id.as_slice()), (&a[..], &b[..]));
        assert_eq!(events[0].time_us, events[1].time_us, "one clock reading for the batch");
        assert!(events[0].time_us > 1_000_000, "the batch's own time, not the callers'");
        // After the batch, events are published one by one again.
        started(&buf, 3);
        assert_eq!(events_in(&take(&buf).unwrap()).1[0].time_us, 3);
    }

    #[test]
    fn a_full_ring_is_flushed_by_its_writer() {
        let source = RunSource { salt: rayr_logs::process_salt(), ..Default::default() };
        let buf = EventBuffer::new(source);
        let sent = std::cell::RefCell::new(Vec::new());
        let flush = || {
            buf.flush_with(|slices| {
                write_all_vectored(&mut *sent.borrow_mut(), slices).unwrap();
            })
        };
        let n = RING_BYTES; // several times what the ring holds
        for i in 0..n as i64 {
            buf.record(|| i, |out, src, peers, seq, delta| pack_event(out, src, peers, seq, EventKind::TaskStarted as i32, delta, |_| {}), flush);
        }
        flush();
        let sent = sent.into_inner();
        let mut rest = sent.as_slice();
        let mut times = Vec::new();
        while let Some((_, used)) = rayr_proto::split_frame(rest).unwrap() {
            times.extend(events_in(&rest[..used]).1.into_iter().map(|e| e.time_us));
            rest = &rest[used..];
        }
        assert_eq!(times, (0..n as i64).collect::<Vec<_>>(), "every event, in order, none lost");
    }
}

#[cfg(test)]
mod cost {
    use super::*;
    use rayr_logs::event_run::pack_event;

    /// Not a test: prints what recording a task's six events costs on this machine
    /// (`cargo test --release -p rayr --lib events::cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn six_events_per_task() {
        let source = RunSource { source_worker: new_id(), salt: rayr_logs::process_salt(), ..Default::default() };
        let buf = EventBuffer::new(source.clone());
        let peer = rayr_logs::event_id_from(5, 0x1234_5678_9abc_def0);
        let worker = new_id();
        let mut sink = Vec::with_capacity(1 << 20);
        let n = 1_000_000;
        for round in 0..3 {
            let t = std::time::Instant::now();
            for i in 0..n {
                let task = new_id();
                let ret = new_id();
                let now = 1_700_000_000_000_000 + i as i64;
                let rec = |kind: EventKind, fill: &dyn Fn(&mut EventWriter<'_>)| {
                    buf.record(|| now, |out, src, peers, seq, delta| pack_event(out, src, peers, seq, kind as i32, delta, |w| fill(w)), || {})
                };
                let sub = rec(EventKind::TaskSubmitted, &|e| {
                    e.task(&task).object(&ret);
                    e.task_detail(|d| {
                        d.function("rayr_bench::noop").max_retries(3);
                    });
                });
                let sched = rec(EventKind::TaskScheduled, &|e| {
                    e.task(&task).worker(&worker).cause(&sub);
                });
                let started = rec(EventKind::TaskStarted, &|e| {
                    e.task(&peer).worker(&source.source_worker).cause(&peer);
                    e.task_detail(|d| {
                        d.pid(1234);
                    });
                });
                let _fin = rec(EventKind::TaskFinished, &|e| {
                    e.task(&peer).worker(&source.source_worker).cause(&started);
                });
                let created = rec(EventKind::ObjectCreated, &|e| {
                    e.object(&ret).worker(&source.source_worker).task(&task).cause(&peer);
                    e.object_detail(|d| {
                        d.size(8).location("inline");
                    });
                });
                rec(EventKind::ObjectFreed, &|e| {
                    e.object(&ret).worker(&source.source_worker).cause(&created);
                });
                let _ = sched;
                if i % 256 == 0 {
                    buf.flush_with(|slices| {
                        sink.clear();
                        write_all_vectored(&mut sink, slices).unwrap();
                    });
                }
            }
            let el = t.elapsed();
            println!("round {round}: {:.1} ns per task (6 events, ids made included)", el.as_nanos() as f64 / n as f64);
        }
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box((new_id(), new_id()));
        }
        println!("making the two ids alone: {:.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
    }
}
