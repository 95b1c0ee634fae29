//! Recording events cheaply. Each recording thread packs its events, field by field
//! (`rayr_logs::event_run`), into its own ring of this process's event area, shared
//! memory that the node agent drains into the node's event log every few milliseconds
//! (`rayr_logs::event_area`). No lock, no atomic read-modify-write, no system call and no
//! copy per event beyond the packing; and what a process recorded survives its being
//! killed.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rayr_logs::event_area::{EventArea, SlotWriter};
use rayr_logs::event_run::{EventWriter, PeerSalts, RunSource, pack_event, pack_whole_event};
use rayr_logs::{Id, event_id_from, new_id, now_us};
use rayr_proto::{Event, EventKind};

use super::Core;

/// How long a thread whose ring is full waits for the node agent to drain it before it
/// drops the event (the agent drains every few milliseconds; it is gone if this passes).
const FULL_RING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// This process's events: its area, and what every one of its events shares.
pub(crate) struct EventBuffer {
    id: u64,
    source: RunSource,
    area: Arc<EventArea>,
    /// A full ring waited in vain: later ones drop at once until there is room again (the
    /// agent is gone or stuck; waiting each time would stall the process).
    stalled: std::sync::atomic::AtomicBool,
    /// When a thread last asked the agent for an early drain (µs): one request per
    /// millisecond is plenty, and a stuck agent's socket must not fill with them.
    last_drain_ask: AtomicU64,
}

/// The calling thread's side of its ring.
struct Writer {
    buffer_id: u64,
    slot: SlotWriter,
    /// Where the next event is packed before it is copied into the ring (it may wrap
    /// around the ring's end).
    scratch: Vec<u8>,
    /// Open batches (see `EventBuffer::batch`) and the time their events share.
    batch_depth: u32,
    batch_time: i64,
}

thread_local! {
    static WRITER: RefCell<Option<Writer>> = const { RefCell::new(None) };
}

/// An open batch of events (see `EventBuffer::batch`); publishes them when dropped (a
/// thread on the shared ring publishes each event at once).
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
                if w.batch_depth == 0 && !w.slot.is_shared() {
                    w.slot.publish();
                }
            }
        });
    }
}

impl EventBuffer {
    /// Creates this process's event area under /dev/shm.
    pub(super) fn create(source: RunSource) -> std::io::Result<EventBuffer> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!(
            "/dev/shm/rayr-ev-{}-{}-{id}",
            std::process::id(),
            &rayr_logs::hex(&source.source_worker)[..12]
        ));
        let area = Arc::new(EventArea::create(&path, source.salt)?);
        Ok(EventBuffer { id, source, area, stalled: std::sync::atomic::AtomicBool::new(false), last_drain_ask: AtomicU64::new(0) })
    }

    /// Where the area is (for the node agent, which maps it and removes the name).
    pub(super) fn area_path(&self) -> &std::path::Path {
        self.area.path()
    }

    /// Writes what the node agent has not drained yet to a log of its own at `path` (the
    /// agent died: nothing else will; no other writer of this process may be running).
    pub(super) fn save_to(&self, path: &std::path::Path, node: rayr_logs::Id) -> std::io::Result<()> {
        let mut log = rayr_logs::EventLogWriter::open(path)?;
        // As the agent drains it: the runs name their node.
        let source = RunSource { node_id: node, ..self.source.clone() };
        self.area.drain(&source, true, |slices| log.append_vectored(slices))
    }

    /// Removes the area's name (the node agent does once it mapped it; this is for a
    /// registration that failed).
    pub(super) fn remove_name(&self) {
        let _ = std::fs::remove_file(self.area.path());
    }

    /// Packs one event with `pack` (given its number and the time since the previous event
    /// in its ring) at `time` (or the open batch's time, see [`batch`](Self::batch)) into
    /// the calling thread's ring and publishes it, unless a batch is open; returns its id
    /// (all zeros when it could not be recorded: the thread is exiting, or the node agent
    /// stopped draining). `drain(ask)` says whether a node agent is there to drain the area
    /// and, with `ask`, asks it to do so now.
    #[inline]
    fn record(
        &self,
        time: impl FnOnce() -> i64,
        pack: impl FnOnce(&mut Vec<u8>, &RunSource, &mut PeerSalts, u64, i64),
        drain: impl Fn(bool) -> bool,
    ) -> Id {
        WRITER
            .try_with(|w| {
                let mut w = w.borrow_mut();
                let w = self.writer(&mut w);
                let shared = w.slot.is_shared();
                if shared && !w.slot.lock() {
                    let _ = self.ask_drain(&drain);
                    return [0; 16];
                }
                let time_us = if w.batch_depth > 0 { w.batch_time } else { time() };
                w.scratch.clear();
                let (seq, delta) = (w.slot.next_seq(), time_us.wrapping_sub(w.slot.last_time()));
                pack(&mut w.scratch, &self.source, &mut w.slot.peers, seq, delta);
                if w.slot.room_for(w.scratch.len()) {
                    if self.stalled.load(Ordering::Relaxed) {
                        self.stalled.store(false, Ordering::Relaxed);
                    }
                } else if !self.wait_for_room(w, &drain) {
                    if shared {
                        w.slot.unlock();
                    }
                    return [0; 16];
                }
                let seq = w.slot.write(&w.scratch, time_us);
                let wants_drain = w.slot.wants_drain();
                if shared {
                    w.slot.unlock();
                } else if w.batch_depth == 0 {
                    w.slot.publish();
                }
                if wants_drain {
                    let _ = self.ask_drain(&drain);
                }
                event_id_from(seq, self.source.salt)
            })
            .unwrap_or([0; 16])
    }

    /// Asks the agent for an early drain, at most once a millisecond; false when no agent
    /// is there to drain.
    fn ask_drain(&self, drain: &impl Fn(bool) -> bool) -> bool {
        let now = now_us() as u64;
        let last = self.last_drain_ask.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1000 {
            return drain(false);
        }
        self.last_drain_ask.store(now, Ordering::Relaxed);
        drain(true)
    }

    /// The ring is full: publish, ask for a drain, and wait for room (not when no agent
    /// is there to drain, nor again after a wait was in vain).
    #[cold]
    fn wait_for_room(&self, w: &mut Writer, drain: &impl Fn(bool) -> bool) -> bool {
        w.slot.publish();
        if self.stalled.load(Ordering::Relaxed) || !self.ask_drain(drain) {
            return false;
        }
        let deadline = std::time::Instant::now() + FULL_RING_WAIT;
        while !w.slot.room_for(w.scratch.len()) {
            if std::time::Instant::now() > deadline {
                eprintln!("rayr: the node agent has not drained this process's events for {FULL_RING_WAIT:?}; events are lost until it does");
                self.stalled.store(true, Ordering::Relaxed);
                return false;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        true
    }

    /// The calling thread's writer for this buffer.
    #[inline]
    fn writer<'a>(&self, slot: &'a mut Option<Writer>) -> &'a mut Writer {
        if matches!(slot, Some(w) if w.buffer_id == self.id && !w.slot.exhausted()) {
            return slot.as_mut().unwrap();
        }
        self.new_writer(slot)
    }

    #[cold]
    fn new_writer<'a>(&self, slot: &'a mut Option<Writer>) -> &'a mut Writer {
        // A batch open on this thread stays open in the new ring (this one's numbers ran
        // out mid-batch).
        let (batch_depth, batch_time) = match slot {
            Some(old) if old.buffer_id == self.id => (old.batch_depth, old.batch_time),
            _ => (0, 0),
        };
        // Dropping the old writer retires its ring (drained, then reused).
        slot.insert(Writer { buffer_id: self.id, slot: self.area.claim(), scratch: Vec::with_capacity(256), batch_depth, batch_time })
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
        let Some(events) = &self.events else { return [0; 16] };
        events.record(
            now_us,
            |out, source, peers, seq, delta| pack_event(out, source, peers, seq, kind as i32, delta, fill),
            |ask| self.agent_drains(ask),
        )
    }

    /// Opens a batch of events (see `EventBuffer::batch`) on this thread until the guard
    /// drops.
    #[inline]
    pub(crate) fn event_batch(&self) -> Batch<'_> {
        match &self.events {
            Some(events) => events.batch(),
            None => Batch { buffer: None, _not_send: std::marker::PhantomData },
        }
    }

    /// Records an event built as a whole `Event` (the rare ones); returns its id.
    #[inline]
    pub fn record(&self, e: Event) -> Id {
        let id: Id = e.id.as_slice().try_into().unwrap_or([0; 16]);
        if let Some(events) = &self.events {
            events.record(|| e.time_us, |out, _, _, _, delta| pack_whole_event(out, &e, delta), |ask| self.agent_drains(ask));
        }
        id
    }

    /// Asks the node agent to move this process's events into the log now, rather than at
    /// its next round (they are safe either way: the area outlives this process).
    pub fn drain_events_now(&self) {
        self.agent_drains(true);
    }

    /// Whether the node agent is there to drain this process's events; with `ask`, asks it
    /// to do so now.
    fn agent_drains(&self, ask: bool) -> bool {
        if self.events.is_none() || self.node_conn.closed.load(Ordering::Acquire) {
            return false;
        }
        !ask || self.node_conn.send(0, rayr_proto::client_message::Body::DrainEvents(rayr_proto::DrainEvents {})).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayr_logs::event_area::RING_BYTES;

    fn buffer() -> EventBuffer {
        let source = RunSource { source_worker: new_id(), salt: rayr_logs::process_salt(), ..Default::default() };
        let buf = EventBuffer::create(source).unwrap();
        buf.remove_name();
        buf
    }

    /// What the node agent would write to the log now.
    fn drain(buf: &EventBuffer) -> Vec<Event> {
        let mut wire = Vec::new();
        let src = RunSource { source_worker: buf.source.source_worker, ..Default::default() };
        buf.area
            .drain(&src, false, |slices| {
                slices.iter().for_each(|s| wire.extend_from_slice(s));
                Ok(())
            })
            .unwrap();
        let mut out = Vec::new();
        let mut rest = wire.as_slice();
        while let Some((run, used)) = rayr_proto::split_frame(rest).unwrap() {
            rayr_logs::expand_run(run, &mut out).unwrap();
            rest = &rest[used..];
        }
        out
    }

    fn started(buf: &EventBuffer, time: i64) -> Id {
        buf.record(
            || time,
            |out, src, peers, seq, delta| {
                pack_event(out, src, peers, seq, EventKind::TaskStarted as i32, delta, |w| {
                    w.task(&[1; 16]);
                })
            },
            |_| true,
        )
    }

    #[test]
    fn every_thread_s_events_reach_the_drain_numbered_and_timed() {
        let buf = buffer();
        assert!(drain(&buf).is_empty(), "nothing recorded, nothing drained");
        let mut ids = vec![started(&buf, 10), started(&buf, 12)];
        std::thread::scope(|s| {
            s.spawn(|| ids.push(started(&buf, 11)));
        });
        let events = drain(&buf);
        assert!(events.iter().all(|e| e.source_worker == buf.source.source_worker.to_vec()));
        let mut got: Vec<(i64, Vec<u8>)> = events.into_iter().map(|e| (e.time_us, e.id)).collect();
        got.sort();
        assert_eq!(got, vec![(10, ids[0].to_vec()), (11, ids[2].to_vec()), (12, ids[1].to_vec())]);
        assert!(drain(&buf).is_empty(), "drained once");
        // Later runs go on numbering and timing from where the last ended, across wraps.
        for round in 0..3 {
            let want: Vec<(Vec<u8>, i64)> =
                (0..(RING_BYTES / 3 / 8) as i64).map(|i| (1000 * round + i, 0)).map(|(t, _)| (started(&buf, t).to_vec(), t)).collect();
            let got: Vec<(Vec<u8>, i64)> = drain(&buf).into_iter().map(|e| (e.id, e.time_us)).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_batch_shares_one_time_and_is_drained_only_once_closed() {
        let buf = buffer();
        let batch = buf.batch();
        let a = started(&buf, 1);
        let inner = buf.batch();
        let b = started(&buf, 2);
        drop(inner);
        assert!(drain(&buf).is_empty(), "nothing is published while the batch is open");
        drop(batch);
        let events = drain(&buf);
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].id.as_slice(), events[1].id.as_slice()), (&a[..], &b[..]));
        assert_eq!(events[0].time_us, events[1].time_us, "one clock reading for the batch");
        assert!(events[0].time_us > 1_000_000, "the batch's own time, not the callers'");
        started(&buf, 3);
        assert_eq!(drain(&buf)[0].time_us, 3, "published one by one again after the batch");
    }

    #[test]
    fn with_no_agent_to_drain_a_full_ring_drops_events_without_waiting() {
        let buf = buffer();
        let no_agent = |_| false;
        let mut recorded = 0;
        for i in 0..RING_BYTES as i64 {
            let id = buf.record(|| i, |out, src, peers, seq, delta| pack_event(out, src, peers, seq, EventKind::TaskStarted as i32, delta, |_| {}), no_agent);
            if id == [0; 16] {
                break;
            }
            recorded += 1;
        }
        assert!(recorded > 1000 && recorded < RING_BYTES, "recorded {recorded} before the ring was full");
        // Once drained, recording goes on.
        assert_eq!(drain(&buf).len(), recorded);
        assert_ne!(started(&buf, 1), [0; 16]);
    }

    #[test]
    fn a_full_ring_waits_for_the_drain_and_loses_nothing() {
        let buf = Arc::new(buffer());
        let n = 4 * RING_BYTES as i64; // several times what the ring holds
        let drained = std::sync::Mutex::new(Vec::new());
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Acquire) {
                    drained.lock().unwrap().extend(drain(&buf).into_iter().map(|e| e.time_us));
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            });
            for i in 0..n {
                assert_ne!(started(&buf, i), [0; 16]);
            }
            stop.store(true, Ordering::Release);
        });
        let mut times = drained.into_inner().unwrap();
        times.extend(drain(&buf).into_iter().map(|e| e.time_us));
        assert_eq!(times, (0..n).collect::<Vec<_>>(), "every event, in order, none lost");
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// Not a test: prints what recording a task's six events costs on this machine
    /// (`cargo test --release -p rayr --lib events::cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn six_events_per_task() {
        let source = RunSource { source_worker: new_id(), salt: rayr_logs::process_salt(), ..Default::default() };
        let buf = EventBuffer::create(source.clone()).unwrap();
        buf.remove_name();
        let peer = rayr_logs::event_id_from(5, 0x1234_5678_9abc_def0);
        let worker = new_id();
        let n = 1_000_000;
        for round in 0..3 {
            let t = std::time::Instant::now();
            for i in 0..n {
                let task = new_id();
                let ret = new_id();
                let now = 1_700_000_000_000_000 + i as i64;
                let rec = |kind: EventKind, fill: &dyn Fn(&mut EventWriter<'_>)| {
                    buf.record(|| now, |out, src, peers, seq, delta| pack_event(out, src, peers, seq, kind as i32, delta, |w| fill(w)), |_| true)
                };
                let sub = rec(EventKind::TaskSubmitted, &|e| {
                    e.task(&task).object(&ret);
                    e.task_detail(|d| {
                        d.function("rayr_bench::noop").max_retries(3);
                    });
                });
                rec(EventKind::TaskScheduled, &|e| {
                    e.task(&task).worker(&worker).cause(&sub);
                });
                let started = rec(EventKind::TaskStarted, &|e| {
                    e.task(&peer).worker(&source.source_worker).cause(&peer);
                    e.task_detail(|d| {
                        d.pid(1234);
                    });
                });
                rec(EventKind::TaskFinished, &|e| {
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
                if i % 256 == 0 {
                    buf.area.drain(&source, false, |_| Ok(())).unwrap();
                }
            }
            println!("round {round}: {:.1} ns per task (6 events, ids made included)", t.elapsed().as_nanos() as f64 / n as f64);
        }
    }
}
