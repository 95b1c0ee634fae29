//! The packed form events travel and are stored in: runs (`EventRun` in events.proto).
//!
//! Every task records six events, so what one event costs to record is what the event
//! record costs. A run writes what its events share once (who recorded them, the id salt,
//! a base time) and each event packs the rest: no id (it follows from the run's first
//! sequence number), a time offset of a byte or two, a few bytes for an id its recorder
//! made.
//! [`pack_event`] packs an event as it is recorded, field by field, with nothing built in
//! between; [`run_header`] frames packed events as a run; [`expand_run`] turns a run back
//! into whole `Event`s for every reader.

use rayr_proto::{Event, EventKind, EventRun, Message, ObjectDetail, event};

use crate::ids::{EVENT_SEQ_BIT, Id, counter_of, event_id_from, id_of_counter, is_event_counter};

/// What every run of one process shares.
#[derive(Clone, Debug, Default)]
pub struct RunSource {
    pub node_id: Id,
    pub source_worker: Id,
    pub source_pid: u32,
    pub job_id: Id,
    /// The process's id salt (`crate::process_salt`).
    pub salt: u64,
}

/// Why an object is freed nearly every time. A packed OBJECT_FREED without a reason was
/// freed for this one (readers get it filled in): a task's six events are ~10% shorter.
pub const FREED_BY_RELEASE: &str = "every reference was released";

/// Packed id tags (see `EventRun` in events.proto).
const SOURCE_ID: u8 = 0;
const COUNTER: u8 = 1;
const EVENT_BEFORE: u8 = 2;
const PEER_COUNTER: u8 = 3;
const PEER_EVENT: u8 = 4;

/// The salts of other processes whose ids a recording thread packs short (a worker names
/// its driver's tasks and events; a driver its workers' events). Entries are only added,
/// so every run of the thread can carry the whole table.
#[derive(Clone, Debug, Default)]
pub struct PeerSalts {
    salts: [u64; MAX_PEER_SALTS],
    len: usize,
}

/// Peers beyond this many are named by whole ids.
pub const MAX_PEER_SALTS: usize = 8;

impl PeerSalts {
    #[inline]
    fn index_of(&mut self, salt: u64) -> Option<u8> {
        if let Some(i) = self.salts[..self.len].iter().position(|s| *s == salt) {
            return Some(i as u8);
        }
        (self.len < MAX_PEER_SALTS).then(|| {
            self.salts[self.len] = salt;
            self.len += 1;
            (self.len - 1) as u8
        })
    }

    #[inline]
    pub fn as_slice(&self) -> &[u64] {
        &self.salts[..self.len]
    }

    /// A table holding `salts` (at most `MAX_PEER_SALTS` of them), in order.
    pub fn from_slice(salts: &[u64]) -> PeerSalts {
        let mut t = PeerSalts::default();
        for s in salts.iter().take(MAX_PEER_SALTS) {
            t.salts[t.len] = *s;
            t.len += 1;
        }
        t
    }
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Appends one packed event (a varint length, then the event) of `kind` to `out`: the
/// event numbered `seq`, `time_delta_us` after the event before it in its run; `fill`
/// writes its fields.
#[inline]
pub fn pack_event(
    out: &mut Vec<u8>,
    src: &RunSource,
    peers: &mut PeerSalts,
    seq: u64,
    kind: i32,
    time_delta_us: i64,
    fill: impl FnOnce(&mut EventWriter<'_>),
) {
    let start = out.len();
    out.push(0); // the length, patched below
    key(6, 0, out);
    varint(kind as u64, out);
    if time_delta_us != 0 {
        key(2, 0, out);
        varint(time_delta_us as u64, out);
    }
    fill(&mut EventWriter { out, src, peers, seq: seq | EVENT_SEQ_BIT });
    patch_len(out, start);
}

/// Appends a whole event, packed as it is (its id and other ids unpacked): for the rare
/// events built as an `Event` value. Its time is written as `time_delta_us`.
pub fn pack_whole_event(out: &mut Vec<u8>, e: &Event, time_delta_us: i64) {
    let start = out.len();
    out.push(0);
    let mut e = e.clone();
    e.time_us = time_delta_us;
    e.encode(out).expect("Vec<u8> has room");
    patch_len(out, start);
}

/// Appends the start of a run's frame to `out`: the u32 length and the `EventRun` fields
/// before its events, which must follow (`events_len` bytes of packed events, `count` of
/// them, the first numbered `first_seq`, times counted from `base_time_us`). The events
/// can then be sent from wherever they are, without being copied behind the header.
pub fn run_header(
    src: &RunSource,
    peer_salts: &[u64],
    first_seq: u64,
    base_time_us: i64,
    count: u32,
    events_len: usize,
    out: &mut Vec<u8>,
) {
    let h0 = out.len();
    out.extend_from_slice(&[0; 4]);
    bytes(1, &src.node_id, out);
    bytes(2, &src.source_worker, out);
    uint(3, src.source_pid as u64, out);
    bytes(4, &src.job_id, out);
    key(5, 1, out);
    out.extend_from_slice(&src.salt.to_le_bytes());
    uint(6, first_seq, out);
    uint(7, base_time_us as u64, out);
    uint(9, count as u64, out);
    if !peer_salts.is_empty() {
        key(10, 2, out);
        varint(8 * peer_salts.len() as u64, out);
        for salt in peer_salts {
            out.extend_from_slice(&salt.to_le_bytes());
        }
    }
    key(8, 2, out);
    varint(events_len as u64, out);
    let frame_len = out.len() - h0 - 4 + events_len;
    out[h0..h0 + 4].copy_from_slice(&(frame_len as u32).to_le_bytes());
}

/// Appends one frame holding `e` alone as a run: for a process that records few events
/// (the node agent). `e` must name its id.
pub fn encode_single_run_frame(e: &Event, out: &mut Vec<u8>) {
    let mut events = Vec::with_capacity(e.encoded_len() + 5);
    e.encode_length_delimited(&mut events).expect("Vec<u8> has room");
    rayr_proto::encode_frame(&EventRun { events, count: 1, ..Default::default() }, out);
}

/// Writes an event's fields (any order is valid protobuf).
pub struct EventWriter<'a> {
    out: &'a mut Vec<u8>,
    src: &'a RunSource,
    peers: &'a mut PeerSalts,
    /// This event's counter (its sequence number, event bit set).
    seq: u64,
}

impl EventWriter<'_> {
    /// An id field, packed: one byte for the recorder's own id; a tag and a varint for an
    /// id the recorder made (its counter; for an event, how many events before this one it
    /// was); the 16 bytes otherwise. An all-zero id (none) is left out.
    #[inline]
    fn id(&mut self, field: u32, id: &[u8]) -> &mut Self {
        let Ok(id) = <&[u8; 16]>::try_from(id) else {
            bytes(field, id, self.out);
            return self;
        };
        let key = (field << 3 | 2) as u8;
        if id == &self.src.source_worker {
            self.out.extend_from_slice(&[key, 1, SOURCE_ID]);
        } else if let Some(counter) = counter_of(id, self.src.salt) {
            let (tag, v) = if is_event_counter(counter) {
                (EVENT_BEFORE, zigzag(self.seq.wrapping_sub(counter) as i64))
            } else {
                (COUNTER, counter)
            };
            let start = self.out.len();
            self.out.extend_from_slice(&[key, 0, tag]);
            varint(v, self.out);
            self.out[start + 1] = (self.out.len() - start - 2) as u8;
        } else if id != &[0; 16] {
            let salt = u64::from_be_bytes(id[8..].try_into().unwrap());
            match self.peers.index_of(salt).zip(counter_of(id, salt)) {
                Some((peer, counter)) => {
                    let (tag, v) = if is_event_counter(counter) { (PEER_EVENT, counter & !EVENT_SEQ_BIT) } else { (PEER_COUNTER, counter) };
                    let start = self.out.len();
                    self.out.extend_from_slice(&[key, 0, tag, peer]);
                    varint(v, self.out);
                    self.out[start + 1] = (self.out.len() - start - 2) as u8;
                }
                None => {
                    self.out.extend_from_slice(&[key, 16]);
                    self.out.extend_from_slice(id);
                }
            }
        }
        self
    }
    #[inline]
    pub fn cause(&mut self, id: &[u8]) -> &mut Self {
        self.id(7, id)
    }
    #[inline]
    pub fn object(&mut self, id: &[u8]) -> &mut Self {
        self.id(8, id)
    }
    #[inline]
    pub fn task(&mut self, id: &[u8]) -> &mut Self {
        self.id(9, id)
    }
    #[inline]
    pub fn actor(&mut self, id: &[u8]) -> &mut Self {
        self.id(10, id)
    }
    #[inline]
    pub fn worker(&mut self, id: &[u8]) -> &mut Self {
        self.id(11, id)
    }

    /// The event's `TaskDetail`.
    #[inline]
    pub fn task_detail(&mut self, fill: impl FnOnce(&mut TaskDetailWriter<'_>)) {
        key(20, 2, self.out);
        let start = self.out.len();
        self.out.push(0);
        fill(&mut TaskDetailWriter { out: self.out });
        patch_len(self.out, start);
    }

    /// The event's `ObjectDetail`.
    #[inline]
    pub fn object_detail(&mut self, fill: impl FnOnce(&mut ObjectDetailWriter<'_>)) {
        key(21, 2, self.out);
        let start = self.out.len();
        self.out.push(0);
        fill(&mut ObjectDetailWriter { out: self.out });
        patch_len(self.out, start);
    }
}

/// Writes `TaskDetail` fields.
pub struct TaskDetailWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl TaskDetailWriter<'_> {
    #[inline]
    pub fn function(&mut self, v: &str) -> &mut Self {
        bytes(1, v.as_bytes(), self.out);
        self
    }
    #[inline]
    pub fn attempt(&mut self, v: u32) -> &mut Self {
        uint(2, v as u64, self.out);
        self
    }
    #[inline]
    pub fn max_retries(&mut self, v: u32) -> &mut Self {
        uint(3, v as u64, self.out);
        self
    }
    #[inline]
    pub fn error(&mut self, v: &str) -> &mut Self {
        bytes(4, v.as_bytes(), self.out);
        self
    }
    #[inline]
    pub fn reason(&mut self, v: &str) -> &mut Self {
        bytes(5, v.as_bytes(), self.out);
        self
    }
    #[inline]
    pub fn is_final(&mut self, v: bool) -> &mut Self {
        uint(6, v as u64, self.out);
        self
    }
    #[inline]
    pub fn backtrace(&mut self, v: &str) -> &mut Self {
        bytes(7, v.as_bytes(), self.out);
        self
    }
    #[inline]
    pub fn pid(&mut self, v: u32) -> &mut Self {
        uint(8, v as u64, self.out);
        self
    }
    #[inline]
    pub fn error_type(&mut self, v: rayr_proto::TaskErrorKind) -> &mut Self {
        uint(20, v as i32 as u64, self.out);
        self
    }
    /// The argument whose failure failed this task (DEPENDENCY_FAILED).
    #[inline]
    pub fn failed_argument(&mut self, v: &[u8]) -> &mut Self {
        bytes(21, v, self.out);
        self
    }
    /// Where the worker's stdout and stderr stood before and after the task's output.
    #[inline]
    pub fn output(&mut self, out: (u64, u64), err: (u64, u64), gens: (u32, u32), spans: (u32, u32)) -> &mut Self {
        uint(11, out.0, self.out);
        uint(12, out.1, self.out);
        uint(13, err.0, self.out);
        uint(14, err.1, self.out);
        uint(15, 1, self.out);
        uint(16, gens.0 as u64, self.out);
        uint(17, gens.1 as u64, self.out);
        uint(18, spans.0 as u64, self.out);
        uint(19, spans.1 as u64, self.out);
        self
    }
}

/// Writes `ObjectDetail` fields.
pub struct ObjectDetailWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl ObjectDetailWriter<'_> {
    #[inline]
    pub fn size(&mut self, v: u64) -> &mut Self {
        uint(1, v, self.out);
        self
    }
    #[inline]
    pub fn location(&mut self, v: &str) -> &mut Self {
        bytes(2, v.as_bytes(), self.out);
        self
    }
    #[inline]
    pub fn peer(&mut self, v: &[u8]) -> &mut Self {
        bytes(3, v, self.out);
        self
    }
    #[inline]
    pub fn reason(&mut self, v: &str) -> &mut Self {
        bytes(4, v.as_bytes(), self.out);
        self
    }
    #[inline]
    pub fn peer_kind(&mut self, v: rayr_proto::PeerKind) -> &mut Self {
        uint(7, v as i32 as u64, self.out);
        self
    }
    #[inline]
    pub fn end(&mut self, v: rayr_proto::ObjectEndReason) -> &mut Self {
        uint(8, v as i32 as u64, self.out);
        self
    }
}

/// Appends the events of one run (the body of an `EventRun` frame), whole, to `out`.
pub fn expand_run(body: &[u8], out: &mut Vec<Event>) -> Result<(), String> {
    let run = RunView::parse(body)?;
    let start = out.len();
    for e in run.events() {
        match e.and_then(|e| e.to_event(&run)) {
            Ok(e) => out.push(e),
            Err(err) => {
                out.truncate(start);
                return Err(err);
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reading runs in place
//
// The index reads every event once, at the runtime's own rate: it must not build an
// `Event` (a dozen allocations) for each. `RunView` and `EventRef` read a run where it
// lies, ids unpacked onto the stack and details left as bytes until someone asks. Whole
// `Event`s (`EventRef::to_event`) are for readers that show events, not for the index.

/// A run read in place: what its events share, and its packed events.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunView<'a> {
    pub node_id: &'a [u8],
    pub source_worker: &'a [u8],
    pub source_pid: u32,
    pub job_id: &'a [u8],
    pub salt: u64,
    /// The first event's sequence number (without the event bit).
    pub first_seq: u64,
    pub base_time_us: i64,
    pub count: u32,
    peer_salts: &'a [u8],
    events: &'a [u8],
}

impl<'a> RunView<'a> {
    /// Reads a run's header; its events are read by [`RunView::events`].
    pub fn parse(body: &'a [u8]) -> Result<RunView<'a>, String> {
        let mut run = RunView::default();
        let mut r = Wire(body);
        while let Some((field, value)) = r.field().map_err(|e| format!("bad event run: {e}"))? {
            match (field, value) {
                (1, Value::Bytes(b)) => run.node_id = b,
                (2, Value::Bytes(b)) => run.source_worker = b,
                (3, Value::Varint(v)) => run.source_pid = v as u32,
                (4, Value::Bytes(b)) => run.job_id = b,
                (5, Value::Fixed64(v)) => run.salt = v,
                (6, Value::Varint(v)) => run.first_seq = v & !EVENT_SEQ_BIT,
                (7, Value::Varint(v)) => run.base_time_us = v as i64,
                (8, Value::Bytes(b)) => run.events = b,
                (9, Value::Varint(v)) => run.count = v as u32,
                (10, Value::Bytes(b)) if b.len().is_multiple_of(8) => run.peer_salts = b,
                (10, _) => return Err("bad event run: peer salts are not whole u64s".into()),
                (1..=10, _) => return Err(format!("bad event run: field {field} has the wrong wire type")),
                _ => {}
            }
        }
        Ok(run)
    }

    /// The salt of the `i`-th peer a packed id names.
    #[inline]
    pub fn peer_salt(&self, i: usize) -> Option<u64> {
        let b = self.peer_salts.get(i * 8..i * 8 + 8)?;
        Some(u64::from_le_bytes(b.try_into().unwrap()))
    }

    /// The packed events' bytes (what a run costs to store).
    pub fn events_len(&self) -> usize {
        self.events.len()
    }

    /// The run's events, in order; an `Err` ends the run (what follows cannot be read).
    pub fn events(&self) -> RunEvents<'a> {
        RunEvents { run: *self, rest: self.events, time: self.base_time_us, seq: self.first_seq, failed: false }
    }

    fn unpack(&self, packed: &[u8], seq: u64) -> Result<Option<Id>, String> {
        if let Ok(id) = <[u8; 16]>::try_from(packed) {
            return Ok(Some(id));
        }
        Ok(match packed {
            [] => None,
            [SOURCE_ID] => <[u8; 16]>::try_from(self.source_worker).ok(),
            [tag @ (COUNTER | EVENT_BEFORE), rest @ ..] => {
                let v = Wire(rest).varint().map_err(|e| format!("bad packed id: {e}"))?;
                let counter = if *tag == COUNTER { v } else { (seq | EVENT_SEQ_BIT).wrapping_sub(unzigzag(v) as u64) };
                Some(id_of_counter(counter, self.salt))
            }
            [tag @ (PEER_COUNTER | PEER_EVENT), peer, rest @ ..] => {
                let salt = self.peer_salt(*peer as usize).ok_or_else(|| format!("packed id names peer {peer} of {}", self.peer_salts.len() / 8))?;
                let v = Wire(rest).varint().map_err(|e| format!("bad packed id: {e}"))?;
                let counter = if *tag == PEER_EVENT { v | EVENT_SEQ_BIT } else { v };
                Some(id_of_counter(counter, salt))
            }
            // Not a packed form and not 16 bytes: an id of another shape, which the record
            // keeps (`to_event`) but cannot index.
            _ => None,
        })
    }
}

/// The events of a run, read in place (see [`RunView::events`]).
pub struct RunEvents<'a> {
    run: RunView<'a>,
    rest: &'a [u8],
    time: i64,
    seq: u64,
    failed: bool,
}

impl<'a> Iterator for RunEvents<'a> {
    type Item = Result<EventRef<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let r = self.read_one();
        self.failed = r.is_err();
        Some(r)
    }
}

impl<'a> RunEvents<'a> {
    fn read_one(&mut self) -> Result<EventRef<'a>, String> {
        let mut w = Wire(self.rest);
        let len = w.varint().map_err(|e| format!("bad event length in a run: {e}"))? as usize;
        if len > w.0.len() {
            return Err(format!("an event of {len} bytes overruns its run ({} left)", w.0.len()));
        }
        let (bytes, rest) = w.0.split_at(len);
        self.rest = rest;
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut e = EventRef { bytes, seq, ..EventRef::default() };
        let mut r = Wire(bytes);
        let mut delta = 0i64;
        let (mut id, mut cause, mut object, mut task, mut actor, mut worker) = (None, None, None, None, None, None);
        while let Some((field, value)) = r.field().map_err(|e| format!("bad event in a run: {e}"))? {
            match (field, value) {
                (1, Value::Bytes(b)) => id = Some(b),
                (2, Value::Varint(v)) => delta = v as i64,
                (3, Value::Bytes(b)) => e.node_id = <[u8; 16]>::try_from(b).ok(),
                (4, Value::Bytes(b)) => e.source_worker = <[u8; 16]>::try_from(b).ok(),
                (5, Value::Varint(v)) => e.source_pid = v as u32,
                (6, Value::Varint(v)) => e.kind = v as i32,
                (7, Value::Bytes(b)) => cause = Some(b),
                (8, Value::Bytes(b)) => object = Some(b),
                (9, Value::Bytes(b)) => task = Some(b),
                (10, Value::Bytes(b)) => actor = Some(b),
                (11, Value::Bytes(b)) => worker = Some(b),
                (12, Value::Bytes(b)) => e.job_id = <[u8; 16]>::try_from(b).ok(),
                (20..=26, Value::Bytes(b)) => e.detail = Some(DetailRef { field: field as u8, bytes: b }),
                (1..=12 | 20..=26, _) => return Err(format!("bad event in a run: field {field} has the wrong wire type")),
                _ => {}
            }
        }
        self.time = self.time.wrapping_add(delta);
        e.time_us = self.time;
        let run = &self.run;
        match id {
            Some(b) if !b.is_empty() => {
                e.explicit_id = true;
                e.id = <[u8; 16]>::try_from(b).ok();
            }
            _ => e.id = Some(event_id_from(seq, run.salt)),
        }
        e.cause = run.unpack(cause.unwrap_or_default(), seq)?;
        e.object_id = run.unpack(object.unwrap_or_default(), seq)?;
        e.task_id = run.unpack(task.unwrap_or_default(), seq)?;
        e.actor_id = run.unpack(actor.unwrap_or_default(), seq)?;
        e.worker_id = run.unpack(worker.unwrap_or_default(), seq)?;
        Ok(e)
    }
}

/// One event of a run, read in place. Ids are unpacked (`None`: absent, or not 16 bytes);
/// `node_id`, `source_worker`, `source_pid` and `job_id` are the event's own, set only where
/// it differs from its run's (see [`RunView`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct EventRef<'a> {
    /// Its id; `explicit_id` when the event names it (else it follows from the run).
    pub id: Option<Id>,
    pub explicit_id: bool,
    /// Its sequence number in its process (without the event bit).
    pub seq: u64,
    pub time_us: i64,
    pub kind: i32,
    pub cause: Option<Id>,
    pub object_id: Option<Id>,
    pub task_id: Option<Id>,
    pub actor_id: Option<Id>,
    pub worker_id: Option<Id>,
    pub node_id: Option<Id>,
    pub source_worker: Option<Id>,
    pub source_pid: u32,
    pub job_id: Option<Id>,
    pub detail: Option<DetailRef<'a>>,
    /// The packed event.
    bytes: &'a [u8],
}

/// An event's detail, not decoded yet: the `Event.detail` field it is, and its bytes.
#[derive(Clone, Copy, Debug)]
pub struct DetailRef<'a> {
    pub field: u8,
    pub bytes: &'a [u8],
}

/// `Event.detail` field numbers.
pub mod detail_field {
    pub const TASK: u8 = 20;
    pub const OBJECT: u8 = 21;
    pub const WORKER_EXIT: u8 = 22;
    pub const WORKER_START: u8 = 23;
    pub const NODE: u8 = 24;
    pub const JOB: u8 = 25;
    pub const ACTOR: u8 = 26;
}

impl<'a> EventRef<'a> {
    /// The event's `TaskDetail`, read in place.
    pub fn task(&self) -> Option<TaskDetailRef<'a>> {
        let d = self.detail.filter(|d| d.field == detail_field::TASK)?;
        TaskDetailRef::parse(d.bytes).ok()
    }

    /// The event's `ObjectDetail`, read in place.
    pub fn object(&self) -> Option<ObjectDetailRef<'a>> {
        let d = self.detail.filter(|d| d.field == detail_field::OBJECT)?;
        ObjectDetailRef::parse(d.bytes).ok()
    }

    /// The detail decoded whole (for the rare kinds whose detail the index reads whole).
    pub fn detail(&self) -> Option<event::Detail> {
        let d = self.detail?;
        decode_detail(d).ok()
    }

    /// The whole `Event`, as `expand_run` gives it.
    pub fn to_event(&self, run: &RunView<'_>) -> Result<Event, String> {
        let id = |v: Option<Id>| v.map(|i| i.to_vec()).unwrap_or_default();
        let mut e = Event::decode(self.bytes).map_err(|e| format!("bad event in a run: {e}"))?;
        // Ids of another shape than 16 bytes stay as recorded.
        let keep = |packed: &mut Vec<u8>, unpacked: Option<Id>| {
            if let Some(u) = unpacked {
                *packed = u.to_vec();
            } else if packed.as_slice() == [SOURCE_ID] {
                *packed = run.source_worker.to_vec();
            }
        };
        if !self.explicit_id {
            e.id = id(self.id);
        }
        e.time_us = self.time_us;
        keep(&mut e.cause, self.cause);
        keep(&mut e.object_id, self.object_id);
        keep(&mut e.task_id, self.task_id);
        keep(&mut e.actor_id, self.actor_id);
        keep(&mut e.worker_id, self.worker_id);
        if e.node_id.is_empty() {
            e.node_id = run.node_id.to_vec();
        }
        if e.source_worker.is_empty() {
            e.source_worker = run.source_worker.to_vec();
        }
        if e.source_pid == 0 {
            e.source_pid = run.source_pid;
        }
        if e.job_id.is_empty() {
            e.job_id = run.job_id.to_vec();
        }
        if e.kind == EventKind::ObjectFreed as i32 {
            match &mut e.detail {
                Some(event::Detail::Object(d)) if d.reason.is_empty() => {
                    d.reason = FREED_BY_RELEASE.into();
                    d.end = rayr_proto::ObjectEndReason::Released as i32;
                }
                None => {
                    e.detail = Some(event::Detail::Object(ObjectDetail {
                        reason: FREED_BY_RELEASE.into(),
                        end: rayr_proto::ObjectEndReason::Released as i32,
                        ..Default::default()
                    }))
                }
                _ => {}
            }
        }
        Ok(e)
    }
}

fn decode_detail(d: DetailRef<'_>) -> Result<event::Detail, prost::DecodeError> {
    use detail_field::*;
    Ok(match d.field {
        TASK => event::Detail::Task(rayr_proto::TaskDetail::decode(d.bytes)?),
        OBJECT => event::Detail::Object(ObjectDetail::decode(d.bytes)?),
        WORKER_EXIT => event::Detail::WorkerExit(rayr_proto::WorkerExit::decode(d.bytes)?),
        WORKER_START => event::Detail::WorkerStart(rayr_proto::WorkerStart::decode(d.bytes)?),
        NODE => event::Detail::Node(rayr_proto::NodeDetail::decode(d.bytes)?),
        JOB => event::Detail::Job(rayr_proto::JobDetail::decode(d.bytes)?),
        _ => event::Detail::Actor(rayr_proto::ActorDetail::decode(d.bytes)?),
    })
}

/// The `TaskDetail` fields the index reads, in place.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskDetailRef<'a> {
    pub function: &'a str,
    pub attempt: u32,
    pub max_retries: u32,
    pub error: &'a str,
    pub is_final: bool,
    pub pid: u32,
    pub error_type: rayr_proto::TaskErrorKind,
}

impl<'a> TaskDetailRef<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<TaskDetailRef<'a>, String> {
        let mut d = TaskDetailRef::default();
        let mut r = Wire(bytes);
        while let Some((field, value)) = r.field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => d.function = utf8(b)?,
                (2, Value::Varint(v)) => d.attempt = v as u32,
                (3, Value::Varint(v)) => d.max_retries = v as u32,
                (4, Value::Bytes(b)) => d.error = utf8(b)?,
                (6, Value::Varint(v)) => d.is_final = v != 0,
                (8, Value::Varint(v)) => d.pid = v as u32,
                (20, Value::Varint(v)) => d.error_type = enum_value(v),
                _ => {}
            }
        }
        Ok(d)
    }
}

/// The `ObjectDetail` fields the index reads, in place.
#[derive(Clone, Copy, Debug, Default)]
pub struct ObjectDetailRef<'a> {
    pub size: u64,
    pub location: &'a str,
    pub peer: &'a [u8],
    pub reason: &'a str,
    pub peer_kind: rayr_proto::PeerKind,
}

impl<'a> ObjectDetailRef<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<ObjectDetailRef<'a>, String> {
        let mut d = ObjectDetailRef::default();
        let mut r = Wire(bytes);
        while let Some((field, value)) = r.field()? {
            match (field, value) {
                (1, Value::Varint(v)) => d.size = v,
                (2, Value::Bytes(b)) => d.location = utf8(b)?,
                (3, Value::Bytes(b)) => d.peer = b,
                (4, Value::Bytes(b)) => d.reason = utf8(b)?,
                (7, Value::Varint(v)) => d.peer_kind = enum_value(v),
                _ => {}
            }
        }
        Ok(d)
    }
}

/// An enum field's value; one this version does not know reads as unspecified.
fn enum_value<E: TryFrom<i32> + Default>(v: u64) -> E {
    i32::try_from(v).ok().and_then(|v| E::try_from(v).ok()).unwrap_or_default()
}

fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|_| "a text field is not UTF-8".to_string())
}

/// A protobuf field's value as the wire gives it.
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

/// A protobuf reader over a byte slice: every length is checked against what is left.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    #[inline]
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.0.split_first() else {
                return Err("truncated varint".into());
            };
            self.0 = rest;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!("a field of {n} bytes overruns its message ({} left)", self.0.len()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    /// The next field, or `None` at the end.
    #[inline]
    fn field(&mut self) -> Result<Option<(u32, Value<'a>)>, String> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = (key >> 3) as u32;
        if field == 0 {
            return Err("field number 0".into());
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap())),
            2 => {
                let n = self.varint()?;
                Value::Bytes(self.take(usize::try_from(n).map_err(|_| "length does not fit")?)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((field, value)))
    }
}

/// Writes the varint length of the bytes after `at` into the byte reserved there.
#[inline]
fn patch_len(out: &mut Vec<u8>, at: usize) {
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut v = Vec::with_capacity(10);
        varint(len as u64, &mut v);
        out[at] = v[0];
        out.splice(at + 1..at + 1, v[1..].iter().copied());
    }
}

#[inline(always)]
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline(always)]
fn key(field: u32, wire_type: u32, out: &mut Vec<u8>) {
    varint(((field << 3) | wire_type) as u64, out);
}

#[inline(always)]
fn bytes(field: u32, v: &[u8], out: &mut Vec<u8>) {
    if !v.is_empty() {
        key(field, 2, out);
        varint(v.len() as u64, out);
        out.extend_from_slice(v);
    }
}

#[inline(always)]
fn uint(field: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        key(field, 0, out);
        varint(v, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{new_id, process_salt};
    use rayr_proto::TaskDetail;

    fn source() -> RunSource {
        RunSource { node_id: [1; 16], source_worker: [2; 16], source_pid: 77, job_id: [3; 16], salt: process_salt() }
    }

    fn frame(src: &RunSource, peers: &PeerSalts, first_seq: u64, base: i64, count: u32, events: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        run_header(src, peers.as_slice(), first_seq, base, count, events.len(), &mut wire);
        wire.extend_from_slice(events);
        wire
    }

    fn expand_all(mut wire: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some((body, used)) = rayr_proto::split_frame(wire).unwrap() {
            expand_run(body, &mut out).unwrap();
            wire = &wire[used..];
        }
        out
    }

    #[test]
    fn packed_events_expand_to_what_was_recorded() {
        let src = source();
        let task = new_id();
        let foreign = [9u8; 16];
        let long_error = "x".repeat(300);
        let mut events = Vec::new();
        let mut peers = PeerSalts::default();
        pack_event(&mut events, &src, &mut peers, 40, EventKind::TaskSubmitted as i32, 1_000, |w| {
            w.task(&task).object(&foreign);
            w.task_detail(|d| {
                d.function("noop").max_retries(3);
            });
        });
        pack_event(&mut events, &src, &mut peers, 41, EventKind::TaskFailed as i32, 250, |w| {
            w.task(&task).cause(&event_id_from(40, src.salt)).worker(&src.source_worker).actor(&[0; 16]);
            w.task_detail(|d| {
                d.error(&long_error).is_final(true).error_type(rayr_proto::TaskErrorKind::Panic).output((10, 20), (0, 5), (3, 1), (2, 0));
            });
        });
        let whole = Event { id: vec![5; 16], time_us: 999_000, kind: EventKind::WorkerExited as i32, ..Default::default() };
        pack_whole_event(&mut events, &whole, -1_250);
        let got = expand_all(&frame(&src, &peers, 40, 999_000, 3, &events));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].id, event_id_from(40, src.salt).to_vec(), "ids follow from the run's first number");
        assert_eq!(got[0].time_us, 1_000_000);
        assert_eq!(got[0].task_id, task.to_vec(), "an id of this process, packed to 8 bytes and restored");
        assert_eq!(got[0].object_id, foreign.to_vec());
        assert_eq!((got[0].node_id.as_slice(), got[0].source_pid, got[0].job_id.as_slice()), (&[1u8; 16][..], 77, &[3u8; 16][..]));
        assert_eq!(
            got[0].detail,
            Some(event::Detail::Task(TaskDetail { function: "noop".into(), max_retries: 3, ..Default::default() }))
        );
        assert_eq!(got[1].id, event_id_from(41, src.salt).to_vec());
        assert_eq!(got[1].time_us, 1_000_250);
        assert_eq!(got[1].cause, got[0].id);
        assert_eq!(got[1].worker_id, src.source_worker.to_vec(), "the recorder's own id, packed to one byte");
        assert!(got[1].actor_id.is_empty(), "an all-zero id is no id");
        match &got[1].detail {
            Some(event::Detail::Task(d)) => {
                assert_eq!((d.error.len(), d.r#final), (300, true), "a detail over 127 bytes");
                assert_eq!(
                    (d.out_start, d.out_end, d.err_start, d.err_end, d.output_measured, d.out_gen, d.err_gen, d.out_gen_span, d.err_gen_span),
                    (10, 20, 0, 5, true, 3, 1, 2, 0),
                    "the output's place, generations and spans"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(got[2], Event { node_id: vec![1; 16], source_worker: vec![2; 16], source_pid: 77, job_id: vec![3; 16], ..whole });
    }

    /// What the index reads in place is what readers get whole.
    #[test]
    fn events_read_in_place_agree_with_whole_events() {
        let src = source();
        let task = new_id();
        let mut events = Vec::new();
        let mut peers = PeerSalts::default();
        let peer_task = id_of_counter(99, 0x5555);
        pack_event(&mut events, &src, &mut peers, 40, EventKind::TaskSubmitted as i32, 1_000, |w| {
            w.task(&task).object(&[9; 16]);
            w.task_detail(|d| {
                d.function("m::f").max_retries(3).attempt(2);
            });
        });
        pack_event(&mut events, &src, &mut peers, 41, EventKind::TaskFailed as i32, 7, |w| {
            w.task(&peer_task).cause(&event_id_from(40, src.salt)).worker(&src.source_worker);
            w.task_detail(|d| {
                d.error("boom").is_final(true).error_type(rayr_proto::TaskErrorKind::Panic).pid(4);
            });
        });
        pack_event(&mut events, &src, &mut peers, 42, EventKind::ObjectFreed as i32, 1, |w| {
            w.object(&task);
            w.object_detail(|d| {
                d.size(12).location("shm").peer(&[3; 16]).peer_kind(rayr_proto::PeerKind::Borrower);
            });
        });
        let whole = Event { id: vec![5; 16], time_us: 3, kind: EventKind::WorkerExited as i32, node_id: vec![8; 16], ..Default::default() };
        pack_whole_event(&mut events, &whole, 3);
        let wire = frame(&src, &peers, 40, 50, 4, &events);
        let (body, _) = rayr_proto::split_frame(&wire).unwrap().unwrap();
        let run = RunView::parse(body).unwrap();
        assert_eq!((run.salt, run.first_seq, run.count, run.source_pid), (src.salt, 40, 4, 77));
        let refs: Vec<EventRef<'_>> = run.events().map(Result::unwrap).collect();
        let whole_events = expand_all(&wire);
        assert_eq!(refs.len(), whole_events.len());
        let v = |id: Option<Id>| id.map(|i| i.to_vec()).unwrap_or_default();
        for (r, e) in refs.iter().zip(&whole_events) {
            assert_eq!((v(r.id), r.time_us, r.kind), (e.id.clone(), e.time_us, e.kind));
            assert_eq!((v(r.cause), v(r.task_id), v(r.object_id), v(r.worker_id)), (e.cause.clone(), e.task_id.clone(), e.object_id.clone(), e.worker_id.clone()));
            assert_eq!(r.to_event(&run).unwrap(), *e);
        }
        let t = refs[0].task().unwrap();
        assert_eq!((t.function, t.max_retries, t.attempt), ("m::f", 3, 2));
        let t = refs[1].task().unwrap();
        assert_eq!((t.error, t.is_final, t.error_type, t.pid), ("boom", true, rayr_proto::TaskErrorKind::Panic, 4));
        let o = refs[2].object().unwrap();
        assert_eq!((o.size, o.location, o.peer, o.peer_kind), (12, "shm", &[3u8; 16][..], rayr_proto::PeerKind::Borrower));
        assert!(refs[3].explicit_id && refs[3].node_id == Some([8; 16]) && refs[3].source_worker.is_none());
        assert!(refs[0].node_id.is_none(), "the run's node is the run's, not the event's");
    }

    #[test]
    fn other_processes_ids_round_trip_short_until_the_peer_table_is_full() {
        let src = source();
        let mut events = Vec::new();
        let mut peers = PeerSalts::default();
        let others: Vec<(Id, Id)> = (0..MAX_PEER_SALTS as u64 + 2)
            .map(|p| {
                let salt = 0x1234_5678_0000_0000 + p;
                (id_of_counter(1_000 + p, salt), event_id_from(7 << 24 | p, salt))
            })
            .collect();
        for (i, (task, cause)) in others.iter().enumerate() {
            pack_event(&mut events, &src, &mut peers, i as u64, EventKind::TaskStarted as i32, 1, |w| {
                w.task(task).cause(cause);
            });
        }
        assert_eq!(peers.as_slice().len(), MAX_PEER_SALTS);
        let got = expand_all(&frame(&src, &peers, 0, 0, others.len() as u32, &events));
        for (e, (task, cause)) in got.iter().zip(&others) {
            assert_eq!((e.task_id.as_slice(), e.cause.as_slice()), (&task[..], &cause[..]));
        }
        // Short while the table has room: a tag, the peer, a few bytes of counter.
        assert!(events.len() < others.len() * 40, "{} bytes", events.len());
    }

    #[test]
    fn a_freed_object_without_a_reason_was_released() {
        let src = source();
        let mut events = Vec::new();
        let mut peers = PeerSalts::default();
        pack_event(&mut events, &src, &mut peers, 0, EventKind::ObjectFreed as i32, 1, |w| {
            w.object(&[8; 16]);
        });
        pack_event(&mut events, &src, &mut peers, 1, EventKind::ObjectFreed as i32, 1, |w| {
            w.object_detail(|d| {
                d.reason("its last borrower exited");
            });
        });
        let reasons: Vec<String> = expand_all(&frame(&src, &peers, 0, 0, 2, &events))
            .into_iter()
            .map(|e| match e.detail {
                Some(event::Detail::Object(d)) => d.reason,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(reasons, [FREED_BY_RELEASE, "its last borrower exited"]);
    }

    #[test]
    fn whole_ids_whose_first_byte_looks_like_a_tag_stay_whole() {
        let src = source();
        let mut events = Vec::new();
        let peers = PeerSalts::default();
        let ids: Vec<[u8; 16]> = (0..=4u8).map(|b| [b; 16]).collect();
        for id in &ids {
            let e = Event { id: id.to_vec(), task_id: id.to_vec(), cause: id.to_vec(), kind: 12, ..Default::default() };
            pack_whole_event(&mut events, &e, 1);
        }
        let got = expand_all(&frame(&src, &peers, 0, 0, ids.len() as u32, &events));
        assert_eq!(got.len(), ids.len());
        for (e, id) in got.iter().zip(&ids) {
            assert_eq!((e.id.as_slice(), e.task_id.as_slice(), e.cause.as_slice()), (&id[..], &id[..], &id[..]));
        }
    }

    #[test]
    fn a_single_event_run_keeps_the_event_whole() {
        let e = Event { id: vec![4; 16], time_us: 123, source_worker: vec![6; 16], kind: 20, ..Default::default() };
        let mut wire = Vec::new();
        encode_single_run_frame(&e, &mut wire);
        assert_eq!(expand_all(&wire), vec![e]);
    }

    #[test]
    fn a_corrupt_run_is_an_error_not_a_panic() {
        let src = source();
        let mut events = Vec::new();
        let mut peers = PeerSalts::default();
        pack_event(&mut events, &src, &mut peers, 0, EventKind::TaskStarted as i32, 5, |w| {
            w.task(&[7; 16]);
        });
        let wire = frame(&src, &peers, 0, 0, 1, &events);
        let (body, _) = rayr_proto::split_frame(&wire).unwrap().unwrap();
        let mut cut = body.to_vec();
        cut.truncate(cut.len() - 3);
        assert!(expand_run(&cut, &mut Vec::new()).is_err());
    }
}
