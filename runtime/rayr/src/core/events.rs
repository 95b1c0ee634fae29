//! Recording events cheaply: each thread encodes its events in place into its own shard
//! of the process's event buffer; the ticker sends all shards to the node agent as one
//! `EventBatch` every few milliseconds, with one vectored write.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rayr_logs::{Id, new_id, now_us};
use rayr_proto::{Event, EventKind, ObjectDetail, TaskDetail, encode_frame, event};

use super::Core;

thread_local! {
    static SCRATCH: std::cell::RefCell<(Event, Spares)> = std::cell::RefCell::new(Default::default());
}

/// Overwrites `dst` with `src`, keeping its allocation.
#[inline]
pub(crate) fn put(dst: &mut Vec<u8>, src: &[u8]) {
    match <&Id>::try_from(src) {
        Ok(id) => put_id(dst, id),
        Err(_) => {
            dst.clear();
            dst.extend_from_slice(src);
        }
    }
}

/// `put` for an id: a fixed-size copy the compiler inlines (six events a task, five ids
/// each: a library memcpy call per id shows up).
#[inline]
pub(crate) fn put_id(dst: &mut Vec<u8>, id: &Id) {
    dst.clear();
    dst.extend_from_slice(id.as_slice());
}

/// Details of earlier events, kept so their buffers are reused (events alternate between
/// task and object details on the same thread).
#[derive(Default)]
pub(crate) struct Spares {
    task: Option<TaskDetail>,
    object: Option<ObjectDetail>,
}

/// An event being filled in place (see [`Core::record_with`]).
pub(crate) struct EventFill<'a> {
    pub e: &'a mut Event,
    spare: &'a mut Spares,
}

impl EventFill<'_> {
    /// The event's task detail, cleared, reusing an earlier one's buffers.
    pub fn task(&mut self) -> &mut TaskDetail {
        let mut t = self.spare.task.take().unwrap_or_default();
        t.function.clear();
        t.error.clear();
        t.reason.clear();
        t.backtrace.clear();
        t.error_type.clear();
        t.attempt = 0;
        t.max_retries = 0;
        t.r#final = false;
        t.pid = 0;
        self.e.detail = Some(event::Detail::Task(t));
        match &mut self.e.detail {
            Some(event::Detail::Task(t)) => t,
            _ => unreachable!(),
        }
    }

    /// The event's object detail, cleared, reusing an earlier one's buffers.
    pub fn object(&mut self) -> &mut ObjectDetail {
        let mut o = self.spare.object.take().unwrap_or_default();
        o.size = 0;
        o.location.clear();
        o.peer.clear();
        o.reason.clear();
        o.peer_kind.clear();
        self.e.detail = Some(event::Detail::Object(o));
        match &mut self.e.detail {
            Some(event::Detail::Object(o)) => o,
            _ => unreachable!(),
        }
    }
}

/// Buffered, already-encoded events; flushed to the node agent every few milliseconds.
/// Each thread appends to its own shard, so recording never contends for a lock or a
/// cache line with another thread (only the flush visits every shard).
pub(crate) struct EventBuffer {
    id: u64,
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
    /// One flush at a time: a flush that took the buffers finishes sending them before
    /// another (say, shutdown's last one, which then closes the connection) begins.
    flushing: Mutex<()>,
}

#[derive(Default)]
struct Shard {
    frames: Vec<u8>,
    count: u32,
    /// An empty buffer with capacity, swapped with `frames` at each flush so the flush
    /// sends the frames without copying them and recording never waits for the send.
    spare: Vec<u8>,
    /// Where an event's detail is encoded while its length is measured.
    scratch: Vec<u8>,
}

thread_local! {
    /// This thread's shard of the event buffer with that id.
    static SHARD: std::cell::RefCell<(u64, Option<Arc<Mutex<Shard>>>)> = const { std::cell::RefCell::new((0, None)) };
}

impl EventBuffer {
    pub(super) fn new() -> EventBuffer {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        EventBuffer { id: NEXT.fetch_add(1, Ordering::Relaxed), shards: Mutex::new(Vec::new()), flushing: Mutex::new(()) }
    }

    fn with_shard(&self, f: impl FnOnce(&mut Shard)) {
        SHARD.with(|s| {
            let mut s = s.borrow_mut();
            if s.0 != self.id || s.1.is_none() {
                let shard = Arc::new(Mutex::new(Shard { frames: Vec::with_capacity(16 << 10), count: 0, spare: Vec::new(), scratch: Vec::new() }));
                self.shards.lock().push(shard.clone());
                *s = (self.id, Some(shard));
            }
            f(&mut s.1.as_ref().unwrap().lock());
        });
    }

    fn push(&self, e: &Event) {
        self.with_shard(|b| {
            encode_frame(e, &mut b.frames);
            b.count += 1;
        });
    }

    /// Appends a frame whose encoding is `prefix` (fields already encoded) followed by
    /// `e`'s own fields: protobuf fields may come in any order, and the fields every event
    /// of this process shares are encoded once, not per event.
    fn push_with_prefix(&self, prefix: &[u8], e: &Event) {
        self.with_shard(|b| {
            rayr_proto::fast::encode_event_frame(prefix, e, &mut b.scratch, &mut b.frames);
            b.count += 1;
        });
    }

    /// Sends everything buffered so far, from every thread, as one frame of
    /// `ClientMessage { events: EventBatch { frames, count } }` through `send`, which gets
    /// the frame as slices (header, each thread's frames, trailer) for one vectored write:
    /// the frames are not copied, and no buffer is reallocated.
    fn flush_with(&self, send: impl FnOnce(&mut [std::io::IoSlice<'_>])) {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
        let _one_at_a_time = self.flushing.lock();
        let shards: Vec<Arc<Mutex<Shard>>> = self.shards.lock().clone();
        let mut taken: Vec<(Arc<Mutex<Shard>>, Vec<u8>)> = Vec::new();
        let mut count = 0u32;
        for shard in shards {
            let mut s = shard.lock();
            if s.count > 0 {
                let mut full = std::mem::take(&mut s.spare);
                std::mem::swap(&mut full, &mut s.frames);
                count += std::mem::take(&mut s.count);
                drop(s);
                taken.push((shard, full));
            }
        }
        if count == 0 {
            return;
        }
        let frames_len: usize = taken.iter().map(|(_, f)| f.len()).sum();
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
            let mut slices = Vec::with_capacity(taken.len() + 2);
            slices.push(std::io::IoSlice::new(&header));
            slices.extend(taken.iter().map(|(_, f)| std::io::IoSlice::new(f)));
            slices.push(std::io::IoSlice::new(&trailer));
            send(&mut slices);
        }
        for (shard, mut buf) in taken {
            buf.clear();
            shard.lock().spare = buf;
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

    /// Records an event built in place in a per-thread scratch `Event` whose buffers are
    /// reused, so the hot path (six events per task) allocates nothing once warm.
    #[inline]
    pub fn record_with(&self, kind: EventKind, fill: impl FnOnce(&mut EventFill<'_>)) -> Id {
        let id = new_id();
        if !self.record_events {
            return id;
        }
        SCRATCH.with(|scratch| {
            let (e, spare) = &mut *scratch.borrow_mut();
            match e.detail.take() {
                Some(event::Detail::Task(t)) => spare.task = Some(t),
                Some(event::Detail::Object(o)) => spare.object = Some(o),
                _ => {}
            }
            for v in [&mut e.cause, &mut e.object_id, &mut e.task_id, &mut e.actor_id, &mut e.worker_id] {
                v.clear();
            }
            put(&mut e.id, &id);
            e.time_us = now_us();
            e.kind = kind as i32;
            fill(&mut EventFill { e, spare });
            self.events.push_with_prefix(&self.event_prefix, e);
        });
        id
    }

    /// Records an event; returns its id (the cause link for what follows).
    #[inline]
    pub fn record(&self, e: Event) -> Id {
        let id: Id = e.id.as_slice().try_into().unwrap_or([0; 16]);
        if self.record_events {
            self.events.push(&e);
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

    #[test]
    fn buffered_events_travel_as_one_client_message() {
        let buf = EventBuffer::new();
        let take = |buf: &EventBuffer| {
            let mut got = None;
            buf.flush_with(|slices| {
                let mut all = Vec::new();
                write_all_vectored(&mut all, slices).unwrap();
                got = Some(all);
            });
            got
        };
        assert!(take(&buf).is_none(), "nothing buffered, nothing sent");
        let prefix = Event { source_worker: vec![7; 16], ..Default::default() }.encode_to_vec();
        for kind in [EventKind::TaskSubmitted, EventKind::TaskScheduled] {
            buf.push_with_prefix(&prefix, &Event { id: vec![1; 16], kind: kind as i32, ..Default::default() });
        }
        std::thread::scope(|s| {
            s.spawn(|| buf.push_with_prefix(&prefix, &Event { kind: EventKind::TaskStarted as i32, ..Default::default() }));
        });
        let frame = take(&buf).unwrap();
        let (body, used) = rayr_proto::split_frame(&frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        let Some(client_message::Body::Events(batch)) = ClientMessage::decode(body).unwrap().body else {
            panic!("not an event batch")
        };
        assert_eq!(batch.count, 3);
        let mut kinds = Vec::new();
        let mut rest = batch.frames.as_slice();
        while let Some((ev, used)) = rayr_proto::split_frame(rest).unwrap() {
            let ev = Event::decode(ev).unwrap();
            assert_eq!(ev.source_worker, vec![7; 16], "the prefix is part of every event");
            kinds.push(ev.kind);
            rest = &rest[used..];
        }
        kinds.sort();
        assert_eq!(kinds, vec![10, 11, 12]);
        assert!(take(&buf).is_none(), "taken once");
    }
}
