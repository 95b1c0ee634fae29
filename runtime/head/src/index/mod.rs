//! The event index: every event of a session findable by every id it names, by kind and
//! by time, and the state views built from them — at the rate the runtime records events.
//!
//! The event logs are the record; the index only points into them, and is rebuilt from
//! them when it is missing or damaged. It lives in `<session>/index/`:
//!
//! | file | what it holds |
//! | --- | --- |
//! | `runs` | one fixed-size record per indexed run of events ([`runs`]): its log, offset and length, its process, node and job, time range and kinds |
//! | `ranges` | per run, per block of ids it names, the lowest and highest counter named ([`ranges`]): how a run is found from an id |
//! | `seg-<n>` | immutable sorted tables ([`table`]): task rows, object rows, and ids posted one by one (a run naming ids of too many blocks) |
//! | `manifest` | which segments and how many runs make the index, how far each log is indexed, the dictionaries, the small views (workers, nodes, jobs, actors) and the live counts ([`manifest`]) |
//! | `lock` | held by the one process that has the index open |
//!
//! **Why it keeps up.** The unit of indexing is the run (a batch of one process's events,
//! see `rayr_logs::event_run`), not the event: events are read in place (no allocation
//! per event); an event's own id is never stored (it follows from its run's process and
//! first sequence number, so `runs` finds it); ids every event of a run shares (its
//! process, node, job) are found through the run directory; and the other ids a run names
//! are kept as a few counter ranges per run ([`ranges`]), not one entry per id. Rows go
//! to an in-memory table (the memtable), kept in pages of a process's consecutive counters
//! and written out as a sorted segment every hundred thousand rows or so; segments are
//! merged in the background (size-tiered). No write is a random B-tree insert; indexing
//! costs the same per event at ten million tasks as at ten thousand.
//!
//! **Reading.** `events` reads the runs a query is pointed to from the logs and keeps the
//! events that match; `list` merges the memtable and the segments in key order (newest row
//! wins); live counts (tasks by function and state, objects by state, the newest final
//! failures) are kept as rows change and never need a scan.
//!
//! **Crash safety.** Segment files are written whole, synced and renamed into place before
//! the manifest that names them; the manifest is replaced atomically. A crash loses only
//! what was indexed since the last manifest, which the next open reads again from the logs
//! (the manifest says how far each was indexed): nothing is lost and nothing is indexed
//! twice.
//!
//! **Rows across segments.** A row that changes after its segment was written (a long
//! task, a late event from a slower log) is read back from the segments into the memtable
//! first (read-modify-write), so the newest row is always whole. Whether an id may be in a
//! segment at all is known without looking: a process makes ids in counter order within
//! each block of counters, and the index keeps the highest flushed counter per block.

mod ingest;
mod keys;
mod manifest;
mod ranges;
mod read;
pub(crate) mod rows;
mod runs;
mod table;

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rayr_logs::{Id, Session};
use rayr_proto::{ActorRow, Event, JobRow, ListReply, ListRequest, Message, NodeRow, WorkerRow};

use crate::HeadError;
use keys::{FxHashMap, Key};
use manifest::{Failure, Manifest};
use ranges::Ranges;
use rows::{Ids, Names, ObjectRec, Pages, TaskRec, TaskState};
use runs::Runs;
use table::{Segment, SegmentRef, SegmentWriter, Table};

pub use read::{Summary, SummaryGroup};

/// Most candidates `resolve_prefix` returns (and an ambiguity error lists).
pub const MAX_ID_MATCHES: usize = 20;
/// Rows in the memtable (tasks and objects) that make it be written out as a segment.
const FLUSH_ROWS: usize = 128 * 1024;
/// Longest the memtable holds news before it is written out (what a crash costs to redo).
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// Bytes read from a log at a time.
const READ_WINDOW: usize = 4 << 20;
/// Newest final failures kept for the live views.
const RECENT_FAILURES: usize = 100;

/// Which events an `events` query wants.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Only events naming this id, in any role.
    pub id: Option<Vec<u8>>,
    /// `EventKind as i32`; 0 for any.
    pub kind: i32,
    /// Only events at or after this unix time (µs); 0 for any.
    pub since_us: i64,
}

/// One page of an `events` query.
#[derive(Debug, Default)]
pub struct EventsPage {
    /// Matching events with their sequence numbers, in sequence order.
    pub events: Vec<(u64, Event)>,
    /// Pass as `after_seq` to continue where this page stopped.
    pub next_after: u64,
    /// Whether the page stopped at a limit (more may match now, without waiting).
    pub more: bool,
}

/// A final task failure, newest first (`EventIndex::recent_failures`).
#[derive(Clone, Debug, PartialEq)]
pub struct RecentFailure {
    pub time_us: i64,
    pub task_id: Vec<u8>,
    pub function: String,
    pub error_type: String,
    /// The error's first line.
    pub error: String,
}

/// The session's event index. Reads run concurrently with the one writer (`catch_up`,
/// which serializes itself) and with the background merging of segments.
pub struct EventIndex {
    inner: Arc<Inner>,
}

struct Inner {
    /// `<session>/index`, or `None` for an index kept in memory.
    dir: Option<PathBuf>,
    session: Option<Session>,
    /// The directory's lock, held while the index is open.
    _lock: Option<File>,
    /// Held by `catch_up`, so that two callers do not read the same logs at once.
    writer: Mutex<Writer>,
    state: RwLock<State>,
    /// Events indexed by this process, by kind, and the final task failures among them
    /// (the head's metrics).
    counts: [AtomicU64; 64],
    final_failures: AtomicU64,
    /// Event logs opened for reading runs, by their number.
    files: Mutex<FxHashMap<u32, Arc<File>>>,
    compactor: Mutex<Option<std::thread::JoinHandle<()>>>,
    closing: AtomicBool,
}

/// What the writer keeps between calls.
struct Writer {
    buf: Vec<u8>,
    last_flush: Instant,
    skipped_runs: u64,
}

/// Where one event log is indexed to.
#[derive(Clone, Debug)]
pub(crate) struct LogPos {
    pub name: String,
    pub path: PathBuf,
    pub offset: u64,
    /// The node whose log it is (`events-<node>.log`), which events of its runs that do
    /// not name one belong to.
    pub node: Option<Id>,
}

/// The memtable: what was indexed since the last segment was written.
#[derive(Default)]
pub(crate) struct Memtable {
    pub tasks: Pages<TaskRec>,
    pub objects: Pages<ObjectRec>,
    /// Ids posted one by one: those of runs naming more blocks than `ranges` keeps.
    pub postings: FxHashMap<Key, PostingList>,
}

/// The runs of one key in the memtable, the first three held without an allocation.
#[derive(Default, Clone, Debug)]
pub(crate) struct PostingList {
    inline: [u32; 3],
    len: u32,
    more: Vec<u32>,
}

impl PostingList {
    #[inline]
    pub(crate) fn push(&mut self, run: u32) {
        if self.last() == Some(run) {
            return;
        }
        if (self.len as usize) < self.inline.len() {
            self.inline[self.len as usize] = run;
        } else {
            self.more.push(run);
        }
        self.len += 1;
    }

    fn last(&self) -> Option<u32> {
        match self.len {
            0 => None,
            n if n as usize <= self.inline.len() => Some(self.inline[n as usize - 1]),
            _ => self.more.last().copied(),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.inline[..(self.len as usize).min(3)].iter().chain(&self.more).copied()
    }
}

impl Memtable {
    fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.objects.is_empty() && self.postings.is_empty()
    }
    /// What the memtable holds, in rows (a page counts whole: ids that are not a process's
    /// consecutive counters make the memtable go out sooner, never grow without bound).
    fn rows(&self) -> usize {
        self.tasks.slots() + self.objects.slots() + self.postings.len()
    }
}

/// Everything the index knows, behind one lock.
pub(crate) struct State {
    pub segments: Vec<SegmentRef>,
    pub next_segment: u64,
    pub runs: Runs,
    /// Which ids each run names.
    pub ranges: Ranges,
    /// Events indexed (the last event's ordinal).
    pub events: u64,
    pub logs: Vec<LogPos>,
    pub names: Names,
    pub ids: Ids,
    pub workers: FxHashMap<Key, WorkerRow>,
    pub nodes: FxHashMap<Key, NodeRow>,
    pub jobs: FxHashMap<Key, JobRow>,
    pub actors: FxHashMap<Key, ActorRow>,
    /// Each process's job and pid (`Ids` number, pid), from its WORKER_STARTED: events
    /// leave them out to stay small (see `ingest::effective`).
    pub origins: FxHashMap<Key, (u32, u32)>,
    pub mem: Memtable,
    /// Per counter block, the highest task / object counter in any segment.
    pub task_high: FxHashMap<(u64, u64), u64>,
    pub object_high: FxHashMap<(u64, u64), u64>,
    pub task_counts: FxHashMap<(u32, TaskState), i64>,
    /// Objects by state: (count, bytes).
    pub object_counts: [(i64, i64); 4],
    pub failures: VecDeque<Failure>,
    /// Something changed since the manifest was written.
    pub dirty: bool,
}

impl State {
    fn empty() -> State {
        State {
            segments: Vec::new(),
            next_segment: 1,
            runs: Runs::default(),
            ranges: Ranges::default(),
            events: 0,
            logs: Vec::new(),
            names: Names::default(),
            ids: Ids::default(),
            workers: Default::default(),
            nodes: Default::default(),
            jobs: Default::default(),
            actors: Default::default(),
            origins: Default::default(),
            mem: Memtable::default(),
            task_high: Default::default(),
            object_high: Default::default(),
            task_counts: Default::default(),
            object_counts: Default::default(),
            failures: VecDeque::new(),
            dirty: false,
        }
    }

    /// The state a manifest describes (its segments opened from `dir`).
    fn from_manifest(m: Manifest, dir: &Path, session: &Session) -> Result<State, String> {
        let mut st = State::empty();
        for name in &m.segments {
            let seg = Segment::open(&dir.join(name)).map_err(|e| e.to_string())?;
            st.segments.push(Arc::new(seg));
        }
        st.next_segment = m.next_segment;
        st.runs = Runs::load(&dir.join("runs"), m.runs).map_err(|e| e.to_string())?;
        st.ranges = Ranges::load(&dir.join("ranges"), m.ranges).map_err(|e| e.to_string())?;
        if st.runs.all().last().map_or(0, |r| r.end_event() - 1) != m.events {
            return Err(format!("the runs hold a different number of events than the manifest's {}", m.events));
        }
        st.events = m.events;
        st.logs = m.logs.into_iter().map(|(name, offset)| LogPos::new(name, &session.events_dir(), offset)).collect();
        st.names = Names::from_list(m.names);
        st.ids = Ids::from_list(m.ids);
        let decode_err = |e: prost::DecodeError| e.to_string();
        for b in m.workers {
            let row = WorkerRow::decode(b.as_slice()).map_err(decode_err)?;
            if let Ok(id) = <Id>::try_from(row.worker_id.as_slice()) {
                let job = st.ids.find(&row.job_id).unwrap_or(0);
                st.origins.insert(Key::of(&id), (job, row.pid));
                st.workers.insert(Key::of(&id), row);
            }
        }
        for b in m.nodes {
            let row = NodeRow::decode(b.as_slice()).map_err(decode_err)?;
            if let Ok(id) = <Id>::try_from(row.node_id.as_slice()) {
                st.nodes.insert(Key::of(&id), row);
            }
        }
        for b in m.jobs {
            let row = JobRow::decode(b.as_slice()).map_err(decode_err)?;
            if let Ok(id) = <Id>::try_from(row.job_id.as_slice()) {
                st.jobs.insert(Key::of(&id), row);
            }
        }
        for b in m.actors {
            let row = ActorRow::decode(b.as_slice()).map_err(decode_err)?;
            if let Ok(id) = <Id>::try_from(row.actor_id.as_slice()) {
                st.actors.insert(Key::of(&id), row);
            }
        }
        st.task_high = m.task_high.into_iter().map(|(s, b, c)| ((s, b), c)).collect();
        st.object_high = m.object_high.into_iter().map(|(s, b, c)| ((s, b), c)).collect();
        for (function, state, n) in m.task_counts {
            let state = match state {
                1 => TaskState::Submitted,
                2 => TaskState::Scheduled,
                3 => TaskState::Running,
                4 => TaskState::Finished,
                5 => TaskState::Failed,
                _ => TaskState::None,
            };
            st.task_counts.insert((function, state), n);
        }
        for (state, n, bytes) in m.object_counts {
            if let Some(slot) = st.object_counts.get_mut(state as usize) {
                *slot = (n, bytes);
            }
        }
        st.failures = m.failures.into_iter().collect();
        Ok(st)
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            segments: self.segments.iter().map(|s| s.name.clone()).collect(),
            next_segment: self.next_segment,
            runs: self.runs.len() as u64,
            ranges: self.ranges.len(),
            events: self.events,
            logs: self.logs.iter().map(|l| (l.name.clone(), l.offset)).collect(),
            names: self.names.to_list(),
            ids: self.ids.to_list(),
            workers: self.workers.values().map(Message::encode_to_vec).collect(),
            nodes: self.nodes.values().map(Message::encode_to_vec).collect(),
            jobs: self.jobs.values().map(Message::encode_to_vec).collect(),
            actors: self.actors.values().map(Message::encode_to_vec).collect(),
            task_counts: self.task_counts.iter().filter(|(_, n)| **n != 0).map(|((f, s), n)| (*f, *s as u8, *n)).collect(),
            object_counts: self.object_counts.iter().enumerate().map(|(s, (n, b))| (s as u8, *n, *b)).collect(),
            task_high: self.task_high.iter().map(|((s, b), c)| (*s, *b, *c)).collect(),
            object_high: self.object_high.iter().map(|((s, b), c)| (*s, *b, *c)).collect(),
            failures: self.failures.iter().cloned().collect(),
        }
    }
}

impl LogPos {
    fn new(name: String, events_dir: &Path, offset: u64) -> LogPos {
        // `events-<node>.log`, or `events-<node>-orphan-<worker>.log`: what a worker saved
        // when its agent died.
        let node = name
            .strip_prefix("events-")
            .and_then(|n| n.split(['.', '-']).next())
            .and_then(rayr_logs::parse_hex)
            .and_then(|b| <Id>::try_from(b.as_slice()).ok());
        LogPos { path: events_dir.join(&name), name, offset, node }
    }
}

/// Where a session's index lives.
fn index_dir(session: &Session) -> PathBuf {
    session.dir.join("index")
}

impl EventIndex {
    /// Opens (creating if needed) the index of `session`. Fails with `HeadError::Locked`
    /// while another process (the running head) has it open.
    pub fn open(session: &Session) -> Result<EventIndex, HeadError> {
        let dir = index_dir(session);
        // Cannot be made or opened (another user's session): callers may read the logs
        // into an index in memory instead.
        let io = |e: std::io::Error| HeadError::Open { path: dir.clone(), source: e };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let lock = File::options().create(true).truncate(false).write(true).open(dir.join("lock")).map_err(io)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) { HeadError::Locked { path: dir } } else { io(e) });
        }
        // Earlier versions kept a redb database beside the logs; it is of no use now.
        let old = session.dir.join("head.redb");
        if old.exists() {
            match std::fs::remove_file(&old) {
                Ok(()) => tracing::info!(path = %old.display(), "removed the event index of an earlier rayr version"),
                Err(e) => tracing::warn!(path = %old.display(), error = %e, "cannot remove the event index of an earlier rayr version"),
            }
        }
        let state = match Manifest::read(&dir.join("manifest")) {
            Ok(None) => Ok(State::empty()),
            Ok(Some(m)) => State::from_manifest(m, &dir, session),
            Err(e) => Err(e.to_string()),
        };
        let state = state.unwrap_or_else(|why| {
            // The logs are the record: an index that cannot be read is built again.
            tracing::warn!(dir = %dir.display(), %why, "the event index is damaged; rebuilding it from the event logs");
            State::empty()
        });
        let fresh = state.segments.is_empty() && state.runs.len() == 0;
        let index = EventIndex::with_state(Some(dir.clone()), Some(session.clone()), Some(lock), state);
        if fresh {
            // Whatever an earlier index left (a damaged one, a crash before its first
            // manifest) goes; the manifest names what is kept.
            index.remove_unnamed_files(true).map_err(io)?;
        } else {
            index.remove_unnamed_files(false).map_err(io)?;
        }
        Ok(index)
    }

    /// An index kept in memory only: for tests, and for reading a session whose directory
    /// this process may not write.
    pub fn open_in_memory() -> Result<EventIndex, HeadError> {
        Ok(EventIndex::with_state(None, None, None, State::empty()))
    }

    /// An in-memory index of `session`, for reading a session whose directory this process
    /// may not write (another user's). Call `catch_up` to fill it.
    pub fn open_in_memory_for(session: &Session) -> Result<EventIndex, HeadError> {
        Ok(EventIndex::with_state(None, Some(session.clone()), None, State::empty()))
    }

    fn with_state(dir: Option<PathBuf>, session: Option<Session>, lock: Option<File>, state: State) -> EventIndex {
        EventIndex {
            inner: Arc::new(Inner {
                dir,
                session,
                _lock: lock,
                writer: Mutex::new(Writer { buf: Vec::new(), last_flush: Instant::now(), skipped_runs: 0 }),
                state: RwLock::new(state),
                counts: std::array::from_fn(|_| AtomicU64::new(0)),
                final_failures: AtomicU64::new(0),
                files: Mutex::new(FxHashMap::default()),
                compactor: Mutex::new(None),
                closing: AtomicBool::new(false),
            }),
        }
    }

    /// Deletes files of the index directory the manifest does not name (`all`: every
    /// segment and the runs file too).
    fn remove_unnamed_files(&self, all: bool) -> std::io::Result<()> {
        let Some(dir) = &self.inner.dir else { return Ok(()) };
        let st = self.inner.state.read();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let named = st.segments.iter().any(|s| s.name == name);
            let stray = (name.starts_with("seg-") && (all || !named)) || (all && (name == "runs" || name == "ranges")) || name.ends_with(".tmp");
            if stray {
                std::fs::remove_file(dir.join(&name))?;
            }
        }
        Ok(())
    }

    /// Tasks by the state of their row.
    pub fn task_states(&self) -> Vec<(String, u64)> {
        let st = self.inner.state.read();
        TaskState::ALL
            .iter()
            .map(|s| {
                let n: i64 = st.task_counts.iter().filter(|((_, state), _)| state == s).map(|(_, n)| *n).sum();
                (s.name().to_string(), n.max(0) as u64)
            })
            .collect()
    }

    /// How many events of each kind this process indexed, and how many task failures
    /// among them were final.
    pub fn counts(&self) -> (Vec<(rayr_proto::EventKind, u64)>, u64) {
        let kinds = (0..self.inner.counts.len())
            .filter_map(|k| {
                Some((rayr_proto::EventKind::try_from(k as i32).ok()?, self.inner.counts[k].load(Ordering::Relaxed)))
            })
            .filter(|(k, _)| *k != rayr_proto::EventKind::Unspecified)
            .collect();
        (kinds, self.inner.final_failures.load(Ordering::Relaxed))
    }

    /// The newest final task failures, newest first (at most `n`).
    pub fn recent_failures(&self, n: usize) -> Vec<RecentFailure> {
        let st = self.inner.state.read();
        st.failures
            .iter()
            .rev()
            .take(n)
            .map(|f| RecentFailure {
                time_us: f.time_us,
                task_id: f.task.to_vec(),
                function: st.names.get(f.function).to_string(),
                error_type: st.names.get(f.error_type).to_string(),
                error: f.error.clone(),
            })
            .collect()
    }

    /// The session `open` was given; `None` for an index in memory.
    pub fn session(&self) -> Option<&Session> {
        self.inner.session.as_ref()
    }

    /// Indexes whatever the session's event logs gained since the last call; returns how
    /// many events were newly indexed.
    pub fn catch_up(&self, session: &Session) -> Result<u64, HeadError> {
        self.catch_up_at_most(session, u64::MAX)
    }

    /// Like [`catch_up`](Self::catch_up), stopping after about `limit` events (whole
    /// runs), so a background indexer can notice it should stop between calls.
    pub fn catch_up_at_most(&self, session: &Session, limit: u64) -> Result<u64, HeadError> {
        let inner = &self.inner;
        let mut writer = inner.writer.lock();
        let logs = match session.event_logs() {
            Ok(logs) => logs,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(HeadError::Io { path: session.events_dir(), source: e }),
        };
        let mut indexed = 0u64;
        for path in logs {
            if indexed >= limit {
                break;
            }
            indexed += inner.ingest_log(&path, &session.events_dir(), &mut writer, limit - indexed)?;
        }
        let due = {
            let st = inner.state.read();
            st.mem.rows() >= FLUSH_ROWS || (st.dirty && writer.last_flush.elapsed() >= FLUSH_EVERY)
        };
        if due {
            inner.flush(&mut writer)?;
        }
        Ok(indexed)
    }

    /// Writes out everything indexed so far (the head calls it when it stops).
    pub fn flush(&self) -> Result<(), HeadError> {
        let mut writer = self.inner.writer.lock();
        self.inner.flush(&mut writer)
    }

    /// How many events the index holds.
    pub fn events_indexed(&self) -> Result<u64, HeadError> {
        Ok(self.inner.state.read().events)
    }

    /// Rows of one view that match the request's filters, one page of them, and the count
    /// of all that match. See `query` for the filter keys each entity takes.
    pub fn list(&self, req: &ListRequest) -> Result<ListReply, HeadError> {
        read::list(&self.inner.state.read(), req)
    }

    /// Per group (tasks: function; actors: class; objects: one group), rows by state.
    pub fn summary(&self, entity: &str) -> Result<Summary, HeadError> {
        read::summary(&self.inner.state.read(), entity)
    }

    /// Every node row (for `ClusterInfo`).
    pub fn nodes(&self) -> Result<Vec<NodeRow>, HeadError> {
        let req = ListRequest { entity: "nodes".into(), limit: u32::MAX, ..Default::default() };
        Ok(self.list(&req)?.nodes)
    }

    /// Every event after `after_seq` naming `id` (any role; `None`: all), of `kind` (0: any),
    /// at or after `since_us` (0: any), in index order.
    pub fn events(&self, id: Option<&[u8]>, kind: i32, since_us: i64, after_seq: u64) -> Result<Vec<(u64, Event)>, HeadError> {
        let q = EventQuery { id: id.map(<[u8]>::to_vec), kind, since_us };
        let mut out = Vec::new();
        let mut after = after_seq;
        loop {
            let page = self.events_page(&q, after, usize::MAX)?;
            out.extend(page.events);
            after = page.next_after;
            if !page.more {
                return Ok(out);
            }
        }
    }

    /// Up to `limit` events matching `q` after `after_seq`; continue from `next_after`.
    pub fn events_page(&self, q: &EventQuery, after_seq: u64, limit: usize) -> Result<EventsPage, HeadError> {
        self.inner.events_page(q, after_seq, limit)
    }

    /// Ids the index knows (any id any event names) that match `pattern`: a hex prefix, or
    /// the `HEAD…TAIL` short form tables print. At most `MAX_ID_MATCHES`, in id order.
    pub fn resolve_prefix(&self, pattern: &str) -> Result<Vec<Vec<u8>>, HeadError> {
        Ok(self.inner.find_ids(pattern, MAX_ID_MATCHES)?.0)
    }

    /// The one id `pattern` names; `UnknownId` or `AmbiguousId` (with the candidates) otherwise.
    pub fn resolve_unique(&self, pattern: &str) -> Result<Vec<u8>, HeadError> {
        let (mut ids, total) = self.inner.find_ids(pattern, MAX_ID_MATCHES)?;
        match total {
            0 => Err(HeadError::UnknownId { pattern: pattern.trim().to_string() }),
            1 => Ok(ids.remove(0)),
            _ => {
                let kinds = ids.iter().map(|id| self.role_of(id)).collect();
                Err(HeadError::AmbiguousId { pattern: pattern.trim().to_string(), total, candidates: ids, kinds })
            }
        }
    }

    /// What `id` is (task, object, worker, …), as the events naming it say.
    fn role_of(&self, id: &[u8]) -> &'static str {
        let q = EventQuery { id: Some(id.to_vec()), kind: 0, since_us: 0 };
        let events: Vec<Event> = self.events_page(&q, 0, 64).map(|p| p.events.into_iter().map(|(_, e)| e).collect()).unwrap_or_default();
        if events.is_empty() {
            return "id";
        }
        rayr_explain::Role::of(id, &events).noun()
    }

    /// Up to `limit` events naming `id` (`None`: any) of `kind` (0: any), from the first.
    pub fn first_events(&self, id: Option<&[u8]>, kind: i32, limit: usize) -> Result<Vec<Event>, HeadError> {
        let q = EventQuery { id: id.map(<[u8]>::to_vec), kind, since_us: 0 };
        let mut out = Vec::new();
        let mut after = 0;
        while out.len() < limit {
            let page = self.events_page(&q, after, limit - out.len())?;
            after = page.next_after;
            out.extend(page.events.into_iter().map(|(_, e)| e));
            if !page.more {
                break;
            }
        }
        Ok(out)
    }

    /// The log offsets indexed so far, by log file name (for tests and `rayr status`).
    pub fn offsets(&self) -> Result<Vec<(String, u64)>, HeadError> {
        Ok(self.inner.state.read().logs.iter().map(|l| (l.name.clone(), l.offset)).collect())
    }

    /// Waits until no merge of segments is running (for figures and tests).
    pub fn settle(&self) {
        let h = self.inner.compactor.lock().take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }

    /// What the index takes on disk (bytes), for figures and `rayr status`.
    pub fn disk_bytes(&self) -> u64 {
        let Some(dir) = &self.inner.dir else { return 0 };
        std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    }
}

impl Drop for EventIndex {
    fn drop(&mut self) {
        self.inner.closing.store(true, Ordering::Release);
        if let Some(h) = self.inner.compactor.lock().take() {
            let _ = h.join();
        }
        if self.inner.dir.is_some() {
            let mut writer = self.inner.writer.lock();
            if let Err(e) = self.inner.flush(&mut writer) {
                tracing::warn!(error = %e, "could not write the event index out as the head stopped; it is read again from the logs at the next start");
            }
        }
    }
}

impl Inner {
    /// Writes the memtable out as a segment, appends the new runs, and writes the manifest.
    fn flush(self: &Arc<Self>, writer: &mut Writer) -> Result<(), HeadError> {
        writer.last_flush = Instant::now();
        let mut st = self.state.write();
        if !st.dirty {
            return Ok(());
        }
        if !st.mem.is_empty() {
            let name = format!("seg-{:08}", st.next_segment);
            let seg = self.write_segment(&name, |w| write_memtable(&st.mem, w))?;
            st.next_segment += 1;
            let State { mem, task_high, object_high, .. } = &mut *st;
            raise_high(task_high, mem.tasks.sorted().into_iter().map(|(k, _)| k));
            raise_high(object_high, mem.objects.sorted().into_iter().map(|(k, _)| k));
            st.segments.push(Arc::new(seg));
            st.mem = Memtable::default();
        }
        if let Some(dir) = &self.dir {
            let io = |e: std::io::Error| HeadError::Io { path: dir.clone(), source: e };
            st.runs.save(&dir.join("runs")).map_err(io)?;
            st.ranges.save(&dir.join("ranges")).map_err(io)?;
            st.manifest().write(&dir.join("manifest")).map_err(io)?;
        }
        st.dirty = false;
        let due = pick_merge(&st.segments).is_some();
        drop(st);
        if due {
            self.start_compaction();
        }
        Ok(())
    }

    /// Writes a segment with `fill`: to a file (synced, then renamed into place) for an
    /// index on disk, in memory otherwise.
    fn write_segment(&self, name: &str, fill: impl FnOnce(&mut SegmentWriter<Sink>) -> std::io::Result<()>) -> Result<Segment, HeadError> {
        let path = self.dir.as_ref().map(|d| d.join(name));
        let io = |e: std::io::Error| HeadError::Io { path: path.clone().unwrap_or_default(), source: e };
        let sink = match &path {
            Some(path) => Sink::File(std::io::BufWriter::with_capacity(1 << 20, File::create(path.with_extension("tmp")).map_err(io)?)),
            None => Sink::Memory(Vec::new()),
        };
        let mut w = SegmentWriter::new(sink).map_err(io)?;
        fill(&mut w).map_err(io)?;
        match (w.finish().map_err(io)?, &path) {
            (Sink::File(out), Some(path)) => {
                let file = out.into_inner().map_err(|e| io(e.into_error()))?;
                file.sync_all().map_err(io)?;
                std::fs::rename(path.with_extension("tmp"), path).map_err(io)?;
                Segment::open(path).map_err(io)
            }
            (Sink::Memory(bytes), _) => Segment::from_vec(bytes).map_err(io),
            (Sink::File(_), None) => unreachable!("a file sink has a path"),
        }
    }

    /// Merges segments while some tier has enough of them: in a background thread for an
    /// index on disk (a merge of large segments takes seconds, which indexing must not
    /// wait for), at once for one in memory.
    fn start_compaction(self: &Arc<Self>) {
        if self.dir.is_none() {
            while self.compact_once().unwrap_or(false) {}
            return;
        }
        let mut slot = self.compactor.lock();
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let me = self.clone();
        *slot = std::thread::Builder::new()
            .name("rayr-index-merge".into())
            .spawn(move || {
                while !me.closing.load(Ordering::Acquire) {
                    match me.compact_once() {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "merging event index segments failed; they stay as they are");
                            return;
                        }
                    }
                }
            })
            .ok();
    }

    /// One merge of adjacent segments; `false` when none is due.
    fn compact_once(&self) -> Result<bool, HeadError> {
        let (range, inputs, name) = {
            let mut st = self.state.write();
            let Some(range) = pick_merge(&st.segments) else { return Ok(false) };
            let name = format!("seg-{:08}", st.next_segment);
            st.next_segment += 1;
            (range.clone(), st.segments[range].to_vec(), name)
        };
        let closing = &self.closing;
        let merged = self.write_segment(&name, |w| merge_segments(&inputs, w, closing))?;
        if self.closing.load(Ordering::Acquire) {
            if let Some(dir) = &self.dir {
                let _ = std::fs::remove_file(dir.join(&name));
            }
            return Ok(false);
        }
        let mut st = self.state.write();
        let same = st.segments.get(range.clone()).is_some_and(|s| s.iter().zip(&inputs).all(|(a, b)| Arc::ptr_eq(a, b)));
        if !same {
            return Err(HeadError::Server("the segments changed under a merge".into()));
        }
        st.segments.splice(range, [Arc::new(merged)]);
        if let Some(dir) = &self.dir {
            let io = |e: std::io::Error| HeadError::Io { path: dir.clone(), source: e };
            st.manifest().write(&dir.join("manifest")).map_err(io)?;
            drop(st);
            // Readers holding the old segments keep their mappings; the files go now.
            for s in &inputs {
                let _ = std::fs::remove_file(dir.join(&s.name));
            }
        }
        Ok(true)
    }
}

/// Where a segment is written.
enum Sink {
    File(std::io::BufWriter<File>),
    Memory(Vec<u8>),
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Memory(v) => v.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.write_all(buf),
            Sink::Memory(v) => v.write_all(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Memory(_) => Ok(()),
        }
    }
}

/// Raises the per-block high-water marks to cover `keys`.
fn raise_high(high: &mut FxHashMap<(u64, u64), u64>, keys: impl Iterator<Item = Key>) {
    for k in keys {
        let slot = high.entry(k.block()).or_insert(k.counter);
        *slot = (*slot).max(k.counter);
    }
}

/// Writes the memtable's tables, each sorted.
fn write_memtable<W: std::io::Write>(mem: &Memtable, w: &mut SegmentWriter<W>) -> std::io::Result<()> {
    let mut value = Vec::new();
    for (k, row) in mem.tasks.sorted() {
        value.clear();
        row.encode(&mut value);
        w.add(Table::Tasks, k, &value)?;
    }
    for (k, row) in mem.objects.sorted() {
        value.clear();
        row.encode(&mut value);
        w.add(Table::Objects, k, &value)?;
    }
    let mut postings: Vec<(&Key, &PostingList)> = mem.postings.iter().collect();
    postings.sort_unstable_by_key(|(k, _)| **k);
    let mut runs = Vec::new();
    for (k, list) in postings {
        runs.clear();
        runs.extend(list.iter());
        value.clear();
        encode_runs(&runs, &mut value);
        w.add(Table::Postings, *k, &value)?;
    }
    Ok(())
}

/// A list of run numbers (ascending) as a count and deltas.
pub(crate) fn encode_runs(runs: &[u32], out: &mut Vec<u8>) {
    table::varint(runs.len() as u64, out);
    let mut last = 0u32;
    for r in runs {
        table::varint((r - last) as u64, out);
        last = *r;
    }
}

/// Appends the run numbers `bytes` holds to `out`.
pub(crate) fn decode_runs(bytes: &[u8], out: &mut Vec<u32>) -> Option<()> {
    let mut r = table::Reader(bytes);
    let n = r.varint()?;
    let mut last = 0u32;
    for _ in 0..n {
        last = last.checked_add(u32::try_from(r.varint()?).ok()?)?;
        out.push(last);
    }
    Some(())
}

/// Segments under this size count as the smallest tier.
const TIER_BASE: usize = 1 << 20;
/// Segments of one tier merged at once.
const MERGE_WIDTH: usize = 4;

/// The newest run of `MERGE_WIDTH` or more adjacent segments of one size tier, if any:
/// size-tiered merging keeps the number of segments logarithmic in the record, and each
/// row is rewritten a logarithmic number of times.
fn pick_merge(segments: &[SegmentRef]) -> Option<std::ops::Range<usize>> {
    let tier = |s: &SegmentRef| (s.len() / TIER_BASE).max(1).ilog(MERGE_WIDTH as usize);
    let last = segments.last()?;
    let t = tier(last);
    let start = segments.iter().rposition(|s| tier(s) != t).map_or(0, |i| i + 1);
    (segments.len() - start >= MERGE_WIDTH).then_some(start..segments.len())
}

/// Writes the merge of `inputs` (oldest first): rows from the newest segment holding
/// them, postings joined in segment (that is, run) order.
fn merge_segments<W: std::io::Write>(inputs: &[SegmentRef], w: &mut SegmentWriter<W>, closing: &AtomicBool) -> std::io::Result<()> {
    let mut runs = Vec::new();
    let mut value = Vec::new();
    for table in table::TABLES {
        let sources: Vec<_> = inputs.iter().map(|s| s.iter(table)).collect();
        let mut merged = read::Merge::new(sources);
        let mut n = 0u64;
        while let Some((key, versions)) = merged.next_group()? {
            n += 1;
            if n.is_multiple_of(1 << 16) && closing.load(Ordering::Acquire) {
                return Err(std::io::Error::other("the index is closing"));
            }
            if table.newest_wins() {
                let (_, v) = versions.last().expect("a group has a version");
                w.add(table, key, v)?;
            } else {
                runs.clear();
                for (_, v) in &versions {
                    decode_runs(v, &mut runs).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "postings do not decode"))?;
                }
                runs.dedup();
                value.clear();
                encode_runs(&runs, &mut value);
                w.add(table, key, &value)?;
            }
        }
    }
    Ok(())
}

/// The index as the explainer reads it (`rayr why-died` offline, and the head itself for
/// the views that show why something ended).
impl rayr_explain::Record for &EventIndex {
    fn live(&self) -> bool {
        false
    }

    async fn resolve(&mut self, pattern: &str, first: usize) -> Result<rayr_explain::Resolved, rayr_explain::RecordError> {
        match self.resolve_unique(pattern) {
            Ok(id) => Ok(rayr_explain::Resolved::Id { first: self.first_events(Some(&id), 0, first)?, id }),
            Err(e @ HeadError::UnknownId { .. }) => Ok(rayr_explain::Resolved::Unknown(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    async fn events_naming(&mut self, id: &[u8], limit: usize) -> Result<Vec<Event>, rayr_explain::RecordError> {
        Ok(self.first_events(Some(id), 0, limit)?)
    }

    async fn events_of_kind(&mut self, kind: rayr_proto::EventKind, limit: usize) -> Result<Vec<Event>, rayr_explain::RecordError> {
        Ok(self.first_events(None, kind as i32, limit)?)
    }

    async fn session(&mut self) -> Option<Session> {
        EventIndex::session(self).cloned()
    }
}
