//! The event index: every event of a session in a redb database, findable by every id it
//! names, and the state views built from them.
//!
//! Tables (all in `session.head_db()`):
//!
//! | table | key → value | what for |
//! | --- | --- | --- |
//! | `events` | seq → encoded `Event` | the record, in the order it was indexed |
//! | `by_id` | id → {seq} (multimap) | every event naming an id, in any role; id prefix search |
//! | `by_kind` | (kind, seq) → () | events of one kind |
//! | `tasks` `objects` `workers` `nodes` `jobs` | id → encoded row | the state views |
//! | `object_borrows` | object id → i64 | borrow balance behind `ObjectRow.borrowers` |
//! | `offsets` | log file name → byte offset | how far each event log is indexed |
//!
//! Crash safety: one write transaction holds a batch's events, index entries, view updates
//! *and* the log offsets after it. A commit that is lost (crash before it became durable)
//! loses its offsets with it, so the next catch-up reads those events again and indexes
//! them exactly once. Commits are cheap (`Durability::None`) with a durable commit at
//! least every second, which is what bounds the work redone after a crash.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayr_logs::{EventLogReader, Session};
use rayr_proto::{ActorRow, Event, JobRow, ListReply, ListRequest, Message, NodeRow, ObjectRow, TaskRow, WorkerRow};
use redb::{
    Database, DatabaseError, Durability, MultimapTableDefinition, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, WriteTransaction,
};

use crate::HeadError;
use crate::ids::IdPattern;
use crate::query;
use crate::views::{self, Target};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const BY_ID: MultimapTableDefinition<&[u8], u64> = MultimapTableDefinition::new("by_id");
const BY_KIND: TableDefinition<(i32, u64), ()> = TableDefinition::new("by_kind");
pub(crate) const TASKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tasks");
pub(crate) const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
pub(crate) const WORKERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("workers");
pub(crate) const ACTORS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("actors");
pub(crate) const NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("nodes");
pub(crate) const JOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jobs");
const OBJECT_BORROWS: TableDefinition<&[u8], i64> = TableDefinition::new("object_borrows");
const OFFSETS: TableDefinition<&str, u64> = TableDefinition::new("offsets");

/// Most events in one write transaction: bounds memory and how long readers wait to see news.
const MAX_EVENTS_PER_TXN: usize = 20_000;
/// Bytes read from a log at a time.
const READ_WINDOW: usize = 4 << 20;
/// At most this long between durable commits while events keep coming.
const DURABLE_EVERY: Duration = Duration::from_secs(1);
/// Most candidates `resolve_prefix` returns (and an ambiguity error lists).
pub const MAX_ID_MATCHES: usize = 20;
/// Most events one `events_page` call examines, so a selective filter over a long record
/// still answers in bounded time (the caller continues from `next_after`).
const MAX_SCANNED_PER_PAGE: usize = 50_000;

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

/// The session's event index. Cheap to share (`Arc`): reads run concurrently with the one
/// writer, `catch_up`, which serializes itself.
pub struct EventIndex {
    db: Database,
    /// The session this index was opened for (`None` in memory).
    session: Option<Session>,
    /// Held by `catch_up` so concurrent callers don't race on the same log offsets; also
    /// remembers when the last durable commit happened.
    writer: Mutex<WriterState>,
    /// Events indexed by this process, by kind, and the final task failures among them
    /// (the head's metrics).
    counts: [std::sync::atomic::AtomicU64; 64],
    final_failures: std::sync::atomic::AtomicU64,
    /// Tasks by the state of their row: counted from the view the first time they are
    /// asked for (None until then), then moved with each committed change.
    task_states: parking_lot::Mutex<Option<HashMap<String, i64>>>,
}

struct WriterState {
    last_durable: Instant,
    /// Non-durable commits since the last durable one.
    dirty: bool,
    /// Each process's job and pid, from its WORKER_STARTED (see `complete`); loaded from
    /// the workers view on first use.
    origins: Option<HashMap<Vec<u8>, (Vec<u8>, u32)>>,
}

impl EventIndex {
    /// Opens (creating if needed) the index of `session`. Fails with `HeadError::Locked`
    /// while another process (the running head) has it open.
    pub fn open(session: &Session) -> Result<EventIndex, HeadError> {
        let path = session.head_db();
        let db = match Database::builder().set_cache_size(64 << 20).create(&path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(HeadError::Locked { path }),
            Err(e) => return Err(HeadError::Open { path, source: e.into() }),
        };
        Ok(EventIndex { session: Some(session.clone()), ..EventIndex::with_db(db)? })
    }

    /// An index kept in memory only: for tests, and for reading a session whose directory
    /// this process may not write.
    pub fn open_in_memory() -> Result<EventIndex, HeadError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        EventIndex::with_db(db)
    }

    /// An in-memory index of `session`, for reading a session whose directory this process
    /// may not write (another user's). Call `catch_up` to fill it.
    pub fn open_in_memory_for(session: &Session) -> Result<EventIndex, HeadError> {
        Ok(EventIndex { session: Some(session.clone()), ..EventIndex::open_in_memory()? })
    }

    fn with_db(db: Database) -> Result<EventIndex, HeadError> {
        // Create every table up front so that readers never meet a missing one.
        let txn = db.begin_write()?;
        {
            txn.open_table(EVENTS)?;
            txn.open_multimap_table(BY_ID)?;
            txn.open_table(BY_KIND)?;
            for t in [TASKS, OBJECTS, WORKERS, NODES, JOBS, ACTORS] {
                txn.open_table(t)?;
            }
            txn.open_table(OBJECT_BORROWS)?;
            txn.open_table(OFFSETS)?;
        }
        txn.commit()?;
        Ok(EventIndex {
            db,
            session: None,
            writer: Mutex::new(WriterState { last_durable: Instant::now(), dirty: false, origins: None }),
            counts: std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)),
            final_failures: std::sync::atomic::AtomicU64::new(0),
            task_states: Default::default(),
        })
    }

    /// Tasks by the state of their row.
    pub fn task_states(&self) -> Vec<(String, u64)> {
        let mut seeded = self.task_states.lock();
        if seeded.is_none() {
            let mut counted: HashMap<String, i64> = HashMap::new();
            let rows = self.db.begin_read().ok().and_then(|t| t.open_table(TASKS).ok());
            for entry in rows.iter().flat_map(|t| t.iter().into_iter().flatten()) {
                if let Ok((_, v)) = entry
                    && let Ok(row) = TaskRow::decode(v.value())
                {
                    *counted.entry(row.state).or_insert(0) += 1;
                }
            }
            *seeded = Some(counted);
        }
        let states = seeded.as_ref().expect("counted above");
        // Every state a task row can be in, at 0 until one is.
        let mut v: Vec<(String, u64)> = ["SUBMITTED", "SCHEDULED", "RUNNING", "FINISHED", "FAILED"]
            .iter()
            .map(|s| (s.to_string(), states.get(*s).copied().unwrap_or(0).max(0) as u64))
            .collect();
        v.extend(states.iter().filter(|(k, _)| !v.iter().any(|(s, _)| s == *k)).map(|(k, n)| (k.clone(), (*n).max(0) as u64)).collect::<Vec<_>>());
        v
    }

    /// How many events of each kind this process indexed, and how many task failures
    /// among them were final.
    pub fn counts(&self) -> (Vec<(rayr_proto::EventKind, u64)>, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let kinds = (0..self.counts.len())
            .filter_map(|k| Some((rayr_proto::EventKind::try_from(k as i32).ok()?, self.counts[k].load(Relaxed))))
            .filter(|(k, _)| *k != rayr_proto::EventKind::Unspecified)
            .collect();
        (kinds, self.final_failures.load(Relaxed))
    }

    /// The session `open` was given; `None` for an index in memory.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Indexes whatever the session's event logs gained since the last call; returns how
    /// many events were newly indexed.
    pub fn catch_up(&self, session: &Session) -> Result<u64, HeadError> {
        self.catch_up_at_most(session, u64::MAX)
    }

    /// Like [`catch_up`](Self::catch_up), stopping after about `limit` events (whole
    /// transactions), so a background indexer can notice it should stop between calls.
    pub fn catch_up_at_most(&self, session: &Session, limit: u64) -> Result<u64, HeadError> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
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
            indexed += self.catch_up_log(&path, &mut writer, limit - indexed)?;
        }
        if indexed == 0 && writer.dirty && writer.last_durable.elapsed() >= DURABLE_EVERY {
            // Quiet now: make the last burst durable rather than waiting for the next one.
            self.commit_durable(&mut writer)?;
        }
        Ok(indexed)
    }

    fn catch_up_log(&self, path: &Path, writer: &mut WriterState, limit: u64) -> Result<u64, HeadError> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let offset = {
            let txn = self.db.begin_read()?;
            let offsets = txn.open_table(OFFSETS)?;
            offsets.get(name.as_str())?.map(|v| v.value()).unwrap_or(0)
        };
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len < offset {
            // Logs only grow; a shorter one was replaced by hand. Indexing it again from 0
            // would duplicate what is already here, so leave it and say so.
            tracing::warn!(log = %path.display(), len, offset, "event log is shorter than the part already indexed; not indexing it");
            return Ok(0);
        }
        if len == offset {
            return Ok(0);
        }
        let mut reader = EventLogReader::new(path, offset);
        let mut indexed = 0u64;
        let mut skipped = 0;
        let window = if limit == u64::MAX { READ_WINDOW } else { (limit as usize).saturating_mul(256).clamp(64 << 10, READ_WINDOW) };
        loop {
            let mut batch =
                reader.read_more(window).map_err(|e| HeadError::Io { path: path.to_path_buf(), source: e })?;
            if reader.skipped_runs() > skipped {
                skipped = reader.skipped_runs();
                tracing::warn!(log = %path.display(), skipped, "event runs that do not decode were skipped");
            }
            if batch.is_empty() || indexed >= limit {
                return Ok(indexed);
            }
            self.complete(&name, &mut batch, writer)?;
            for chunk in whole_run_chunks(&batch, MAX_EVENTS_PER_TXN) {
                let end = chunk.last().map(|(o, _)| *o).unwrap_or(offset);
                self.index_chunk(&name, end, chunk, writer)?;
                indexed += chunk.len() as u64;
            }
        }
    }

    /// Fills in what processes leave out of their events to keep them small: the node (the
    /// log a frame is in is that node's: `events-<node>.log`) and the source's job and pid
    /// (its WORKER_STARTED, which its node agent records before the process records
    /// anything, in the same log).
    fn complete(&self, log: &str, batch: &mut [(u64, Event)], writer: &mut WriterState) -> Result<(), HeadError> {
        // (`events-<node>-orphan-<worker>.log`: what a worker saved when its agent died.)
        let node = log.strip_prefix("events-").and_then(|n| n.split(['.', '-']).next()).and_then(rayr_logs::parse_hex);
        if writer.origins.is_none() {
            let mut origins = HashMap::new();
            let txn = self.db.begin_read()?;
            if let Ok(workers) = txn.open_table(crate::index::WORKERS) {
                for row in workers.iter()? {
                    let (k, v) = row?;
                    if let Ok(w) = WorkerRow::decode(v.value()) {
                        origins.insert(k.value().to_vec(), (w.job_id, w.pid));
                    }
                }
            }
            writer.origins = Some(origins);
        }
        let origins = writer.origins.as_mut().unwrap();
        for (_, ev) in batch.iter_mut() {
            if let Some(c) = self.counts.get(ev.kind as usize) {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if ev.kind == rayr_proto::EventKind::TaskFailed as i32
                && matches!(&ev.detail, Some(rayr_proto::event::Detail::Task(t)) if t.r#final)
            {
                self.final_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if ev.node_id.is_empty()
                && let Some(n) = &node {
                    ev.node_id = n.clone();
                }
            if ev.kind == rayr_proto::EventKind::WorkerStarted as i32 {
                let pid = match &ev.detail {
                    Some(rayr_proto::event::Detail::WorkerStart(w)) => w.pid,
                    _ => ev.source_pid,
                };
                origins.insert(ev.worker_id.clone(), (ev.job_id.clone(), pid));
            } else if (ev.job_id.is_empty() || ev.source_pid == 0)
                && let Some((job, pid)) = origins.get(&ev.source_worker) {
                    if ev.job_id.is_empty() {
                        ev.job_id = job.clone();
                    }
                    if ev.source_pid == 0 {
                        ev.source_pid = *pid;
                    }
                }
        }
        Ok(())
    }

    /// One transaction: the events, their index entries, the view updates and the offset.
    fn index_chunk(
        &self,
        log: &str,
        end: u64,
        chunk: &[(u64, Event)],
        writer: &mut WriterState,
    ) -> Result<(), HeadError> {
        let mut txn = self.db.begin_write()?;
        let durable = writer.last_durable.elapsed() >= DURABLE_EVERY;
        set_durability(&mut txn, durable)?;
        let mut moved: HashMap<String, i64> = HashMap::new();
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut by_id = txn.open_multimap_table(BY_ID)?;
            let mut by_kind = txn.open_table(BY_KIND)?;
            let mut views = ViewTables::open(&txn)?;
            let first = events.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
            let mut buf = Vec::new();
            for (seq, (_, ev)) in (first..).zip(chunk) {
                buf.clear();
                ev.encode(&mut buf).expect("Vec<u8> has room");
                events.insert(seq, buf.as_slice())?;
                for id in named_ids(ev) {
                    by_id.insert(id, seq)?;
                }
                by_kind.insert((ev.kind, seq), ())?;
                if let Some((old, new)) = views.apply(ev)?
                    && old != new
                {
                    if !old.is_empty() {
                        *moved.entry(old).or_insert(0) -= 1;
                    }
                    if !new.is_empty() {
                        *moved.entry(new).or_insert(0) += 1;
                    }
                }
            }
            txn.open_table(OFFSETS)?.insert(log, end)?;
        }
        // The counts move with the commit, never without it (nor twice, with a count
        // being taken from the view meanwhile).
        let mut states = self.task_states.lock();
        txn.commit()?;
        if let Some(states) = states.as_mut() {
            for (state, n) in moved {
                *states.entry(state).or_insert(0) += n;
            }
        }
        drop(states);
        if durable {
            writer.last_durable = Instant::now();
            writer.dirty = false;
        } else {
            writer.dirty = true;
        }
        Ok(())
    }

    fn commit_durable(&self, writer: &mut WriterState) -> Result<(), HeadError> {
        let mut txn = self.db.begin_write()?;
        set_durability(&mut txn, true)?;
        txn.commit()?;
        writer.last_durable = Instant::now();
        writer.dirty = false;
        Ok(())
    }

    /// Makes every commit so far durable (the head calls it when it stops).
    pub fn flush(&self) -> Result<(), HeadError> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.commit_durable(&mut writer)
    }

    /// How many events the index holds.
    pub fn events_indexed(&self) -> Result<u64, HeadError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(EVENTS)?.len()?)
    }

    /// Rows of one view that match the request's filters, one page of them, and the count
    /// of all that match. See `query` for the filter keys each entity takes.
    pub fn list(&self, req: &ListRequest) -> Result<ListReply, HeadError> {
        let txn = self.db.begin_read()?;
        query::list(&txn, req)
    }

    /// Every node row (for `ClusterInfo`).
    pub fn nodes(&self) -> Result<Vec<NodeRow>, HeadError> {
        let req = ListRequest { entity: "nodes".into(), limit: u32::MAX, ..Default::default() };
        Ok(self.list(&req)?.nodes)
    }

    /// Every event after `after_seq` naming `id` (any role; `None`: all), of `kind` (0: any),
    /// at or after `since_us` (0: any), in index order.
    pub fn events(
        &self,
        id: Option<&[u8]>,
        kind: i32,
        since_us: i64,
        after_seq: u64,
    ) -> Result<Vec<(u64, Event)>, HeadError> {
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
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let mut page = EventsPage { next_after: after_seq, ..Default::default() };
        let start = after_seq.saturating_add(1);
        // Candidate sequence numbers, from the most selective index available.
        let mut scanned = 0usize;
        let mut consider = |seq: u64, bytes: Option<&[u8]>, page: &mut EventsPage| -> Result<bool, HeadError> {
            scanned += 1;
            page.next_after = seq;
            let ev = match bytes {
                Some(b) => Event::decode(b)?,
                None => match events.get(seq)? {
                    Some(v) => Event::decode(v.value())?,
                    None => return Ok(true),
                },
            };
            if (q.kind == 0 || ev.kind == q.kind) && ev.time_us >= q.since_us {
                page.events.push((seq, ev));
            }
            let stop = page.events.len() >= limit || scanned >= MAX_SCANNED_PER_PAGE;
            page.more = stop;
            Ok(!stop)
        };
        if let Some(id) = &q.id {
            let by_id = txn.open_multimap_table(BY_ID)?;
            for seq in by_id.get(id.as_slice())? {
                let seq = seq?.value();
                if seq >= start && !consider(seq, None, &mut page)? {
                    break;
                }
            }
        } else if q.kind != 0 {
            let by_kind = txn.open_table(BY_KIND)?;
            for entry in by_kind.range((q.kind, start)..=(q.kind, u64::MAX))? {
                let seq = entry?.0.value().1;
                if !consider(seq, None, &mut page)? {
                    break;
                }
            }
        } else {
            for entry in events.range(start..)? {
                let (k, v) = entry?;
                if !consider(k.value(), Some(v.value()), &mut page)? {
                    break;
                }
            }
        }
        Ok(page)
    }

    /// Ids the index knows (any id any event names) that match `pattern`: a hex prefix, or
    /// the `HEAD…TAIL` short form tables print. At most `MAX_ID_MATCHES`, in id order.
    pub fn resolve_prefix(&self, pattern: &str) -> Result<Vec<Vec<u8>>, HeadError> {
        Ok(self.find_ids(pattern, MAX_ID_MATCHES)?.0)
    }

    /// What `id` is (task, object, worker, …), as the first event naming it says.
    fn role_of(&self, id: &[u8]) -> &'static str {
        let q = EventQuery { id: Some(id.to_vec()), kind: 0, since_us: 0 };
        let Ok(page) = self.events_page(&q, 0, 1) else { return "id" };
        let Some((_, ev)) = page.events.first() else { return "id" };
        [
            (&ev.task_id, "task"),
            (&ev.object_id, "object"),
            (&ev.actor_id, "actor"),
            (&ev.worker_id, "worker"),
            (&ev.source_worker, "worker"),
            (&ev.job_id, "job"),
            (&ev.node_id, "node"),
            (&ev.id, "event"),
        ]
        .into_iter()
        .find(|(v, _)| v.as_slice() == id)
        .map_or("id", |(_, role)| role)
    }

    /// The one id `pattern` names; `UnknownId` or `AmbiguousId` (with the candidates) otherwise.
    pub fn resolve_unique(&self, pattern: &str) -> Result<Vec<u8>, HeadError> {
        let (mut ids, total) = self.find_ids(pattern, MAX_ID_MATCHES)?;
        match total {
            0 => Err(HeadError::UnknownId { pattern: pattern.trim().to_string() }),
            1 => Ok(ids.remove(0)),
            _ => {
                let kinds = ids.iter().map(|id| self.role_of(id)).collect();
                Err(HeadError::AmbiguousId { pattern: pattern.trim().to_string(), total, candidates: ids, kinds })
            }
        }
    }

    /// Up to `max` matching ids and the count of all matches.
    fn find_ids(&self, pattern: &str, max: usize) -> Result<(Vec<Vec<u8>>, usize), HeadError> {
        let pat = IdPattern::parse(pattern).map_err(HeadError::BadRequest)?;
        let txn = self.db.begin_read()?;
        let by_id = txn.open_multimap_table(BY_ID)?;
        let lower = pat.lower_bound();
        let mut found = Vec::new();
        let mut total = 0usize;
        for entry in by_id.range::<&[u8]>(lower.as_slice()..)? {
            let (key, _) = entry?;
            let id = key.value();
            if pat.is_past(id) {
                break;
            }
            if pat.matches(id) {
                total += 1;
                if found.len() < max {
                    found.push(id.to_vec());
                }
            }
        }
        Ok((found, total))
    }

    /// The log offsets indexed so far, by log file name (for tests and `rayr status`).
    pub fn offsets(&self) -> Result<Vec<(String, u64)>, HeadError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OFFSETS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }
}

fn set_durability(txn: &mut WriteTransaction, durable: bool) -> Result<(), HeadError> {
    if durable {
        txn.set_durability(Durability::Immediate)?;
        // Saves allocator state with the commit, so reopening after a crash is quick
        // instead of a walk over the whole file.
        txn.set_quick_repair(true);
    } else {
        txn.set_durability(Durability::None)?;
    }
    Ok(())
}

/// Every non-empty id an event names, each once.
fn named_ids(ev: &Event) -> Vec<&[u8]> {
    let mut ids: Vec<&[u8]> = vec![
        &ev.id,
        &ev.cause,
        &ev.object_id,
        &ev.task_id,
        &ev.actor_id,
        &ev.worker_id,
        &ev.job_id,
        &ev.node_id,
        &ev.source_worker,
    ];
    if let Some(rayr_proto::event::Detail::Object(d)) = &ev.detail {
        ids.push(&d.peer);
    }
    ids.retain(|id| !id.is_empty());
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The view tables of one write transaction.
struct ViewTables<'t> {
    tasks: redb::Table<'t, &'static [u8], &'static [u8]>,
    objects: redb::Table<'t, &'static [u8], &'static [u8]>,
    borrows: redb::Table<'t, &'static [u8], i64>,
    workers: redb::Table<'t, &'static [u8], &'static [u8]>,
    nodes: redb::Table<'t, &'static [u8], &'static [u8]>,
    jobs: redb::Table<'t, &'static [u8], &'static [u8]>,
    actors: redb::Table<'t, &'static [u8], &'static [u8]>,
}

impl<'t> ViewTables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, HeadError> {
        Ok(ViewTables {
            tasks: txn.open_table(TASKS)?,
            objects: txn.open_table(OBJECTS)?,
            borrows: txn.open_table(OBJECT_BORROWS)?,
            workers: txn.open_table(WORKERS)?,
            nodes: txn.open_table(NODES)?,
            jobs: txn.open_table(JOBS)?,
            actors: txn.open_table(ACTORS)?,
        })
    }

    /// Applies one event to its view row; for a task, returns its row's state before and
    /// after.
    fn apply(&mut self, ev: &Event) -> Result<Option<(String, String)>, HeadError> {
        let mut states = None;
        let r = match views::target(ev) {
            Target::Task(id) => update::<TaskRow>(&mut self.tasks, id, |row| {
                let before = row.state.clone();
                views::apply_task(row, ev);
                states = Some((before, row.state.clone()));
            }),
            Target::Object(id) => {
                let mut balance = self.borrows.get(id)?.map(|v| v.value()).unwrap_or(0);
                let before = balance;
                update::<ObjectRow>(&mut self.objects, id, |row| views::apply_object(row, &mut balance, ev))?;
                if balance != before {
                    self.borrows.insert(id, balance)?;
                }
                Ok(())
            }
            Target::Worker(id) => update::<WorkerRow>(&mut self.workers, id, |row| views::apply_worker(row, id, ev)),
            Target::Node(id) => update::<NodeRow>(&mut self.nodes, id, |row| views::apply_node(row, ev)),
            Target::Job(id) => update::<JobRow>(&mut self.jobs, id, |row| views::apply_job(row, ev)),
            Target::Actor(id) => update::<ActorRow>(&mut self.actors, id, |row| views::apply_actor(row, ev)),
            Target::None => Ok(()),
        };
        r.map(|()| states)
    }
}

/// Read-modify-write of one view row.
fn update<R: Message + Default>(
    table: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    id: &[u8],
    change: impl FnOnce(&mut R),
) -> Result<(), HeadError> {
    let mut row = match table.get(id)? {
        Some(v) => R::decode(v.value())?,
        None => R::default(),
    };
    change(&mut row);
    table.insert(id, row.encode_to_vec().as_slice())?;
    Ok(())
}

/// Splits events (each with the offset past its run) into chunks of about `max`, each
/// ending where a run ends: a chunk's last offset is where indexing resumes after it, so a
/// chunk ending inside a run would leave the rest of that run out of the index after a
/// crash between two transactions.
fn whole_run_chunks<T>(batch: &[(u64, T)], max: usize) -> impl Iterator<Item = &[(u64, T)]> {
    let mut rest = batch;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = max.min(rest.len());
        while end < rest.len() && rest[end].0 == rest[end - 1].0 {
            end += 1;
        }
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod chunk_tests {
    #[test]
    fn chunks_end_where_runs_end() {
        let batch: Vec<(u64, ())> = [10, 10, 10, 20, 20, 30].into_iter().map(|o| (o, ())).collect();
        let sizes: Vec<usize> = super::whole_run_chunks(&batch, 2).map(<[_]>::len).collect();
        assert_eq!(sizes, vec![3, 2, 1]);
        let sizes: Vec<usize> = super::whole_run_chunks(&batch, 100).map(<[_]>::len).collect();
        assert_eq!(sizes, vec![6]);
    }
}
